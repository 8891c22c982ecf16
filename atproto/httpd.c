#include <uv.h> /* before libwebsockets.h, so lws sees libuv's types */

#include "atproto/httpd.h"

#include <errno.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "atproto/buf.h"
#include "atproto/listener.h"
#include "atproto/log.h"
#include "atproto/metrics.h"

#define MAX_PARAMS 32
#define MAX_PARAM_BYTES 8192
#define MAX_ROUTES 64
/* Largest lws_write; lws hands the kernel at most the protocol's tx_packet_size per send and
 * keeps what the kernel refuses, so one write of this size costs one send when the socket has
 * room. Larger answers go out in pieces from the writable callback. */
#define WRITE_CHUNK 65536
/* Request headers in total (lws' max_http_header_data): room for long bearer tokens. */
#define MAX_HEADER_BYTES 16384
/* Connections accepted per readiness of a listening socket before the loop moves on. */
#define ACCEPT_BURST 64
/* Out of file descriptors: how long a listening socket rests before accepting again. */
#define ACCEPT_REST_MS 100

/* A socket the server listens on. The sockets are bound here, not by lws: lws 4.1 binds an
 * IPv4 address given as its interface to every address, and reports a busy port only in its
 * log. Each accepted connection is handed to lws, which serves it from then on. */
typedef struct listening {
    uv_poll_t poll;
    uv_timer_t rest; /* restarts accepting after running out of file descriptors */
    struct httpd *server;
    int fd;
    int open_handles;
} listening;

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
    listening *listeners[LISTENER_MAX];
    size_t nlisteners;
    int port;
    const char *name;
    size_t max_body;
    route routes[MAX_ROUTES];
    size_t nroutes;
    unsigned inflight;
    int stopping;
    /* The connection whose LWS_CALLBACK_HTTP is running, if any. */
    struct lws *in_http_callback;
    uint64_t *requests_total;
    uint64_t *errors_total;
    uint64_t *bad_requests_total;
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

/* Where a chunked request body's decoder is (lws 4.1 passes such bodies through raw). */
enum chunk_state { CHUNK_SIZE, CHUNK_EXT, CHUNK_DATA, CHUNK_DATA_END, CHUNK_TRAILER, CHUNK_DONE };

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
    /* lws reads a body after LWS_CALLBACK_HTTP returns: completing the transaction inside
     * that callback would leave lws reading the body of a request already finished. */
    int expects_body;
    int chunked;
    enum chunk_state chunk_state;
    size_t chunk_left;
    int chunk_line_empty;
    int dispatched;
    char peer[64]; /* empty until httpd_req_peer asks */
    header_copy *headers;
    uint64_t started_ns;
    int answered;
    int status;
    /* Connection ends after the answer: the body's end is unknown to lws (chunked, or no
     * length at all), so the connection cannot carry another request. */
    int close_after;
    /* The whole answer, status line and headers then body, after LWS_PRE bytes of headroom
     * that lws_write needs. */
    unsigned char *out;
    size_t out_len;
    size_t out_sent;
    char *location;
};

