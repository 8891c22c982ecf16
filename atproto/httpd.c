#include <uv.h> /* before libwebsockets.h, so lws sees libuv's types */

#include "atproto/httpd.h"

#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/metrics.h"

#define MAX_PARAMS 32
#define MAX_PARAM_BYTES 8192
#define MAX_ROUTES 64

typedef struct route {
    char method[8];
    char *path;
    httpd_handler fn;
    void *ud;
} route;

struct httpd {
    uv_loop_t *loop;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    const char *name;
    size_t max_body;
    route routes[MAX_ROUTES];
    size_t nroutes;
    unsigned inflight;
    int stopping;
    uint64_t *requests_total;
    uint64_t *errors_total;
    metrics_histogram *latency;
};

/* A header value copied out of lws, kept until the request is answered. */
typedef struct header_copy {
    struct header_copy *next;
    char name[32];
    char value[];
} header_copy;

typedef struct param {
    char *name;
    char *value;
} param;

struct httpd_req {
    httpd *server;
    struct lws *wsi; /* NULL once the client went away */
    char method[8];
    char *path;
    param params[MAX_PARAMS];
    size_t nparams;
    char *param_storage;
    buf body;
    int body_too_large;
    char peer[64];
    header_copy *headers;
    uint64_t started_ns;
    /* The answer, kept until lws says the socket is writable. */
    int answered;
    int status;
    char content_type[64];
    char *location;
    buf response;
    size_t response_sent;
    int headers_sent;
};

/* One per HTTP connection; a keep-alive connection carries one request at a time. */
typedef struct session {
    httpd_req *req;
} session;

static void req_free(httpd_req *r)
{
    if (!r) return;
    free(r->path);
    free(r->param_storage);
    free(r->location);
    while (r->headers) {
        header_copy *next = r->headers->next;
        free(r->headers);
        r->headers = next;
    }
    buf_free(&r->body);
    buf_free(&r->response);
    free(r);
}

static void lws_log_to_ours(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    log_msg(level == LLL_ERR ? LOG_ERROR : LOG_WARN, "lws", "%.*s", (int)n, line);
}

/* ---- request parsing ---- */

static int collect_params(httpd_req *r, struct lws *wsi)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (total <= 0) return 0;
    if (total > MAX_PARAM_BYTES) return -1;
    /* One block holds every fragment; lws has already URL-decoded them. */
    size_t cap = (size_t)total + MAX_PARAMS + 1;
    r->param_storage = malloc(cap);
    if (!r->param_storage) return -1;
    size_t used = 0;
    for (int i = 0; r->nparams < MAX_PARAMS; i++) {
        char *dst = r->param_storage + used;
        int n = lws_hdr_copy_fragment(wsi, dst, (int)(cap - used), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0) break;
        used += (size_t)n + 1;
        char *eq = strchr(dst, '=');
        param *p = &r->params[r->nparams++];
        p->name = dst;
        if (eq) {
            *eq = '\0';
            p->value = eq + 1;
        } else {
            p->value = dst + n; /* "?flag" is an empty value */
        }
    }
    return 0;
}

