/* bin/appview configuration: flags (--listen, --valkey-url, ...) override APPVIEW_* environment
 * variables, which override the defaults below. Every value is validated at load. */
#ifndef APPVIEW_CONFIG_H
#define APPVIEW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "atproto/httpd.h"
#include "atproto/log.h"

#define APPVIEW_VERSION "0.1.0"

typedef struct {
    char *listen;          /* APPVIEW_LISTEN, host:port, default 0.0.0.0:8080 */
    char *valkey_url;      /* APPVIEW_VALKEY_URL, redis://host:port/db or unix:///path */
    char **jetstream_urls; /* APPVIEW_JETSTREAM_URLS, ws:// or wss://, tried in order */
    size_t njetstream_urls;
    char *plc_url;               /* APPVIEW_PLC_URL, default https://plc.directory */
    char *handle_resolver_url;   /* APPVIEW_HANDLE_RESOLVER_URL; NULL: none */
    char *data_dir;              /* APPVIEW_DATA_DIR, default ./var/appview */
    char *dockerhub_url;         /* APPVIEW_DOCKERHUB_URL, default https://hub.docker.com */
    char *dockerhub_map;         /* APPVIEW_DOCKERHUB_MAP, a file path; NULL: none */
    int dockerhub_rate;          /* APPVIEW_DOCKERHUB_RATE, requests per window, default 180 */
    int dockerhub_rate_window;   /* APPVIEW_DOCKERHUB_RATE_WINDOW, seconds, default 60 */
    int dockerhub_refresh_hours; /* APPVIEW_DOCKERHUB_REFRESH_HOURS, default 24 */
    char **holds;                /* APPVIEW_HOLDS, hold DIDs always asked for stats */
    size_t nholds;
    int stats_concurrency;       /* APPVIEW_STATS_CONCURRENCY, default 8 */
    bool allow_private_networks; /* APPVIEW_ALLOW_PRIVATE_NETWORKS, default off */
    int record_ttl;              /* APPVIEW_RECORD_TTL, seconds, default 3600 */
    int identity_ttl;            /* APPVIEW_IDENTITY_TTL, seconds, default 3600 */
    int stats_ttl;               /* APPVIEW_STATS_TTL, seconds, default 300 */
    int negative_ttl;            /* APPVIEW_NEGATIVE_TTL, seconds, default 60 */
    char *key_prefix;            /* APPVIEW_KEY_PREFIX, default atcr: */
    char *lexicon_dir;           /* APPVIEW_LEXICON_DIR, default ./lexicons */
    int jetstream_stall_seconds; /* APPVIEW_JETSTREAM_STALL_SECONDS, default 30 */
    bool jetstream_compress;     /* APPVIEW_JETSTREAM_COMPRESS: v2 dict-zstd, default on */
    int cursor_rewind_seconds;   /* APPVIEW_CURSOR_REWIND_SECONDS, default 5 */
    bool ingest;                 /* APPVIEW_INGEST: this replica reads the firehose, default on */
    int ingest_lease_seconds;    /* APPVIEW_INGEST_LEASE_SECONDS, default 10 */
    int upstream_timeout_ms;     /* APPVIEW_UPSTREAM_TIMEOUT_MS, default 10000 */
    char *valkey_cluster;        /* APPVIEW_VALKEY_CLUSTER, seed nodes; NULL: valkey_url */
    int valkey_wait_replicas;    /* APPVIEW_VALKEY_WAIT_REPLICAS: 1 on a cluster, else 0 */
    int valkey_wait_timeout_ms;  /* APPVIEW_VALKEY_WAIT_TIMEOUT_MS, default 1000 */
    char *relay_url;             /* APPVIEW_RELAY_URL: listReposByCollection for the backfill */
    char *backfill;              /* APPVIEW_BACKFILL: off (default), once or auto */
    int backfill_concurrency;    /* APPVIEW_BACKFILL_CONCURRENCY, default 8 */
    int backfill_per_host;       /* APPVIEW_BACKFILL_PER_HOST, default 4 */
    char *backfill_dids_file;    /* APPVIEW_BACKFILL_DIDS_FILE; NULL: ask the relay */
    enum log_level log_level;    /* LOG_LEVEL, default info */
    httpd_limits http;           /* APPVIEW_HTTP_*: deadlines and caps of the XRPC server */
} appview_config;

/* Returns 0 when ready, 1 when --help or --version was printed, -1 on a bad value (one line on
 * stderr naming the flag, the variable, the value and why). Only on 0 does c need
 * appview_config_free. Touches no file. */
int appview_config_load(appview_config *c, int argc, char **argv);
/* Makes lexicon_dir and data_dir absolute (against the working directory), checks that the
 * lexicon directory exists and creates the data directory. 0, or -1 after one line on stderr
 * naming the setting, the path, the cause and what to do. */
int appview_config_prepare_paths(appview_config *c);
void appview_config_free(appview_config *c);

#endif
