/* A synthetic AT Protocol network served from memory, for the backfill benchmark and the offline
 * demo: a PLC directory, a relay's com.atproto.sync.listReposByCollection, and PDS hosts
 * answering com.atproto.sync.getLatestCommit and com.atproto.repo.listRecords.
 *
 *   net_standin [--listen 127.0.0.1:0] [--hosts H] [--dids N] [--manifests M] [--tags T]
 *               [--empty-every K] [--dids-file PATH]
 *
 * DID i (did:plc:backfillstandina<i in 8 base32 characters>) lives on PDS host i % H (each
 * host its own port on 127.0.0.1) and holds M io.atcr.manifest records and T io.atcr.tag
 * records, unless i % K == K - 1 (then none, and the relay does not list it). Records are
 * what ATCR writes: TID record keys, tags naming their manifest by at-uri, createdAt out of
 * record-key order; listRecords pages are in descending record-key order with the last key as
 * the cursor, like the reference PDS. Nothing is stored: a page is computed from (i, j).
 * The relay pages DIDs in index order (limit up to 2000, the lexicon's maximum); its cursor is
 * the next index.
 *
 * One line on stdout once listening: {"plc", "relay", "pds": [...], "dids", "listed",
 * "records"}. GET /_stats (any port) answers request counts by method. One epoll thread;
 * HTTP/1.1 keep-alive GETs only. SIGTERM or SIGINT ends it. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "atproto/buf.h"

#define MAX_HOSTS 64
#define MAX_REQUEST 16384
#define T0_US 1735689600000000ULL /* 2025-01-01T00:00:00Z: record keys count up from here */
#define CID "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
#define DID_PREFIX "did:plc:backfillstandina"

static const char b32sort[] = "234567abcdefghijklmnopqrstuvwxyz";
static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char *const repos[] = {"app", "web", "api"};

static struct {
    uint64_t dids, manifests, tags, empty_every;
    unsigned hosts;
    int ports[MAX_HOSTS];
    int main_port;
    char rev[14];
} net = {.dids = 100, .manifests = 10, .tags = 5, .hosts = 2};

static uint64_t n_plc, n_relay, n_latest, n_list, n_other;
static volatile sig_atomic_t stopping;

/* ---- the network ---- */

static void did_of(uint64_t i, char out[33])
{
    memcpy(out, DID_PREFIX, 24);
    for (int k = 7; k >= 0; k--, i >>= 5)
        out[24 + k] = b32[i & 31];
    out[32] = 0;
}

/* The index of a DID of this network, or -1. */
static int64_t index_of(const char *did)
{
    if (strlen(did) != 32 || strncmp(did, DID_PREFIX, 24)) return -1;
    uint64_t i = 0;
    for (int k = 0; k < 8; k++) {
        const char *p = strchr(b32, did[24 + k]);
        if (!p || !*p) return -1;
        i = i << 5 | (uint64_t)(p - b32);
    }
    return i < net.dids ? (int64_t)i : -1;
}

static int has_records(uint64_t i)
{
    return !(net.empty_every && i % net.empty_every == net.empty_every - 1);
}

static void tid(uint64_t us, unsigned clock, char o[14])
{
    uint64_t v = (us << 10 | (clock & 1023)) & 0x7FFFFFFFFFFFFFFFULL;
    for (int k = 12; k >= 0; k--, v >>= 5)
        o[k] = b32sort[v & 31];
    o[13] = 0;
}

/* The microsecond of a TID; 0 when it is not one. */
static uint64_t tid_us(const char *s)
{
    if (strlen(s) != 13) return 0;
    uint64_t v = 0;
    for (int k = 0; k < 13; k++) {
        const char *p = strchr(b32sort, s[k]);
        if (!p || !*p) return 0;
        v = v << 5 | (uint64_t)(p - b32sort);
    }
    return v >> 10;
}

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Manifest j of DID i is keyed T0 + j seconds; tag k a half second after manifest k. */
static void manifest_rkey(uint64_t i, uint64_t j, char o[14])
{
    tid(T0_US + j * 1000000, (unsigned)(i % 1000), o);
}

static void tag_rkey(uint64_t i, uint64_t k, char o[14])
{
    tid(T0_US + k * 1000000 + 500000, (unsigned)(i % 1000), o);
}

/* createdAt of manifest j: spread over a year, not in record-key order. */
static uint64_t created_ms(uint64_t i, uint64_t j)
{
    return T0_US / 1000 + mix(i * 1000003 + j) % (365ULL * 86400 * 1000);
}