static const char *method_of(struct lws *wsi, int *uri_token)
{
    static const struct {
        enum lws_token_indexes tok;
        const char *name;
    } methods[] = {{WSI_TOKEN_GET_URI, "GET"},       {WSI_TOKEN_POST_URI, "POST"},
                   {WSI_TOKEN_PUT_URI, "PUT"},       {WSI_TOKEN_HEAD_URI, "HEAD"},
                   {WSI_TOKEN_DELETE_URI, "DELETE"}, {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
                   {WSI_TOKEN_PATCH_URI, "PATCH"}};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (lws_hdr_total_length(wsi, methods[i].tok) > 0) {
            *uri_token = methods[i].tok;
            return methods[i].name;
        }
    return NULL;
}

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static const route *find_route(const httpd *h, const char *method, const char *path,
                               int *path_known)
{
    *path_known = 0;
    for (size_t i = 0; i < h->nroutes; i++) {
        if (strcmp(h->routes[i].path, path)) continue;
        *path_known = 1;
        if (!strcmp(h->routes[i].method, method)) return &h->routes[i];
    }
    return NULL;
}

static void dispatch(httpd_req *r)
{
    httpd *h = r->server;
    if (h->stopping) {
        httpd_reply_error(r, 503, "ServiceUnavailable", "server is shutting down");
        return;
    }
    if (r->body_too_large) {
        httpd_reply_error(r, 413, "PayloadTooLarge", "request body over %zu bytes", h->max_body);
        return;
    }
    int path_known;
    const route *rt = find_route(h, r->method, r->path, &path_known);
    if (rt) {
        rt->fn(r, rt->ud);
        return;
    }
    if (path_known)
        httpd_reply_error(r, 405, "InvalidRequest", "method %s not allowed here", r->method);
    else if (!strncmp(r->path, "/xrpc/", 6))
        httpd_reply_error(r, 501, "MethodNotImplemented", "method not implemented");
    else
        httpd_reply_error(r, 404, "NotFound", "no such path");
}

static httpd_req *req_new(httpd *h, struct lws *wsi, const char *uri)
{
    int uri_token;
    const char *method = method_of(wsi, &uri_token);
    httpd_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->server = h;
    r->wsi = wsi;
    r->started_ns = now_ns();
    snprintf(r->method, sizeof r->method, "%s", method ? method : "?");
    r->path = strdup(uri ? uri : "/");
    if (!r->path || collect_params(r, wsi) < 0) {
        req_free(r);
        return NULL;
    }
    lws_get_peer_simple(wsi, r->peer, sizeof r->peer);
    h->inflight++;
    (*h->requests_total)++;
    return r;
}

/* ---- writing the answer ---- */

static int write_answer(httpd_req *r, struct lws *wsi)
{
    if (!r->headers_sent) {
        unsigned char hdr[LWS_PRE + 1024];
        unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
        if (lws_add_http_common_headers(wsi, (unsigned)r->status, r->content_type,
                                        (lws_filepos_t)r->response.len, &p, end))
            return -1;
        if (r->location && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_LOCATION,
                                                        (const unsigned char *)r->location,
                                                        (int)strlen(r->location), &p, end))
            return -1;
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                        (const unsigned char *)"no-store", 8, &p, end))
            return -1;
        if (lws_finalize_write_http_header(wsi, start, &p, end)) return -1;
        r->headers_sent = 1;
        if (r->response.len == 0) return 1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    /* lws keeps what the kernel does not take and sends it before the next writable. */
    size_t chunk = r->response.len - r->response_sent;
    if (chunk > 65536) chunk = 65536;
    int final = r->response_sent + chunk == r->response.len;
    if (lws_write(wsi, (unsigned char *)r->response.data + LWS_PRE + r->response_sent, chunk,
                  final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < (int)chunk)
        return -1;
    r->response_sent += chunk;
    if (final) return 1;
    lws_callback_on_writable(wsi);
    return 0;
}

static void req_done(httpd_req *r)
{
    httpd *h = r->server;
    double secs = (double)(now_ns() - r->started_ns) / 1e9;
    metrics_observe(h->latency, secs);
    if (r->status >= 500) (*h->errors_total)++;
    h->inflight--;
    req_free(r);
}

void httpd_reply(httpd_req *r, int status, const char *content_type, const char *body, size_t len)
{
    if (r->answered) {
        log_error(r->server->name, "request %s answered twice (bug)", r->path);
        return;
    }
    r->answered = 1;
    r->status = status;
    snprintf(r->content_type, sizeof r->content_type, "%s", content_type);
    /* LWS_PRE bytes of headroom in front of the body, which lws_write needs. */
    if (buf_reserve(&r->response, LWS_PRE + len) < 0) {
        r->status = 500;
        snprintf(r->content_type, sizeof r->content_type, "text/plain");
        len = 0;
        body = "";
    }
    memset(r->response.data, 0, LWS_PRE);
    if (len) memcpy(r->response.data + LWS_PRE, body, len);
    r->response.len = len;
    if (!r->wsi) {
        req_done(r); /* the client is gone: nobody to tell */
        return;
    }
    lws_callback_on_writable(r->wsi);
}

void httpd_reply_json(httpd_req *r, int status, const char *json, size_t len)
{
    httpd_reply(r, status, "application/json", json, len);
}

