/* The Jetstream client: one lws context of its own on the caller's libuv loop, one connection
 * at a time, a retry timer for reconnects and a tick timer for stall detection.
 *
 * For ws:// lws (4.1) only opens a RAW socket on the loop; the WebSocket handshake and framing
 * are done here. lws 4.1's own ws client parser walks every payload byte through a state
 * machine and tops out near 300k Jetstream events/s on this machine; this parser looks at
 * frame headers only, hands a message that sits whole in the read buffer straight to the
 * caller (no copy) and reassembles only fragmented or split messages, into one reusable
 * buffer. For wss:// lws' own ws client is used, because lws 4.1 cannot start TLS on a RAW
 * client socket under libuv ("tls start fail"); a remote TLS stream is network-bound long
 * before that parser is. Liveness is a read counter the tick timer samples, so a read costs
 * no timer or clock call. */
#include <uv.h> /* before libwebsockets.h, so lws sees libuv's types */

#include <errno.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appview/jetstream.h"
#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/metrics.h"

#define C "jetstream"
/* lws reads up to this much per service: a burst of small events is one read, not many. */
#define RX_BUFFER (256 * 1024)
#define BACKOFF_BASE_MS 250
#define BACKOFF_CAP_MS 30000
#define DEFAULT_STALL_SECONDS 30
#define DEFAULT_MAX_MESSAGE (4u << 20)
#define MAX_RESPONSE_HEAD 16384
#define CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define V2_METHOD "network.bsky.jetstream.subscribeEvents"
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

typedef struct {
    char *url;       /* as configured, for logs */
    char *host;      /* for the connection (IPv6 literal without brackets) */
    char *authority; /* Host header: host[:port] as written in the URL */
    char *request;   /* path, configured query, then our parameters, without the cursor */
    int port;
    int tls;
    jetstream_flavor flavor;
} endpoint;

enum state { ST_IDLE, ST_CONNECTING, ST_UP, ST_WAITING, ST_FREEING };

struct jetstream {
    uv_loop_t *loop;
    struct lws_context *ctx;
    jetstream_options opt;
    endpoint *eps;
    size_t neps;

    enum state state;
    struct lws *wsi;     /* the current connection; others (being killed) are ignored */
    int in_connect;      /* inside lws_client_connect_via_info, which may call back already */
    struct lws *new_wsi; /* where that call stores the connection early (lws may reset it) */
    uint64_t gen;        /* bumped whenever the current connection is dropped */
    size_t cur;          /* endpoint in use or last tried */
    size_t round_left;   /* immediate attempts left before the next backoff */
    unsigned backoff_exp;
    uint64_t rng;
    int paused;

    uv_timer_t retry, tick, drain;
    int timers, handles_closed; /* timers initialised, and how many have closed */
    uint64_t stall_ms;
    uint64_t reads;      /* reads on the current connection */
    uint64_t reads_seen; /* reads at the last tick */
    uint64_t delivered;  /* messages on the current connection */
    uint64_t last_activity_ms;
    char last_error[300]; /* why the last attempt failed or the last connection ended */

    /* handshake */
    buf path;    /* request path with our parameters and the cursor */
    buf request; /* LWS_PRE bytes of headroom, then the HTTP upgrade request (ws://) */
    int request_sent;
    char accept[32]; /* the Sec-WebSocket-Accept we expect */
    buf head;        /* the response head while it arrives */
    int open;        /* 101 seen: framing from here on */

    /* framing */
    unsigned char hdr[14];
    size_t hdr_have;
    int in_payload, opcode, fin;
    uint64_t payload_left;
    unsigned char ctl[125];
    size_t ctl_len;
    unsigned char pong[LWS_PRE + 2 + 4 + 125];
    size_t pong_len;
    char close_reason[64];

    /* message reassembly */
    size_t max_message;
    buf msg;
    size_t msg_bytes;
    int in_message, skipping, binary;

    /* bytes read but not yet parsed because the caller paused mid-read */
    buf stash, stash_spare;

    uint64_t *messages_total, *bytes_total, *reconnects_total, *stalls_total, *oversize_total,
        *binary_total;
};

static unsigned connected_instances;

