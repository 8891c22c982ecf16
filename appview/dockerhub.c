#include "appview/dockerhub.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atproto/backoff.h"
#include "atproto/buf.h"
#include "atproto/http_client.h"
#include "atproto/json_read.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/url.h"

#define MAX_ATTEMPTS 3
#define MISSING_TTL_MS (86400 * 1000ULL)
#define DEFAULT_PARK_MS 60000
#define MAX_PARK_MS 3600000ULL
#define BACKOFF_MS 250
#define BACKOFF_CAP_MS 5000

typedef struct waiter waiter;
struct waiter {
    waiter *next;
    dockerhub_cb cb;
    void *ud;
};

typedef struct fetch fetch;
typedef struct entry entry;

struct entry {
    entry *next;
    char *image;
    enum dockerhub_status status; /* of the remembered answer (OK or MISSING) */
    int known;
    long long pulls, stars;
    char *last_updated;
    uint64_t expires;
    fetch *inflight;
};

struct fetch {
    dockerhub *d;
    entry *e;
    fetch *qnext; /* in the send queue */
    waiter *waiters;
    int attempts;
    uv_timer_t *backoff;
};

struct dockerhub {
    uv_loop_t *loop;
    http_client *http;
    char *base;
    dockerhub_options opt;
    entry *entries;
    fetch *qhead, *qtail;
    fetch *ready; /* answered from memory on the next pump */
    /* Loop times of the last `rate` requests, a ring whose oldest entry is sent[next_sent]: a
     * request goes out only when fewer than `rate` went out in the last window, so no window
     * (not only the aligned ones) ever holds more than Hub's budget. */
    uint64_t *sent;
    int nsent, next_sent;
    uint64_t parked_until;
    uv_timer_t *pump;
    int closing;
    uint64_t *requests_total, *parked_total, *denied_total, *missing_total, *retries_total,
        *coalesced_total, *failed_total;
};

bool dockerhub_valid_image(const char *image)
{
    const char *slash = strchr(image, '/');
    if (!slash || strchr(slash + 1, '/')) return false;
    size_t ns = (size_t)(slash - image), nm = strlen(slash + 1);
    if (ns < 1 || ns > 64 || nm < 1 || nm > 190) return false;
    for (const char *p = image; *p; p++) {
        int c = (unsigned char)*p;
        if (p == slash) continue;
        int first = p == image || p == slash + 1;
        int ok = islower(c) || isdigit(c) || (!first && (c == '-' || c == '_')) ||
                 (!first && p > slash && c == '.');
        if (!ok) return false;
    }
    return true;
}

static entry *find_entry(dockerhub *d, const char *image, int create)
{
    for (entry *e = d->entries; e; e = e->next)
        if (!strcmp(e->image, image)) return e;
    if (!create) return NULL;
    entry *e = calloc(1, sizeof *e);
    if (!e || !(e->image = strdup(image))) {
        free(e);
        return NULL;
    }
    e->next = d->entries;
    d->entries = e;
    return e;
}

static void complete(fetch *f, const dockerhub_result *res)
{
    entry *e = f->e;
    e->inflight = NULL;
    waiter *w = f->waiters;
    free(f);
    while (w) {
        waiter *next = w->next;
        w->cb(res, w->ud);
        free(w);
        w = next;
    }
    (void)e;
}

static void complete_status(fetch *f, enum dockerhub_status st, const char *error)
{
    dockerhub_result res = {.status = st, .image = f->e->image, .last_updated = "", .error = error};
    complete(f, &res);
}

static void complete_from_entry(fetch *f)
{
    entry *e = f->e;
    dockerhub_result res = {.status = e->status,
                            .image = e->image,
                            .pull_count = e->pulls,
                            .star_count = e->stars,
                            .last_updated = e->last_updated ? e->last_updated : "",
                            .error = ""};
    complete(f, &res);
}

static void arm_pump(dockerhub *d, uint64_t delay);

