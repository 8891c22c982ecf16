#include "atproto/http_client.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "atproto/backoff.h"
#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/netguard.h"
#include "atproto/url.h"

#define MAX_HEADER_BYTES (64 * 1024)
#define RETRY_CAP_MS 10000

enum req_state { REQ_QUEUED, REQ_ACTIVE, REQ_BACKOFF, REQ_REPORTING };

struct host {
    struct host *next;
    char *key;
    int active;
    int refs; /* requests naming this host, whatever their state */
    struct req *qhead, *qtail;
};

struct req {
    http_client *c;
    struct req *prev, *next; /* every pending request, for http_client_free */
    struct req *qnext;       /* the host's wait queue */
    struct host *host;
    enum req_state state;
    char *url;
    bool post;
    char *post_body;
    size_t post_len;
    struct curl_slist *headers;
    long timeout_ms;
    bool trusted;
    http_done_cb cb;
    void *ud;
    CURL *easy;
    int attempts;
    uint64_t start_ns;
    buf body;
    buf hdrs; /* "name\0value\0" pairs of the last response, names lower case */
    bool too_large, headers_too_large, blocked;
    enum netguard_class blocked_class;
    enum http_error error;
    long status;
    char errbuf[CURL_ERROR_SIZE];
    uv_timer_t timer;
};

struct sockctx {
    uv_poll_t poll;
    curl_socket_t fd;
    http_client *c;
    struct sockctx *prev, *next;
};

struct http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    http_client_options opt;
    char *user_agent;
    struct host *hosts;
    struct req *reqs;
    struct sockctx *socks;
    unsigned pending;
    int depth;
    bool closing, free_requested;
};

static void req_start(struct req *r);
static void check_multi_info(http_client *c);
static void client_do_free(http_client *c);

const char *http_error_name(enum http_error e)
{
    switch (e) {
    case HTTP_OK:
        return "OK";
    case HTTP_E_TIMEOUT:
        return "TIMEOUT";
    case HTTP_E_CONNECT:
        return "CONNECT";
    case HTTP_E_RESOLVE:
        return "RESOLVE";
    case HTTP_E_TOO_LARGE:
        return "TOO_LARGE";
    case HTTP_E_BLOCKED:
        return "BLOCKED";
    case HTTP_E_PROTOCOL:
        return "PROTOCOL";
    case HTTP_E_INVALID:
        return "INVALID";
    case HTTP_E_CANCELLED:
        return "CANCELLED";
    case HTTP_E_NOMEM:
        break;
    }
    return "NOMEM";
}

/* ---- dispatch depth: lets a callback free the client safely ---- */

static void enter(http_client *c)
{
    c->depth++;
}

static void leave(http_client *c)
{
    if (--c->depth == 0 && c->free_requested) client_do_free(c);
}

/* ---- hosts and their queues ---- */

static struct host *host_get(http_client *c, const char *key)
{
    for (struct host *h = c->hosts; h; h = h->next)
        if (strcmp(h->key, key) == 0) return h;
    struct host *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->key = strdup(key);
    if (!h->key) {
        free(h);
        return NULL;
    }
    h->next = c->hosts;
    c->hosts = h;
    return h;
}

static void host_unref(http_client *c, struct host *h)
{
    if (--h->refs > 0) return;
    for (struct host **p = &c->hosts; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            free(h->key);
            free(h);
            return;
        }
    }
}

static void host_enqueue(struct req *r)
{
    struct host *h = r->host;
    r->state = REQ_QUEUED;
    if (h->active < r->c->opt.max_per_host && !h->qhead) {
        req_start(r);
        return;
    }
    r->qnext = NULL;
    if (h->qtail)
        h->qtail->qnext = r;
    else
        h->qhead = r;
    h->qtail = r;
}

