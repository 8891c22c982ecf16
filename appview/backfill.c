#include "appview/backfill.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appview/event.h"
#include "appview/fold.h"
#include "appview/lease.h"
#include "atproto/backoff.h"
#include "atproto/buf.h"
#include "atproto/json_read.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/syntax.h"
#include "atproto/url.h"
#include "cache/scripts.h"

#define TICK_MS 250
#define CHECK_EVERY_MS 5000 /* how often an idle replica looks for a pass to run */
#define LOG_EVERY_MS 5000   /* progress lines (a command without a terminal: every 2 s) */
#define COMMAND_LOG_EVERY_MS 2000
#define RELAY_LIMIT "1000"      /* DIDs a relay page (the lexicon allows 2000) */
#define FILE_PAGE_LINES 1000    /* DIDs a page of the DIDs file */
#define MAX_SOURCE_PAGES 100000 /* pages of one collection before its listing is cut off */
#define SCAN_COUNT "256"
#define SOURCE_RETRY_BASE_MS 1000 /* relay failures back off 0.5-1 s, doubling up to 30-60 s */
#define SOURCE_RETRY_MAX_MS 60000
#define RATE_SAMPLES 31 /* one a second: the rate over the last 30 s */
#define FAILED_SHOWN 20 /* the command's summary names at most this many */

/* A relay lists the DIDs of each of event_collections, in that order. io.atcr.hold.stats lives
 * in holds' repositories: a DID whose document names a #atcr_hold service gets its stats
 * listed from there. A file of DIDs is one source. */
static const char *const file_collections[] = {"file"};

typedef enum {
    PH_IDLE,     /* looks for a pass every CHECK_EVERY_MS */
    PH_CHECKING, /* reading P backfill and P schema */
    PH_LEASING,  /* has a pass to run, waits for the lease */
    PH_STARTING, /* the pass is being begun or read back */
    PH_RUNNING,
    PH_ENDED, /* the command's pass ended, or stop */
} phase;

/* What a check read. */
typedef struct {
    int replies;
    char *pass, *state, *source, *reason, *request;
    uint64_t retry_at, failed, found, done, records;
    unsigned retries;
    bf_schema schema;
    int broken;
} check_view;

struct backfill {
    uv_loop_t *loop;
    cache_client *v;
    loader *ld;
    http_client *http;
    bf_mode mode;
    char *prefix, *relay, *dids_file, *source;
    unsigned concurrency, per_host;
    int bar;
    backfill_done_cb on_done;
    void *ud;
    char *k_state, *k_todo, *k_done, *k_failed, *k_tries, *k_schema;
    int script;
    lease *lease;
    uv_timer_t tick, wake;
    int handles_open;
    unsigned refs; /* callbacks still to come */
    int closing, stopping;
    phase ph;
    unsigned gen; /* moves on when a pass stops running here: older callbacks are ignored */
    uint64_t next_check, next_log, next_sample, lease_wait_log;
    check_view chk;
    char status[200]; /* why nothing runs (health, logs); "" while a pass runs */
    char *request;    /* asked for, not yet written to Valkey */
    int request_inflight;

    /* the pass */
    char pass[48], reason[96];
    bf_action action;
    unsigned retries;
    const char *const *colls;
    size_t ncoll, src_index;
    char *src_cursor;
    unsigned src_pages, src_failures;
    int src_inflight;
    uint64_t src_retry_at;
    char src_error[200];
    bf_sched *sched;
    char scan_cursor[32];
    int scan_inflight, scan_cycle, scan_added;
    uint64_t scan_idle_until;
    unsigned ops_inflight;
    int finishing, checking_run;

    /* progress: the pass's counters as its last script call returned them */
    uint64_t found, done, failed, queued, records;
    uint64_t sample_t[RATE_SAMPLES], sample_done[RATE_SAMPLES];
    unsigned nsamples;
    int bar_drawn;
    uint64_t rng;

    uint64_t *loaded_total, *failed_total, *retries_total, *parked_total, *records_total;
    uint64_t *pages_total, *source_errors_total, *invalid_total, *passes_total;
};

/* The command's progress bar, cleared before a log line is written under it. */
static backfill *bar_owner;

/* ---- small helpers ---- */

