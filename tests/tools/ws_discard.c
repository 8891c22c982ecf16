/* The benchmark yardstick: a minimal WebSocket client that reads and discards frames as fast
 * as the socket delivers them, and prints how fast that was.
 *
 *   ws_discard ws[s]://HOST:PORT/PATH?QUERY (--count N | --seconds S) [--lws]
 *
 * wss:// goes through OpenSSL (the system CAs, or SSL_CERT_FILE), blocking, with the same
 * 1 MiB reads. Text and binary (dict-zstd) frames count alike; nothing is decompressed.
 * Stops after N data frames, after S seconds, or when the server closes. With --lws the
 * stream is received through libwebsockets' client with a callback that does nothing (large
 * buffers), which is the ceiling for any consumer built on libwebsockets. Prints one line:
 *   frames=N bytes=B seconds=S events_per_s=R mb_per_s=M
 * timed from the first frame to the last one counted. Exit status 0 if --count was reached
 * (or --seconds elapsed), 1 otherwise. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <openssl/ssl.h>

#define READ_BYTES (1024 * 1024)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "ws_discard: %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        fprintf(stderr, "ws_discard: cannot connect to %s:%s: %s\n", host, port, strerror(errno));
    return fd;
}

static SSL *tls; /* wss:// */

static ssize_t sock_read(int fd, void *p, size_t n)
{
    if (!tls) return read(fd, p, n);
    int r = SSL_read(tls, p, (int)n);
    return r > 0 ? r : -(SSL_get_error(tls, r) != SSL_ERROR_ZERO_RETURN);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = tls ? SSL_write(tls, p, (int)n) : write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

struct counter {
    uint64_t frames, bytes, skip; /* skip: payload bytes of the current frame still to come */
    unsigned char hdr[14];        /* a frame header split across reads */
    size_t hdr_len;
    bool closed;
};

/* Header length of a server (unmasked) frame from its first two bytes, and its payload size
 * once the whole header is present; returns 0 if more bytes are needed. */
static size_t frame_header(const unsigned char *h, size_t avail, uint64_t *len)
{
    if (avail < 2) return 0;
    size_t hl = (h[1] & 0x80) ? 4 : 0;
    uint64_t l = h[1] & 0x7f;
    if (l == 126) {
        if (avail < 4 + hl) return 0;
        l = (uint64_t)h[2] << 8 | h[3];
        hl += 4;
    } else if (l == 127) {
        if (avail < 10 + hl) return 0;
        l = 0;
        for (int i = 0; i < 8; i++)
            l = l << 8 | h[2 + i];
        hl += 10;
    } else {
        hl += 2;
        if (avail < hl) return 0;
    }
    *len = l;
    return hl;
}

static void count_frame(struct counter *c, const unsigned char *h, uint64_t len)
{
    unsigned opcode = h[0] & 0x0f;
    if (opcode == 0x8)
        c->closed = true;
    else if ((h[0] & 0x80) && opcode != 0x9 && opcode != 0xA) {
        c->frames++;
        c->bytes += len;
    }
}

/* Consumes a chunk of the stream; counts the final fragment of every data frame. */
static void consume(struct counter *c, const unsigned char *p, size_t n, uint64_t limit)
{
    while (n > 0 && (!limit || c->frames < limit) && !c->closed) {
        if (c->skip) {
            size_t k = c->skip < n ? (size_t)c->skip : n;
            c->skip -= k, p += k, n -= k;
            continue;
        }
        uint64_t len;
        if (c->hdr_len) {
            size_t take = sizeof c->hdr - c->hdr_len < n ? sizeof c->hdr - c->hdr_len : n;
            memcpy(c->hdr + c->hdr_len, p, take);
            size_t hl = frame_header(c->hdr, c->hdr_len + take, &len);
            if (!hl) {
                c->hdr_len += take;
                return;
            }
            size_t used = hl - c->hdr_len;
            count_frame(c, c->hdr, len);
            c->hdr_len = 0;
            c->skip = len;
            p += used, n -= used;
            continue;
        }
        size_t hl = frame_header(p, n, &len);
        if (!hl) {
            memcpy(c->hdr, p, n);
            c->hdr_len = n;
            return;
        }
        count_frame(c, p, len);
        c->skip = len;
        p += hl, n -= hl;
    }
}

struct lws_run {
    uint64_t frames, bytes, limit;
    double start, last;
    bool done, failed;
};

static int lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len)
{
    struct lws_run *r = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        fprintf(stderr, "ws_discard: %s\n", in ? (const char *)in : "connection error");
        r->failed = r->done = true;
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!r->start) r->start = now_s();
        r->bytes += len;
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            r->frames++;
            r->last = now_s();
            if (r->limit && r->frames >= r->limit) r->done = true;
        }
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        r->done = true;
        break;
    default:
        break;
    }
    return 0;
}