static void iso(uint64_t ms, char o[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(o, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(o + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}

static void digest_of(uint64_t i, uint64_t j, char o[72])
{
    snprintf(o, 72, "sha256:%016llx%016llx%016llx%016llx", (unsigned long long)mix(i),
             (unsigned long long)mix(j), (unsigned long long)mix(i ^ j),
             (unsigned long long)mix(i * 31 + j));
}

static int add_manifest(buf *b, const char *did, uint64_t i, uint64_t j)
{
    char rkey[14], when[32], digest[72];
    manifest_rkey(i, j, rkey);
    iso(created_ms(i, j), when);
    digest_of(i, j, digest);
    return buf_printf(b,
                      "{\"uri\":\"at://%s/io.atcr.manifest/%s\",\"cid\":\"%s\",\"value\":{"
                      "\"$type\":\"io.atcr.manifest\",\"repository\":\"%s\",\"digest\":\"%s\","
                      "\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                      "\"schemaVersion\":2,\"holdDid\":\"did:web:hold.example.com\","
                      "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
                      "\"digest\":\"%s\",\"size\":1469},\"createdAt\":\"%s\"}}",
                      did, rkey, CID, repos[j % 3], digest, digest, when);
}

static int add_tag(buf *b, const char *did, uint64_t i, uint64_t k)
{
    char rkey[14], mrkey[14], when[32];
    tag_rkey(i, k, rkey);
    manifest_rkey(i, k, mrkey);
    iso(created_ms(i, k) + 1000, when);
    return buf_printf(b,
                      "{\"uri\":\"at://%s/io.atcr.tag/%s\",\"cid\":\"%s\",\"value\":{"
                      "\"$type\":\"io.atcr.tag\",\"repository\":\"%s\",\"tag\":\"v%llu\","
                      "\"manifest\":\"at://%s/io.atcr.manifest/%s\",\"createdAt\":\"%s\"}}",
                      did, rkey, CID, repos[k % 3], (unsigned long long)k, did, mrkey, when);
}

/* ---- requests ---- */

/* The value of query parameter name in q (URL-decoded into out); 0 when present. */
static int param(const char *q, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = q; p && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nl) || p[nl] != '=') continue;
        size_t n = 0;
        for (const char *v = p + nl + 1; *v && *v != '&' && n + 1 < cap; v++) {
            if (*v == '%' && v[1] && v[2]) {
                char hex[3] = {v[1], v[2], 0};
                out[n++] = (char)strtol(hex, NULL, 16);
                v += 2;
            } else {
                out[n++] = *v == '+' ? ' ' : *v;
            }
        }
        out[n] = 0;
        return 0;
    }
    return -1;
}

static int error_body(buf *body, const char *error, const char *message)
{
    return buf_printf(body, "{\"error\":\"%s\",\"message\":\"%s\"}", error, message);
}

static int plc(const char *path, buf *body)
{
    char did[64];
    snprintf(did, sizeof did, "%.63s", path + 1);
    char *enc = strstr(did, "%3A");
    while (enc) { /* did:plc:... with its colons encoded */
        *enc = ':';
        memmove(enc + 1, enc + 3, strlen(enc + 3) + 1);
        enc = strstr(did, "%3A");
    }
    int64_t i = index_of(did);
    n_plc++;
    if (i < 0) {
        error_body(body, "NotFound", "DID not registered");
        return 404;
    }
    buf_printf(body,
               "{\"@context\":[\"https://www.w3.org/ns/did/v1\"],\"id\":\"%s\",\"alsoKnownAs\":[],"
               "\"verificationMethod\":[],\"service\":[{\"id\":\"#atproto_pds\",\"type\":"
               "\"AtprotoPersonalDataServer\",\"serviceEndpoint\":\"http://127.0.0.1:%d\"}]}",
               did, net.ports[(uint64_t)i % net.hosts]);
    return 200;
}

static int relay(const char *q, buf *body)
{
    char coll[128], limit_s[16], cursor[32];
    n_relay++;
    if (param(q, "collection", coll, sizeof coll) < 0) {
        error_body(body, "InvalidRequest", "collection is required");
        return 400;
    }
    long limit = param(q, "limit", limit_s, sizeof limit_s) == 0 ? strtol(limit_s, NULL, 10) : 500;
    if (limit < 1 || limit > 2000) {
        error_body(body, "InvalidRequest", "limit must be 1..2000");
        return 400;
    }
    int listed = (!strcmp(coll, "io.atcr.manifest") && net.manifests) ||
                 (!strcmp(coll, "io.atcr.tag") && net.tags);
    uint64_t i = param(q, "cursor", cursor, sizeof cursor) == 0 ? strtoull(cursor, NULL, 10) : 0;
    buf_puts(body, "{\"repos\":[");
    long n = 0;
    char did[33];
    for (; listed && i < net.dids && n < limit; i++) {
        if (!has_records(i)) continue;
        did_of(i, did);
        buf_printf(body, "%s{\"did\":\"%s\"}", n++ ? "," : "", did);
    }
    buf_puts(body, "]");
    if (listed && i < net.dids) buf_printf(body, ",\"cursor\":\"%llu\"", (unsigned long long)i);
    buf_puts(body, "}");
    return 200;
}