static double connected_gauge(void *ud)
{
    (void)ud;
    return connected_instances;
}

/* ---- URLs ---- */

/* buf_url_encode, except that '*' stays literal: Jetstream reads "io.atcr.*" in
 * wantedCollections as a prefix wildcard, and not every server decodes %2A there. */
static int query_escape(buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || c == '*';
        char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
        if (plain ? buf_append(b, s, 1) : buf_append(b, esc, 3)) return -1;
    }
    return 0;
}

static void endpoint_clear(endpoint *e)
{
    free(e->url);
    free(e->host);
    free(e->authority);
    free(e->request);
}

static int endpoint_parse(endpoint *e, const char *url, const jetstream_options *opt)
{
    memset(e, 0, sizeof *e);
    const char *p;
    if (!strncmp(url, "ws://", 5)) {
        p = url + 5;
        e->port = 80;
    } else if (!strncmp(url, "wss://", 6)) {
        p = url + 6;
        e->tls = 1;
        e->port = 443;
    } else {
        log_error(C, "bad URL '%s': want ws:// or wss://", url);
        return -1;
    }
    size_t alen = strcspn(p, "/?#");
    const char *rest = p + alen;
    if (alen == 0 || *rest == '#') {
        log_error(C, "bad URL '%s': no host, or a fragment", url);
        return -1;
    }
    const char *host = p, *hend;
    if (*p == '[') {
        hend = memchr(p, ']', alen);
        if (!hend) {
            log_error(C, "bad URL '%s': unterminated IPv6 literal", url);
            return -1;
        }
        host = p + 1;
    } else {
        hend = memchr(p, ':', alen);
        if (!hend) hend = rest;
    }
    const char *after = *p == '[' ? hend + 1 : hend;
    if (after < rest) {
        char *end;
        long port = *after == ':' ? strtol(after + 1, &end, 10) : -1;
        if (*after != ':' || end != rest || port < 1 || port > 65535) {
            log_error(C, "bad URL '%s': bad port", url);
            return -1;
        }
        e->port = (int)port;
    }
    if (hend == host) {
        log_error(C, "bad URL '%s': empty host", url);
        return -1;
    }
    const char *query = strchr(rest, '?');
    size_t plen = query ? (size_t)(query - rest) : strlen(rest);
    /* The v2 endpoint is an XRPC method; anything else speaks the v1 protocol. */
    e->flavor = (plen >= strlen(V2_METHOD) &&
                 !memcmp(rest + plen - strlen(V2_METHOD), V2_METHOD, strlen(V2_METHOD)))
                    ? JETSTREAM_V2
                    : JETSTREAM_V1;

    buf r = {0};
    int bad = plen ? buf_append(&r, rest, plen) : buf_puts(&r, "/");
    char sep = '?';
    if (query && query[1]) {
        bad |= buf_puts(&r, query);
        sep = '&';
    }
    const char *cname = e->flavor == JETSTREAM_V2 ? "collections" : "wantedCollections";
    for (size_t i = 0; i < opt->ncollections; i++) {
        bad |= buf_printf(&r, "%c%s=", sep, cname);
        bad |= query_escape(&r, opt->collections[i]);
        sep = '&';
    }
    if (e->flavor == JETSTREAM_V2)
        bad |= buf_printf(&r, "%ckinds=commit&kinds=identity&kinds=account", sep);
    e->url = strdup(url);
    e->host = strndup(host, (size_t)(hend - host));
    e->authority = strndup(p, alen);
    e->request = r.data;
    if (bad || !e->url || !e->host || !e->authority || !e->request) {
        endpoint_clear(e);
        log_error(C, "out of memory parsing '%s'", url);
        return -1;
    }
    return 0;
}

/* ---- connection life cycle ---- */

static uint64_t next_random(jetstream *js)
{
    /* xorshift64*: jitter needs spread, not secrecy */
    js->rng ^= js->rng >> 12;
    js->rng ^= js->rng << 25;
    js->rng ^= js->rng >> 27;
    return js->rng * 2685821657736338717ull;
}

