#include <uv.h> /* before libwebsockets.h, so lws sees libuv's types */

#include "atproto/httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "atproto/buf.h"
#include "atproto/http_parse.h"
#include "atproto/listener.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/strmap.h"

#define MAX_ROUTES 64
/* Largest lws_write; lws hands the kernel at most the protocol's tx_packet_size per send and
 * keeps what the kernel refuses, so one write of this size costs one send when the socket has
 * room. */
#define WRITE_CHUNK 65536
#define NS_PER_S 1000000000ull
/* After an answer that closes the connection, how long what the client still sends is read
 * and dropped (so its kernel does not see a reset before it read the answer). */
#define LINGER_NS (2 * NS_PER_S)
/* How often deadlines are looked at: their resolution. */
#define SWEEP_MS 100
/* Unread input a connection may hold while its request is with a handler (reading is paused
 * then, so only what one read brought in beyond the request). */
#define MAX_UNREAD (HTTP_MAX_HEAD + 65536)
#define RETRY_AFTER_SECONDS 1
/* Connections accepted per readiness of a listening socket before the loop moves on. */
#define ACCEPT_BURST 64
/* Out of file descriptors: how long a listening socket rests before accepting again. */
#define ACCEPT_REST_MS 100

/* Why the server refused or cut something short: the label of http_limit_hits_total (limits)
 * or http_bad_requests_total (malformed requests). */
static const struct {
    const char *reason;
    int limit; /* a limit, not a malformed request */
    int quiet; /* counted, not logged: ordinary life of a server */
} REASONS[] = {
    {"request_timeout", 1, 0},
    {"body_too_slow", 1, 0},
    {"send_timeout", 1, 0},
    {"idle_timeout", 1, 1},
    {"body_buffer_full", 1, 0},
    {"connections_total", 1, 0},
    {"connections_per_ip", 1, 0},
    {"uri_too_long", 1, 0},
    {"header_too_large", 1, 0},
    {"body_too_large", 1, 0},
    {"request_line", 0, 0},
    {"version", 0, 0},
    {"connect", 0, 0},
    {"method", 0, 0},
    {"target", 0, 0},
    {"header", 0, 0},
    {"host", 0, 0},
    {"content_length", 0, 0},
    {"transfer_encoding", 0, 0},
    {"te_and_cl", 0, 0},
    {"expect", 0, 0},
    {"encoding", 0, 0},
    {"params", 0, 0},
    {"chunked", 0, 0},
};
#define NREASONS (sizeof REASONS / sizeof REASONS[0])

/* A socket the server listens on. The sockets are bound here, not by lws: lws 4.1 binds an
 * IPv4 address given as its interface to every address, and reports a busy port only in its
 * log. Each accepted connection is handed to lws as a raw socket of our protocol. */
typedef struct listening {
    uv_poll_t poll;
    uv_timer_t rest; /* restarts accepting after running out of file descriptors */
    struct httpd *server;
    int fd;
    int open_handles;
} listening;

typedef struct route {
    char method[HTTP_MAX_METHOD + 1];
    char *path;
    httpd_check check;
    httpd_handler fn;
    void *ud;
} route;

typedef struct conn conn;

struct httpd {
    uv_loop_t *loop;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    listening *listeners[LISTENER_MAX];
    size_t nlisteners;
    int port;
    const char *name;
    size_t max_body;
    httpd_limits lim;
    route routes[MAX_ROUTES];
    size_t nroutes;
    unsigned inflight;
    int stopping;
    conn *conns; /* every open connection, for the sweep and httpd_stop */
    unsigned nconns;
    strmap *per_ip;   /* client address key -> open connections (unsigned) */
    size_t body_held; /* request body bytes held or announced, across connections */
    uv_timer_t sweep;
    /* The connection whose lws callback is running, if any: it is closed by returning -1
     * from that callback, any other one by lws directly. */
    struct lws *in_callback;
    uint64_t *requests_total;
    uint64_t *errors_total;
    uint64_t *refused[NREASONS];
    log_limit logged[NREASONS];
    metrics_histogram *latency;
    char date[40]; /* the Date header, rewritten once a second */
    time_t date_at;
};

typedef struct param {
    char *name;
    char *value;
} param;

struct httpd_req {
    httpd *server;
    conn *conn; /* NULL once the client went away */
    char *head; /* the request's head; header values are NUL-terminated in place */
    http_head parsed;
    const route *route;
    char *path;
    param params[HTTP_MAX_PARAMS];
    size_t nparams;
    char *param_storage;
    buf body;
    size_t body_held;     /* what this request counts in server->body_held */
    uint64_t body_left;   /* Content-Length bytes still to come */
    http_chunked chunked; /* a chunked body's decoder */
    int body_unread;      /* the body has not all been read: the connection cannot go on */
    char peer[64];
    uint64_t started_ns;
    int dispatched; /* a handler has it */
    int answered;
    char *location;
};

typedef enum {
    CONN_IDLE,    /* between requests, no byte of the next one yet */
    CONN_HEAD,    /* a request's head is arriving */
    CONN_BODY,    /* its body is arriving */
    CONN_HANDLER, /* a handler has the request (reading is paused) */
    CONN_WRITING, /* the answer is going out (reading is paused) */
    CONN_LINGER,  /* answered and half-closed: what arrives is dropped until the client closes */
} conn_state;

