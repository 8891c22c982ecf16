/* The cache-miss path: what the appview does when Valkey does not have what a query needs.
 *
 * loader_resolve turns an actor (DID or handle) into a DID, from Valkey (P handle:<h>, P{D}/id)
 * or else the network (appview/resolver.h), caching identities and negative results with
 * their TTLs. loader_ensure_repo makes a DID's index complete: unless P{D}/complete exists it
 * lists the DID's io.atcr.manifest and io.atcr.tag records on its PDS (all pages) and writes
 * them by the fold's rules (appview/plan.h, written as a compare-and-set beside the ingester:
 * appview/cas.h), so the result is exactly what ingest would have written, then sets
 * P{D}/complete (loader_reload_repo lists it even then: a #sync, the backfill). Concurrent
 * calls for one key share one upstream fetch (single flight). */
#ifndef APPVIEW_LOADER_H
#define APPVIEW_LOADER_H

#include <uv.h>

#include "appview/fold.h"
#include "appview/resolver.h"
#include "atproto/http_client.h"
#include "atproto/lexicon.h"
#include "cache/client.h"

typedef struct loader loader;

typedef enum {
    LOAD_OK,
    LOAD_NOT_FOUND,        /* the actor or repo does not exist (cached as a negative entry) */
    LOAD_UPSTREAM_FAILURE, /* the network failed: 502 unless something stale can be served */
    LOAD_UPSTREAM_TIMEOUT, /* 504 unless something stale can be served */
    LOAD_INVALID,          /* malformed actor */
} load_status;

typedef struct {
    load_status status;
    const char *did;    /* LOAD_OK */
    const char *handle; /* verified handle, or NULL */
    const char *error;  /* a message for the XRPC error envelope */
    const char *pds;    /* LOAD_OK: the DID's PDS endpoint, "" when its document names none */
    const char *hold;   /* loader_resolve, LOAD_OK: its #atcr_hold endpoint, "" when none */
    size_t records;     /* a repository listed: the records its listing returned */
    /* The PDS answered 429 (or, for loader_resolve, the PLC directory is parked by its 429:
     * appview/resolver.h): rate_limited 1, and how long it asked to wait in ms (-1 when it
     * did not say). The load failed; it is worth asking again only after that. */
    int rate_limited;
    long retry_after_ms;
} load_result;

/* res and its strings are valid during the call only. */
typedef void (*loader_cb)(const load_result *res, void *ud);

typedef struct {
    const char *prefix;
    unsigned identity_ttl, negative_ttl, record_ttl;
} loader_options;

loader *loader_new(uv_loop_t *loop, cache_client *v, fold *f, resolver *r, http_client *http,
                   const lexicon_set *lexicons, const loader_options *opt);
/* Both return 0 and call cb exactly once later, or -1 (out of memory; cb not called). */
int loader_resolve(loader *l, const char *actor, loader_cb cb, void *ud);
int loader_ensure_repo(loader *l, const char *did, loader_cb cb, void *ud);
/* Folds one record from the DID's PDS (getRecord, at the repository's latest commit), or its
 * absence as a delete: for a record the index has not seen, such as the manifest of a tag that
 * came before it. LOAD_OK once the index holds what the PDS does. */
int loader_fetch_record(loader *l, const char *did, const char *collection, const char *rkey,
                        loader_cb cb, void *ud);
/* loader_ensure_repo for an index known to be stale (a #sync: the repo's history diverged):
 * lists the repo whatever P{D}/complete says, and joins no load already under way (it may
 * have listed the repo before the change). */
int loader_reload_repo(loader *l, const char *did, loader_cb cb, void *ud);
/* Lists a hold's io.atcr.hold.stats records from its #atcr_hold endpoint (hold, as
 * loader_resolve gave it; all pages) and folds each as the firehose does (fold_hold_stats):
 * the backfill's load of a hold. LOAD_OK with records counted once every fold was answered. */
int loader_load_hold_stats(loader *l, const char *did, const char *hold, loader_cb cb, void *ud);
void loader_free(loader *l);

#endif