static void enqueue(fetch *f, int front)
{
    dockerhub *d = f->d;
    f->qnext = NULL;
    if (!d->qhead) {
        d->qhead = d->qtail = f;
    } else if (front) {
        f->qnext = d->qhead;
        d->qhead = f;
    } else {
        d->qtail->qnext = f;
        d->qtail = f;
    }
    arm_pump(d, 0);
}

/* Parks every call until a reset the Hub announced (epoch seconds) or after retry_after s. */
static void park(dockerhub *d, const http_result *res)
{
    long asked = http_result_wait_ms(res, "x-ratelimit-reset");
    uint64_t now = uv_now(d->loop), wait = asked >= 0 ? (uint64_t)asked : DEFAULT_PARK_MS;
    if (wait < 100) wait = 100;
    if (wait > MAX_PARK_MS) wait = MAX_PARK_MS;
    if (now + wait > d->parked_until) d->parked_until = now + wait;
    (*d->parked_total)++;
    log_warn("dockerhub", "rate limited (HTTP %ld): every Hub call parked for %llu ms", res->status,
             (unsigned long long)wait);
}

static void on_backoff_closed(uv_handle_t *t)
{
    free(t);
}

static void on_backoff(uv_timer_t *t)
{
    fetch *f = t->data;
    f->backoff = NULL;
    uv_close((uv_handle_t *)t, on_backoff_closed);
    enqueue(f, 0);
}

static void retry_or_fail(fetch *f, const char *why)
{
    dockerhub *d = f->d;
    if (f->attempts >= MAX_ATTEMPTS || d->closing) {
        (*d->failed_total)++;
        log_warn("dockerhub", "%s: %s after %d attempts", f->e->image, why, f->attempts);
        complete_status(f, HUB_FAILED, why);
        return;
    }
    (*d->retries_total)++;
    f->backoff = malloc(sizeof *f->backoff);
    if (!f->backoff) {
        complete_status(f, HUB_FAILED, "out of memory");
        return;
    }
    uv_timer_init(d->loop, f->backoff);
    f->backoff->data = f;
    uv_timer_start(f->backoff, on_backoff,
                   backoff_delay_ms(BACKOFF_MS, BACKOFF_CAP_MS, (unsigned)f->attempts - 1), 0);
}

static int parse_ok(entry *e, const http_result *res)
{
    json_t *o = json_read(res->body, res->len);
    json_t *pulls = json_object_get(o, "pull_count");
    json_t *stars = json_object_get(o, "star_count");
    json_t *updated = json_object_get(o, "last_updated");
    int ok = json_is_integer(pulls) && json_integer_value(pulls) >= 0;
    if (ok) {
        e->pulls = json_integer_value(pulls);
        e->stars = json_is_integer(stars) && json_integer_value(stars) >= 0
                       ? json_integer_value(stars)
                       : 0;
        free(e->last_updated);
        e->last_updated = json_is_string(updated) ? strdup(json_string_value(updated)) : NULL;
    }
    json_decref(o);
    return ok ? 0 : -1;
}

