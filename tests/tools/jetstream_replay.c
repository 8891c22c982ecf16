/* A local Jetstream replay server for tests and benchmarks.
 *
 * Serves a JSONL file of Jetstream v1 events over plain ws:// on loopback, on both the v1
 * endpoint (GET /subscribe?wantedCollections=..&cursor=TIME_US) and the v2 endpoint
 * (GET /xrpc/network.bsky.jetstream.subscribeEvents?collections=..&kinds=..&cursor=SEQ, frames
 * wrapped with "$type" and "seq"). Event i of the file (1-based, blank lines skipped) has seq i;
 * with --loop N the file repeats N times with time_us shifted past the previous pass and seq
 * continuing. Lines that are not JSON objects with a numeric time_us and a known kind are sent
 * verbatim to everyone (that is how fixtures carry malformed input).
 *
 * Built for speed: one epoll thread, the file read once and indexed at start-up, frames
 * assembled into a large per-connection buffer and written in big chunks. After the last event
 * a connection stays open and idle, like a live stream with nothing new.
 *
 * Fault injection: --drop-after N ends each connection (FIN, no close frame) after N events;
 * --malformed N sends a garbage frame after every N events (truncated JSON, invalid UTF-8,
 * wrong top-level types, a record with wrong field types, in turn). Pacing: --rate N caps each
 * connection at N events/s; --live paces by the events' own time_us spacing. --recent shifts
 * every time_us so the file's last event is the moment the server started (an old fixture then
 * reads as minutes old, not years, in a consumer's lag).
 * GET /_stats answers counters and the last request targets as JSON. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "atproto/log.h"

#define C "replay"
#define MAX_FDS 65536
#define FILL_BYTES (512 * 1024)
#define PUMP_BUDGET (8 * 1024 * 1024)
#define REQ_MAX 16384
#define RECENT 32
#define V2_PATH "/xrpc/network.bsky.jetstream.subscribeEvents"
#define V2_TYPE "network.bsky.jetstream.subscribeEvents#"

enum kind { K_RAW = 0, K_COMMIT = 1, K_IDENTITY = 2, K_ACCOUNT = 4 };
static const char *const kind_names[] = {
    [K_COMMIT] = "commit", [K_IDENTITY] = "identity", [K_ACCOUNT] = "account"};

struct event {
    uint64_t off;    /* line start in the file image */
    int64_t time_us; /* raw lines inherit the previous event's, for cursor search */
    uint32_t len;    /* line length without the newline */
    uint32_t tpos;   /* offset of the time_us digits in the line */
    uint16_t tlen;   /* their length */
    uint16_t coll;   /* collection id (commits), 0 for none */
    uint8_t kind;    /* enum kind */
};

static struct {
    const char *data;
    size_t size;
    struct event *ev;
    uint64_t n;
    char **colls; /* id -> NSID; id 0 unused */
    uint16_t ncolls;
    uint64_t loops;
    int64_t span;  /* time_us shift per loop */
    int64_t shift; /* time_us shift of every event (--recent) */
    uint64_t drop_after, malformed_every;
    double rate;
    bool live, no_filter, stats, recent;
} cfg = {.loops = 1};

static struct {
    uint64_t conns_total, conns_open, events_sent, malformed_sent, drops, bytes_sent;
    uint64_t streams_total;  /* WebSocket streams begun */
    double last_stream_unix; /* when the newest began: benchmarks time from here */
    char recent[RECENT][256];
    unsigned recent_next;
} st;

enum cstate { CS_REQUEST, CS_STREAM };

struct conn {
    int fd;
    enum cstate state;
    bool v2, want_out, paused, end_after_flush, close_received;
    unsigned kinds; /* bitmask of enum kind accepted; raw lines always pass */
    uint8_t *want;  /* per collection id; NULL = every collection */
    uint64_t next;  /* virtual index into the looped stream */
    uint64_t first; /* where this stream started, for pacing */
    uint64_t sent, since_malformed, malformed_sent;
    unsigned malformed_variant;
    double started; /* monotonic seconds */
    char in[REQ_MAX];
    size_t in_len;
    char *out;
    size_t out_len, out_off, out_cap;
};

static struct conn *conns[MAX_FDS];
static int max_fd;
static int epfd = -1;
static volatile sig_atomic_t stopping;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* ---------- loading: a minimal JSON structure walker, enough to index Jetstream lines ----------
 */

