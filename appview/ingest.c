#include "appview/ingest.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appview/event.h"
#include "appview/jetstream.h"
#include "appview/lease.h"
#include "appview/writer.h"
#include "atproto/log.h"
#include "atproto/metrics.h"

/* Writes Valkey refused (out of memory, ...) are tried again after a pause that doubles, up to
 * the most, until one batch goes through. */
#define REFUSED_RETRY_MIN_MS 1000
#define REFUSED_RETRY_MAX_MS 30000
/* Backpressure: stop reading the socket above HIGH commands in flight, resume below LOW. */
#define PENDING_HIGH 20000
#define PENDING_LOW 5000
#define PERSIST_EVERY_MS 200
/* A repository record is at most 1 MiB; the event around it adds little. Larger messages are
 * skipped (and counted) by the client before any parse. */
#define MAX_EVENT_BYTES (1024 * 1024 + 16 * 1024)

/* A place in the stream: the seq and the configured URL it belongs to (-1: none), and the
 * time. */
typedef struct {
    uint64_t seq, time_us;
    int url;
} position;

/* The events of one loop iteration, from one connection. Batches complete in order (replies
 * on one connection come back in order), and the cursor moves to a batch's last event only
 * when it completes. */
typedef struct batch {
    struct batch *next;
    ingest *in;
    unsigned epoch; /* batches of an epoch that saw a failure never move the cursor */
    position last;
    unsigned outstanding;
    int outstanding_ever; /* it wrote something: its success says Valkey takes writes */
    int sealed;
} batch;

struct ingest {
    uv_loop_t *loop;
    cache_client *v;
    writer *w;
    loader *ld;
    const lexicon_set *lexicons;
    json_doc doc; /* each message is read into it: its arrays serve the next one */
    jetstream *js;
    jetstream_options js_opt;
    lease *lease;
    char *prefix;
    char **urls; /* the configured URLs, for the URL a seq belongs to */
    size_t nurls;
    const char *url_seen; /* the client's URL at the last message, and its index in urls */
    int url_seen_ix;
    char client_name[160]; /* P ingest: the lease holder's connection, found and fenced by name */
    unsigned rewind_seconds;

    batch *head, *tail; /* tail is open while the iteration adds events to it */
    unsigned epoch;
    position written; /* every write up to here was acknowledged */
    position acked;   /* ... and is as safe as Valkey keeps it: replicated (cache_sync) */
    position syncing; /* what the cache_sync in flight will make safe */
    int sync_inflight, sync_failed;
    /* written moved since the last cache_sync began. Not a comparison of written and acked:
     * positions from two connections, or a stream whose seq and time_us disagree, need not
     * become equal, and a sync that ends at once would start the next at once, forever. */
    int written_moved;
    position read;      /* the last event read: where a reconnect of this process resumes */
    position persisted; /* what P cursor:* hold */
    /* For health: the newest event's own time (the saved cursor's before any arrives), when
     * this replica took the lease (the lag's origin before either), when a message last
     * arrived (loop ms, 0 before any) and since when the lease holder has been without a
     * stream (0: it is not, or this replica stands by). */
    uint64_t newest_time_us, leading_since_us, last_message_ms, stream_down_since_ms;
    int persist_inflight;
    int fencing; /* a fence in flight before resuming after a (re)connect */
    int cursor_loading, cursor_loaded;
    int cursor_pending;    /* GETs of the cursor keys still to be answered */
    char *cursor_found[4]; /* their values: v1, v2, url, schema (NULL: none) */
    struct cursor_part {
        ingest *in;
        int ix, failed;
    } cursor_parts[4];
    int paused_for_pending, valkey_up, replay_needed, stopping;
    int invalidating, invalidate_again; /* marking every index incomplete */
    uint64_t last_floor;

    uv_check_t check;
    uv_timer_t persist_timer;
    uv_timer_t retry_timer; /* reads again after writes were refused */
    unsigned retry_ms;      /* its next pause; 0 while writes go through */
    char refusal[160];      /* what Valkey answered, for _health; "" while writes go through */

    uint64_t *events_total, *skipped_total, *unknown_total, *folded_total, *replays_total,
        *fenced_total, *syncs_total, *too_old_total, *outdated_total, *info_total,
        *error_frames_total, *invalidated_total;
    uint64_t *dropped_keys_total;
    uint64_t *refused_retries_total;
    void (*request_backfill)(void *ud, const char *reason);
    void *request_backfill_ud;
};

/* The index no longer holds what the network does, beyond what the stream will bring: a
 * backfill lists every DID again. */
static void request_backfill(ingest *in, const char *reason)
{
    if (in->request_backfill) in->request_backfill(in->request_backfill_ud, reason);
}

/* ---- drop reasons, as metric labels ---- */

static uint64_t *dropped_counter(const char *reason)
{
    enum { MAX_REASONS = 24 };
    static struct {
        const char *reason;
        uint64_t *counter;
    } seen[MAX_REASONS];
    static int nseen;
    for (int i = 0; i < nseen; i++)
        if (seen[i].reason == reason) return seen[i].counter;
    char name[128];
    snprintf(name, sizeof name, "appview_events_dropped_total{reason=\"%s\"}", reason);
    uint64_t *c = metrics_counter(name, "Events dropped as invalid, by reason");
    if (nseen < MAX_REASONS) {
        seen[nseen].reason = reason;
        seen[nseen++].counter = c;
    }
    return c;
}

