/* A local Jetstream server for tests and benchmarks, speaking the wire of the
 * bluesky-social/jetstream repository (docs/README.md section 5, and the lexicon
 * network.bsky.jetstream.subscribeEvents, which tests/interop/validate-frames.js checks every
 * frame against).
 *
 * It serves a JSONL file of Jetstream v1 events (kinds commit, identity, account, and sync,
 * which v1 never sends). Event i of the file (1-based, blank lines skipped) has seq i; with
 * --loop N the file repeats N times with time_us shifted past the previous pass and seq
 * continuing. Lines that are not JSON objects with a numeric time_us, a string did and a known
 * kind are sent verbatim on both endpoints (that is how fixtures carry malformed input).
 *
 * v1, GET /subscribe: the file's lines with "cursor":<seq> after time_us, filtered by
 * wantedCollections (identity and account always pass); ?cursor= below 1e15 is a seq
 * (inclusive), at or above it a time_us; below the floor it is clamped silently.
 * --legacy-v1 serves the lines as they are, with time_us cursors only (the old servers).
 *
 * v2, GET /xrpc/network.bsky.jetstream.subscribeEvents: subprotocol xrpc.v1.json echoed when
 * offered; frames {"$type":"message","payload":{"$type":"...#commit", ...}} with the payload's
 * members in the order the real server writes them (sorted); filters kinds, dids, collections
 * (NSIDs or "prefix.*", commits only), maxMessageSizeBytes; the v1 names, compress=true, bad
 * kinds and collections that could never apply refused with 400 InvalidRequest (an XRPC
 * envelope); ?cursor= a seq, inclusive (below --floor: 400 CursorTooOld naming the floor), or
 * a time_us (below the floor: clamped, and an #info OutdatedCursor frame first). Without a
 * cursor both endpoints start at the floor: the file stands for what happens after connect.
 *
 * Compression (v2): GET /xrpc/network.bsky.jetstream.getZstdDictionary serves a zstd
 * dictionary trained at start-up (ZDICT_trainFromBuffer) on the file's own frames;
 * zstdDictionary=<its id> makes every frame a binary message holding one zstd frame of exactly
 * the text frame; another id is 400 UnknownZstdDictionary naming the current one. GET /_rotate
 * switches to a second dictionary trained on other frames (a server retrain).
 *
 * --tls-cert FILE --tls-key FILE serve everything over TLS (wss://, https://). --precompress
 * compresses every event's frame with the first dictionary at start-up (benchmarks: zstd at
 * level 1 costs this server more than the client it feeds; the frames stay the same).
 *
 * Built for speed: one epoll thread, the file read once and indexed at start-up, frames
 * assembled into a large per-connection buffer and written in big chunks. After the last event
 * a connection stays open and idle, like a live stream with nothing new.
 *
 * Fault injection: --drop-after N ends each connection (FIN, no close frame) after N events;
 * --error-after N sends a v2 error frame (ConsumerTooSlow) after N events and closes;
 * --info-every N sends a v2 #info frame after every N events; --malformed N sends a garbage
 * frame after every N events (truncated JSON, invalid UTF-8, wrong top-level types, a record
 * with wrong field types, in turn); --bad-zstd N, on compressed streams, a binary frame after
 * every N events that is either not zstd or a zstd frame of 2 MiB (a decompression bomb);
 * --dict-fetch-fails answers getZstdDictionary with 500. Pacing: --rate N caps each connection
 * at N events/s; --live paces by the events' own time_us spacing. --recent shifts every time_us
 * so the file's last event is the moment the server started (an old fixture then reads as
 * minutes old, not years, in a consumer's lag).
 * GET /_stats answers counters and the last request targets as JSON. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
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
#include <zdict.h>
#include <zstd.h>

#include "atproto/log.h"

#define C "replay"
#define MAX_FDS 65536
#define FILL_BYTES (512 * 1024)
#define PUMP_BUDGET (8 * 1024 * 1024)
#define REQ_MAX 16384
#define RECENT 32
#define V2_PATH "/xrpc/network.bsky.jetstream.subscribeEvents"
#define DICT_PATH "/xrpc/network.bsky.jetstream.getZstdDictionary"
#define V2_TYPE "network.bsky.jetstream.subscribeEvents#"
#define SUBPROTOCOL "xrpc.v1.json"
#define MESSAGE_HEAD "{\"$type\":\"message\",\"payload\":{\"$type\":\"" V2_TYPE
#define SEQ_MAX_CURSOR 1000000000000000ull /* below: a seq; from here on: a time_us */
#define MAX_KINDS 4
#define MAX_DIDS 64
#define MAX_PIECES 32
#define DICT_CAPACITY (64 * 1024)
#define DICT_SAMPLES 2000
#define BOMB_BYTES (2 * 1024 * 1024)

enum kind { K_RAW = 0, K_COMMIT = 1, K_IDENTITY = 2, K_ACCOUNT = 4, K_SYNC = 8 };
static const char *const kind_names[] = {
    [K_COMMIT] = "commit", [K_IDENTITY] = "identity", [K_ACCOUNT] = "account", [K_SYNC] = "sync"};

/* Where a value sits in its line: offset and length, quotes and braces included. */
struct span {
    uint32_t off, len;
};

/* A commit's members in the order the v2 payload writes them (the real server sorts them). */
enum { F_CID, F_COLLECTION, F_OPERATION, F_RECORD, F_REV, F_RKEY, NFIELDS };
static const char *const field_names[NFIELDS] = {"cid",    "collection", "operation",
                                                 "record", "rev",        "rkey"};
static const char *const field_keys[NFIELDS] = {
    ",\"cid\":", ",\"collection\":", ",\"operation\":", ",\"record\":", ",\"rev\":", ",\"rkey\":"};

struct event {
    uint64_t off;    /* line start in the file image */
    int64_t time_us; /* raw lines inherit the previous event's, for cursor search */
    uint32_t len;    /* line length without the newline */
    uint32_t tpos;   /* offset of the time_us digits in the line */
    uint16_t tlen;   /* their length */
    uint16_t coll;   /* collection id (commits), 0 for none */
    uint8_t kind;    /* enum kind */
    struct span did;
    struct span body;       /* identity/account/sync: the upstream event's object */
    struct span f[NFIELDS]; /* commit members; len 0 when absent */
};

