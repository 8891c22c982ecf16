/* An HTTP/1.1 server for XRPC on a libuv loop. It listens on sockets atproto/listener binds
 * and accepts the connections itself; libwebsockets moves their bytes (its raw-socket role);
 * reading requests is atproto/http_parse's (RFC 9112), and the limits that keep a hostile
 * client cheap are applied here.
 *
 * Routes are exact paths ("/xrpc/io.atcr.repo.listTags"). A handler receives a request and
 * must answer it exactly once with one of the httpd_reply_* calls, either before it returns
 * or later from any callback on the same loop (an asynchronous Valkey or upstream reply).
 * The request object stays valid until it is answered, even if the client went away, in
 * which case the reply is dropped. Unknown /xrpc/ paths get 501 MethodNotImplemented, other
 * unknown paths 404, a known path with another method 405 (with Allow), unknown methods 501,
 * CONNECT, HTTP/0.9 and malformed requests 400, bodies over the cap 413, all in the XRPC
 * error envelope. Every request gets an answer; after a refusal whose framing is in doubt the
 * connection closes. Connections are HTTP/1.1 keep-alive with pipelining; HTTP/1.0 too.
 *
 * Limits (httpd_limits; each hit is counted in http_limit_hits_total{reason}, malformed
 * requests in http_bad_requests_total{reason}):
 * - a request's head and body must arrive within request_timeout of its first byte (408,
 *   "request_timeout"), and the body at min_body_rate bytes/s on average once body_grace has
 *   passed (408, "body_too_slow"); an answer must be taken within request_timeout too
 *   ("send_timeout", closed);
 * - a connection idle between requests is closed after idle_timeout ("idle_timeout");
 * - bodies held across all connections (read, or announced by Content-Length) stay under
 *   max_body_buffer: a request that would pass it gets 503 with Retry-After before its body is
 *   read ("body_buffer_full"), and requests already accepted keep theirs;
 * - connections are capped in total and per client address (an IPv6 client by its /64): an
 *   extra one gets a 503 and is closed ("connections_total", "connections_per_ip");
 * - the request line is at most HTTP_MAX_LINE bytes (414, "uri_too_long"), the head at most
 *   HTTP_MAX_HEAD (431, "header_too_large"), a body at most max_body (413, "body_too_large").
 * After an answer that closes the connection, what the client still sends is read and dropped
 * for up to 2 s, so it reads the answer instead of a reset. */
#ifndef ATPROTO_HTTPD_H
#define ATPROTO_HTTPD_H

#include <stddef.h>
#include <uv.h>

#include "atproto/options.h"

typedef struct httpd httpd;
typedef struct httpd_req httpd_req;

typedef void (*httpd_handler)(httpd_req *req, void *ud);
/* Runs once a request's head is in, before any byte of its body is read (authentication from
 * the headers). Returns 0 to go on, or -1 after answering the request itself: its body is then
 * never read, and the connection closes after the answer. */
typedef int (*httpd_check)(httpd_req *req, void *ud);

/* Zero fields take the defaults in brackets, but a zero body rate means no minimum. The
 * options (HTTPD_OPTIONS) default to the bracketed values, and to 5 s and 1024 B/s for the
 * body. */
typedef struct {
    unsigned request_timeout; /* seconds for a request's head and body, and for its answer [30] */
    unsigned body_grace;      /* seconds before min_body_rate applies */
    unsigned min_body_rate;   /* bytes/s a body must average after the grace; 0: none */
    unsigned idle_timeout;    /* seconds a keep-alive connection may wait for a request [30] */
    size_t max_body_buffer;   /* body bytes held across all connections [64 MiB] */
    unsigned max_connections; /* open connections in total [4096] */
    unsigned max_connections_per_ip; /* open connections per client address [1024] */
} httpd_limits;

/* The option table rows for httpd_limits, for a service's configuration: environment
 * variables PREFIX_HTTP_REQUEST_TIMEOUT, ..., flags --http-request-timeout, ... Place them
 * together (HTTPD_OPTION_COUNT rows) and read them back with httpd_limits_from_options. */