/* One per client connection: lws' per-session memory, zeroed at accept, freed after
 * LWS_CALLBACK_RAW_CLOSE. */
struct conn {
    conn *prev, *next;
    httpd *server;
    struct lws *wsi;
    conn_state state;
    int registered; /* counted in nconns and per_ip */
    int dead;       /* close once the outermost code working on it returns */
    int advancing;  /* advance() runs: an answer sent meanwhile leaves the next request to it */
    buf in;         /* received bytes; unread from in_off */
    size_t in_off;
    size_t scanned; /* how far in was searched for the head's end */
    httpd_req *req; /* the request being read, or with a handler */
    int inflight;   /* the answer being written belongs to a request a handler had */
    int close_after;
    unsigned char *out; /* the answer: LWS_PRE bytes of headroom, then head and body */
    size_t out_len, out_sent;
    uint64_t deadline_ns; /* when this state's limit is up; 0: none (a handler has it) */
    uint64_t body_started_ns;
    uint64_t body_bytes; /* body bytes received, for the rate */
    char peer[64];
    char ip_key[48];
};

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

/* ---- counting and logging refusals ---- */

static size_t reason_index(const char *reason)
{
    for (size_t i = 0; i < NREASONS; i++)
        if (!strcmp(REASONS[i].reason, reason)) return i;
    return NREASONS;
}

static void note(httpd *h, const char *reason, const char *peer, const char *what)
{
    size_t i = reason_index(reason);
    if (i == NREASONS) return;
    (*h->refused[i])++;
    if (!REASONS[i].quiet)
        log_limited(&h->logged[i], LOG_WARN, h->name, "%s from %s (%s)", what, peer, reason);
}

/* ---- client addresses ---- */

/* The address as text, and the key its connections are counted under: the IPv4 address, or
 * an IPv6 address's /64 (one host usually has a whole /64). Mapped IPv4 counts as IPv4. */
static void describe_peer(const struct sockaddr_storage *ss, char *text, size_t textlen, char *key,
                          size_t keylen)
{
    snprintf(text, textlen, "?");
    snprintf(key, keylen, "?");
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, text, (socklen_t)textlen);
        snprintf(key, keylen, "%s", text);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], text, (socklen_t)textlen);
            snprintf(key, keylen, "%s", text);
            return;
        }
        inet_ntop(AF_INET6, &a->sin6_addr, text, (socklen_t)textlen);
        const unsigned char *b = a->sin6_addr.s6_addr;
        snprintf(key, keylen, "%02x%02x:%02x%02x:%02x%02x:%02x%02x::/64", b[0], b[1], b[2], b[3],
                 b[4], b[5], b[6], b[7]);
    }
}

static unsigned ip_count(const httpd *h, const char *key)
{
    unsigned n = 0;
    const void *v = strmap_get(h->per_ip, key, strlen(key), NULL);
    if (v) memcpy(&n, v, sizeof n);
    return n;
}

/* Adds delta to the key's count; the entry goes when it reaches zero. 0, or -1 when out of
 * memory. */
static int ip_add(httpd *h, const char *key, int delta)
{
    unsigned n = ip_count(h, key) + (unsigned)delta;
    if (!n) {
        strmap_del(h->per_ip, key, strlen(key));
        return 0;
    }
    return strmap_put(h->per_ip, key, strlen(key), &n, sizeof n);
}

/* ---- requests ---- */

static void req_free(httpd_req *r)
{
    if (!r) return;
    r->server->body_held -= r->body_held;
    free(r->head);
    free(r->path);
    free(r->param_storage);
    free(r->location);
    buf_free(&r->body);
    free(r);
}

/* Splits the target into the decoded path and query parameters. -1 with why filled, or with
 * why->status left 0 when memory ran out. */
static int split_target(httpd_req *r, http_refusal *why)
{
    const char *t = r->parsed.target;
    size_t n = r->parsed.target_len;
    const char *q = memchr(t, '?', n);
    size_t plen = q ? (size_t)(q - t) : n;
    r->path = malloc(plen + 1);
    if (!r->path) return -1;
    memcpy(r->path, t, plen);
    long dl = http_percent_decode(r->path, plen, false);
    if (dl < 0) goto bad_encoding;
    r->path[dl] = '\0';
    if (!q) return 0;
    size_t qlen = n - plen - 1;
    r->param_storage = malloc(qlen + 1);
    if (!r->param_storage) return -1;
    memcpy(r->param_storage, q + 1, qlen);
    r->param_storage[qlen] = '\0';
    /* Each name=value is decoded in place; decoding only shrinks, so pieces stay apart. */
    for (char *p = r->param_storage, *end = p + qlen; p < end;) {
        char *amp = memchr(p, '&', (size_t)(end - p));
        char *stop = amp ? amp : end;
        if (stop > p) {
            if (r->nparams == HTTP_MAX_PARAMS) {
                *why = (http_refusal){400, "InvalidRequest", "too many query parameters", "params"};
                return -1;
            }
            char *eq = memchr(p, '=', (size_t)(stop - p));
            char *vstart = eq ? eq + 1 : stop;
            long nl = http_percent_decode(p, (size_t)((eq ? eq : stop) - p), true);
            long vl = http_percent_decode(vstart, (size_t)(stop - vstart), true);
            if (nl < 0 || vl < 0) goto bad_encoding;
            p[nl] = '\0';
            vstart[vl] = '\0';
            r->params[r->nparams++] = (param){p, eq ? vstart : p + nl};
        }
        p = stop + 1;
    }
    return 0;
bad_encoding:
    *why = (http_refusal){400, "InvalidRequest", "malformed percent-encoding", "encoding"};
    return -1;
}

