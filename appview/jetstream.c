/* The Jetstream client: one connection at a time, on a socket of its own watched by a
 * uv_poll_t on the caller's loop, TLS by OpenSSL on that socket for wss://; a retry timer for
 * reconnects, a tick timer for stall detection, an idle handle that drains bytes read but not
 * parsed (once per loop iteration: see on_drain).
 *
 * ws:// and wss:// take the same path: the WebSocket handshake and framing are done here,
 * looking at frame headers only. A message that sits whole in the read buffer goes straight
 * to the caller (no copy); only fragmented or split messages are reassembled, into one
 * reusable buffer. (libwebsockets' own client parser walks every payload byte, and its raw
 * sockets cannot start TLS under libuv, so wss:// used to take that slower path.) Liveness is
 * a read counter the tick timer samples, so a read costs no timer or clock call.
 *
 * Each connection is a `conn` of its own: dropping one abandons it (its poll handle closes,
 * and its close callback frees it), so nothing of an old connection is ever read again. The
 * client itself is freed from the close callback of its last handle. */
#include "appview/jetstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "appview/jetstream_wire.h"
#include "atproto/backoff.h"
#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/metrics.h"

#define C "jetstream"
/* Read up to this much per readiness: a burst of small events is one read, not many. */
#define RX_BUFFER (256 * 1024)
#define BACKOFF_BASE_MS 250
#define BACKOFF_CAP_MS 30000
#define DEFAULT_STALL_SECONDS 30
#define DEFAULT_MAX_MESSAGE (4u << 20)
#define MAX_RESPONSE_HEAD 16384

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

enum state { ST_IDLE, ST_FETCHING, ST_CONNECTING, ST_UP, ST_WAITING, ST_FREEING };

/* What the client knows of an endpoint's dictionary. */
enum dict_state { DICT_NONE, DICT_FETCHING, DICT_READY, DICT_OFF };

typedef struct {
    jetstream_endpoint w;
    enum dict_state dict_state;
    ZSTD_DDict *ddict;
    unsigned dict_id;
    unsigned refused_dict_id; /* the id the server refused last: a refetch must not bring it */
} endpoint;

typedef struct conn {
    struct jetstream *js; /* NULL once abandoned */
    uv_poll_t poll;
    int fd;
    SSL *ssl;
    int events;       /* what poll watches */
    int tcp_up;       /* connect() completed */
    int tls_up;       /* handshake completed (or no TLS) */
    int read_wants_w; /* SSL_read asked for writability */
} conn;

/* A dictionary fetch, outliving the client if it must (the HTTP client calls back later). */
typedef struct {
    struct jetstream *js; /* NULL once the client was freed */
    size_t ep;
} dict_fetch;

/* A DNS lookup in libuv's thread pool, likewise. */
typedef struct {
    uv_getaddrinfo_t req;
    struct jetstream *js; /* NULL once abandoned */
} lookup;

struct jetstream {
    uv_loop_t *loop;
    jetstream_options opt;
    endpoint *eps;
    size_t neps;
    SSL_CTX *tls;

    enum state state;
    conn *c;                            /* the current connection */
    lookup *dns;                        /* the current lookup */
    struct addrinfo *ai_list, *ai_next; /* addresses of the current attempt */
    dict_fetch *fetch;                  /* the current dictionary fetch */
    uint64_t gen;                       /* bumped whenever the current connection is dropped */
    size_t cur;                         /* endpoint in use or last tried */
    size_t round_left;                  /* immediate attempts left before the next backoff */
    unsigned attempt;                   /* backoffs in a row */
    unsigned too_old_streak, dict_streak;
    int paused;
    unsigned pending; /* handles not yet closed and lookups not yet called back */

    uv_timer_t retry, tick;
    uv_idle_t drain;
    int handles; /* how many of retry, tick and drain were initialised */
    uint64_t stall_ms;
    uint64_t reads;      /* reads on the current connection */
    uint64_t reads_seen; /* reads at the last tick */
    uint64_t delivered;  /* messages on the current connection */
    uint64_t last_activity_ms;
    char last_error[300]; /* why the last attempt failed or the last connection ended */

    /* handshake */
    buf out; /* bytes to send: the upgrade request, pongs */
    size_t out_off;
    char accept[32];    /* the Sec-WebSocket-Accept we expect */
    buf head;           /* the response head (and a refusal's body) while it arrives */
    int open;           /* 101 seen: framing from here on */
    int refused;        /* a refusal's head seen: collecting its body */
    size_t refusal_end; /* where that body ends in head, when Content-Length said */
    unsigned dict_sent; /* the dictionary id this connection asked for, 0: none */
    int compressed;

    /* framing */
    unsigned char hdr[14];
    size_t hdr_have;
    int in_payload, opcode, fin;
    uint64_t payload_left;
    unsigned char ctl[125];
    size_t ctl_len;
    char close_reason[64];

    /* message reassembly */
    size_t max_message;
    buf msg;
    size_t msg_bytes;
    int in_message, skipping, binary;

    /* decompression */
    ZSTD_DCtx *dctx;
    char *plain; /* max_message bytes */

    /* bytes read but not yet parsed because the caller paused mid-read */
    buf stash, stash_spare;
    char *rx; /* RX_BUFFER */

    uint64_t *messages_total, *bytes_total, *plain_bytes_total, *reconnects_total, *stalls_total,
        *oversize_total, *binary_total, *zstd_errors_total, *dict_fetches_total, *refused_invalid,
        *refused_too_old, *refused_dict, *refused_other;
};

static unsigned connected_instances, compressed_instances;

static double connected_gauge(void *ud)
{
    (void)ud;
    return connected_instances;
}

static double compressed_gauge(void *ud)
{
    (void)ud;
    return compressed_instances;
}

