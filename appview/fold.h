/* The events that change the index other than through a record's plan (appview/plan.h): an
 * account deleted or taken down purges every key of its DID (cache/purge.lua, one atomic script
 * on the DID's slot) and its P recent entries (cache/forget_recent.lua, on P recent's slot);
 * an identity change drops the DID's cached
 * identity (plain HGET and DEL); a hold's io.atcr.hold.stats record also updates the user's last
 * known counts (cache/hold_stats.lua). See cache/SCHEMA.md for the keys. */
#ifndef APPVIEW_FOLD_H
#define APPVIEW_FOLD_H

#include <stdint.h>

#include "appview/event.h"
#include "cache/client.h"

typedef struct fold fold;

typedef struct {
    const char *prefix; /* key prefix, e.g. "atcr:" */
    unsigned gone_ttl;  /* how long a purged DID ignores older commits; 0 means 1 day */
} fold_options;

/* Called once per event when every write it caused was answered; ok=0 when one failed
 * (connection lost or an error reply): the event must be folded again later. */
typedef void (*fold_done_cb)(void *ud, int ok);

/* Registers the scripts on v, so call it before cache_start. */
fold *fold_new(cache_client *v, const fold_options *opt);
/* A purge or an identity change (record events are planned: appview/plan.h). 0: writes sent,
 * cb will run; 1: nothing to write (cb will not run); -1: Valkey not ready or out of memory (cb
 * will not run; the event must be folded again later). */
int fold_apply(fold *f, const event *ev, fold_done_cb cb, void *ud);
/* The user's last known counts from a hold's stats record event; returns as fold_apply. */
int fold_hold_stats(fold *f, const event *ev, fold_done_cb cb, void *ud);
/* 1 when the event can change the index: a record event, an identity change, a purge. */
int fold_changes_index(const event *ev);
/* The recent list keeps its newest FOLD_RECENT_KEEP manifests. Trimming it on every add
 * would double its commands: whoever adds a manifest calls fold_recent_trim_due, which says
 * when (every thousandth add) to trim it as well. */
#define FOLD_RECENT_KEEP 10000
int fold_recent_trim_due(fold *f);
/* P recent, the recent list's key. */
const char *fold_recent_key(const fold *f);
/* P recent/by-did{P recent}, on P recent's slot: the members of P recent, each with score 0,
 * so that a DID's entries are found by ZRANGEBYLEX (a purge) rather than by a scan of 10,000.
 * The rule for whoever adds to P recent: the member is added here first, and no rebuild of the
 * index falls between the two additions, so P recent never holds a member its index lacks. The
 * ingester, which alone trims, sends both additions and its trims on one connection; every other
 * writer adds both in one script call. Removals from P recent need not follow: the index may
 * hold members P recent has lost, which a purge removes in passing, and the trim rebuilds it
 * from P recent once it holds more than FOLD_RECENT_INDEX_MAX. */
#define FOLD_RECENT_INDEX_MAX (3 * FOLD_RECENT_KEEP)
const char *fold_recent_index_key(const fold *f);
/* Trims P recent to its newest FOLD_RECENT_KEEP entries, and rebuilds its index when due
 * (cache/trim_recent.lua); a failure is caught up by the next trim. */
void fold_trim_recent(fold *f);
/* The key layout of cache/SCHEMA.md, as written to P schema. An index of an outdated layout
 * (versions 2 and 3: tags by digest; 4: no index of P recent by DID) is dropped by the ingester
 * (appview/ingest.h). */
#define FOLD_SCHEMA_VERSION "5"
int fold_schema_outdated(const char *version);
void fold_free(fold *f);

#endif