/* A request from its head (len bytes at data). NULL with why filled, or with why->status 0
 * when memory ran out. */
static httpd_req *req_new(conn *c, const char *data, size_t len, http_refusal *why)
{
    why->status = 0;
    httpd_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->server = c->server;
    r->conn = c;
    r->started_ns = now_ns();
    memcpy(r->peer, c->peer, sizeof r->peer);
    r->head = malloc(len + 1);
    if (!r->head) goto fail;
    memcpy(r->head, data, len);
    r->head[len] = '\0';
    if (http_parse_head(r->head, len, &r->parsed, why) < 0) goto fail;
    /* Values end before a line ending or trimmed whitespace, so the bytes after them are free
     * to become terminators now that parsing is done. */
    for (size_t i = 0; i < r->parsed.nfields; i++) {
        const http_field *f = &r->parsed.fields[i];
        r->head[(size_t)(f->value - r->head) + f->value_len] = '\0';
    }
    if (split_target(r, why) < 0) goto fail;
    r->body_unread = r->parsed.body != HTTP_BODY_NONE;
    r->body_left = r->parsed.content_length;
    return r;
fail:
    req_free(r);
    return NULL;
}

/* ---- closing ---- */

/* Closes c: at once when nothing of ours is working on it (lws calls back
 * LWS_CALLBACK_RAW_CLOSE, which frees c, before this returns), else by marking it dead for the
 * outermost caller: a callback of c returns -1, the others call this again when done. */
static void conn_kill(conn *c)
{
    if (c->advancing || c->server->in_callback == c->wsi)
        c->dead = 1;
    else
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
}

/* Half-closes after an answer that ends the connection, and drops what still arrives until
 * the client closes or the linger time is up. */
static void conn_linger(conn *c)
{
    c->state = CONN_LINGER;
    c->deadline_ns = now_ns() + LINGER_NS;
    c->in.len = c->in_off = 0;
    shutdown(lws_get_socket_fd(c->wsi), SHUT_WR);
    lws_rx_flow_control(c->wsi, 1);
}

/* ---- writing answers ---- */

static const char *status_text(int status)
{
    static const struct {
        int status;
        const char *text;
    } texts[] = {{200, "OK"},
                 {201, "Created"},
                 {204, "No Content"},
                 {301, "Moved Permanently"},
                 {302, "Found"},
                 {303, "See Other"},
                 {304, "Not Modified"},
                 {307, "Temporary Redirect"},
                 {308, "Permanent Redirect"},
                 {400, "Bad Request"},
                 {401, "Unauthorized"},
                 {403, "Forbidden"},
                 {404, "Not Found"},
                 {405, "Method Not Allowed"},
                 {408, "Request Timeout"},
                 {413, "Content Too Large"},
                 {414, "URI Too Long"},
                 {417, "Expectation Failed"},
                 {429, "Too Many Requests"},
                 {431, "Request Header Fields Too Large"},
                 {500, "Internal Server Error"},
                 {501, "Not Implemented"},
                 {502, "Bad Gateway"},
                 {503, "Service Unavailable"},
                 {504, "Gateway Timeout"},
                 {505, "HTTP Version Not Supported"}};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        if (texts[i].status == status) return texts[i].text;
    return "Status";
}

