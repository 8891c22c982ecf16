#include "appview/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "appview/jetstream_wire.h"
#include "atproto/log.h"
#include "atproto/options.h"
#include "atproto/path.h"
#include "atproto/url.h"
#include "cache/valkey.h"

/* Why v is not a URL of one of schemes ("https", ...) with a host and no user, password or
 * fragment, parsed by atproto/url.h's rules; NULL when it is. When path_ok is given, its
 * verdict on the path decides too. A reason url_parse wrote lives in a static buffer until the
 * next call: options are checked one at a time, at start-up. */
static const char *url_shape(const char *v, const char *const *schemes, const char *want,
                             const char *(*path_ok)(const char *path))
{
    static char why[160];
    int known = 0;
    for (; *schemes && !known; schemes++) {
        size_t n = strlen(*schemes);
        known = !strncasecmp(v, *schemes, n) && !strncmp(v + n, "://", 3);
    }
    if (!known) return want;
    url_parts u;
    if (url_parse(v, &u, why, sizeof why) < 0) return why;
    const char *bad = NULL;
    if (!*u.host)
        bad = "no host";
    else if (u.user)
        bad = "no user or password allowed in this URL";
    else if (u.fragment)
        bad = "no #fragment allowed";
    else if (path_ok)
        bad = path_ok(u.path);
    url_parts_free(&u);
    return bad;
}

static const char *check_http_url(const char *v)
{
    static const char *const schemes[] = {"https", "http", NULL};
    return url_shape(v, schemes, "expected an http(s):// URL", NULL);
}

static const char *check_backfill_mode(const char *v)
{
    return !strcmp(v, "off") || !strcmp(v, "once") || !strcmp(v, "auto")
               ? NULL
               : "expected off, once or auto";
}

static const char *check_valkey_url(const char *v)
{
    return valkey_check_url(v);
}

