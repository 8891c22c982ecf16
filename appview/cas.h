/* Folding records that come from a PDS (the loader) into the index, by the fold's rules
 * (appview/plan.h) and safely beside the ingester, which writes the same keys without asking.
 *
 * cas_fold reads what the index holds of a batch of one DID's records, plans each, and sends
 * every plan in one call of cache/guarded.lua: it writes only if none of the fields the plans
 * were made from changed meanwhile (compare and set), else the batch is read and planned again.
 * So a record the firehose wrote while the batch was planned is never written over by an older
 * listing. */
#ifndef APPVIEW_CAS_H
#define APPVIEW_CAS_H

#include <stddef.h>

#include "appview/event.h"
#include "cache/client.h"

typedef struct cas cas;

typedef struct {
    const char *prefix;       /* key prefix, e.g. "atcr:" */
    const char *recent;       /* P recent (appview/fold.h) */
    const char *recent_index; /* its index by DID (fold_recent_index_key) */
    unsigned record_ttl;      /* seconds */
} cas_options;

/* ok: 1 when every event was folded (or found stale), 0 when the batch could not be written
 * (Valkey away, or the index kept changing under it). written counts the events that changed
 * the index. */
typedef void (*cas_done_cb)(void *ud, int ok, size_t written);

/* Registers its script on v, so call it before cache_start. */
cas *cas_new(cache_client *v, const cas_options *opt);
/* Folds n record events (EVENT_COMMIT, all of one DID, time_us 0). They are copied: the
 * caller's may go once this returns. 0 when started (cb runs once, later); 1 when n is 0 (cb
 * does not run); -1 out of memory or Valkey not connected (cb does not run). */
int cas_fold(cas *c, const event *evs, size_t n, cas_done_cb cb, void *ud);
void cas_free(cas *c);

#endif
