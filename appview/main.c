/* bin/appview: follows Jetstream into Valkey (appview/ingest.h) and answers XRPC queries;
 * `appview backfill` runs one backfill pass (appview/backfill.h) in the foreground. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "appview/backfill.h"
#include "appview/config.h"
#include "appview/fold.h"
#include "appview/ingest.h"
#include "appview/loader.h"
#include "appview/reads.h"
#include "appview/resolver.h"
#include "appview/stats.h"
#include "atproto/http_client.h"
#include "atproto/buf.h"
#include "atproto/drain.h"
#include "atproto/httpd.h"
#include "atproto/json_pool.h"
#include "atproto/lexicon.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/redact.h"
#include "cache/client.h"

#define DRAIN_TIMEOUT_MS 10000

typedef struct {
    appview_config cfg;
    uv_loop_t *loop;
    lexicon_set *lexicons;
    cache_client *v;
    fold *f;
    ingest *in;
    http_client *upstream;
    resolver *identities;
    loader *ld;
    reads *rd;
    stats *st;
    httpd *http;
    backfill *bf;
    int command; /* `appview backfill`: no ingest, no server; exit_status says how it went */
    int exit_status;
} app;

static void on_request_backfill(void *ud, const char *reason)
{
    app *a = ud;
    if (a->bf) backfill_request(a->bf, reason);
}

/* The command's pass ended: leave the loop the way SIGTERM does. */
static void on_backfill_done(void *ud, int status)
{
    app *a = ud;
    a->exit_status = status;
    uv_kill(getpid(), SIGTERM);
}

static bf_mode backfill_mode(const app *a)
{
    if (a->command) return BF_COMMAND;
    if (!strcmp(a->cfg.backfill, "auto")) return BF_AUTO;
    return !strcmp(a->cfg.backfill, "once") ? BF_ONCE : BF_OFF;
}

/* The operator chose a log level, by flag or environment. */
static int log_level_chosen(int argc, char **argv)
{
    const char *env = getenv("LOG_LEVEL");
    if (env && *env) return 1;
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--log-level", 11)) return 1;
    return 0;
}

static void on_valkey_state(int up, void *ud)
{
    app *a = ud;
    if (a->in) ingest_on_valkey_state(a->in, up);
    if (a->bf) backfill_on_valkey_state(a->bf, up);
}

static int json_str(buf *out, const char *s)
{
    return buf_json_string(out, s, strlen(s));
}

/* Seconds with millisecond precision; null for the negative "no value". */
static int json_seconds(buf *out, double seconds)
{
    return seconds < 0 ? buf_puts(out, "null") : buf_printf(out, "%.3f", seconds);
}

/* Appends one entry to the "problems" array; 0, or nonzero when out of memory. */
static int problem(buf *out, int *n, const char *why)
{
    return ((*n)++ ? buf_puts(out, ",") : 0) | json_str(out, why);
}

/* _health tells a load balancer the truth: 200 "ok" while this replica does its job; 503
 * "down" while Valkey is not ready (reads fail), 503 "degraded" while this replica holds the
 * ingest lease without a Jetstream connection for longer than the stall period, or while
 * Valkey refuses its writes (reads work, the index goes stale). "problems" says why, in
 * words. */