/* ---- positions ---- */

uint64_t ingest_resume_cursor(const ingest_position *at, const char *url, unsigned rewind_seconds)
{
    /* the server replays from the cursor on, inclusive: the next seq is the first one unread */
    if (at->seq && at->seq_url && !strcmp(at->seq_url, url)) return at->seq + 1;
    if (!at->time_us) return 0;
    uint64_t rewind = (uint64_t)rewind_seconds * 1000000u;
    uint64_t t = at->time_us > rewind ? at->time_us - rewind : 0;
    /* below the limit it would be read as a seq */
    return t < JETSTREAM_SEQ_LIMIT ? JETSTREAM_SEQ_LIMIT : t;
}

static void advance(position *p, const position *to)
{
    if (to->seq && (to->url != p->url || to->seq > p->seq)) {
        p->seq = to->seq;
        p->url = to->url;
    }
    if (to->time_us > p->time_us) p->time_us = to->time_us;
}

static int same_position(const position *a, const position *b)
{
    return a->seq == b->seq && a->url == b->url && a->time_us == b->time_us;
}

static int url_index(const ingest *in, const char *url)
{
    for (size_t i = 0; url && i < in->nurls; i++)
        if (!strcmp(in->urls[i], url)) return (int)i;
    return -1;
}

/* The index of the URL the client reads: found once per connection, not per message (the
 * client keeps its URL strings for its life). */
static int current_url(ingest *in)
{
    const char *u = jetstream_url(in->js);
    if (u != in->url_seen) {
        in->url_seen = u;
        in->url_seen_ix = url_index(in, u);
    }
    return in->url_seen_ix;
}

static uint64_t wall_us(void)
{
    uv_timeval64_t now;
    uv_gettimeofday(&now);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_usec;
}

/* ---- batches and the cursor ---- */

static void sync_written(ingest *in);

static void complete_batches(ingest *in)
{
    while (in->head && in->head->sealed && in->head->outstanding == 0) {
        batch *b = in->head;
        if (b->epoch == in->epoch && !in->replay_needed) {
            position was = in->written;
            advance(&in->written, &b->last);
            if (!same_position(&was, &in->written)) in->written_moved = 1;
            if (b->outstanding_ever && in->retry_ms) {
                log_info("ingest", "Valkey takes writes again");
                in->retry_ms = 0;
                in->refusal[0] = 0;
            }
        }
        in->head = b->next;
        if (!in->head) in->tail = NULL;
        free(b);
    }
    sync_written(in);
}

static batch *open_batch(ingest *in, int url)
{
    if (in->tail && !in->tail->sealed && in->tail->last.url == url) return in->tail;
    if (in->tail) in->tail->sealed = 1;
    batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->in = in;
    b->epoch = in->epoch;
    b->last.url = url;
    if (in->tail)
        in->tail->next = b;
    else
        in->head = b;
    in->tail = b;
    return b;
}

/* Writes were lost: whatever came after the last acknowledged cursor is read again once
 * Valkey is back. Folding is idempotent, so reading an event twice is harmless. */
static void need_replay(ingest *in)
{
    if (in->replay_needed) return;
    in->replay_needed = 1;
    in->epoch++;
    in->read = in->written = in->acked; /* what was written past it is written again */
    in->written_moved = 0;
    if (in->js) jetstream_pause(in->js, 1);
}

static void resume(ingest *in);

static void on_retry_timer(uv_timer_t *t)
{
    ingest *in = t->data;
    if (!in->valkey_up || in->stopping) return; /* resumed when Valkey is up again */
    /* What the writer believes it wrote may not be in Valkey: it reads again what it needs. */
    writer_reset(in->w);
    resume(in);
}

/* Writes failed while Valkey is up: it refused them (out of memory, a read-only replica, ...).
 * Reading stopped (need_replay); it starts again from the last acknowledged cursor after a
 * pause, and every refusal doubles the pause. One log line per attempt. */
static void retry_after_refusal(ingest *in)
{
    if (uv_is_active((uv_handle_t *)&in->retry_timer)) return;
    in->retry_ms = in->retry_ms ? in->retry_ms * 2 : REFUSED_RETRY_MIN_MS;
    if (in->retry_ms > REFUSED_RETRY_MAX_MS) in->retry_ms = REFUSED_RETRY_MAX_MS;
    const char *why = writer_refusal(in->w);
    if (why) snprintf(in->refusal, sizeof in->refusal, "%s", why);
    (*in->refused_retries_total)++;
    log_warn("ingest",
             "Valkey %s%s%s: ingest paused; reading again from the last acknowledged cursor in "
             "%u ms",
             in->refusal[0] ? "refused writes (" : "did not take every write", in->refusal,
             in->refusal[0] ? ")" : "", in->retry_ms);
    uv_timer_start(&in->retry_timer, on_retry_timer, in->retry_ms, 0);
}