static int latest_commit(const char *q, buf *body)
{
    char did[64];
    n_latest++;
    if (param(q, "did", did, sizeof did) < 0 || index_of(did) < 0) {
        error_body(body, "RepoNotFound", "Could not find repo");
        return 400;
    }
    buf_printf(body, "{\"cid\":\"%s\",\"rev\":\"%s\"}", CID, net.rev);
    return 200;
}

static int list_records(const char *q, buf *body)
{
    char did[64], coll[128], limit_s[16], cursor[32];
    n_list++;
    int64_t i = param(q, "repo", did, sizeof did) == 0 ? index_of(did) : -1;
    if (i < 0 || param(q, "collection", coll, sizeof coll) < 0) {
        error_body(body, "RepoNotFound", "Could not find repo");
        return 400;
    }
    long limit = param(q, "limit", limit_s, sizeof limit_s) == 0 ? strtol(limit_s, NULL, 10) : 50;
    if (limit < 1 || limit > 100) limit = 100;
    int manifests = !strcmp(coll, "io.atcr.manifest");
    uint64_t count = !has_records((uint64_t)i)      ? 0
                     : manifests                    ? net.manifests
                     : !strcmp(coll, "io.atcr.tag") ? net.tags
                                                    : 0;
    /* Descending record keys: start below the cursor's. */
    uint64_t next = count;
    if (param(q, "cursor", cursor, sizeof cursor) == 0) {
        uint64_t us = tid_us(cursor);
        uint64_t j = us > T0_US ? (us - T0_US) / 1000000 : 0;
        next = us >= T0_US ? j : 0;
    }
    buf_puts(body, "{\"records\":[");
    long n = 0;
    char rkey[14] = "";
    for (; next > 0 && n < limit; n++) {
        next--;
        if (n) buf_puts(body, ",");
        if (manifests) {
            add_manifest(body, did, (uint64_t)i, next);
            manifest_rkey((uint64_t)i, next, rkey);
        } else {
            add_tag(body, did, (uint64_t)i, next);
            tag_rkey((uint64_t)i, next, rkey);
        }
    }
    buf_puts(body, "]");
    if (n == limit && next > 0) buf_printf(body, ",\"cursor\":\"%s\"", rkey);
    buf_puts(body, "}");
    return 200;
}

static int stats(buf *body)
{
    return buf_printf(body,
                      "{\"plc\":%llu,\"listReposByCollection\":%llu,\"getLatestCommit\":%llu,"
                      "\"listRecords\":%llu,\"other\":%llu}",
                      (unsigned long long)n_plc, (unsigned long long)n_relay,
                      (unsigned long long)n_latest, (unsigned long long)n_list,
                      (unsigned long long)n_other);
}

/* Answers one request target into body; returns the status. */
static int route(char *target, buf *body)
{
    char *q = strchr(target, '?');
    if (q) *q++ = 0;
    if (!strcmp(target, "/xrpc/com.atproto.repo.listRecords")) return list_records(q, body);
    if (!strcmp(target, "/xrpc/com.atproto.sync.getLatestCommit")) return latest_commit(q, body);
    if (!strcmp(target, "/xrpc/com.atproto.sync.listReposByCollection")) return relay(q, body);
    if (!strcmp(target, "/_stats")) return stats(body) == 0 ? 200 : 500;
    if (!strncmp(target, "/did:", 5) || !strncmp(target, "/did%3A", 7)) return plc(target, body);
    n_other++;
    error_body(body, "MethodNotImplemented", "not served here");
    return 501;
}

/* ---- HTTP over epoll ---- */

typedef struct {
    int fd;
    char in[MAX_REQUEST];
    size_t inlen;
    buf out;
    size_t sent;
    int close_after;
} conn;

static int epfd;

static void conn_close(conn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    buf_free(&c->out);
    free(c);
}

/* Writes what is pending; -1 when the connection is to be closed. */
static int flush_out(conn *c)
{
    while (c->sent < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            return 0;
        }
        if (n <= 0) return -1;
        c->sent += (size_t)n;
    }
    buf_reset(&c->out);
    c->sent = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    return c->close_after ? -1 : 0;
}

/* Answers every complete request in the input buffer. */
static void serve(conn *c)
{
    buf body = {0};
    for (;;) {
        c->in[c->inlen] = 0;
        char *end = strstr(c->in, "\r\n\r\n");
        if (!end) break;
        char method[8], target[4096];
        int status = 400;
        buf_reset(&body);
        if (sscanf(c->in, "%7s %4095s", method, target) == 2 && !strcmp(method, "GET"))
            status = route(target, &body);
        else
            error_body(&body, "InvalidRequest", "GET only");
        *end = 0;
        if (strcasestr(c->in, "\r\nconnection: close")) c->close_after = 1;
        buf_printf(&c->out,
                   "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                   "\r\n",
                   status, status == 200 ? "OK" : "Error", body.len);
        buf_append(&c->out, body.data ? body.data : "", body.len);
        size_t used = (size_t)(end + 4 - c->in);
        memmove(c->in, c->in + used, c->inlen - used);
        c->inlen -= used;
    }
    buf_free(&body);
}