static void host_unqueue(struct req *r)
{
    struct host *h = r->host;
    struct req *prev = NULL;
    for (struct req *q = h->qhead; q; prev = q, q = q->qnext) {
        if (q != r) continue;
        if (prev)
            prev->qnext = q->qnext;
        else
            h->qhead = q->qnext;
        if (h->qtail == q) h->qtail = prev;
        return;
    }
}

static void host_pump(http_client *c, struct host *h)
{
    while (h->qhead && h->active < c->opt.max_per_host) {
        struct req *r = h->qhead;
        h->qhead = r->qnext;
        if (!h->qhead) h->qtail = NULL;
        req_start(r);
    }
}

/* ---- completion ---- */

static void req_free_cb(uv_handle_t *h)
{
    struct req *r = h->data;
    buf_free(&r->body);
    buf_free(&r->hdrs);
    curl_slist_free_all(r->headers);
    free(r->post_body);
    free(r->url);
    free(r);
}

const char *http_result_header(const http_result *res, const char *name)
{
    const struct req *r = res->priv;
    if (!r) return NULL;
    const char *p = r->hdrs.data, *end = r->hdrs.data + r->hdrs.len;
    while (p && p < end) {
        const char *value = p + strlen(p) + 1;
        if (strcasecmp(p, name) == 0) return value;
        p = value + strlen(value) + 1;
    }
    return NULL;
}

long http_result_wait_ms(const http_result *r, const char *reset_header)
{
    if (r->retry_after >= 0) return r->retry_after * 1000;
    const char *v = reset_header ? http_result_header(r, reset_header) : NULL;
    if (!v) v = http_result_header(r, "ratelimit-reset");
    if (!v) return -1;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end || n < 0) return -1;
    if (n < 1000000000LL) return (long)(n * 1000);
    uv_timeval64_t now;
    uv_gettimeofday(&now);
    long long ms = n * 1000 - (now.tv_sec * 1000LL + now.tv_usec / 1000);
    return ms > 0 ? (long)ms : 0;
}

static long parse_retry_after(const char *v)
{
    if (!v) return -1;
    char *end;
    long n = strtol(v, &end, 10);
    if (end != v && *end == '\0' && n >= 0) return n;
    time_t when = curl_getdate(v, NULL);
    if (when < 0) return -1;
    time_t now = time(NULL);
    return when > now ? (long)(when - now) : 0;
}

/* Reports the outcome to the caller and releases the request. */
static void req_finish(struct req *r)
{
    http_client *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    c->pending--;
    if (r->host) {
        struct host *h = r->host;
        r->host = NULL;
        host_unref(c, h);
    }
    if (r->error != HTTP_OK && !r->errbuf[0])
        snprintf(r->errbuf, sizeof r->errbuf, "%s", http_error_name(r->error));
    bool have_response = r->error == HTTP_OK;
    http_result res = {
        .error = r->error,
        .status = r->status,
        .body = have_response && r->body.data ? r->body.data : "",
        .len = have_response ? r->body.len : 0,
        .error_text = r->error == HTTP_OK ? "" : r->errbuf,
        .retry_after = -1,
        .attempts = r->attempts,
        .elapsed_ms = (double)(uv_hrtime() - r->start_ns) / 1e6,
        .url = r->url,
        .priv = have_response ? r : NULL,
    };
    if (have_response) res.retry_after = parse_retry_after(http_result_header(&res, "retry-after"));
    r->cb(&res, r->ud);
    uv_close((uv_handle_t *)&r->timer, req_free_cb);
}

static void on_deferred(uv_timer_t *t)
{
    struct req *r = t->data;
    http_client *c = r->c;
    enter(c);
    if (r->state == REQ_REPORTING) {
        req_finish(r);
    } else {
        r->state = REQ_QUEUED;
        host_enqueue(r);
    }
    leave(c);
}

/* Completes asynchronously: callers never see their callback run inside http_get. */
static void req_fail_later(struct req *r, enum http_error e, const char *why)
{
    r->error = e;
    snprintf(r->errbuf, sizeof r->errbuf, "%s", why);
    r->state = REQ_REPORTING;
    uv_timer_start(&r->timer, on_deferred, 0, 0);
}