static void health(httpd_req *r, void *ud)
{
    app *a = ud;
    int up = cache_ready(a->v);
    double without_stream = a->in ? ingest_stream_down_seconds(a->in) : 0;
    int stale = without_stream > a->cfg.jetstream_stall_seconds;
    /* Writes refused (out of memory, ...): the ingester is paused until Valkey takes them. */
    const char *refusal = a->in ? ingest_refusal(a->in) : NULL;
    int degraded = stale || refusal != NULL;
    const char *valkey_error = cache_problem(a->v);
    const char *stream_error = a->in ? ingest_stream_error(a->in) : "";
    buf out = {0};
    int rc =
        buf_printf(&out, "{\"version\":\"%s\",\"status\":\"%s\",\"problems\":[", APPVIEW_VERSION,
                   !up        ? "down"
                   : degraded ? "degraded"
                              : "ok");
    int nproblems = 0;
    if (!up) {
        char why[400];
        snprintf(why, sizeof why, "Valkey is not ready: %s",
                 *valkey_error ? valkey_error : "connecting");
        rc |= problem(&out, &nproblems, why);
    }
    if (refusal) {
        char why[400];
        snprintf(why, sizeof why, "Valkey refuses the ingester's writes, ingest paused: %s",
                 refusal);
        rc |= problem(&out, &nproblems, why);
    }
    if (stale) {
        char why[600];
        snprintf(why, sizeof why,
                 "holding the ingest lease without a Jetstream connection for %.1f s%s%s",
                 without_stream, *stream_error ? ": " : "", stream_error);
        rc |= problem(&out, &nproblems, why);
    }
    rc |= buf_printf(&out, "],\"valkey\":{\"up\":%s,\"latencyP99Ms\":%.3f,\"error\":",
                     up ? "true" : "false", cache_latency_p99(a->v) * 1e3);
    rc |= json_str(&out, valkey_error);
    if (refusal) {
        rc |= buf_puts(&out, ",\"writesRefused\":");
        rc |= json_str(&out, refusal);
    }
    rc |= buf_puts(&out, "}");
    if (a->bf) {
        rc |= buf_puts(&out, ",");
        rc |= backfill_health_json(a->bf, &out);
    }
    if (a->in) {
        rc |= buf_printf(&out, ",\"jetstream\":{\"leader\":%s,\"connected\":%s,\"url\":",
                         ingest_leader(a->in) ? "true" : "false",
                         ingest_connected(a->in) ? "true" : "false");
        rc |= json_str(&out, ingest_url(a->in));
        rc |= buf_puts(&out, ",\"error\":");
        rc |= json_str(&out, stream_error);
        rc |= buf_printf(
            &out, ",\"cursor\":%llu,\"lagSeconds\":", (unsigned long long)ingest_cursor(a->in));
        rc |= json_seconds(&out, ingest_lag_seconds(a->in));
        rc |= buf_printf(
            &out, ",\"secondsWithoutStream\":%.3f,\"lastMessageAgeSeconds\":", without_stream);
        rc |= json_seconds(&out, ingest_last_message_age(a->in));
        rc |= ingest_health_json(a->in, &out);
        rc |= buf_puts(&out, "}}");
    } else {
        rc |= buf_puts(&out, ",\"jetstream\":null}");
    }
    if (rc)
        httpd_reply_error(r, 500, "InternalServerError", "out of memory");
    else
        httpd_reply_json(r, up && !degraded ? 200 : 503, out.data, out.len);
    buf_free(&out);
}

static void metrics_page(httpd_req *r, void *ud)
{
    buf out = {0};
    metrics_render(&out);
    httpd_reply(r, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len);
    buf_free(&out);
}

/* SIGTERM: stop taking requests and reading the stream, let writes in flight be acknowledged
 * and the cursor saved, then leave the loop (atproto/drain.h). */
static void drain_begin(void *ud, int signum)
{
    app *a = ud;
    log_info("appview", "signal %d: draining", signum);
    if (a->http) httpd_stop(a->http);
    if (a->in) ingest_stop(a->in);
    if (a->bf) backfill_stop(a->bf);
}

static int drain_idle(void *ud)
{
    app *a = ud;
    return (!a->http || httpd_inflight(a->http) == 0) && (!a->in || ingest_idle(a->in)) &&
           (!a->bf || backfill_idle(a->bf));
}

/* Logs that a step that reports nothing itself failed; returns -1 for start()'s tail calls. */
static int cannot_set_up(const char *what)
{
    log_error("appview", "cannot set up %s (out of memory)", what);
    return -1;
}