struct field {
    const char *key, *val, *val_end;
    size_t klen;
};

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* Past the closing quote of the string at p; memchr keeps start-up indexing of big files fast. */
static const char *skip_string(const char *p, const char *e)
{
    const char *start = ++p;
    while (p < e) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q) return NULL;
        size_t bs = 0;
        while (q - bs > start && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0) return q + 1;
        p = q + 1;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *e)
{
    if (p >= e) return NULL;
    if (*p == '"') return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            if (*p == '"') {
                p = skip_string(p, e);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    const char *s = p;
    while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\r' && *p != '\n')
        p++;
    return p > s ? p : NULL;
}

/* Top-level members of the object at p; returns their count or -1 when it is not one. */
static int object_fields(const char *p, const char *e, struct field *f, int max)
{
    int n = 0;
    p = skip_ws(p, e);
    if (p >= e || *p != '{') return -1;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}') return 0;
    for (;;) {
        if (p >= e || *p != '"') return -1;
        const char *k = p + 1, *ke = skip_string(p, e);
        if (!ke) return -1;
        p = skip_ws(ke, e);
        if (p >= e || *p != ':') return -1;
        p = skip_ws(p + 1, e);
        const char *v = p, *ve = skip_value(p, e);
        if (!ve) return -1;
        if (n < max)
            f[n++] =
                (struct field){.key = k, .klen = (size_t)(ke - 1 - k), .val = v, .val_end = ve};
        p = skip_ws(ve, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        return p < e && *p == '}' ? n : -1;
    }
}

static const struct field *find_field(const struct field *f, int n, const char *key)
{
    size_t kl = strlen(key);
    for (int i = 0; i < n; i++)
        if (f[i].klen == kl && memcmp(f[i].key, key, kl) == 0) return &f[i];
    return NULL;
}

static int intern_collection(const char *s, size_t len)
{
    for (uint16_t i = 1; i < cfg.ncolls; i++)
        if (strlen(cfg.colls[i]) == len && memcmp(cfg.colls[i], s, len) == 0) return i;
    if (cfg.ncolls == UINT16_MAX) return -1;
    char **grown = realloc(cfg.colls, sizeof(char *) * (cfg.ncolls + 1u));
    if (!grown) return -1;
    cfg.colls = grown;
    cfg.colls[cfg.ncolls] = strndup(s, len);
    if (!cfg.colls[cfg.ncolls]) return -1;
    return cfg.ncolls++;
}

/* Fills kind, time_us and collection from one line; leaves kind K_RAW if it is not a usable
 * Jetstream event. The last interned collection is cached: runs of one collection are common. */
static int index_line(struct event *ev, const char *line)
{
    static int last_coll;
    struct field f[16], c[16];
    const char *e = line + ev->len;
    int n = object_fields(line, e, f, 16);
    if (n <= 0) return 0;
    const struct field *t = find_field(f, n, "time_us"), *k = find_field(f, n, "kind");
    if (!t || !k || *k->val != '"') return 0;
    char *end;
    errno = 0;
    long long tu = strtoll(t->val, &end, 10);
    if (errno || end != t->val_end || end == t->val) return 0;
    size_t kl = (size_t)(k->val_end - k->val - 2);
    unsigned kind = 0;
    for (unsigned i = 1; i <= K_ACCOUNT; i <<= 1)
        if (strlen(kind_names[i]) == kl && memcmp(k->val + 1, kind_names[i], kl) == 0) kind = i;
    if (!kind) return 0;
    if (kind == K_COMMIT) {
        const struct field *cm = find_field(f, n, "commit");
        int cn = cm ? object_fields(cm->val, cm->val_end, c, 16) : -1;
        const struct field *col = cn > 0 ? find_field(c, cn, "collection") : NULL;
        if (!col || *col->val != '"') return 0;
        const char *cs = col->val + 1;
        size_t cl = (size_t)(col->val_end - col->val - 2);
        if (last_coll && strlen(cfg.colls[last_coll]) == cl &&
            memcmp(cfg.colls[last_coll], cs, cl) == 0) {
            ev->coll = (uint16_t)last_coll;
        } else {
            int id = intern_collection(cs, cl);
            if (id < 0) return -1;
            ev->coll = (uint16_t)id;
            last_coll = id;
        }
    }
    /* The first byte of a line is its '{' (a line starting with spaces stays raw). */
    if (line[0] != '{') return 0;
    ev->kind = (uint8_t)kind;
    ev->time_us = tu;
    ev->tpos = (uint32_t)(t->val - line);
    ev->tlen = (uint16_t)(t->val_end - t->val);
    return 0;
}

static int load_events(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_error(C, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        log_error(C, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    /* Read into anonymous memory rather than mapped: page-cache pages of a big file get
     * reclaimed behind our back, and a filtered stream touches them in a scattered order. */
    cfg.size = (size_t)sb.st_size;
    char *data = malloc(cfg.size + 1);
    if (!data) {
        log_error(C, "cannot allocate %zu bytes for %s", cfg.size, path);
        close(fd);
        return -1;
    }
    for (size_t got = 0; got < cfg.size;) {
        ssize_t r = read(fd, data + got, cfg.size - got);
        if (r <= 0) {
            log_error(C, "cannot read %s: %s", path, r < 0 ? strerror(errno) : "short read");
            free(data);
            close(fd);
            return -1;
        }
        got += (size_t)r;
    }
    cfg.data = data;
    close(fd);
    cfg.colls = calloc(1, sizeof(char *));
    if (!cfg.colls) return -1;
    cfg.ncolls = 1;
    size_t cap = 1024;
    cfg.ev = malloc(cap * sizeof *cfg.ev);
    if (!cfg.ev) return -1;
    int64_t last_time = 0;
    for (size_t pos = 0; pos < cfg.size;) {
        const char *line = cfg.data + pos;
        const char *nl = memchr(line, '\n', cfg.size - pos);
        size_t len = nl ? (size_t)(nl - line) : cfg.size - pos;
        size_t next = pos + len + (nl ? 1 : 0);
        if (len > 0 && line[len - 1] == '\r') len--;
        if (len == 0 || len > UINT32_MAX) {
            pos = next;
            continue;
        }
        if (cfg.n == cap) {
            cap *= 2;
            struct event *grown = realloc(cfg.ev, cap * sizeof *cfg.ev);
            if (!grown) return -1;
            cfg.ev = grown;
        }
        struct event *ev = &cfg.ev[cfg.n];
        *ev = (struct event){.off = pos, .len = (uint32_t)len};
        if (index_line(ev, line) != 0) return -1;
        if (ev->kind == K_RAW) ev->time_us = last_time;
        last_time = ev->time_us;
        cfg.n++;
        pos = next;
    }
    if (cfg.n > 0) cfg.span = cfg.ev[cfg.n - 1].time_us - cfg.ev[0].time_us + 1;
    return 0;
}

/* ---------- the virtual (looped) stream ---------- */

static uint64_t stream_total(void)
{
    return cfg.n * cfg.loops;
}

static int64_t vtime(uint64_t j)
{
    return cfg.ev[j % cfg.n].time_us + (int64_t)(j / cfg.n) * cfg.span + cfg.shift;
}

/* First virtual index whose time_us is >= cursor. */
static uint64_t seek_time(int64_t cursor)
{
    uint64_t lo = 0, hi = stream_total();
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (vtime(mid) < cursor)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---------- connections ---------- */

static void conn_free(struct conn *c)
{
    if (cfg.stats)
        log_info(C, "fd %d closed: %" PRIu64 " events, %" PRIu64 " malformed, next %" PRIu64, c->fd,
                 c->sent, c->malformed_sent, c->next);
    conns[c->fd] = NULL;
    close(c->fd);
    st.conns_open--;
    free(c->want);
    free(c->out);
    free(c);
}

static int set_events(struct conn *c, bool want_out)
{
    if (c->want_out == want_out) return 0;
    struct epoll_event ee = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.fd = c->fd};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ee) != 0) {
        log_error(C, "epoll_ctl: %s", strerror(errno));
        return -1;
    }
    c->want_out = want_out;
    return 0;
}

static int out_reserve(struct conn *c, size_t extra)
{
    if (c->out_len + extra <= c->out_cap) return 0;
    size_t cap = c->out_cap ? c->out_cap : FILL_BYTES * 2;
    while (cap < c->out_len + extra)
        cap *= 2;
    char *grown = realloc(c->out, cap);
    if (!grown) return -1;
    c->out = grown;
    c->out_cap = cap;
    return 0;
}

static void out_put(struct conn *c, const void *p, size_t n)
{
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* An unmasked server frame header; room for it is reserved by the caller. */
static void out_header(struct conn *c, unsigned opcode, uint64_t len)
{
    unsigned char h[10];
    size_t hl;
    h[0] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        h[1] = (unsigned char)len;
        hl = 2;
    } else if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        hl = 10;
    }
    out_put(c, h, hl);
}