static void maybe_free(jetstream *js);
static void connect_now(jetstream *js);
static void on_poll(uv_poll_t *h, int status, int events);
static void on_readable(jetstream *js);
static void flush_out(jetstream *js);

/* ---- the connection's socket ---- */

static void on_conn_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);
    free(c);
}

/* Stops watching c and lets its close callback free it. */
static void conn_abandon(conn *c)
{
    if (!c) return;
    c->js = NULL;
    uv_close((uv_handle_t *)&c->poll, on_conn_closed);
}

static void set_events(jetstream *js, int events)
{
    conn *c = js->c;
    if (!c || c->events == events) return;
    c->events = events;
    if (events ? uv_poll_start(&c->poll, events, on_poll) : uv_poll_stop(&c->poll))
        log_error(C, "cannot watch the socket");
}

/* What the socket must be watched for now. */
static void update_events(jetstream *js)
{
    conn *c = js->c;
    if (!c) return;
    int ev = 0;
    if (!c->tcp_up) {
        ev = UV_WRITABLE;
    } else if (!c->tls_up) {
        ev = c->events ? c->events : UV_READABLE | UV_WRITABLE; /* the handshake decides */
    } else {
        /* bytes kept from before a pause go first */
        if (!(js->paused && js->open) && !js->stash.len) ev |= UV_READABLE;
        if (js->out.len > js->out_off || c->read_wants_w) ev |= UV_WRITABLE;
    }
    set_events(js, ev);
}

/* ---- connection life cycle ---- */

static void on_retry(uv_timer_t *t)
{
    connect_now(t->data);
}

static void reset_connection_state(jetstream *js)
{
    js->gen++;
    conn_abandon(js->c);
    js->c = NULL;
    if (js->dns) {
        js->dns->js = NULL; /* its callback frees what it found */
        uv_cancel((uv_req_t *)&js->dns->req);
    }
    js->dns = NULL;
    if (js->ai_list) freeaddrinfo(js->ai_list);
    js->ai_list = js->ai_next = NULL;
    if (js->compressed) compressed_instances--;
    js->open = js->refused = js->compressed = 0;
    js->hdr_have = 0;
    js->in_payload = js->in_message = 0;
    buf_reset(&js->head);
    buf_reset(&js->msg);
    buf_reset(&js->stash);
    buf_reset(&js->out);
    js->out_off = 0;
    if (js->handles == 3) uv_idle_stop(&js->drain);
}

typedef enum {
    RETRY_SAME_NOW,     /* the same URL at once: a reconnect asked for, a refusal handled */
    RETRY_NEXT,         /* the next URL; a backoff once every URL failed in a row */
    RETRY_SAME_BACKOFF, /* the same URL after a backoff: the server said to go away */
} retry_how;

/* Forgets the current connection and schedules the next attempt. A connection that delivered
 * messages is retried at once on the same URL, where its seq cursor is good. */
static void connection_lost(jetstream *js, const char *why, retry_how how)
{
    endpoint *e = &js->eps[js->cur];
    int was_up = js->state == ST_UP;
    if (was_up) {
        connected_instances--;
        log_info(C, "disconnected from %s after %llu messages: %s", e->w.url,
                 (unsigned long long)js->delivered, why);
    } else {
        log_warn(C, "cannot connect to %s (APPVIEW_JETSTREAM_URLS): %s", e->w.url, why);
    }
    snprintf(js->last_error, sizeof js->last_error, "%s: %s", e->w.url, why);
    reset_connection_state(js);
    js->state = ST_WAITING;
    (*js->reconnects_total)++;

    uint64_t delay = 0;
    if (how == RETRY_NEXT && js->delivered > 0) how = RETRY_SAME_NOW;
    if (how == RETRY_SAME_BACKOFF) {
        delay = backoff_delay_ms(BACKOFF_BASE_MS, BACKOFF_CAP_MS, js->attempt);
        if (js->attempt < 32) js->attempt++;
        log_info(C, "retrying %s in %llu ms", e->w.url, (unsigned long long)delay);
    } else if (how == RETRY_SAME_NOW) {
        js->round_left = js->neps;
        if (js->delivered > 0) js->attempt = 0;
    } else {
        js->cur = (js->cur + 1) % js->neps;
        if (--js->round_left == 0) {
            delay = backoff_delay_ms(BACKOFF_BASE_MS, BACKOFF_CAP_MS, js->attempt);
            if (js->attempt < 32) js->attempt++;
            js->round_left = js->neps;
            log_info(C, "all %zu URL(s) failed; retrying in %llu ms", js->neps,
                     (unsigned long long)delay);
        }
    }
    if (uv_timer_start(&js->retry, on_retry, delay, 0))
        log_error(C, "cannot start the retry timer; staying disconnected");
    if (was_up && js->opt.on_state) js->opt.on_state(js->opt.ud, 0);
}

static void on_tick(uv_timer_t *t)
{
    jetstream *js = t->data;
    if (js->state != ST_CONNECTING && js->state != ST_UP) return;
    uint64_t now = uv_now(js->loop);
    if ((js->paused && js->open) || js->reads != js->reads_seen) {
        js->reads_seen = js->reads;
        js->last_activity_ms = now;
        return;
    }
    if (now - js->last_activity_ms < js->stall_ms) return;
    (*js->stalls_total)++;
    char why[64];
    snprintf(why, sizeof why, "stalled (nothing received for %llu s)",
             (unsigned long long)(js->stall_ms / 1000));
    connection_lost(js, why, RETRY_NEXT);
}

/* ---- the dictionary (v2 compression) ---- */

static void dict_off(endpoint *e, const char *why)
{
    e->dict_state = DICT_OFF;
    log_warn(C, "%s: no zstd dictionary (%s): reading it uncompressed", e->w.url, why);
}