static const char *date_header(httpd *h)
{
    time_t now = time(NULL);
    if (now != h->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(h->date, sizeof h->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        h->date_at = now;
    }
    return h->date;
}

typedef struct {
    int status;
    const char *content_type;
    const char *location;  /* NULL: none */
    const char *allow;     /* NULL: none */
    int retry_after;       /* seconds; 0: none */
    int head_only;         /* HEAD: the length is sent, the body is not */
    int keep_alive_header; /* an HTTP/1.0 client asked for keep-alive */
} answer;

static int answer_sent(conn *c);

/* Writes what lws will take of the answer. 0, or -1 when the socket is dead. */
static int conn_write(conn *c)
{
    while (c->out_sent < c->out_len) {
        if (lws_partial_buffered(c->wsi)) break;
        size_t chunk = c->out_len - c->out_sent;
        if (chunk > WRITE_CHUNK) chunk = WRITE_CHUNK;
        if (lws_write(c->wsi, c->out + LWS_PRE + c->out_sent, chunk, LWS_WRITE_RAW) < (int)chunk)
            return -1;
        c->out_sent += chunk;
    }
    if (c->out_sent < c->out_len || lws_partial_buffered(c->wsi)) {
        lws_callback_on_writable(c->wsi);
        return 0;
    }
    return answer_sent(c);
}

/* Queues an answer on c and starts writing it. 0, or -1 when c must close now. */
static int conn_answer(conn *c, const answer *a, const char *body, size_t len)
{
    httpd *h = c->server;
    size_t room = 400 + strlen(a->content_type) + (a->location ? strlen(a->location) : 0) +
                  (a->allow ? strlen(a->allow) : 0);
    size_t send_len = a->head_only ? 0 : len;
    free(c->out);
    c->out = malloc(LWS_PRE + room + send_len);
    if (!c->out) return -1;
    char *p = (char *)c->out + LWS_PRE;
    int n = snprintf(p, room,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n",
                     a->status, status_text(a->status), date_header(h), a->content_type, len);
    if (a->location) n += snprintf(p + n, room - (size_t)n, "Location: %s\r\n", a->location);
    if (a->allow) n += snprintf(p + n, room - (size_t)n, "Allow: %s\r\n", a->allow);
    if (a->retry_after)
        n += snprintf(p + n, room - (size_t)n, "Retry-After: %d\r\n", a->retry_after);
    if (c->close_after)
        n += snprintf(p + n, room - (size_t)n, "Connection: close\r\n");
    else if (a->keep_alive_header)
        n += snprintf(p + n, room - (size_t)n, "Connection: keep-alive\r\n");
    n += snprintf(p + n, room - (size_t)n, "\r\n");
    if (send_len) memcpy(p + n, body, send_len);
    c->out_len = (size_t)n + send_len;
    c->out_sent = 0;
    c->state = CONN_WRITING;
    c->deadline_ns = now_ns() + (uint64_t)h->lim.request_timeout * NS_PER_S;
    /* Reading waits until the answer is out: a pipelined request is not looked at before. */
    lws_rx_flow_control(c->wsi, 0);
    return conn_write(c);
}

/* The XRPC error envelope into out: 0, or nonzero when out of memory. */
static int error_json(buf *out, const char *error, const char *message)
{
    int rc = buf_puts(out, "{\"error\":");
    rc |= buf_json_string(out, error, strlen(error));
    rc |= buf_puts(out, ",\"message\":");
    rc |= buf_json_string(out, message, strlen(message));
    return rc | buf_puts(out, "}");
}

/* An error answer in the XRPC envelope. */
static int conn_answer_error(conn *c, answer *a, const char *error, const char *message)
{
    buf out = {0};
    if (error_json(&out, error, message)) {
        buf_free(&out);
        return -1;
    }
    a->content_type = "application/json";
    int rc = conn_answer(c, a, out.data, out.len);
    buf_free(&out);
    return rc;
}

/* The server refuses what arrived on c (the request being read, if any, goes): counted under
 * reason, logged, answered in the envelope, and the connection closes after. */
static int conn_refuse(conn *c, int status, const char *error, const char *message,
                       const char *reason, int retry_after)
{
    httpd_req *r = c->req;
    c->req = NULL;
    note(c->server, reason, c->peer, message);
    answer a = {.status = status,
                .retry_after = retry_after,
                .head_only = r && !strcmp(r->parsed.method, "HEAD")};
    if (r) metrics_observe(c->server->latency, (double)(now_ns() - r->started_ns) / 1e9);
    req_free(r);
    c->close_after = 1;
    return conn_answer_error(c, &a, error, message);
}

/* The body is over the server's max_body: 413, and the connection closes. */
static int refuse_too_large(conn *c)
{
    char msg[64];
    snprintf(msg, sizeof msg, "request body over %zu bytes", c->server->max_body);
    return conn_refuse(c, 413, "PayloadTooLarge", msg, "body_too_large", 0);
}

static int conn_refuse_parse(conn *c, const http_refusal *why)
{
    if (!why->status) return -1; /* out of memory */
    return conn_refuse(c, why->status, why->error, why->message, why->reason, 0);
}

/* ---- reading requests ---- */

static const char *unread(const conn *c, size_t *n)
{
    *n = c->in.len - c->in_off;
    return c->in.data + c->in_off;
}

static void consume(conn *c, size_t n)
{
    c->in_off += n;
    if (c->in_off == c->in.len) c->in.len = c->in_off = 0;
}

static int take_input(conn *c, const void *data, size_t len)
{
    if (c->in_off && c->in_off > c->in.len / 2) {
        memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
        c->in.len -= c->in_off;
        c->in_off = 0;
    }
    return buf_append(&c->in, data, len);
}

static const route *find_route(const httpd *h, const char *method, const char *path, char *allow,
                               size_t allowlen)
{
    size_t used = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < h->nroutes; i++) {
        if (strcmp(h->routes[i].path, path)) continue;
        if (!strcmp(h->routes[i].method, method)) return &h->routes[i];
        int n =
            snprintf(allow + used, allowlen - used, "%s%s", used ? ", " : "", h->routes[i].method);
        if (n > 0 && (size_t)n < allowlen - used) used += (size_t)n;
    }
    return NULL;
}

/* Answers a request no route takes: 405 on a known path, 501 under /xrpc/, else 404. */
static int answer_unrouted(conn *c, httpd_req *r, const char *allow)
{
    answer a = {.head_only = !strcmp(r->parsed.method, "HEAD"), .allow = allow[0] ? allow : NULL};
    const char *error = "NotFound", *message = "no such path";
    char msg[64];
    if (allow[0]) {
        a.status = 405;
        error = "InvalidRequest";
        snprintf(msg, sizeof msg, "method %s not allowed here", r->parsed.method);
        message = msg;
    } else if (!strncmp(r->path, "/xrpc/", 6)) {
        a.status = 501;
        error = "MethodNotImplemented";
        message = "method not implemented";
    } else {
        a.status = 404;
    }
    metrics_observe(c->server->latency, (double)(now_ns() - r->started_ns) / 1e9);
    /* a body this request announced was never read: where the next request starts is
     * unknown */
    c->close_after |= r->body_unread || !r->parsed.keep_alive;
    a.keep_alive_header = !c->close_after && r->parsed.minor == 0;
    c->req = NULL;
    req_free(r);
    return conn_answer_error(c, &a, error, message);
}