static int out_frame(struct conn *c, unsigned opcode, const void *p, size_t n)
{
    if (out_reserve(c, n + 10) != 0) return -1;
    out_header(c, opcode, n);
    out_put(c, p, n);
    return 0;
}

/* Appends virtual event j as one text frame, rewritten for its loop pass and protocol. */
static int out_event(struct conn *c, uint64_t j)
{
    const struct event *ev = &cfg.ev[j % cfg.n];
    const char *line = cfg.data + ev->off;
    uint64_t pass = j / cfg.n;
    char tbuf[24], pbuf[96];
    size_t tl = 0, pl = 0;
    if (ev->kind != K_RAW && (pass > 0 || cfg.shift))
        tl = (size_t)snprintf(tbuf, sizeof tbuf, "%" PRId64, vtime(j));
    if (ev->kind != K_RAW && c->v2)
        pl =
            (size_t)snprintf(pbuf, sizeof pbuf, "{\"$type\":\"" V2_TYPE "%s\",\"seq\":%" PRIu64 ",",
                             kind_names[ev->kind], j + 1);
    /* A v2 frame replaces the line's '{' by the prefix (indexed lines have members). */
    size_t body_from = pl ? 1 : 0;
    size_t len = pl + (ev->len - body_from);
    if (tl) len = len - ev->tlen + tl;
    if (out_reserve(c, len + 10) != 0) return -1;
    out_header(c, 0x1, len);
    out_put(c, pbuf, pl);
    if (tl) {
        out_put(c, line + body_from, ev->tpos - body_from);
        out_put(c, tbuf, tl);
        out_put(c, line + ev->tpos + ev->tlen, ev->len - ev->tpos - ev->tlen);
    } else {
        out_put(c, line + body_from, ev->len - body_from);
    }
    return 0;
}