static void on_dictionary(const http_result *res, void *ud)
{
    dict_fetch *f = ud;
    jetstream *js = f->js;
    size_t ep = f->ep;
    free(f);
    if (!js) return; /* the client is gone */
    js->fetch = NULL;
    endpoint *e = &js->eps[ep];
    unsigned id = res->error == HTTP_OK && res->status == 200
                      ? jetstream_dictionary_id(res->body, res->len)
                      : 0;
    char why[160];
    if (res->error == HTTP_E_CANCELLED) { /* the HTTP client is going away, and so is this */
        e->dict_state = DICT_NONE;
        js->state = ST_WAITING;
        return;
    }
    if (res->error != HTTP_OK || res->status != 200) {
        snprintf(why, sizeof why, "fetching it failed: %s %ld %.80s", http_error_name(res->error),
                 res->status, res->error_text);
        dict_off(e, why);
    } else if (!id) {
        dict_off(e, "the answer is not a zstd dictionary");
    } else if (id == e->refused_dict_id) {
        dict_off(e, "the server refuses the dictionary it serves");
    } else {
        ZSTD_freeDDict(e->ddict);
        e->ddict = ZSTD_createDDict(res->body, res->len);
        if (!e->ddict) {
            dict_off(e, "libzstd cannot load it");
        } else {
            e->dict_state = DICT_READY;
            e->dict_id = id;
            log_info(C, "%s: zstd dictionary %u (%zu bytes)", e->w.url, id, res->len);
        }
    }
    if (js->state == ST_FETCHING) connect_now(js);
}

/* 1 when the connection must wait for a dictionary fetch, which then connects. */
static int need_dictionary(jetstream *js, endpoint *e)
{
    if (e->w.flavor != JETSTREAM_V2 || !js->opt.http || js->opt.no_compression ||
        e->dict_state != DICT_NONE)
        return 0;
    dict_fetch *f = calloc(1, sizeof *f);
    if (!f) {
        dict_off(e, "out of memory");
        return 0;
    }
    f->js = js;
    f->ep = js->cur;
    /* The Jetstream URL is the operator's configuration, as is its dictionary's. */
    http_request_options o = {.trusted = true};
    if (http_get(js->opt.http, e->w.dict_url, &o, on_dictionary, f) < 0) {
        free(f);
        dict_off(e, "the HTTP client refused the request");
        return 0;
    }
    (*js->dict_fetches_total)++;
    e->dict_state = DICT_FETCHING;
    js->fetch = f;
    js->state = ST_FETCHING;
    return 1;
}

/* ---- connecting ---- */

static int build_request(jetstream *js, endpoint *e)
{
    uint64_t cursor = js->opt.cursor ? js->opt.cursor(js->opt.ud, e->w.url, e->w.flavor) : 0;
    unsigned char nonce[16];
    char key[32];
    if (RAND_bytes(nonce, sizeof nonce) != 1) return -1;
    EVP_EncodeBlock((unsigned char *)key, nonce, sizeof nonce);
    if (jetstream_accept_for(key, js->accept) < 0) return -1;
    js->dict_sent = e->dict_state == DICT_READY ? e->dict_id : 0;
    buf_reset(&js->out);
    js->out_off = 0;
    return jetstream_upgrade_request(&e->w, cursor, js->dict_sent, key, &js->out);
}

/* Opens a socket to the next address of the lookup; 0 when one is connecting. */
static int try_next_address(jetstream *js, char *why, size_t whylen)
{
    while (js->ai_next) {
        struct addrinfo *ai = js->ai_next;
        js->ai_next = ai->ai_next;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(why, whylen, "socket: %s", strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            snprintf(why, whylen, "connect: %s", strerror(errno));
            close(fd);
            continue;
        }
        conn *c = calloc(1, sizeof *c);
        if (!c || uv_poll_init_socket(js->loop, &c->poll, fd)) {
            free(c);
            close(fd);
            snprintf(why, whylen, "cannot watch the socket");
            continue;
        }
        c->fd = fd;
        c->js = js;
        c->poll.data = c;
        conn_abandon(js->c);
        js->c = c;
        update_events(js);
        return 0;
    }
    return -1;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    lookup *l = req->data;
    jetstream *js = l->js;
    free(l);
    if (!js) { /* abandoned, or the client is gone */
        if (res) freeaddrinfo(res);
        return;
    }
    js->dns = NULL;
    char why[160];
    if (status < 0) {
        snprintf(why, sizeof why, "cannot resolve %s: %s", js->eps[js->cur].w.host,
                 uv_strerror(status));
        connection_lost(js, why, RETRY_NEXT);
        return;
    }
    js->ai_list = js->ai_next = res;
    snprintf(why, sizeof why, "no address of %s", js->eps[js->cur].w.host);
    if (try_next_address(js, why, sizeof why) < 0) connection_lost(js, why, RETRY_NEXT);
}

static void connect_now(jetstream *js)
{
    endpoint *e = &js->eps[js->cur];
    js->reads = js->reads_seen = js->delivered = 0;
    js->last_activity_ms = uv_now(js->loop);
    if (need_dictionary(js, e)) return;
    js->state = ST_CONNECTING;
    if (build_request(js, e)) {
        connection_lost(js, "cannot build the request", RETRY_NEXT);
        return;
    }
    lookup *l = calloc(1, sizeof *l);
    char port[8];
    snprintf(port, sizeof port, "%d", e->w.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (!l) {
        connection_lost(js, "out of memory", RETRY_NEXT);
        return;
    }
    l->js = js;
    l->req.data = l;
    int rc = uv_getaddrinfo(js->loop, &l->req, on_resolved, e->w.host, port, &hints);
    if (rc) {
        free(l);
        char why[128];
        snprintf(why, sizeof why, "cannot look up %s: %s", e->w.host, uv_strerror(rc));
        connection_lost(js, why, RETRY_NEXT);
        return;
    }
    js->dns = l;
}

static int start_tls(jetstream *js)
{
    conn *c = js->c;
    const char *host = js->eps[js->cur].w.host;
    c->ssl = SSL_new(js->tls);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) return -1;
    unsigned char v4[4], v6[16];
    int literal = inet_pton(AF_INET, host, v4) == 1 || inet_pton(AF_INET6, host, v6) == 1;
    if (literal) {
        if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host)) return -1;
    } else if (!SSL_set_tlsext_host_name(c->ssl, host) || !SSL_set1_host(c->ssl, host)) {
        return -1;
    }
    SSL_set_connect_state(c->ssl);
    return 0;
}