static int start(app *a)
{
    /* The address first: a port that cannot be bound stops start-up before the lease is
     * asked for or the stream is read. The backfill command serves nothing. */
    httpd_options ho = {.listen = a->cfg.listen,
                        .max_body = 64 * 1024,
                        .name = "appview",
                        .setting = "--listen, APPVIEW_LISTEN",
                        .limits = a->cfg.http};
    if (!a->command && !(a->http = httpd_new(a->loop, &ho))) return -1;
    char err[512];
    a->lexicons = lexicon_load_dir(a->cfg.lexicon_dir, err, sizeof err);
    if (!a->lexicons) {
        log_error("appview", "lexicons in %s (--lexicon-dir, APPVIEW_LEXICON_DIR): %s",
                  a->cfg.lexicon_dir, err);
        return -1;
    }
    cache_options vo = {.url = a->cfg.valkey_url,
                        .cluster = a->cfg.valkey_cluster,
                        .wait_replicas = (unsigned)a->cfg.valkey_wait_replicas,
                        .wait_timeout_ms = (unsigned)a->cfg.valkey_wait_timeout_ms,
                        .on_state = on_valkey_state,
                        .state_ud = a,
                        .setting = a->cfg.valkey_cluster
                                       ? "--valkey-cluster, APPVIEW_VALKEY_CLUSTER"
                                       : "--valkey-url, APPVIEW_VALKEY_URL"};
    a->v = cache_new(a->loop, &vo);
    if (!a->v) return -1;
    fold_options fo = {.prefix = a->cfg.key_prefix};
    a->f = fold_new(a->v, &fo);
    if (!a->f) return cannot_set_up("the fold scripts");
    /* Addresses from DID documents are untrusted: private ones, and plain http, only when the
     * operator allows them (a local test network). */
    http_client_options hco = {.timeout_ms = a->cfg.upstream_timeout_ms,
                               .allow_private = a->cfg.allow_private_networks,
                               .allow_http = a->cfg.allow_private_networks};
    a->upstream = http_client_new(a->loop, &hco);
    if (!a->upstream) return cannot_set_up("the HTTP client");
    resolver_options ro = {.plc_url = a->cfg.plc_url,
                           .handle_resolver_url = a->cfg.handle_resolver_url,
                           .allow_private = a->cfg.allow_private_networks};
    a->identities = resolver_new(a->loop, a->upstream, &ro);
    if (!a->identities) return cannot_set_up("the identity resolver");
    loader_options lo = {.prefix = a->cfg.key_prefix,
                         .identity_ttl = (unsigned)a->cfg.identity_ttl,
                         .negative_ttl = (unsigned)a->cfg.negative_ttl,
                         .record_ttl = (unsigned)a->cfg.record_ttl};
    a->ld = loader_new(a->loop, a->v, a->f, a->identities, a->upstream, a->lexicons, &lo);
    if (!a->ld) return cannot_set_up("the loader");
    if (a->cfg.ingest && !a->command) {
        ingest_options io = {.urls = (const char *const *)a->cfg.jetstream_urls,
                             .nurls = a->cfg.njetstream_urls,
                             .prefix = a->cfg.key_prefix,
                             .stall_seconds = (unsigned)a->cfg.jetstream_stall_seconds,
                             .rewind_seconds = (unsigned)a->cfg.cursor_rewind_seconds,
                             .no_compression = !a->cfg.jetstream_compress,
                             .lease_ms = (unsigned)a->cfg.ingest_lease_seconds * 1000u,
                             .record_ttl = (unsigned)a->cfg.record_ttl,
                             .request_backfill = on_request_backfill,
                             .request_backfill_ud = a};
        a->in = ingest_new(a->loop, a->v, a->f, a->ld, a->upstream, a->lexicons, &io);
        if (!a->in) return cannot_set_up("ingest");
    }
    backfill_options bo = {.mode = backfill_mode(a),
                           .prefix = a->cfg.key_prefix,
                           .relay_url = a->cfg.relay_url,
                           .dids_file = a->cfg.backfill_dids_file,
                           .concurrency = (unsigned)a->cfg.backfill_concurrency,
                           .per_host = (unsigned)a->cfg.backfill_per_host,
                           .lease_ms = (unsigned)a->cfg.ingest_lease_seconds * 1000u,
                           .progress_bar = a->command && isatty(STDERR_FILENO),
                           .on_done = on_backfill_done,
                           .ud = a};
    a->bf = backfill_new(a->loop, a->v, a->ld, a->upstream, &bo);
    if (!a->bf) return cannot_set_up("the backfill");
    if (a->command) {
        cache_start(a->v);
        return 0;
    }
    reads_options rdo = {.prefix = a->cfg.key_prefix};
    a->rd = reads_new(a->http, a->v, a->ld, &rdo);
    if (!a->rd) return -1;
    stats_options so = {.prefix = a->cfg.key_prefix,
                        .holds = (const char *const *)a->cfg.holds,
                        .nholds = a->cfg.nholds,
                        .concurrency = a->cfg.stats_concurrency,
                        .hold_timeout_ms = a->cfg.upstream_timeout_ms,
                        .stats_ttl = (unsigned)a->cfg.stats_ttl,
                        .data_dir = a->cfg.data_dir,
                        .dockerhub_url = a->cfg.dockerhub_url,
                        .dockerhub_map = a->cfg.dockerhub_map,
                        .dockerhub_rate = a->cfg.dockerhub_rate,
                        .dockerhub_rate_window = a->cfg.dockerhub_rate_window,
                        .refresh_hours = (unsigned)a->cfg.dockerhub_refresh_hours,
                        .allow_private = a->cfg.allow_private_networks};
    a->st = stats_new(a->loop, a->http, a->v, a->ld, a->identities, &so);
    if (!a->st) return -1;
    if (httpd_route(a->http, "GET", "/xrpc/_health", health, a) < 0 ||
        httpd_route(a->http, "GET", "/metrics", metrics_page, a) < 0)
        return cannot_set_up("the routes");
    cache_start(a->v);
    return 0;
}