/* Writes were acknowledged by the primaries; the cursor moves past them once they are as safe
 * as Valkey keeps them: with APPVIEW_VALKEY_WAIT_REPLICAS, on the replicas a failover could
 * promote (cache_sync). One sync at a time covers every batch acknowledged before it. */
static void on_synced(int ok, void *ud)
{
    ingest *in = ud;
    in->sync_inflight = 0;
    in->sync_failed = !ok;
    if (ok) {
        advance(&in->acked, &in->syncing);
        sync_written(in);
        return;
    }
    if (!in->replay_needed) {
        /* A WAIT fell short, or a node went away: the writes since the last safe cursor may
         * not survive a failover. They are written again from there. */
        need_replay(in);
        snprintf(in->refusal, sizeof in->refusal,
                 "the replicas did not confirm the writes within the WAIT timeout");
        if (in->valkey_up && !in->stopping && lease_held(in->lease)) retry_after_refusal(in);
    }
}

static void sync_written(ingest *in)
{
    if (in->sync_inflight || !in->written_moved) return;
    if (in->sync_failed && in->replay_needed) return; /* again once the replay is under way */
    in->syncing = in->written;
    if (cache_sync(in->v, on_synced, in) == 0) {
        in->sync_inflight = 1;
        in->written_moved = 0;
    }
}

static void on_folded(void *ud, int ok)
{
    batch *b = ud;
    ingest *in = b->in;
    b->outstanding--;
    if (!ok && b->epoch == in->epoch) {
        need_replay(in);
        if (in->valkey_up && !in->stopping && lease_held(in->lease)) retry_after_refusal(in);
    }
    complete_batches(in);
}

static void on_batch_reply(const reply *r, void *ud)
{
    on_folded(ud, r && r->type != REPLY_ERROR);
}

/* ---- what the stream says beyond records ---- */

static void on_reloaded(const load_result *res, void *ud)
{
    (void)ud;
    if (res->status == LOAD_OK)
        log_info("ingest", "#sync: reloaded %s from its PDS", res->did);
    else
        log_warn("ingest", "#sync: reloading a DID failed (%s); reads will load it", res->error);
}

/* #sync: D's index is no longer a fold of what the stream showed. It is marked incomplete in
 * the batch (the cursor moves past the event only once that is acknowledged, so a crash never
 * leaves it looking complete), then reloaded from D's PDS, by the fold's rules: a newer
 * firehose event still wins. */
static void sync_repo(ingest *in, batch *b, const char *did)
{
    (*in->syncs_total)++;
    char key[512];
    snprintf(key, sizeof key, "%s{%s}/complete", in->prefix, did);
    if (cache_command(in->v, on_batch_reply, b, 2, (const char *[]){"DEL", key}, NULL) < 0) {
        need_replay(in);
        return;
    }
    b->outstanding++;
    writer_forget_did(in->w, did);
    log_info("ingest", "#sync for %s: its index is reloaded from its PDS", did);
    if (in->ld && loader_reload_repo(in->ld, did, on_reloaded, NULL) < 0)
        log_warn("ingest", "#sync for %s: cannot start the reload (out of memory)", did);
}

static void invalidate_start(ingest *in);

static void on_deleted(const reply *r, void *ud)
{
    (void)ud;
    if (r && r->type == REPLY_ERROR) log_warn("ingest", "DEL refused: %s", r->str);
}

/* One page of P{*}/complete keys, each deleted by a DEL of its own (on a cluster each lives on
 * its DID's slot); then, at the end of the walk, another if more events were missed meanwhile. */
static int on_incomplete_page(const reply *keys, int end, void *ud)
{
    ingest *in = ud;
    if (!keys) {
        if (end < 0)
            log_warn("ingest",
                     "marking indexes incomplete stopped: Valkey did not answer the scan");
        in->invalidating = 0;
        if (in->invalidate_again) {
            in->invalidate_again = 0;
            invalidate_start(in);
        }
        return 0;
    }
    for (size_t i = 0; i < keys->elements; i++) {
        const reply *k = keys->element[i];
        if (k->type == REPLY_STRING &&
            cache_command(in->v, on_deleted, NULL, 2, (const char *[]){"DEL", k->str},
                          (const size_t[]){3, k->len}) == 0)
            (*in->invalidated_total)++;
    }
    return 0;
}

/* A SCAN pattern for the keys under the prefix that match rest: the prefix is the
 * operator's, so what SCAN would read as a wildcard in it is escaped. -1 when it does not fit
 * (a cut pattern would match other prefixes' keys). */
static int prefix_pattern(const ingest *in, const char *rest, char *out, size_t n)
{
    size_t o = 0, need = strlen(rest) + 1;
    for (const char *p = in->prefix; *p; p++) {
        if (o + 2 + need > n) return -1;
        if (strchr("*?[]\\", *p)) out[o++] = '\\';
        out[o++] = *p;
    }
    memcpy(out + o, rest, need);
    return 0;
}

static void invalidate_start(ingest *in)
{
    char pattern[512];
    if (prefix_pattern(in, "{*}/complete", pattern, sizeof pattern) < 0 ||
        cache_scan(in->v, pattern, on_incomplete_page, in) < 0) {
        log_warn("ingest", "marking indexes incomplete stopped: Valkey is not connected");
        return;
    }
    in->invalidating = 1;
}

