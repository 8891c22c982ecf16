/* Outbound HTTP on a libuv loop (libcurl multi socket API): no threads of ours, no blocking
 * call on the loop. Every request has a connect and a total timeout, a body cap, bounded
 * retries with backoff and jitter, a per-host concurrency limit, and the SSRF guard
 * (atproto/netguard.h) applied to every address it connects to, redirects included.
 *
 * Contract: http_get/http_post return 0 when the request was accepted; its callback is then
 * invoked exactly once, always later from the loop (never from inside http_get), including for
 * URLs refused before any connection. They return -1 only when out of memory or when the
 * client is being freed; the callback is then never invoked. */
#ifndef ATPROTO_HTTP_CLIENT_H
#define ATPROTO_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct http_client http_client;

typedef struct {
    const char *user_agent;  /* default "atcr-appview/0.1 (+https://atcr.io)" */
    long connect_timeout_ms; /* per attempt; default 5000 */
    long timeout_ms;         /* whole attempt, connect included; default 15000 */
    size_t max_body_bytes;   /* default 5 MiB */
    int max_per_host;        /* concurrent transfers per scheme://host:port; default 8 */
    int max_attempts;        /* 5xx and connection errors; default 3 */
    long retry_base_ms;      /* first backoff, doubled per attempt (atproto/backoff.h); 200 */
    int max_redirects;       /* default 3; negative: never follow */
    bool allow_private;      /* connect to loopback/private/link-local/... addresses */
    bool allow_http;         /* plain http:// URLs and redirects */
} http_client_options;

enum http_error {
    HTTP_OK,          /* a response arrived: look at status (4xx and 5xx included) */
    HTTP_E_TIMEOUT,   /* connect or total timeout */
    HTTP_E_CONNECT,   /* refused, reset, TLS failure */
    HTTP_E_RESOLVE,   /* the host name did not resolve (no such name, or DNS unreachable) */
    HTTP_E_TOO_LARGE, /* body over max_body_bytes: the transfer was aborted */
    HTTP_E_BLOCKED,   /* SSRF guard: scheme or address not allowed */
    HTTP_E_PROTOCOL,  /* malformed response, too many redirects */
    HTTP_E_INVALID,   /* not a valid URL */
    HTTP_E_CANCELLED, /* the client was freed */
    HTTP_E_NOMEM,
};

typedef struct http_result http_result;
struct http_result {
    enum http_error error;
    long status;      /* last HTTP status, 0 when no response */
    const char *body; /* NUL-terminated; "" when none */
    size_t len;
    const char *error_text; /* human readable, "" on success */
    long retry_after;       /* seconds from Retry-After (delta or date), -1 when absent */
    int attempts;
    double elapsed_ms; /* from http_get to completion, backoff included */
    const char *url;   /* the URL asked for */
    const void *priv;  /* for http_result_header */
};

/* Response header of the final response, by case-insensitive name; NULL when absent.
 * Valid during the callback only, like every pointer in the result. */
const char *http_result_header(const http_result *r, const char *name);

/* How long the server asked the client to wait (a 429 or 503), in ms: its Retry-After, else a
 * rate-limit reset header (RateLimit-Reset as the atproto PDS sends it, or reset_header when not
 * NULL, e.g. "x-ratelimit-reset"): Unix seconds when it is a date after 2001, else seconds from
 * now. -1 when it names no wait. */
long http_result_wait_ms(const http_result *r, const char *reset_header);

const char *http_error_name(enum http_error e);

typedef void (*http_done_cb)(const http_result *res, void *ud);

typedef struct {
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    long timeout_ms;            /* overrides the client's total timeout when > 0 */
    /* Set only for URLs from the operator's own configuration (PLC directory, handle
     * resolver): those may use http and live on private addresses even when the guard is
     * on. Redirects from them get no such trust: the guard applies to every later hop. */
    bool trusted;
} http_request_options;

/* Returns NULL when out of memory. opt may be NULL for the defaults. */
http_client *http_client_new(uv_loop_t *loop, const http_client_options *opt);

int http_get(http_client *c, const char *url, const http_request_options *opt, http_done_cb cb,
             void *ud);
/* body is copied. POSTs are retried like GETs only when the request never reached the
 * server (connection failures); a 5xx answer to a POST is returned as is. */
int http_post(http_client *c, const char *url, const char *content_type, const void *body,
              size_t len, const http_request_options *opt, http_done_cb cb, void *ud);

/* Requests not yet answered: queued, in flight or waiting for a retry. */
unsigned http_client_pending(const http_client *c);

/* Cancels everything: each pending request's callback is invoked, synchronously from here,
 * with HTTP_E_CANCELLED (new requests made from those callbacks are refused with -1). The
 * client's memory is released once the loop has run its handle close callbacks, so run the
 * loop (uv_run) after this before uv_loop_close. */
void http_client_free(http_client *c);

#endif