/* Drives the TLS handshake; -1 when it failed (why filled). */
static int tls_handshake(jetstream *js, char *why, size_t whylen)
{
    conn *c = js->c;
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_up = 1;
        return 0;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        set_events(js, e == SSL_ERROR_WANT_READ ? UV_READABLE : UV_WRITABLE);
        return 0;
    }
    long verify = SSL_get_verify_result(c->ssl);
    const char *reason = ERR_reason_error_string(ERR_peek_last_error());
    if (verify != X509_V_OK)
        snprintf(why, whylen, "TLS: certificate not trusted: %s",
                 X509_verify_cert_error_string(verify));
    else
        snprintf(why, whylen, "TLS handshake failed: %s", reason ? reason : "connection closed");
    return -1;
}

/* The socket became writable while connecting: did the connection succeed? */
static void tcp_connected(jetstream *js)
{
    conn *c = js->c;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    char why[160];
    if (err) {
        snprintf(why, sizeof why, "connect: %s", strerror(err));
        if (try_next_address(js, why, sizeof why) < 0) connection_lost(js, why, RETRY_NEXT);
        return;
    }
    c->tcp_up = 1;
    freeaddrinfo(js->ai_list);
    js->ai_list = js->ai_next = NULL;
    if (!js->eps[js->cur].w.tls) {
        c->tls_up = 1;
    } else if (start_tls(js) < 0) {
        connection_lost(js, "cannot set up TLS", RETRY_NEXT);
        return;
    } else {
        c->events = 0;
    }
    update_events(js);
}

/* ---- I/O ---- */

/* > 0 bytes, 0 at end of stream, -1 would block, -2 failed (why filled). */
static ssize_t sock_read(jetstream *js, char *p, size_t n, char *why, size_t whylen)
{
    conn *c = js->c;
    if (!c->ssl) {
        ssize_t r = read(c->fd, p, n);
        if (r >= 0) return r;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
        snprintf(why, whylen, "read: %s", strerror(errno));
        return -2;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, p, (int)n);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    c->read_wants_w = e == SSL_ERROR_WANT_WRITE;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -1;
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) {
        if (!errno) return 0; /* closed without close_notify */
        snprintf(why, whylen, "read: %s", strerror(errno));
        return -2;
    }
    const char *reason = ERR_reason_error_string(ERR_peek_last_error());
    snprintf(why, whylen, "TLS: %s", reason ? reason : "read failed");
    return -2;
}

static ssize_t sock_write(jetstream *js, const char *p, size_t n)
{
    conn *c = js->c;
    if (!c->ssl) {
        ssize_t w = write(c->fd, p, n);
        if (w >= 0) return w;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
    }
    ERR_clear_error();
    int w = SSL_write(c->ssl, p, (int)n);
    if (w > 0) return w;
    int e = SSL_get_error(c->ssl, w);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? -1 : -2;
}

static void flush_out(jetstream *js)
{
    while (js->c && js->out.len > js->out_off) {
        ssize_t w = sock_write(js, js->out.data + js->out_off, js->out.len - js->out_off);
        if (w == -2) {
            connection_lost(js, "write failed", RETRY_NEXT);
            return;
        }
        if (w < 0) break;
        js->out_off += (size_t)w;
    }
    if (js->out_off == js->out.len) {
        buf_reset(&js->out);
        js->out_off = 0;
    }
    update_events(js);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    conn *c = h->data;
    jetstream *js = c->js;
    if (!js) return;
    if (status < 0 && c->tcp_up) {
        char why[96];
        snprintf(why, sizeof why, "socket error: %s", uv_strerror(status));
        connection_lost(js, why, RETRY_NEXT);
        return;
    }
    if (!c->tcp_up) {
        tcp_connected(js); /* an error shows in SO_ERROR */
        return;
    }
    if (!c->tls_up) {
        char why[200];
        uint64_t gen = js->gen;
        if (tls_handshake(js, why, sizeof why) < 0) {
            connection_lost(js, why, RETRY_NEXT);
            return;
        }
        if (gen != js->gen || !c->tls_up) return;
        update_events(js);
        flush_out(js); /* the upgrade request */
        return;
    }
    uint64_t gen = js->gen;
    if (events & UV_WRITABLE) {
        if (c->read_wants_w) {
            c->read_wants_w = 0;
            events |= UV_READABLE;
        }
        flush_out(js);
        if (gen != js->gen) return;
    }
    if (events & UV_READABLE) on_readable(js);
}

/* ---- the handshake ---- */

static void established(jetstream *js)
{
    js->open = 1;
    js->state = ST_UP;
    js->too_old_streak = js->dict_streak = 0;
    js->last_error[0] = '\0';
    connected_instances++;
    js->compressed = js->dict_sent != 0;
    if (js->compressed) compressed_instances++;
    buf_reset(&js->head);
    log_info(C, "connected to %s%s", js->eps[js->cur].w.url, js->compressed ? " (zstd)" : "");
    update_events(js);
    if (js->opt.on_state) js->opt.on_state(js->opt.ud, 1);
}

