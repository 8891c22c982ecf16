#include "appview/holds.h"

#include <stdlib.h>
#include <string.h>

#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/syntax.h"

typedef struct endpoint endpoint;
struct endpoint {
    endpoint *next;
    char *did, *url;
    uint64_t expires;
};

typedef struct round round;

typedef struct {
    round *rd;
    char *did;
    int started, finished, ok;
    buf body;
    char *error;
} slot;

struct round {
    holds *h; /* NULL once the holds object is gone */
    round *prev, *next;
    slot *slots;
    size_t n, next_start, running, finished;
    char *path_query;
    holds_done_cb cb;
    void *ud;
    int done;
    unsigned refs; /* outstanding callbacks (resolver, http, timer close) */
    uv_timer_t *deadline;
};

struct holds {
    uv_loop_t *loop;
    resolver *r;
    http_client *http;
    holds_options opt;
    endpoint *endpoints;
    round *rounds;
    uint64_t *asked_total, *failed_total, *late_total;
};

static void round_release(round *rd)
{
    if (--rd->refs) return;
    /* slots is NULL when holds_ask ran out of memory allocating it */
    for (size_t i = 0; rd->slots && i < rd->n; i++) {
        free(rd->slots[i].did);
        buf_free(&rd->slots[i].body);
        free(rd->slots[i].error);
    }
    free(rd->slots);
    free(rd->path_query);
    free(rd);
}

static void on_deadline_closed(uv_handle_t *t)
{
    round *rd = t->data;
    free(t);
    round_release(rd);
}

static void deliver(round *rd)
{
    if (rd->done) return;
    rd->done = 1;
    holds *h = rd->h;
    if (h) {
        if (rd->prev)
            rd->prev->next = rd->next;
        else
            h->rounds = rd->next;
        if (rd->next) rd->next->prev = rd->prev;
    }
    hold_answer *a = calloc(rd->n ? rd->n : 1, sizeof *a);
    for (size_t i = 0; a && i < rd->n; i++) {
        slot *s = &rd->slots[i];
        a[i].did = s->did;
        a[i].ok = s->ok;
        a[i].body = s->ok ? s->body.data : "";
        a[i].len = s->ok ? s->body.len : 0;
        a[i].error = s->finished ? (s->error ? s->error : "") : "no answer before the deadline";
        if (!s->ok && h) (*h->failed_total)++;
        if (!s->finished && h) (*h->late_total)++;
    }
    if (a) {
        rd->cb(a, rd->n, rd->ud);
    } else {
        hold_answer none = {.did = "", .error = "out of memory"};
        for (size_t i = 0; i < rd->n; i++)
            rd->slots[i].ok = 0;
        log_error("holds", "out of memory delivering a round");
        rd->cb(&none, 0, rd->ud);
    }
    free(a);
    uv_timer_stop(rd->deadline);
    uv_close((uv_handle_t *)rd->deadline, on_deadline_closed);
}

static void start_more(round *rd);

static void finish_slot(slot *s, int ok, const char *error)
{
    round *rd = s->rd;
    s->finished = 1;
    s->ok = ok;
    if (!ok && error) {
        s->error = strdup(error);
        log_info("holds", "hold %s: %s", s->did, error);
    }
    rd->running--;
    rd->finished++;
    if (rd->finished == rd->n)
        deliver(rd);
    else
        start_more(rd);
}

static void on_answer(const http_result *res, void *ud)
{
    slot *s = ud;
    round *rd = s->rd;
    if (!rd->done) {
        if (res->error == HTTP_OK && res->status == 200) {
            if (buf_append(&s->body, res->body, res->len) < 0)
                finish_slot(s, 0, "out of memory");
            else
                finish_slot(s, 1, NULL);
        } else if (res->error == HTTP_OK) {
            char msg[64];
            snprintf(msg, sizeof msg, "HTTP %ld", res->status);
            finish_slot(s, 0, msg);
        } else {
            finish_slot(s, 0, res->error_text[0] ? res->error_text : http_error_name(res->error));
        }
    }
    round_release(rd);
}

static void fetch(slot *s, const char *url)
{
    round *rd = s->rd;
    buf full = {0};
    if (buf_puts(&full, url) < 0 || buf_puts(&full, rd->path_query) < 0) {
        buf_free(&full);
        finish_slot(s, 0, "out of memory");
        return;
    }
    http_request_options o = {.timeout_ms = rd->h->opt.timeout_ms};
    rd->refs++;
    (*rd->h->asked_total)++;
    if (http_get(rd->h->http, full.data, &o, on_answer, s) < 0) {
        rd->refs--;
        finish_slot(s, 0, "could not start the request");
    }
    buf_free(&full);
}

static const char *cached_endpoint(holds *h, const char *did)
{
    uint64_t now = uv_now(h->loop);
    for (endpoint **pp = &h->endpoints; *pp;) {
        endpoint *e = *pp;
        if (e->expires <= now) {
            *pp = e->next;
            free(e->did);
            free(e->url);
            free(e);
            continue;
        }
        if (!strcmp(e->did, did)) return e->url;
        pp = &e->next;
    }
    return NULL;
}