static void reset_connection_state(jetstream *js)
{
    js->gen++;
    js->wsi = NULL;
    js->open = js->request_sent = 0;
    js->hdr_have = 0;
    js->in_payload = js->in_message = 0;
    js->pong_len = 0;
    buf_reset(&js->head);
    buf_reset(&js->msg);
    buf_reset(&js->stash);
    uv_timer_stop(&js->drain);
}

static void connect_now(jetstream *js);

static void on_retry(uv_timer_t *t)
{
    connect_now(t->data);
}

/* Forgets the current connection (lws closes it later; its callbacks are ignored from now on)
 * and schedules the next attempt: the next URL at once, or after a backoff with full jitter
 * once every URL failed in a row. A connection that delivered messages resets the backoff. */
static void connection_lost(jetstream *js, const char *why, int advance)
{
    endpoint *e = &js->eps[js->cur];
    int was_up = js->state == ST_UP;
    if (was_up) {
        connected_instances--;
        log_info(C, "disconnected from %s after %llu messages: %s", e->url,
                 (unsigned long long)js->delivered, why);
    } else {
        log_warn(C, "cannot connect to %s (APPVIEW_JETSTREAM_URLS): %s", e->url, why);
    }
    snprintf(js->last_error, sizeof js->last_error, "%s: %s", e->url, why);
    reset_connection_state(js);
    js->state = ST_WAITING;
    (*js->reconnects_total)++;

    uint64_t delay = 0;
    if (!advance || js->delivered > 0) {
        js->backoff_exp = 0;
        js->round_left = js->neps;
    } else if (--js->round_left == 0) {
        uint64_t ceiling = (uint64_t)BACKOFF_BASE_MS << (js->backoff_exp < 7 ? js->backoff_exp : 7);
        if (ceiling > BACKOFF_CAP_MS) ceiling = BACKOFF_CAP_MS;
        delay = next_random(js) % (ceiling + 1);
        if (js->backoff_exp < 16) js->backoff_exp++;
        js->round_left = js->neps;
        log_info(C, "all %zu URL(s) failed; retrying in %llu ms", js->neps,
                 (unsigned long long)delay);
    }
    if (advance) js->cur = (js->cur + 1) % js->neps;
    if (uv_timer_start(&js->retry, on_retry, delay, 0))
        log_error(C, "cannot start the retry timer; staying disconnected");
    if (was_up && js->opt.on_state) js->opt.on_state(js->opt.ud, 0);
}