static uint64_t wall_ms(void)
{
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static uint64_t rnd(backfill *b)
{
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return b->rng;
}

static uint64_t reply_u64(const reply *r)
{
    if (!r) return 0;
    if (r->type == REPLY_INTEGER) return r->integer > 0 ? (uint64_t)r->integer : 0;
    return r->type == REPLY_STRING ? strtoull(r->str, NULL, 10) : 0;
}

static char *reply_str(const reply *r)
{
    return r && r->type == REPLY_STRING ? strdup(r->str) : NULL;
}

static void set_status(backfill *b, const char *f, ...) __attribute__((format(printf, 2, 3)));
static void set_status(backfill *b, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(b->status, sizeof b->status, f, ap);
    va_end(ap);
}

static void maybe_free(backfill *b);

/* An asynchronous call's context: the pass it belongs to, and the DID's item. */
typedef struct {
    backfill *b;
    unsigned gen;
    bf_item *item;
} step_ctx;

static step_ctx *ctx_new(backfill *b, bf_item *item)
{
    step_ctx *c = malloc(sizeof *c);
    if (!c) return NULL;
    *c = (step_ctx){b, b->gen, item};
    b->refs++;
    return c;
}

/* A context whose call could not be made (the caller holds the backfill). NULL is ignored. */
static void ctx_drop(step_ctx *c)
{
    if (!c) return;
    c->b->refs--;
    free(c);
}

/* Frees the context; returns its backfill when the callback still concerns the pass running
 * here, NULL when it is to be ignored (the pass stopped, or the process is stopping). */
static backfill *ctx_take(step_ctx *c, bf_item **item)
{
    backfill *b = c->b;
    int current = c->gen == b->gen && !b->closing && !b->stopping;
    if (item) *item = c->item;
    free(c);
    b->refs--;
    if (b->closing) {
        maybe_free(b);
        return NULL;
    }
    return current ? b : NULL;
}

/* ---- progress ---- */

static double rate(const backfill *b)
{
    if (b->nsamples < 2) return 0;
    unsigned first = b->nsamples > RATE_SAMPLES ? b->nsamples % RATE_SAMPLES : 0;
    unsigned last = (b->nsamples - 1) % RATE_SAMPLES;
    uint64_t dt = b->sample_t[last] - b->sample_t[first];
    if (!dt || b->sample_done[last] < b->sample_done[first]) return 0;
    return (double)(b->sample_done[last] - b->sample_done[first]) * 1000.0 / (double)dt;
}

static void sample(backfill *b, uint64_t now)
{
    unsigned i = b->nsamples % RATE_SAMPLES;
    b->sample_t[i] = now;
    b->sample_done[i] = b->done + b->failed;
    b->nsamples++;
}

/* Seconds left at the current rate; -1 when unknown. While DIDs are still being listed the
 * total is not known: the estimate is of those found so far. */
static double eta(const backfill *b)
{
    double r = rate(b);
    if (r <= 0) return -1;
    uint64_t left = b->found > b->done + b->failed ? b->found - b->done - b->failed : 0;
    return (double)left / r;
}

static int listing(const backfill *b)
{
    return b->ph == PH_RUNNING && b->src_index < b->ncoll;
}

static void format_duration(char *out, size_t cap, double s)
{
    if (s < 0)
        snprintf(out, cap, "?");
    else if (s < 60)
        snprintf(out, cap, "%.0fs", s);
    else if (s < 3600)
        snprintf(out, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(out, cap, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

static void progress_text(const backfill *b, char *out, size_t cap)
{
    char left[32];
    format_duration(left, sizeof left, eta(b));
    snprintf(out, cap,
             "%llu of %llu DIDs done, %llu failed, %u in progress, %llu records, %.1f DIDs/s, "
             "ETA %s%s",
             (unsigned long long)b->done, (unsigned long long)b->found,
             (unsigned long long)b->failed, b->sched ? bf_sched_active(b->sched) : 0,
             (unsigned long long)b->records, rate(b), left,
             listing(b) ? " (still listing DIDs)" : "");
}

static void clear_bar(void)
{
    if (bar_owner && bar_owner->bar_drawn) {
        fputs("\r\033[K", stderr);
        bar_owner->bar_drawn = 0;
    }
}

static void draw_bar(backfill *b)
{
    enum { WIDTH = 30 };
    uint64_t finished = b->done + b->failed;
    unsigned fill = b->found ? (unsigned)(finished * WIDTH / b->found) : 0;
    char bar[WIDTH + 1], left[32];
    for (unsigned i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '-';
    bar[WIDTH] = 0;
    format_duration(left, sizeof left, eta(b));
    fprintf(stderr, "\r\033[K[%s] %llu/%llu%s DIDs  %llu failed  %llu records  %.1f/s  ETA %s", bar,
            (unsigned long long)finished, (unsigned long long)b->found, listing(b) ? "+" : "",
            (unsigned long long)b->failed, (unsigned long long)b->records, rate(b), left);
    fflush(stderr);
    b->bar_drawn = 1;
}

static void report(backfill *b, uint64_t now)
{
    if (now >= b->next_sample) {
        sample(b, now);
        b->next_sample = now + 1000;
    }
    if (b->bar) {
        draw_bar(b);
        return;
    }
    if (now < b->next_log) return;
    b->next_log = now + (b->mode == BF_COMMAND ? COMMAND_LOG_EVERY_MS : LOG_EVERY_MS);
    char text[300];
    progress_text(b, text, sizeof text);
    log_info("backfill", "%s", text);
}

/* ---- the pass's script (cache/backfill.lua) ---- */

/* Calls op on the current pass with args; cb gets ctx. 0, or -1 when not sent (ctx freed). */
static int run_op(backfill *b, const char *op, cache_reply_cb cb, step_ctx *ctx, int nargs,
                  const char **args)
{
    const char **argv = malloc((size_t)(7 + nargs) * sizeof *argv);
    int rc = -1;
    if (argv && ctx) {
        const char *head[] = {b->k_state, b->k_todo, b->k_done, b->k_failed,
                              b->k_tries, op,        b->pass};
        memcpy(argv, head, sizeof head);
        if (nargs) memcpy(argv + 7, args, (size_t)nargs * sizeof *args);
        rc = cache_eval(b->v, b->script, cb, ctx, 5, 7 + nargs, argv, NULL);
    }
    free(argv);
    if (rc == 0)
        b->ops_inflight++;
    else
        ctx_drop(ctx);
    return rc;
}

/* The counters a call returned: 1, or 0 when the pass is not P backfill's any more (replaced,
 * or the prefix flushed), -1 when Valkey failed. *finished gets finish's sixth value. */
static int take_counts(backfill *b, const reply *r, int *finished)
{
    if (!r || r->type == REPLY_ERROR) return -1;
    if (r->type != REPLY_ARRAY || r->elements < 5) return 0;
    b->found = reply_u64(r->element[0]);
    b->done = reply_u64(r->element[1]);
    b->failed = reply_u64(r->element[2]);
    b->queued = reply_u64(r->element[3]);
    b->records = reply_u64(r->element[4]);
    if (finished) *finished = r->elements > 5 && reply_u64(r->element[5]) == 1;
    return 1;
}

static void pump(backfill *b);

/* The pass stops running here (its progress stays in Valkey): a later check resumes it. */
static void pass_stop(backfill *b, const char *why)
{
    if (b->ph == PH_RUNNING || b->ph == PH_STARTING)
        log_warn("backfill", "pass %s paused: %s", b->pass, why);
    b->gen++;
    bf_sched_free(b->sched);
    b->sched = NULL;
    free(b->src_cursor);
    b->src_cursor = NULL;
    b->src_inflight = b->scan_inflight = b->finishing = b->checking_run = 0;
    uv_timer_stop(&b->wake);
    if (b->ph != PH_ENDED) b->ph = PH_IDLE;
    b->next_check = uv_now(b->loop) + 1000;
    set_status(b, "paused: %s", why);
}

/* The answer to a run_op call: its backfill, the counters taken (and *item, and finish's flag
 * when asked), when the pass goes on; NULL when the answer is to be ignored or it stopped the
 * pass (Valkey failed, or the pass is not P backfill's any more). */
static backfill *op_answer(const reply *r, void *ud, bf_item **item, int *finished)
{
    step_ctx *c = ud;
    c->b->ops_inflight--;
    backfill *b = ctx_take(c, item);
    if (!b) return NULL;
    int rc = take_counts(b, r, finished);
    if (rc <= 0) {
        pass_stop(b, rc < 0 ? "Valkey did not take a progress write" : "the pass was replaced");
        return NULL;
    }
    return b;
}

/* ---- the end of a pass ---- */

static void command_end(backfill *b, int status)
{
    if (b->mode != BF_COMMAND || b->ph == PH_ENDED) return;
    clear_bar();
    b->ph = PH_ENDED;
    if (b->on_done) b->on_done(b->ud, status);
}

static void on_failed_listed(const reply *r, void *ud)
{
    step_ctx *c = ud;
    backfill *b = c->b;
    int closing = b->closing;
    ctx_take(c, NULL);
    if (closing) return;
    if (r && r->type == REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REPLY_ARRAY) {
        const reply *kv = r->element[1];
        size_t shown = 0;
        for (size_t i = 0; i + 1 < kv->elements && shown < FAILED_SHOWN; i += 2, shown++) {
            const char *v = kv->element[i + 1]->type == REPLY_STRING ? kv->element[i + 1]->str : "";
            /* "attempts failed_at_ms reason" */
            const char *reason = strchr(v, ' ');
            reason = reason ? strchr(reason + 1, ' ') : NULL;
            fprintf(stderr, "  %s: %s\n",
                    kv->element[i]->type == REPLY_STRING ? kv->element[i]->str : "?",
                    reason ? reason + 1 : v);
        }
        if (b->failed > shown)
            fprintf(stderr, "  ... and %llu more (HGETALL %s)\n",
                    (unsigned long long)b->failed - shown, b->k_failed);
    }
    command_end(b, 1);
}

static void pass_finished(backfill *b)
{
    sample(b, uv_now(b->loop));
    char text[300];
    progress_text(b, text, sizeof text);
    log_info("backfill", "pass %s finished: %s", b->pass, text);
    clear_bar();
    bf_sched_free(b->sched);
    b->sched = NULL;
    b->gen++;
    b->ph = PH_IDLE;
    b->next_check = uv_now(b->loop) + CHECK_EVERY_MS;
    set_status(b, "finished%s", b->failed ? " with failed DIDs (to be retried)" : "");
    if (b->mode != BF_COMMAND) {
        lease_release(b->lease);
        return;
    }
    if (!b->failed) {
        fprintf(stderr, "backfill complete: %llu DIDs, %llu records\n", (unsigned long long)b->done,
                (unsigned long long)b->records);
        command_end(b, 0);
        return;
    }
    fprintf(stderr,
            "backfill finished with %llu of %llu DIDs failed (each tried %d times; run "
            "`appview backfill` again to retry them):\n",
            (unsigned long long)b->failed, (unsigned long long)b->found, BF_ATTEMPTS);
    step_ctx *c = ctx_new(b, NULL);
    if (!c || cache_command(b->v, on_failed_listed, c, 5,
                            (const char *[]){"HSCAN", b->k_failed, "0", "COUNT", "50"}, NULL) < 0) {
        ctx_drop(c);
        command_end(b, 1);
    }
}

static void on_finish(const reply *r, void *ud)
{
    int finished = 0;
    backfill *b = op_answer(r, ud, NULL, &finished);
    if (!b) return;
    b->finishing = 0;
    if (finished) {
        pass_finished(b);
        return;
    }
    pump(b); /* DIDs were queued meanwhile */
}

static void finish(backfill *b)
{
    char now[24], due[24];
    uint64_t t = wall_ms();
    snprintf(now, sizeof now, "%llu", (unsigned long long)t);
    snprintf(due, sizeof due, "%llu",
             (unsigned long long)t +
                 backoff_delay_ms(BF_RETRY_BASE_MS, BF_RETRY_MAX_MS, b->retries));
    b->finishing = 1;
    if (run_op(b, "finish", on_finish, ctx_new(b, NULL), 2, (const char *[]){now, due}) < 0) {
        b->finishing = 0;
        pass_stop(b, "Valkey unavailable");
    }
}

/* ---- marks: a DID done or failed ---- */

static void on_marked(const reply *r, void *ud)
{
    bf_item *it;
    backfill *b = op_answer(r, ud, &it, NULL);
    if (!b) return;
    bf_sched_remove(b->sched, it);
    pump(b);
}

/* it's attempts, now, and its last error: what "attempt" and "fail" record. */
static void attempts_value(const bf_item *it, char *out, size_t size)
{
    snprintf(out, size, "%u %llu %s", it->attempts, (unsigned long long)wall_ms(), it->error);
}

static void mark_failed(backfill *b, bf_item *it)
{
    char value[300];
    attempts_value(it, value, sizeof value);
    (*b->failed_total)++;
    log_warn("backfill", "%s failed: %s", it->did, it->error);
    if (run_op(b, "fail", on_marked, ctx_new(b, it), 2, (const char *[]){it->did, value}) < 0)
        pass_stop(b, "Valkey unavailable");
}

static void on_attempt_noted(const reply *r, void *ud)
{
    op_answer(r, ud, NULL, NULL);
}

/* A failed attempt is written as it happens: a restart goes on counting from it. */
static void note_attempt(backfill *b, const bf_item *it)
{
    char value[300];
    attempts_value(it, value, sizeof value);
    if (run_op(b, "attempt", on_attempt_noted, ctx_new(b, NULL), 2,
               (const char *[]){it->did, value}) < 0)
        pass_stop(b, "Valkey unavailable");
}

/* A failed step: tried again later, or given up (recorded as failed). */
static void step_failed(backfill *b, bf_item *it, bf_fail_kind kind, long wait_ms,
                        const char *error)
{
    if (kind == BF_FAIL_RATE_LIMITED) {
        (*b->parked_total)++;
        log_warn("backfill", "%s: rate limited (%s): %s parked for %ld ms", it->did, error,
                 it->host ? "its PDS" : "resolving", wait_ms);
    }
    if (bf_sched_failed(b->sched, it, kind, wait_ms, error, uv_now(b->loop), rnd(b))) {
        mark_failed(b, it);
    } else if (kind == BF_FAIL_TRANSIENT) {
        (*b->retries_total)++;
        note_attempt(b, it);
        log_info("backfill", "%s: %s (attempt %u of %d; trying again)", it->did, error,
                 it->attempts, BF_ATTEMPTS);
    }
}

static bf_fail_kind failure_kind(const load_result *res)
{
    if (res->rate_limited) return BF_FAIL_RATE_LIMITED;
    return res->status == LOAD_NOT_FOUND || res->status == LOAD_INVALID ? BF_FAIL_FINAL
                                                                        : BF_FAIL_TRANSIENT;
}

/* ---- steps: resolve, load ---- */

static void start_step(backfill *b, const bf_step *st);

static void on_loaded(const load_result *res, void *ud)
{
    bf_item *it;
    backfill *b = ctx_take(ud, &it);
    if (!b) return;
    if (res->status != LOAD_OK) {
        step_failed(b, it, failure_kind(res), res->retry_after_ms, res->error);
        pump(b);
        return;
    }
    it->records += res->records;
    if (it->repo && it->hold) {
        /* The repository is listed; the hold's stats next, in the same slot. */
        it->repo = 0;
        start_step(b, &(bf_step){.kind = BF_STEP_LOAD, .item = it});
        pump(b);
        return;
    }
    bf_sched_loaded(b->sched, it);
    (*b->loaded_total)++;
    *b->records_total += it->records;
    char records[24];
    snprintf(records, sizeof records, "%zu", it->records);
    if (run_op(b, "done", on_marked, ctx_new(b, it), 2, (const char *[]){it->did, records}) < 0) {
        pass_stop(b, "Valkey unavailable");
        return;
    }
    pump(b);
}

/* A DID is loaded from its PDS (its repository), and a hold's stats from its #atcr_hold
 * service: a hold's DID document may name either or both. */
static void on_resolved(const load_result *res, void *ud)
{
    bf_item *it;
    backfill *b = ctx_take(ud, &it);
    if (!b) return;
    int has_pds = res->status == LOAD_OK && res->pds && *res->pds;
    int is_hold = res->status == LOAD_OK && res->hold && *res->hold;
    if (res->status == LOAD_OK && !has_pds && !is_hold) {
        step_failed(b, it, BF_FAIL_FINAL, -1, "the DID document names no PDS");
    } else if (res->status != LOAD_OK) {
        step_failed(b, it, failure_kind(res), res->retry_after_ms, res->error);
    } else {
        free(it->hold);
        it->hold = is_hold ? strdup(res->hold) : NULL;
        it->repo = has_pds;
        it->records = 0;
        if ((is_hold && !it->hold) ||
            bf_sched_resolved(b->sched, it, has_pds ? res->pds : res->hold) < 0)
            step_failed(b, it, BF_FAIL_TRANSIENT, -1, "out of memory");
    }
    pump(b);
}

static int start_load(backfill *b, bf_item *it, step_ctx *c)
{
    if (it->repo) return loader_reload_repo(b->ld, it->did, on_loaded, c);
    return loader_load_hold_stats(b->ld, it->did, it->hold, on_loaded, c);
}

static void start_step(backfill *b, const bf_step *st)
{
    step_ctx *c = ctx_new(b, st->item);
    int rc = -1;
    if (c && st->kind == BF_STEP_RESOLVE)
        rc = loader_resolve(b->ld, st->item->did, on_resolved, c);
    else if (c)
        rc = start_load(b, st->item, c);
    if (rc < 0) {
        ctx_drop(c);
        step_failed(b, st->item, BF_FAIL_TRANSIENT, -1, "out of memory");
    }
}

/* ---- the window: DIDs taken from the queue ---- */

/* The attempts a "attempts failed_at_ms reason" value counts; 0 for none. */
static unsigned attempts_of(const reply *v)
{
    if (!v || v->type != REPLY_STRING) return 0;
    unsigned long n = strtoul(v->str, NULL, 10);
    return n > BF_ATTEMPTS ? BF_ATTEMPTS : (unsigned)n;
}

static void on_scanned(const reply *r, void *ud)
{
    step_ctx *c = ud;
    c->b->ops_inflight--;
    backfill *b = ctx_take(c, NULL);
    if (!b) return;
    b->scan_inflight = 0;
    if (r && r->type == REPLY_INTEGER && r->integer == 0) {
        pass_stop(b, "the pass was replaced");
        return;
    }
    /* {next cursor, DIDs, their failed attempts (nil when none)} */
    if (!r || r->type != REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REPLY_STRING ||
        r->element[1]->type != REPLY_ARRAY || r->element[2]->type != REPLY_ARRAY ||
        r->element[2]->elements != r->element[1]->elements) {
        pass_stop(b, "Valkey did not answer a queue scan");
        return;
    }
    const reply *dids = r->element[1], *tries = r->element[2];
    for (size_t i = 0; i < dids->elements; i++) {
        if (dids->element[i]->type != REPLY_STRING) continue;
        int rc = bf_sched_add(b->sched, dids->element[i]->str, attempts_of(tries->element[i]));
        if (rc < 0) {
            pass_stop(b, "out of memory");
            return;
        }
        b->scan_added += rc == 0;
    }
    snprintf(b->scan_cursor, sizeof b->scan_cursor, "%s", r->element[0]->str);
    if (!strcmp(b->scan_cursor, "0")) {
        /* A whole cycle: every DID queued throughout it was seen. One that found nothing new
         * waits for the counts to change before the next. */
        b->scan_cycle = 0;
        if (!b->scan_added) b->scan_idle_until = uv_now(b->loop) + 1000;
    }
    pump(b);
}

static void scan(backfill *b)
{
    if (!b->scan_cycle) {
        b->scan_cycle = 1;
        b->scan_added = 0;
        snprintf(b->scan_cursor, sizeof b->scan_cursor, "0");
    }
    if (run_op(b, "scan", on_scanned, ctx_new(b, NULL), 2,
               (const char *[]){b->scan_cursor, SCAN_COUNT}) < 0) {
        pass_stop(b, "Valkey unavailable");
        return;
    }
    b->scan_inflight = 1;
}

/* ---- the source: relay pages or the DIDs file ---- */

static void source_failed(backfill *b, const char *error, long wait_ms)
{
    b->src_failures++;
    snprintf(b->src_error, sizeof b->src_error, "%s", error);
    uint64_t wait = wait_ms >= 0 ? (uint64_t)wait_ms
                                 : backoff_delay_ms(SOURCE_RETRY_BASE_MS, SOURCE_RETRY_MAX_MS,
                                                    b->src_failures - 1);
    b->src_retry_at = uv_now(b->loop) + wait;
    (*b->source_errors_total)++;
    log_warn("backfill", "listing %s of %s failed (%u in a row): %s; again in %llu ms",
             b->colls[b->src_index], b->source, b->src_failures, error, (unsigned long long)wait);
}

static void on_page_written(const reply *r, void *ud)
{
    backfill *b = op_answer(r, ud, NULL, NULL);
    if (!b) return;
    b->src_inflight = 0;
    b->src_failures = 0;
    b->src_error[0] = 0;
    (*b->pages_total)++;
    if (!b->src_cursor) { /* the collection is exhausted */
        log_info("backfill", "listed every DID of %s from %s (%u pages)", b->colls[b->src_index],
                 b->source, b->src_pages);
        b->src_index++;
        b->src_pages = 0;
    }
    pump(b);
}

/* Queues the DIDs of a page and moves the cursor (next NULL: the collection is exhausted). The
 * cursor is taken. */
static void write_page(backfill *b, const char *const *dids, size_t n, char *next)
{
    const char **args = malloc((n + 2) * sizeof *args);
    free(b->src_cursor);
    b->src_cursor = next;
    b->src_pages++;
    if (!args) {
        source_failed(b, "out of memory", -1);
        return;
    }
    args[0] = b->colls[b->src_index];
    args[1] = next ? next : "";
    memcpy(args + 2, dids, n * sizeof *dids);
    b->src_inflight = 1;
    if (run_op(b, "page", on_page_written, ctx_new(b, NULL), (int)n + 2, args) < 0) {
        b->src_inflight = 0;
        pass_stop(b, "Valkey unavailable");
    }
    free(args);
}

/* The answer of listReposByCollection (lexicons/com/atproto/sync): {repos: [{did}], cursor?}. */
static void on_relay_page(const http_result *res, void *ud)
{
    backfill *b = ctx_take(ud, NULL);
    if (!b) return;
    b->src_inflight = 0;
    char msg[240];
    if (res->error != HTTP_OK) {
        source_failed(b, res->error_text, -1);
        return;
    }
    if (res->status != 200) {
        snprintf(msg, sizeof msg, "HTTP %ld", res->status);
        source_failed(b, msg, res->status == 429 ? http_result_wait_ms(res, NULL) : -1);
        return;
    }
    json_t *root = json_read(res->body, res->len);
    json_t *repos = json_object_get(root, "repos");
    json_t *cursor = json_object_get(root, "cursor");
    if (!json_is_array(repos) || (cursor && !json_is_string(cursor))) {
        json_decref(root);
        source_failed(b, "malformed answer (not JSON with a repos array)", -1);
        return;
    }
    size_t n = 0, i;
    json_t *repo;
    const char **dids = calloc(json_array_size(repos) + 1, sizeof *dids);
    if (!dids) {
        json_decref(root);
        source_failed(b, "out of memory", -1);
        return;
    }
    json_array_foreach(repos, i, repo)
    {
        const char *did = json_string_value(json_object_get(repo, "did"));
        if (did && atp_is_did(did, strlen(did)))
            dids[n++] = did;
        else
            (*b->invalid_total)++;
    }
    const char *next = json_string_value(cursor);
    if (next && !*next) next = NULL;
    if (next && b->src_cursor && !strcmp(next, b->src_cursor)) {
        log_warn("backfill", "%s answered the cursor it was sent for %s: its listing ends here",
                 b->source, b->colls[b->src_index]);
        (*b->source_errors_total)++;
        next = NULL;
    } else if (next && b->src_pages + 1 >= MAX_SOURCE_PAGES) {
        log_warn("backfill", "%s: more than %d pages of %s: its listing ends here", b->source,
                 MAX_SOURCE_PAGES, b->colls[b->src_index]);
        (*b->source_errors_total)++;
        next = NULL;
    }
    char *copy = next ? strdup(next) : NULL;
    if (next && !copy)
        source_failed(b, "out of memory", -1);
    else
        write_page(b, dids, n, copy);
    free(dids);
    json_decref(root);
}

static void fetch_relay_page(backfill *b)
{
    buf url = {0};
    int rc = buf_printf(
        &url, "%s/xrpc/com.atproto.sync.listReposByCollection?collection=%s&limit=" RELAY_LIMIT,
        b->relay, b->colls[b->src_index]);
    if (b->src_cursor) {
        rc |= buf_puts(&url, "&cursor=");
        rc |= buf_url_encode(&url, b->src_cursor);
    }
    step_ctx *c = rc == 0 ? ctx_new(b, NULL) : NULL;
    /* The operator named the relay: it may live on a private address. */
    http_request_options ro = {.trusted = true};
    if (c && http_get(b->http, url.data, &ro, on_relay_page, c) == 0)
        b->src_inflight = 1;
    else
        ctx_drop(c);
    buf_free(&url);
    if (!b->src_inflight) source_failed(b, "out of memory", -1);
}

/* The next lines of the DIDs file from the byte offset the cursor holds. */
static void read_file_page(backfill *b)
{
    FILE *f = fopen(b->dids_file, "r");
    long offset = b->src_cursor ? strtol(b->src_cursor, NULL, 10) : 0;
    if (!f || fseek(f, offset, SEEK_SET) != 0) {
        char msg[240];
        snprintf(msg, sizeof msg, "cannot read %s: %s", b->dids_file, strerror(errno));
        if (f) fclose(f);
        if (b->mode == BF_COMMAND) {
            fprintf(stderr, "backfill: %s\n", msg);
            command_end(b, 2);
            return;
        }
        source_failed(b, msg, 60000);
        return;
    }
    char *dids[FILE_PAGE_LINES], line[2100];
    size_t n = 0;
    int eof = 0;
    while (n < FILE_PAGE_LINES) {
        if (!fgets(line, sizeof line, f)) {
            eof = 1;
            break;
        }
        size_t len = strcspn(line, "\r\n");
        int whole = line[len] != 0 || feof(f);
        line[len] = 0;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t end = strlen(s);
        while (end && (s[end - 1] == ' ' || s[end - 1] == '\t'))
            s[--end] = 0;
        if (!whole) { /* longer than any DID: skip the rest of it */
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n')
                ;
            (*b->invalid_total)++;
            continue;
        }
        if (!*s || *s == '#') continue;
        if (!atp_is_did(s, strlen(s)) || !(dids[n] = strdup(s))) {
            (*b->invalid_total)++;
            log_warn("backfill", "%s: not a DID, skipped: %.80s", b->dids_file, s);
            continue;
        }
        n++;
    }
    long next = ftell(f);
    fclose(f);
    char *cursor = !eof && next > 0 ? buf_dup_printf("%ld", next) : NULL;
    write_page(b, (const char *const *)dids, n, cursor);
    for (size_t i = 0; i < n; i++)
        free(dids[i]);
}

/* ---- running a pass ---- */

static void on_wake(uv_timer_t *t)
{
    pump(t->data);
}

static void pump(backfill *b)
{
    if (b->ph != PH_RUNNING || !b->sched) return;
    uint64_t now = uv_now(b->loop);
    if (b->src_index < b->ncoll && !b->src_inflight && now >= b->src_retry_at) {
        if (b->dids_file)
            read_file_page(b);
        else
            fetch_relay_page(b);
        if (b->ph != PH_RUNNING) return;
    }
    size_t size = bf_sched_size(b->sched);
    if (!b->scan_inflight && bf_sched_wants_more(b->sched, now) &&
        (b->scan_cycle || (b->queued > size && now >= b->scan_idle_until)))
        scan(b);
    bf_step st;
    while (b->ph == PH_RUNNING && (st = bf_sched_next(b->sched, now)).kind != BF_STEP_NONE)
        start_step(b, &st);
    if (b->ph != PH_RUNNING) return;
    if (st.wake_at > now) uv_timer_start(&b->wake, on_wake, st.wake_at - now, 0);
    if (b->src_index >= b->ncoll && !b->src_inflight && !b->scan_inflight && !b->finishing &&
        !b->ops_inflight && !b->queued && !bf_sched_size(b->sched))
        finish(b);
}

static void on_counted(const reply *r, void *ud)
{
    backfill *b = op_answer(r, ud, NULL, NULL);
    if (!b) return;
    sample(b, uv_now(b->loop)); /* where the rate starts */
    b->next_sample = uv_now(b->loop) + 1000;
    pump(b);
}

/* Reads the pass back (its counters, cursors, which collections are listed) and runs it. */
static void on_pass_read(const reply *r, void *ud)
{
    backfill *b = ctx_take(ud, NULL);
    if (!b) return;
    if (!r || r->type != REPLY_ARRAY) {
        pass_stop(b, "Valkey did not answer");
        return;
    }
    const char *pass = NULL;
    b->src_index = 0;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const reply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REPLY_STRING || v->type != REPLY_STRING) continue;
        if (!strcmp(k->str, "pass")) pass = v->str;
        if (!strcmp(k->str, "found")) b->found = strtoull(v->str, NULL, 10);
        if (!strcmp(k->str, "done")) b->done = strtoull(v->str, NULL, 10);
        if (!strcmp(k->str, "records")) b->records = strtoull(v->str, NULL, 10);
        if (!strcmp(k->str, "retries")) b->retries = (unsigned)strtoul(v->str, NULL, 10);
        if (!strcmp(k->str, "reason")) snprintf(b->reason, sizeof b->reason, "%s", v->str);
    }
    if (!pass || strcmp(pass, b->pass)) {
        pass_stop(b, "the pass was replaced");
        return;
    }
    /* The first collection not listed to its end, and its cursor. */
    for (b->src_index = 0; b->src_index < b->ncoll; b->src_index++) {
        int listed = 0;
        const char *cursor = NULL;
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const reply *k = r->element[i], *v = r->element[i + 1];
            if (k->type != REPLY_STRING || v->type != REPLY_STRING) continue;
            if (!strncmp(k->str, "listed:", 7) && !strcmp(k->str + 7, b->colls[b->src_index]))
                listed = 1;
            if (!strncmp(k->str, "cursor:", 7) && !strcmp(k->str + 7, b->colls[b->src_index]))
                cursor = v->str;
        }
        if (listed) continue;
        free(b->src_cursor);
        b->src_cursor = cursor ? strdup(cursor) : NULL;
        break;
    }
    /* Retried DIDs were listed by the pass already. */
    if (b->action == BF_RETRY) b->src_index = b->ncoll;
    b->sched = bf_sched_new(b->concurrency, b->per_host);
    if (!b->sched) {
        pass_stop(b, "out of memory");
        return;
    }
    b->ph = PH_RUNNING;
    b->status[0] = 0;
    b->scan_cycle = 0;
    b->scan_idle_until = 0;
    b->src_pages = b->src_failures = 0;
    b->src_retry_at = 0;
    b->nsamples = 0;
    b->next_log = uv_now(b->loop) + (b->mode == BF_COMMAND ? COMMAND_LOG_EVERY_MS : LOG_EVERY_MS);
    (*b->passes_total)++;
    /* The queue's length, which the hash does not hold: until it is known, nothing finishes
     * (a call is in flight) and the window fills once it is. */
    if (run_op(b, "counts", on_counted, ctx_new(b, NULL), 0, NULL) < 0) {
        pass_stop(b, "Valkey unavailable");
        return;
    }
    log_info("backfill", "pass %s (%s) %s from %s: %llu DIDs found so far, %llu done%s", b->pass,
             b->reason,
             b->action == BF_NEW     ? "started"
             : b->action == BF_RETRY ? "retrying its failed DIDs"
                                     : "resumed",
             b->source, (unsigned long long)b->found, (unsigned long long)b->done,
             b->src_cursor ? ", listing from the saved cursor" : "");
    pump(b);
}

static void read_pass(backfill *b)
{
    step_ctx *c = ctx_new(b, NULL);
    if (!c || cache_command(b->v, on_pass_read, c, 2, (const char *[]){"HGETALL", b->k_state},
                            NULL) < 0) {
        ctx_drop(c);
        pass_stop(b, "Valkey unavailable");
    }
}

static void on_begun(const reply *r, void *ud)
{
    backfill *b = op_answer(r, ud, NULL, NULL);
    if (b) read_pass(b);
}

/* A mark that did not take is written by the next pass, or by the ingester. */
static void on_schema_marked(const reply *r, void *ud) {}

/* Runs the decided action (the lease is held). */
static void begin(backfill *b, bf_action act, const char *reason)
{
    b->action = act;
    b->ph = PH_STARTING;
    b->gen++;
    b->found = b->done = b->failed = b->queued = b->records = 0;
    /* An index the backfill fills is of this layout (the ingester marks it too, when it runs). */
    if (b->chk.schema == BF_SCHEMA_NONE &&
        cache_command(b->v, on_schema_marked, NULL, 4,
                      (const char *[]){"SET", b->k_schema, FOLD_SCHEMA_VERSION, "NX"}, NULL) < 0)
        log_debug("backfill", "schema mark not sent: Valkey not ready");
    if (act == BF_RESUME) {
        snprintf(b->pass, sizeof b->pass, "%s", b->chk.pass);
        read_pass(b);
        return;
    }
    int rc;
    if (act == BF_NEW) {
        uint64_t now = wall_ms();
        char started[24];
        snprintf(b->pass, sizeof b->pass, "%llu-%04x", (unsigned long long)now,
                 (unsigned)(rnd(b) & 0xffff));
        snprintf(b->reason, sizeof b->reason, "%s", reason);
        snprintf(started, sizeof started, "%llu", (unsigned long long)now);
        rc = run_op(b, "new", on_begun, ctx_new(b, NULL), 3,
                    (const char *[]){b->reason, b->source, started});
    } else {
        snprintf(b->pass, sizeof b->pass, "%s", b->chk.pass);
        rc = run_op(b, "retry", on_begun, ctx_new(b, NULL), 0, NULL);
    }
    if (rc < 0) pass_stop(b, "Valkey unavailable");
}

/* ---- deciding ---- */

static void check_clear(check_view *c)
{
    free(c->pass);
    free(c->state);
    free(c->source);
    free(c->reason);
    free(c->request);
    *c = (check_view){0};
}

static bf_schema schema_of(const reply *r)
{
    if (!r || r->type != REPLY_STRING) return BF_SCHEMA_NONE;
    if (!strcmp(r->str, FOLD_SCHEMA_VERSION)) return BF_SCHEMA_CURRENT;
    return fold_schema_outdated(r->str) ? BF_SCHEMA_OLD : BF_SCHEMA_OTHER;
}

static void decided(backfill *b)
{
    check_view *c = &b->chk;
    bf_view v = {.schema = c->schema,
                 .has_pass = c->pass != NULL,
                 .finished = c->state && !strcmp(c->state, "finished"),
                 .same_source = c->source && !strcmp(c->source, b->source),
                 .failed = c->failed,
                 .retry_at_ms = c->retry_at,
                 .requested = c->request != NULL,
                 .now_ms = wall_ms()};
    bf_action act = bf_decide(b->mode, &v);
    uint64_t now = uv_now(b->loop);
    b->ph = PH_IDLE;
    b->next_check = now + CHECK_EVERY_MS;
    b->retries = c->retries;
    if (act != BF_RESUME && act != BF_NEW && act != BF_RETRY) {
        /* What the last pass did, for _health. */
        b->found = c->found;
        b->done = c->done;
        b->failed = c->failed;
        b->records = c->records;
        b->queued = 0;
        snprintf(b->reason, sizeof b->reason, "%s", c->reason ? c->reason : "");
        snprintf(b->pass, sizeof b->pass, "%s", c->pass ? c->pass : "");
    }
    switch (act) {
    case BF_IDLE:
        if (lease_held(b->lease)) lease_release(b->lease);
        if (v.finished)
            set_status(b, "finished%s", v.failed ? " with failed DIDs (to be retried)" : "");
        else if (c->request)
            set_status(b, "a pass was requested (%s); APPVIEW_BACKFILL=%s runs none", c->request,
                       b->mode == BF_ONCE ? "once" : "off");
        else
            set_status(b, "idle");
        return;
    case BF_WAIT:
        set_status(b, "waiting: the ingester is dropping an index of an older layout");
        return;
    case BF_REFUSE:
        set_status(b, "refused: Valkey holds an index of another key schema under %s", b->prefix);
        log_error("backfill", "%s", b->status);
        if (b->mode == BF_COMMAND) {
            fprintf(stderr, "backfill: %s (this appview writes schema %s)\n", b->status,
                    FOLD_SCHEMA_VERSION);
            command_end(b, 2);
        }
        return;
    default:
        break;
    }
    if (!lease_held(b->lease)) {
        b->ph = PH_LEASING;
        if (!b->lease_wait_log) b->lease_wait_log = now + 3000;
        lease_start(b->lease);
        return;
    }
    b->lease_wait_log = 0;
    const char *reason = c->request              ? c->request
                         : b->mode == BF_COMMAND ? "command"
                         : !c->pass              ? "no pass recorded: a new or flushed index"
                                                 : "the source changed";
    begin(b, act, reason);
}

static void on_check_reply(const reply *r, void *ud)
{
    bf_item *tag;
    backfill *b = ctx_take(ud, &tag);
    if (!b) return;
    uintptr_t which = (uintptr_t)tag;
    check_view *c = &b->chk;
    if (!r || r->type == REPLY_ERROR) c->broken = 1;
    if (which == 0 && r && r->type == REPLY_ARRAY && r->elements == 10) {
        c->pass = reply_str(r->element[0]);
        c->state = reply_str(r->element[1]);
        c->source = reply_str(r->element[2]);
        c->retry_at = reply_u64(r->element[3]);
        c->request = reply_str(r->element[4]);
        c->retries = (unsigned)reply_u64(r->element[5]);
        c->reason = reply_str(r->element[6]);
        c->found = reply_u64(r->element[7]);
        c->done = reply_u64(r->element[8]);
        c->records = reply_u64(r->element[9]);
    } else if (which == 1) {
        c->failed = reply_u64(r);
    } else if (which == 2) {
        c->schema = schema_of(r);
    }
    if (--c->replies) return;
    if (c->broken) {
        b->ph = PH_IDLE;
        b->next_check = uv_now(b->loop) + 1000;
        return;
    }
    decided(b);
}

static void check(backfill *b)
{
    check_clear(&b->chk);
    b->ph = PH_CHECKING;
    b->gen++;
    const char *cmds[3][12] = {
        {"HMGET", b->k_state, "pass", "state", "source", "retry_at", "request", "retries", "reason",
         "found", "done", "records"},
        {"HLEN", b->k_failed},
        {"GET", b->k_schema},
    };
    static const int argc[3] = {12, 2, 2};
    for (uintptr_t i = 0; i < 3; i++) {
        step_ctx *c = ctx_new(b, (bf_item *)i);
        if (!c || cache_command(b->v, on_check_reply, c, argc[i], cmds[i], NULL) < 0) {
            ctx_drop(c);
            b->chk.broken = 1;
            continue;
        }
        b->chk.replies++;
    }
    if (!b->chk.replies) {
        b->ph = PH_IDLE;
        b->next_check = uv_now(b->loop) + 1000;
    }
}

/* While a pass runs: was it replaced (flushed, another replica), or a new one requested? */
static void on_run_check(const reply *r, void *ud)
{
    backfill *b = ctx_take(ud, NULL);
    if (!b) return;
    b->checking_run = 0;
    if (b->ph != PH_RUNNING || !r || r->type != REPLY_ARRAY || r->elements != 2) return;
    const reply *pass = r->element[0], *request = r->element[1];
    if (pass->type != REPLY_STRING || strcmp(pass->str, b->pass)) {
        pass_stop(b, "the pass was replaced (the prefix flushed?)");
        b->next_check = 0;
    } else if (request->type == REPLY_STRING && b->mode != BF_ONCE) {
        pass_stop(b, "a new pass was requested");
        b->next_check = 0;
    }
}

static void run_check(backfill *b)
{
    step_ctx *c = ctx_new(b, NULL);
    if (!c || cache_command(b->v, on_run_check, c, 4,
                            (const char *[]){"HMGET", b->k_state, "pass", "request"}, NULL) < 0) {
        ctx_drop(c);
        return;
    }
    b->checking_run = 1;
}

/* ---- requests ---- */

static void on_request_written(const reply *r, void *ud)
{
    step_ctx *c = ud;
    backfill *b = c->b;
    int closing = b->closing;
    ctx_take(c, NULL);
    if (closing) return;
    b->request_inflight = 0;
    if (r && r->type == REPLY_INTEGER) {
        free(b->request);
        b->request = NULL;
        b->next_check = 0;
    }
}

static void write_request(backfill *b)
{
    step_ctx *c = ctx_new(b, NULL);
    if (!c ||
        cache_command(b->v, on_request_written, c, 4,
                      (const char *[]){"HSET", b->k_state, "request", b->request}, NULL) < 0) {
        ctx_drop(c);
        return;
    }
    b->request_inflight = 1;
}

void backfill_request(backfill *b, const char *reason)
{
    char *r = strdup(reason);
    if (!r) return;
    free(b->request);
    b->request = r;
    log_info("backfill", "a new pass is requested: %s", reason);
}

/* ---- the clock ---- */

static void on_lease(int held, void *ud)
{
    backfill *b = ud;
    if (held) {
        if (b->ph != PH_LEASING) return;
        b->next_check = 0; /* read again, under the lease: now, or at the next tick */
        if (!b->stopping && cache_ready(b->v)) check(b);
        return;
    }
    if (b->ph == PH_RUNNING || b->ph == PH_STARTING) pass_stop(b, "the backfill lease was lost");
}

void backfill_on_valkey_state(backfill *b, int up)
{
    if (up && !b->stopping && b->ph == PH_IDLE && uv_now(b->loop) >= b->next_check) check(b);
}

static void on_tick(uv_timer_t *t)
{
    backfill *b = t->data;
    if (b->stopping || b->ph == PH_ENDED) return;
    uint64_t now = uv_now(b->loop);
    int up = cache_ready(b->v);
    if (b->request && !b->request_inflight && up) write_request(b);
    switch (b->ph) {
    case PH_IDLE:
        if (up && now >= b->next_check) check(b);
        break;
    case PH_LEASING:
        if (b->next_check == 0 && lease_held(b->lease)) {
            check(b);
        } else if (b->mode == BF_COMMAND && b->lease_wait_log && now >= b->lease_wait_log) {
            log_warn("backfill", "waiting for %sbackfill-lease: another appview is backfilling",
                     b->prefix);
            b->lease_wait_log = now + 30000;
        }
        break;
    case PH_RUNNING:
        if (!up) {
            pass_stop(b, "Valkey unavailable");
            break;
        }
        if (now >= b->next_check && !b->checking_run) {
            run_check(b);
            b->next_check = now + CHECK_EVERY_MS;
        }
        report(b, now);
        pump(b);
        break;
    default:
        break;
    }
}

/* ---- health and metrics ---- */

static const char *state_name(const backfill *b)
{
    switch (b->ph) {
    case PH_RUNNING:
    case PH_STARTING:
        return "running";
    case PH_LEASING:
        return "waiting for the lease";
    case PH_ENDED:
        return "ended";
    default:
        return *b->status ? b->status : "idle";
    }
}

int backfill_health_json(const backfill *b, buf *out)
{
    static const char *const modes[] = {"off", "once", "auto", "command"};
    int rc =
        buf_printf(out, "\"backfill\":{\"mode\":\"%s\",\"leader\":%s,\"state\":", modes[b->mode],
                   lease_held(b->lease) ? "true" : "false");
    const char *st = state_name(b);
    rc |= buf_json_string(out, st, strlen(st));
    if (*b->pass) {
        double e = eta(b);
        int running = b->ph == PH_RUNNING;
        rc |= buf_puts(out, ",\"pass\":");
        rc |= buf_json_string(out, b->pass, strlen(b->pass));
        rc |= buf_puts(out, ",\"reason\":");
        rc |= buf_json_string(out, b->reason, strlen(b->reason));
        rc |= buf_printf(out,
                         ",\"dids\":{\"found\":%llu,\"done\":%llu,\"failed\":%llu,\"queued\":%llu,"
                         "\"active\":%u},\"records\":%llu",
                         (unsigned long long)b->found, (unsigned long long)b->done,
                         (unsigned long long)b->failed, (unsigned long long)b->queued,
                         b->sched ? bf_sched_active(b->sched) : 0, (unsigned long long)b->records);
        if (running)
            rc |= buf_printf(out, ",\"ratePerSecond\":%.2f,\"listing\":%s", rate(b),
                             listing(b) ? "true" : "false");
        if (running && e >= 0) rc |= buf_printf(out, ",\"etaSeconds\":%.0f", e);
        if (running && b->src_error[0]) {
            rc |= buf_puts(out, ",\"sourceError\":");
            rc |= buf_json_string(out, b->src_error, strlen(b->src_error));
        }
    }
    rc |= buf_puts(out, "}");
    return rc;
}

static double g_running(void *ud)
{
    const backfill *b = ud;
    return b->ph == PH_RUNNING;
}
static double g_found(void *ud)
{
    return (double)((const backfill *)ud)->found;
}
static double g_done(void *ud)
{
    return (double)((const backfill *)ud)->done;
}
static double g_failed(void *ud)
{
    return (double)((const backfill *)ud)->failed;
}
static double g_queued(void *ud)
{
    return (double)((const backfill *)ud)->queued;
}
static double g_rate(void *ud)
{
    return rate(ud);
}
static double g_eta(void *ud)
{
    return eta(ud);
}

static void register_metrics(backfill *b)
{
    b->loaded_total = metrics_counter("appview_backfill_dids_loaded_total",
                                      "DIDs the backfill loaded (listed and folded)");
    b->failed_total = metrics_counter("appview_backfill_dids_failed_total",
                                      "DIDs the backfill gave up on (recorded as failed)");
    b->retries_total = metrics_counter("appview_backfill_retries_total",
                                       "DID loads that failed and are tried again");
    b->parked_total =
        metrics_counter("appview_backfill_host_parks_total", "429 answers that parked a PDS host");
    b->records_total =
        metrics_counter("appview_backfill_records_total", "Records the backfill's loads listed");
    b->pages_total = metrics_counter("appview_backfill_source_pages_total",
                                     "Pages of DIDs read from the relay or the DIDs file");
    b->source_errors_total =
        metrics_counter("appview_backfill_source_errors_total",
                        "Relay pages that failed, or listings cut off (a cursor that loops)");
    b->invalid_total = metrics_counter("appview_backfill_invalid_dids_total",
                                       "Entries of a relay page or the DIDs file that are no DID");
    b->passes_total =
        metrics_counter("appview_backfill_passes_total", "Passes started, resumed or retried");
    metrics_gauge("appview_backfill_running", "1 while this replica runs a backfill pass",
                  g_running, b);
    metrics_gauge("appview_backfill_dids{state=\"found\"}", "DIDs of the pass running here",
                  g_found, b);
    metrics_gauge("appview_backfill_dids{state=\"done\"}", "DIDs of the pass running here", g_done,
                  b);
    metrics_gauge("appview_backfill_dids{state=\"failed\"}", "DIDs of the pass running here",
                  g_failed, b);
    metrics_gauge("appview_backfill_dids{state=\"queued\"}", "DIDs of the pass running here",
                  g_queued, b);
    metrics_gauge("appview_backfill_rate", "DIDs finished per second over the last 30 s", g_rate,
                  b);
    metrics_gauge("appview_backfill_eta_seconds", "Time left at that rate (-1: unknown)", g_eta, b);
}

/* ---- lifetime ---- */

backfill *backfill_new(uv_loop_t *loop, cache_client *v, loader *ld, http_client *http,
                       const backfill_options *opt)
{
    backfill *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->loop = loop;
    b->v = v;
    b->ld = ld;
    b->http = http;
    b->mode = opt->mode;
    b->concurrency = opt->concurrency ? opt->concurrency : 1;
    b->per_host = opt->per_host ? opt->per_host : 1;
    b->bar = opt->mode == BF_COMMAND && opt->progress_bar;
    b->on_done = opt->on_done;
    b->ud = opt->ud;
    b->rng = uv_hrtime() | 1;
    b->prefix = strdup(opt->prefix);
    b->relay = opt->relay_url ? strdup(opt->relay_url) : NULL;
    if (b->relay) url_trim_slashes(b->relay);
    b->dids_file = opt->dids_file ? strdup(opt->dids_file) : NULL;
    b->source = b->dids_file ? buf_dup_printf("file:%s", b->dids_file)
                : b->relay   ? strdup(b->relay)
                             : NULL;
    b->colls = b->dids_file ? file_collections : event_collections;
    b->ncoll = b->dids_file ? 1 : EVENT_NCOLLECTIONS;
    b->k_state = buf_dup_printf("%sbackfill{bf}", opt->prefix);
    b->k_todo = buf_dup_printf("%sbackfill{bf}:todo", opt->prefix);
    b->k_done = buf_dup_printf("%sbackfill{bf}:done", opt->prefix);
    b->k_failed = buf_dup_printf("%sbackfill{bf}:failed", opt->prefix);
    b->k_tries = buf_dup_printf("%sbackfill{bf}:tries", opt->prefix);
    b->k_schema = buf_dup_printf("%sschema", opt->prefix);
    char *lease_key = buf_dup_printf("%sbackfill-lease", opt->prefix);
    b->script = cache_register_script(v, "backfill", lua_backfill);
    b->lease = lease_key ? lease_new_for(loop, v, "backfill", lease_key, opt->lease_ms, on_lease, b)
                         : NULL;
    free(lease_key);
    if (!b->prefix || !b->source || !b->k_state || !b->k_todo || !b->k_done || !b->k_failed ||
        !b->k_tries || !b->k_schema || b->script < 0 || !b->lease ||
        (opt->relay_url && !b->relay) || (opt->dids_file && !b->dids_file)) {
        b->closing = 1;
        lease_free(b->lease);
        b->lease = NULL;
        maybe_free(b);
        return NULL;
    }
    register_metrics(b);
    uv_timer_init(loop, &b->tick);
    uv_timer_init(loop, &b->wake);
    b->tick.data = b->wake.data = b;
    b->handles_open = 2;
    uv_timer_start(&b->tick, on_tick, 0, TICK_MS); /* the first look at once */
    if (b->bar) {
        bar_owner = b;
        log_set_before_line(clear_bar);
    }
    return b;
}

void backfill_stop(backfill *b)
{
    if (b->stopping) return;
    if (b->ph == PH_RUNNING && b->mode == BF_COMMAND) {
        clear_bar();
        fprintf(stderr,
                "backfill interrupted: %llu of %llu DIDs done; `appview backfill` "
                "resumes it\n",
                (unsigned long long)b->done, (unsigned long long)b->found);
    }
    b->stopping = 1;
    b->gen++;
    bf_sched_free(b->sched);
    b->sched = NULL;
    uv_timer_stop(&b->wake);
}

int backfill_idle(backfill *b)
{
    if (b->ops_inflight) return 0;
    lease_release(b->lease);
    return !lease_releasing(b->lease);
}

static void maybe_free(backfill *b)
{
    if (!b->closing || b->refs || b->handles_open) return;
    if (bar_owner == b) {
        bar_owner = NULL;
        log_set_before_line(NULL);
    }
    check_clear(&b->chk);
    bf_sched_free(b->sched);
    free(b->src_cursor);
    free(b->request);
    free(b->prefix);
    free(b->relay);
    free(b->dids_file);
    free(b->source);
    free(b->k_state);
    free(b->k_todo);
    free(b->k_done);
    free(b->k_failed);
    free(b->k_tries);
    free(b->k_schema);
    free(b);
}

static void on_closed(uv_handle_t *h)
{
    backfill *b = h->data;
    b->handles_open--;
    maybe_free(b);
}

void backfill_free(backfill *b)
{
    if (!b) return;
    b->closing = 1;
    clear_bar();
    lease_free(b->lease);
    b->lease = NULL;
    uv_close((uv_handle_t *)&b->tick, on_closed);
    uv_close((uv_handle_t *)&b->wake, on_closed);
}
