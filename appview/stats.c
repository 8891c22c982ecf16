#include "appview/stats.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "appview/dockerhub.h"
#include "appview/history.h"
#include "appview/holds.h"
#include "atproto/did_doc.h"
#include "atproto/buf.h"
#include "atproto/json_read.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/syntax.h"
#include "cache/stats_scripts.h"

#define KEEP_TTL (30 * 86400) /* last known per-hold values */
#define MAX_HOLDS 64
#define DEFAULT_DAYS 30

typedef struct mapping mapping;
struct mapping {
    mapping *next;
    char *key; /* did/repository */
    char *image;
};

struct stats {
    uv_loop_t *loop;
    cache_client *v;
    loader *l;
    holds *hl;
    dockerhub *hub;
    history *hist;
    stats_options opt;
    char *prefix;
    char **cfg_holds;
    size_t ncfg_holds;
    mapping *map;
    int script_holds, script_save;
    struct flight *flights;
    int stopped;
    uint64_t *total, *hist_total, *invalid_total, *cache_hits, *coalesced;
};

typedef struct waiter {
    struct waiter *next;
    httpd_req *req;
} waiter;

/* One fan-out for a (did, repository), or one getStatsHistory request. */
typedef struct flight {
    stats *s;
    struct flight *prev, *next; /* in s->flights (getStats only) */
    int history;
    int days;
    httpd_req *req; /* getStatsHistory */
    waiter *waiters;
    char *did, *repo, *image;
    int image_verified; /* from the mapping file; else only a Hub 200 makes it ours */
    int loaded, refs, answered, holds_done, hub_pending;
    char **hold_dids;
    size_t nholds;
    json_t *known;  /* last known per hold: did -> "pulls pushes lastPull lastPush" */
    buf holds_part; /* the finished "holds" array and sums, once holds_done */
    long long pulls, pushes;
    char last_pull[40], last_push[40];
    int hub_state; /* 0 none, 1 ok, 2 from history */
    long long hub_pulls, hub_stars;
    char hub_synced[40];
    uv_timer_t *timer;
} flight;

/* ---- small helpers ---- */

static void now_iso(char out[40])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char day[24];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 40, "%.19s.%03uZ", day, (unsigned)(ts.tv_nsec / 1000000) % 1000u);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *lookup_map(stats *s, const char *did, const char *repo)
{
    size_t dl = strlen(did);
    for (mapping *m = s->map; m; m = m->next)
        if (!strncmp(m->key, did, dl) && m->key[dl] == '/' && !strcmp(m->key + dl + 1, repo))
            return m->image;
    return NULL;
}

/* https://github.com/Owner/Name(.git)(/...) -> owner/name, when that is a Hub slug. */
static char *image_from_source(const char *src)
{
    static const char *const prefixes[] = {"https://github.com/", "http://github.com/",
                                           "git@github.com:"};
    const char *p = NULL;
    for (size_t i = 0; i < 3 && !p; i++)
        if (!strncmp(src, prefixes[i], strlen(prefixes[i]))) p = src + strlen(prefixes[i]);
    if (!p) return NULL;
    const char *slash = strchr(p, '/');
    if (!slash) return NULL;
    size_t nl = strcspn(slash + 1, "/?#");
    if (nl > 4 && !strncmp(slash + 1 + nl - 4, ".git", 4)) nl -= 4;
    size_t len = (size_t)(slash - p) + 1 + nl;
    if (len > 255) return NULL;
    char *img = strndup(p, len);
    for (char *c = img; c && *c; c++)
        *c = (char)tolower((unsigned char)*c);
    if (img && !dockerhub_valid_image(img)) {
        free(img);
        return NULL;
    }
    return img;
}

static int load_map(stats *s, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        log_error("stats", "APPVIEW_DOCKERHUB_MAP %s: cannot open", path);
        return -1;
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char key[600], image[300], extra[2];
        int n = sscanf(line, " %599[^= \t] = %299s %1s", key, image, extra);
        if (n <= 0) continue;
        char *slash = strchr(key, '/');
        if (n != 2 || !slash || !atp_is_did(key, (size_t)(slash - key)) ||
            !oci_is_repository(slash + 1, strlen(slash + 1)) || !dockerhub_valid_image(image)) {
            log_error("stats", "%s:%d: expected 'did/repository = namespace/name'", path, lineno);
            rc = -1;
            break;
        }
        mapping *m = calloc(1, sizeof *m);
        if (!m || !(m->key = strdup(key)) || !(m->image = strdup(image))) {
            if (m) free(m->key);
            free(m);
            rc = -1;
            break;
        }
        m->next = s->map;
        s->map = m;
        if (s->hist && history_add_image(s->hist, image) < 0) rc = -1;
    }
    fclose(f);
    return rc;
}