static void on_response(const http_result *res, void *ud)
{
    fetch *f = ud;
    dockerhub *d = f->d;
    entry *e = f->e;
    if (res->error == HTTP_E_CANCELLED) {
        complete_status(f, HUB_CANCELLED, "shutting down");
        return;
    }
    const char *remaining = http_result_header(res, "x-ratelimit-remaining");
    int exhausted =
        remaining && strtol(remaining, NULL, 10) <= 0 && isdigit((unsigned char)*remaining);
    if (res->error == HTTP_OK && res->status == 429) {
        /* The attempt is given back: a parked image is waited for, never failed. */
        f->attempts--;
        park(d, res);
        if (d->closing)
            complete_status(f, HUB_FAILED, "rate limited");
        else
            enqueue(f, 1);
        return;
    }
    if (exhausted) park(d, res);
    if (res->error != HTTP_OK) {
        retry_or_fail(f, res->error_text[0] ? res->error_text : http_error_name(res->error));
        return;
    }
    switch (res->status) {
    case 200:
        if (parse_ok(e, res) < 0) {
            (*d->failed_total)++;
            log_warn("dockerhub", "%s: answer without a pull_count", e->image);
            complete_status(f, HUB_FAILED, "malformed answer");
            return;
        }
        e->known = 1;
        e->status = HUB_OK;
        e->expires = uv_now(d->loop) + (uint64_t)d->opt.ok_ttl * 1000;
        complete_from_entry(f);
        return;
    case 404:
        (*d->missing_total)++;
        e->known = 1;
        e->status = HUB_MISSING;
        e->expires = uv_now(d->loop) + MISSING_TTL_MS;
        complete_from_entry(f);
        return;
    case 401:
    case 403:
        (*d->denied_total)++;
        log_error("dockerhub", "%s: HTTP %ld: access denied by Docker Hub", e->image, res->status);
        complete_status(f, HUB_DENIED, "access denied by Docker Hub");
        return;
    case 500:
    case 502:
    case 503:
    case 504: {
        char why[32];
        snprintf(why, sizeof why, "HTTP %ld", res->status);
        retry_or_fail(f, why);
        return;
    }
    default: {
        char why[32];
        snprintf(why, sizeof why, "HTTP %ld", res->status);
        (*d->failed_total)++;
        log_warn("dockerhub", "%s: unexpected %s", e->image, why);
        complete_status(f, HUB_FAILED, why);
    }
    }
}

static void send_fetch(fetch *f)
{
    dockerhub *d = f->d;
    buf url = {0};
    f->attempts++;
    (*d->requests_total)++;
    if (buf_printf(&url, "%s/v2/repositories/%s/", d->base, f->e->image) < 0) {
        buf_free(&url);
        complete_status(f, HUB_FAILED, "out of memory");
        return;
    }
    /* The Hub URL is the operator's configuration. */
    http_request_options o = {.timeout_ms = d->opt.timeout_ms, .trusted = true};
    if (http_get(d->http, url.data, &o, on_response, f) < 0)
        complete_status(f, HUB_FAILED, "could not start the request");
    buf_free(&url);
}

/* 0 when a request may go out now, else how long until the oldest of the window's ends. */
static uint64_t budget_wait(const dockerhub *d, uint64_t now)
{
    uint64_t window = (uint64_t)d->opt.window_s * 1000;
    if (d->nsent < d->opt.rate) return 0;
    uint64_t oldest = d->sent[d->next_sent];
    return now - oldest >= window ? 0 : oldest + window - now;
}

static void on_pump(uv_timer_t *t)
{
    dockerhub *d = t->data;
    while (d->ready) {
        fetch *f = d->ready;
        d->ready = f->qnext;
        complete_from_entry(f);
    }
    uint64_t now = uv_now(d->loop);
    if (!d->qhead) return;
    if (d->parked_until > now) {
        uv_timer_start(d->pump, on_pump, d->parked_until - now, 0);
        return;
    }
    while (d->qhead && budget_wait(d, now) == 0 && d->parked_until <= uv_now(d->loop)) {
        fetch *f = d->qhead;
        d->qhead = f->qnext;
        if (!d->qhead) d->qtail = NULL;
        d->sent[d->next_sent] = now;
        d->next_sent = (d->next_sent + 1) % d->opt.rate;
        if (d->nsent < d->opt.rate) d->nsent++;
        send_fetch(f);
    }
    if (d->qhead) {
        uint64_t wait = budget_wait(d, now);
        if (d->parked_until > now && d->parked_until - now > wait) wait = d->parked_until - now;
        uv_timer_start(d->pump, on_pump, wait, 0);
    }
}

static void arm_pump(dockerhub *d, uint64_t delay)
{
    if (!uv_is_active((uv_handle_t *)d->pump) || delay == 0)
        uv_timer_start(d->pump, on_pump, delay, 0);
}