static void dispatch(conn *c)
{
    httpd *h = c->server;
    httpd_req *r = c->req;
    c->state = CONN_HANDLER;
    c->deadline_ns = 0;
    lws_rx_flow_control(c->wsi, 0);
    r->dispatched = 1;
    h->inflight++;
    r->route->fn(r, r->route->ud);
}

/* A head is in: refuse the request, answer it, or get ready for its body. */
static int head_ready(conn *c)
{
    httpd *h = c->server;
    httpd_req *r = c->req;
    if (h->stopping)
        return conn_refuse(c, 503, "ServiceUnavailable", "server is shutting down", "", 0);
    char allow[128];
    r->route = find_route(h, r->parsed.method, r->path, allow, sizeof allow);
    if (!r->route) return answer_unrouted(c, r, allow);
    if (r->route->check && r->route->check(r, r->route->ud) < 0) return 0; /* answered */
    if (r->parsed.body == HTTP_BODY_LENGTH && r->parsed.content_length > h->max_body) {
        return refuse_too_large(c);
    }
    if (!r->body_unread) {
        dispatch(c);
        return 0;
    }
    uint64_t announced = r->parsed.body == HTTP_BODY_LENGTH ? r->parsed.content_length : 0;
    if (h->body_held + announced > h->lim.max_body_buffer)
        return conn_refuse(c, 503, "ServiceUnavailable", "too many request bodies in flight",
                           "body_buffer_full", RETRY_AFTER_SECONDS);
    if (announced && buf_reserve(&r->body, (size_t)announced) < 0)
        return conn_refuse(c, 503, "ServiceUnavailable", "out of memory", "body_buffer_full",
                           RETRY_AFTER_SECONDS);
    r->body_held = (size_t)announced;
    h->body_held += r->body_held;
    if (r->parsed.expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        unsigned char msg[LWS_PRE + sizeof cont];
        memcpy(msg + LWS_PRE, cont, sizeof cont - 1);
        if (lws_write(c->wsi, msg + LWS_PRE, sizeof cont - 1, LWS_WRITE_RAW) < 0) return -1;
    }
    c->state = CONN_BODY;
    c->body_started_ns = now_ns();
    c->body_bytes = 0;
    return 0;
}

static int read_head(conn *c)
{
    httpd *h = c->server;
    size_t n, head_len;
    const char *data = unread(c, &n);
    http_refusal why;
    int rc = http_head_find(data, n, &c->scanned, &head_len, &why);
    if (rc == 0) return 0;
    (*h->requests_total)++;
    if (rc < 0) return conn_refuse_parse(c, &why);
    c->req = req_new(c, data, head_len, &why);
    consume(c, head_len);
    c->scanned = 0;
    if (!c->req) return conn_refuse_parse(c, &why);
    return head_ready(c);
}

static int read_body(conn *c)
{
    httpd *h = c->server;
    httpd_req *r = c->req;
    size_t n;
    const char *data = unread(c, &n);
    int done;
    if (r->parsed.body == HTTP_BODY_LENGTH) {
        if (n > r->body_left) n = (size_t)r->body_left;
        if (buf_append(&r->body, data, n) < 0) return -1; /* reserved: cannot fail */
        r->body_left -= n;
        done = !r->body_left;
    } else {
        /* A chunked body's size is learned as it comes: it may grow only while every body
         * held stays under the cap. */
        size_t room =
            h->lim.max_body_buffer > h->body_held ? h->lim.max_body_buffer - h->body_held : 0;
        size_t max = r->body.len + room < h->max_body ? r->body.len + room : h->max_body;
        size_t before = r->body.len, used = 0;
        int rc = http_chunked_feed(&r->chunked, data, n, &used, &r->body, max);
        r->body_held += r->body.len - before;
        h->body_held += r->body.len - before;
        n = used;
        if (rc == HTTP_CHUNKED_BAD)
            return conn_refuse(c, 400, "InvalidRequest", "malformed chunked request body",
                               "chunked", 0);
        if (rc == HTTP_CHUNKED_BIG && max == h->max_body) return refuse_too_large(c);
        if (rc == HTTP_CHUNKED_BIG || rc == HTTP_CHUNKED_NOMEM)
            return conn_refuse(c, 503, "ServiceUnavailable", "too many request bodies in flight",
                               "body_buffer_full", RETRY_AFTER_SECONDS);
        done = rc == HTTP_CHUNKED_DONE;
    }
    consume(c, n);
    c->body_bytes += n;
    if (!done) return 0;
    r->body_unread = 0;
    dispatch(c);
    return 0;
}

/* Reads what c's input holds as far as the current state allows: heads, bodies, and the next
 * pipelined request once an answer is out. 0, or -1 when c must close. */
