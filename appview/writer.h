/* The ingester's write path: events in stream order, written to Valkey in rounds.
 *
 * A round takes what was queued since the last one. It first reads, in one pipelined round
 * trip, what the writer does not know yet: the stored header of a record, a DID's purge mark.
 * Then it decides each event with the rules of cache/apply.lua against what it knows, and
 * sends the writes: a record created, or updated in place, goes as plain commands (ZADDs, then
 * the HSET of the record, EXPIRE only when a key's TTL refresh is due), and so does a delete or
 * move of a live record (for a manifest, when the round read who owns its digest's entry; a
 * repository stays in repos when its last entry goes). Hold stats, purges and whatever the
 * writer is unsure of go through fold_apply (the Lua scripts), in the same order on the same
 * connection; so do identity changes, which fold.c sends as plain commands. A script costs
 * Valkey several times the plain commands. A round's P recent entries go in one ZADD at its
 * end.
 *
 * What the writer knows is what it read and wrote since its last reset. Only the lease holder
 * ingests, so the other writer is the loader (a PDS listing, through apply.lua): a record it
 * wrote meanwhile may briefly be written over by an older firehose event, until the newer
 * events behind it arrive. Anything the writer is unsure of goes through the scripts. */
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
    int scripts_only;         /* every event through fold_apply: for diagnosis, and tests */
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
/* Forgets what it knows of the index and fails every event not yet sent (cb with ok=0). For
 * a lost connection, a lease regained: anything that may have changed the index unseen. */
void writer_reset(writer *w);
void writer_free(writer *w);

#endif