struct dict {
    char *bytes;
    size_t len;
    unsigned id;
    ZSTD_CDict *cdict;
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
    uint64_t drop_after, error_after, info_every, malformed_every, bad_zstd_every, floor;
    double rate;
    bool live, no_filter, stats, legacy_v1, dict_fetch_fails, recent;
    struct dict dicts[2];
    int dict_cur;
    bool precompress;
    char *pre;         /* --precompress: every event's zstd frame (dictionary 0), one pass */
    uint64_t *pre_off; /* where event i's starts; pre_off[n] is the end */
    SSL_CTX *tls;
} cfg = {.loops = 1, .floor = 1};

static struct {
    uint64_t conns_total, conns_open, events_sent, malformed_sent, drops, bytes_sent;
    uint64_t frames_compressed, errors_sent, infos_sent, refused;
    uint64_t streams_total;  /* WebSocket streams begun */
    double last_stream_unix; /* when the newest began: benchmarks time from here */
    char recent[RECENT][256];
    unsigned recent_next;
} st;

enum cstate { CS_TLS, CS_REQUEST, CS_STREAM };

struct conn {
    int fd;
    SSL *ssl;
    enum cstate state;
    bool v2, want_out, paused, end_after_flush, close_received, zstd, info_pending;
    unsigned kinds; /* bitmask of enum kind accepted; raw lines always pass */
    uint8_t *want;  /* per collection id; NULL = every collection */
    char *dids[MAX_DIDS];
    unsigned ndids;
    uint64_t max_size; /* maxMessageSizeBytes; 0 = none */
    uint64_t next;     /* virtual index into the looped stream */
    uint64_t first;    /* where this stream started, for pacing */
    uint64_t sent, since_malformed, since_info, since_bad_zstd, malformed_sent;
    unsigned malformed_variant, bad_zstd_variant;
    double started; /* monotonic seconds */
    char in[REQ_MAX];
    size_t in_len;
    char *out;
    size_t out_len, out_off, out_cap;
    char *scratch; /* a frame being assembled before compression */
    size_t scratch_cap;
    ZSTD_CCtx *cctx;
    const struct dict *dict; /* the one the stream was opened with: a rotation does not touch it */
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

static struct span span_of(const char *line, const struct field *f)
{
    return f ? (struct span){(uint32_t)(f->val - line), (uint32_t)(f->val_end - f->val)}
             : (struct span){0, 0};
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

/* Fills kind, time_us, the did and the members v2 needs from one line; leaves kind K_RAW if it
 * is not a usable Jetstream event. The last interned collection is cached: runs of one
 * collection are common. */
static int index_line(struct event *ev, const char *line)
{
    static int last_coll;
    struct field f[16], c[16];
    const char *e = line + ev->len;
    int n = object_fields(line, e, f, 16);
    if (n <= 0) return 0;
    const struct field *t = find_field(f, n, "time_us"), *k = find_field(f, n, "kind");
    const struct field *did = find_field(f, n, "did");
    if (!t || !k || *k->val != '"' || !did || *did->val != '"') return 0;
    char *end;
    errno = 0;
    long long tu = strtoll(t->val, &end, 10);
    if (errno || end != t->val_end || end == t->val) return 0;
    size_t kl = (size_t)(k->val_end - k->val - 2);
    unsigned kind = 0;
    for (unsigned i = 1; i <= K_SYNC; i <<= 1)
        if (strlen(kind_names[i]) == kl && memcmp(k->val + 1, kind_names[i], kl) == 0) kind = i;
    if (!kind) return 0;
    const struct field *body = find_field(f, n, kind_names[kind]);
    if (!body || *body->val != '{') return 0;
    if (kind == K_COMMIT) {
        int cn = object_fields(body->val, body->val_end, c, 16);
        const struct field *col = cn > 0 ? find_field(c, cn, "collection") : NULL;
        if (!col || *col->val != '"') return 0;
        for (int i = 0; i < NFIELDS; i++)
            ev->f[i] = span_of(line, find_field(c, cn, field_names[i]));
        if (!ev->f[F_OPERATION].len || !ev->f[F_REV].len || !ev->f[F_RKEY].len) return 0;
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
    ev->did = span_of(line, did);
    ev->body = span_of(line, body);
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

/* ---------- frames: an event as v1 or v2 text, in pieces ---------- */

struct piece {
    const char *p;
    size_t n;
};

struct frame {
    struct piece pc[MAX_PIECES];
    int n;
    size_t len;
    char seq[24], time_us[24], when[40]; /* storage for the formatted numbers */
};

static void add(struct frame *f, const char *p, size_t n)
{
    f->pc[f->n++] = (struct piece){p, n};
    f->len += n;
}
#define ADD_LIT(f, lit) add((f), (lit), sizeof(lit) - 1)

static void add_span(struct frame *f, const char *line, struct span s)
{
    add(f, line + s.off, s.len);
}

/* RFC 3339 with exactly six fractional digits, UTC, as the v2 "time" fields are written. */
static size_t format_time(char *out, size_t cap, int64_t us)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    return n + (size_t)snprintf(out + n, cap - n, ".%06" PRId64 "Z", us % 1000000);
}

/* The v2 payload of virtual event j (not a raw line), in the members' sorted order. */
static void v2_event(struct frame *f, uint64_t j)
{
    const struct event *ev = &cfg.ev[j % cfg.n];
    const char *line = cfg.data + ev->off;
    size_t sl = (size_t)snprintf(f->seq, sizeof f->seq, "%" PRIu64, j + 1);
    size_t wl = format_time(f->when, sizeof f->when, vtime(j));
    add(f, MESSAGE_HEAD, strlen(MESSAGE_HEAD));
    add(f, kind_names[ev->kind], strlen(kind_names[ev->kind]));
    ADD_LIT(f, "\"");
    switch (ev->kind) {
    case K_COMMIT:
        for (int i = 0; i < NFIELDS; i++) {
            if (!ev->f[i].len) continue;
            if (i == F_OPERATION) { /* "did" sorts between collection and operation */
                ADD_LIT(f, ",\"did\":");
                add_span(f, line, ev->did);
            }
            add(f, field_keys[i], strlen(field_keys[i]));
            add_span(f, line, ev->f[i]);
        }
        break;
    case K_IDENTITY:
        ADD_LIT(f, ",\"did\":");
        add_span(f, line, ev->did);
        ADD_LIT(f, ",\"identity\":");
        add_span(f, line, ev->body);
        break;
    case K_ACCOUNT:
        ADD_LIT(f, ",\"account\":");
        add_span(f, line, ev->body);
        ADD_LIT(f, ",\"did\":");
        add_span(f, line, ev->did);
        break;
    default: /* K_SYNC: "seq" sorts before "sync" */
        ADD_LIT(f, ",\"did\":");
        add_span(f, line, ev->did);
        ADD_LIT(f, ",\"seq\":");
        add(f, f->seq, sl);
        ADD_LIT(f, ",\"sync\":");
        add_span(f, line, ev->body);
        ADD_LIT(f, ",\"time\":\"");
        add(f, f->when, wl);
        ADD_LIT(f, "\"}}");
        return;
    }
    ADD_LIT(f, ",\"seq\":");
    add(f, f->seq, sl);
    ADD_LIT(f, ",\"time\":\"");
    add(f, f->when, wl);
    ADD_LIT(f, "\"}}");
}

/* Virtual event j as the connection's protocol writes it. */
static void event_frame(const struct conn *c, struct frame *f, uint64_t j)
{
    f->n = 0;
    f->len = 0;
    const struct event *ev = &cfg.ev[j % cfg.n];
    const char *line = cfg.data + ev->off;
    if (ev->kind == K_RAW) {
        add(f, line, ev->len);
        return;
    }
    if (c->v2) {
        v2_event(f, j);
        return;
    }
    size_t tl = (size_t)snprintf(f->time_us, sizeof f->time_us, "%" PRId64, vtime(j));
    add(f, line, ev->tpos);
    add(f, f->time_us, tl);
    if (!cfg.legacy_v1) {
        size_t sl = (size_t)snprintf(f->seq, sizeof f->seq, ",\"cursor\":%" PRIu64, j + 1);
        add(f, f->seq, sl);
    }
    add(f, line + ev->tpos + ev->tlen, ev->len - ev->tpos - ev->tlen);
}

/* ---------- connections ---------- */

static const struct dict *current_dict(void);

static void conn_free(struct conn *c)
{
    if (cfg.stats)
        log_info(C, "fd %d closed: %" PRIu64 " events, %" PRIu64 " malformed, next %" PRIu64, c->fd,
                 c->sent, c->malformed_sent, c->next);
    conns[c->fd] = NULL;
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);
    st.conns_open--;
    free(c->want);
    for (unsigned i = 0; i < c->ndids; i++)
        free(c->dids[i]);
    free(c->out);
    free(c->scratch);
    ZSTD_freeCCtx(c->cctx);
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

/* One zstd frame of src with the current dictionary, as a binary message. */
static int out_compressed(struct conn *c, const void *src, size_t n)
{
    size_t bound = ZSTD_compressBound(n);
    if (out_reserve(c, bound + 10) != 0) return -1;
    /* The header goes first; its size depends on the compressed length, so compress after a
     * maximal one and move the result down if the header turns out shorter. */
    char *dst = c->out + c->out_len + 10;
    size_t z = ZSTD_compress_usingCDict(c->cctx, dst, bound, src, n, c->dict->cdict);
    if (ZSTD_isError(z)) {
        log_error(C, "zstd: %s", ZSTD_getErrorName(z));
        return -1;
    }
    size_t start = c->out_len;
    out_header(c, 0x2, z);
    memmove(c->out + c->out_len, c->out + start + 10, z);
    c->out_len += z;
    st.frames_compressed++;
    return 0;
}

/* A text frame of the connection's protocol: compressed on a zstd stream. */
static int out_text(struct conn *c, const struct frame *f)
{
    if (!c->zstd) {
        if (out_reserve(c, f->len + 10) != 0) return -1;
        out_header(c, 0x1, f->len);
        for (int i = 0; i < f->n; i++)
            out_put(c, f->pc[i].p, f->pc[i].n);
        return 0;
    }
    if (f->len > c->scratch_cap) {
        char *grown = realloc(c->scratch, f->len);
        if (!grown) return -1;
        c->scratch = grown;
        c->scratch_cap = f->len;
    }
    size_t o = 0;
    for (int i = 0; i < f->n; i++) {
        memcpy(c->scratch + o, f->pc[i].p, f->pc[i].n);
        o += f->pc[i].n;
    }
    return out_compressed(c, c->scratch, o);
}

static int out_literal(struct conn *c, const char *text)
{
    struct frame f = {0};
    add(&f, text, strlen(text));
    return out_text(c, &f);
}

static int out_info(struct conn *c, const char *name, const char *message)
{
    char b[512];
    snprintf(b, sizeof b, MESSAGE_HEAD "info\",\"message\":\"%s\",\"name\":\"%s\"}}", message,
             name);
    st.infos_sent++;
    return out_literal(c, b);
}

static int out_malformed(struct conn *c)
{
    int64_t t = c->next > 0 ? vtime(c->next - 1) : 0;
    uint64_t seq = c->next; /* the frames that carry a seq repeat the last event's */
    char b[768];
    int n;
    switch ((c->malformed_variant++ % 4) + (c->v2 ? 4 : 0)) {
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
    case 3:
        n = snprintf(b, sizeof b,
                     "{\"did\":\"did:plc:malformed0000000000000000\",\"time_us\":%" PRId64
                     ",\"kind\":\"commit\",\"commit\":{\"rev\":\"3lbadtypesaaa\",\"operation\":"
                     "\"create\",\"collection\":\"io.atcr.manifest\",\"rkey\":\"x\",\"record\":"
                     "{\"$type\":\"io.atcr.manifest\",\"repository\":7,\"digest\":false,"
                     "\"schemaVersion\":\"two\",\"createdAt\":[]},\"cid\":\"bafyreibad\"}}",
                     t);
        break;
    case 4:
        n = snprintf(b, sizeof b, MESSAGE_HEAD "commit\",\"cid\":\"bafyrei");
        break;
    case 5:
        n = snprintf(b, sizeof b,
                     MESSAGE_HEAD "commit\",\"collection\":\"io.atcr.tag\",\"did\":"
                                  "\"did:plc:\xff\xfe\xc3\x28\",\"operation\":\"create\","
                                  "\"record\":{},\"rev\":\"3lbadutf8aaaa\",\"rkey\":\"x\",\"seq\":"
                                  "%" PRIu64 ",\"time\":\"2024-11-19T07:06:40.000000Z\"}}",
                     seq);
        break;
    case 6:
        n = snprintf(b, sizeof b,
                     "{\"$type\":\"message\",\"payload\":{\"$type\":42,\"seq\":\"soon\","
                     "\"did\":[]}}");
        break;
    default:
        n = snprintf(b, sizeof b,
                     MESSAGE_HEAD "commit\",\"cid\":\"bafyreibad\",\"collection\":"
                                  "\"io.atcr.manifest\",\"did\":\"did:plc:malformed0000000000000000"
                                  "\",\"operation\":\"create\",\"record\":{\"$type\":"
                                  "\"io.atcr.manifest\",\"repository\":7,\"digest\":false,"
                                  "\"schemaVersion\":\"two\",\"createdAt\":[]},\"rev\":"
                                  "\"3lbadtypesaaa\",\"rkey\":\"x\",\"seq\":%" PRIu64
                                  ",\"time\":\"2024-11-19T07:06:40.000000Z\"}}",
                     seq);
        break;
    }
    c->malformed_sent++;
    st.malformed_sent++;
    struct frame f = {0};
    add(&f, b, (size_t)n);
    return out_text(c, &f);
}

/* On a compressed stream: a binary frame that is not zstd, or a zstd frame that decompresses
 * to BOMB_BYTES (it compresses to a few hundred). */
static int out_bad_zstd(struct conn *c)
{
    st.malformed_sent++;
    if (c->bad_zstd_variant++ % 2 == 0) {
        static const unsigned char junk[] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0xff, 0xff,
                                             0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02};
        return out_frame(c, 0x2, junk, sizeof junk);
    }
    char *bomb = malloc(BOMB_BYTES);
    if (!bomb) return -1;
    memset(bomb, ' ', BOMB_BYTES);
    static const char head[] = "{\"$type\":\"message\",\"payload\":{\"pad\":\"";
    memcpy(bomb, head, sizeof head - 1);
    memcpy(bomb + BOMB_BYTES - 3, "\"}}", 3);
    int rc = out_compressed(c, bomb, BOMB_BYTES);
    free(bomb);
    return rc;
}

static bool did_wanted(const struct conn *c, const struct event *ev)
{
    if (!c->ndids) return true;
    const char *d = cfg.data + ev->off + ev->did.off + 1;
    size_t dl = ev->did.len - 2;
    for (unsigned i = 0; i < c->ndids; i++)
        if (strlen(c->dids[i]) == dl && !memcmp(c->dids[i], d, dl)) return true;
    return false;
}

static bool passes(const struct conn *c, const struct event *ev)
{
    if (ev->kind == K_RAW) return true;
    if (!(c->kinds & ev->kind)) return false;
    if (!did_wanted(c, ev)) return false;
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

static bool due(uint64_t every, uint64_t *since)
{
    if (!every || *since < every) return false;
    *since = 0;
    return true;
}

/* Appends frames until the buffer holds FILL_BYTES; returns -1 on memory failure. */
static int fill(struct conn *c)
{
    uint64_t total = stream_total();
    struct frame f;
    while (c->out_len < FILL_BYTES && !c->end_after_flush) {
        if (c->info_pending) {
            c->info_pending = false;
            char msg[128];
            snprintf(msg, sizeof msg,
                     "requested timestamp cursor below retention floor; starting at seq %" PRIu64,
                     c->next + 1);
            if (out_info(c, "OutdatedCursor", msg) != 0) return -1;
        }
        if (cfg.drop_after && c->sent >= cfg.drop_after) {
            c->end_after_flush = true;
            st.drops++;
            break;
        }
        if (cfg.error_after && c->sent >= cfg.error_after && c->v2) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "{\"$type\":\"error\",\"error\":\"ConsumerTooSlow\",\"message\":\"reading "
                     "below the floor rate; reconnect with cursor=%" PRIu64 "\"}",
                     c->next + 1);
            if (out_literal(c, msg) != 0) return -1;
            st.errors_sent++;
            c->end_after_flush = true;
            break;
        }
        if (due(cfg.malformed_every, &c->since_malformed)) {
            if (out_malformed(c) != 0) return -1;
            continue;
        }
        if (c->zstd && due(cfg.bad_zstd_every, &c->since_bad_zstd)) {
            if (out_bad_zstd(c) != 0) return -1;
            continue;
        }
        if (c->v2 && due(cfg.info_every, &c->since_info)) {
            if (out_info(c, "ServerNotice", "an advisory that moves nothing") != 0) return -1;
            continue;
        }
        for (; c->next < total; c->next++) {
            const struct event *ev = &cfg.ev[c->next % cfg.n];
            if (!passes(c, ev) || (!c->v2 && ev->kind == K_SYNC)) continue;
            if (!c->max_size) break;
            event_frame(c, &f, c->next);
            if (f.len <= c->max_size) break;
        }
        if (c->next >= total) break;
        if (!pacing_allows(c)) {
            c->paused = true;
            break;
        }
        const struct event *ev = &cfg.ev[c->next % cfg.n];
        if (cfg.pre && c->zstd && c->dict == &cfg.dicts[0] && c->next < cfg.n && !c->max_size &&
            ev->kind != K_RAW) {
            st.frames_compressed++;
            if (out_frame(c, 0x2, cfg.pre + cfg.pre_off[c->next],
                          cfg.pre_off[c->next + 1] - cfg.pre_off[c->next]) != 0)
                return -1;
        } else {
            event_frame(c, &f, c->next);
            if (out_text(c, &f) != 0) return -1;
        }
        c->next++;
        c->sent++;
        c->since_malformed++;
        c->since_info++;
        c->since_bad_zstd++;
        st.events_sent++;
    }
    return 0;
}

/* ---------- I/O, plain or TLS ---------- */

/* > 0 bytes, 0 at end of stream, -1 would block, -2 failed. */
static ssize_t conn_read(struct conn *c, void *p, size_t n)
{
    if (!c->ssl) {
        ssize_t r = read(c->fd, p, n);
        if (r >= 0) return r;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
    }
    int r = SSL_read(c->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -1;
    return e == SSL_ERROR_ZERO_RETURN ? 0 : -2;
}

static ssize_t conn_write(struct conn *c, const void *p, size_t n)
{
    if (!c->ssl) {
        ssize_t w = write(c->fd, p, n);
        if (w >= 0) return w;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
    }
    int w = SSL_write(c->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (w > 0) return w;
    int e = SSL_get_error(c->ssl, w);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? -1 : -2;
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
        ssize_t w = conn_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (w == -2 || set_events(c, true) != 0) conn_free(c);
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

static void base64(const unsigned char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
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

/* Adds the collection pattern p to the connection's filter. */
static int add_collection(struct conn *c, const char *p)
{
    if (cfg.no_filter) return 0;
    if (!c->want) {
        c->want = calloc(cfg.ncolls, 1);
        if (!c->want) return -1;
    }
    for (uint16_t i = 1; i < cfg.ncolls; i++)
        if (nsid_matches(p, cfg.colls[i])) c->want[i] = 1;
    return 0;
}

static void http_reply(struct conn *c, const char *status, const char *ctype, const char *body,
                       size_t bl)
{
    char head[256];
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

/* A refusal before the upgrade: v2 (and XRPC) answer the XRPC error envelope, v1 plain text
 * as the real /subscribe does. */
static void refuse(struct conn *c, bool xrpc, const char *status, const char *name,
                   const char *message)
{
    st.refused++;
    char body[512];
    if (!xrpc) {
        snprintf(body, sizeof body, "%s\n", message);
        http_reply(c, status, "text/plain", body, strlen(body));
        return;
    }
    snprintf(body, sizeof body, "{\"error\":\"%s\",\"message\":\"%s\"}", name, message);
    http_reply(c, status, "application/json", body, strlen(body));
}

static void stats_reply(struct conn *c)
{
    char body[RECENT * 300 + 768];
    size_t o = (size_t)snprintf(
        body, sizeof body,
        "{\"events\":%" PRIu64 ",\"loops\":%" PRIu64 ",\"connectionsTotal\":%" PRIu64
        ",\"connectionsOpen\":%" PRIu64 ",\"eventsSent\":%" PRIu64 ",\"malformedSent\":%" PRIu64
        ",\"drops\":%" PRIu64 ",\"bytesSent\":%" PRIu64 ",\"framesCompressed\":%" PRIu64
        ",\"errorsSent\":%" PRIu64 ",\"infosSent\":%" PRIu64 ",\"refused\":%" PRIu64
        ",\"dictionaryId\":%u,\"streamsTotal\":%" PRIu64 ",\"lastStreamStartedAt\":%.6f"
        ",\"requests\":[",
        cfg.n, cfg.loops, st.conns_total, st.conns_open, st.events_sent, st.malformed_sent,
        st.drops, st.bytes_sent, st.frames_compressed, st.errors_sent, st.infos_sent, st.refused,
        cfg.dicts[cfg.dict_cur].id, st.streams_total, st.last_stream_unix);
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
    http_reply(c, "200 OK", "application/json", body, strlen(body));
}

static void dictionary_reply(struct conn *c, char *query)
{
    const struct dict *d = current_dict();
    if (!d) {
        refuse(c, true, "500 Internal Server Error", "InternalServerError",
               "no dictionary could be trained");
        return;
    }
    if (cfg.dict_fetch_fails) {
        refuse(c, true, "500 Internal Server Error", "InternalServerError",
               "dictionary unavailable (--dict-fetch-fails)");
        return;
    }
    for (char *save = NULL, *kv = query ? strtok_r(query, "&", &save) : NULL; kv;
         kv = strtok_r(NULL, "&", &save)) {
        if (strncmp(kv, "id=", 3) == 0 && strtoull(kv + 3, NULL, 10) != d->id) {
            char msg[128];
            snprintf(msg, sizeof msg, "no dictionary with id %s; current dictionary id is %u",
                     kv + 3, d->id);
            refuse(c, true, "404 Not Found", "DictionaryNotFound", msg);
            return;
        }
    }
    http_reply(c, "200 OK", "application/octet-stream", d->bytes, d->len);
}

/* Copies a header's value in the request (case-insensitive name) to out; false when absent. */
static bool header_value(const char *headers, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = headers; p && *p; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vl = strcspn(v, "\r\n");
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            snprintf(out, cap, "%.*s", (int)vl, v);
            return true;
        }
    }
    return false;
}

/* The request's parameters, validated as the endpoint's real server does. */
struct params {
    bool has_cursor, kinds_set, collections_set;
    unsigned long long cursor, dict_id;
    char why[200];
    const char *error; /* XRPC error name when refused */
};

static int parse_params(struct conn *c, char *query, struct params *p)
{
    unsigned nkinds = 0;
    for (char *save = NULL, *kv = query ? strtok_r(query, "&", &save) : NULL; kv;
         kv = strtok_r(NULL, "&", &save)) {
        char *v = strchr(kv, '=');
        if (!v) continue;
        *v++ = 0;
        url_decode(v);
        if (!strcmp(kv, "cursor")) {
            char *end;
            errno = 0;
            long long n = strtoll(v, &end, 10);
            if (errno || end == v || *end || n < 0) {
                snprintf(p->why, sizeof p->why, "subscribe: invalid cursor: \\\"%.40s\\\"", v);
                return -1;
            }
            p->has_cursor = true;
            p->cursor = (unsigned long long)n;
        } else if (!c->v2) {
            if (!strcmp(kv, "wantedCollections")) {
                for (char *s2 = NULL, *one = strtok_r(v, ",", &s2); one;
                     one = strtok_r(NULL, ",", &s2))
                    if (add_collection(c, one)) return -2;
            }
        } else if (!strcmp(kv, "wantedCollections") || !strcmp(kv, "wantedDids") ||
                   !strcmp(kv, "requireHello")) {
            snprintf(p->why, sizeof p->why,
                     "subscribe: invalid options: %s is the legacy /subscribe parameter", kv);
            return -1;
        } else if (!strcmp(kv, "compress") && !strcmp(v, "true")) {
            snprintf(p->why, sizeof p->why,
                     "compress=true is the /subscribe (v1) opt-in; this endpoint uses "
                     "zstdDictionary=<id> with the dictionary from getZstdDictionary");
            return -1;
        } else if (!strcmp(kv, "kinds")) {
            unsigned k = 0;
            for (unsigned i = 1; i <= K_SYNC; i <<= 1)
                if (!strcmp(v, kind_names[i])) k = i;
            if (!k || ++nkinds > MAX_KINDS) {
                snprintf(p->why, sizeof p->why, "subscribe: invalid options: bad kinds value %.40s",
                         v);
                return -1;
            }
            if (!p->kinds_set) c->kinds = 0;
            p->kinds_set = true;
            c->kinds |= k;
        } else if (!strcmp(kv, "collections")) {
            size_t vl = strlen(v);
            if (!vl || (strchr(v, '*') &&
                        (vl < 3 || strcmp(v + vl - 2, ".*") || strchr(v, '*') != v + vl - 1))) {
                snprintf(p->why, sizeof p->why,
                         "subscribe: invalid options: bad collections value %.40s", v);
                return -1;
            }
            p->collections_set = true;
            if (add_collection(c, v)) return -2;
        } else if (!strcmp(kv, "dids")) {
            if (c->ndids == MAX_DIDS || strncmp(v, "did:", 4)) {
                snprintf(p->why, sizeof p->why, "subscribe: invalid options: bad dids value");
                return -1;
            }
            if (!(c->dids[c->ndids++] = strdup(v))) return -2;
        } else if (!strcmp(kv, "maxMessageSizeBytes")) {
            c->max_size = strtoull(v, NULL, 10);
        } else if (!strcmp(kv, "zstdDictionary")) {
            p->dict_id = strtoull(v, NULL, 10);
            if (!p->dict_id || p->dict_id > UINT32_MAX) {
                snprintf(p->why, sizeof p->why,
                         "zstdDictionary must be a positive integer zstd dictionary ID");
                return -1;
            }
        }
    }
    if (c->v2 && p->kinds_set && p->collections_set && !(c->kinds & K_COMMIT)) {
        snprintf(p->why, sizeof p->why,
                 "subscribe: invalid options: collections filter with kinds excluding commit "
                 "could never apply");
        return -1;
    }
    return 0;
}

/* Where the stream starts for the request's cursor; -1 when v2 refuses it (why filled). */
static int resolve_cursor(struct conn *c, const struct params *p)
{
    uint64_t total = stream_total(), floor_ix = cfg.floor > 0 ? cfg.floor - 1 : 0;
    c->next = floor_ix;
    if (!p->has_cursor) return 0;
    if (!c->v2 && cfg.legacy_v1) {
        uint64_t at = seek_time((int64_t)p->cursor);
        c->next = at > floor_ix ? at : floor_ix;
        return 0;
    }
    if (p->cursor < SEQ_MAX_CURSOR) {
        uint64_t seq = p->cursor ? p->cursor : 1;
        if (seq - 1 < floor_ix && c->v2) return -1;
        c->next = seq - 1 > floor_ix ? seq - 1 : floor_ix;
    } else {
        uint64_t at = seek_time((int64_t)p->cursor);
        c->info_pending = c->v2 && at < floor_ix;
        c->next = at > floor_ix ? at : floor_ix;
    }
    if (c->next > total) c->next = total;
    return 0;
}

static void handle_request(struct conn *c)
{
    char *hdrs = strstr(c->in, "\r\n");
    if (!hdrs || strncmp(c->in, "GET ", 4) != 0) {
        refuse(c, false, "405 Method Not Allowed", NULL, "GET only");
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
    if (strcmp(target, "/_rotate") == 0) {
        if (current_dict()) cfg.dict_cur ^= 1;
        log_info(C, "dictionary rotated to id %u", cfg.dicts[cfg.dict_cur].id);
        stats_reply(c);
        return;
    }
    if (strcmp(target, DICT_PATH) == 0) {
        dictionary_reply(c, query);
        return;
    }
    bool v1 = strcmp(target, "/subscribe") == 0;
    c->v2 = strcmp(target, V2_PATH) == 0;
    if (!v1 && !c->v2) {
        refuse(c, !strncmp(target, "/xrpc/", 6), "404 Not Found", "MethodNotImplemented",
               "unknown path");
        return;
    }
    char key[64], protocols[256];
    if (!header_value(hdrs, "Sec-WebSocket-Key", key, sizeof key) || !*key) {
        refuse(c, c->v2, "400 Bad Request", "InvalidRequest", "expected a WebSocket upgrade");
        return;
    }
    char keybuf[128];
    snprintf(keybuf, sizeof keybuf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char digest[20];
    char accept[32];
    if (!EVP_Digest(keybuf, strlen(keybuf), digest, NULL, EVP_sha1(), NULL)) {
        conn_free(c);
        return;
    }
    base64(digest, 20, accept);
    bool offered = false;
    bool any = c->v2 && header_value(hdrs, "Sec-WebSocket-Protocol", protocols, sizeof protocols);
    for (char *save = NULL, *tok = any ? strtok_r(protocols, ", ", &save) : NULL; tok;
         tok = strtok_r(NULL, ", ", &save))
        offered |= !strcmp(tok, SUBPROTOCOL);

    c->kinds = K_COMMIT | K_IDENTITY | K_ACCOUNT | K_SYNC;
    struct params p = {0};
    int rc = parse_params(c, query, &p);
    if (rc == -2) {
        conn_free(c);
        return;
    }
    if (rc < 0) {
        refuse(c, c->v2, "400 Bad Request", "InvalidRequest", p.why);
        return;
    }
    const struct dict *d = p.dict_id ? current_dict() : NULL;
    if (p.dict_id && (!d || p.dict_id != d->id)) {
        snprintf(p.why, sizeof p.why,
                 "unknown zstd dictionary id %llu; current dictionary id is %u (fetch it via "
                 "getZstdDictionary and reconnect)",
                 p.dict_id, d ? d->id : 0);
        refuse(c, true, "400 Bad Request", "UnknownZstdDictionary", p.why);
        return;
    }
    if (resolve_cursor(c, &p) < 0) {
        snprintf(p.why, sizeof p.why,
                 "subscribe: cursor too old: cursor %llu below lookback floor %" PRIu64
                 "; re-backfill from your last seq",
                 p.cursor, cfg.floor);
        refuse(c, true, "400 Bad Request", "CursorTooOld", p.why);
        return;
    }
    c->zstd = p.dict_id != 0;
    c->dict = d;
    if (c->zstd && !(c->cctx = ZSTD_createCCtx())) {
        conn_free(c);
        return;
    }
    c->first = c->next;
    c->started = now_s();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    st.streams_total++;
    st.last_stream_unix = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
    char resp[320];
    int rl = snprintf(resp, sizeof resp,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
                      accept, offered ? "Sec-WebSocket-Protocol: " SUBPROTOCOL "\r\n" : "");
    if (out_reserve(c, (size_t)rl) != 0) {
        conn_free(c);
        return;
    }
    out_put(c, resp, (size_t)rl);
    c->state = CS_STREAM;
    c->in_len = 0;
    if (cfg.stats)
        log_info(C, "fd %d: %s%s from %" PRIu64, c->fd, c->v2 ? "v2" : "v1", c->zstd ? " zstd" : "",
                 c->next);
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

/* TLS: drives the handshake; false once c was freed. */
static bool tls_handshake(struct conn *c)
{
    int r = SSL_accept(c->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_NONE) c->state = CS_REQUEST;
    /* anything else is a client that went away or did not trust the certificate */
    if ((e == SSL_ERROR_NONE || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
        set_events(c, e == SSL_ERROR_WANT_WRITE) == 0)
        return true;
    conn_free(c);
    return false;
}

static void on_readable(struct conn *c)
{
    if (c->state == CS_TLS && (!tls_handshake(c) || c->state == CS_TLS)) return;
    for (;;) {
        if (c->in_len == sizeof c->in - 1) {
            conn_free(c);
            return;
        }
        ssize_t r = conn_read(c, c->in + c->in_len, sizeof c->in - 1 - c->in_len);
        if (r == 0 || r == -2) {
            conn_free(c);
            return;
        }
        if (r < 0) return;
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

static void on_writable(struct conn *c)
{
    if (c->state == CS_TLS) {
        if (tls_handshake(c) && c->state != CS_TLS) on_readable(c);
        return;
    }
    pump(c);
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
        if (!c || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
            (cfg.tls && (!(c->ssl = SSL_new(cfg.tls)) || !SSL_set_fd(c->ssl, fd)))) {
            log_warn(C, "dropping connection: out of resources");
            if (c && c->ssl) SSL_free(c->ssl);
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->state = cfg.tls ? CS_TLS : CS_REQUEST;
        struct epoll_event ee = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ee) != 0) {
            log_warn(C, "epoll_ctl add: %s", strerror(errno));
            if (c->ssl) SSL_free(c->ssl);
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
        log_info(C, "listening on %s:%u%s, %" PRIu64 " events x %" PRIu64 " loops, %u collections",
                 host, ntohs(sa.sin_port), cfg.tls ? " (TLS)" : "", cfg.n, cfg.loops,
                 cfg.ncolls - 1u);
    return fd;
}

/* ---------- start-up: dictionaries and TLS ---------- */

/* Trains dictionary d on up to DICT_SAMPLES v2 frames of the file, every `step`-th from
 * `from`, so that the two dictionaries differ. */
static int train_dictionary(struct dict *d, uint64_t from, uint64_t step)
{
    struct conn v2 = {.v2 = true};
    size_t cap = 0, used = 0, n = 0;
    char *samples = NULL;
    size_t *sizes = calloc(DICT_SAMPLES, sizeof *sizes);
    if (!sizes) return -1;
    struct frame f;
    for (uint64_t j = from; j < cfg.n && n < DICT_SAMPLES; j += step) {
        event_frame(&v2, &f, j);
        if (used + f.len > cap) {
            cap = (used + f.len) * 2 + 65536;
            char *grown = realloc(samples, cap);
            if (!grown) {
                free(samples);
                free(sizes);
                return -1;
            }
            samples = grown;
        }
        for (int i = 0; i < f.n; i++) {
            memcpy(samples + used, f.pc[i].p, f.pc[i].n);
            used += f.pc[i].n;
        }
        sizes[n++] = f.len;
    }
    d->bytes = malloc(DICT_CAPACITY);
    size_t len = d->bytes && n
                     ? ZDICT_trainFromBuffer(d->bytes, DICT_CAPACITY, samples, sizes, (unsigned)n)
                     : 0;
    if (n && ZDICT_isError(len)) {
        /* Too few frames to train on (a small fixture): the frames themselves are the
         * dictionary's content, with entropy tables from the same frames. */
        ZDICT_params_t params = {.compressionLevel = 3};
        size_t content = used < DICT_CAPACITY / 2 ? used : DICT_CAPACITY / 2;
        len = ZDICT_finalizeDictionary(d->bytes, DICT_CAPACITY, samples + used - content, content,
                                       samples, sizes, (unsigned)n, params);
    }
    free(samples);
    free(sizes);
    if (!n || ZDICT_isError(len)) {
        log_error(C, "cannot train a zstd dictionary on %zu frames: %s", n,
                  n ? ZDICT_getErrorName(len) : "no events");
        return -1;
    }
    d->len = len;
    d->id = ZDICT_getDictID(d->bytes, len);
    d->cdict = ZSTD_createCDict(d->bytes, len, 1);
    return d->cdict ? 0 : -1;
}

/* The dictionary in use, both trained on first need (most streams are not compressed);
 * NULL when training failed. */
static const struct dict *current_dict(void)
{
    static int trained; /* 0 not yet, 1 done, -1 failed */
    if (!trained) {
        double t0 = now_s();
        trained =
            train_dictionary(&cfg.dicts[0], 0, 2) == 0 && train_dictionary(&cfg.dicts[1], 1, 2) == 0
                ? 1
                : -1;
        if (trained > 0)
            log_info(C, "trained dictionaries %u and %u in %.2fs", cfg.dicts[0].id, cfg.dicts[1].id,
                     now_s() - t0);
    }
    return trained > 0 ? &cfg.dicts[cfg.dict_cur] : NULL;
}

/* --precompress: every event's v2 frame, compressed once with dictionary 0. */
static int precompress_all(void)
{
    if (!current_dict()) return -1;
    struct conn v2 = {.v2 = true};
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    size_t cap = cfg.size / 2 + 65536, used = 0;
    cfg.pre = malloc(cap);
    cfg.pre_off = malloc((cfg.n + 1) * sizeof *cfg.pre_off);
    char *text = malloc(1 << 20);
    size_t text_cap = 1 << 20;
    struct frame f;
    int rc = cctx && cfg.pre && cfg.pre_off && text ? 0 : -1;
    for (uint64_t j = 0; rc == 0 && j < cfg.n; j++) {
        cfg.pre_off[j] = used;
        if (cfg.ev[j].kind == K_RAW) continue;
        event_frame(&v2, &f, j);
        if (f.len > text_cap) {
            char *grown = realloc(text, f.len);
            if (!grown) {
                rc = -1;
                break;
            }
            text = grown;
            text_cap = f.len;
        }
        size_t o = 0;
        for (int i = 0; i < f.n; i++) {
            memcpy(text + o, f.pc[i].p, f.pc[i].n);
            o += f.pc[i].n;
        }
        size_t bound = ZSTD_compressBound(o);
        if (used + bound > cap) {
            cap = (used + bound) * 2;
            char *grown = realloc(cfg.pre, cap);
            if (!grown) {
                rc = -1;
                break;
            }
            cfg.pre = grown;
        }
        size_t z =
            ZSTD_compress_usingCDict(cctx, cfg.pre + used, bound, text, o, cfg.dicts[0].cdict);
        if (ZSTD_isError(z)) rc = -1;
        used += ZSTD_isError(z) ? 0 : z;
    }
    if (rc == 0) cfg.pre_off[cfg.n] = used;
    free(text);
    ZSTD_freeCCtx(cctx);
    return rc;
}

static SSL_CTX *tls_context(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        log_error(C, "TLS: cannot use %s and %s: %s", cert, key,
                  ERR_error_string(ERR_get_error(), NULL));
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: jetstream_replay --listen HOST:PORT --events FILE.jsonl [--loop N]\n"
            "         [--floor SEQ] [--legacy-v1] [--tls-cert FILE --tls-key FILE]\n"
            "         [--drop-after N] [--error-after N] [--info-every N] [--malformed EVERY_N]\n"
            "         [--bad-zstd EVERY_N] [--dict-fetch-fails] [--precompress]\n"
            "         [--rate EVENTS_PER_S] [--live]\n"
            "         [--no-filter] [--stats] [--recent]\n");
}

int main(int argc, char **argv)
{
    const char *listen_spec = NULL, *events = NULL, *cert = NULL, *key = NULL;
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
        else if (strcmp(a, "--floor") == 0 && v)
            cfg.floor = strtoull(v, NULL, 10);
        else if (strcmp(a, "--tls-cert") == 0 && v)
            cert = v;
        else if (strcmp(a, "--tls-key") == 0 && v)
            key = v;
        else if (strcmp(a, "--drop-after") == 0 && v)
            cfg.drop_after = strtoull(v, NULL, 10);
        else if (strcmp(a, "--error-after") == 0 && v)
            cfg.error_after = strtoull(v, NULL, 10);
        else if (strcmp(a, "--info-every") == 0 && v)
            cfg.info_every = strtoull(v, NULL, 10);
        else if (strcmp(a, "--malformed") == 0 && v)
            cfg.malformed_every = strtoull(v, NULL, 10);
        else if (strcmp(a, "--bad-zstd") == 0 && v)
            cfg.bad_zstd_every = strtoull(v, NULL, 10);
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
            else if (strcmp(a, "--legacy-v1") == 0)
                cfg.legacy_v1 = true;
            else if (strcmp(a, "--dict-fetch-fails") == 0)
                cfg.dict_fetch_fails = true;
            else if (strcmp(a, "--precompress") == 0)
                cfg.precompress = true;
            else if (strcmp(a, "--recent") == 0)
                cfg.recent = true;
            else {
                usage();
                return 2;
            }
        }
        i += takes;
    }
    if (!listen_spec || !events || cfg.loops == 0 || cfg.floor == 0 || !cert != !key) {
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
    if (cfg.precompress) {
        t0 = now_s();
        if (precompress_all() != 0) {
            log_error(C, "cannot precompress the frames");
            return 1;
        }
        log_info(C, "precompressed %" PRIu64 " frames into %" PRIu64 " bytes in %.2fs", cfg.n,
                 cfg.pre_off[cfg.n], now_s() - t0);
    }
    if (cert && !(cfg.tls = tls_context(cert, key))) return 1;

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
            if (c && (evs[i].events & EPOLLOUT)) on_writable(c);
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
    for (int i = 0; i < 2; i++) {
        ZSTD_freeCDict(cfg.dicts[i].cdict);
        free(cfg.dicts[i].bytes);
    }
    SSL_CTX_free(cfg.tls);
    free(cfg.pre);
    free(cfg.pre_off);
    return 0;
}