/* ---- finishing ---- */

static void flight_release(flight *f)
{
    if (--f->refs) return;
    while (f->waiters) {
        waiter *w = f->waiters;
        f->waiters = w->next;
        free(w);
    }
    for (size_t i = 0; i < f->nholds; i++)
        free(f->hold_dids[i]);
    free(f->hold_dids);
    json_decref(f->known);
    buf_free(&f->holds_part);
    free(f->did);
    free(f->repo);
    free(f->image);
    free(f);
}

static void on_timer_closed(uv_handle_t *t)
{
    flight *f = t->data;
    free(t);
    flight_release(f);
}

/* The flight's own reference belongs to its timer and ends when the timer has closed. */
static void close_timer(flight *f)
{
    if (!f->timer) return;
    uv_timer_stop(f->timer);
    uv_close((uv_handle_t *)f->timer, on_timer_closed);
    f->timer = NULL;
}

static void unlink_flight(flight *f)
{
    stats *s = f->s;
    if (f->history || (!f->prev && s->flights != f)) return;
    if (f->prev)
        f->prev->next = f->next;
    else
        s->flights = f->next;
    if (f->next) f->next->prev = f->prev;
    f->prev = f->next = NULL;
}

static void answer_json(flight *f, const char *json, size_t len)
{
    if (f->answered) return;
    f->answered = 1;
    unlink_flight(f);
    if (f->history) {
        httpd_reply_json(f->req, 200, json, len);
    } else {
        for (waiter *w = f->waiters; w; w = w->next)
            httpd_reply_json(w->req, 200, json, len);
    }
    close_timer(f);
}

static void answer_error(flight *f, int status, const char *error, const char *msg)
{
    if (f->answered) return;
    f->answered = 1;
    unlink_flight(f);
    if (f->history) {
        httpd_reply_error(f->req, status, error, "%s", msg);
    } else {
        for (waiter *w = f->waiters; w; w = w->next)
            httpd_reply_error(w->req, status, error, "%s", msg);
    }
    close_timer(f);
}

static void key_of(buf *b, const stats *s, const flight *f, const char *suffix)
{
    buf_reset(b);
    if (buf_printf(b, "%s{%s}/repo/%s/%s", s->prefix, f->did, f->repo, suffix) < 0) buf_reset(b);
}

static void on_saved(const reply *answer, void *ud)
{
    flight *f = ud;
    if (!answer || answer->type == REPLY_ERROR)
        log_warn("stats", "could not cache stats of %s %s: %s", f->did, f->repo,
                 answer ? answer->str : "Valkey unavailable");
    flight_release(f);
}

