/* The firehose into the index. Jetstream messages are parsed (appview/event.h) and written
 * (appview/writer.h) in batches, one batch per loop iteration. The cursor advances only past a
 * batch whose writes, and every earlier batch's, were acknowledged (and, with
 * APPVIEW_VALKEY_WAIT_REPLICAS, confirmed by the replicas: cache_sync); it is persisted in Valkey
 * (P cursor:v1 the time_us, P cursor:v2 the seq, P cursor:url where that seq is good) and
 * resumed from on restart: by seq on the same URL (exact), else by time_us rewound a little
 * (a seq is one server's own). A reconnect of the same process resumes from the last event it
 * read. When Valkey falls behind, reading pauses; when writes fail or Valkey goes away, the
 * stream is reconnected from the last acknowledged cursor once Valkey is back, so nothing is
 * lost.
 *
 * What the stream says beyond records: a v2 #sync (the repo's history diverged) marks the
 * DID's index incomplete and reloads it from its PDS (appview/loader.h); a cursor the server
 * no longer has (v2 CursorTooOld, or an #info OutdatedCursor after a clamped time cursor)
 * means events were missed, so every index is marked incomplete and reads reload from PDSes;
 * an error frame (ConsumerTooSlow) reconnects after a backoff.
 *
 * Of the replicas sharing a Valkey, only the holder of the ingest lease (appview/lease.h)
 * reads the stream; the others stand by and take over, from the saved cursor, when it lapses.
 *
 * Commands a previous ingester (a crashed process, or this one's own lost connection) sent
 * may still sit unexecuted in Valkey's input buffers and would run interleaved with the
 * replay. So the lease holder names its connections <prefix>ingest, and every time it
 * (re)starts ingesting it first kills the other connections of that name, on every node
 * (cache_fence): Valkey drops their unexecuted commands, and the replay redoes whatever they
 * left half done. */
#ifndef APPVIEW_INGEST_H
#define APPVIEW_INGEST_H

#include <stdint.h>
#include <uv.h>

#include "appview/fold.h"
#include "appview/loader.h"
#include "atproto/buf.h"
#include "atproto/http_client.h"
#include "atproto/lexicon.h"
#include "cache/client.h"

typedef struct ingest ingest;

typedef struct {
    const char *const *urls;
    size_t nurls;
    const char *prefix;
    unsigned stall_seconds;
    unsigned rewind_seconds; /* how far a time_us resume goes back */
    int no_compression;      /* v2: uncompressed frames even where dict-zstd is served */
    unsigned lease_ms;       /* the ingest lease's TTL (appview/lease.h) */
    unsigned record_ttl;     /* seconds, as the fold's */
    /* Called when the index lost what a backfill would load (an outdated layout was dropped;
     * the stream could not resume from the cursor): appview/backfill.h's backfill_request.
     * May be NULL. */
    void (*request_backfill)(void *ud, const char *reason);
    void *request_backfill_ud;
} ingest_options;

/* ld reloads DIDs a #sync names; http fetches the v2 dictionary (NULL: no compression). */
ingest *ingest_new(uv_loop_t *loop, cache_client *v, fold *f, loader *ld, http_client *http,
                   const lexicon_set *lexicons, const ingest_options *opt);
/* Call from the valkey state callback: ingest starts once Valkey is up and has the cursor. */
void ingest_on_valkey_state(ingest *in, int up);
/* For health: connected?, last acknowledged cursor, and the lag in seconds: the age of the
 * newest event received (its own time_us), before any event that of the saved cursor, and
 * without one the time since this replica took the lease; it never reads 0 while nothing
 * flows. -1 on a standby, which has no lag of its own. */
int ingest_connected(const ingest *in);
/* 1 while this replica holds the ingest lease (it ingests); 0 on a standby. */
int ingest_leader(const ingest *in);
uint64_t ingest_cursor(const ingest *in); /* the seq, or the time_us where there is none */
double ingest_lag_seconds(const ingest *in);
const char *ingest_url(const ingest *in);
/* Seconds since the last message arrived, -1 before any. */
double ingest_last_message_age(const ingest *in);
/* Seconds this replica has held the lease without a Jetstream connection; 0 while it streams
 * or stands by. */
double ingest_stream_down_seconds(const ingest *in);
/* Why the last connection attempt failed (jetstream_last_error), "" when none did. */
const char *ingest_stream_error(const ingest *in);
/* What Valkey answered while it refuses the ingester's writes (out of memory, ...; ingest is
 * paused and tries again), NULL while writes go through. */
const char *ingest_refusal(const ingest *in);

/* The stream's state for _health, as JSON members appended to out (",\"seq\":..."): the
 * acknowledged seq and time_us, compression, cursors refused as too old, #info and error
 * frames, indexes marked incomplete. */
int ingest_health_json(const ingest *in, buf *out);

/* Where a stream was read to, and the cursor to resume from on url (pure; unit-tested): the
 * seq after the last one when it is url's own (a seq is one server's), else the time_us
 * rewound by rewind_seconds (a time means the same on every server), else 0 (the live tip). */
typedef struct {
    uint64_t seq;
    const char *seq_url; /* the URL seq came from; NULL when none */
    uint64_t time_us;
} ingest_position;
uint64_t ingest_resume_cursor(const ingest_position *at, const char *url, unsigned rewind_seconds);

/* Stops reading, persists the acknowledged cursor once pending writes are answered, then
 * gives the lease back; call ingest_idle until it returns 1, then it is safe to free. */
void ingest_stop(ingest *in);
int ingest_idle(ingest *in);
void ingest_free(ingest *in);

#endif