static enum http_error map_curl_error(struct req *r, CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return HTTP_OK;
    case CURLE_WRITE_ERROR:
        if (r->too_large) return HTTP_E_TOO_LARGE;
        return HTTP_E_PROTOCOL;
    case CURLE_FILESIZE_EXCEEDED:
        r->too_large = true;
        return HTTP_E_TOO_LARGE;
    case CURLE_OPERATION_TIMEDOUT:
        return HTTP_E_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
        return r->blocked ? HTTP_E_BLOCKED : HTTP_E_CONNECT;
    case CURLE_UNSUPPORTED_PROTOCOL: {
        /* Either a redirect to a refused scheme, or a reply that is not HTTP at all. */
        long code = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
        return code >= 300 && code < 400 ? HTTP_E_BLOCKED : HTTP_E_PROTOCOL;
    }
    case CURLE_COULDNT_RESOLVE_HOST:
        return HTTP_E_RESOLVE;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
        return HTTP_E_CONNECT;
    case CURLE_URL_MALFORMAT:
        return HTTP_E_INVALID;
    case CURLE_OUT_OF_MEMORY:
        return HTTP_E_NOMEM;
    default:
        return HTTP_E_PROTOCOL;
    }
}

static bool retryable(struct req *r, CURLcode rc, bool connected)
{
    if (r->post) return rc == CURLE_COULDNT_CONNECT && !r->blocked;
    if (r->error == HTTP_OK) return r->status >= 500 && r->status <= 599 && r->status != 501;
    if (r->error == HTTP_E_TIMEOUT)
        return !connected; /* a connect timeout; a slow server already used its budget */
    if (r->error == HTTP_E_CONNECT) return rc != CURLE_PEER_FAILED_VERIFICATION;
    return false;
}

static void req_done(http_client *c, CURL *easy, CURLcode rc)
{
    struct req *r = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    curl_multi_remove_handle(c->multi, easy);
    curl_off_t connect_us = 0;
    curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &connect_us);
    r->error = map_curl_error(r, rc);
    r->status = 0;
    if (r->error == HTTP_OK) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->error == HTTP_E_PROTOCOL && r->headers_too_large)
        snprintf(r->errbuf, sizeof r->errbuf, "response headers over %d bytes", MAX_HEADER_BYTES);
    if (r->error == HTTP_E_TOO_LARGE)
        snprintf(r->errbuf, sizeof r->errbuf, "response body over %zu bytes",
                 c->opt.max_body_bytes);
    if (r->error == HTTP_E_BLOCKED)
        snprintf(r->errbuf, sizeof r->errbuf,
                 r->blocked ? "refused to connect to a %s address"
                            : "redirect to a scheme that is not allowed%s",
                 r->blocked ? netguard_class_name(r->blocked_class) : "");
    curl_easy_cleanup(easy);
    r->easy = NULL;
    r->host->active--;
    host_pump(c, r->host); /* before req_finish, which may release the host */

    if (r->attempts < c->opt.max_attempts && retryable(r, rc, connect_us > 0)) {
        uint64_t delay = backoff_delay_ms((uint64_t)c->opt.retry_base_ms, RETRY_CAP_MS,
                                          (unsigned)r->attempts - 1);
        log_debug("http", "retrying %s in %llu ms (attempt %d: %s %ld)", r->url,
                  (unsigned long long)delay, r->attempts, http_error_name(r->error), r->status);
        r->state = REQ_BACKOFF;
        uv_timer_start(&r->timer, on_deferred, delay, 0);
    } else {
        req_finish(r);
    }
}

static void check_multi_info(http_client *c)
{
    CURLMsg *msg;
    int left;
    while (!c->closing && (msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg == CURLMSG_DONE) req_done(c, msg->easy_handle, msg->data.result);
    }
}