static int advance(conn *c)
{
    httpd *h = c->server;
    int rc = 0;
    c->advancing++;
    while (rc == 0 && !c->dead) {
        size_t n;
        unread(c, &n);
        if (c->state == CONN_IDLE) {
            if (!n) break;
            c->state = CONN_HEAD;
            c->deadline_ns = now_ns() + (uint64_t)h->lim.request_timeout * NS_PER_S;
        }
        conn_state was = c->state;
        if (c->state == CONN_HEAD)
            rc = read_head(c);
        else if (c->state == CONN_BODY)
            rc = read_body(c);
        else
            break;
        if (c->state == was) break; /* waits for more bytes */
    }
    c->advancing--;
    if (c->state != CONN_LINGER && c->in.len - c->in_off > MAX_UNREAD) rc = -1;
    return rc < 0 || c->dead ? -1 : 0;
}

/* The answer is all out: the request is over. */
static int answer_sent(conn *c)
{
    httpd *h = c->server;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_sent = 0;
    if (c->inflight) {
        c->inflight = 0;
        h->inflight--;
    }
    if (c->close_after || h->stopping) {
        conn_linger(c);
        return 0;
    }
    c->state = CONN_IDLE;
    c->deadline_ns = now_ns() + (uint64_t)h->lim.idle_timeout * NS_PER_S;
    lws_rx_flow_control(c->wsi, 1);
    /* Within advance() its loop goes on with a pipelined request; from anywhere else (an
     * asynchronous answer, the rest of a long one) it is read from here. */
    return c->advancing ? 0 : advance(c);
}

/* ---- lws callbacks ---- */

/* Before lws adopts a new connection fd from addr: the connection caps. A refused client gets
 * a short 503 written straight to its socket; the caller closes it. */