/* One per HTTP connection and transaction (lws reallocates it for each keep-alive request). */
typedef struct session {
    httpd_req *req;
    int close_pending; /* answered; close at the next writable callback */
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
    free(r->out);
    free(r);
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

static const char *method_of(struct lws *wsi)
{
    static const struct {
        enum lws_token_indexes tok;
        const char *name;
    } methods[] = {{WSI_TOKEN_GET_URI, "GET"},       {WSI_TOKEN_POST_URI, "POST"},
                   {WSI_TOKEN_PUT_URI, "PUT"},       {WSI_TOKEN_HEAD_URI, "HEAD"},
                   {WSI_TOKEN_DELETE_URI, "DELETE"}, {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
                   {WSI_TOKEN_PATCH_URI, "PATCH"}};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (lws_hdr_total_length(wsi, methods[i].tok) > 0) return methods[i].name;
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
    r->dispatched = 1;
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

/* Answers a request the server refuses before any handler sees it (counted, logged). */
static void refuse(httpd_req *r, int status, const char *error, const char *why)
{
    httpd *h = r->server;
    (*h->bad_requests_total)++;
    log_warn(h->name, "%s %s from %s: %s", r->method, r->path, httpd_req_peer(r), why);
    r->dispatched = 1;
    r->close_after = 1;
    httpd_reply_error(r, status, error, "%s", why);
}

static httpd_req *req_new(httpd *h, struct lws *wsi, const char *uri)
{
    const char *method = method_of(wsi);
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
    h->inflight++;
    (*h->requests_total)++;
    return r;
}

/* ---- writing the answer ---- */

static void req_done(httpd_req *r)
{
    httpd *h = r->server;
    double secs = (double)(now_ns() - r->started_ns) / 1e9;
    metrics_observe(h->latency, secs);
    if (r->status >= 500) (*h->errors_total)++;
    h->inflight--;
    req_free(r);
}

/* Status line and headers, then the body, into r->out. */
static int build_answer(httpd_req *r, const char *content_type, const char *body, size_t len)
{
    struct lws *wsi = r->wsi;
    size_t room = 512 + strlen(content_type) + (r->location ? strlen(r->location) : 0);
    r->out = malloc(LWS_PRE + room + len);
    if (!r->out) return -1;
    unsigned char *start = r->out + LWS_PRE, *p = start, *end = start + room;
    if (lws_add_http_common_headers(wsi, (unsigned)r->status, content_type, (lws_filepos_t)len, &p,
                                    end))
        return -1;
    if (r->location && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_LOCATION,
                                                    (const unsigned char *)r->location,
                                                    (int)strlen(r->location), &p, end))
        return -1;
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end))
        return -1;
    if (r->close_after && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                                       (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_http_header(wsi, &p, end)) return -1;
    if (!strcmp(r->method, "HEAD")) len = 0; /* the length header stays, the body goes */
    if (len) memcpy(p, body, len);
    r->out_len = (size_t)(p - start) + len;
    return 0;
}

/* Writes the next piece of the answer. 1 when all of it is written (lws may still hold some
 * of it, which it sends before anything else), 0 when more remains, -1 on a dead socket. */
static int write_some(httpd_req *r)
{
    size_t chunk = r->out_len - r->out_sent;
    if (chunk > WRITE_CHUNK) chunk = WRITE_CHUNK;
    int final = r->out_sent + chunk == r->out_len;
    if (lws_write(r->wsi, r->out + LWS_PRE + r->out_sent, chunk,
                  final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < (int)chunk)
        return -1;
    r->out_sent += chunk;
    return final;
}

/* After the last write: frees the request and readies the connection for the next one.
 * -1 when the connection must close instead. */
static int finish(httpd_req *r)
{
    struct lws *wsi = r->wsi;
    session *s = lws_wsi_user(wsi);
    if (s) s->req = NULL;
    int close_after = r->close_after;
    req_done(r);
    if (close_after) return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Closes from outside the connection's callbacks, where returning -1 is not possible. (A kill
 * by lws_set_timeout would be postponed by lws resetting the timeout while it reads a body.) */
static void close_soon(struct lws *wsi)
{
    session *s = lws_wsi_user(wsi);
    if (s) s->close_pending = 1;
    lws_callback_on_writable(wsi);
}

/* Writes as much as it may now. Returns -1 when the connection must close. */
static int send_answer(httpd_req *r)
{
    int rc = write_some(r);
    if (rc < 0) return -1;
    if (rc == 0) {
        lws_callback_on_writable(r->wsi);
        return 0;
    }
    return finish(r);
}

void httpd_reply(httpd_req *r, int status, const char *content_type, const char *body, size_t len)
{
    if (r->answered) {
        log_error(r->server->name, "request %s answered twice (bug)", r->path);
        return;
    }
    r->answered = 1;
    r->status = status;
    if (!r->wsi) {
        req_done(r); /* the client is gone: nobody to tell */
        return;
    }
    struct lws *wsi = r->wsi;
    if (build_answer(r, content_type, body, len) < 0) {
        log_error(r->server->name, "out of memory answering %s", r->path);
        r->status = 500;
        r->close_after = 1;
        free(r->out);
        r->out = NULL;
        if (build_answer(r, "text/plain", "", 0) < 0) {
            close_soon(wsi);
            return; /* freed when lws reports the close */
        }
    }
    /* lws_write is legal outside the writable callback on HTTP/1: what the kernel refuses lws
     * keeps and sends first when the socket drains. Writing now saves the POLLOUT round trip
     * (two epoll_ctl and a loop turn) per answer. The exception is a request answered inside
     * LWS_CALLBACK_HTTP while lws has yet to read its body: that one goes through the
     * writable callback, after lws set up the body read it will discard. */
    if (r->server->in_http_callback == wsi && r->expects_body && !r->close_after) {
        lws_callback_on_writable(wsi);
        return;
    }
    if (send_answer(r) < 0) close_soon(wsi);
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

static int header_is(struct lws *wsi, enum lws_token_indexes tok, const char *want)
{
    char v[64];
    return lws_hdr_copy(wsi, v, sizeof v, tok) > 0 && strcasestr(v, want) != NULL;
}

static int on_http(struct lws *wsi, session *s, const char *uri)
{
    httpd *h = lws_context_user(lws_get_context(wsi));
    httpd_req *r = req_new(h, wsi, uri);
    if (!r) return -1; /* out of memory or absurd query: drop the connection */
    s->req = r;
    char cl[32] = "";
    int has_length = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
    int length_ok =
        !has_length || (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
                        strspn(cl, "0123456789") == strlen(cl));
    unsigned long long length = length_ok ? strtoull(cl, NULL, 10) : 0;
    int posts = !strcmp(r->method, "POST") || !strcmp(r->method, "PUT");
    r->expects_body = posts || length > 0;
    /* r and s may both be freed by an answer written below (lws reallocates s per request) */
    h->in_http_callback = wsi;
    if (!length_ok) {
        refuse(r, 400, "InvalidRequest", "malformed Content-Length");
    } else if (posts && !has_length) {
        /* lws 4.1 would read whatever follows as this request's body, so the connection ends
         * with the answer. */
        r->close_after = 1;
        if (header_is(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING, "chunked"))
            r->chunked = 1;
        else
            dispatch(r); /* neither length nor chunked: no body (RFC 9112 6.3) */
    } else if (length > h->max_body) {
        r->body_too_large = 1;
        dispatch(r); /* lws reads and discards the body, then the 413 goes out */
    } else if (!posts) {
        dispatch(r);
    }
    /* otherwise wait for the body: LWS_CALLBACK_HTTP_BODY_COMPLETION dispatches */
    h->in_http_callback = NULL;
    return 0;
}

/* Decodes a chunked body (RFC 9112 7.1) into r->body. 1 once the last chunk and trailers are
 * in, 0 for more, -1 when it is malformed. */
static int dechunk(httpd_req *r, const unsigned char *in, size_t len)
{
    for (size_t i = 0; i < len && r->chunk_state != CHUNK_DONE; i++) {
        unsigned char c = in[i];
        switch (r->chunk_state) {
        case CHUNK_SIZE: {
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d >= 0) {
                if (r->chunk_left > SIZE_MAX / 32) return -1;
                r->chunk_left = r->chunk_left * 16 + (size_t)d;
            } else if (c == ';' || c == ' ' || c == '\t' || c == '\r') {
                r->chunk_state = CHUNK_EXT;
            } else if (c == '\n') {
                r->chunk_state = r->chunk_left ? CHUNK_DATA : CHUNK_TRAILER;
                r->chunk_line_empty = 1;
            } else {
                return -1;
            }
            break;
        }
        case CHUNK_EXT:
            if (c == '\n') {
                r->chunk_state = r->chunk_left ? CHUNK_DATA : CHUNK_TRAILER;
                r->chunk_line_empty = 1;
            }
            break;
        case CHUNK_DATA: {
            size_t n = len - i < r->chunk_left ? len - i : r->chunk_left;
            if (!r->body_too_large) {
                if (r->body.len + n > r->server->max_body) {
                    r->body_too_large = 1;
                    buf_free(&r->body);
                } else if (buf_append(&r->body, in + i, n) < 0) {
                    return -1;
                }
            }
            r->chunk_left -= n;
            i += n - 1;
            if (!r->chunk_left) r->chunk_state = CHUNK_DATA_END;
            break;
        }
        case CHUNK_DATA_END:
            if (c == '\n')
                r->chunk_state = CHUNK_SIZE;
            else if (c != '\r')
                return -1;
            break;
        case CHUNK_TRAILER:
            if (c == '\n') {
                if (r->chunk_line_empty) r->chunk_state = CHUNK_DONE;
                r->chunk_line_empty = 1;
            } else if (c != '\r') {
                r->chunk_line_empty = 0;
            }
            break;
        case CHUNK_DONE:
            break;
        }
    }
    return r->chunk_state == CHUNK_DONE;
}

static int on_body(session *s, const void *in, size_t len)
{
    httpd_req *r = s->req;
    if (!r || r->dispatched) return 0;
    if (r->chunked) {
        int rc = dechunk(r, in, len);
        if (rc < 0)
            refuse(r, 400, "InvalidRequest", "malformed chunked request body");
        else if (rc > 0 || r->body_too_large)
            dispatch(r); /* a 413 goes out as soon as the body is known to be too large */
        return 0;
    }
    if (r->body_too_large) return 0;
    if (r->body.len + len > r->server->max_body) {
        r->body_too_large = 1; /* the client sent more than its Content-Length said */
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
        if (s->req && !s->req->dispatched) dispatch(s->req);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        if (s->close_pending) return -1;
        httpd_req *r = s->req;
        if (!r || !r->answered) return 0;
        return send_answer(r);
    }
    case LWS_CALLBACK_CLOSED_HTTP:
        if (s && s->req) {
            httpd_req *r = s->req;
            s->req = NULL;
            r->wsi = NULL;
            /* answered but not all sent, or never handed to a handler: nobody else will free it;
             * otherwise the handler still owns it and its reply frees it */
            if (r->answered || !r->dispatched) req_done(r);
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    {.name = "http",
     .callback = callback_http,
     .per_session_data_size = sizeof(session),
     .tx_packet_size = WRITE_CHUNK},
    {0},
};

/* ---- server life cycle ---- */

static void listening_closed(uv_handle_t *handle)
{
    listening *l = handle->data;
    if (--l->open_handles) return;
    if (l->fd >= 0) close(l->fd);
    free(l);
}

static void listening_close(listening *l)
{
    uv_close((uv_handle_t *)&l->poll, listening_closed);
    uv_close((uv_handle_t *)&l->rest, listening_closed);
}

static void on_acceptable(uv_poll_t *handle, int status, int events);

static void on_rested(uv_timer_t *t)
{
    listening *l = t->data;
    if (uv_poll_start(&l->poll, UV_READABLE, on_acceptable) != 0)
        log_error(l->server->name, "cannot watch a listening socket again: not accepting");
}

static void on_acceptable(uv_poll_t *handle, int status, int events)
{
    listening *l = handle->data;
    if (status < 0) return;
    for (int i = 0; i < ACCEPT_BURST; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            /* Out of descriptors or memory: the connection waits in the backlog, and polling
             * again at once would spin. */
            log_warn(l->server->name, "cannot accept connections: %s; pausing %d ms",
                     strerror(errno), ACCEPT_REST_MS);
            if (uv_poll_stop(&l->poll) == 0) uv_timer_start(&l->rest, on_rested, ACCEPT_REST_MS, 0);
            return;
        }
        int one = 1; /* answers go out in one write each: no reason to wait for more */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (!lws_adopt_socket_vhost(l->server->vhost, fd)) /* lws closed fd */
            log_warn(l->server->name, "libwebsockets refused a new connection");
    }
}

/* Watches fd for connections; NULL (fd left to the caller) when libuv refuses it. */
static listening *listening_new(httpd *h, int fd)
{
    listening *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->server = h;
    l->fd = -1; /* the caller's until it is watched */
    if (uv_timer_init(h->loop, &l->rest) != 0) {
        free(l);
        return NULL;
    }
    l->rest.data = l;
    l->open_handles = 1;
    if (uv_poll_init(h->loop, &l->poll, fd) != 0) {
        uv_close((uv_handle_t *)&l->rest, listening_closed);
        return NULL;
    }
    l->poll.data = l;
    l->open_handles = 2;
    if (uv_poll_start(&l->poll, UV_READABLE, on_acceptable) != 0) {
        listening_close(l);
        return NULL;
    }
    l->fd = fd;
    return l;
}

/* Gives up on a server without an lws context: its sockets close when the loop runs next. */
static httpd *server_abandon(httpd *h)
{
    for (size_t i = 0; i < h->nlisteners; i++)
        listening_close(h->listeners[i]);
    free(h);
    return NULL;
}

httpd *httpd_new(uv_loop_t *loop, const httpd_options *opt)
{
    const char *name = opt->name ? opt->name : "httpd";
    const char *setting = opt->setting ? opt->setting : "listen address";
    listener_set bound;
    char err[1024];
    if (listener_open(opt->listen, &bound, err, sizeof err) < 0) {
        log_error(name, "cannot listen on %s (%s): %s", opt->listen, setting, err);
        return NULL;
    }
    httpd *h = calloc(1, sizeof *h);
    if (!h) {
        listener_close(&bound);
        return NULL;
    }
    h->loop = loop;
    h->name = name;
    h->port = bound.port;
    h->max_body = opt->max_body ? opt->max_body : 1 << 20;
    h->requests_total = metrics_counter("http_requests_total", "HTTP requests received");
    h->errors_total =
        metrics_counter("http_server_errors_total", "HTTP answers with status >= 500");
    h->bad_requests_total =
        metrics_counter("http_bad_requests_total", "HTTP requests refused as malformed");
    h->latency = metrics_histogram_get("http_request_duration_seconds",
                                       "Time from request arrival to answer queued");

    for (; h->nlisteners < bound.n; h->nlisteners++) {
        listening *l = listening_new(h, bound.fds[h->nlisteners]);
        if (!l) {
            log_error(name, "cannot watch the listening socket on %s", opt->listen);
            for (size_t i = h->nlisteners; i < bound.n; i++)
                close(bound.fds[i]);
            return server_abandon(h);
        }
        h->listeners[h->nlisteners] = l;
    }

    log_capture_lws();
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    void *foreign[] = {loop};
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER; /* a server whose connections are adopted */
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBUV;
    info.foreign_loops = foreign;
    info.user = h;
    info.timeout_secs = 30;
    info.keepalive_timeout = 60;
    info.max_http_header_data = MAX_HEADER_BYTES;
    h->ctx = lws_create_context(&info);
    if (!h->ctx) {
        log_error(name, "cannot create the HTTP server (libwebsockets) on %s", opt->listen);
        return server_abandon(h);
    }
    h->vhost = lws_get_vhost_by_name(h->ctx, "default");
    char where[512];
    listener_describe(&bound, where, sizeof where);
    log_info(name, "listening on %s", where);
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
    return h->port;
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
    for (size_t i = 0; i < h->nlisteners; i++)
        listening_close(h->listeners[i]);
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

    /* Sized from lws' own length: values run up to max_http_header_data (long bearer tokens). */
    int tok = header_token(name);
    char key[40];
    int klen = snprintf(key, sizeof key, "%s:", name);
    int total = tok >= 0 ? lws_hdr_total_length(r->wsi, (enum lws_token_indexes)tok)
                         : lws_hdr_custom_length(r->wsi, key, klen);
    if (total <= 0) return NULL;
    header_copy *c = malloc(sizeof *c + (size_t)total + 1);
    if (!c) return NULL;
    int n = tok >= 0 ? lws_hdr_copy(r->wsi, c->value, total + 1, (enum lws_token_indexes)tok)
                     : lws_hdr_custom_copy(r->wsi, c->value, total + 1, key, klen);
    if (n <= 0) {
        free(c);
        return NULL;
    }
    snprintf(c->name, sizeof c->name, "%s", name);
    /* The accessor is logically const: it only fills a cache that lives with the request. */
    httpd_req *mut = (httpd_req *)r;
    c->next = mut->headers;
    mut->headers = c;
    return c->value;
}

const char *httpd_req_peer(const httpd_req *r)
{
    /* Looked up on first use: getpeername on every request costs more than most handlers. */
    if (!r->peer[0] && r->wsi) {
        httpd_req *mut = (httpd_req *)r;
        lws_get_peer_simple(r->wsi, mut->peer, sizeof mut->peer);
        /* lws listens dual-stack: show IPv4 clients as IPv4, not v4-mapped v6 */
        if (!strncmp(mut->peer, "::ffff:", 7) && strchr(mut->peer, '.'))
            memmove(mut->peer, mut->peer + 7, strlen(mut->peer + 7) + 1);
    }
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
