/* The XRPC read API of the appview: io.atcr.repo.listRepositories, listTags, getManifest and
 * listRecent, answered from Valkey (cache/SCHEMA.md) with one read script per request, and from
 * the network through the loader when a DID's index is not complete.
 *
 * Actors may be DIDs or handles. Without a loader (ingest-only mode) Valkey is all there is:
 * a handle must be cached (P handle:<h> confirmed by P{D}/id), and lists are served as they are.
 * With a loader, an incomplete index is completed first; when the network fails, a partial
 * list is served with "stale": true rather than an error. */
#ifndef APPVIEW_READS_H
#define APPVIEW_READS_H

#include "appview/loader.h"
#include "atproto/httpd.h"
#include "cache/client.h"

typedef struct reads reads;

typedef struct {
    const char *prefix; /* key prefix, e.g. "atcr:" */
} reads_options;

/* Registers the routes on h and the read scripts on v, so call it before cache_start.
 * l may be NULL: serve from Valkey only. NULL on failure (logged). */
reads *reads_new(httpd *h, cache_client *v, loader *l, const reads_options *opt);
/* After cache_free and loader_free: their pending callbacks still refer to it. */
void reads_free(reads *r);

#endif
