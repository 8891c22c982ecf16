/* An HTTP/1.1 server for XRPC on a libuv loop, built on libwebsockets.
 *
 * Routes are exact paths ("/xrpc/io.atcr.repo.listTags"). A handler receives a request and
 * must answer it exactly once with one of the httpd_reply_* calls, either before it returns
 * or later from any callback on the same loop (an asynchronous Valkey or upstream reply).
 * The request object stays valid until it is answered, even if the client went away, in
 * which case the reply is dropped. Unknown /xrpc/ paths get 501 MethodNotImplemented, other
 * unknown paths 404, a known path with another method 405, bodies over the limit 413, all in
 * the XRPC error envelope. Request bodies come with a Content-Length or chunked.
 * Connections are HTTP/1.1 keep-alive; request headers may total up to 16 KiB (larger ones are
 * refused by closing the connection). Answers are written at once when the socket has room,
 * so a handler may reply from its own stack frame without waiting a loop turn. */
#ifndef ATPROTO_HTTPD_H
#define ATPROTO_HTTPD_H

#include <stddef.h>
#include <uv.h>

typedef struct httpd httpd;
typedef struct httpd_req httpd_req;

typedef void (*httpd_handler)(httpd_req *req, void *ud);

typedef struct {
    const char *listen;  /* a listen address (atproto/listener.h); port 0 picks a free one */
    size_t max_body;     /* request body cap in bytes; 0 means 1 MiB */
    const char *name;    /* component name for logs, e.g. "appview" */
    const char *setting; /* where listen came from, for errors: "--listen, APPVIEW_LISTEN" */
} httpd_options;

/* Creates the server on loop, bound to every address listen names (atproto/listener.h) before
 * it returns. NULL on failure, with one error line naming the address, the setting, the cause
 * and what to do; handles it had opened close when the loop runs next. */
httpd *httpd_new(uv_loop_t *loop, const httpd_options *opt);
/* method is "GET" or "POST". Returns 0, or -1 when out of memory. */
int httpd_route(httpd *h, const char *method, const char *path, httpd_handler fn, void *ud);
/* The port actually bound (useful with port 0). */
int httpd_port(const httpd *h);
/* Stops taking requests: new ones are answered 503 ServiceUnavailable (the socket keeps
 * listening until httpd_free), requests in flight may still be answered. Run the loop until
 * httpd_inflight is zero (e.g. poll it from a timer, then uv_stop), then httpd_free. */
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
/* Header value (name lower case, e.g. "authorization"); NULL when absent. */
const char *httpd_req_header(const httpd_req *r, const char *name);
/* Client address as text ("127.0.0.1", "::1"); "" if first asked after the client left. */
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