/* Events were missed (the server no longer had them): no index can be trusted to be complete.
 * Every P{D}/complete goes, so each list is rebuilt from its PDS when it is next read, and a
 * backfill pass is asked for, which reloads every DID (appview/backfill.h, in auto mode). */
static void invalidate_all(ingest *in, const char *why)
{
    log_warn("ingest", "%s: events were missed; marking every index incomplete", why);
    request_backfill(in, why);
    if (in->invalidating) {
        in->invalidate_again = 1;
        return;
    }
    invalidate_start(in);
}

static void on_too_old(void *ud, const char *url, uint64_t floor)
{
    ingest *in = ud;
    (*in->too_old_total)++;
    in->last_floor = floor;
    invalidate_all(in, "Jetstream no longer has the cursor (CursorTooOld)");
    /* resume from the oldest event the server still has, or the live tip */
    in->read = (position){.seq = floor ? floor - 1 : 0, .url = floor ? url_index(in, url) : -1};
    log_warn("ingest", "resuming %s from %s", url, floor ? "its retention floor" : "the live tip");
}

static void on_info(ingest *in, const event *ev)
{
    (*in->info_total)++;
    log_warn("ingest", "Jetstream #info %s: %s", ev->name, ev->message ? ev->message : "");
    if (!strcmp(ev->name, "OutdatedCursor")) {
        (*in->outdated_total)++;
        invalidate_all(in, "Jetstream clamped the cursor to its retention (OutdatedCursor)");
    }
}

static void on_message(void *ud, jetstream_flavor flavor, const char *data, size_t len)
{
    ingest *in = ud;
    (*in->events_total)++;
    in->last_message_ms = uv_now(in->loop);
    event ev;
    event_kind kind = event_parse(&ev, &in->doc, flavor, data, len, in->lexicons);
    if (kind == EVENT_INFO || kind == EVENT_ERROR) {
        if (kind == EVENT_INFO) {
            on_info(in, &ev);
        } else {
            char why[256];
            snprintf(why, sizeof why, "Jetstream ended the stream: %s: %s", ev.name,
                     ev.message ? ev.message : "");
            (*in->error_frames_total)++;
            log_warn("ingest", "%s", why);
            jetstream_retry_later(in->js, why);
        }
        event_clear(&ev);
        return;
    }
    position at = {.seq = ev.seq, .time_us = ev.time_us, .url = current_url(in)};
    batch *b = open_batch(in, at.url);
    if (!b) {
        need_replay(in);
        event_clear(&ev);
        return;
    }
    switch (kind) {
    case EVENT_SKIP:
        (*(ev.unknown ? in->unknown_total : in->skipped_total))++;
        break;
    case EVENT_INVALID:
        (*dropped_counter(ev.reason))++;
        break;
    case EVENT_SYNC:
        sync_repo(in, b, ev.did);
        break;
    default:
        switch (writer_add(in->w, &ev, on_folded, b)) {
        case 0:
            b->outstanding++;
            b->outstanding_ever = 1;
            (*in->folded_total)++;
            break;
        case 1:
            break;
        default:
            need_replay(in);
        }
    }
    advance(&b->last, &at);
    if (at.time_us > in->newest_time_us) in->newest_time_us = at.time_us;
    if (!in->replay_needed) advance(&in->read, &at);
    event_clear(&ev);
}

/* After each loop iteration's I/O: close the batch, and adjust reading to Valkey's pace. */
static void on_check(uv_check_t *h)
{
    ingest *in = h->data;
    if (in->tail) in->tail->sealed = 1;
    writer_flush(in->w);
    complete_batches(in);
    if (!in->js || in->replay_needed || !in->valkey_up || in->stopping) return;
    size_t pending = cache_pending(in->v) + writer_backlog(in->w);
    if (!in->paused_for_pending && pending > PENDING_HIGH) {
        in->paused_for_pending = 1;
        jetstream_pause(in->js, 1);
    } else if (in->paused_for_pending && pending < PENDING_LOW) {
        in->paused_for_pending = 0;
        jetstream_pause(in->js, 0);
    }
}

static uint64_t resume_cursor(void *ud, const char *url, jetstream_flavor flavor)
{
    (void)flavor; /* both take a seq below 1e15 and a time_us above */
    ingest *in = ud;
    ingest_position at = {in->read.seq, in->read.url >= 0 ? in->urls[in->read.url] : NULL,
                          in->read.time_us};
    return ingest_resume_cursor(&at, url, in->rewind_seconds);
}

static void on_js_state(void *ud, int connected)
{
    ingest *in = ud;
    in->stream_down_since_ms = connected ? 0 : uv_now(in->loop);
    /* A new connection starts a new stream: failures of the old one are behind us. */
    if (connected && in->valkey_up && in->head == NULL) in->replay_needed = 0;
}

static void cursor_key(const ingest *in, const char *which, char *out, size_t n)
{
    snprintf(out, n, "%scursor:%s", in->prefix, which);
}

/* One write of the cursor: its SETs, and the position they record once all are answered. */
typedef struct {
    ingest *in;
    position value;
    int pending, failed;
} persist_req;