void httpd_reply_error(httpd_req *r, int status, const char *error, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    buf out = {0};
    int rc = buf_puts(&out, "{\"error\":");
    rc |= buf_json_string(&out, error, strlen(error));
    rc |= buf_puts(&out, ",\"message\":");
    rc |= buf_json_string(&out, msg, strlen(msg));
    rc |= buf_puts(&out, "}");
    if (rc)
        httpd_reply(r, 500, "text/plain", "", 0);
    else
        httpd_reply_json(r, status, out.data, out.len);
    buf_free(&out);
}

void httpd_reply_redirect(httpd_req *r, int status, const char *location)
{
    free(r->location);
    r->location = strdup(location);
    if (!r->location) {
        httpd_reply(r, 500, "text/plain", "", 0);
        return;
    }
    httpd_reply(r, status, "text/plain", "", 0);
}

/* ---- lws callback ---- */

static int on_http(struct lws *wsi, session *s, const char *uri)
{
    httpd *h = lws_context_user(lws_get_context(wsi));
    httpd_req *r = req_new(h, wsi, uri);
    if (!r) return -1; /* out of memory or absurd query: drop the connection */
    s->req = r;
    if (!strcmp(r->method, "POST") || !strcmp(r->method, "PUT")) {
        char cl[32];
        if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
            strtoull(cl, NULL, 10) > h->max_body)
            r->body_too_large = 1;
        else
            return 0; /* wait for the body */
    }
    dispatch(r);
    return 0;
}

static int on_body(session *s, const void *in, size_t len)
{
    httpd_req *r = s->req;
    if (!r || r->body_too_large) return 0;
    if (r->body.len + len > r->server->max_body) {
        r->body_too_large = 1;
        buf_free(&r->body);
        return 0;
    }
    return buf_append(&r->body, in, len) < 0 ? -1 : 0;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    session *s = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return on_http(wsi, s, in);
    case LWS_CALLBACK_HTTP_BODY:
        return on_body(s, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (s->req && !s->req->answered) dispatch(s->req);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        httpd_req *r = s->req;
        if (!r || !r->answered) return 0;
        int rc = write_answer(r, wsi);
        if (rc < 0) return -1;
        if (rc == 0) return 0;
        s->req = NULL;
        req_done(r);
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    case LWS_CALLBACK_CLOSED_HTTP:
        if (s && s->req) {
            httpd_req *r = s->req;
            s->req = NULL;
            r->wsi = NULL;
            if (r->answered) req_done(r); /* answer was queued but never sent */
            /* otherwise the handler still owns it and its reply will free it */
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    {"http", callback_http, sizeof(session), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- server life cycle ---- */

static int parse_listen(const char *listen, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon) return -1;
    const char *h = listen;
    size_t n = (size_t)(colon - listen);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n >= hostlen) return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535) return -1;
    *port = (int)p;
    return 0;
}

httpd *httpd_new(uv_loop_t *loop, const httpd_options *opt)
{
    const char *name = opt->name ? opt->name : "httpd";
    char host[128];
    int port;
    if (parse_listen(opt->listen, host, sizeof host, &port) < 0) {
        log_error(name, "bad listen address '%s' (want host:port)", opt->listen);
        return NULL;
    }
    httpd *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->loop = loop;
    h->name = name;
    h->max_body = opt->max_body ? opt->max_body : 1 << 20;
    h->requests_total = metrics_counter("http_requests_total", "HTTP requests received");
    h->errors_total =
        metrics_counter("http_server_errors_total", "HTTP answers with status >= 500");
    h->latency = metrics_histogram_get("http_request_duration_seconds",
                                       "Time from request arrival to answer queued");

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_ours);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    void *foreign[] = {loop};
    info.port = port;
    /* lws takes an interface name or an address; NULL and "0.0.0.0" both mean every address. */
    info.iface = (host[0] && strcmp(host, "0.0.0.0") && strcmp(host, "*")) ? host : NULL;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBUV;
    info.foreign_loops = foreign;
    info.user = h;
    info.timeout_secs = 30;
    info.keepalive_timeout = 60;
    info.max_http_header_data = 8192;
    h->ctx = lws_create_context(&info);
    if (!h->ctx) {
        log_error(name, "cannot create the HTTP server on %s", opt->listen);
        free(h);
        return NULL;
    }
    h->vhost = lws_get_vhost_by_name(h->ctx, "default");
    log_info(name, "listening on %s (port %d)", opt->listen, httpd_port(h));
    return h;
}