/* Builds the getStats answer from the holds and Docker Hub, caches it, replies. */
static void finish_stats(flight *f)
{
    stats *s = f->s;
    buf out = {0};
    int err = buf_puts(&out, "{\"did\":");
    err |= buf_json_string(&out, f->did, strlen(f->did));
    err |= buf_puts(&out, ",\"repository\":");
    err |= buf_json_string(&out, f->repo, strlen(f->repo));
    err |= buf_printf(&out, ",\"pullCount\":%lld,\"pushCount\":%lld", f->pulls, f->pushes);
    if (f->last_pull[0]) err |= buf_printf(&out, ",\"lastPull\":\"%s\"", f->last_pull);
    if (f->last_push[0]) err |= buf_printf(&out, ",\"lastPush\":\"%s\"", f->last_push);
    err |= buf_append(&out, f->holds_part.data, f->holds_part.len);
    long long total = f->pulls;
    if (f->hub_state) {
        err |= buf_puts(&out, ",\"dockerHub\":{\"image\":");
        err |= buf_json_string(&out, f->image, strlen(f->image));
        err |= buf_printf(&out, ",\"pullCount\":%lld", f->hub_pulls);
        if (f->hub_state == 1) err |= buf_printf(&out, ",\"starCount\":%lld", f->hub_stars);
        if (f->hub_synced[0]) err |= buf_printf(&out, ",\"lastSyncedAt\":\"%s\"", f->hub_synced);
        err |= buf_puts(&out, "}");
        total += f->hub_pulls;
    }
    err |= buf_printf(&out, ",\"totalPullCount\":%lld}", total);
    if (err) {
        buf_free(&out);
        answer_error(f, 500, "InternalServerError", "out of memory");
        return;
    }
    answer_json(f, out.data, out.len);
    /* Cache: the aggregate, the last known value of every hold that answered, and the holds
     * that have counts for this repository (so they are asked even without a manifest). */
    if (!s->stopped) {
        buf k1 = {0}, k2 = {0}, k3 = {0}, k4 = {0};
        key_of(&k1, s, f, "stats");
        key_of(&k2, s, f, "holdstats");
        key_of(&k3, s, f, "holds");
        buf_printf(&k4, "%s{%s}/keys", s->prefix, f->did);
        size_t cap = 8 + 3 * f->nholds;
        const char **argv = calloc(cap, sizeof *argv);
        char ttl[24], keep[24], npairs[24];
        snprintf(ttl, sizeof ttl, "%u", s->opt.stats_ttl);
        snprintf(keep, sizeof keep, "%d", KEEP_TTL);
        size_t n = 0, pairs = 0;
        const char *hold;
        json_t *val;
        if (argv && k1.data && k2.data && k3.data && k4.data) {
            argv[n++] = k1.data;
            argv[n++] = k2.data;
            argv[n++] = k3.data;
            argv[n++] = k4.data;
            argv[n++] = out.data;
            argv[n++] = ttl;
            argv[n++] = keep;
            size_t npos = n++;
            json_t *fresh = json_object_get(f->known, "fresh");
            json_object_foreach(fresh, hold, val)
            {
                argv[n++] = hold;
                argv[n++] = json_string_value(val);
                pairs++;
            }
            snprintf(npairs, sizeof npairs, "%zu", pairs);
            argv[npos] = npairs;
            json_object_foreach(fresh, hold, val)
            {
                if (strncmp(json_string_value(val), "0 0 ", 4)) argv[n++] = hold;
            }
            f->refs++;
            if (cache_eval(s->v, s->script_save, on_saved, f, 4, (int)n, argv, NULL) < 0) {
                f->refs--;
                log_warn("stats", "could not store the stats of %s %s (Valkey down?)", f->did,
                         f->repo);
            }
        }
        free(argv);
        buf_free(&k1);
        buf_free(&k2);
        buf_free(&k3);
        buf_free(&k4);
    }
    buf_free(&out);
}

static void hub_fallback(flight *f);

static void maybe_finish(flight *f)
{
    if (f->holds_done && !f->hub_pending && !f->answered) finish_stats(f);
}

static void on_deadline(uv_timer_t *t)
{
    flight *f = t->data;
    if (f->answered) return;
    if (f->hub_pending) {
        /* Docker Hub is late (or parked): answer with the last snapshot, the call goes on. */
        hub_fallback(f);
        f->hub_pending = 0;
    }
    maybe_finish(f);
}

/* ---- Docker Hub ---- */

static void hub_fallback(flight *f)
{
    long long pulls;
    long day;
    if (f->s->hist && f->image_verified &&
        history_latest(f->s->hist, f->image, &pulls, &day) == 1) {
        char d[11];
        history_day_string(day, d);
        f->hub_state = 2;
        f->hub_pulls = pulls;
        snprintf(f->hub_synced, sizeof f->hub_synced, "%sT00:00:00.000Z", d);
    }
}

static void on_hub(const dockerhub_result *res, void *ud)
{
    flight *f = ud;
    stats *s = f->s;
    if (!f->hub_pending) { /* the deadline answered without it */
        if (res->status == HUB_OK && s->hist && !s->stopped &&
            history_record(s->hist, res->image, history_day_of(now_ms()), res->pull_count,
                           now_ms()) < 0)
            log_warn("stats", "could not record the Hub snapshot of %s", res->image);
        flight_release(f);
        return;
    }
    if (res->status == HUB_OK && s->hist && !s->stopped &&
        history_record(s->hist, res->image, history_day_of(now_ms()), res->pull_count, now_ms()) <
            0)
        log_warn("stats", "could not record the Hub snapshot of %s", res->image);
    if (!f->answered) {
        f->hub_pending = 0;
        if (res->status == HUB_OK) {
            f->hub_state = 1;
            f->hub_pulls = res->pull_count;
            f->hub_stars = res->star_count;
            now_iso(f->hub_synced);
        } else if (res->status != HUB_MISSING) {
            hub_fallback(f);
        }
        maybe_finish(f);
    }
    flight_release(f);
}