static int run_lws(const char *host, const char *port, const char *path, uint64_t limit,
                   double seconds)
{
    static const struct lws_protocols protocols[] = {
        {"discard", lws_callback, 0, 1024 * 1024, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};
    struct lws_run r = {.limit = limit};
    struct lws_context_creation_info info = {0};
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.pt_serv_buf_size = 256 * 1024;
    info.user = &r;
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx) return 1;
    struct lws_client_connect_info ci = {0};
    ci.context = ctx;
    ci.address = host;
    ci.port = atoi(port);
    ci.path = path;
    ci.host = host;
    ci.origin = host;
    ci.local_protocol_name = "discard";
    ci.ietf_version_or_minus_one = -1;
    if (!lws_client_connect_via_info(&ci)) r.failed = r.done = true;
    double deadline = seconds > 0 ? now_s() + seconds : 0;
    while (!r.done && (!deadline || now_s() < deadline))
        lws_service(ctx, 0);
    lws_context_destroy(ctx);
    double el = r.last > r.start ? r.last - r.start : 1e-9;
    printf("frames=%llu bytes=%llu seconds=%.3f events_per_s=%.0f mb_per_s=%.1f\n",
           (unsigned long long)r.frames, (unsigned long long)r.bytes, el, (double)r.frames / el,
           (double)r.bytes / el / 1e6);
    return !r.failed && ((limit && r.frames >= limit) || (!limit && seconds > 0)) ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    uint64_t limit = 0;
    double seconds = 0;
    bool use_lws = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            limit = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--lws") == 0)
            use_lws = true;
        else if (!url && (strncmp(argv[i], "ws://", 5) == 0 || strncmp(argv[i], "wss://", 6) == 0))
            url = argv[i];
        else
            url = NULL, i = argc;
    }
    if (!url || (!limit && seconds <= 0)) {
        fprintf(stderr,
                "usage: ws_discard ws[s]://HOST:PORT/PATH (--count N | --seconds S) [--lws]\n");
        return 2;
    }
    bool secure = url[2] == 's';
    char host[256], port[16] = "80";
    if (secure) snprintf(port, sizeof port, "443");
    const char *hp = url + (secure ? 6 : 5), *path = strchr(hp, '/');
    size_t hpl = path ? (size_t)(path - hp) : strlen(hp);
    if (!path) path = "/";
    const char *colon = memchr(hp, ':', hpl);
    size_t hl = colon ? (size_t)(colon - hp) : hpl;
    if (hl >= sizeof host || (colon && (size_t)(hp + hpl - colon - 1) >= sizeof port)) {
        fprintf(stderr, "ws_discard: bad URL %s\n", url);
        return 2;
    }
    memcpy(host, hp, hl);
    host[hl] = 0;
    if (colon) {
        memcpy(port, colon + 1, (size_t)(hp + hpl - colon - 1));
        port[hp + hpl - colon - 1] = 0;
    }
    if (use_lws && !secure) return run_lws(host, port, path, limit, seconds);
    int fd = connect_to(host, port);
    if (fd < 0) return 1;
    if (secure) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (ctx) {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
            SSL_CTX_set_default_verify_paths(ctx);
            SSL_CTX_set_read_ahead(ctx, 1);
        }
        tls = ctx ? SSL_new(ctx) : NULL;
        if (!tls || !SSL_set_fd(tls, fd) || !SSL_set_tlsext_host_name(tls, host) ||
            !SSL_set1_host(tls, host) || SSL_connect(tls) != 1) {
            fprintf(stderr, "ws_discard: TLS handshake with %s failed\n", host);
            return 1;
        }
        SSL_CTX_free(ctx); /* the connection keeps its own reference */
    }
    char req[4096];
    int rl = snprintf(req, sizeof req,
                      "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n",
                      path, host, port);
    if (rl < 0 || (size_t)rl >= sizeof req || write_all(fd, req, (size_t)rl) != 0) {
        fprintf(stderr, "ws_discard: cannot send the upgrade request\n");
        return 1;
    }
    unsigned char *buf = malloc(READ_BYTES);
    if (!buf) return 1;
    /* The response head ends at the first blank line; whatever follows is stream. */
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        ssize_t r = sock_read(fd, buf + have, READ_BYTES - 1 - have);
        if (r <= 0 || have + (size_t)r >= READ_BYTES - 1) {
            fprintf(stderr, "ws_discard: no handshake response\n");
            return 1;
        }
        have += (size_t)r;
        buf[have] = 0;
        end = strstr((char *)buf, "\r\n\r\n");
    }
    if (strncmp((char *)buf, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "ws_discard: upgrade refused: %.*s\n", (int)strcspn((char *)buf, "\r"),
                buf);
        return 1;
    }
    struct counter c = {0};
    double start = 0, last = 0, deadline = 0;
    size_t rest = have - (size_t)(end + 4 - (char *)buf);
    if (rest) {
        start = now_s();
        consume(&c, (unsigned char *)end + 4, rest, limit);
        last = now_s();
    }
    while ((!limit || c.frames < limit) && !c.closed) {
        if (seconds > 0) {
            double t = now_s();
            if (!deadline) deadline = t + seconds;
            if (t >= deadline) break;
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if ((!tls || !SSL_pending(tls)) && poll(&pfd, 1, (int)((deadline - t) * 1000) + 1) == 0)
                break;
        }
        ssize_t r = sock_read(fd, buf, READ_BYTES);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (!start) start = now_s();
        consume(&c, buf, (size_t)r, limit);
        last = now_s();
    }
    double el = last > start ? last - start : 1e-9;
    printf("frames=%llu bytes=%llu seconds=%.3f events_per_s=%.0f mb_per_s=%.1f\n",
           (unsigned long long)c.frames, (unsigned long long)c.bytes, el, (double)c.frames / el,
           (double)c.bytes / el / 1e6);
    free(buf);
    if (tls) SSL_free(tls);
    close(fd);
    return (limit && c.frames >= limit) || (!limit && seconds > 0) ? 0 : 1;
}