/* A refusal before the upgrade, read whole: what it asks for. */
static void handle_refusal(jetstream *js)
{
    endpoint *e = &js->eps[js->cur];
    const char *h = js->head.data;
    const char *body = strstr(h, "\r\n\r\n");
    body = body ? body + 4 : h + js->head.len;
    jetstream_refusal r;
    jetstream_parse_refusal(jetstream_response_status(h), body, (size_t)(h + js->head.len - body),
                            &r);
    char why[400];
    snprintf(why, sizeof why, "HTTP %d %s%s%s", r.status, r.error, *r.error ? ": " : "", r.message);
    switch (r.kind) {
    case JETSTREAM_REFUSED_CURSOR_TOO_OLD:
        (*js->refused_too_old)++;
        log_warn(C, "%s refused the cursor as older than it keeps (%s)", e->w.url, r.message);
        /* once: a second refusal in a row takes the usual way (the caller then chose a
         * cursor that still fails) */
        if (js->too_old_streak++ == 0) {
            if (js->opt.on_too_old) js->opt.on_too_old(js->opt.ud, e->w.url, r.floor);
            connection_lost(js, why, RETRY_SAME_NOW);
            return;
        }
        break;
    case JETSTREAM_REFUSED_DICTIONARY:
        (*js->refused_dict)++;
        e->refused_dict_id = js->dict_sent;
        if (js->dict_streak++ == 0 && r.dict_id != js->dict_sent) {
            log_warn(C, "%s retired zstd dictionary %u (now %u): fetching the current one",
                     e->w.url, js->dict_sent, r.dict_id);
            e->dict_state = DICT_NONE;
        } else {
            dict_off(e, "the server refused it again");
        }
        connection_lost(js, why, RETRY_SAME_NOW);
        return;
    case JETSTREAM_REFUSED_INVALID:
        (*js->refused_invalid)++;
        log_error(C,
                  "%s refused the request as invalid: %s (check APPVIEW_JETSTREAM_URLS: its "
                  "path picks the protocol, and v2 takes no v1 parameters)",
                  e->w.url, r.message);
        break;
    case JETSTREAM_REFUSED:
        (*js->refused_other)++;
        break;
    }
    connection_lost(js, why, RETRY_NEXT);
}

/* Collects the response head (and a refusal's body); returns how many bytes of `in` it used,
 * or -1 when the connection was dropped. */
static long handshake_rx(jetstream *js, const char *in, size_t len)
{
    size_t before = js->head.len;
    size_t room = MAX_RESPONSE_HEAD - before;
    if (buf_append(&js->head, in, len < room ? len : room)) {
        connection_lost(js, "out of memory", RETRY_NEXT);
        return -1;
    }
    if (js->refused) {
        if (js->head.len >= js->refusal_end || js->head.len == MAX_RESPONSE_HEAD)
            handle_refusal(js);
        return -1;
    }
    char *end = strstr(js->head.data, "\r\n\r\n");
    if (!end) {
        if (js->head.len < MAX_RESPONSE_HEAD) return (long)len;
        connection_lost(js, "response head too large", RETRY_NEXT);
        return -1;
    }
    size_t head_len = (size_t)(end + 4 - js->head.data);
    int status = jetstream_response_status(js->head.data);
    if (status != 101) {
        /* the body says why: read it (up to its Content-Length, or until the server closes) */
        size_t clen = 0;
        const char *cl = jetstream_header(js->head.data, "content-length:", &clen);
        js->refused = 1;
        js->refusal_end = cl ? head_len + strtoull(cl, NULL, 10) : MAX_RESPONSE_HEAD;
        if (js->refusal_end > MAX_RESPONSE_HEAD) js->refusal_end = MAX_RESPONSE_HEAD;
        if (js->head.len >= js->refusal_end) handle_refusal(js);
        return -1;
    }
    char saved = end[2];
    end[2] = '\0';
    const char *bad = jetstream_check_upgrade(js->head.data, js->accept, js->eps[js->cur].w.flavor);
    end[2] = saved;
    if (bad) {
        connection_lost(js, bad, RETRY_NEXT);
        return -1;
    }
    return (long)(head_len - before);
}

/* ---- framing ---- */

static size_t header_size(unsigned char b1)
{
    unsigned l7 = b1 & 0x7f;
    return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((b1 & 0x80) ? 4 : 0);
}

/* Binary messages carry data only on a compressed stream. */
static int wanted(const jetstream *js)
{
    return !js->skipping && (!js->binary || js->compressed);
}

static void skip_oversize(jetstream *js, size_t bytes, const char *what)
{
    (*js->oversize_total)++;
    log_warn(C, "skipped %s %zu bytes from %s (max_message %zu)", what, bytes,
             js->eps[js->cur].w.url, js->max_message);
}

/* One complete message: decompressed first on a compressed stream. */
static void deliver(jetstream *js, const char *data, size_t len)
{
    if (js->binary) {
        /* the frame says how large it will be: a decompression bomb stops here */
        unsigned long long size = ZSTD_getFrameContentSize(data, len);
        if (size != ZSTD_CONTENTSIZE_UNKNOWN && size != ZSTD_CONTENTSIZE_ERROR &&
            size > js->max_message) {
            skip_oversize(js, (size_t)size, "a zstd frame decompressing to");
            return;
        }
        size_t n = ZSTD_decompress_usingDDict(js->dctx, js->plain, js->max_message, data, len,
                                              js->eps[js->cur].ddict);
        if (ZSTD_isError(n)) {
            if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
                skip_oversize(js, js->max_message, "a zstd frame decompressing past");
            } else {
                (*js->zstd_errors_total)++;
                log_warn(C, "dropped a zstd frame of %zu bytes from %s: %s", len,
                         js->eps[js->cur].w.url, ZSTD_getErrorName(n));
            }
            return;
        }
        *js->plain_bytes_total += n;
        data = js->plain;
        len = n;
    } else {
        *js->plain_bytes_total += len;
    }
    (*js->messages_total)++;
    js->delivered++;
    js->opt.on_message(js->opt.ud, js->eps[js->cur].w.flavor, data, len);
}

