/* bin/hold: durable pull/push counters served over XRPC (see hold/store.h, hold/api.h). */
#include <signal.h>
#include <stdlib.h>
#include <uv.h>

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
    uv_signal_t sigterm, sigint;
    uv_timer_t drain;
    int stopping;
} app;

/* SIGTERM: stop accepting, then wait until every request in flight is answered, which for
 * increments means committed, before the store closes. */
static void on_drain_tick(uv_timer_t *t)
{
    app *a = t->data;
    if (httpd_inflight(a->http) > 0 || store_pending(a->st) > 0) return;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)&a->drain, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_stop(a->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
    app *a = s->data;
    if (a->stopping) return;
    a->stopping = 1;
    log_info("hold", "signal %d: draining %u requests in flight", signum, httpd_inflight(a->http));
    httpd_stop(a->http);
    uv_timer_start(&a->drain, on_drain_tick, 0, 10);
}

int main(int argc, char **argv)
{
    log_init_from_env();
    signal(SIGPIPE, SIG_IGN);
    hold_config cfg;
    int rc = hold_config_load(&cfg, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;

    app a = {.loop = uv_default_loop()};
    hold_api api;
    a.st = store_open(a.loop, cfg.db, hold_api_on_commit, NULL);
    if (!a.st) {
        hold_config_free(&cfg);
        return 1;
    }
    if (hold_api_init(&api, &cfg, a.st) < 0) {
        log_error("hold", "out of memory");
        store_close(a.st);
        uv_run(a.loop, UV_RUN_DEFAULT);
        hold_config_free(&cfg);
        return 1;
    }
    httpd_options ho = {.listen = cfg.listen, .max_body = HOLD_MAX_BODY, .name = "hold"};
    a.http = httpd_new(a.loop, &ho);
    if (!a.http || hold_api_routes(&api, a.http) < 0 || hold_records_routes(&api, a.http) < 0) {
        log_error("hold", "cannot serve on %s", cfg.listen);
        store_close(a.st);
        if (a.http) httpd_free(a.http);
        uv_run(a.loop, UV_RUN_DEFAULT);
        hold_api_free(&api);
        hold_config_free(&cfg);
        metrics_free_all();
        return 1;
    }
    uv_signal_init(a.loop, &a.sigterm);
    uv_signal_init(a.loop, &a.sigint);
    uv_timer_init(a.loop, &a.drain);
    a.sigterm.data = a.sigint.data = a.drain.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    log_info("hold", "serving %s on %s (port %d), public %s, db %s", cfg.did, cfg.listen,
             httpd_port(a.http), cfg.public_url, cfg.db);

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