static void stop(app *a)
{
    /* Stats and the loader stop starting work first; then Valkey, whose failing commands run
     * loader, fold, ingest and reads callbacks, which must still find their state; then the network
     * clients, whose cancelled requests finish the loader's last callbacks. */
    stats_stop(a->st);
    if (a->ld) loader_free(a->ld);
    if (a->v) cache_free(a->v);
    if (a->identities) resolver_free(a->identities);
    stats_free(a->st);
    if (a->upstream) http_client_free(a->upstream);
    backfill_free(a->bf);
    if (a->rd) reads_free(a->rd);
    if (a->in) ingest_free(a->in);
    if (a->f) fold_free(a->f);
    if (a->http)
        httpd_free(a->http); /* runs the loop until every handle is closed */
    else
        uv_run(a->loop, UV_RUN_DEFAULT);
    lexicon_free(a->lexicons);
}

int main(int argc, char **argv)
{
    json_pool_install();   /* before any jansson value exists */
    drain_block_signals(); /* before any thread starts (atproto/drain.h) */
    signal(SIGPIPE, SIG_IGN);
    app a;
    memset(&a, 0, sizeof a);
    a.command = argc > 1 && !strcmp(argv[1], "backfill");
    a.exit_status = 130; /* the command interrupted before its pass ended */
    int rc = appview_config_load(&a.cfg, argc - a.command, argv + a.command);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (appview_config_prepare_paths(&a.cfg) < 0) {
        appview_config_free(&a.cfg);
        return 2;
    }
    log_set_level(a.cfg.log_level);
    /* A progress bar says what a line per DID would: on a terminal, warnings only. */
    if (a.command && isatty(STDERR_FILENO) && !log_level_chosen(argc, argv))
        log_set_level(LOG_WARN);
    a.loop = uv_default_loop();
    srand((unsigned)uv_hrtime());

    drain_options dro = {.component = "appview",
                         .begin = drain_begin,
                         .idle = drain_idle,
                         .ud = &a,
                         .tick_ms = 20,
                         .timeout_ms = DRAIN_TIMEOUT_MS};
    rc = start(&a);
    if (rc == 0 && drain_watch(a.loop, &dro) < 0) rc = cannot_set_up("signal handling");
    if (rc < 0) {
        stop(&a);
        appview_config_free(&a.cfg);
        metrics_free_all();
        return 1;
    }
    /* Seeds may carry a password as the URL does (redis://:PASSWORD@host:port,...). */
    char valkey_shown[512];
    redact_url_list(a.cfg.valkey_cluster ? a.cfg.valkey_cluster : a.cfg.valkey_url, valkey_shown,
                    sizeof valkey_shown);
    const char *valkey_kind = a.cfg.valkey_cluster ? "Cluster, seeds " : "";
    if (a.command)
        log_info("appview", "version %s: backfill from %s into Valkey %s%s", APPVIEW_VERSION,
                 a.cfg.backfill_dids_file ? a.cfg.backfill_dids_file : a.cfg.relay_url, valkey_kind,
                 valkey_shown);
    else
        log_info("appview",
                 "version %s: listening on %s (port %d), Valkey %s%s, ingest %s, backfill %s",
                 APPVIEW_VERSION, a.cfg.listen, httpd_port(a.http), valkey_kind, valkey_shown,
                 a.cfg.ingest ? "on" : "off", a.cfg.backfill);

    uv_run(a.loop, UV_RUN_DEFAULT);

    stop(&a);
    rc = uv_loop_close(a.loop) == 0 ? 0 : 1;
    if (rc) log_warn("appview", "event loop closed with handles still open");
    if (a.command && !rc) rc = a.exit_status;
    appview_config_free(&a.cfg);
    metrics_free_all();
    log_info("appview", "stopped");
    return rc;
}
