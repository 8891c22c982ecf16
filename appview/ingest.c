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

static const char *const wanted_collections[] = {"io.atcr.manifest", "io.atcr.tag",
                                                 "io.atcr.hold.stats"};

/* The events of one loop iteration. Batches complete in order (replies on one connection come
 * back in order), and the cursor moves to a batch's last event only when it completes. */
typedef struct batch {
    struct batch *next;
    ingest *in;
    jetstream_flavor flavor;
    unsigned epoch; /* batches of an epoch that saw a failure never move the cursor */
    uint64_t max_cursor, max_time_us;
    unsigned outstanding;
    int outstanding_ever; /* it wrote something: its success says Valkey takes writes */
    int sealed;
} batch;

struct ingest {
    uv_loop_t *loop;
    valkey *v;
    writer *w;
    const lexicon_set *lexicons;
    jetstream *js;
    jetstream_options js_opt;
    lease *lease;
    char *prefix;
    char client_name[160]; /* P ingest: the lease holder's connection, found and fenced by name */
    unsigned rewind_seconds;

    batch *head, *tail; /* tail is open while the iteration adds events to it */
    unsigned epoch;
    uint64_t acked[3]; /* per flavor: the cursor every write up to which was acknowledged */
    uint64_t acked_time_us;
    /* For health: the newest event's own time (the saved cursor's before any arrives), when
     * this replica took the lease (the lag's origin before either), when a message last
     * arrived (loop ms, 0 before any) and since when the lease holder has been without a
     * stream (0: it is not, or this replica stands by). */
    uint64_t newest_time_us, leading_since_us, last_message_ms, stream_down_since_ms;
    uint64_t persisted[3];
    int persist_inflight;
    long long own_client_id;
    int fencing; /* replies awaited before resuming after a (re)connect */
    int cursor_loading, cursor_loaded;
    int paused_for_pending, valkey_up, replay_needed, stopping;

    uv_check_t check;
    uv_timer_t persist_timer;
    uv_timer_t retry_timer; /* reads again after writes were refused */
    unsigned retry_ms;      /* its next pause; 0 while writes go through */
    char refusal[160];      /* what Valkey answered, for _health; "" while writes go through */

    uint64_t *events_total, *skipped_total, *folded_total, *replays_total, *fenced_total;
    uint64_t *dropped_keys_total;
    uint64_t *refused_retries_total;
};

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

static uint64_t wall_us(void)
{
    uv_timeval64_t now;
    uv_gettimeofday(&now);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_usec;
}

/* ---- batches and the cursor ---- */