/* ---- libcurl callbacks ---- */

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct req *r = ud;
    size_t len = size * n;
    if (r->body.len + len > r->c->opt.max_body_bytes) {
        r->too_large = true;
        return 0;
    }
    if (buf_append(&r->body, data, len) != 0) return 0;
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct req *r = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        buf_reset(&r->hdrs); /* a new response (redirect hop or 100-continue) */
        return len;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon || colon == data) return len;
    if (r->hdrs.len + len + 2 > MAX_HEADER_BYTES) {
        r->headers_too_large = true;
        return 0;
    }
    size_t name_len = (size_t)(colon - data);
    const char *v = colon + 1, *end = data + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t start = r->hdrs.len;
    if (buf_append(&r->hdrs, data, name_len) != 0 || buf_append(&r->hdrs, "", 1) != 0 ||
        buf_append(&r->hdrs, v, (size_t)(end - v)) != 0 || buf_append(&r->hdrs, "", 1) != 0)
        return 0;
    for (size_t i = start; i < start + name_len; i++)
        r->hdrs.data[i] = (char)tolower((unsigned char)r->hdrs.data[i]);
    return len;
}

/* The SSRF guard: sees every address after DNS resolution, on every hop and retry. */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct req *r = ud;
    enum netguard_class cls = netguard_classify_sockaddr(&a->addr);
    long hops = 0;
    curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_COUNT, &hops);
    /* Trust covers the configured URL's own host, not where it redirects to. */
    bool trusted = r->trusted && hops == 0;
    if (!netguard_allowed(cls, r->c->opt.allow_private || trusted)) {
        r->blocked = true;
        r->blocked_class = cls;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sockctx *sc = p->data;
    http_client *c = sc->c;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running;
    enter(c);
    curl_multi_socket_action(c->multi, sc->fd, flags, &running);
    check_multi_info(c);
    leave(c);
}

static void sock_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void sock_close(http_client *c, struct sockctx *sc)
{
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        c->socks = sc->next;
    if (sc->next) sc->next->prev = sc->prev;
    uv_close((uv_handle_t *)&sc->poll, sock_free_cb);
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *socketp)
{
    http_client *c = ud;
    struct sockctx *sc = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            curl_multi_assign(c->multi, s, NULL);
            sock_close(c, sc);
        }
        return 0;
    }
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc) return -1;
        if (uv_poll_init_socket(c->loop, &sc->poll, s) != 0) {
            free(sc);
            return -1;
        }
        sc->fd = s;
        sc->c = c;
        sc->poll.data = sc;
        sc->next = c->socks;
        if (c->socks) c->socks->prev = sc;
        c->socks = sc;
        curl_multi_assign(c->multi, s, sc);
    }
    int ev = 0;
    if (what & CURL_POLL_IN) ev |= UV_READABLE;
    if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
    return uv_poll_start(&sc->poll, ev, on_poll) == 0 ? 0 : -1;
}

static void on_curl_timeout(uv_timer_t *t)
{
    http_client *c = t->data;
    int running;
    enter(c);
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(c);
    leave(c);
}

static int on_timer(CURLM *m, long timeout_ms, void *ud)
{
    http_client *c = ud;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- requests ---- */

static int setup_easy(struct req *r)
{
    http_client *c = r->c;
    const char *protocols = c->opt.allow_http ? "http,https" : "https";
    const char *first_hop = c->opt.allow_http || r->trusted ? "http,https" : "https";
    CURL *e = curl_easy_init();
    if (!e) return -1;
    r->easy = e;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, r->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROXY, "") != CURLE_OK; /* no proxy from the env */
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, first_hop) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, protocols) != CURLE_OK;
    bad |=
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, c->opt.max_redirects > 0 ? 1L : 0L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)c->opt.max_redirects) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->opt.connect_timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                            r->timeout_ms > 0 ? r->timeout_ms : c->opt.timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->opt.max_body_bytes) !=
           CURLE_OK;
    /* Decoded bytes count against the cap, so a compressed bomb stops at the cap too. */
    bad |= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, r) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) != CURLE_OK;
    if (r->headers) bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) != CURLE_OK;
    if (r->post) {
        bad |=
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->post_len) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->post_body) != CURLE_OK;
    }
    return bad ? -1 : 0;
}