static void persist_done(persist_req *p, int ok)
{
    if (!ok) p->failed = 1;
    if (--p->pending) return;
    p->in->persist_inflight = 0;
    if (!p->failed) advance(&p->in->persisted, &p->value);
    free(p);
}

static void on_persisted(const reply *r, void *ud)
{
    persist_done(ud, r && r->type != REPLY_ERROR);
}

static int persist_set(persist_req *req, const char *key, const char *value)
{
    if (cache_command(req->in->v, on_persisted, req, 3, (const char *[]){"SET", key, value}, NULL) <
        0)
        return -1;
    req->pending++;
    return 0;
}

/* P cursor:v1 (time_us), and with a seq P cursor:v2 and P cursor:url. The three keys may live
 * on different nodes, so no one command writes them; a restart must still never find a seq
 * next to another server's URL. So when the URL changes, cursor:v2 is first cleared (a
 * restart then resumes by time), and the URL and then the seq are written only once what came
 * before them is answered (cache_order). One write at a time. */
static void persist_cursors(ingest *in)
{
    if (!in->valkey_up || !in->cursor_loaded || in->persist_inflight) return;
    const position *a = &in->acked, *p = &in->persisted;
    if (a->time_us <= p->time_us && (a->seq == p->seq && a->url == p->url)) return;
    persist_req *req = calloc(1, sizeof *req);
    if (!req) return;
    *req = (persist_req){.in = in, .value = *a, .pending = 1};
    char k1[256], k2[256], ku[256], v1[24], v2[24];
    cursor_key(in, "v1", k1, sizeof k1);
    cursor_key(in, "v2", k2, sizeof k2);
    cursor_key(in, "url", ku, sizeof ku);
    snprintf(v1, sizeof v1, "%llu", (unsigned long long)a->time_us);
    snprintf(v2, sizeof v2, "%llu", (unsigned long long)a->seq);
    int with_seq = a->seq && a->url >= 0, err = 0;
    if (with_seq && a->url != p->url)
        err = persist_set(req, k2, "0") < 0 || cache_order(in->v, k2, ku) < 0 ||
              persist_set(req, ku, in->urls[a->url]) < 0 || cache_order(in->v, ku, k2) < 0;
    if (!err && with_seq) err = persist_set(req, k2, v2) < 0;
    if (!err) err = persist_set(req, k1, v1) < 0;
    in->persist_inflight = 1;
    persist_done(req, !err); /* the hold of the sends above */
}

static void on_persist_timer(uv_timer_t *t)
{
    persist_cursors(t->data);
}

static void start_stream(ingest *in)
{
    if (in->js || in->stopping) return;
    in->js_opt.on_message = on_message;
    in->js_opt.cursor = resume_cursor;
    in->js_opt.on_state = on_js_state;
    in->js_opt.on_too_old = on_too_old;
    in->js_opt.ud = in;
    in->js = jetstream_new(in->loop, &in->js_opt);
    in->url_seen = NULL; /* a new client's strings may sit where the last one's did */
    if (!in->js) {
        log_error("ingest", "cannot create the Jetstream client");
        return;
    }
    log_info("ingest", "resuming from seq %llu of %s, time_us %llu",
             (unsigned long long)in->acked.seq,
             in->acked.url >= 0 ? in->urls[in->acked.url] : "(none)",
             (unsigned long long)in->acked.time_us);
    jetstream_start(in->js);
}

/* The layout cache/SCHEMA.md describes; an index written in another one is not read. An index
 * of versions 2 or 3 (whose tags named digests, not manifest records) is dropped: Valkey is a
 * cache, reads fall back to the PDSes and the firehose fills it again, from the same cursor. */
#define SCHEMA_VERSION FOLD_SCHEMA_VERSION

static void cursor_loaded(ingest *in)
{
    in->cursor_loaded = 1;
    start_stream(in);
}

/* An UNLINK that failed leaves a key of the old layout, which its TTL removes in time. */
static void on_unlinked(const reply *r, void *ud) {}

/* Drops the keys of an outdated index under the prefix, a SCAN page at a time (one UNLINK per
 * key: on a cluster each lives on its own slot); the cursors, the lease and the schema mark
 * stay. Then marks the index as of this layout. */
static int on_outdated_page(const reply *keys, int end, void *ud)
{
    ingest *in = ud;
    if (!keys) {
        in->cursor_loading = 0;
        if (end < 0) return 0; /* tried again on the next up */
        log_info("ingest", "outdated index dropped (%llu keys); writing schema %s",
                 (unsigned long long)*in->dropped_keys_total, SCHEMA_VERSION);
        request_backfill(in, "schema change");
        if (writer_mark_schema(in->w) == 0) cursor_loaded(in);
        return 0;
    }
    size_t plen = strlen(in->prefix);
    for (size_t i = 0; i < keys->elements; i++) {
        const reply *k = keys->element[i];
        if (k->type != REPLY_STRING || k->len <= plen) continue;
        const char *rest = k->str + plen;
        if (!strncmp(rest, "cursor:", 7) || !strcmp(rest, "ingest-lease") ||
            !strcmp(rest, "schema"))
            continue;
        cache_command(in->v, on_unlinked, NULL, 2, (const char *[]){"UNLINK", k->str},
                      (const size_t[]){6, k->len});
        (*in->dropped_keys_total)++;
    }
    return 0;
}