/* Seeds are checked whole when the cluster client is made; here, that there is something. */
static const char *check_cluster_seeds(const char *v)
{
    for (const char *p = v; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return "expected host:port,host:port,... (no spaces)";
    return *v ? NULL : "expected host:port,host:port,...";
}

/* Jetstream's path says which protocol it speaks (appview/jetstream.h); anything else is a
 * typo that would be read as v1 and answered with a 404 forever. */
static const char *jetstream_path(const char *path)
{
    static const char v1[] = "/subscribe", v2[] = "/xrpc/" JETSTREAM_V2_METHOD;
    size_t plen = strlen(path);
    int is_v1 = plen >= strlen(v1) && !strcmp(path + plen - strlen(v1), v1);
    int is_v2 = plen >= strlen(v2) && !strcmp(path + plen - strlen(v2), v2);
    return is_v1 || is_v2 ? NULL
                          : "the path must end in /subscribe (Jetstream v1) or "
                            "/xrpc/network.bsky.jetstream.subscribeEvents (v2)";
}

static const char *check_ws_url(const char *v)
{
    static const char *const schemes[] = {"wss", "ws", NULL};
    return url_shape(v, schemes, "expected a ws:// or wss:// URL", jetstream_path);
}

/* The prefix is pasted in front of keys that carry {did} hash tags; a brace of its own would
 * change which part Valkey Cluster hashes. */
static const char *check_key_prefix(const char *v)
{
    for (const char *p = v; *p; p++)
        if (*p == '{' || *p == '}' || isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return "no braces, spaces or control characters allowed";
    return NULL;
}

#define DAY 86400L
#define YEAR (365 * DAY)

enum {
    O_LISTEN,
    O_VALKEY_URL,
    O_JETSTREAM_URLS,
    O_PLC_URL,
    O_HANDLE_RESOLVER_URL,
    O_DATA_DIR,
    O_DOCKERHUB_URL,
    O_DOCKERHUB_MAP,
    O_DOCKERHUB_RATE,
    O_DOCKERHUB_RATE_WINDOW,
    O_DOCKERHUB_REFRESH_HOURS,
    O_HOLDS,
    O_STATS_CONCURRENCY,
    O_ALLOW_PRIVATE_NETWORKS,
    O_RECORD_TTL,
    O_IDENTITY_TTL,
    O_STATS_TTL,
    O_NEGATIVE_TTL,
    O_KEY_PREFIX,
    O_LEXICON_DIR,
    O_JETSTREAM_STALL_SECONDS,
    O_JETSTREAM_COMPRESS,
    O_CURSOR_REWIND_SECONDS,
    O_INGEST,
    O_INGEST_LEASE_SECONDS,
    O_UPSTREAM_TIMEOUT_MS,
    O_VALKEY_CLUSTER,
    O_VALKEY_WAIT_REPLICAS,
    O_VALKEY_WAIT_TIMEOUT_MS,
    O_RELAY_URL,
    O_BACKFILL,
    O_BACKFILL_CONCURRENCY,
    O_BACKFILL_PER_HOST,
    O_BACKFILL_DIDS_FILE,
    O_LOG_LEVEL,
    O_HTTP,
    O_COUNT = O_HTTP + HTTPD_OPTION_COUNT
};

static const option_spec SPECS[O_COUNT] = {
    [O_LISTEN] = OPT_STR("listen", "APPVIEW_LISTEN", "0.0.0.0:8080", "address to serve XRPC on",
                         options_check_host_port),
    [O_VALKEY_URL] =
        OPT_STR("valkey-url", "APPVIEW_VALKEY_URL", "redis://127.0.0.1:6379/0",
                "Valkey server: redis://HOST:PORT/DB or unix:///PATH", check_valkey_url),
    [O_JETSTREAM_URLS] = OPT_LIST("jetstream-urls", "APPVIEW_JETSTREAM_URLS",
                                  "wss://jetstream1.us-east.bsky.network/subscribe,"
                                  "wss://jetstream2.us-east.bsky.network/subscribe,"
                                  "wss://jetstream1.us-west.bsky.network/subscribe,"
                                  "wss://jetstream2.us-west.bsky.network/subscribe",
                                  "Jetstream endpoints, tried in order", check_ws_url),
    [O_PLC_URL] = OPT_STR("plc-url", "APPVIEW_PLC_URL", "https://plc.directory",
                          "PLC directory for did:plc documents", check_http_url),
    [O_HANDLE_RESOLVER_URL] =
        OPT_STR("handle-resolver-url", "APPVIEW_HANDLE_RESOLVER_URL", NULL,
                "XRPC service asked for resolveHandle when DNS and HTTPS fail", check_http_url),
    [O_DATA_DIR] = OPT_STR("data-dir", "APPVIEW_DATA_DIR", "./var/appview",
                           "directory for the stats history database, created if missing "
                           "(relative: from the working directory)",
                           NULL),
    [O_DOCKERHUB_URL] = OPT_STR("dockerhub-url", "APPVIEW_DOCKERHUB_URL", "https://hub.docker.com",
                                "Docker Hub API base URL", check_http_url),
    [O_DOCKERHUB_MAP] = OPT_STR("dockerhub-map", "APPVIEW_DOCKERHUB_MAP", NULL,
                                "file of 'did/repository = namespace/name' lines", NULL),
    [O_DOCKERHUB_RATE] = OPT_INT("dockerhub-rate", "APPVIEW_DOCKERHUB_RATE", "180",
                                 "Docker Hub requests allowed per rate window", 1, 100000),
    [O_DOCKERHUB_RATE_WINDOW] = OPT_INT("dockerhub-rate-window", "APPVIEW_DOCKERHUB_RATE_WINDOW",
                                        "60", "Docker Hub rate window in seconds", 1, DAY),
    [O_DOCKERHUB_REFRESH_HOURS] =
        OPT_INT("dockerhub-refresh-hours", "APPVIEW_DOCKERHUB_REFRESH_HOURS", "24",
                "hours between Docker Hub re-syncs of an image", 1, 24 * 366),
    [O_HOLDS] = OPT_LIST("holds", "APPVIEW_HOLDS", NULL, "hold DIDs always asked for stats",
                         options_check_did),
    [O_STATS_CONCURRENCY] = OPT_INT("stats-concurrency", "APPVIEW_STATS_CONCURRENCY", "8",
                                    "holds asked at once for one getStats", 1, 256),
    [O_ALLOW_PRIVATE_NETWORKS] =
        OPT_BOOL("allow-private-networks", "APPVIEW_ALLOW_PRIVATE_NETWORKS", "off",
                 "allow loopback/private hosts and plain http upstream (local test networks)"),
    [O_RECORD_TTL] =
        OPT_INT("record-ttl", "APPVIEW_RECORD_TTL", "3600", "seconds cached records live", 1, YEAR),
    [O_IDENTITY_TTL] = OPT_INT("identity-ttl", "APPVIEW_IDENTITY_TTL", "3600",
                               "seconds resolved identities live", 1, YEAR),
    [O_STATS_TTL] =
        OPT_INT("stats-ttl", "APPVIEW_STATS_TTL", "300", "seconds aggregated stats live", 1, YEAR),
    [O_NEGATIVE_TTL] = OPT_INT("negative-ttl", "APPVIEW_NEGATIVE_TTL", "60",
                               "seconds a not-found answer is remembered", 1, YEAR),
    [O_KEY_PREFIX] = OPT_STR("key-prefix", "APPVIEW_KEY_PREFIX",
                             "atcr:", "prefix of every Valkey key", check_key_prefix),
    [O_LEXICON_DIR] =
        OPT_STR("lexicon-dir", "APPVIEW_LEXICON_DIR", "./lexicons",
                "directory of lexicon JSON files records are validated against (relative: from "
                "the working directory)",
                NULL),
    [O_JETSTREAM_STALL_SECONDS] =
        OPT_INT("jetstream-stall-seconds", "APPVIEW_JETSTREAM_STALL_SECONDS", "30",
                "silence after which a Jetstream socket is replaced", 1, 3600),
    [O_JETSTREAM_COMPRESS] =
        OPT_BOOL("jetstream-compress", "APPVIEW_JETSTREAM_COMPRESS", "on",
                 "v2: dict-zstd frames where the server serves a dictionary (off: plain JSON)"),
    [O_CURSOR_REWIND_SECONDS] =
        OPT_INT("cursor-rewind-seconds", "APPVIEW_CURSOR_REWIND_SECONDS", "5",
                "how far before a saved time cursor to resume (a seq resumes exactly)", 0, 3600),
    [O_INGEST] = OPT_BOOL("ingest", "APPVIEW_INGEST", "on",
                          "whether this replica may read the firehose (off: serve reads only)"),
    [O_INGEST_LEASE_SECONDS] =
        OPT_INT("ingest-lease-seconds", "APPVIEW_INGEST_LEASE_SECONDS", "10",
                "lease electing the one ingesting replica: a standby takes over this long "
                "after the ingester stopped renewing it",
                1, 600),
    [O_UPSTREAM_TIMEOUT_MS] = OPT_INT("upstream-timeout-ms", "APPVIEW_UPSTREAM_TIMEOUT_MS", "10000",
                                      "total time allowed for one upstream HTTP call", 100, 600000),
    [O_VALKEY_CLUSTER] =
        OPT_STR("valkey-cluster", "APPVIEW_VALKEY_CLUSTER", NULL,
                "Valkey Cluster seed nodes, host:port,... (a password as in --valkey-url: "
                "redis://:PASSWORD@host:port); when set, used instead of --valkey-url",
                check_cluster_seeds),
    [O_VALKEY_WAIT_REPLICAS] =
        OPT_INT("valkey-wait-replicas", "APPVIEW_VALKEY_WAIT_REPLICAS", "-1",
                "replicas that must confirm the index writes before the cursor moves past them "
                "(WAIT; fewer when a primary has fewer); -1: 1 on a cluster, 0 on one server",
                -1, 16),
    [O_VALKEY_WAIT_TIMEOUT_MS] = OPT_INT(
        "valkey-wait-timeout-ms", "APPVIEW_VALKEY_WAIT_TIMEOUT_MS", "1000",
        "how long the replicas get to confirm; past it ingest pauses and writes again", 10, 4000),
    [O_RELAY_URL] = OPT_STR("relay", "APPVIEW_RELAY_URL", "https://relay1.us-east.bsky.network",
                            "relay asked for com.atproto.sync.listReposByCollection (backfill)",
                            check_http_url),
    [O_BACKFILL] = OPT_STR("backfill", "APPVIEW_BACKFILL", "off",
                           "off, once (one pass per index, resumed after restarts) or auto (also "
                           "after a schema change or a firehose gap)",
                           check_backfill_mode),
    [O_BACKFILL_CONCURRENCY] = OPT_INT("backfill-concurrency", "APPVIEW_BACKFILL_CONCURRENCY", "8",
                                       "DIDs the backfill resolves or loads at once", 1, 256),
    [O_BACKFILL_PER_HOST] = OPT_INT("backfill-per-host", "APPVIEW_BACKFILL_PER_HOST", "4",
                                    "DIDs the backfill loads at once from one PDS", 1, 256),
    [O_BACKFILL_DIDS_FILE] =
        OPT_STR("dids", "APPVIEW_BACKFILL_DIDS_FILE", NULL,
                "file of DIDs (one a line) the backfill loads instead of asking the relay", NULL),
    [O_LOG_LEVEL] = OPT_STR("log-level", "LOG_LEVEL", "info",
                            "least important log lines shown: debug, info, warn or error",
                            options_check_log_level),
    [O_HTTP] = HTTPD_OPTIONS("APPVIEW"),
};

static void free_list(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

void appview_config_free(appview_config *c)
{
    free(c->listen);
    free(c->valkey_url);
    free(c->valkey_cluster);
    free_list(c->jetstream_urls, c->njetstream_urls);
    free(c->plc_url);
    free(c->handle_resolver_url);
    free(c->data_dir);
    free(c->dockerhub_url);
    free(c->dockerhub_map);
    free_list(c->holds, c->nholds);
    free(c->key_prefix);
    free(c->lexicon_dir);
    free(c->relay_url);
    free(c->backfill);
    free(c->backfill_dids_file);
    memset(c, 0, sizeof *c);
}

int appview_config_load(appview_config *c, int argc, char **argv)
{
    option_value v[O_COUNT];
    memset(c, 0, sizeof *c);
    int rc = options_parse("appview", APPVIEW_VERSION,
                           "Indexes io.atcr.* records from the Jetstream firehose into Valkey and "
                           "serves them over XRPC.\n"
                           "`appview backfill [options]` runs one backfill pass in the foreground "
                           "(--relay URL or --dids FILE) and exits: 0 when every DID was loaded.",
                           SPECS, O_COUNT, v, argc, argv);
    if (rc != 0) return rc;
    c->listen = option_take_str(&v[O_LISTEN]);
    c->valkey_url = option_take_str(&v[O_VALKEY_URL]);
    c->jetstream_urls = option_take_list(&v[O_JETSTREAM_URLS], &c->njetstream_urls);
    c->plc_url = option_take_str(&v[O_PLC_URL]);
    c->handle_resolver_url = option_take_str(&v[O_HANDLE_RESOLVER_URL]);
    c->data_dir = option_take_str(&v[O_DATA_DIR]);
    c->dockerhub_url = option_take_str(&v[O_DOCKERHUB_URL]);
    c->dockerhub_map = option_take_str(&v[O_DOCKERHUB_MAP]);
    c->dockerhub_rate = (int)v[O_DOCKERHUB_RATE].num;
    c->dockerhub_rate_window = (int)v[O_DOCKERHUB_RATE_WINDOW].num;
    c->dockerhub_refresh_hours = (int)v[O_DOCKERHUB_REFRESH_HOURS].num;
    c->holds = option_take_list(&v[O_HOLDS], &c->nholds);
    c->stats_concurrency = (int)v[O_STATS_CONCURRENCY].num;
    c->allow_private_networks = v[O_ALLOW_PRIVATE_NETWORKS].num;
    c->record_ttl = (int)v[O_RECORD_TTL].num;
    c->identity_ttl = (int)v[O_IDENTITY_TTL].num;
    c->stats_ttl = (int)v[O_STATS_TTL].num;
    c->negative_ttl = (int)v[O_NEGATIVE_TTL].num;
    c->key_prefix = option_take_str(&v[O_KEY_PREFIX]);
    c->lexicon_dir = option_take_str(&v[O_LEXICON_DIR]);
    c->jetstream_stall_seconds = (int)v[O_JETSTREAM_STALL_SECONDS].num;
    c->jetstream_compress = v[O_JETSTREAM_COMPRESS].num;
    c->cursor_rewind_seconds = (int)v[O_CURSOR_REWIND_SECONDS].num;
    c->ingest = v[O_INGEST].num;
    c->ingest_lease_seconds = (int)v[O_INGEST_LEASE_SECONDS].num;
    c->upstream_timeout_ms = (int)v[O_UPSTREAM_TIMEOUT_MS].num;
    c->valkey_cluster = option_take_str(&v[O_VALKEY_CLUSTER]);
    c->valkey_wait_replicas = (int)v[O_VALKEY_WAIT_REPLICAS].num;
    if (c->valkey_wait_replicas < 0) c->valkey_wait_replicas = c->valkey_cluster ? 1 : 0;
    c->valkey_wait_timeout_ms = (int)v[O_VALKEY_WAIT_TIMEOUT_MS].num;
    c->relay_url = option_take_str(&v[O_RELAY_URL]);
    c->backfill = option_take_str(&v[O_BACKFILL]);
    c->backfill_concurrency = (int)v[O_BACKFILL_CONCURRENCY].num;
    c->backfill_per_host = (int)v[O_BACKFILL_PER_HOST].num;
    c->backfill_dids_file = option_take_str(&v[O_BACKFILL_DIDS_FILE]);
    log_level_from_name(v[O_LOG_LEVEL].str, &c->log_level);
    httpd_limits_from_options(&c->http, &v[O_HTTP]);
    options_free(v, O_COUNT);
    if (c->ingest && !c->njetstream_urls) {
        fprintf(stderr, "appview: --jetstream-urls (APPVIEW_JETSTREAM_URLS) is empty but ingest "
                        "is on (set --ingest=off for a read-only replica)\n");
        appview_config_free(c);
        return -1;
    }
    return 0;
}

/* Prints "appview: --flag (ENV) 'value' is PATH: CAUSE; REMEDY" and returns -1. */
static int path_error(const char *flag, const char *env, const char *value, const char *path,
                      const char *cause, const char *remedy)
{
    fprintf(stderr, "appview: --%s (%s) '%s' is %s: %s; %s\n", flag, env, value, path, cause,
            remedy);
    return -1;
}

int appview_config_prepare_paths(appview_config *c)
{
    char *lexicons = path_absolute(c->lexicon_dir);
    char *data = path_absolute(c->data_dir);
    int rc = 0, err = 0;
    struct stat st;
    char failed[4096];
    if (lexicons) err = stat(lexicons, &st) < 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
    if (!lexicons || !data) {
        fprintf(stderr, "appview: cannot tell the working directory: %s\n", strerror(errno));
        rc = -1;
    } else if (err) {
        rc = path_error("lexicon-dir", "APPVIEW_LEXICON_DIR", c->lexicon_dir, lexicons,
                        strerror(err),
                        "relative paths start from the working directory: run from the "
                        "repository, or set it to the lexicons/ directory");
    } else if (path_make_dirs(data, failed, sizeof failed) < 0) {
        char cause[4200];
        snprintf(cause, sizeof cause, "cannot create %s: %s", failed, strerror(errno));
        rc = path_error("data-dir", "APPVIEW_DATA_DIR", c->data_dir, data, cause,
                        "create it with write access for this user, or choose another");
    }
    if (rc == 0) {
        free(c->lexicon_dir);
        free(c->data_dir);
        c->lexicon_dir = lexicons;
        c->data_dir = data;
    } else {
        free(lexicons);
        free(data);
    }
    return rc;
}