static int out_malformed(struct conn *c)
{
    int64_t t = c->next > 0 ? vtime(c->next - 1) : 0;
    char b[512];
    int n;
    switch (c->malformed_variant++ % 4) {
    case 0:
        n = snprintf(b, sizeof b,
                     "{\"did\":\"did:plc:malformed0000000000000000\",\"time_us\":%" PRId64
                     ",\"kind\":\"commit\",\"commit\":{\"rev\":\"3l",
                     t);
        break;
    case 1:
        n = snprintf(b, sizeof b,
                     "{\"did\":\"did:plc:\xff\xfe\xc3\x28\",\"time_us\":%" PRId64
                     ",\"kind\":\"commit\",\"commit\":{\"rev\":\"3lbadutf8aaaa\",\"operation\":"
                     "\"create\",\"collection\":\"io.atcr.tag\",\"rkey\":\"x\",\"record\":{}}}",
                     t);
        break;
    case 2:
        n = snprintf(b, sizeof b,
                     "{\"did\":42,\"time_us\":\"soon\",\"kind\":[\"commit\"],\"commit\":\"nope\"}");
        break;
    default:
        n = snprintf(b, sizeof b,
                     "{\"did\":\"did:plc:malformed0000000000000000\",\"time_us\":%" PRId64
                     ",\"kind\":\"commit\",\"commit\":{\"rev\":\"3lbadtypesaaa\",\"operation\":"
                     "\"create\",\"collection\":\"io.atcr.manifest\",\"rkey\":\"x\",\"record\":"
                     "{\"$type\":\"io.atcr.manifest\",\"repository\":7,\"digest\":false,"
                     "\"schemaVersion\":\"two\",\"createdAt\":[]},\"cid\":\"bafyreibad\"}}",
                     t);
        break;
    }
    c->malformed_sent++;
    st.malformed_sent++;
    return out_frame(c, 0x1, b, (size_t)n);
}

static bool passes(const struct conn *c, const struct event *ev)
{
    if (ev->kind == K_RAW) return true;
    if (!(c->kinds & ev->kind)) return false;
    return ev->kind != K_COMMIT || !c->want || c->want[ev->coll];
}

static bool pacing_allows(struct conn *c)
{
    if (cfg.rate <= 0 && !cfg.live) return true;
    double el = now_s() - c->started;
    if (cfg.rate > 0 && (double)c->sent >= cfg.rate * el) return false;
    if (cfg.live && vtime(c->next) - vtime(c->first) > (int64_t)(el * 1e6)) return false;
    return true;
}