dockerhub *dockerhub_new(uv_loop_t *loop, const dockerhub_options *opt)
{
    dockerhub *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->loop = loop;
    d->opt = *opt;
    if (d->opt.rate < 1) d->opt.rate = 1;
    if (d->opt.window_s < 1) d->opt.window_s = 1;
    d->base = url_dup_base(opt->base_url);
    d->pump = malloc(sizeof *d->pump);
    d->sent = calloc((size_t)d->opt.rate, sizeof *d->sent);
    /* Retries, parks and backoff are ours: the client makes one attempt. */
    http_client_options ho = {.timeout_ms = opt->timeout_ms,
                              .max_attempts = 1,
                              .max_body_bytes = 256 * 1024,
                              .max_redirects = 0};
    d->http = d->base && d->pump && d->sent ? http_client_new(loop, &ho) : NULL;
    if (!d->http) {
        free(d->sent);
        free(d->base);
        free(d->pump);
        free(d);
        return NULL;
    }
    uv_timer_init(loop, d->pump);
    d->pump->data = d;
    d->requests_total =
        metrics_counter("appview_dockerhub_requests_total", "Requests sent to Docker Hub");
    d->parked_total = metrics_counter("appview_dockerhub_parked_total",
                                      "Times Docker Hub's rate limit parked every call");
    d->denied_total = metrics_counter("appview_dockerhub_denied_total",
                                      "Docker Hub answers 401/403 (credentials or policy)");
    d->missing_total = metrics_counter("appview_dockerhub_missing_total",
                                       "Docker Hub answers 404 (no such image)");
    d->retries_total =
        metrics_counter("appview_dockerhub_retries_total", "Docker Hub requests tried again (5xx)");
    d->coalesced_total = metrics_counter("appview_dockerhub_coalesced_total",
                                         "Docker Hub calls that joined one already in flight");
    d->failed_total =
        metrics_counter("appview_dockerhub_failures_total", "Docker Hub calls that failed");
    return d;
}

int dockerhub_get(dockerhub *d, const char *image, bool fresh, dockerhub_cb cb, void *ud)
{
    if (d->closing || !dockerhub_valid_image(image)) return -1;
    entry *e = find_entry(d, image, 1);
    waiter *w = calloc(1, sizeof *w);
    if (!e || !w) {
        free(w);
        return -1;
    }
    w->cb = cb;
    w->ud = ud;
    if (e->inflight) {
        (*d->coalesced_total)++;
        w->next = e->inflight->waiters;
        e->inflight->waiters = w;
        return 0;
    }
    fetch *f = calloc(1, sizeof *f);
    if (!f) {
        free(w);
        return -1;
    }
    f->d = d;
    f->e = e;
    f->waiters = w;
    e->inflight = f;
    if (e->known && e->expires > uv_now(d->loop) && (!fresh || e->status == HUB_MISSING)) {
        /* Answered from the pump, like a request, so cb never runs inside this call. */
        f->qnext = d->ready;
        d->ready = f;
        arm_pump(d, 0);
        return 0;
    }
    enqueue(f, 0);
    return 0;
}

void dockerhub_free(dockerhub *d)
{
    if (!d) return;
    d->closing = 1;
    /* Queued and backing-off calls never reached the client: cancel them here. */
    while (d->ready) {
        fetch *f = d->ready;
        d->ready = f->qnext;
        complete_status(f, HUB_CANCELLED, "shutting down");
    }
    while (d->qhead) {
        fetch *f = d->qhead;
        d->qhead = f->qnext;
        complete_status(f, HUB_CANCELLED, "shutting down");
    }
    d->qtail = NULL;
    for (entry *e = d->entries; e; e = e->next)
        if (e->inflight && e->inflight->backoff) {
            fetch *f = e->inflight;
            uv_close((uv_handle_t *)f->backoff, on_backoff_closed);
            f->backoff = NULL;
            complete_status(f, HUB_CANCELLED, "shutting down");
        }
    http_client_free(d->http);
    uv_close((uv_handle_t *)d->pump, on_backoff_closed);
    while (d->entries) {
        entry *e = d->entries;
        d->entries = e->next;
        free(e->image);
        free(e->last_updated);
        free(e);
    }
    free(d->sent);
    free(d->base);
    free(d);
}