static void drop(jetstream *js, const char *why, int advance)
{
    if (js->wsi) lws_set_timeout(js->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    connection_lost(js, why, advance);
}

static int build_request(jetstream *js, const endpoint *e)
{
    uint64_t cursor = js->opt.cursor ? js->opt.cursor(js->opt.ud, e->flavor) : 0;
    buf_reset(&js->path);
    if (buf_puts(&js->path, e->request) ||
        (cursor && buf_printf(&js->path, "%ccursor=%llu", strchr(e->request, '?') ? '&' : '?',
                              (unsigned long long)cursor)))
        return -1;
    if (e->tls) return 0;

    unsigned char nonce[16];
    char key[32];
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    char concat[64];
    if (lws_get_random(js->ctx, nonce, sizeof nonce) != sizeof nonce ||
        lws_b64_encode_string((const char *)nonce, sizeof nonce, key, sizeof key) < 0)
        return -1;
    int n = snprintf(concat, sizeof concat, "%s%s", key, WS_GUID);
    if (!EVP_Digest(concat, (size_t)n, digest, &dlen, EVP_sha1(), NULL) ||
        lws_b64_encode_string((const char *)digest, (int)dlen, js->accept, sizeof js->accept) < 0)
        return -1;

    buf_reset(&js->request);
    static const char pre[LWS_PRE];
    if (buf_append(&js->request, pre, LWS_PRE)) return -1;
    return buf_printf(&js->request,
                      "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                      "Sec-WebSocket-Version: 13\r\nUser-Agent: atcr-appview\r\n\r\n",
                      js->path.data, e->authority, key);
}

static void connect_now(jetstream *js)
{
    endpoint *e = &js->eps[js->cur];
    js->state = ST_CONNECTING;
    js->reads = js->reads_seen = js->delivered = 0;
    js->last_activity_ms = uv_now(js->loop);
    if (build_request(js, e)) {
        connection_lost(js, "cannot build the request", 1);
        return;
    }
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = js->ctx;
    ci.address = e->host;
    ci.port = e->port;
    if (e->tls) {
        ci.ssl_connection = LCCSCF_USE_SSL;
        ci.path = js->path.data;
        ci.host = e->authority;
        ci.origin = e->authority;
        ci.ietf_version_or_minus_one = -1;
    } else {
        ci.path = "/";
        ci.host = e->host;
        ci.method = "RAW";
    }
    ci.local_protocol_name = "jetstream";
    ci.pwsi = &js->new_wsi;
    js->new_wsi = NULL;
    js->in_connect = 1;
    struct lws *wsi = lws_client_connect_via_info(&ci);
    js->in_connect = 0;
    if (js->state != ST_CONNECTING || js->wsi) return; /* settled inside the call */
    if (!wsi) {
        /* lws 4.1 resolves the name inside the call and keeps the resolver's answer to
         * itself; asking again tells a name that does not resolve from other failures. */
        char why[300];
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        int rc = getaddrinfo(e->host, NULL, &hints, &res);
        if (res) freeaddrinfo(res);
        if (rc)
            snprintf(why, sizeof why, "cannot resolve %s: %s", e->host,
                     rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        else
            snprintf(why, sizeof why, "lws could not start the connection");
        connection_lost(js, why, 1);
        return;
    }
    js->wsi = wsi;
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
    drop(js, why, 1);
}

/* ---- handshake ---- */

/* The value of header `name` (lower case, with the colon) in a response head, or NULL. */
static const char *header_value(const char *head, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nlen)) continue;
        const char *v = line + nlen;
        while (*v == ' ' || *v == '\t')
            v++;
        const char *end = strstr(v, "\r\n");
        size_t l = end ? (size_t)(end - v) : strlen(v);
        while (l && (v[l - 1] == ' ' || v[l - 1] == '\t'))
            l--;
        *len = l;
        return v;
    }
    return NULL;
}

/* Collects the response head and checks it once complete (*done); returns how many bytes of
 * `in` belong to the head, or -1 with the reason in `why`. */
static long handshake_rx(jetstream *js, const char *in, size_t len, int *done, char *why,
                         size_t wlen)
{
    size_t before = js->head.len;
    size_t room = MAX_RESPONSE_HEAD - before;
    if (buf_append(&js->head, in, len < room ? len : room)) {
        snprintf(why, wlen, "out of memory");
        return -1;
    }
    char *end = strstr(js->head.data, "\r\n\r\n");
    if (!end) {
        if (js->head.len < MAX_RESPONSE_HEAD) return (long)len;
        snprintf(why, wlen, "response head larger than %d bytes", MAX_RESPONSE_HEAD);
        return -1;
    }
    size_t used = (size_t)(end + 4 - js->head.data) - before;
    end[2] = '\0';
    const char *h = js->head.data;
    if (strncmp(h, "HTTP/1.1 101", 12) && strncmp(h, "HTTP/1.0 101", 12)) {
        snprintf(why, wlen, "upgrade refused: %.*s", (int)strcspn(h, "\r\n"), h);
        return -1;
    }
    size_t alen;
    const char *accept = header_value(h, "sec-websocket-accept:", &alen);
    if (!accept || alen != strlen(js->accept) || memcmp(accept, js->accept, alen)) {
        snprintf(why, wlen, "bad or missing Sec-WebSocket-Accept");
        return -1;
    }
    size_t elen;
    const char *ext = header_value(h, "sec-websocket-extensions:", &elen);
    if (ext && elen) {
        snprintf(why, wlen, "server imposed extensions we did not ask for");
        return -1;
    }
    *done = 1;
    return (long)used;
}

static void established(jetstream *js)
{
    js->open = 1;
    js->state = ST_UP;
    js->last_error[0] = '\0';
    connected_instances++;
    buf_reset(&js->head);
    log_info(C, "connected to %s", js->eps[js->cur].url);
    if (js->paused) lws_rx_flow_control(js->wsi, 0);
    if (js->opt.on_state) js->opt.on_state(js->opt.ud, 1);
}

/* ---- framing ---- */