static int listen_on(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1024) != 0) {
        fprintf(stderr, "net_standin: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
        return -1;
    }
    return fd;
}

static int port_of(int fd)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    return getsockname(fd, (struct sockaddr *)&sa, &sl) == 0 ? ntohs(sa.sin_port) : -1;
}

static void on_signal(int sig)
{
    stopping = 1;
}

static int write_dids_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    char did[33];
    fprintf(f, "# %llu DIDs of net_standin\n", (unsigned long long)net.dids);
    for (uint64_t i = 0; i < net.dids; i++) {
        did_of(i, did);
        fprintf(f, "%s\n", did);
    }
    return fclose(f);
}

int main(int argc, char **argv)
{
    const char *listen_spec = "127.0.0.1:0", *dids_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "net_standin: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--listen"))
            listen_spec = v;
        else if (!strcmp(a, "--hosts"))
            net.hosts = (unsigned)atoi(v);
        else if (!strcmp(a, "--dids"))
            net.dids = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--manifests"))
            net.manifests = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--tags"))
            net.tags = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--empty-every"))
            net.empty_every = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--dids-file"))
            dids_file = v;
        else {
            fprintf(stderr, "usage: net_standin [--listen HOST:PORT] [--hosts H] [--dids N] "
                            "[--manifests M] [--tags T] [--empty-every K] [--dids-file PATH]\n");
            return 2;
        }
    }
    if (net.hosts < 1 || net.hosts > MAX_HOSTS || net.tags > net.manifests ||
        net.dids >= (1ULL << 40)) {
        fprintf(stderr, "net_standin: hosts 1..%d, tags <= manifests, dids < 2^40\n", MAX_HOSTS);
        return 2;
    }
    if (dids_file && write_dids_file(dids_file) < 0) {
        fprintf(stderr, "net_standin: cannot write %s\n", dids_file);
        return 1;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    tid((uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000, 0, net.rev);

    char host[64];
    const char *colon = strrchr(listen_spec, ':');
    snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - listen_spec) : 0, listen_spec);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int lfds[MAX_HOSTS + 1];
    lfds[0] = colon ? listen_on(host, atoi(colon + 1)) : -1;
    for (unsigned h = 0; h < net.hosts; h++)
        lfds[h + 1] = listen_on("127.0.0.1", 0);
    for (unsigned h = 0; h <= net.hosts; h++) {
        if (lfds[h] < 0) return 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = h};
        epoll_ctl(epfd, EPOLL_CTL_ADD, lfds[h], &ev);
        if (h) net.ports[h - 1] = port_of(lfds[h]);
    }
    net.main_port = port_of(lfds[0]);
    uint64_t listed = 0;
    for (uint64_t i = 0; i < net.dids; i++)
        listed += has_records(i) != 0;
    printf("{\"plc\":\"http://%s:%d\",\"relay\":\"http://%s:%d\",\"pds\":[", host, net.main_port,
           host, net.main_port);
    for (unsigned h = 0; h < net.hosts; h++)
        printf("%s\"http://127.0.0.1:%d\"", h ? "," : "", net.ports[h]);
    printf("],\"dids\":%llu,\"listed\":%llu,\"records\":%llu}\n", (unsigned long long)net.dids,
           (unsigned long long)listed, (unsigned long long)(listed * (net.manifests + net.tags)));
    fflush(stdout);

    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    struct epoll_event evs[256];
    while (!stopping) {
        int n = epoll_wait(epfd, evs, 256, 500);
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u64 <= net.hosts) {
                int fd = accept4(lfds[evs[k].data.u64], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) continue;
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                conn *c = calloc(1, sizeof *c);
                if (!c) {
                    close(fd);
                    continue;
                }
                c->fd = fd;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
                continue;
            }
            conn *c = evs[k].data.ptr;
            if (evs[k].events & EPOLLOUT) {
                if (flush_out(c) < 0) conn_close(c);
                continue;
            }
            ssize_t r = recv(c->fd, c->in + c->inlen, sizeof c->in - 1 - c->inlen, 0);
            if (r <= 0 || (c->inlen += (size_t)r) >= sizeof c->in - 1) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                conn_close(c);
                continue;
            }
            serve(c);
            if (c->out.len && flush_out(c) < 0) conn_close(c);
        }
    }
    return 0;
}
