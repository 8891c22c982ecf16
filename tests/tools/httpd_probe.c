/* A server built on atproto/httpd for tests of the HTTP layer itself:
 *   GET  /xrpc/echo?...      -> the query parameters as JSON
 *   POST /xrpc/body          -> {"length": N, "sum": byte sum}
 *   GET  /xrpc/slow?ms=N     -> answers after N ms from a timer (an asynchronous reply)
 *   GET  /xrpc/header?name=H -> {"value": header H}
 *   GET  /xrpc/big?n=N       -> N bytes of text (answers larger than one write)
 *   GET  /xrpc/peer          -> {"peer": client address}
 *   POST /xrpc/checked       -> like /xrpc/body, but only with "X-Probe-Key: yes": the key is
 *                               checked before the body is read (401 otherwise)
 *   GET  /metrics            -> Prometheus text
 * Usage: httpd_probe HOST:PORT [MAX_BODY]; the limits come from PROBE_HTTP_* variables (see
 * HTTPD_OPTIONS). Prints "port N" once listening. On SIGTERM it stops taking requests, waits
 * until those in flight are answered, and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "atproto/buf.h"
#include "atproto/drain.h"
#include "atproto/httpd.h"
#include "atproto/log.h"
#include "atproto/metrics.h"

static void echo(httpd_req *r, void *ud)
{
    static const char *names[] = {"a", "b", "actor", "empty"};
    buf out = {0};
    buf_puts(&out, "{");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = httpd_req_param(r, names[i]);
        if (!v) continue;
        if (out.len > 1) buf_puts(&out, ",");
        buf_json_string(&out, names[i], strlen(names[i]));
        buf_printf(&out, ":{\"count\":%zu,\"first\":", httpd_req_param_count(r, names[i]));
        buf_json_string(&out, v, strlen(v));
        buf_puts(&out, "}");
    }
    buf_puts(&out, "}");
    httpd_reply_json(r, 200, out.data, out.len);
    buf_free(&out);
}

static void body(httpd_req *r, void *ud)
{
    size_t len;
    const char *b = httpd_req_body(r, &len);
    unsigned long sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += (unsigned char)b[i];
    char out[96];
    int n = snprintf(out, sizeof out, "{\"length\":%zu,\"sum\":%lu}", len, sum);
    httpd_reply_json(r, 200, out, (size_t)n);
}

static int check_key(httpd_req *r, void *ud)
{
    const char *key = httpd_req_header(r, "x-probe-key");
    if (key && !strcmp(key, "yes")) return 0;
    httpd_reply_error(r, 401, "AuthRequired", "X-Probe-Key: yes is required");
    return -1;
}

static void slow_fire(uv_timer_t *t)
{
    httpd_req *r = t->data;
    httpd_reply_json(r, 200, "{\"slow\":true}", 13);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static void slow(httpd_req *r, void *ud)
{
    const char *ms = httpd_req_param(r, "ms");
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) {
        httpd_reply_error(r, 500, "InternalError", "out of memory");
        return;
    }
    uv_timer_init(ud, t);
    t->data = r;
    uv_timer_start(t, slow_fire, ms ? strtoull(ms, NULL, 10) : 100, 0);
}

static void header(httpd_req *r, void *ud)
{
    const char *name = httpd_req_param(r, "name");
    const char *v = name ? httpd_req_header(r, name) : NULL;
    buf out = {0};
    buf_puts(&out, "{\"value\":");
    if (v)
        buf_json_string(&out, v, strlen(v));
    else
        buf_puts(&out, "null");
    buf_puts(&out, "}");
    httpd_reply_json(r, 200, out.data, out.len);
    buf_free(&out);
}

static void big(httpd_req *r, void *ud)
{
    const char *n = httpd_req_param(r, "n");
    size_t len = n ? strtoull(n, NULL, 10) : 0;
    char *text = malloc(len + 1);
    if (!text) {
        httpd_reply_error(r, 500, "InternalError", "out of memory");
        return;
    }
    for (size_t i = 0; i < len; i++)
        text[i] = (char)('a' + i % 26);
    httpd_reply(r, 200, "text/plain", text, len);
    free(text);
}

static void peer(httpd_req *r, void *ud)
{
    char out[128];
    int n = snprintf(out, sizeof out, "{\"peer\":\"%s\"}", httpd_req_peer(r));
    httpd_reply_json(r, 200, out, (size_t)n);
}

static void metrics_page(httpd_req *r, void *ud)
{
    buf out = {0};
    metrics_render(&out);
    httpd_reply(r, 200, "text/plain; version=0.0.4", out.data, out.len);
    buf_free(&out);
}

static httpd *server;

static void drain_begin(void *ud, int signum)
{
    (void)ud;
    log_info("probe", "signal %d: draining %u requests", signum, httpd_inflight(server));
    httpd_stop(server);
}

static int drain_idle(void *ud)
{
    (void)ud;
    return httpd_inflight(server) == 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: httpd_probe HOST:PORT [MAX_BODY]\n");
        return 2;
    }
    drain_block_signals();
    static const option_spec specs[HTTPD_OPTION_COUNT] = {HTTPD_OPTIONS("PROBE")};
    option_value v[HTTPD_OPTION_COUNT];
    char *prog[] = {argv[0], NULL};
    if (options_parse("httpd_probe", "test", "atproto/httpd under test", specs, HTTPD_OPTION_COUNT,
                      v, 1, prog) != 0)
        return 2;
    httpd_options opt = {
        .listen = argv[1], .max_body = argc > 2 ? strtoull(argv[2], NULL, 10) : 0, .name = "probe"};
    httpd_limits_from_options(&opt.limits, v);
    options_free(v, HTTPD_OPTION_COUNT);
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) return 1;
    server = httpd_new(&loop, &opt);
    if (!server) return 1;
    if (httpd_route(server, "GET", "/xrpc/echo", echo, NULL) < 0 ||
        httpd_route(server, "POST", "/xrpc/body", body, NULL) < 0 ||
        httpd_route(server, "GET", "/xrpc/slow", slow, &loop) < 0 ||
        httpd_route(server, "GET", "/xrpc/header", header, NULL) < 0 ||
        httpd_route(server, "GET", "/xrpc/big", big, NULL) < 0 ||
        httpd_route(server, "GET", "/xrpc/peer", peer, NULL) < 0 ||
        httpd_route_checked(server, "POST", "/xrpc/checked", check_key, body, NULL) < 0 ||
        httpd_route(server, "GET", "/metrics", metrics_page, NULL) < 0) {
        httpd_free(server);
        return 1;
    }
    printf("port %d\n", httpd_port(server));
    fflush(stdout);
    drain_options dro = {.component = "probe", .begin = drain_begin, .idle = drain_idle};
    if (drain_watch(&loop, &dro) < 0) {
        httpd_free(server);
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    httpd_free(server);
    metrics_free_all();
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