/* Appends frames until the buffer holds FILL_BYTES; returns -1 on memory failure. */
static int fill(struct conn *c)
{
    uint64_t total = stream_total();
    while (c->out_len < FILL_BYTES && !c->end_after_flush) {
        if (cfg.drop_after && c->sent >= cfg.drop_after) {
            c->end_after_flush = true;
            st.drops++;
            break;
        }
        if (cfg.malformed_every && c->since_malformed >= cfg.malformed_every) {
            c->since_malformed = 0;
            if (out_malformed(c) != 0) return -1;
            continue;
        }
        while (c->next < total && !passes(c, &cfg.ev[c->next % cfg.n]))
            c->next++;
        if (c->next >= total) break;
        if (!pacing_allows(c)) {
            c->paused = true;
            break;
        }
        if (out_event(c, c->next) != 0) return -1;
        c->next++;
        c->sent++;
        c->since_malformed++;
        st.events_sent++;
    }
    return 0;
}

/* Writes what is buffered and refills, until the socket is full or the budget spent. */
static void pump(struct conn *c)
{
    size_t budget = PUMP_BUDGET;
    for (;;) {
        if (c->out_off == c->out_len) {
            c->out_off = c->out_len = 0;
            if (!c->end_after_flush && c->state == CS_STREAM && fill(c) != 0) {
                conn_free(c);
                return;
            }
            if (c->out_len == 0) {
                /* Done, or idle at the end of the stream, or paused until the next tick. */
                if (c->end_after_flush || set_events(c, false) != 0) conn_free(c);
                return;
            }
        }
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EINTR) continue;
            if ((errno != EAGAIN && errno != EWOULDBLOCK) || set_events(c, true) != 0) conn_free(c);
            return;
        }
        c->out_off += (size_t)w;
        st.bytes_sent += (uint64_t)w;
        if ((size_t)w >= budget) {
            /* Let other connections have a turn. */
            if (set_events(c, true) != 0) conn_free(c);
            return;
        }
        budget -= (size_t)w;
    }
}

/* ---------- HTTP request and WebSocket handshake ---------- */

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    unsigned char blk[64];
    uint64_t bits = (uint64_t)len * 8;
    size_t total = ((len + 8) / 64 + 1) * 64;
    for (size_t off = 0; off < total; off += 64) {
        for (size_t i = 0; i < 64; i++) {
            size_t k = off + i;
            if (k < len)
                blk[i] = msg[k];
            else if (k == len)
                blk[i] = 0x80;
            else if (k >= total - 8)
                blk[i] = (unsigned char)(bits >> (8 * (total - 1 - k)));
            else
                blk[i] = 0;
        }
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)blk[4 * i] << 24 | (uint32_t)blk[4 * i + 1] << 16 |
                   (uint32_t)blk[4 * i + 2] << 8 | blk[4 * i + 3];
        for (int i = 16; i < 80; i++) {
            uint32_t x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
            w[i] = x << 1 | x >> 31;
        }
        uint32_t a = h[0], b = h[1], cc = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20)
                f = (b & cc) | (~b & d), k = 0x5A827999;
            else if (i < 40)
                f = b ^ cc ^ d, k = 0x6ED9EBA1;
            else if (i < 60)
                f = (b & cc) | (b & d) | (cc & d), k = 0x8F1BBCDC;
            else
                f = b ^ cc ^ d, k = 0xCA62C1D6;
            uint32_t t = (a << 5 | a >> 27) + f + e + k + w[i];
            e = d, d = cc, cc = b << 30 | b >> 2, b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += cc, h[3] += d, h[4] += e;
    }
    for (int i = 0; i < 20; i++)
        out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Decodes %XX and '+' in place. */
static void url_decode(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
            *o++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
            s += 2;
        } else {
            *o++ = *s == '+' ? ' ' : *s;
        }
    }
    *o = 0;
}

static bool nsid_matches(const char *pattern, const char *nsid)
{
    size_t pl = strlen(pattern);
    if (pl >= 2 && pattern[pl - 1] == '*' && pattern[pl - 2] == '.')
        return strncmp(pattern, nsid, pl - 1) == 0;
    return strcmp(pattern, nsid) == 0;
}

/* Adds each comma-separated collection pattern in v to the connection's filter. */
static int add_collections(struct conn *c, char *v)
{
    if (cfg.no_filter) return 0;
    if (!c->want) {
        c->want = calloc(cfg.ncolls, 1);
        if (!c->want) return -1;
    }
    for (char *save = NULL, *p = strtok_r(v, ",", &save); p; p = strtok_r(NULL, ",", &save))
        for (uint16_t i = 1; i < cfg.ncolls; i++)
            if (nsid_matches(p, cfg.colls[i])) c->want[i] = 1;
    return 0;
}