static void complete_batches(ingest *in)
{
    while (in->head && in->head->sealed && in->head->outstanding == 0) {
        batch *b = in->head;
        if (b->epoch == in->epoch && !in->replay_needed) {
            if (b->max_cursor > in->acked[b->flavor]) in->acked[b->flavor] = b->max_cursor;
            if (b->max_time_us > in->acked_time_us) in->acked_time_us = b->max_time_us;
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
}

static batch *open_batch(ingest *in, jetstream_flavor flavor)
{
    if (in->tail && !in->tail->sealed && in->tail->flavor == flavor) return in->tail;
    if (in->tail) in->tail->sealed = 1;
    batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->in = in;
    b->flavor = flavor;
    b->epoch = in->epoch;
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
             "Valkey refused writes (%s): ingest paused; reading again from the last "
             "acknowledged cursor in %u ms",
             in->refusal[0] ? in->refusal : "a script's write", in->retry_ms);
    uv_timer_start(&in->retry_timer, on_retry_timer, in->retry_ms, 0);
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

static void on_message(void *ud, jetstream_flavor flavor, const char *data, size_t len)
{
    ingest *in = ud;
    (*in->events_total)++;
    in->last_message_ms = uv_now(in->loop);
    batch *b = open_batch(in, flavor);
    if (!b) {
        need_replay(in);
        return;
    }
    event ev;
    switch (event_parse(&ev, flavor, data, len, in->lexicons)) {
    case EVENT_SKIP:
        (*in->skipped_total)++;
        break;
    case EVENT_INVALID:
        (*dropped_counter(ev.reason))++;
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
    if (ev.cursor > b->max_cursor) b->max_cursor = ev.cursor;
    if (ev.time_us > b->max_time_us) b->max_time_us = ev.time_us;
    if (ev.time_us > in->newest_time_us) in->newest_time_us = ev.time_us;
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
    size_t pending = valkey_pending(in->v) + writer_backlog(in->w);
    if (!in->paused_for_pending && pending > PENDING_HIGH) {
        in->paused_for_pending = 1;
        jetstream_pause(in->js, 1);
    } else if (in->paused_for_pending && pending < PENDING_LOW) {
        in->paused_for_pending = 0;
        jetstream_pause(in->js, 0);
    }
}

static uint64_t resume_cursor(void *ud, jetstream_flavor flavor)
{
    ingest *in = ud;
    uint64_t c = in->acked[flavor];
    if (flavor == JETSTREAM_V1 && c) {
        uint64_t rewind = (uint64_t)in->rewind_seconds * 1000000u;
        c = c > rewind ? c - rewind : 1;
    }
    return c;
}

static void on_js_state(void *ud, int connected)
{
    ingest *in = ud;
    in->stream_down_since_ms = connected ? 0 : uv_now(in->loop);
    /* A new connection starts a new stream: failures of the old one are behind us. */
    if (connected && in->valkey_up && in->head == NULL) in->replay_needed = 0;
}

static void cursor_key(const ingest *in, int flavor, char *out, size_t n)
{
    snprintf(out, n, "%scursor:v%d", in->prefix, flavor);
}

typedef struct {
    ingest *in;
    int flavor;
    uint64_t value;
} persist_req;

static void on_persisted(redisReply *r, void *ud)
{
    persist_req *p = ud;
    p->in->persist_inflight--;
    if (r && r->type != REDIS_REPLY_ERROR && p->value > p->in->persisted[p->flavor])
        p->in->persisted[p->flavor] = p->value;
    free(p);
}

static void persist_cursors(ingest *in)
{
    if (!in->valkey_up || !in->cursor_loaded) return;
    for (int fl = JETSTREAM_V1; fl <= JETSTREAM_V2; fl++) {
        if (in->acked[fl] <= in->persisted[fl]) continue;
        persist_req *p = malloc(sizeof *p);
        if (!p) return;
        *p = (persist_req){in, fl, in->acked[fl]};
        char key[256], val[24];
        cursor_key(in, fl, key, sizeof key);
        snprintf(val, sizeof val, "%llu", (unsigned long long)p->value);
        if (valkey_command(in->v, on_persisted, p, 3, (const char *[]){"SET", key, val}, NULL) <
            0) {
            free(p);
            return;
        }
        in->persist_inflight++;
    }
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
    in->js_opt.ud = in;
    in->js = jetstream_new(in->loop, &in->js_opt);
    if (!in->js) {
        log_error("ingest", "cannot create the Jetstream client");
        return;
    }
    log_info("ingest", "resuming v1 from %llu, v2 from %llu",
             (unsigned long long)in->acked[JETSTREAM_V1],
             (unsigned long long)in->acked[JETSTREAM_V2]);
    jetstream_start(in->js);
}

static uint64_t reply_uint(const redisReply *r)
{
    return (r && r->type == REDIS_REPLY_STRING) ? strtoull(r->str, NULL, 10) : 0;
}

/* The layout cache/SCHEMA.md describes; an index written in another one is not read. An index
 * of versions 2 or 3 (whose tags named digests, not manifest records) is dropped: Valkey is a
 * cache, reads fall back to the PDSes and the firehose fills it again, from the same cursor. */
#define SCHEMA_VERSION "4"

static int outdated_schema(const char *found)
{
    return !strcmp(found, "2") || !strcmp(found, "3");
}

static void cursor_loaded(ingest *in)
{
    in->cursor_loaded = 1;
    start_stream(in);
}

/* Drops the keys of an outdated index under the prefix, a SCAN page at a time; the cursors,
 * the lease and the schema mark stay. Then marks the index as of this layout. */
static void drop_page(ingest *in, const char *cursor);

/* An UNLINK that failed leaves a key of the old layout, which its TTL removes in time. */
static void on_unlinked(redisReply *r, void *ud) {}

static void on_dropped_page(redisReply *r, void *ud)
{
    ingest *in = ud;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
        in->cursor_loading = 0; /* tried again on the next up */
        return;
    }
    const redisReply *keys = r->element[1];
    size_t plen = strlen(in->prefix);
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        if (k->type != REDIS_REPLY_STRING || k->len <= plen) continue;
        const char *rest = k->str + plen;
        if (!strncmp(rest, "cursor:", 7) || !strcmp(rest, "ingest-lease") ||
            !strcmp(rest, "schema"))
            continue;
        valkey_command(in->v, on_unlinked, NULL, 2, (const char *[]){"UNLINK", k->str}, NULL);
        (*in->dropped_keys_total)++;
    }
    if (strcmp(r->element[0]->str, "0")) {
        drop_page(in, r->element[0]->str);
        return;
    }
    log_info("ingest", "outdated index dropped (%llu keys); writing schema %s",
             (unsigned long long)*in->dropped_keys_total, SCHEMA_VERSION);
    in->cursor_loading = 0;
    if (writer_mark_schema(in->w) == 0) cursor_loaded(in);
}

static void drop_page(ingest *in, const char *cursor)
{
    char match[256];
    snprintf(match, sizeof match, "%s*", in->prefix);
    if (valkey_command(in->v, on_dropped_page, in, 6,
                       (const char *[]){"SCAN", cursor, "MATCH", match, "COUNT", "1000"}, NULL) < 0)
        in->cursor_loading = 0;
}

static void on_cursor_loaded(redisReply *r, void *ud)
{
    ingest *in = ud;
    in->cursor_loading = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) return; /* retried on next up */
    if (!lease_held(in->lease)) return; /* read again when the lease comes back */
    const redisReply *schema = r->element[2];
    int had_cursor =
        r->element[0]->type == REDIS_REPLY_STRING || r->element[1]->type == REDIS_REPLY_STRING;
    const char *found = schema->type == REDIS_REPLY_STRING ? schema->str : had_cursor ? "1" : NULL;
    for (int fl = JETSTREAM_V1; fl <= JETSTREAM_V2; fl++)
        in->acked[fl] = in->persisted[fl] = reply_uint(r->element[fl - 1]);
    in->acked_time_us = in->acked[JETSTREAM_V1];
    if (in->acked_time_us > in->newest_time_us) in->newest_time_us = in->acked_time_us;
    if (found && outdated_schema(found)) {
        log_warn("ingest",
                 "Valkey holds an index of key schema %s under prefix %s, an older layout: "
                 "dropping it (reads fall back to the PDSes; the firehose refills it)",
                 found, in->prefix);
        in->cursor_loading = 1;
        drop_page(in, "0");
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

/* Valkey is ready and no predecessor's commands can still run: load the cursor (first time)
 * or read the stream again from the last acknowledged cursor. */
static void resume(ingest *in)
{
    if (!lease_held(in->lease) || in->stopping) return;
    if (!in->cursor_loaded) {
        if (in->cursor_loading) return;
        char k1[256], k2[256], schema[256];
        cursor_key(in, 1, k1, sizeof k1);
        cursor_key(in, 2, k2, sizeof k2);
        snprintf(schema, sizeof schema, "%sschema", in->prefix);
        if (valkey_command(in->v, on_cursor_loaded, in, 4, (const char *[]){"MGET", k1, k2, schema},
                           NULL) == 0)
            in->cursor_loading = 1;
        return;
    }
    if (in->js && in->replay_needed && !in->stopping) {
        (*in->replays_total)++;
        log_info("ingest", "Valkey is back: reading again from the last acknowledged cursor");
        in->paused_for_pending = 0;
        jetstream_reconnect(in->js);
        jetstream_pause(in->js, 0);
    }
}

static void on_own_id(redisReply *r, void *ud)
{
    ingest *in = ud;
    in->own_client_id = (r && r->type == REDIS_REPLY_INTEGER) ? r->integer : -1;
}

static void on_named(redisReply *r, void *ud)
{
    (void)ud;
    if (r && r->type == REDIS_REPLY_ERROR) log_warn("ingest", "CLIENT SETNAME refused: %s", r->str);
}

static void on_fenced(redisReply *r, void *ud)
{
    (void)r; /* a client that left meanwhile makes KILL fail: it is gone either way */
    ingest *in = ud;
    if (--in->fencing == 0) resume(in);
}

/* CLIENT LIST lines look like "id=7 addr=... name=atcr:ingest ...". */
static void on_client_list(redisReply *r, void *ud)
{
    ingest *in = ud;
    if (!r || r->type != REDIS_REPLY_STRING || in->own_client_id < 0) {
        in->fencing = 0; /* the connection failed: the next "up" fences again */
        return;
    }
    char name[160];
    in->fencing = 1; /* held until every kill below was answered */
    for (const char *line = r->str; line && *line; line = strchr(line, '\n'), line += !!line) {
        long long id;
        const char *at = strstr(line, " name=");
        const char *eol = strchr(line, '\n');
        if (sscanf(line, "id=%lld", &id) != 1 || !at || (eol && at > eol)) continue;
        if (sscanf(at, " name=%159s", name) != 1 || strcmp(name, in->client_name) ||
            id == in->own_client_id)
            continue;
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        if (valkey_command(in->v, on_fenced, in, 4, (const char *[]){"CLIENT", "KILL", "ID", idbuf},
                           NULL) == 0) {
            in->fencing++;
            (*in->fenced_total)++;
            log_info("ingest", "fencing off an earlier ingest connection (client %s)", idbuf);
        }
    }
    on_fenced(NULL, in);
}

/* The lease holder names its connection, so a successor can find it, and kills the other
 * connections of that name before its first write. */
static void begin_fencing(ingest *in)
{
    if (in->fencing || in->stopping || !in->valkey_up || !lease_held(in->lease)) return;
    in->own_client_id = -1;
    if (valkey_command(in->v, on_named, in, 3,
                       (const char *[]){"CLIENT", "SETNAME", in->client_name}, NULL) < 0 ||
        valkey_command(in->v, on_own_id, in, 2, (const char *[]){"CLIENT", "ID"}, NULL) < 0 ||
        valkey_command(in->v, on_client_list, in, 4,
                       (const char *[]){"CLIENT", "LIST", "TYPE", "normal"}, NULL) < 0)
        return; /* not connected after all: the next "up" tries again */
    in->fencing = 1;
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
    return in->acked[JETSTREAM_V2] ? in->acked[JETSTREAM_V2] : in->acked[JETSTREAM_V1];
}

const char *ingest_url(const ingest *in)
{
    return in->js ? jetstream_url(in->js) : "";
}

ingest *ingest_new(uv_loop_t *loop, valkey *v, fold *f, const lexicon_set *lexicons,
                   const ingest_options *opt)
{
    ingest *in = calloc(1, sizeof *in);
    if (!in) return NULL;
    in->loop = loop;
    in->v = v;
    in->lexicons = lexicons;
    in->rewind_seconds = opt->rewind_seconds;
    in->prefix = strdup(opt->prefix);
    snprintf(in->client_name, sizeof in->client_name, "%singest", opt->prefix);
    char lease_key[256];
    snprintf(lease_key, sizeof lease_key, "%singest-lease", opt->prefix);
    in->lease = lease_new(loop, v, lease_key, opt->lease_ms, on_lease, in);
    writer_options wo = {
        .prefix = opt->prefix, .record_ttl = opt->record_ttl, .schema_value = SCHEMA_VERSION};
    in->w = writer_new(v, f, &wo);
    if (!in->prefix || !in->lease || !in->w) {
        lease_free(in->lease);
        writer_free(in->w);
        free(in->prefix);
        free(in);
        return NULL;
    }
    in->js_opt = (jetstream_options){.urls = opt->urls,
                                     .nurls = opt->nurls,
                                     .collections = wanted_collections,
                                     .ncollections =
                                         sizeof wanted_collections / sizeof wanted_collections[0],
                                     .stall_seconds = opt->stall_seconds,
                                     .max_message = MAX_EVENT_BYTES};
    in->events_total =
        metrics_counter("appview_jetstream_events_total", "Jetstream messages consumed");
    in->skipped_total = metrics_counter("appview_events_skipped_total",
                                        "Events of collections the appview does not index");
    in->folded_total = metrics_counter("appview_events_folded_total", "Events written to Valkey");
    in->replays_total = metrics_counter("appview_ingest_replays_total",
                                        "Times the stream was read again after lost writes");
    in->fenced_total = metrics_counter("appview_ingest_fenced_total",
                                       "Earlier ingest connections killed before resuming");
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