static size_t header_size(unsigned char b1)
{
    unsigned l7 = b1 & 0x7f;
    return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((b1 & 0x80) ? 4 : 0);
}

static void deliver(jetstream *js, const char *data, size_t len)
{
    (*js->messages_total)++;
    js->delivered++;
    js->opt.on_message(js->opt.ud, js->eps[js->cur].flavor, data, len);
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
    if (!js->binary && !js->skipping && js->msg_bytes > js->max_message) {
        js->skipping = 1;
        buf_reset(&js->msg);
    }
    return 0;
}

static void queue_pong(jetstream *js)
{
    unsigned char *f = js->pong + LWS_PRE, mask[4];
    if (lws_get_random(js->ctx, mask, 4) != 4) memset(mask, 0x5a, 4);
    f[0] = 0x80 | OP_PONG;
    f[1] = 0x80 | (unsigned char)js->ctl_len;
    memcpy(f + 2, mask, 4);
    for (size_t i = 0; i < js->ctl_len; i++)
        f[6 + i] = js->ctl[i] ^ mask[i & 3];
    js->pong_len = 6 + js->ctl_len;
    lws_callback_on_writable(js->wsi);
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
    if (js->binary) {
        (*js->binary_total)++;
    } else if (js->skipping) {
        (*js->oversize_total)++;
        log_warn(C, "skipped a message of %zu bytes from %s (max_message %zu)", js->msg_bytes,
                 js->eps[js->cur].url, js->max_message);
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
 * from one. Returns -1 on a protocol error, with the reason in `err`. */
static int parse_frames(jetstream *js, const unsigned char *p, size_t n)
{
    const char *err = NULL;
    uint64_t gen = js->gen;
    while (n) {
        if (gen != js->gen) return 0;
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
        } else if (!js->binary && !js->skipping) {
            if (js->fin && take == js->payload_left && js->msg.len == 0) {
                /* the whole message is in this read: no copy; frame_end sees msg empty */
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
    if (gen == js->gen) drop(js, err ? err : "protocol error", 1);
    return -1;
}

static void on_drain(uv_timer_t *t)
{
    jetstream *js = t->data;
    if (js->paused || !js->open) return;
    buf pending = js->stash;
    js->stash = js->stash_spare;
    uint64_t gen = js->gen;
    parse_frames(js, (const unsigned char *)pending.data, pending.len);
    buf_reset(&pending);
    js->stash_spare = pending;
    if (gen == js->gen && !js->paused && js->stash.len == 0) lws_rx_flow_control(js->wsi, 1);
}

/* ---- lws glue ---- */

static int is_current(const jetstream *js, const struct lws *wsi)
{
    if (js->state != ST_CONNECTING && js->state != ST_UP) return 0;
    return wsi == js->wsi || (js->in_connect && !js->wsi && wsi == js->new_wsi);
}

/* wss://: lws parsed the frames; it calls back per frame, or per rx buffer of a long one. */
static void on_ws_receive(jetstream *js, struct lws *wsi, const char *in, size_t len)
{
    js->reads++;
    *js->bytes_total += len;
    int final = lws_is_final_fragment(wsi);
    if (!js->in_message) {
        js->in_message = 1;
        js->binary = lws_frame_is_binary(wsi);
        js->skipping = 0;
        js->msg_bytes = 0;
        buf_reset(&js->msg);
    }
    js->msg_bytes += len;
    if (!js->binary && !js->skipping &&
        js->msg_bytes + lws_remaining_packet_payload(wsi) > js->max_message) {
        js->skipping = 1;
        buf_reset(&js->msg);
    }
    if (!js->binary && !js->skipping) {
        if (final && js->msg.len == 0) {
            js->in_message = 0;
            deliver(js, in, len);
            return;
        }
        if (buf_append(&js->msg, in, len)) {
            log_error(C, "out of memory reassembling a %zu-byte message; skipping it",
                      js->msg_bytes);
            js->skipping = 1;
            buf_reset(&js->msg);
        }
    }
    if (!final) return;
    js->opcode = OP_TEXT;
    js->fin = 1;
    const char *err = NULL;
    frame_end(js, &err);
}

static void on_rx(jetstream *js, const char *in, size_t len)
{
    js->reads++;
    if (!js->open) {
        char why[200];
        int done = 0;
        long used = handshake_rx(js, in, len, &done, why, sizeof why);
        if (used < 0) {
            drop(js, why, 1);
            return;
        }
        if (!done) return;
        uint64_t gen = js->gen;
        established(js);
        if (gen != js->gen) return; /* the state callback dropped it */
        in += used;
        len -= (size_t)used;
    }
    parse_frames(js, (const unsigned char *)in, len);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    jetstream *js = ctx ? lws_context_user(ctx) : NULL;
    if (!js || !is_current(js, wsi)) return 0;
    if (!js->wsi) js->wsi = wsi; /* a callback from inside lws_client_connect_via_info */
    switch (reason) {
    case LWS_CALLBACK_RAW_RX:
        on_rx(js, in, len);
        break;
    case LWS_CALLBACK_RAW_CONNECTED:
        lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_RAW_WRITEABLE:
        if (!js->request_sent) {
            size_t n = js->request.len - LWS_PRE;
            if (lws_write(wsi, (unsigned char *)js->request.data + LWS_PRE, n, LWS_WRITE_RAW) <
                (int)n)
                return -1;
            js->request_sent = 1;
        } else if (js->pong_len) {
            size_t n = js->pong_len;
            js->pong_len = 0;
            if (lws_write(wsi, js->pong + LWS_PRE, n, LWS_WRITE_RAW) < (int)n) return -1;
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        /* lws says only "closed before established"; the socket still holds the cause. */
        char why[200];
        int err = 0;
        socklen_t elen = sizeof err;
        int fd = lws_get_socket_fd(wsi);
        if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0) err = 0;
        snprintf(why, sizeof why, "%.150s%s%s%s", in ? (const char *)in : "connection error",
                 err ? " (" : "", err ? strerror(err) : "", err ? ")" : "");
        connection_lost(js, why, 1);
        break;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        established(js);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        on_ws_receive(js, wsi, in, len);
        break;
    case LWS_CALLBACK_RAW_CLOSE:
    case LWS_CALLBACK_CLIENT_CLOSED:
        connection_lost(js, "connection closed", 1);
        break;
    case LWS_CALLBACK_WSI_DESTROY:
        connection_lost(js, "connection lost", 1);
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {.name = "jetstream", .callback = callback, .rx_buffer_size = RX_BUFFER},
    {.name = NULL},
};

/* ---- public API ---- */

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
    js->eps = calloc(opt->nurls, sizeof *js->eps);
    if (!js->eps) {
        free(js);
        return NULL;
    }
    for (; js->neps < opt->nurls; js->neps++) {
        if (endpoint_parse(&js->eps[js->neps], opt->urls[js->neps], opt)) {
            jetstream_free(js);
            return NULL;
        }
    }
    js->opt.urls = NULL; /* the caller's arrays need not outlive this call */
    js->opt.collections = NULL;
    js->stall_ms = 1000ull * (opt->stall_seconds ? opt->stall_seconds : DEFAULT_STALL_SECONDS);
    js->max_message = opt->max_message ? opt->max_message : DEFAULT_MAX_MESSAGE;
    js->round_left = js->neps;
    js->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)js;
    if (!js->rng) js->rng = 1;

    js->messages_total =
        metrics_counter("appview_jetstream_messages_total", "Jetstream messages received");
    js->bytes_total =
        metrics_counter("appview_jetstream_bytes_total", "Jetstream payload bytes received");
    js->reconnects_total = metrics_counter("appview_jetstream_reconnects_total",
                                           "Jetstream connections lost or failed");
    js->stalls_total = metrics_counter("appview_jetstream_stalls_total",
                                       "Jetstream connections dropped for sending nothing");
    js->oversize_total = metrics_counter("appview_jetstream_oversize_total",
                                         "Jetstream messages skipped for exceeding max_message");
    js->binary_total =
        metrics_counter("appview_jetstream_binary_total", "Jetstream binary messages ignored");
    metrics_gauge("appview_jetstream_connected", "Open Jetstream connections", connected_gauge,
                  NULL);

    /* uv_timer_init cannot fail on Linux; counting keeps the teardown exact if it ever did */
    js->timers = !uv_timer_init(loop, &js->retry);
    js->timers += js->timers == 1 && !uv_timer_init(loop, &js->tick);
    js->timers += js->timers == 2 && !uv_timer_init(loop, &js->drain);
    js->retry.data = js->tick.data = js->drain.data = js;
    if (js->timers < 3) {
        log_error(C, "cannot create timers");
        jetstream_free(js);
        return NULL;
    }

    log_capture_lws();
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    void *foreign[] = {loop};
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = foreign;
    info.user = js;
    info.pt_serv_buf_size = RX_BUFFER;
    info.timeout_secs = 20;
    /* OpenSSL's own override first (tests point it at their CA), then the system store */
    const char *ca = getenv("SSL_CERT_FILE");
    if (ca && *ca)
        info.client_ssl_ca_filepath = ca;
    else if (access(CA_BUNDLE, R_OK) == 0)
        info.client_ssl_ca_filepath = CA_BUNDLE;
    js->ctx = lws_create_context(&info);
    if (!js->ctx) {
        log_error(C, "cannot create the libwebsockets client context");
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
    if (!js->open || !js->wsi) return; /* applied when the next connection opens */
    js->last_activity_ms = uv_now(js->loop);
    if (paused) {
        lws_rx_flow_control(js->wsi, 0);
    } else if (js->stash.len) {
        /* not from here: the caller may be inside a message callback */
        if (uv_timer_start(&js->drain, on_drain, 0, 0)) lws_rx_flow_control(js->wsi, 1);
    } else {
        lws_rx_flow_control(js->wsi, 1);
    }
}

void jetstream_reconnect(jetstream *js)
{
    if (js->state == ST_CONNECTING || js->state == ST_UP) {
        drop(js, "reconnect requested", 0);
    } else if (js->state == ST_WAITING) {
        if (uv_timer_start(&js->retry, on_retry, 0, 0))
            log_error(C, "cannot start the retry timer");
    }
}

int jetstream_connected(const jetstream *js)
{
    return js->state == ST_UP;
}

const char *jetstream_last_error(const jetstream *js)
{
    return js->last_error;
}

const char *jetstream_url(const jetstream *js)
{
    return js->neps ? js->eps[js->cur].url : "";
}

static void on_handle_closed(uv_handle_t *h)
{
    jetstream *js = h->data;
    js->handles_closed++;
}

static void any_closing(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h)) *(int *)arg = 1;
}

void jetstream_free(jetstream *js)
{
    if (!js) return;
    if (js->state == ST_UP) {
        connected_instances--;
        log_info(C, "disconnected from %s: shutting down", js->eps[js->cur].url);
    }
    js->state = ST_FREEING;
    js->wsi = NULL;
    uv_timer_t *timers[] = {&js->retry, &js->tick, &js->drain};
    /* js->timers counts the initialised ones among these (at most 3); the analyzer loses that
     * bound once js has been handed to libuv and lws, so the array bound is stated too. */
    for (int i = 0; i < js->timers && i < (int)(sizeof timers / sizeof *timers); i++)
        uv_close((uv_handle_t *)timers[i], on_handle_closed);
    /* On a foreign loop the first destroy only starts closing lws' handles (in stages:
     * sockets first, then its timers); the second one frees the context once they are
     * closed (EVENT-LOOP.md). The loop runs only while some handle is closing, so the
     * caller's own live handles neither block this nor get touched. */
    if (js->ctx) lws_context_destroy(js->ctx);
    for (int closing = js->timers > 0 || js->ctx, guard = 0; closing && guard < 100000; guard++) {
        uv_run(js->loop, UV_RUN_NOWAIT);
        closing = js->handles_closed < js->timers;
        uv_walk(js->loop, any_closing, &closing);
    }
    if (js->ctx) lws_context_destroy(js->ctx);
    for (size_t i = 0; i < js->neps; i++)
        endpoint_clear(&js->eps[i]);
    free(js->eps);
    buf_free(&js->path);
    buf_free(&js->request);
    buf_free(&js->head);
    buf_free(&js->msg);
    buf_free(&js->stash);
    buf_free(&js->stash_spare);
    free(js);
}