/* ---- holds ---- */

static int is_time(const char *t)
{
    return t && strlen(t) < 40 && atp_is_datetime(t, strlen(t));
}

static void later(char *dst, const char *t)
{
    if (is_time(t) && strcmp(t, dst) > 0) snprintf(dst, 40, "%s", t);
}

static void on_hold_stats(const hold_answer *a, size_t n, void *ud)
{
    flight *f = ud;
    json_t *fresh = json_object();
    json_object_set_new(f->known, "fresh", fresh);
    int err = buf_puts(&f->holds_part, ",\"holds\":[");
    for (size_t i = 0; i < n; i++) {
        long long pulls = 0, pushes = 0;
        const char *lp = NULL, *lq = NULL, *status = "unreachable";
        json_t *o = NULL;
        char known[128];
        if (a[i].ok) {
            o = json_read(a[i].body, a[i].len);
            json_t *p = json_object_get(o, "pullCount"), *q = json_object_get(o, "pushCount");
            if (json_is_integer(p) && json_is_integer(q) && json_integer_value(p) >= 0 &&
                json_integer_value(q) >= 0) {
                pulls = json_integer_value(p);
                pushes = json_integer_value(q);
                lp = json_string_value(json_object_get(o, "lastPull"));
                lq = json_string_value(json_object_get(o, "lastPush"));
                status = "ok";
                snprintf(known, sizeof known, "%lld %lld %s %s", pulls, pushes,
                         is_time(lp) ? lp : "-", is_time(lq) ? lq : "-");
                json_object_set_new(fresh, a[i].did, json_string(known));
            } else {
                log_warn("stats", "hold %s: getStats answer without counts", a[i].did);
            }
        }
        if (strcmp(status, "ok")) {
            const char *k = json_string_value(json_object_get(f->known, a[i].did));
            char t1[40], t2[40];
            if (k && sscanf(k, "%lld %lld %39s %39s", &pulls, &pushes, t1, t2) == 4) {
                status = "stale";
                snprintf(known, sizeof known, "%s", t1);
                later(f->last_pull, t1);
                later(f->last_push, t2);
            } else {
                pulls = pushes = 0;
            }
        } else {
            later(f->last_pull, lp);
            later(f->last_push, lq);
        }
        f->pulls += pulls;
        f->pushes += pushes;
        err |= buf_puts(&f->holds_part, i ? ",{\"did\":" : "{\"did\":");
        err |= buf_json_string(&f->holds_part, a[i].did, strlen(a[i].did));
        err |=
            buf_printf(&f->holds_part, ",\"pullCount\":%lld,\"pushCount\":%lld,\"status\":\"%s\"}",
                       pulls, pushes, status);
        json_decref(o);
    }
    err |= buf_puts(&f->holds_part, "]");
    if (err) log_error("stats", "out of memory building the holds list");
    f->holds_done = 1;
    maybe_finish(f);
    flight_release(f);
}

static void on_hold_history(const hold_answer *a, size_t n, void *ud)
{
    flight *f = ud;
    stats *s = f->s;
    int days = f->days;
    long today = history_day_of(now_ms());
    long long *holds_sum = calloc((size_t)days, sizeof *holds_sum);
    long long *hub = calloc((size_t)days, sizeof *hub);
    char(*dates)[11] = calloc((size_t)days, sizeof *dates);
    if (!holds_sum || !hub || !dates) {
        answer_error(f, 500, "InternalServerError", "out of memory");
        goto out;
    }
    for (int d = 0; d < days; d++) {
        history_day_string(today - days + 1 + d, dates[d]);
        hub[d] = -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!a[i].ok) continue;
        json_t *o = json_read(a[i].body, a[i].len);
        json_t *arr = json_object_get(o, "days"), *day;
        size_t k;
        json_array_foreach(arr, k, day)
        {
            const char *date = json_string_value(json_object_get(day, "date"));
            json_t *p = json_object_get(day, "pullCount");
            if (!date || !json_is_integer(p) || json_integer_value(p) < 0) continue;
            for (int d = 0; d < days; d++)
                if (!strcmp(dates[d], date)) holds_sum[d] += json_integer_value(p);
        }
        json_decref(o);
    }
    if (f->image && s->hist && history_daily(s->hist, f->image, today, days, hub) < 0)
        log_warn("stats", "could not read the Hub history of %s", f->image);
    buf out = {0};
    int err = buf_puts(&out, "{\"days\":[");
    for (int d = 0; d < days; d++) {
        err |= buf_printf(&out, "%s{\"date\":\"%s\",\"holdPulls\":%lld", d ? "," : "", dates[d],
                          holds_sum[d]);
        if (hub[d] >= 0) err |= buf_printf(&out, ",\"dockerHubPulls\":%lld", hub[d]);
        err |= buf_puts(&out, "}");
    }
    err |= buf_puts(&out, "]}");
    if (err)
        answer_error(f, 500, "InternalServerError", "out of memory");
    else
        answer_json(f, out.data, out.len);
    buf_free(&out);
