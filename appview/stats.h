/* io.atcr.repo.getStats and io.atcr.repo.getStatsHistory: a repository's pull and push counts
 * summed over the holds that serve it (appview/holds.h), next to Docker Hub's pull count
 * (appview/dockerhub.h) with its daily history (appview/history.h).
 *
 * The holds of (did, repository): the holdDid of its indexed manifests, holds that reported
 * counts for it before, and APPVIEW_HOLDS. Each answer is kept as the hold's last known value,
 * shown with status "stale" when the hold is down later. The aggregate is cached for the stats
 * TTL, and concurrent requests for one repository share one fan-out. Keys: cache/SCHEMA.md,
 * "Stats keys". */
#ifndef APPVIEW_STATS_H
#define APPVIEW_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "appview/loader.h"
#include "appview/resolver.h"
#include "atproto/httpd.h"
#include "cache/client.h"

typedef struct stats stats;

typedef struct {
    const char *prefix;
    const char *const *holds; /* APPVIEW_HOLDS */
    size_t nholds;
    int concurrency;      /* APPVIEW_STATS_CONCURRENCY */
    long hold_timeout_ms; /* the whole fan-out, and the wait for Docker Hub */
    unsigned stats_ttl;   /* APPVIEW_STATS_TTL */
    const char *data_dir; /* APPVIEW_DATA_DIR: the history database */
    const char *dockerhub_url, *dockerhub_map;
    int dockerhub_rate, dockerhub_rate_window;
    unsigned refresh_hours;
    bool allow_private;
} stats_options;

/* Registers routes on h and scripts on v (so before cache_start), opens the history
 * database and starts its refresh loop. l may be NULL (no cache-miss loading). NULL on
 * failure (logged). */
stats *stats_new(uv_loop_t *loop, httpd *h, cache_client *v, loader *l, resolver *r,
                 const stats_options *opt);
/* Stops starting work (call before loader_free and cache_free); stats_free after
 * resolver_free, before http_client_free of the resolver's client and httpd_free. */
void stats_stop(stats *s);
void stats_free(stats *s);

#endif
