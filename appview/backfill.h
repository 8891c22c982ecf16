/* The backfill: an appview whose index is empty, was dropped, or missed events learns every
 * ATCR repository on the network without waiting for its users to push again.
 *
 * A pass lists the DIDs that hold io.atcr.manifest or io.atcr.tag records, from a relay's
 * com.atproto.sync.listReposByCollection (each collection, every page; lexicons/com/atproto/sync)
 * or from a file of DIDs, and loads each through the loader (appview/loader.h: its identity,
 * listRecords of every page, folded by the fold's rules as a compare-and-set, so a newer
 * firehose event wins), listed even where the index says it is complete (loader_reload_repo).
 *
 * Its progress lives in Valkey (cache/SCHEMA.md, "Backfill"): the DIDs found and not finished,
 * those done and those failed, and the source's cursor per collection. Every change is one
 * script call (cache/backfill.lua), made as it happens, so a restart or a SIGKILL at any moment
 * resumes the pass without loading a DID marked done again and without skipping one. What to do
 * (whether a pass runs, which DID next under the concurrency and per-host caps, retries with
 * backoff, a 429 parking its host) is decided by appview/backfill_sched.h.
 *
 * One replica works at a time: the holder of P backfill-lease, which it takes only while it has
 * a pass to run. Progress shows in _health, /metrics and a log line every few seconds; the
 * command `appview backfill` draws a progress bar on a terminal. */
#ifndef APPVIEW_BACKFILL_H
#define APPVIEW_BACKFILL_H

#include <uv.h>

#include "appview/backfill_sched.h"
#include "appview/loader.h"
#include "atproto/buf.h"
#include "atproto/http_client.h"
#include "cache/client.h"

typedef struct backfill backfill;

/* BF_COMMAND: the pass ended; status 0 when every DID was loaded, 1 when some failed (a summary
 * was printed), 2 when it could not run (the index is of another layout, the DIDs file cannot
 * be read). */
typedef void (*backfill_done_cb)(void *ud, int status);

typedef struct {
    bf_mode mode;
    const char *prefix;
    const char *relay_url; /* its com.atproto.sync.listReposByCollection */
    const char *dids_file; /* one DID a line ('#' comments); instead of the relay when set */
    unsigned concurrency;  /* DIDs resolving or loading at once */
    unsigned per_host;     /* DIDs loading from one PDS at once */
    unsigned lease_ms;     /* P backfill-lease's TTL */
    int progress_bar;      /* BF_COMMAND: redraw a bar on stderr (a terminal), else log lines */
    backfill_done_cb on_done;
    void *ud;
} backfill_options;

/* Registers its scripts on v: call before cache_start. NULL when out of memory. */
backfill *backfill_new(uv_loop_t *loop, cache_client *v, loader *ld, http_client *http,
                       const backfill_options *opt);
/* Asks for a new pass (auto mode and the command run it; whichever replica holds the lease
 * does): the index lost what the last one loaded. Recorded in Valkey as soon as it is up. */
void backfill_request(backfill *b, const char *reason);
/* Valkey came up (up=1) or went down: the first look, and the one after an outage, happen at
 * once rather than at the next tick. */
void backfill_on_valkey_state(backfill *b, int up);
/* Appends "backfill":{...} (mode, state, DIDs found/done/failed/queued, records, rate, ETA). */
int backfill_health_json(const backfill *b, buf *out);
/* Stops starting work; call backfill_idle until it returns 1 (marks in flight written, the
 * lease given back). A DID whose load was cut short stays queued for the next run. */
void backfill_stop(backfill *b);
int backfill_idle(backfill *b);
/* After the loader, Valkey and the HTTP client were freed (their callbacks have run). */
void backfill_free(backfill *b);

#endif