/* A frame header is complete; returns -1 on a protocol error. */
static int frame_start(jetstream *js, const unsigned char *h, const char **err)
{
    if (h[1] & 0x80) return *err = "server sent a masked frame", -1;
    if (h[0] & 0x70) return *err = "reserved bits set", -1;
    unsigned l7 = h[1] & 0x7f;
    uint64_t len = l7;
    if (l7 == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
    } else if (l7 == 127) {
        len = 0;
        for (int i = 2; i < 10; i++)
            len = len << 8 | h[i];
        if (len >> 62) return *err = "frame length out of range", -1;
    }
    js->opcode = h[0] & 15;
    js->fin = h[0] >> 7;
    js->payload_left = len;
    js->in_payload = 1;
    if (js->opcode & 8) {
        if (!js->fin || len > 125) return *err = "bad control frame", -1;
        if (js->opcode > OP_PONG) return *err = "unknown control opcode", -1;
        js->ctl_len = 0;
        return 0;
    }
    if (js->opcode == OP_TEXT || js->opcode == OP_BINARY) {
        if (js->in_message) return *err = "new message inside a fragmented one", -1;
        js->in_message = 1;
        js->binary = js->opcode == OP_BINARY;
        js->skipping = 0;
        js->msg_bytes = 0;
        buf_reset(&js->msg);
    } else if (js->opcode != OP_CONT || !js->in_message) {
        return *err = js->opcode == OP_CONT ? "continuation without a message" : "unknown opcode",
               -1;
    }
    js->msg_bytes += len;
    if (wanted(js) && js->msg_bytes > js->max_message) {
        js->skipping = 1;
        buf_reset(&js->msg);
    }
    return 0;
}

static void queue_pong(jetstream *js)
{
    unsigned char f[2 + 4 + 125], mask[4];
    if (RAND_bytes(mask, 4) != 1) memset(mask, 0x5a, 4);
    f[0] = 0x80 | OP_PONG;
    f[1] = 0x80 | (unsigned char)js->ctl_len;
    memcpy(f + 2, mask, 4);
    for (size_t i = 0; i < js->ctl_len; i++)
        f[6 + i] = js->ctl[i] ^ mask[i & 3];
    if (buf_append(&js->out, f, 6 + js->ctl_len)) return; /* a lost pong only risks a stall */
    flush_out(js);
}

/* The current frame's payload is complete; returns -1 when the connection must go. */
static int frame_end(jetstream *js, const char **err)
{
    js->in_payload = 0;
    if (js->opcode == OP_PING) {
        queue_pong(js);
        return 0;
    }
    if (js->opcode == OP_CLOSE) {
        unsigned code = js->ctl_len >= 2 ? (unsigned)js->ctl[0] << 8 | js->ctl[1] : 1005;
        snprintf(js->close_reason, sizeof js->close_reason, "server closed the stream (code %u)",
                 code);
        *err = js->close_reason;
        return -1;
    }
    if (js->opcode == OP_PONG || !js->fin) return 0;
    js->in_message = 0;
    if (js->binary && !js->compressed) {
        (*js->binary_total)++;
    } else if (js->skipping) {
        skip_oversize(js, js->msg_bytes, "a message of");
    } else if (js->msg.len) {
        deliver(js, js->msg.data, js->msg.len);
        /* A huge message should not pin its memory for the rest of the process' life. */
        if (js->msg.cap > 4 * RX_BUFFER) buf_free(&js->msg);
    } else if (js->msg_bytes == 0) {
        deliver(js, "", 0);
    }
    return 0;
}

/* Parses what the socket delivered. Stops early (keeping the rest in the stash) when the
 * caller pauses from a message callback, and silently when the caller dropped the connection
 * from one. Returns -1 when the connection was dropped. */
static int parse_frames(jetstream *js, const unsigned char *p, size_t n)
{
    const char *err = NULL;
    uint64_t gen = js->gen;
    while (n) {
        if (gen != js->gen) return -1;
        if (js->paused) {
            if (!buf_append(&js->stash, p, n)) return 0;
            err = "out of memory keeping a paused read";
            goto bad;
        }
        if (!js->in_payload) {
            if (js->hdr_have == 0 && n >= 2 && n >= header_size(p[1])) {
                size_t hs = header_size(p[1]);
                if (frame_start(js, p, &err)) goto bad;
                p += hs;
                n -= hs;
            } else {
                js->hdr[js->hdr_have++] = *p++;
                n--;
                if (js->hdr_have < 2 || js->hdr_have < header_size(js->hdr[1])) continue;
                js->hdr_have = 0;
                if (frame_start(js, js->hdr, &err)) goto bad;
            }
            if (js->payload_left == 0 && frame_end(js, &err)) goto bad;
            continue;
        }
        size_t take = n < js->payload_left ? n : (size_t)js->payload_left;
        if (js->opcode & 8) {
            memcpy(js->ctl + js->ctl_len, p, take);
            js->ctl_len += take;
        } else if (wanted(js)) {
            if (js->fin && take == js->payload_left && js->msg.len == 0) {
                /* the whole message is in this read: no copy */
                js->payload_left = 0;
                js->in_payload = 0;
                js->in_message = 0;
                *js->bytes_total += take;
                deliver(js, (const char *)p, take);
                p += take;
                n -= take;
                continue;
            }
            if (buf_append(&js->msg, p, take)) {
                log_error(C, "out of memory reassembling a %zu-byte message; skipping it",
                          js->msg_bytes);
                js->skipping = 1;
                buf_reset(&js->msg);
            }
        }
        *js->bytes_total += take;
        js->payload_left -= take;
        p += take;
        n -= take;
        if (js->payload_left == 0 && frame_end(js, &err)) goto bad;
    }
    return 0;
bad:
    if (gen == js->gen) connection_lost(js, err ? err : "protocol error", RETRY_NEXT);
    return -1;
}