static int add_kinds(struct conn *c, char *v, bool *seen)
{
    if (!*seen) c->kinds = 0;
    *seen = true;
    for (char *save = NULL, *p = strtok_r(v, ",", &save); p; p = strtok_r(NULL, ",", &save))
        for (unsigned i = 1; i <= K_ACCOUNT; i <<= 1)
            if (strcmp(p, kind_names[i]) == 0) c->kinds |= i;
    return 0;
}

static void http_reply(struct conn *c, const char *status, const char *ctype, const char *body)
{
    char head[256];
    size_t bl = strlen(body);
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      status, ctype, bl);
    if (out_reserve(c, (size_t)hl + bl) != 0) {
        conn_free(c);
        return;
    }
    out_put(c, head, (size_t)hl);
    out_put(c, body, bl);
    c->end_after_flush = true;
    pump(c);
}

static void stats_reply(struct conn *c)
{
    char body[RECENT * 300 + 512];
    size_t o = (size_t)snprintf(
        body, sizeof body,
        "{\"events\":%" PRIu64 ",\"loops\":%" PRIu64 ",\"connectionsTotal\":%" PRIu64
        ",\"connectionsOpen\":%" PRIu64 ",\"eventsSent\":%" PRIu64 ",\"malformedSent\":%" PRIu64
        ",\"drops\":%" PRIu64 ",\"bytesSent\":%" PRIu64 ",\"streamsTotal\":%" PRIu64
        ",\"lastStreamStartedAt\":%.6f,\"requests\":[",
        cfg.n, cfg.loops, st.conns_total, st.conns_open, st.events_sent, st.malformed_sent,
        st.drops, st.bytes_sent, st.streams_total, st.last_stream_unix);
    unsigned count = st.recent_next < RECENT ? st.recent_next : RECENT;
    for (unsigned i = 0; i < count; i++) {
        const char *r = st.recent[(st.recent_next - count + i) % RECENT];
        o += (size_t)snprintf(body + o, sizeof body - o, "%s\"", i ? "," : "");
        for (; *r && o < sizeof body - 8; r++)
            if (*r == '"' || *r == '\\')
                o += (size_t)snprintf(body + o, sizeof body - o, "\\%c", *r);
            else if ((unsigned char)*r >= 0x20 && (unsigned char)*r < 0x7f)
                body[o++] = *r;
        o += (size_t)snprintf(body + o, sizeof body - o, "\"");
    }
    snprintf(body + o, sizeof body - o, "]}");
    http_reply(c, "200 OK", "application/json", body);
}

/* Finds a header's value in the request (case-insensitive name); NUL-terminates it in place. */
static char *header_value(char *headers, const char *name)
{
    size_t nl = strlen(name);
    for (char *p = headers; p && *p; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            char *e = strstr(v, "\r\n");
            if (e) {
                while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                    e--;
                *e = 0;
            }
            return v;
        }
    }
    return NULL;
}