int httpd_route(httpd *h, const char *method, const char *path, httpd_handler fn, void *ud)
{
    if (h->nroutes == MAX_ROUTES) return -1;
    route *r = &h->routes[h->nroutes];
    snprintf(r->method, sizeof r->method, "%s", method);
    r->path = strdup(path);
    if (!r->path) return -1;
    r->fn = fn;
    r->ud = ud;
    h->nroutes++;
    return 0;
}

int httpd_port(const httpd *h)
{
    return h->vhost ? lws_get_vhost_listen_port(h->vhost) : -1;
}

void httpd_stop(httpd *h)
{
    h->stopping = 1;
}

unsigned httpd_inflight(const httpd *h)
{
    return h->inflight;
}

void httpd_free(httpd *h)
{
    if (!h) return;
    /* On a foreign loop the first destroy only starts closing lws' handles; the loop must run
     * until they are closed, then the second destroy finishes (see EVENT-LOOP.md). */
    lws_context_destroy(h->ctx);
    uv_run(h->loop, UV_RUN_DEFAULT);
    lws_context_destroy(h->ctx);
    for (size_t i = 0; i < h->nroutes; i++)
        free(h->routes[i].path);
    free(h);
}

/* ---- accessors ---- */

const char *httpd_req_method(const httpd_req *r)
{
    return r->method;
}

const char *httpd_req_path(const httpd_req *r)
{
    return r->path;
}

size_t httpd_req_param_count(const httpd_req *r, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nparams; i++)
        if (!strcmp(r->params[i].name, name)) n++;
    return n;
}

const char *httpd_req_param_at(const httpd_req *r, const char *name, size_t idx)
{
    for (size_t i = 0; i < r->nparams; i++)
        if (!strcmp(r->params[i].name, name) && idx-- == 0) return r->params[i].value;
    return NULL;
}

const char *httpd_req_param(const httpd_req *r, const char *name)
{
    return httpd_req_param_at(r, name, 0);
}

static int header_token(const char *name)
{
    static const struct {
        const char *name;
        enum lws_token_indexes tok;
    } known[] = {{"authorization", WSI_TOKEN_HTTP_AUTHORIZATION},
                 {"content-type", WSI_TOKEN_HTTP_CONTENT_TYPE},
                 {"user-agent", WSI_TOKEN_HTTP_USER_AGENT},
                 {"host", WSI_TOKEN_HOST},
                 {"x-forwarded-for", WSI_TOKEN_X_FORWARDED_FOR}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(known[i].name, name)) return known[i].tok;
    return -1;
}

const char *httpd_req_header(const httpd_req *r, const char *name)
{
    if (strlen(name) >= sizeof((header_copy *)0)->name) return NULL;
    for (header_copy *c = r->headers; c; c = c->next)
        if (!strcmp(c->name, name)) return c->value;
    if (!r->wsi) return NULL;

    char value[4096];
    int n, tok = header_token(name);
    if (tok >= 0) {
        n = lws_hdr_copy(r->wsi, value, sizeof value, (enum lws_token_indexes)tok);
    } else {
        char key[40];
        int klen = snprintf(key, sizeof key, "%s:", name);
        n = lws_hdr_custom_copy(r->wsi, value, sizeof value, key, klen);
    }
    if (n <= 0) return NULL;
    header_copy *c = malloc(sizeof *c + (size_t)n + 1);
    if (!c) return NULL;
    snprintf(c->name, sizeof c->name, "%s", name);
    memcpy(c->value, value, (size_t)n + 1);
    /* The accessor is logically const: it only fills a cache that lives with the request. */
    httpd_req *mut = (httpd_req *)r;
    c->next = mut->headers;
    mut->headers = c;
    return c->value;
}

const char *httpd_req_peer(const httpd_req *r)
{
    return r->peer;
}

const char *httpd_req_body(const httpd_req *r, size_t *len)
{
    *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

double httpd_req_age(const httpd_req *r)
{
    return (double)(now_ns() - r->started_ns) / 1e9;
}