/* Bytes from the socket: the response head first, then frames. */
static int on_rx(jetstream *js, const char *in, size_t len)
{
    js->reads++;
    if (!js->open) {
        long used = handshake_rx(js, in, len);
        if (used < 0) return -1;
        if (!js->head.len || !strstr(js->head.data, "\r\n\r\n")) return 0;
        uint64_t gen = js->gen;
        established(js);
        if (gen != js->gen) return -1; /* the state callback dropped it */
        in += used;
        len -= (size_t)used;
    }
    return parse_frames(js, (const unsigned char *)in, len);
}

static void on_drain(uv_idle_t *t);

/* The socket is readable (or TLS holds decrypted bytes): read up to RX_BUFFER and parse. */
static void on_readable(jetstream *js)
{
    if ((js->paused && js->open) || js->stash.len) return;
    char why[200] = "connection closed";
    size_t got = 0;
    ssize_t r = 0;
    while (got < RX_BUFFER) {
        r = sock_read(js, js->rx + got, RX_BUFFER - got, why, sizeof why);
        if (r <= 0) break;
        got += (size_t)r;
        if (!js->c->ssl) break; /* one read() takes what the kernel has */
    }
    uint64_t gen = js->gen;
    if (got && on_rx(js, js->rx, got) < 0) return;
    if (gen != js->gen) return;
    if (r == 0 || r == -2) {
        /* a refusal's body ends with the connection */
        if (js->refused) {
            handle_refusal(js);
            return;
        }
        connection_lost(js, why, RETRY_NEXT);
        return;
    }
    update_events(js);
    /* OpenSSL may hold decrypted bytes the socket will not announce again */
    if (js->c && js->c->ssl && SSL_pending(js->c->ssl) > 0 && !js->paused)
        uv_idle_start(&js->drain, on_drain);
}

/* An idle handle, not a zero timer: libuv 1.44 (Debian 12's) runs a timer that re-arms itself
 * with no timeout again within the same pass, so over TLS, where OpenSSL keeps bytes the socket
 * does not announce, the drain read the whole stream before the loop reached its check phase,
 * where the ingester pauses reading (1M events queued at once in make bench). An idle handle
 * runs once per iteration. */
static void on_drain(uv_idle_t *t)
{
    jetstream *js = t->data;
    uv_idle_stop(t);
    if (js->paused || !js->open || !js->c) return;
    if (js->stash.len) {
        buf pending = js->stash;
        js->stash = js->stash_spare;
        uint64_t gen = js->gen;
        parse_frames(js, (const unsigned char *)pending.data, pending.len);
        buf_reset(&pending);
        js->stash_spare = pending;
        if (gen != js->gen || js->paused || js->stash.len) return;
    }
    update_events(js);
    if (js->c->ssl && SSL_pending(js->c->ssl) > 0) on_readable(js);
}

/* ---- public API ---- */

static SSL_CTX *tls_context(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* the system store, or SSL_CERT_FILE / SSL_CERT_DIR when set (tests point them at theirs) */
    SSL_CTX_set_default_verify_paths(ctx);
    /* Read-ahead in OpenSSL's own buffer of one record, not a larger one: before each record,
     * OpenSSL 3.0 moves what is left of its buffer to the front (to align the payload), so a
     * buffer of 256 KB moved about eight bytes for every byte of the stream (callgrind on the
     * bench's stream: 4.7 G instructions of memmove, against 0.8 G with the default). */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    return ctx;
}

static void register_metrics(jetstream *js)
{
    js->messages_total =
        metrics_counter("appview_jetstream_messages_total", "Jetstream messages received");
    js->bytes_total = metrics_counter("appview_jetstream_bytes_total",
                                      "Jetstream payload bytes received, as sent (compressed)");
    js->plain_bytes_total = metrics_counter(
        "appview_jetstream_decompressed_bytes_total",
        "Jetstream message bytes after decompression (equal to the payload when uncompressed)");
    js->reconnects_total = metrics_counter("appview_jetstream_reconnects_total",
                                           "Jetstream connections lost or failed");
    js->stalls_total = metrics_counter("appview_jetstream_stalls_total",
                                       "Jetstream connections dropped for sending nothing");
    js->oversize_total = metrics_counter("appview_jetstream_oversize_total",
                                         "Jetstream messages skipped for exceeding max_message");
    js->binary_total = metrics_counter("appview_jetstream_binary_total",
                                       "Jetstream binary messages ignored (uncompressed stream)");
    js->zstd_errors_total = metrics_counter("appview_jetstream_zstd_errors_total",
                                            "Jetstream zstd frames that did not decompress");
    js->dict_fetches_total = metrics_counter("appview_jetstream_dictionary_fetches_total",
                                             "Jetstream zstd dictionary downloads");
    js->refused_invalid =
        metrics_counter("appview_jetstream_refusals_total{error=\"InvalidRequest\"}",
                        "Jetstream upgrades refused, by XRPC error");
    js->refused_too_old =
        metrics_counter("appview_jetstream_refusals_total{error=\"CursorTooOld\"}",
                        "Jetstream upgrades refused, by XRPC error");
    js->refused_dict =
        metrics_counter("appview_jetstream_refusals_total{error=\"UnknownZstdDictionary\"}",
                        "Jetstream upgrades refused, by XRPC error");
    js->refused_other = metrics_counter("appview_jetstream_refusals_total{error=\"other\"}",
                                        "Jetstream upgrades refused, by XRPC error");
    metrics_gauge("appview_jetstream_connected", "Open Jetstream connections", connected_gauge,
                  NULL);
    metrics_gauge("appview_jetstream_compressed", "Open Jetstream connections with dict-zstd",
                  compressed_gauge, NULL);
}