static void remember_endpoint(holds *h, const char *did, const char *url)
{
    endpoint *e = calloc(1, sizeof *e);
    if (!e || !(e->did = strdup(did)) || !(e->url = strdup(url))) {
        if (e) free(e->did);
        free(e);
        return; /* not cached: asked again next time */
    }
    e->expires = uv_now(h->loop) + (uint64_t)h->opt.endpoint_ttl * 1000;
    e->next = h->endpoints;
    h->endpoints = e;
}

static void on_doc(enum resolver_status st, const did_doc *doc, const char *error, void *ud)
{
    slot *s = ud;
    round *rd = s->rd;
    if (!rd->done && rd->h) {
        const char *url = st == RESOLVER_OK ? did_doc_service(doc, "#atcr_hold", NULL) : NULL;
        if (url) {
            remember_endpoint(rd->h, s->did, url);
            fetch(s, url);
        } else {
            finish_slot(s, 0, st == RESOLVER_OK ? "DID document has no #atcr_hold service" : error);
        }
    } else if (!rd->done) {
        finish_slot(s, 0, "shutting down");
    }
    round_release(rd);
}

static void start_slot(slot *s)
{
    round *rd = s->rd;
    s->started = 1;
    rd->running++;
    const char *url = cached_endpoint(rd->h, s->did);
    if (url) {
        fetch(s, url);
        return;
    }
    rd->refs++;
    if (resolver_did_to_doc(rd->h->r, s->did, on_doc, s) < 0) {
        rd->refs--;
        finish_slot(s, 0, "could not start resolving the hold");
    }
}

static void start_more(round *rd)
{
    while (!rd->done && rd->h && rd->next_start < rd->n &&
           rd->running < (size_t)rd->h->opt.concurrency)
        start_slot(&rd->slots[rd->next_start++]);
}

static void on_deadline(uv_timer_t *t)
{
    deliver(t->data);
}

holds *holds_new(uv_loop_t *loop, resolver *r, const holds_options *opt)
{
    holds *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->loop = loop;
    h->r = r;
    h->opt = *opt;
    if (h->opt.concurrency < 1) h->opt.concurrency = 8;
    if (h->opt.timeout_ms < 100) h->opt.timeout_ms = 100;
    /* One attempt: a retry would not fit in the round's deadline anyway. */
    http_client_options ho = {.timeout_ms = h->opt.timeout_ms,
                              .connect_timeout_ms = h->opt.timeout_ms,
                              .max_attempts = 1,
                              .max_body_bytes = 1 << 20,
                              .allow_private = opt->allow_private,
                              .allow_http = opt->allow_private};
    h->http = http_client_new(loop, &ho);
    if (!h->http) {
        free(h);
        return NULL;
    }
    h->asked_total = metrics_counter("appview_hold_requests_total", "Queries sent to holds");
    h->failed_total =
        metrics_counter("appview_hold_failures_total", "Hold queries without a usable answer");
    h->late_total = metrics_counter("appview_hold_deadline_total",
                                    "Hold queries still unanswered at the round's deadline");
    return h;
}

int holds_ask(holds *h, const char *const *dids, size_t n, const char *path_query, holds_done_cb cb,
              void *ud)
{
    round *rd = calloc(1, sizeof *rd);
    if (!rd) return -1;
    rd->h = h;
    rd->n = n;
    rd->cb = cb;
    rd->ud = ud;
    rd->refs = 1; /* the deadline timer, released when it has closed */
    rd->slots = calloc(n ? n : 1, sizeof *rd->slots);
    rd->path_query = strdup(path_query);
    rd->deadline = malloc(sizeof *rd->deadline);
    int bad = !rd->slots || !rd->path_query || !rd->deadline;
    for (size_t i = 0; !bad && i < n; i++) {
        rd->slots[i].rd = rd;
        bad = !(rd->slots[i].did = strdup(dids[i]));
    }
    if (bad) {
        free(rd->deadline);
        rd->deadline = NULL;
        round_release(rd);
        return -1;
    }
    uv_timer_init(h->loop, rd->deadline);
    rd->deadline->data = rd;
    rd->next = h->rounds;
    if (h->rounds) h->rounds->prev = rd;
    h->rounds = rd;
    /* Started from the timer even with nothing to ask, so cb never runs inside this call. */
    uv_timer_start(rd->deadline, on_deadline, n ? (uint64_t)h->opt.timeout_ms : 0, 0);
    start_more(rd);
    return 0;
}

void holds_free(holds *h)
{
    if (!h) return;
    while (h->rounds) {
        round *rd = h->rounds;
        deliver(rd); /* unlinks it */
        rd->h = NULL;
    }
    http_client_free(h->http);
    while (h->endpoints) {
        endpoint *e = h->endpoints;
        h->endpoints = e->next;
        free(e->did);
        free(e->url);
        free(e);
    }
    free(h);
}