#define HTTPD_OPTION_COUNT 7
#define HTTPD_OPTIONS(PREFIX)                                                                      \
    OPT_INT("http-request-timeout", PREFIX "_HTTP_REQUEST_TIMEOUT", "30",                          \
            "seconds for a request's head and body (and to take its answer)", 1, 3600),            \
        OPT_INT("http-body-grace", PREFIX "_HTTP_BODY_GRACE", "5",                                 \
                "seconds before a body must keep up --http-min-body-rate", 0, 3600),               \
        OPT_INT("http-min-body-rate", PREFIX "_HTTP_MIN_BODY_RATE", "1024",                        \
                "bytes/s a request body must average once the grace is over", 0, 1L << 30),        \
        OPT_INT("http-idle-timeout", PREFIX "_HTTP_IDLE_TIMEOUT", "30",                            \
                "seconds a keep-alive connection may wait for its next request", 1, 3600),         \
        OPT_INT("http-max-body-buffer", PREFIX "_HTTP_MAX_BODY_BUFFER", "67108864",                \
                "request body bytes held across all connections; past it 503", 1, 1L << 40),       \
        OPT_INT("http-max-connections", PREFIX "_HTTP_MAX_CONNECTIONS", "4096",                    \
                "open client connections in total", 1, 1000000),                                   \
        OPT_INT("http-max-connections-per-ip", PREFIX "_HTTP_MAX_CONNECTIONS_PER_IP", "1024",      \
                "open connections per client address (IPv6: per /64); behind a reverse proxy "     \
                "every client has the proxy's",                                                    \
                1, 1000000)

/* Fills l from the HTTPD_OPTION_COUNT values parsed from HTTPD_OPTIONS rows. */
void httpd_limits_from_options(httpd_limits *l, const option_value *v);

typedef struct {
    const char *listen;  /* a listen address (atproto/listener.h); port 0 picks a free one */
    size_t max_body;     /* request body cap in bytes; 0 means 1 MiB */
    const char *name;    /* component name for logs, e.g. "appview" */
    const char *setting; /* where listen came from, for errors: "--listen, APPVIEW_LISTEN" */
    httpd_limits limits;
} httpd_options;

/* Creates the server on loop, bound to every address listen names (atproto/listener.h) before
 * it returns. NULL on failure, with one error line naming the address, the setting, the cause
 * and what to do; handles it had opened close when the loop runs next. */
httpd *httpd_new(uv_loop_t *loop, const httpd_options *opt);
/* method is "GET" or "POST". Returns 0, or -1 when out of memory. */
int httpd_route(httpd *h, const char *method, const char *path, httpd_handler fn, void *ud);
/* The same, with check run on the head before the body is read. */
int httpd_route_checked(httpd *h, const char *method, const char *path, httpd_check check,
                        httpd_handler fn, void *ud);
/* The port actually bound (useful with port 0). */
int httpd_port(const httpd *h);
/* Stops taking requests: new ones are answered 503 ServiceUnavailable (the socket keeps
 * listening until httpd_free), requests whose head or body is still arriving too, and idle
 * connections close; requests handlers hold may still be answered. httpd_inflight counts
 * those and their answers until sent (an answer the client does not take is dropped after
 * request_timeout). Run the loop until it is zero (e.g. poll it from a timer, then uv_stop),
 * then httpd_free. */
void httpd_stop(httpd *h);
unsigned httpd_inflight(const httpd *h);
/* Tears the lws context down: runs uv_run(UV_RUN_DEFAULT) on the loop until no handle at all
 * remains, so the caller must first close (uv_close) every handle of its own on that loop
 * (timers, signals, hiredis, curl), or this never returns. Call it once httpd_inflight is
 * zero: a request still unanswered then is never freed, and answering it later is a bug. */
void httpd_free(httpd *h);

/* Request accessors; strings belong to the request and live until it is answered. */
const char *httpd_req_method(const httpd_req *r);
const char *httpd_req_path(const httpd_req *r);
/* URL-decoded query parameter, first occurrence; NULL when absent. */
const char *httpd_req_param(const httpd_req *r, const char *name);
/* Number of occurrences of a parameter, and the i-th one (repeated params like collections). */
size_t httpd_req_param_count(const httpd_req *r, const char *name);
const char *httpd_req_param_at(const httpd_req *r, const char *name, size_t i);
/* Header value (name in any case, e.g. "authorization"), surrounding whitespace removed;
 * NULL when absent. A value never holds a NUL, CR, LF or other control character but HTAB:
 * requests with one are refused. With len, its length. */
const char *httpd_req_header(const httpd_req *r, const char *name);
const char *httpd_req_header_len(const httpd_req *r, const char *name, size_t *len);
/* Client address as text ("127.0.0.1", "::1"). */
const char *httpd_req_peer(const httpd_req *r);
const char *httpd_req_body(const httpd_req *r, size_t *len);
/* Seconds since the request arrived (for latency metrics). */
double httpd_req_age(const httpd_req *r);

/* Answers. Each takes ownership of nothing the caller passes: bodies are copied. */
void httpd_reply(httpd_req *r, int status, const char *content_type, const char *body, size_t len);
void httpd_reply_json(httpd_req *r, int status, const char *json, size_t len);
__attribute__((format(printf, 4, 5))) void
httpd_reply_error(httpd_req *r, int status, const char *error, const char *fmt, ...);
void httpd_reply_redirect(httpd_req *r, int status, const char *location);

#endif