jetstream *jetstream_new(uv_loop_t *loop, const jetstream_options *opt)
{
    if (!opt->nurls || !opt->on_message) {
        log_error(C, "no Jetstream URL or no message callback configured");
        return NULL;
    }
    jetstream *js = calloc(1, sizeof *js);
    if (!js) return NULL;
    js->loop = loop;
    js->opt = *opt;
    js->max_message = opt->max_message ? opt->max_message : DEFAULT_MAX_MESSAGE;
    js->eps = calloc(opt->nurls, sizeof *js->eps);
    js->rx = malloc(RX_BUFFER);
    js->plain = malloc(js->max_message);
    js->dctx = ZSTD_createDCtx();
    int tls = 0;
    for (; js->eps && js->neps < opt->nurls; js->neps++) {
        char why[256];
        if (jetstream_endpoint_parse(&js->eps[js->neps].w, opt->urls[js->neps], opt->collections,
                                     opt->ncollections, why, sizeof why) < 0) {
            log_error(C, "%s", why);
            break;
        }
        tls |= js->eps[js->neps].w.tls;
    }
    js->opt.urls = NULL; /* the caller's arrays need not outlive this call */
    js->opt.collections = NULL;
    js->stall_ms = 1000ull * (opt->stall_seconds ? opt->stall_seconds : DEFAULT_STALL_SECONDS);
    js->round_left = js->neps;
    register_metrics(js);
    if (tls) js->tls = tls_context();

    /* uv_timer_init and uv_idle_init cannot fail on Linux; counting keeps the teardown exact if
     * one ever did */
    uv_timer_t *timers[] = {&js->retry, &js->tick};
    for (; js->handles < 2 && !uv_timer_init(loop, timers[js->handles]); js->handles++)
        timers[js->handles]->data = js;
    if (js->handles == 2 && !uv_idle_init(loop, &js->drain)) {
        js->drain.data = js;
        js->handles++;
    }
    if (js->neps < opt->nurls || !js->rx || !js->plain || !js->dctx || (tls && !js->tls) ||
        js->handles < 3) {
        if (tls && !js->tls) log_error(C, "cannot set up TLS");
        jetstream_free(js);
        return NULL;
    }
    return js;
}

void jetstream_start(jetstream *js)
{
    if (js->state != ST_IDLE) return;
    uint64_t tick = js->stall_ms / 4;
    if (tick > 1000) tick = 1000;
    if (tick < 50) tick = 50;
    if (uv_timer_start(&js->tick, on_tick, tick, tick))
        log_error(C, "cannot start the stall timer; stalls will go unnoticed");
    connect_now(js);
}

void jetstream_pause(jetstream *js, int paused)
{
    paused = !!paused;
    if (js->paused == paused) return;
    js->paused = paused;
    if (!js->open || !js->c) return; /* applied when the next connection opens */
    js->last_activity_ms = uv_now(js->loop);
    update_events(js);
    /* not from here: the caller may be inside a message callback */
    if (!paused && (js->stash.len || (js->c->ssl && SSL_pending(js->c->ssl) > 0)))
        uv_idle_start(&js->drain, on_drain);
}

void jetstream_reconnect(jetstream *js)
{
    if (js->state == ST_CONNECTING || js->state == ST_UP) {
        connection_lost(js, "reconnect requested", RETRY_SAME_NOW);
    } else if (js->state == ST_WAITING) {
        if (uv_timer_start(&js->retry, on_retry, 0, 0))
            log_error(C, "cannot start the retry timer");
    }
}

void jetstream_retry_later(jetstream *js, const char *why)
{
    if (js->state == ST_CONNECTING || js->state == ST_UP)
        connection_lost(js, why, RETRY_SAME_BACKOFF);
}

int jetstream_connected(const jetstream *js)
{
    return js->state == ST_UP;
}

int jetstream_compressed(const jetstream *js)
{
    return js->state == ST_UP && js->compressed;
}

const char *jetstream_last_error(const jetstream *js)
{
    return js->last_error;
}

const char *jetstream_url(const jetstream *js)
{
    return js->neps ? js->eps[js->cur].w.url : "";
}

static void release(jetstream *js)
{
    for (size_t i = 0; i < js->neps; i++) {
        jetstream_endpoint_clear(&js->eps[i].w);
        ZSTD_freeDDict(js->eps[i].ddict);
    }
    free(js->eps);
    SSL_CTX_free(js->tls);
    ZSTD_freeDCtx(js->dctx);
    free(js->plain);
    free(js->rx);
    buf_free(&js->out);
    buf_free(&js->head);
    buf_free(&js->msg);
    buf_free(&js->stash);
    buf_free(&js->stash_spare);
    free(js);
}

static void on_handle_closed(uv_handle_t *h)
{
    jetstream *js = h->data;
    js->pending--;
    maybe_free(js);
}

static void maybe_free(jetstream *js)
{
    if (js->state == ST_FREEING && js->pending == 0) release(js);
}

void jetstream_free(jetstream *js)
{
    if (!js) return;
    if (js->state == ST_UP) {
        connected_instances--;
        log_info(C, "disconnected from %s: shutting down", js->eps[js->cur].w.url);
    }
    js->state = ST_FREEING;
    reset_connection_state(js); /* abandons the connection and any lookup */
    if (js->fetch) js->fetch->js = NULL;
    js->fetch = NULL;
    uv_handle_t *handles[] = {(uv_handle_t *)&js->retry, (uv_handle_t *)&js->tick,
                              (uv_handle_t *)&js->drain};
    /* js->handles counts the initialised ones among these; the analyzer loses that bound once
     * js has been handed to libuv, so the array's is stated too */
    for (int i = 0; i < js->handles && i < (int)(sizeof handles / sizeof *handles); i++) {
        js->pending++;
        uv_close(handles[i], on_handle_closed);
    }
    maybe_free(js);
}