static int admit(httpd *h, int fd, const struct sockaddr_storage *addr)
{
    char peer[64], key[48];
    describe_peer(addr, peer, sizeof peer, key, sizeof key);
    const char *reason = NULL;
    if (h->nconns >= h->lim.max_connections)
        reason = "connections_total";
    else if (ip_count(h, key) >= h->lim.max_connections_per_ip)
        reason = "connections_per_ip";
    if (!reason) return 0;
    note(h, reason, peer, "connection refused: too many connections");
    static const char msg[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Content-Length: 63\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        "{\"error\":\"ServiceUnavailable\",\"message\":\"too many connections\"}";
    (void)!send(fd, msg, sizeof msg - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    return 1;
}

static int conn_open(httpd *h, struct lws *wsi, conn *c)
{
    c->server = h;
    c->wsi = wsi;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    memset(&ss, 0, sizeof ss);
    getpeername(lws_get_socket_fd(wsi), (struct sockaddr *)&ss, &sl);
    describe_peer(&ss, c->peer, sizeof c->peer, c->ip_key, sizeof c->ip_key);
    if (ip_add(h, c->ip_key, 1) < 0) return -1;
    c->registered = 1;
    h->nconns++;
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    c->state = CONN_IDLE;
    c->deadline_ns = now_ns() + (uint64_t)h->lim.idle_timeout * NS_PER_S;
    return 0;
}

static void conn_closed(conn *c)
{
    httpd *h = c->server;
    if (!h || !c->registered) return;
    c->registered = 0;
    ip_add(h, c->ip_key, -1);
    h->nconns--;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    httpd_req *r = c->req;
    if (r) {
        /* a handler still has it and will answer into the void; otherwise it is ours */
        r->conn = NULL;
        if (!r->dispatched) req_free(r);
    }
    if (c->inflight) h->inflight--;
    buf_free(&c->in);
    free(c->out);
}

static int on_rx(conn *c, const void *in, size_t len)
{
    if (c->state == CONN_LINGER) return 0;
    if (take_input(c, in, len) < 0) return -1;
    return advance(c);
}

static int on_writable(conn *c)
{
    if (c->state != CONN_WRITING) return 0;
    return conn_write(c);
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    httpd *h = lws_context_user(lws_get_context(wsi));
    conn *c = user;
    if (reason != LWS_CALLBACK_RAW_ADOPT && reason != LWS_CALLBACK_RAW_RX &&
        reason != LWS_CALLBACK_RAW_WRITEABLE && reason != LWS_CALLBACK_RAW_CLOSE)
        return 0;
    if (!c) return 0;
    struct lws *outer = h->in_callback;
    h->in_callback = wsi;
    int rc = 0;
    switch (reason) {
    case LWS_CALLBACK_RAW_ADOPT:
        rc = conn_open(h, wsi, c);
        break;
    case LWS_CALLBACK_RAW_RX:
        rc = on_rx(c, in, len);
        break;
    case LWS_CALLBACK_RAW_WRITEABLE:
        rc = on_writable(c);
        break;
    default:
        conn_closed(c);
        break;
    }
    h->in_callback = outer;
    return rc < 0 || c->dead ? -1 : 0;
}

static const struct lws_protocols protocols[] = {
    {.name = "http",
     .callback = callback_http,
     .per_session_data_size = sizeof(conn),
     .tx_packet_size = WRITE_CHUNK},
    {0},
};

/* ---- deadlines ---- */

/* Whether a body, past its grace, has kept up the minimum rate on average. */
static int body_too_slow(const httpd *h, const conn *c, uint64_t now)
{
    uint64_t elapsed = now - c->body_started_ns;
    if (!h->lim.min_body_rate || elapsed < (uint64_t)h->lim.body_grace * NS_PER_S) return 0;
    return (double)c->body_bytes < (double)h->lim.min_body_rate * (double)elapsed / 1e9;
}

static void expire(conn *c, uint64_t now)
{
    httpd *h = c->server;
    int rc = 0;
    switch (c->state) {
    case CONN_IDLE:
        note(h, "idle_timeout", c->peer, "idle connection closed");
        conn_kill(c);
        return;
    case CONN_HEAD:
    case CONN_BODY:
        if (now >= c->deadline_ns)
            rc = conn_refuse(c, 408, "RequestTimeout", "the request took too long to arrive",
                             "request_timeout", 0);
        else
            rc = conn_refuse(c, 408, "RequestTimeout", "the request body arrives too slowly",
                             "body_too_slow", 0);
        break;
    case CONN_WRITING:
        note(h, "send_timeout", c->peer, "the client did not take its answer");
        conn_kill(c);
        return;
    case CONN_LINGER:
        conn_kill(c);
        return;
    case CONN_HANDLER:
        return;
    }
    if (rc < 0 || c->dead) conn_kill(c);
}

static void on_sweep(uv_timer_t *t)
{
    httpd *h = t->data;
    uint64_t now = now_ns();
    for (conn *c = h->conns, *next; c; c = next) {
        next = c->next;
        if (c->deadline_ns &&
            (now >= c->deadline_ns || (c->state == CONN_BODY && body_too_slow(h, c, now))))
            expire(c, now);
    }
}

/* ---- answering ---- */

void httpd_reply(httpd_req *r, int status, const char *content_type, const char *body, size_t len)
{
    httpd *h = r->server;
    if (r->answered) {
        log_error(h->name, "request %s answered twice (bug)", r->path);
        return;
    }
    r->answered = 1;
    metrics_observe(h->latency, (double)(now_ns() - r->started_ns) / 1e9);
    if (status >= 500) (*h->errors_total)++;
    conn *c = r->conn;
    if (!c) {
        if (r->dispatched) h->inflight--;
        req_free(r);
        return;
    }
    answer a = {.status = status,
                .content_type = content_type,
                .location = r->location,
                .head_only = !strcmp(r->parsed.method, "HEAD")};
    /* an unread body (a check answered) leaves the framing in doubt */
    c->close_after |= r->body_unread || !r->parsed.keep_alive || h->stopping;
    a.keep_alive_header = !c->close_after && r->parsed.minor == 0;
    c->inflight = r->dispatched; /* the drain waits for the answer to be out */
    c->req = NULL;
    int rc = conn_answer(c, &a, body, len);
    req_free(r);
    if (rc < 0 || c->dead) conn_kill(c);
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
    if (error_json(&out, error, msg))
        httpd_reply(r, 500, "text/plain", "", 0);
    else
        httpd_reply_json(r, status, out.data, out.len);
    buf_free(&out);
}

void httpd_reply_redirect(httpd_req *r, int status, const char *location)
{
    /* a header value: a control character would end it and start another */
    for (const char *p = location; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            log_error(r->server->name, "redirect to a location with a control character");
            httpd_reply(r, 500, "text/plain", "", 0);
            return;
        }
    free(r->location);
    r->location = strdup(location);
    if (!r->location) {
        httpd_reply(r, 500, "text/plain", "", 0);
        return;
    }
    httpd_reply(r, status, "text/plain", "", 0);
}

/* ---- the server's own state ---- */

void httpd_limits_from_options(httpd_limits *l, const option_value *v)
{
    l->request_timeout = (unsigned)v[0].num;
    l->body_grace = (unsigned)v[1].num;
    l->min_body_rate = (unsigned)v[2].num;
    l->idle_timeout = (unsigned)v[3].num;
    l->max_body_buffer = (size_t)v[4].num;
    l->max_connections = (unsigned)v[5].num;
    l->max_connections_per_ip = (unsigned)v[6].num;
}

static double gauge_connections(void *ud)
{
    return ((httpd *)ud)->nconns;
}

static double gauge_body_held(void *ud)
{
    return (double)((httpd *)ud)->body_held;
}

/* Limits with the documented defaults for zero fields (the body rate's zero means none). */
static httpd_limits limits_or_defaults(const httpd_limits *in)
{
    httpd_limits l = *in;
    if (!l.request_timeout) l.request_timeout = 30;
    if (!l.idle_timeout) l.idle_timeout = 30;
    if (!l.max_body_buffer) l.max_body_buffer = 64u << 20;
    if (!l.max_connections) l.max_connections = 4096;
    if (!l.max_connections_per_ip) l.max_connections_per_ip = 1024;
    return l;
}

static httpd *server_new(uv_loop_t *loop, const char *name, const httpd_options *opt)
{
    httpd *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->per_ip = strmap_new();
    if (!h->per_ip) {
        free(h);
        return NULL;
    }
    h->loop = loop;
    h->name = name;
    h->max_body = opt->max_body ? opt->max_body : 1 << 20;
    h->lim = limits_or_defaults(&opt->limits);
    h->requests_total = metrics_counter("http_requests_total", "HTTP requests received");
    h->errors_total =
        metrics_counter("http_server_errors_total", "HTTP answers with status >= 500");
    for (size_t i = 0; i < NREASONS; i++) {
        char metric[96];
        snprintf(metric, sizeof metric, "%s{reason=\"%s\"}",
                 REASONS[i].limit ? "http_limit_hits_total" : "http_bad_requests_total",
                 REASONS[i].reason);
        h->refused[i] = metrics_counter(
            metric, REASONS[i].limit ? "Requests and connections cut short by a limit"
                                     : "HTTP requests refused as malformed");
    }
    h->latency = metrics_histogram_get("http_request_duration_seconds",
                                       "Time from request arrival to answer queued");
    metrics_gauge("http_connections", "Open client connections", gauge_connections, h);
    metrics_gauge("http_body_buffer_bytes", "Request body bytes held across connections",
                  gauge_body_held, h);
    log_info(name,
             "limits: request %us, body %u B/s after %us, idle %us, %zu body bytes held, "
             "%u connections (%u per address)",
             h->lim.request_timeout, h->lim.min_body_rate, h->lim.body_grace, h->lim.idle_timeout,
             h->lim.max_body_buffer, h->lim.max_connections, h->lim.max_connections_per_ip);
    return h;
}

/* The deadline sweep; it does not keep the loop alive on its own. */
static int server_start(httpd *h)
{
    if (uv_timer_init(h->loop, &h->sweep) != 0) return -1;
    h->sweep.data = h;
    uv_unref((uv_handle_t *)&h->sweep);
    return uv_timer_start(&h->sweep, on_sweep, SWEEP_MS, SWEEP_MS) == 0 ? 0 : -1;
}

/* Frees what server_new made, once lws and the sweep are gone. */
static void server_free(httpd *h)
{
    if (h->ctx) lws_context_destroy(h->ctx);
    for (size_t i = 0; i < h->nroutes; i++)
        free(h->routes[i].path);
    strmap_free(h->per_ip);
    free(h);
}

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
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        memset(&ss, 0, sizeof ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
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
        if (admit(l->server, fd, &ss)) {
            close(fd);
            continue;
        }
        int one = 1; /* answers go out in one write each: no reason to wait for more */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        lws_sock_file_fd_type desc = {.sockfd = fd};
        if (!lws_adopt_descriptor_vhost(l->server->vhost, LWS_ADOPT_SOCKET, desc, protocols[0].name,
                                        NULL)) /* lws closed fd */
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

/* Gives up on a server that never served: its listening sockets close when the loop runs
 * next. */
static httpd *server_abandon(httpd *h)
{
    for (size_t i = 0; i < h->nlisteners; i++)
        listening_close(h->listeners[i]);
    server_free(h);
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
    httpd *h = server_new(loop, name, opt);
    if (!h) {
        listener_close(&bound);
        return NULL;
    }
    h->port = bound.port;

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
    /* lws only moves bytes: every connection is accepted here and adopted as a raw socket of
     * our protocol (on_acceptable) */
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBUV;
    info.foreign_loops = foreign;
    info.user = h;
    h->ctx = lws_create_context(&info);
    if (!h->ctx || server_start(h) < 0) {
        log_error(name, "cannot create the HTTP server (libwebsockets) on %s", opt->listen);
        return server_abandon(h);
    }
    h->vhost = lws_get_vhost_by_name(h->ctx, "default");
    char where[512];
    listener_describe(&bound, where, sizeof where);
    log_info(name, "listening on %s", where);
    return h;
}

int httpd_route_checked(httpd *h, const char *method, const char *path, httpd_check check,
                        httpd_handler fn, void *ud)
{
    if (h->nroutes == MAX_ROUTES) return -1;
    route *r = &h->routes[h->nroutes];
    snprintf(r->method, sizeof r->method, "%s", method);
    r->path = strdup(path);
    if (!r->path) return -1;
    r->check = check;
    r->fn = fn;
    r->ud = ud;
    h->nroutes++;
    return 0;
}

int httpd_route(httpd *h, const char *method, const char *path, httpd_handler fn, void *ud)
{
    return httpd_route_checked(h, method, path, NULL, fn, ud);
}

int httpd_port(const httpd *h)
{
    return h->port;
}

void httpd_stop(httpd *h)
{
    h->stopping = 1;
    for (conn *c = h->conns, *next; c; c = next) {
        next = c->next;
        int rc = 0;
        switch (c->state) {
        case CONN_IDLE:
        case CONN_LINGER:
            c->dead = 1;
            break;
        case CONN_HEAD:
        case CONN_BODY:
            /* not a handler's yet: a body still arriving is not waited for */
            rc = conn_refuse(c, 503, "ServiceUnavailable", "server is shutting down", "", 0);
            break;
        case CONN_HANDLER:
        case CONN_WRITING:
            c->close_after = 1;
            break;
        }
        if (rc < 0 || c->dead) conn_kill(c);
    }
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
    uv_close((uv_handle_t *)&h->sweep, NULL);
    /* On a foreign loop the first destroy only starts closing lws' handles; the loop must run
     * until they are closed, then the second destroy finishes (see EVENT-LOOP.md). */
    lws_context_destroy(h->ctx);
    uv_run(h->loop, UV_RUN_DEFAULT);
    lws_context_destroy(h->ctx);
    h->ctx = NULL;
    server_free(h);
}

/* ---- accessors ---- */

const char *httpd_req_method(const httpd_req *r)
{
    return r->parsed.method;
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

const char *httpd_req_header_len(const httpd_req *r, const char *name, size_t *len)
{
    const http_field *f = http_head_field(&r->parsed, name);
    if (!f) return NULL;
    if (len) *len = f->value_len;
    return f->value;
}

const char *httpd_req_header(const httpd_req *r, const char *name)
{
    return httpd_req_header_len(r, name, NULL);
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