out:
    free(holds_sum);
    free(hub);
    free(dates);
    flight_release(f);
}

/* ---- the Valkey part ---- */

static void run_holds(flight *f);

static void on_ensure(const load_result *res, void *ud)
{
    flight *f = ud;
    if (res->status == LOAD_NOT_FOUND)
        answer_error(f, 404, "RepoNotFound", res->error ? res->error : "actor not found");
    else if (f->s->stopped)
        answer_error(f, 503, "ServiceUnavailable", "shutting down");
    else if (!f->answered)
        run_holds(f);
    flight_release(f);
}

static int add_hold(flight *f, const char *did)
{
    if (!atp_is_did(did, strlen(did)) || f->nholds >= MAX_HOLDS) return 0;
    for (size_t i = 0; i < f->nholds; i++)
        if (!strcmp(f->hold_dids[i], did)) return 0;
    char *d = strdup(did);
    if (!d) return -1;
    f->hold_dids[f->nholds++] = d;
    return 0;
}

static void on_holds_read(const reply *answer, void *ud)
{
    flight *f = ud;
    stats *s = f->s;
    if (f->answered || s->stopped) {
        answer_error(f, 503, "ServiceUnavailable", "shutting down");
        flight_release(f);
        return;
    }
    if (!answer || answer->type != REPLY_ARRAY || answer->elements < 4 ||
        answer->element[0]->type != REPLY_INTEGER || answer->element[3]->type != REPLY_INTEGER ||
        answer->element[2]->type != REPLY_STRING) {
        if (answer && answer->type == REPLY_ERROR)
            log_error("stats", "stats_holds script: %s", answer->str);
        answer_error(f, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
        flight_release(f);
        return;
    }
    long long complete = answer->element[0]->integer, live = answer->element[1]->integer;
    size_t nh = (size_t)answer->element[3]->integer;
    if (4 + nh > answer->elements) nh = answer->elements - 4;
    if (!complete && !f->loaded && s->l) {
        f->loaded = 1;
        if (loader_ensure_repo(s->l, f->did, on_ensure, f) == 0) return; /* keeps the ref */
    }
    if (!live && nh == 0) {
        answer_error(f, 404, "RepoNotFound", "no such repository");
        flight_release(f);
        return;
    }
    /* Built once per flight (a read that goes to the loader returns above, before this), so
     * the list starts empty; said here because the analyzer cannot know it on entry. */
    f->hold_dids = calloc(nh + s->ncfg_holds + 1, sizeof *f->hold_dids);
    f->nholds = 0;
    f->known = json_object();
    int err = !f->hold_dids || !f->known;
    for (size_t i = 0; !err && i < nh; i++) {
        const reply *e = answer->element[4 + i];
        if (e->type != REPLY_STRING || e->len < 3) continue;
        if (!strncmp(e->str, "d:", 2)) {
            err = add_hold(f, e->str + 2);
        } else {
            char *did = did_web_from_url(e->str + 2);
            if (did) err = add_hold(f, did);
            free(did);
        }
    }
    for (size_t i = 0; !err && i < s->ncfg_holds; i++)
        err = add_hold(f, s->cfg_holds[i]);
    for (size_t i = 4 + nh; !err && i + 1 < answer->elements; i += 2) {
        const reply *k = answer->element[i], *v = answer->element[i + 1];
        if (k->type == REPLY_STRING && v->type == REPLY_STRING)
            json_object_set_new(f->known, k->str, json_string(v->str));
    }
    if (!f->image) {
        const char *mapped = lookup_map(s, f->did, f->repo);
        f->image_verified = mapped != NULL;
        f->image = mapped ? strdup(mapped) : image_from_source(answer->element[2]->str);
    }
    buf pq = {0};
    err |= buf_puts(&pq, f->history ? "/xrpc/io.atcr.hold.getStatsHistory?did="
                                    : "/xrpc/io.atcr.hold.getStats?did=");
    err |= buf_url_encode(&pq, f->did);
    err |= buf_puts(&pq, "&repository=");
    err |= buf_url_encode(&pq, f->repo);
    if (f->history) err |= buf_printf(&pq, "&days=%d", f->days);
    if (err) {
        buf_free(&pq);
        answer_error(f, 500, "InternalServerError", "out of memory");
        flight_release(f);
        return;
    }
    /* The ref of this callback passes to the holds round. */
    if (holds_ask(s->hl, (const char *const *)f->hold_dids, f->nholds, pq.data,
                  f->history ? on_hold_history : on_hold_stats, f) < 0) {
        answer_error(f, 500, "InternalServerError", "out of memory");
        flight_release(f);
        buf_free(&pq);
        return;
    }
    buf_free(&pq);
    if (!f->history && f->image && s->hub) {
        f->refs++;
        f->hub_pending = 1;
        if (dockerhub_get(s->hub, f->image, false, on_hub, f) < 0) {
            f->refs--;
            f->hub_pending = 0;
        }
    }
}

static void run_holds(flight *f)
{
    stats *s = f->s;
    buf key = {0}, base = {0};
    int rc = -1;
    if (buf_printf(&key, "%s{%s}/recs", s->prefix, f->did) == 0 &&
        buf_printf(&base, "%s{%s}/", s->prefix, f->did) == 0) {
        const char *argv[] = {key.data, base.data, f->repo};
        f->refs++;
        rc = cache_eval(s->v, s->script_holds, on_holds_read, f, 1, 3, argv, NULL);
        if (rc < 0) f->refs--;
    }
    buf_free(&key);
    buf_free(&base);
    if (rc < 0) answer_error(f, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
}

static void on_cached(const reply *answer, void *ud)
{
    flight *f = ud;
    if (answer && answer->type == REPLY_STRING && !f->answered) {
        (*f->s->cache_hits)++;
        answer_json(f, answer->str, answer->len);
    } else if (f->s->stopped) {
        answer_error(f, 503, "ServiceUnavailable", "shutting down");
    } else if (!f->answered) {
        run_holds(f);
    }
    flight_release(f);
}

/* ---- requests ---- */

static flight *flight_new(stats *s, const char *did, const char *repo)
{
    flight *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->s = s;
    f->refs = 1;
    f->did = strdup(did);
    f->repo = strdup(repo);
    f->timer = malloc(sizeof *f->timer);
    if (!f->did || !f->repo || !f->timer) {
        free(f->timer);
        f->timer = NULL;
        flight_release(f);
        return NULL;
    }
    uv_timer_init(s->loop, f->timer);
    f->timer->data = f;
    return f;
}

typedef struct {
    stats *s;
    httpd_req *req;
    int history, days;
    const char *repo; /* owned by req */
} pending;

static void start(pending *p, const char *did)
{
    stats *s = p->s;
    if (!p->history) {
        for (flight *f = s->flights; f; f = f->next)
            if (!strcmp(f->did, did) && !strcmp(f->repo, p->repo)) {
                waiter *w = calloc(1, sizeof *w);
                if (!w) {
                    httpd_reply_error(p->req, 500, "InternalServerError", "out of memory");
                    return;
                }
                (*s->coalesced)++;
                w->req = p->req;
                w->next = f->waiters;
                f->waiters = w;
                return;
            }
    }
    flight *f = flight_new(s, did, p->repo);
    waiter *w = p->history ? NULL : calloc(1, sizeof *w);
    if (!f || (!p->history && !w)) {
        free(w);
        if (f) {
            uv_close((uv_handle_t *)f->timer, on_timer_closed);
        }
        httpd_reply_error(p->req, 500, "InternalServerError", "out of memory");
        return;
    }
    f->history = p->history;
    f->days = p->days;
    if (p->history) {
        f->req = p->req;
    } else {
        w->req = p->req;
        f->waiters = w;
        f->next = s->flights;
        if (s->flights) s->flights->prev = f;
        s->flights = f;
    }
    uv_timer_start(f->timer, on_deadline, (uint64_t)s->opt.hold_timeout_ms + 200, 0);
    if (p->history) {
        run_holds(f);
    } else {
        buf key = {0};
        int rc = buf_printf(&key, "%s{%s}/repo/%s/stats", s->prefix, did, p->repo);
        if (rc == 0) {
            f->refs++;
            rc = cache_command(s->v, on_cached, f, 2, (const char *[]){"GET", key.data}, NULL);
            if (rc < 0) f->refs--;
        }
        buf_free(&key);
        if (rc < 0) answer_error(f, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
    }
}

static void on_resolved(const load_result *res, void *ud)
{
    pending *p = ud;
    switch (res->status) {
    case LOAD_OK:
        if (p->s->stopped)
            httpd_reply_error(p->req, 503, "ServiceUnavailable", "shutting down");
        else
            start(p, res->did);
        break;
    case LOAD_NOT_FOUND:
        httpd_reply_error(p->req, 404, "RepoNotFound", "%s",
                          res->error ? res->error : "actor not found");
        break;
    case LOAD_INVALID:
        httpd_reply_error(p->req, 400, "InvalidRequest", "%s",
                          res->error ? res->error : "invalid actor");
        break;
    case LOAD_UPSTREAM_TIMEOUT:
        httpd_reply_error(p->req, 504, "UpstreamTimeout", "%s",
                          res->error ? res->error : "timed out");
        break;
    default:
        httpd_reply_error(p->req, 502, "UpstreamFailure", "%s",
                          res->error ? res->error : "handle resolution failed");
    }
    free(p);
}

static void handle(httpd_req *req, stats *s, int is_history)
{
    (*(is_history ? s->hist_total : s->total))++;
    const char *actor = httpd_req_param(req, "actor");
    const char *repo = httpd_req_param(req, "repository");
    const char *days = httpd_req_param(req, "days");
    const char *bad = NULL;
    int ndays = DEFAULT_DAYS;
    if (!actor || !*actor)
        bad = "actor is required";
    else if (!atp_is_did(actor, strlen(actor)) && !atp_is_handle(actor, strlen(actor)))
        bad = "actor must be a DID or a handle";
    else if (!repo || !*repo)
        bad = "repository is required";
    else if (!oci_is_repository(repo, strlen(repo)))
        bad = "repository is not a valid OCI repository name";
    else if (is_history && days) {
        char *end;
        long v = strtol(days, &end, 10);
        if (!*days || *end || v < 1 || v > 365)
            bad = "days must be an integer from 1 to 365";
        else
            ndays = (int)v;
    }
    if (bad) {
        (*s->invalid_total)++;
        log_info("stats", "bad request from %s: %s", httpd_req_peer(req), bad);
        httpd_reply_error(req, 400, "InvalidRequest", "%s", bad);
        return;
    }
    if (s->stopped) {
        httpd_reply_error(req, 503, "ServiceUnavailable", "shutting down");
        return;
    }
    pending p = {.s = s, .req = req, .history = is_history, .days = ndays, .repo = repo};
    if (atp_is_did(actor, strlen(actor))) {
        start(&p, actor);
        return;
    }
    pending *pp = malloc(sizeof *pp);
    if (!s->l || !pp) {
        free(pp);
        httpd_reply_error(req, s->l ? 500 : 400, s->l ? "InternalServerError" : "InvalidRequest",
                          "%s", s->l ? "out of memory" : "actor must be a DID here");
        return;
    }
    *pp = p;
    if (loader_resolve(s->l, actor, on_resolved, pp) < 0) {
        free(pp);
        httpd_reply_error(req, 500, "InternalServerError", "out of memory");
    }
}

static void handle_stats(httpd_req *req, void *ud)
{
    handle(req, ud, 0);
}

static void handle_history(httpd_req *req, void *ud)
{
    handle(req, ud, 1);
}

/* ---- the refresh loop's fetcher ---- */

typedef struct {
    stats *s;
    history_done_fn done;
} refresh_call;

static void on_refreshed(const dockerhub_result *res, void *ud)
{
    refresh_call *c = ud;
    stats *s = c->s;
    int outcome = -1;
    if (res->status == HUB_OK)
        outcome = history_record(s->hist, res->image, history_day_of(now_ms()), res->pull_count,
                                 now_ms());
    else if (res->status == HUB_MISSING)
        outcome = history_touch(s->hist, res->image, now_ms());
    history_done_fn done = c->done;
    free(c);
    done(s->hist, outcome);
}

static int refresh_fetch(history *h, const char *image, history_done_fn done, void *ud)
{
    stats *s = ud;
    refresh_call *c = malloc(sizeof *c);
    if (!c || s->stopped) {
        free(c);
        return -1;
    }
    c->s = s;
    c->done = done;
    if (dockerhub_get(s->hub, image, true, on_refreshed, c) < 0) {
        free(c);
        return -1;
    }
    return 0;
}

/* ---- setup ---- */

stats *stats_new(uv_loop_t *loop, httpd *h, cache_client *v, loader *l, resolver *r,
                 const stats_options *opt)
{
    stats *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->loop = loop;
    s->v = v;
    s->l = l;
    s->opt = *opt;
    s->prefix = strdup(opt->prefix ? opt->prefix : "atcr:");
    s->cfg_holds = calloc(opt->nholds + 1, sizeof *s->cfg_holds);
    int err = !s->prefix || !s->cfg_holds;
    for (size_t i = 0; !err && i < opt->nholds; i++)
        err = !(s->cfg_holds[s->ncfg_holds++] = strdup(opt->holds[i]));
    s->script_holds = cache_register_script(v, "stats_holds", lua_stats_holds);
    s->script_save = cache_register_script(v, "stats_save", lua_stats_save);
    if (err || s->script_holds < 0 || s->script_save < 0) {
        log_error("stats", "could not set up (out of memory or scripts)");
        stats_free(s);
        return NULL;
    }
    holds_options ho = {.concurrency = opt->concurrency,
                        .timeout_ms = opt->hold_timeout_ms,
                        .endpoint_ttl = 3600,
                        .allow_private = opt->allow_private};
    s->hl = holds_new(loop, r, &ho);
    dockerhub_options dho = {.base_url = opt->dockerhub_url,
                             .rate = opt->dockerhub_rate,
                             .window_s = opt->dockerhub_rate_window,
                             .timeout_ms = 10000,
                             .ok_ttl = opt->stats_ttl};
    s->hub = opt->dockerhub_url ? dockerhub_new(loop, &dho) : NULL;
    char why[512];
    s->hist = opt->data_dir ? history_open(opt->data_dir, why, sizeof why) : NULL;
    if (opt->data_dir && !s->hist)
        log_error("stats", "history database (--data-dir, APPVIEW_DATA_DIR): %s", why);
    if (!s->hl || (opt->dockerhub_url && !s->hub) || (opt->data_dir && !s->hist) ||
        (opt->dockerhub_map && load_map(s, opt->dockerhub_map) < 0)) {
        stats_free(s);
        return NULL;
    }
    if (s->hist && s->hub &&
        history_refresh_start(s->hist, loop, opt->refresh_hours, 1000, refresh_fetch, s) < 0) {
        stats_free(s);
        return NULL;
    }
    s->total =
        metrics_counter("appview_reads_total{method=\"getStats\"}", "XRPC read requests by method");
    s->hist_total = metrics_counter("appview_reads_total{method=\"getStatsHistory\"}",
                                    "XRPC read requests by method");
    s->invalid_total =
        metrics_counter("appview_stats_invalid_total", "Stats requests refused for bad parameters");
    s->cache_hits =
        metrics_counter("appview_stats_cache_hits_total", "getStats answered from the cache");
    s->coalesced = metrics_counter("appview_stats_coalesced_total",
                                   "getStats requests that joined a fan-out in flight");
    if (httpd_route(h, "GET", "/xrpc/io.atcr.repo.getStats", handle_stats, s) < 0 ||
        httpd_route(h, "GET", "/xrpc/io.atcr.repo.getStatsHistory", handle_history, s) < 0) {
        stats_free(s);
        return NULL;
    }
    return s;
}

void stats_stop(stats *s)
{
    if (s) s->stopped = 1;
}

void stats_free(stats *s)
{
    if (!s) return;
    s->stopped = 1;
    holds_free(s->hl);
    dockerhub_free(s->hub);
    history_close(s->hist);
    while (s->map) {
        mapping *m = s->map;
        s->map = m->next;
        free(m->key);
        free(m->image);
        free(m);
    }
    for (size_t i = 0; i < s->ncfg_holds; i++)
        free(s->cfg_holds[i]);
    free(s->cfg_holds);
    free(s->prefix);
    free(s);
}