static void req_start(struct req *r)
{
    http_client *c = r->c;
    r->attempts++;
    r->too_large = r->headers_too_large = r->blocked = false;
    r->errbuf[0] = '\0';
    buf_reset(&r->body);
    buf_reset(&r->hdrs);
    if (setup_easy(r) != 0 || curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) {
        if (r->easy) curl_easy_cleanup(r->easy);
        r->easy = NULL;
        req_fail_later(r, HTTP_E_NOMEM, "could not set up the transfer");
        return;
    }
    r->state = REQ_ACTIVE;
    r->host->active++;
}

/* The scheme check and the host key; 0, or an error with its text in why. */
static enum http_error url_check(http_client *c, const char *url, bool trusted, char *key,
                                 size_t keylen, char *why, size_t whylen)
{
    url_parts u;
    char reason[96];
    if (url_parse(url, &u, reason, sizeof reason) < 0) {
        snprintf(why, whylen, "not a valid URL: %s", reason);
        return strcmp(reason, "out of memory") ? HTTP_E_INVALID : HTTP_E_NOMEM;
    }
    enum http_error e = HTTP_OK;
    if (strcmp(u.scheme, "https") != 0 &&
        !((c->opt.allow_http || trusted) && strcmp(u.scheme, "http") == 0)) {
        e = HTTP_E_BLOCKED;
        snprintf(why, whylen, "scheme %s is not allowed", u.scheme);
    } else if (!*u.host) {
        e = HTTP_E_INVALID;
        snprintf(why, whylen, "not a valid URL: no host");
    } else if ((size_t)snprintf(key, keylen, "%s://%s:%d", u.scheme, u.host, u.port) >= keylen) {
        e = HTTP_E_INVALID;
        snprintf(why, whylen, "host name too long");
    } else {
        for (char *p = key; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
    url_parts_free(&u);
    return e;
}

static int submit(http_client *c, const char *url, bool post, const char *content_type,
                  const void *body, size_t len, const http_request_options *opt, http_done_cb cb,
                  void *ud)
{
    if (c->closing || c->free_requested) return -1;
    struct req *r = calloc(1, sizeof *r);
    if (!r) return -1;
    r->c = c;
    r->cb = cb;
    r->ud = ud;
    r->post = post;
    r->start_ns = uv_hrtime();
    r->url = strdup(url);
    bool nomem = !r->url;
    if (opt) {
        r->timeout_ms = opt->timeout_ms;
        r->trusted = opt->trusted;
        for (const char *const *h = opt->headers; h && *h && !nomem; h++) {
            struct curl_slist *n = curl_slist_append(r->headers, *h);
            nomem = !n;
            r->headers = n ? n : r->headers;
        }
    }
    if (post && !nomem) {
        char ct[256];
        snprintf(ct, sizeof ct, "Content-Type: %s",
                 content_type ? content_type : "application/json");
        struct curl_slist *n = curl_slist_append(r->headers, ct);
        n = n ? curl_slist_append(n, "Expect:") : NULL;
        nomem = !n;
        r->headers = n ? n : r->headers;
        r->post_body = malloc(len + 1);
        nomem = nomem || !r->post_body;
        if (r->post_body) {
            if (len) memcpy(r->post_body, body, len);
            r->post_len = len;
        }
    }
    if (nomem) {
        curl_slist_free_all(r->headers);
        free(r->post_body);
        free(r->url);
        free(r);
        return -1;
    }
    uv_timer_init(c->loop, &r->timer);
    r->timer.data = r;
    r->next = c->reqs;
    if (c->reqs) c->reqs->prev = r;
    c->reqs = r;
    c->pending++;

    char key[512], why[128];
    enum http_error e = url_check(c, url, r->trusted, key, sizeof key, why, sizeof why);
    if (e == HTTP_OK) {
        r->host = host_get(c, key);
        if (r->host) {
            r->host->refs++;
        } else {
            e = HTTP_E_NOMEM;
            snprintf(why, sizeof why, "out of memory");
        }
    }
    if (e != HTTP_OK) {
        req_fail_later(r, e, why);
        return 0;
    }
    /* Start from the loop, so the callback can never run inside this call. */
    r->state = REQ_QUEUED;
    uv_timer_start(&r->timer, on_deferred, 0, 0);
    return 0;
}

int http_get(http_client *c, const char *url, const http_request_options *opt, http_done_cb cb,
             void *ud)
{
    return submit(c, url, false, NULL, NULL, 0, opt, cb, ud);
}

int http_post(http_client *c, const char *url, const char *content_type, const void *body,
              size_t len, const http_request_options *opt, http_done_cb cb, void *ud)
{
    return submit(c, url, true, content_type, body, len, opt, cb, ud);
}

unsigned http_client_pending(const http_client *c)
{
    return c->pending;
}

/* ---- lifetime ---- */

http_client *http_client_new(uv_loop_t *loop, const http_client_options *opt)
{
    static bool curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
        curl_ready = true;
    }
    http_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = loop;
    if (opt) c->opt = *opt;
    if (!c->opt.connect_timeout_ms) c->opt.connect_timeout_ms = 5000;
    if (!c->opt.timeout_ms) c->opt.timeout_ms = 15000;
    if (!c->opt.max_body_bytes) c->opt.max_body_bytes = 5u << 20;
    if (c->opt.max_per_host <= 0) c->opt.max_per_host = 8;
    if (c->opt.max_attempts <= 0) c->opt.max_attempts = 3;
    if (c->opt.retry_base_ms <= 0) c->opt.retry_base_ms = 200;
    if (c->opt.max_redirects < 0)
        c->opt.max_redirects = 0;
    else if (!c->opt.max_redirects)
        c->opt.max_redirects = 3;
    c->user_agent =
        strdup(c->opt.user_agent ? c->opt.user_agent : "atcr-appview/0.1 (+https://atcr.io)");
    c->opt.user_agent = NULL;
    c->multi = curl_multi_init();
    if (!c->user_agent || !c->multi) {
        if (c->multi) curl_multi_cleanup(c->multi);
        free(c->user_agent);
        free(c);
        return NULL;
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    return c;
}

static void client_free_cb(uv_handle_t *h)
{
    http_client *c = h->data;
    free(c->user_agent);
    free(c);
}

static void client_do_free(http_client *c)
{
    c->closing = true;
    c->free_requested = false;
    while (c->reqs) {
        struct req *r = c->reqs;
        uv_timer_stop(&r->timer);
        if (r->state == REQ_ACTIVE) {
            curl_multi_remove_handle(c->multi, r->easy);
            curl_easy_cleanup(r->easy);
            r->easy = NULL;
            r->host->active--;
        } else if (r->state == REQ_QUEUED && r->host) {
            host_unqueue(r);
        }
        r->error = HTTP_E_CANCELLED;
        snprintf(r->errbuf, sizeof r->errbuf, "http client shut down");
        req_finish(r);
    }
    /* curl closes its cached connections; we only stop watching them. */
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, NULL);
    while (c->socks)
        sock_close(c, c->socks);
    curl_multi_cleanup(c->multi);
    while (c->hosts) {
        struct host *h = c->hosts;
        c->hosts = h->next;
        free(h->key);
        free(h);
    }
    uv_close((uv_handle_t *)&c->timer, client_free_cb);
}

void http_client_free(http_client *c)
{
    if (!c || c->closing) return;
    if (c->depth > 0) {
        c->free_requested = true;
        return;
    }
    client_do_free(c);
}
