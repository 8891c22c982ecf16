/* The ingester's write path: events in stream order, written to Valkey in rounds.
 *
 * A round takes what was queued since the last one. It first reads, in one pipelined round
 * trip, what the writer does not remember and planning will need: a record's stored header, a
 * DID's purge mark and ~rev. Then it plans each event in order with the fold's rules
 * (appview/plan.h) and sends the writes as plain pipelined commands (index entries, then the
 * record's HSET; EXPIRE only when a key's TTL refresh is due; a round's P recent entries in one
 * ZADD at its end). An event whose plan needs what the read-ahead could not foresee stops the
 * round until that is read. Purges, identity changes and hold stats' counts go through
 * appview/fold.h, in the same order on the same connection.
 *
 * What the writer knows is what it read and wrote since its last reset. Only the lease holder
 * ingests, so the other writer is the loader (a PDS listing, as a compare-and-set: cas.h): a
 * record it wrote meanwhile may briefly be written over by an older firehose event, until the
 * newer events behind it arrive. */
#ifndef APPVIEW_WRITER_H
#define APPVIEW_WRITER_H

#include <stddef.h>

#include "appview/event.h"
#include "appview/fold.h"
#include "cache/valkey.h"

typedef struct writer writer;

typedef struct {
    const char *prefix;       /* key prefix, e.g. "atcr:" */
    unsigned record_ttl;      /* seconds */
    const char *schema_value; /* P schema: written again when the writer finds it flushed */
} writer_options;

/* Called once per event when every write it caused was answered; ok=0 when one failed
 * (connection lost), or the event was dropped by writer_reset: it must be folded again. */
typedef void (*writer_done_cb)(void *ud, int ok);

writer *writer_new(valkey *v, fold *f, const writer_options *opt);
/* Queues a copy of ev. 0: cb will run; 1: nothing to write (cb will not run); -1: out of
 * memory (cb will not run; the event must be folded again later). */
int writer_add(writer *w, const event *ev, writer_done_cb cb, void *ud);
/* Starts a round for what is queued, unless a round is waiting for its reads (it starts the
 * next one itself when done). Call once per loop iteration. */
void writer_flush(writer *w);
/* Writes P schema, the layout this writer writes (opt->schema_value): for a new index, and
 * again after a flush. 0 when sent, -1 when not connected. */
int writer_mark_schema(writer *w);
/* Events queued or waiting for reads: not yet Valkey commands, but soon. */
size_t writer_backlog(const writer *w);
/* Forgets what it knows of one DID: another writer (a reload from its PDS after #sync) is
 * about to change its index. Its next events are planned from what is read again. */
void writer_forget_did(writer *w, const char *did);
/* What Valkey answered when it last refused a write it may take later (out of memory, a
 * read-only replica, ...): the events were failed (cb with ok=0). NULL when none since the
 * last reset. */
const char *writer_refusal(const writer *w);
/* Forgets what it knows of the index and fails every event not yet sent (cb with ok=0). For
 * a lost connection, refused writes, a lease regained: anything that may have left the index
 * other than the writer believes. */
void writer_reset(writer *w);
void writer_free(writer *w);

#endif