static void handle_request(struct conn *c)
{
    char *hdrs = strstr(c->in, "\r\n");
    if (!hdrs || strncmp(c->in, "GET ", 4) != 0) {
        http_reply(c, "405 Method Not Allowed", "text/plain", "GET only\n");
        return;
    }
    *hdrs = 0;
    hdrs += 2;
    char *target = c->in + 4, *sp = strchr(target, ' ');
    if (sp) *sp = 0;
    snprintf(st.recent[st.recent_next++ % RECENT], sizeof st.recent[0], "%s", target);
    char *query = strchr(target, '?');
    if (query) *query++ = 0;
    if (strcmp(target, "/_stats") == 0) {
        stats_reply(c);
        return;
    }
    bool v1 = strcmp(target, "/subscribe") == 0;
    c->v2 = strcmp(target, V2_PATH) == 0;
    if (!v1 && !c->v2) {
        http_reply(c, "404 Not Found", "text/plain", "unknown path\n");
        return;
    }
    char *key = header_value(hdrs, "Sec-WebSocket-Key");
    if (!key || !*key) {
        http_reply(c, "400 Bad Request", "text/plain", "expected a WebSocket upgrade\n");
        return;
    }
    char keybuf[128];
    snprintf(keybuf, sizeof keybuf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char digest[20];
    char accept[32];
    sha1((const unsigned char *)keybuf, strlen(keybuf), digest);
    base64(digest, 20, accept);

    c->kinds = K_COMMIT | K_IDENTITY | K_ACCOUNT;
    bool kinds_seen = false;
    int64_t cursor = -1;
    for (char *save = NULL, *kv = query ? strtok_r(query, "&", &save) : NULL; kv;
         kv = strtok_r(NULL, "&", &save)) {
        char *v = strchr(kv, '=');
        if (!v) continue;
        *v++ = 0;
        url_decode(v);
        int rc = 0;
        if (strcmp(kv, v1 ? "wantedCollections" : "collections") == 0)
            rc = add_collections(c, v);
        else if (c->v2 && strcmp(kv, "kinds") == 0)
            rc = add_kinds(c, v, &kinds_seen);
        else if (strcmp(kv, "cursor") == 0)
            cursor = strtoll(v, NULL, 10);
        if (rc != 0) {
            conn_free(c);
            return;
        }
    }
    if (cursor > 0) c->next = v1 ? seek_time(cursor) : (uint64_t)cursor;
    if (c->next > stream_total()) c->next = stream_total();
    c->first = c->next;
    c->started = now_s();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    st.streams_total++;
    st.last_stream_unix = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
    char resp[256];
    int rl = snprintf(resp, sizeof resp,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                      accept);
    if (out_reserve(c, (size_t)rl) != 0) {
        conn_free(c);
        return;
    }
    out_put(c, resp, (size_t)rl);
    c->state = CS_STREAM;
    c->in_len = 0;
    if (cfg.stats) log_info(C, "fd %d: %s from %" PRIu64, c->fd, c->v2 ? "v2" : "v1", c->next);
    pump(c);
}

/* Client frames: answers pings and closes, discards the rest. Returns false if c was freed. */
static bool handle_client_frames(struct conn *c)
{
    size_t p = 0;
    while (c->in_len - p >= 2) {
        const unsigned char *h = (const unsigned char *)c->in + p;
        unsigned opcode = h[0] & 0x0f;
        bool masked = h[1] & 0x80;
        uint64_t len = h[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (c->in_len - p < 4) break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (c->in_len - p < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
            hl = 10;
        }
        size_t ml = masked ? 4 : 0;
        if (len > REQ_MAX - 14) {
            conn_free(c); /* clients have nothing big to say here */
            return false;
        }
        if (c->in_len - p < hl + ml + len) break;
        unsigned char payload[REQ_MAX];
        for (size_t i = 0; i < len; i++)
            payload[i] = h[hl + ml + i] ^ (masked ? h[hl + (i & 3)] : 0);
        if (opcode == 0x9) {
            if (out_frame(c, 0xA, payload, len) != 0) {
                conn_free(c);
                return false;
            }
        } else if (opcode == 0x8 && !c->close_received) {
            c->close_received = true;
            if (out_frame(c, 0x8, payload, len < 2 ? len : 2) != 0) {
                conn_free(c);
                return false;
            }
            c->end_after_flush = true;
        }
        p += hl + ml + len;
    }
    memmove(c->in, c->in + p, c->in_len - p);
    c->in_len -= p;
    return true;
}

static void on_readable(struct conn *c)
{
    for (;;) {
        if (c->in_len == sizeof c->in - 1) {
            conn_free(c);
            return;
        }
        ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len);
        if (r == 0) {
            conn_free(c);
            return;
        }
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) conn_free(c);
            return;
        }
        c->in_len += (size_t)r;
        c->in[c->in_len] = 0;
        if (c->state == CS_REQUEST) {
            if (strstr(c->in, "\r\n\r\n")) {
                handle_request(c);
                return;
            }
        } else {
            if (!handle_client_frames(c)) return;
            if (c->out_off < c->out_len || c->end_after_flush) {
                pump(c);
                return;
            }
        }
    }
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warn(C, "accept: %s", strerror(errno));
            return;
        }
        int one = 1;
        struct conn *c = fd < MAX_FDS ? calloc(1, sizeof *c) : NULL;
        if (!c || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
            log_warn(C, "dropping connection: out of resources");
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ee = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ee) != 0) {
            log_warn(C, "epoll_ctl add: %s", strerror(errno));
            free(c);
            close(fd);
            continue;
        }
        conns[fd] = c;
        if (fd > max_fd) max_fd = fd;
        st.conns_total++;
        st.conns_open++;
    }
}