static void drop_outdated(ingest *in)
{
    char match[512];
    if (prefix_pattern(in, "*", match, sizeof match) < 0 ||
        cache_scan(in->v, match, on_outdated_page, in) < 0)
        in->cursor_loading = 0;
}

static uint64_t found_uint(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

/* Every GET of the cursor keys answered: where to resume, and whether this layout is ours. */
static void cursor_read(ingest *in)
{
    char **v = in->cursor_found;
    int failed = 0;
    for (int i = 0; i < 4; i++)
        failed |= in->cursor_parts[i].failed;
    in->cursor_loading = 0;
    if (failed || !lease_held(in->lease)) return; /* tried again on the next up, or lease */
    const char *found = v[3] ? v[3] : (v[0] || v[1]) ? "1" : NULL;
    in->acked = (position){.time_us = found_uint(v[0]),
                           .seq = found_uint(v[1]),
                           .url = v[2] ? url_index(in, v[2]) : -1};
    if (in->acked.url < 0) in->acked.seq = 0; /* a seq of a server no longer configured */
    in->read = in->persisted = in->written = in->acked;
    in->written_moved = 0;
    if (in->acked.time_us > in->newest_time_us) in->newest_time_us = in->acked.time_us;
    if (found && fold_schema_outdated(found)) {
        log_warn("ingest",
                 "Valkey holds an index of key schema %s under prefix %s, an older layout: "
                 "dropping it (reads fall back to the PDSes; the firehose refills it)",
                 found, in->prefix);
        in->cursor_loading = 1;
        drop_outdated(in);
        return;
    }
    if (found && strcmp(found, SCHEMA_VERSION) != 0) {
        /* Folding on top of another layout would serve a mix of both: an operator decides. */
        log_error("ingest",
                  "Valkey holds key schema %s under prefix %s, this appview writes %s: not "
                  "ingesting; delete the prefix's keys or choose another APPVIEW_KEY_PREFIX",
                  found, in->prefix, SCHEMA_VERSION);
        return;
    }
    if (!found && writer_mark_schema(in->w) < 0) return; /* retried on next up */
    cursor_loaded(in);
}

static void on_cursor_part(const reply *r, void *ud)
{
    struct cursor_part *part = ud;
    ingest *in = part->in;
    free(in->cursor_found[part->ix]);
    in->cursor_found[part->ix] = NULL;
    int ok = r && (r->type == REPLY_STRING || r->type == REPLY_NIL);
    if (ok && r->type == REPLY_STRING) ok = (in->cursor_found[part->ix] = strdup(r->str)) != NULL;
    if (!ok) part->failed = 1;
    if (--in->cursor_pending == 0) cursor_read(in);
}

/* P cursor:v1, v2, url and P schema: four GETs (four slots on a cluster). */
static void load_cursor(ingest *in)
{
    static const char *const names[4] = {"cursor:v1", "cursor:v2", "cursor:url", "schema"};
    in->cursor_loading = 1;
    in->cursor_pending = 1;
    for (int i = 0; i < 4; i++) {
        char key[256];
        snprintf(key, sizeof key, "%s%s", in->prefix, names[i]);
        in->cursor_parts[i] = (struct cursor_part){.in = in, .ix = i, .failed = 1};
        if (cache_command(in->v, on_cursor_part, &in->cursor_parts[i], 2,
                          (const char *[]){"GET", key}, NULL) == 0) {
            in->cursor_parts[i].failed = 0;
            in->cursor_pending++;
        }
    }
    if (--in->cursor_pending == 0) cursor_read(in);
}

/* Valkey is ready and no predecessor's commands can still run: load the cursor (first time)
 * or read the stream again from the last acknowledged cursor. */
static void resume(ingest *in)
{
    if (!lease_held(in->lease) || in->stopping) return;
    if (!in->cursor_loaded) {
        if (!in->cursor_loading) load_cursor(in);
        return;
    }
    if (in->js && in->replay_needed && !in->stopping) {
        (*in->replays_total)++;
        log_info("ingest", "Valkey is back: reading again from the last acknowledged cursor");
        in->paused_for_pending = 0;
        in->read = in->acked;
        jetstream_reconnect(in->js);
        jetstream_pause(in->js, 0);
    }
}

static void on_fenced(int ok, unsigned killed, void *ud)
{
    ingest *in = ud;
    in->fencing = 0;
    *in->fenced_total += killed;
    if (ok) resume(in); /* else a connection failed: the next "up" fences again */
}

/* The lease holder names its connections, so a successor can find them, and kills the other
 * connections of that name (on every node) before its first write. */
static void begin_fencing(ingest *in)
{
    if (in->fencing || in->stopping || !in->valkey_up || !lease_held(in->lease)) return;
    if (cache_fence(in->v, in->client_name, on_fenced, in) == 0) in->fencing = 1;
}

void ingest_on_valkey_state(ingest *in, int up)
{
    in->valkey_up = up;
    if (!up) {
        need_replay(in);
        writer_reset(in->w); /* a restarted Valkey may have lost what the writer knows */
        return;
    }
    if (in->stopping) return; /* draining: the lease was, or is about to be, given back */
    lease_start(in->lease);
    begin_fencing(in);
}

/* Another replica ingests now: stop reading, and read the cursor again (it moved on) when
 * the lease comes back. Writes already sent finish (the new holder fences this connection
 * before it writes); the rest are dropped. */
static void on_lease(int held, void *ud)
{
    ingest *in = ud;
    in->stream_down_since_ms = held ? uv_now(in->loop) : 0;
    if (held) in->leading_since_us = wall_us();
    if (held) {
        writer_reset(in->w); /* another replica wrote meanwhile */
        begin_fencing(in);
        return;
    }
    /* Events not yet sent are dropped: written now, without the lease, they could land after
     * the new holder's and, being decided from what this replica knew, undo them. */
    writer_reset(in->w);
    if (in->js) jetstream_free(in->js);
    in->js = NULL;
    in->cursor_loaded = 0;
    in->replay_needed = 0;
    in->paused_for_pending = 0;
}

/* ---- gauges and accessors ---- */

double ingest_lag_seconds(const ingest *in)
{
    if (!lease_held(in->lease)) return -1;
    uint64_t from = in->newest_time_us ? in->newest_time_us : in->leading_since_us;
    uint64_t now = wall_us();
    return now > from ? (double)(now - from) / 1e6 : 0;
}

double ingest_last_message_age(const ingest *in)
{
    return in->last_message_ms ? (double)(uv_now(in->loop) - in->last_message_ms) / 1e3 : -1;
}

double ingest_stream_down_seconds(const ingest *in)
{
    if (!in->stream_down_since_ms || !lease_held(in->lease) || ingest_connected(in)) return 0;
    return (double)(uv_now(in->loop) - in->stream_down_since_ms) / 1e3;
}

const char *ingest_stream_error(const ingest *in)
{
    return in->js ? jetstream_last_error(in->js) : "";
}

const char *ingest_refusal(const ingest *in)
{
    return in->refusal[0] ? in->refusal : NULL;
}

static double gauge_refused(void *ud)
{
    return ingest_refusal(ud) ? 1 : 0;
}

static double gauge_lag(void *ud)
{
    double lag = ingest_lag_seconds(ud);
    return lag < 0 ? NAN : lag; /* a standby has no lag of its own: no value, not 0 */
}

static double gauge_cursor(void *ud)
{
    return (double)ingest_cursor(ud);
}

int ingest_connected(const ingest *in)
{
    return in->js && jetstream_connected(in->js);
}

uint64_t ingest_cursor(const ingest *in)
{
    return in->acked.seq ? in->acked.seq : in->acked.time_us;
}

const char *ingest_url(const ingest *in)
{
    return in->js ? jetstream_url(in->js) : "";
}

int ingest_health_json(const ingest *in, buf *out)
{
    return buf_printf(out,
                      ",\"seq\":%llu,\"timeUs\":%llu,\"compressed\":%s,\"cursorTooOld\":%llu,"
                      "\"lastFloor\":%llu,\"outdatedCursor\":%llu,\"syncs\":%llu,"
                      "\"errorFrames\":%llu,\"indexesMarkedIncomplete\":%llu",
                      (unsigned long long)in->acked.seq, (unsigned long long)in->acked.time_us,
                      in->js && jetstream_compressed(in->js) ? "true" : "false",
                      (unsigned long long)*in->too_old_total, (unsigned long long)in->last_floor,
                      (unsigned long long)*in->outdated_total, (unsigned long long)*in->syncs_total,
                      (unsigned long long)*in->error_frames_total,
                      (unsigned long long)*in->invalidated_total);
}

static void free_urls(ingest *in)
{
    for (size_t i = 0; in->urls && i < in->nurls; i++)
        free(in->urls[i]);
    free(in->urls);
}

ingest *ingest_new(uv_loop_t *loop, cache_client *v, fold *f, loader *ld, http_client *http,
                   const lexicon_set *lexicons, const ingest_options *opt)
{
    ingest *in = calloc(1, sizeof *in);
    if (!in) return NULL;
    in->loop = loop;
    in->v = v;
    in->ld = ld;
    in->lexicons = lexicons;
    in->rewind_seconds = opt->rewind_seconds;
    in->request_backfill = opt->request_backfill;
    in->request_backfill_ud = opt->request_backfill_ud;
    in->acked.url = in->written.url = in->syncing.url = in->read.url = in->persisted.url = -1;
    in->prefix = strdup(opt->prefix);
    in->urls = calloc(opt->nurls ? opt->nurls : 1, sizeof *in->urls);
    for (; in->urls && in->nurls < opt->nurls; in->nurls++)
        if (!(in->urls[in->nurls] = strdup(opt->urls[in->nurls]))) break;
    snprintf(in->client_name, sizeof in->client_name, "%singest", opt->prefix);
    char lease_key[256];
    snprintf(lease_key, sizeof lease_key, "%singest-lease", opt->prefix);
    in->lease = lease_new(loop, v, lease_key, opt->lease_ms, on_lease, in);
    writer_options wo = {
        .prefix = opt->prefix, .record_ttl = opt->record_ttl, .schema_value = SCHEMA_VERSION};
    in->w = writer_new(v, f, &wo);
    if (!in->prefix || !in->urls || in->nurls < opt->nurls || !in->lease || !in->w) {
        lease_free(in->lease);
        writer_free(in->w);
        free_urls(in);
        free(in->prefix);
        free(in);
        return NULL;
    }
    in->js_opt = (jetstream_options){.urls = opt->urls,
                                     .nurls = opt->nurls,
                                     .collections = event_collections,
                                     .ncollections = EVENT_NCOLLECTIONS,
                                     .stall_seconds = opt->stall_seconds,
                                     .max_message = MAX_EVENT_BYTES,
                                     .no_compression = opt->no_compression,
                                     .http = http};
    in->events_total =
        metrics_counter("appview_jetstream_events_total", "Jetstream messages consumed");
    in->skipped_total = metrics_counter("appview_events_skipped_total",
                                        "Events of collections the appview does not index");
    in->unknown_total =
        metrics_counter("appview_events_unknown_total",
                        "Events of a $type or kind this appview does not know (skipped)");
    in->folded_total = metrics_counter("appview_events_folded_total", "Events written to Valkey");
    in->replays_total = metrics_counter("appview_ingest_replays_total",
                                        "Times the stream was read again after lost writes");
    in->fenced_total = metrics_counter("appview_ingest_fenced_total",
                                       "Earlier ingest connections killed before resuming");
    in->syncs_total = metrics_counter("appview_ingest_syncs_total",
                                      "#sync events: DIDs whose index was reloaded from its PDS");
    in->too_old_total = metrics_counter("appview_ingest_cursor_too_old_total",
                                        "Cursors a v2 server no longer had (CursorTooOld)");
    in->outdated_total = metrics_counter("appview_ingest_outdated_cursor_total",
                                         "Time cursors a v2 server clamped (#info OutdatedCursor)");
    in->info_total = metrics_counter("appview_jetstream_info_total", "v2 #info frames");
    in->error_frames_total = metrics_counter("appview_jetstream_error_frames_total",
                                             "v2 error frames (the server ended the stream)");
    in->invalidated_total = metrics_counter("appview_ingest_indexes_marked_incomplete_total",
                                            "Indexes marked incomplete after events were missed");
    in->refused_retries_total =
        metrics_counter("appview_ingest_refused_retries_total",
                        "Times ingest paused because Valkey refused writes (out of memory, ...)");
    metrics_gauge("appview_valkey_writes_refused",
                  "1 while Valkey refuses the ingester's writes (ingest paused)", gauge_refused,
                  in);
    in->dropped_keys_total = metrics_counter("appview_schema_dropped_keys_total",
                                             "Keys of an outdated index layout dropped at start");
    metrics_gauge("appview_cursor_lag_seconds",
                  "Age of the newest event received (before any: of the saved cursor, or time "
                  "since the lease was taken); NaN on a standby",
                  gauge_lag, in);
    metrics_gauge("appview_cursor", "Last acknowledged Jetstream cursor", gauge_cursor, in);
    uv_check_init(loop, &in->check);
    in->check.data = in;
    uv_check_start(&in->check, on_check);
    uv_timer_init(loop, &in->persist_timer);
    in->persist_timer.data = in;
    uv_timer_init(loop, &in->retry_timer);
    in->retry_timer.data = in;
    uv_timer_start(&in->persist_timer, on_persist_timer, PERSIST_EVERY_MS, PERSIST_EVERY_MS);
    return in;
}

void ingest_stop(ingest *in)
{
    in->stopping = 1;
    if (in->js) jetstream_pause(in->js, 1);
    if (in->tail) in->tail->sealed = 1;
    complete_batches(in);
}

int ingest_idle(ingest *in)
{
    if (in->head) return 0;
    if (!in->sync_failed) sync_written(in); /* a failed one is not tried again on the way out */
    if (in->sync_inflight) return 0;
    /* Everything acknowledged: one last write of the cursor, then the lease goes to a
     * standby, which resumes from that cursor. */
    persist_cursors(in);
    if (in->persist_inflight) return 0;
    lease_release(in->lease);
    return !lease_releasing(in->lease);
}

int ingest_leader(const ingest *in)
{
    return lease_held(in->lease);
}

static void free_when_closed(uv_handle_t *h)
{
    ingest *in = h->data;
    if (h == (uv_handle_t *)&in->persist_timer) {
        for (int i = 0; i < 4; i++)
            free(in->cursor_found[i]);
        json_doc_free(&in->doc);
        free_urls(in);
        free(in->prefix);
        free(in);
    }
}

void ingest_free(ingest *in)
{
    if (!in) return;
    if (in->js) jetstream_free(in->js);
    while (in->head) {
        batch *b = in->head;
        in->head = b->next;
        free(b);
    }
    lease_free(in->lease);
    writer_free(in->w);
    uv_close((uv_handle_t *)&in->check, NULL);
    uv_close((uv_handle_t *)&in->retry_timer, NULL);
    uv_close((uv_handle_t *)&in->persist_timer, free_when_closed);
}
