/* bin/hold: durable pull/push counters served over XRPC (see hold/store.h, hold/api.h). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "atproto/drain.h"
#include "atproto/httpd.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "hold/api.h"
#include "hold/config.h"
#include "hold/records.h"
#include "hold/store.h"

typedef struct {
    uv_loop_t *loop;
    httpd *http;
    store *st;
} app;

/* SIGTERM: stop accepting, then wait until every request in flight is answered, which for
 * increments means committed, before the store closes (atproto/drain.h). */
static void drain_begin(void *ud, int signum)
{
    app *a = ud;
    log_info("hold", "signal %d: draining %u requests in flight", signum, httpd_inflight(a->http));
    httpd_stop(a->http);
}

static int drain_idle(void *ud)
{
    app *a = ud;
    return httpd_inflight(a->http) == 0 && store_pending(a->st) == 0;
}

int main(int argc, char **argv)
{
    drain_block_signals(); /* before any thread starts (atproto/drain.h) */
    signal(SIGPIPE, SIG_IGN);
    hold_config cfg;
    int rc = hold_config_load(&cfg, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (hold_config_prepare_paths(&cfg) < 0) {
        hold_config_free(&cfg);
        return 2;
    }
    log_set_level(cfg.log_level);

    /* The address first: a port that cannot be bound stops start-up before anything else. */
    app a = {.loop = uv_default_loop()};
    httpd_options ho = {.listen = cfg.listen,
                        .max_body = HOLD_MAX_BODY,
                        .name = "hold",
                        .setting = "--listen, HOLD_LISTEN",
                        .limits = cfg.http};
    a.http = httpd_new(a.loop, &ho);
    hold_api api;
    memset(&api, 0, sizeof api);
    char err[1024];
    if (a.http && !(a.st = store_open(a.loop, cfg.db, hold_api_on_commit, NULL, err, sizeof err)))
        log_error("hold", "cannot open the database %s (--db, HOLD_DB): %s", cfg.db, err);
    drain_options dro = {
        .component = "hold", .begin = drain_begin, .idle = drain_idle, .ud = &a, .tick_ms = 10};
    int ready = a.st != NULL; /* store_open and httpd_new log why they failed */
    if (ready && (hold_api_init(&api, &cfg, a.st) < 0 || hold_api_routes(&api, a.http) < 0 ||
                  hold_records_routes(&api, a.http) < 0 || drain_watch(a.loop, &dro) < 0)) {
        log_error("hold", "cannot set up the service (out of memory)");
        ready = 0;
    }
    if (!ready) {
        if (a.st) store_close(a.st);
        if (a.http) httpd_free(a.http);
        uv_run(a.loop, UV_RUN_DEFAULT);
        hold_api_free(&api);
        hold_config_free(&cfg);
        metrics_free_all();
        return 1;
    }
    log_info("hold", "serving %s on port %d, public %s, db %s", cfg.did, httpd_port(a.http),
             cfg.public_url, cfg.db);

    uv_run(a.loop, UV_RUN_DEFAULT);

    /* The store first: its wake-up handle would keep httpd_free's loop run from returning. */
    store_close(a.st);
    httpd_free(a.http);
    uv_run(a.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(a.loop) == 0 ? 0 : 1;
    if (rc) log_warn("hold", "event loop closed with handles still open");
    hold_api_free(&api);
    hold_config_free(&cfg);
    metrics_free_all();
    log_info("hold", "stopped");
    return rc;
}
