/* The firehose into the index. Jetstream messages are parsed (appview/event.h) and written
 * (appview/writer.h) in batches, one batch per loop iteration. The cursor advances only past a
 * batch whose writes, and every earlier batch's, were acknowledged; it is persisted in Valkey
 * (P cursor:v1 / cursor:v2) and resumed from on restart, rewound a little (v1: time_us). When
 * Valkey falls behind, reading pauses; when writes fail or Valkey goes away, the stream is
 * reconnected from the last acknowledged cursor once Valkey is back, so nothing is lost.
 *
 * Of the replicas sharing a Valkey, only the holder of the ingest lease (appview/lease.h)
 * reads the stream; the others stand by and take over, from the saved cursor, when it lapses.
 *
 * Commands a previous ingester (a crashed process, or this one's own lost connection) sent
 * may still sit unexecuted in Valkey's input buffers and would run interleaved with the
 * replay. So the lease holder names its connection <prefix>ingest, and every time it
 * (re)starts ingesting it first kills the other connections of that name: Valkey drops their
 * unexecuted commands, and the replay redoes whatever they left half done. */
#ifndef APPVIEW_INGEST_H
#define APPVIEW_INGEST_H

#include <stdint.h>
#include <uv.h>

#include "appview/fold.h"
#include "atproto/lexicon.h"
#include "cache/valkey.h"

typedef struct ingest ingest;

typedef struct {
    const char *const *urls;
    size_t nurls;
    const char *prefix;
    unsigned stall_seconds;
    unsigned rewind_seconds; /* v1 resume rewind */
    unsigned lease_ms;       /* the ingest lease's TTL (appview/lease.h) */
    unsigned record_ttl;     /* seconds, as the fold's */
} ingest_options;

ingest *ingest_new(uv_loop_t *loop, valkey *v, fold *f, const lexicon_set *lexicons,
                   const ingest_options *opt);
/* Call from the valkey state callback: ingest starts once Valkey is up and has the cursor. */
void ingest_on_valkey_state(ingest *in, int up);
/* For health: connected?, last acknowledged cursor, and the lag in seconds: the age of the
 * newest event received (its own time_us), before any event that of the saved cursor, and
 * without one the time since this replica took the lease; it never reads 0 while nothing
 * flows. -1 on a standby, which has no lag of its own. */
int ingest_connected(const ingest *in);
/* 1 while this replica holds the ingest lease (it ingests); 0 on a standby. */
int ingest_leader(const ingest *in);
uint64_t ingest_cursor(const ingest *in);
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
/* Stops reading, persists the acknowledged cursor once pending writes are answered, then
 * gives the lease back; call ingest_idle until it returns 1, then it is safe to free. */
void ingest_stop(ingest *in);
int ingest_idle(ingest *in);
void ingest_free(ingest *in);

#endif