static void on_tick(int tfd)
{
    uint64_t expirations;
    if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        log_warn(C, "timerfd read: %s", strerror(errno));
    for (int fd = 0; fd <= max_fd; fd++) {
        struct conn *c = conns[fd];
        if (c && c->paused) {
            c->paused = false;
            pump(c);
        }
    }
}

static int listen_on(const char *spec)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof host) {
        log_error(C, "--listen wants HOST:PORT, got %s", spec);
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        log_error(C, "--listen: not an IPv4 address: %s", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0) {
        log_error(C, "cannot listen on %s: %s", spec, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    socklen_t sl = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        log_info(C, "listening on %s:%u, %" PRIu64 " events x %" PRIu64 " loops, %u collections",
                 host, ntohs(sa.sin_port), cfg.n, cfg.loops, cfg.ncolls - 1u);
    return fd;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: jetstream_replay --listen HOST:PORT --events FILE.jsonl [--loop N]\n"
            "         [--drop-after N] [--malformed EVERY_N] [--rate EVENTS_PER_S] [--live]\n"
            "         [--no-filter] [--stats] [--recent]\n");
}

int main(int argc, char **argv)
{
    const char *listen_spec = NULL, *events = NULL;
    log_init_from_env();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (strcmp(a, "--listen") == 0 && v)
            listen_spec = v;
        else if (strcmp(a, "--events") == 0 && v)
            events = v;
        else if (strcmp(a, "--loop") == 0 && v)
            cfg.loops = strtoull(v, NULL, 10);
        else if (strcmp(a, "--drop-after") == 0 && v)
            cfg.drop_after = strtoull(v, NULL, 10);
        else if (strcmp(a, "--malformed") == 0 && v)
            cfg.malformed_every = strtoull(v, NULL, 10);
        else if (strcmp(a, "--rate") == 0 && v)
            cfg.rate = strtod(v, NULL);
        else {
            takes = false;
            if (strcmp(a, "--live") == 0)
                cfg.live = true;
            else if (strcmp(a, "--no-filter") == 0)
                cfg.no_filter = true;
            else if (strcmp(a, "--stats") == 0)
                cfg.stats = true;
            else if (strcmp(a, "--recent") == 0)
                cfg.recent = true;
            else {
                usage();
                return 2;
            }
        }
        i += takes;
    }
    if (!listen_spec || !events || cfg.loops == 0) {
        usage();
        return 2;
    }
    double t0 = now_s();
    if (load_events(events) != 0) {
        log_error(C, "cannot load %s", events);
        return 1;
    }
    log_info(C, "indexed %s in %.2fs", events, now_s() - t0);
    if (cfg.recent && cfg.n) {
        struct timespec wall;
        clock_gettime(CLOCK_REALTIME, &wall);
        cfg.shift =
            (int64_t)wall.tv_sec * 1000000 + wall.tv_nsec / 1000 - cfg.ev[cfg.n - 1].time_us;
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = listen_on(listen_spec);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (lfd < 0 || epfd < 0) return 1;
    struct epoll_event ee = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ee) != 0) return 1;
    int tfd = -1;
    if (cfg.rate > 0 || cfg.live) {
        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct itimerspec its = {.it_interval = {0, 5000000}, .it_value = {0, 5000000}};
        ee = (struct epoll_event){.events = EPOLLIN, .data.fd = tfd};
        if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0 ||
            epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ee) != 0) {
            log_error(C, "timerfd: %s", strerror(errno));
            return 1;
        }
    }
    struct epoll_event evs[64];
    while (!stopping) {
        int n = epoll_wait(epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            log_error(C, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                on_accept(lfd);
                continue;
            }
            if (fd == tfd) {
                on_tick(tfd);
                continue;
            }
            struct conn *c = conns[fd];
            if (c && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(c);
            c = conns[fd];
            if (c && (evs[i].events & EPOLLOUT)) pump(c);
        }
    }
    log_info(C,
             "stopping: %" PRIu64 " connections, %" PRIu64 " events sent, %" PRIu64
             " malformed, %" PRIu64 " drops",
             st.conns_total, st.events_sent, st.malformed_sent, st.drops);
    for (int fd = 0; fd <= max_fd; fd++)
        if (conns[fd]) conn_free(conns[fd]);
    close(lfd);
    close(epfd);
    if (tfd >= 0) close(tfd);
    for (uint16_t i = 1; i < cfg.ncolls; i++)
        free(cfg.colls[i]);
    free(cfg.colls);
    free(cfg.ev);
    free((void *)cfg.data);
    return 0;
}
