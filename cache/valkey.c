#include "cache/valkey.h"

#include <hiredis/async.h>
#include <hiredis/sds.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atproto/buf.h"
#include "atproto/backoff.h"
#include "atproto/freelist.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/redact.h"
#include "atproto/url.h"

#define MAX_SCRIPTS 16
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* After a refusal that retrying does not cure (a wrong password, a missing database), until
 * the operator fixes the server or the URL. */
#define REFUSED_RETRY_MS 30000
#define CONNECT_TIMEOUT_MS 3000
#define WATCHDOG_MS 250
/* An idle connection is pinged this often, so a dead server is noticed without traffic. */
#define IDLE_PING_MS 1000

enum state { VK_DOWN, VK_CONNECTING, VK_LOADING, VK_READY };

typedef struct vk_io vk_io;

/* The in-flight entries kept for reuse: a round of the ingester has thousands on the wire. */
#define SPARE_PENDING 16384

/* One command on the wire. Replies come back in order on one connection, so the list is a
 * queue and its head is the oldest: the watchdog only has to look there. */
typedef struct pending {
    struct pending *prev, *next;
    valkey *v;
    valkey_reply_cb cb;
    void *ud;
    uint64_t sent_ns;
} pending;

typedef struct {
    char *name;
    char *source;
    char sha[41];
} script;

struct valkey {
    uv_loop_t *loop;
    redisAsyncContext *ac;
    enum state state;
    /* parsed URL */
    char *host;
    int port;
    char *unix_path;
    int db;
    char *user, *password;
    char *where;         /* the URL without its password, for logs */
    const char *setting; /* where the URL came from, for errors */
    char problem[256];   /* why the connection is not ready, "" when it is */
    int refused;         /* problem is a setup refusal that retrying does not cure */
    int setup_failed;    /* this connection's setup already failed */
    uint64_t timeout_ns;
    valkey_state_cb on_state;
    void *state_ud;

    script scripts[MAX_SCRIPTS];
    int nscripts;
    int loading; /* setup replies still expected before READY */

    pending head; /* sentinel of the in-flight queue */
    freelist spare_pending;
    size_t npending;

    uv_timer_t reconnect_timer;
    uv_timer_t watchdog;
    uv_prepare_t flush; /* writes queued commands once per loop iteration */
    unsigned attempts;  /* failed connections in a row */
    uint64_t connect_started_ns;
    uint64_t last_sent_ns;
    int freeing;
    int open_handles; /* timers not yet closed; the last close frees the struct */
    vk_io *io;        /* the connection's poll handle, owned by hiredis' cleanup */
    buf command;      /* the command being sent, in RESP */

    uint64_t *commands_total;
    uint64_t *failures_total;
    uint64_t *reconnects_total;
    metrics_histogram *latency;
};

static void schedule_reconnect(valkey *v);

/* ---- URL ---- */

#define URL_FORMS "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH[?db=N]"

static const char *parse_db(const char *s, int *db)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (end == s || *end || n < 0 || n > 1000) return "the DB index must be a number 0..1000";
    *db = (int)n;
    return NULL;
}

static int dup_into(char **dst, const char *s)
{
    return s && !(*dst = strdup(s)) ? -1 : 0;
}

/* Fills v's URL fields from redis://[[user]:password@]host[:port][/db] or
 * unix:///path[?db=N] ("redis://secret@host" is a password alone, as redis-cli reads it);
 * NULL, or why url is not a Valkey URL. */
static const char *parse_url(valkey *v, const char *url)
{
    static const char oom[] = "out of memory";
    static char why[128]; /* one loop thread: the reason is read before the next parse */
    url_parts u;
    if (url_parse(url, &u, why, sizeof why) < 0) return why;
    const char *bad = NULL;
    if (!strcmp(u.scheme, "unix")) {
        if (*u.host || !*u.path)
            bad = "no socket path (unix:///PATH)";
        else if (u.fragment || u.user)
            bad = URL_FORMS;
        else if (u.query && strncmp(u.query, "db=", 3))
            bad = "only ?db=N may follow the socket path";
        else if (u.query)
            bad = parse_db(u.query + 3, &v->db);
        if (!bad && dup_into(&v->unix_path, u.path)) bad = oom;
    } else if (!strcmp(u.scheme, "redis")) {
        const char *user = u.user && *u.user ? u.user : NULL, *password = u.password;
        if (user && !password) {
            password = user;
            user = NULL;
        }
        v->port = u.port;
        if (!*u.host)
            bad = "no host";
        else if (u.query || u.fragment)
            bad = URL_FORMS;
        else if (u.path[0] && u.path[1])
            bad = parse_db(u.path + 1, &v->db);
        if (!bad && (dup_into(&v->host, u.host) || dup_into(&v->user, user) ||
                     dup_into(&v->password, password)))
            bad = oom;
    } else {
        bad = URL_FORMS;
    }
    url_parts_free(&u);
    return bad;
}

static void url_fields_free(valkey *v)
{
    free(v->host);
    free(v->unix_path);
    free(v->user);
    free(v->password);
}

const char *valkey_check_url(const char *url)
{
    valkey v;
    memset(&v, 0, sizeof v);
    const char *why = parse_url(&v, url);
    url_fields_free(&v);
    return why;
}

/* ---- refusals ---- */

/* Setup errors that retrying does not cure: the server wants other credentials, has no such
 * database, or its ACL forbids what the client needs. Anything else (LOADING while it reads
 * its data, a failover) passes by itself. */
int valkey_refusal_is_permanent(const char *error)
{
    static const char *const permanent[] = {"WRONGPASS",
                                            "NOAUTH",
                                            "NOPERM",
                                            "ERR invalid password",
                                            "ERR AUTH",
                                            "ERR DB index is out of range",
                                            "ERR invalid DB index",
                                            "ERR Client sent AUTH, but no password is set"};
    for (size_t i = 0; i < sizeof permanent / sizeof *permanent; i++)
        if (!strncmp(error, permanent[i], strlen(permanent[i]))) return 1;
    return 0;
}

/* What the operator does about a refusal, given the text set_problem logs. */
static const char *refusal_advice(const char *problem)
{
    if (strstr(problem, "DB index"))
        return "the server has fewer databases: use a smaller /DB in the URL, or raise its "
               "'databases' setting";
    if (strstr(problem, "NOPERM"))
        return "the server's ACL does not let this user run what it needs (EVALSHA, SCRIPT, "
               "CLIENT): grant it, or use another user in the URL";
    if (strstr(problem, "no password is set") || strstr(problem, "ERR AUTH"))
        return "the server has no password: remove it from the URL";
    return "check the user and password in the URL (redis://USER:PASSWORD@HOST:PORT/DB) "
           "against the server's requirepass or ACL";
}

/* ---- in-flight queue ---- */

static void queue_push(valkey *v, pending *p)
{
    p->prev = v->head.prev;
    p->next = &v->head;
    v->head.prev->next = p;
    v->head.prev = p;
    v->npending++;
}

static void queue_remove(valkey *v, pending *p)
{
    p->prev->next = p->next;
    p->next->prev = p->prev;
    v->npending--;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    pending *p = privdata;
    valkey *v = p->v;
    queue_remove(v, p);
    if (reply) {
        metrics_observe(v->latency, (double)(uv_hrtime() - p->sent_ns) / 1e9);
        const redisReply *r = reply;
        if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8) && !v->freeing) {
            /* Someone flushed the script cache: reconnecting loads the scripts again. */
            log_warn("valkey", "scripts missing on the server (SCRIPT FLUSH?): reconnecting");
            redisAsyncDisconnect(ac);
        }
    } else {
        (*v->failures_total)++;
    }
    p->cb(reply, p->ud);
    freelist_put(&v->spare_pending, p);
}

/* Above this many bytes of queued commands, they are written at once instead of at the end
 * of the loop iteration: Valkey starts on them while the rest of the batch is built, and the
 * output buffer does not grow (hiredis grows it by 1 MiB steps, copying it each time). */
#define WRITE_AHEAD_BYTES (256 * 1024)

/* A plain write, not redisAsyncHandleWrite: a failure here must not run reply callbacks in
 * the middle of a caller's sending. Errors (and a full socket) are left to the regular
 * flush. */
static void write_ahead(valkey *v)
{
    redisContext *c = &v->ac->c;
    size_t len = sdslen(c->obuf);
    if (len < WRITE_AHEAD_BYTES || !(c->flags & REDIS_CONNECTED)) return;
    ssize_t n = write(c->fd, c->obuf, len);
    if (n > 0) sdsrange(c->obuf, n, -1);
}

/* The command in RESP into v->command: what hiredis' redisFormatCommandArgv makes, without an
 * allocation and a formatted print per argument (a tenth of the ingester's time). */
static int format_command(valkey *v, int argc, const char **argv, const size_t *argvlen)
{
    size_t size = 16;
    for (int i = 0; i < argc; i++)
        size += 24 + (argvlen ? argvlen[i] : strlen(argv[i]));
    buf *b = &v->command;
    buf_reset(b);
    /* Reserved whole: the writes below stay within it. */
    if (buf_reserve(b, size) < 0) return -1;
    char *out = b->data;
    *out++ = '*';
    out = buf_format_ull(out, (unsigned long long)argc);
    for (int i = 0; i < argc; i++) {
        size_t n = argvlen ? argvlen[i] : strlen(argv[i]);
        *out++ = '\r';
        *out++ = '\n';
        *out++ = '$';
        out = buf_format_ull(out, n);
        *out++ = '\r';
        *out++ = '\n';
        memcpy(out, argv[i], n);
        out += n;
    }
    *out++ = '\r';
    *out++ = '\n';
    b->len = (size_t)(out - b->data);
    b->data[b->len] = '\0';
    return 0;
}

/* hiredis gives the output buffer back each time it has written all of it, and the next
 * commands grow a new one by doubling, copying what it holds at every step (3% of the
 * ingester's instructions). Once a buffer holds BURST_BYTES, a burst is on: it is given room
 * for a write-ahead's worth at once. A lone command (a lease renewal, a read) stays small. */
#define BURST_BYTES (16 * 1024)

static void reserve_output(redisContext *c)
{
    if (sdslen(c->obuf) < BURST_BYTES || sdsavail(c->obuf) >= WRITE_AHEAD_BYTES) return;
    sds room = sdsMakeRoomFor(c->obuf, WRITE_AHEAD_BYTES);
    if (room) c->obuf = room; /* else the appends grow it as before */
}

static int send_argv(valkey *v, valkey_reply_cb cb, void *ud, int argc, const char **argv,
                     const size_t *argvlen)
{
    pending *p = freelist_get(&v->spare_pending);
    if (!p) return -1;
    p->v = v;
    p->cb = cb;
    p->ud = ud;
    p->sent_ns = uv_hrtime();
    if (format_command(v, argc, argv, argvlen) < 0 ||
        redisAsyncFormattedCommand(v->ac, on_reply, p, v->command.data, v->command.len) !=
            REDIS_OK) {
        freelist_put(&v->spare_pending, p);
        return -1;
    }
    queue_push(v, p);
    (*v->commands_total)++;
    v->last_sent_ns = p->sent_ns;
    reserve_output(&v->ac->c);
    write_ahead(v);
    return 0;
}

/* ---- connection life cycle ---- */

/* Records why the connection is not ready; logs it the first time it is seen (a server away
 * for an hour is one line, not one per retry). */
static void set_problem(valkey *v, int refused, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_problem(valkey *v, int refused, const char *fmt, ...)
{
    char text[sizeof v->problem];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t len = strlen(text);
    if (len && text[len - 1] == '.') text[len - 1] = '\0'; /* "... Authentication required." */
    v->refused = refused;
    if (!strcmp(text, v->problem)) return;
    snprintf(v->problem, sizeof v->problem, "%s", text);
    if (refused)
        log_error("valkey", "%s (%s): %s; %s; retrying every %d s", v->where, v->setting, text,
                  refusal_advice(text), REFUSED_RETRY_MS / 1000);
    else
        log_warn("valkey", "%s (%s): %s; retrying", v->where, v->setting, text);
}

static void set_state(valkey *v, enum state s)
{
    int was_ready = v->state == VK_READY;
    v->state = s;
    if (v->on_state && !v->freeing && was_ready != (s == VK_READY))
        v->on_state(s == VK_READY, v->state_ud);
}

static void became_ready(valkey *v)
{
    v->attempts = 0;
    v->problem[0] = '\0';
    v->refused = 0;
    log_info("valkey", "ready at %s (%d scripts loaded)", v->where, v->nscripts);
    set_state(v, VK_READY);
}

static void on_setup_reply(redisReply *reply, void *ud)
{
    valkey *v = ud;
    if (!reply) return; /* the disconnect path handles it */
    if (reply->type == REDIS_REPLY_ERROR) {
        /* The first refusal is the cause (a wrong password); the later ones (NOAUTH for the
         * rest of the pipelined setup) follow from it. */
        if (v->setup_failed) return;
        v->setup_failed = 1;
        set_problem(v, valkey_refusal_is_permanent(reply->str), "connection setup refused: %s",
                    reply->str);
        redisAsyncDisconnect(v->ac);
        return;
    }
    if (--v->loading == 0) became_ready(v);
}

static void send_setup(valkey *v)
{
    v->loading = 0;
    int rc = 0;
    if (v->password) {
        const char *argv[3] = {"AUTH", v->user ? v->user : v->password, v->password};
        rc |= send_argv(v, on_setup_reply, v, v->user ? 3 : 2, argv, NULL);
        v->loading++;
    }
    if (v->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", v->db);
        const char *argv[2] = {"SELECT", db};
        rc |= send_argv(v, on_setup_reply, v, 2, argv, NULL);
        v->loading++;
    }
    for (int i = 0; i < v->nscripts; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", v->scripts[i].source};
        rc |= send_argv(v, on_setup_reply, v, 3, argv, NULL);
        v->loading++;
    }
    if (rc) {
        redisAsyncDisconnect(v->ac);
        return;
    }
    if (v->loading == 0) became_ready(v);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    valkey *v = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback, without a disconnect callback. */
        set_problem(v, 0, "cannot connect: %s", ac->errstr);
        v->ac = NULL;
        set_state(v, VK_DOWN);
        schedule_reconnect(v);
        return;
    }
    log_debug("valkey", "connected to %s", v->where);
    v->setup_failed = 0;
    set_state(v, VK_LOADING);
    send_setup(v);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    valkey *v = ac->data;
    v->ac = NULL;
    if (v->freeing) return;
    if (!v->setup_failed) /* a refused setup was logged as such */
        set_problem(v, 0, "disconnected%s%s", status == REDIS_OK ? "" : ": ",
                    status == REDIS_OK ? "" : ac->errstr);
    set_state(v, VK_DOWN);
    schedule_reconnect(v);
}

/* ---- the event-loop adapter ----
 *
 * hiredis 0.14's own libuv adapter arms POLLOUT for every command batch and disarms it after
 * the write (two epoll_ctl calls per loop iteration with traffic), and it drops socket errors
 * without telling hiredis. Here queued commands are written directly once per loop iteration,
 * from a prepare handle (before the loop blocks), and POLLOUT is armed only while connecting
 * or when the kernel's buffer is full; a socket error is handed to hiredis as a read, which
 * makes it see the broken connection. */
struct vk_io {
    valkey *v;
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;     /* what the poll handle watches */
    int want_flush; /* commands queued, not yet written */
    int flushing;
};

static void on_io(uv_poll_t *h, int status, int events);

static void io_watch(vk_io *io, int events)
{
    if (events == io->events) return;
    io->events = events;
    if (events)
        uv_poll_start(&io->poll, events, on_io);
    else
        uv_poll_stop(&io->poll);
}

static void on_io(uv_poll_t *h, int status, int events)
{
    vk_io *io = h->data;
    if (status < 0) {
        if (io->ac) redisAsyncHandleRead(io->ac); /* the read fails: hiredis disconnects */
        return;
    }
    if (io->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(io->ac);
    if (io->ac && (events & UV_READABLE)) redisAsyncHandleRead(io->ac);
}

static void on_flush(uv_prepare_t *h);

static void io_add_read(void *p)
{
    vk_io *io = p;
    io_watch(io, io->events | UV_READABLE);
}

static void io_del_read(void *p)
{
    vk_io *io = p;
    io_watch(io, io->events & ~UV_READABLE);
}

static void io_add_write(void *p)
{
    vk_io *io = p;
    /* Before the connection is up, writability is how it reports being up; during a flush,
     * hiredis asking again means the kernel's buffer is full. */
    if (!(io->ac->c.flags & REDIS_CONNECTED) || io->flushing) {
        io_watch(io, io->events | UV_WRITABLE);
        return;
    }
    io->want_flush = 1;
    uv_prepare_start(&io->v->flush, on_flush);
}

static void io_del_write(void *p)
{
    vk_io *io = p;
    io->want_flush = 0;
    io_watch(io, io->events & ~UV_WRITABLE);
}

static void io_free(uv_handle_t *h)
{
    free(h->data);
}

static void io_cleanup(void *p)
{
    vk_io *io = p;
    io->ac = NULL;
    if (io->v->io == io) io->v->io = NULL;
    uv_close((uv_handle_t *)&io->poll, io_free);
}

static void on_flush(uv_prepare_t *h)
{
    valkey *v = h->data;
    vk_io *io = v->io;
    uv_prepare_stop(h);
    if (!io || !io->ac || !io->want_flush) return;
    io->want_flush = 0;
    io->flushing = 1;
    redisAsyncHandleWrite(io->ac); /* may free the context on a write error */
    if (v->io == io) io->flushing = 0;
}

static int io_attach(valkey *v, redisAsyncContext *ac)
{
    vk_io *io = calloc(1, sizeof *io);
    if (!io) return -1;
    io->v = v;
    io->ac = ac;
    if (uv_poll_init_socket(v->loop, &io->poll, ac->c.fd) != 0) {
        free(io);
        return -1;
    }
    io->poll.data = io;
    ac->ev.data = io;
    ac->ev.addRead = io_add_read;
    ac->ev.delRead = io_del_read;
    ac->ev.addWrite = io_add_write;
    ac->ev.delWrite = io_del_write;
    ac->ev.cleanup = io_cleanup;
    v->io = io;
    return 0;
}

static void connect_now(valkey *v)
{
    redisAsyncContext *ac =
        v->unix_path ? redisAsyncConnectUnix(v->unix_path) : redisAsyncConnect(v->host, v->port);
    if (!ac || ac->err) {
        set_problem(v, 0, "cannot connect: %s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(v);
        return;
    }
    ac->data = v;
    if (io_attach(v, ac) < 0) {
        redisAsyncFree(ac);
        schedule_reconnect(v);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    v->ac = ac;
    v->connect_started_ns = uv_hrtime();
    set_state(v, VK_CONNECTING);
}

static void on_reconnect_timer(uv_timer_t *t)
{
    valkey *v = t->data;
    (*v->reconnects_total)++;
    connect_now(v);
}

static void schedule_reconnect(valkey *v)
{
    if (v->freeing) return;
    /* A refused setup is retried between half and all of its long interval; other failures
     * back off with jitter, so replicas that lost the same server do not come back in
     * lockstep. */
    uint64_t delay = v->refused ? backoff_delay_ms(REFUSED_RETRY_MS, REFUSED_RETRY_MS, 0)
                                : backoff_delay_ms(BACKOFF_MIN_MS, BACKOFF_MAX_MS, v->attempts);
    if (v->attempts < 32) v->attempts++;
    uv_timer_start(&v->reconnect_timer, on_reconnect_timer, delay, 0);
}

/* Tears the connection down now, failing every pending command. hiredis' graceful
 * redisAsyncDisconnect waits for the pending replies, which a dead or frozen server never
 * sends; and the 0.14 libuv adapter drops socket errors (a reset from a killed server) without
 * telling hiredis, so a broken connection can look alive until this runs. */
static void drop_connection(valkey *v, const char *why)
{
    redisAsyncContext *ac = v->ac;
    if (!ac) return;
    log_warn("valkey", "%s at %s: reconnecting", why, v->where);
    set_state(v, VK_DOWN); /* commands issued from the failing callbacks are refused */
    redisAsyncFree(ac);    /* runs on_disconnect when it was connected */
    if (v->ac == ac) {     /* it was not: no disconnect callback came */
        v->ac = NULL;
        schedule_reconnect(v);
    }
}

static void on_ping(redisReply *reply, void *ud)
{
    (void)reply;
    (void)ud;
}

/* A stalled server (frozen, network black hole) answers nothing and closes nothing: drop the
 * connection when the oldest command or the connect attempt is older than the timeout. */
static void on_watchdog(uv_timer_t *t)
{
    valkey *v = t->data;
    uint64_t now = uv_hrtime();
    if (v->state == VK_CONNECTING &&
        now - v->connect_started_ns > CONNECT_TIMEOUT_MS * 1000000ull) {
        drop_connection(v, "connect timed out");
        return;
    }
    pending *oldest = v->head.next;
    if (v->ac && oldest != &v->head && now - oldest->sent_ns > v->timeout_ns) {
        char why[96];
        snprintf(why, sizeof why, "no reply for %.1f s with %zu commands in flight",
                 (double)(now - oldest->sent_ns) / 1e9, v->npending);
        drop_connection(v, why);
        return;
    }
    if (v->state == VK_READY && v->npending == 0 &&
        now - v->last_sent_ns > IDLE_PING_MS * 1000000ull) {
        const char *argv[1] = {"PING"};
        send_argv(v, on_ping, NULL, 1, argv, NULL);
    }
}

/* ---- public ---- */

valkey *valkey_new(uv_loop_t *loop, const valkey_options *opt)
{
    valkey *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->loop = loop;
    v->head.next = v->head.prev = &v->head;
    v->spare_pending = (freelist)FREELIST_INIT(sizeof(pending), SPARE_PENDING);
    v->timeout_ns = (uint64_t)((opt->command_timeout > 0 ? opt->command_timeout : 5) * 1e9);
    v->on_state = opt->on_state;
    v->state_ud = opt->state_ud;
    v->setting = opt->setting ? opt->setting : "the Valkey URL";
    char shown[512];
    redact_url(opt->url, shown, sizeof shown);
    const char *why = parse_url(v, opt->url);
    if (!why && !(v->where = strdup(shown))) why = "out of memory";
    if (why) {
        log_error("valkey", "bad URL '%s': %s", shown, why);
        valkey_free(v);
        return NULL;
    }
    v->commands_total = metrics_counter("valkey_commands_total", "Commands sent to Valkey");
    v->failures_total =
        metrics_counter("valkey_command_failures_total", "Commands lost to a failed connection");
    v->reconnects_total = metrics_counter("valkey_reconnects_total", "Reconnection attempts");
    v->latency = metrics_histogram_get("valkey_command_seconds", "Valkey round-trip time");
    uv_timer_init(loop, &v->reconnect_timer);
    uv_timer_init(loop, &v->watchdog);
    uv_prepare_init(loop, &v->flush);
    v->reconnect_timer.data = v->watchdog.data = v->flush.data = v;
    v->open_handles = 3;
    return v;
}

int valkey_register_script(valkey *v, const char *name, const char *source)
{
    if (v->nscripts == MAX_SCRIPTS) return -1;
    script *s = &v->scripts[v->nscripts];
    s->name = strdup(name);
    s->source = strdup(source);
    if (!s->name || !s->source) {
        free(s->name);
        free(s->source);
        return -1;
    }
    /* The server names a script by the SHA-1 of its text. */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(source, strlen(source), md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) {
        free(s->name);
        free(s->source);
        return -1;
    }
    for (int i = 0; i < 20; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
    return v->nscripts++;
}

void valkey_start(valkey *v)
{
    uv_timer_start(&v->watchdog, on_watchdog, WATCHDOG_MS, WATCHDOG_MS);
    connect_now(v);
}

const char *valkey_problem(const valkey *v)
{
    return v->problem;
}

int valkey_setup_refused(const valkey *v)
{
    return v->refused;
}

int valkey_command(valkey *v, valkey_reply_cb cb, void *ud, int argc, const char **argv,
                   const size_t *argvlen)
{
    if (v->state != VK_READY || !v->ac) return -1;
    return send_argv(v, cb, ud, argc, argv, argvlen);
}

int valkey_eval(valkey *v, int id, valkey_reply_cb cb, void *ud, int nkeys, int argc,
                const char **argv, const size_t *argvlen)
{
    if (id < 0 || id >= v->nscripts || argc < 0) return -1;
    /* Callers' argument counts grow with their data (a getStats save has 8 + 3 per hold). */
    size_t n = (size_t)argc + 3;
    const char **full = malloc(n * sizeof *full);
    size_t *lens = malloc(n * sizeof *lens);
    int rc = -1;
    if (full && lens) {
        char nk[12];
        snprintf(nk, sizeof nk, "%d", nkeys);
        full[0] = "EVALSHA";
        lens[0] = 7;
        full[1] = v->scripts[id].sha;
        lens[1] = 40;
        full[2] = nk;
        lens[2] = strlen(nk);
        for (int i = 0; i < argc; i++) {
            full[3 + i] = argv[i];
            lens[3 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
        }
        rc = valkey_command(v, cb, ud, argc + 3, full, lens);
    }
    free(full);
    free(lens);
    return rc;
}

int valkey_error_transient(const char *error)
{
    static const char *const transient[] = {"OOM ",        "READONLY ", "MISCONF ",
                                            "LOADING ",    "BUSY ",     "MASTERDOWN ",
                                            "NOREPLICAS ", "TRYAGAIN ", "CLUSTERDOWN "};
    for (size_t i = 0; i < sizeof transient / sizeof *transient; i++)
        if (!strncmp(error, transient[i], strlen(transient[i]))) return 1;
    return 0;
}

static void release(valkey *v)
{
    for (int i = 0; i < v->nscripts; i++) {
        free(v->scripts[i].name);
        free(v->scripts[i].source);
    }
    url_fields_free(v);
    free(v->where);
    buf_free(&v->command);
    freelist_clear(&v->spare_pending);
    free(v);
}

static void on_handle_closed(uv_handle_t *h)
{
    valkey *v = h->data;
    if (--v->open_handles == 0) release(v);
}

void valkey_free(valkey *v)
{
    if (!v) return;
    v->freeing = 1;
    /* Runs every pending callback with NULL; no disconnect callback state change follows. */
    if (v->ac) redisAsyncFree(v->ac);
    v->ac = NULL;
    if (!v->open_handles) {
        release(v);
        return;
    }
    uv_close((uv_handle_t *)&v->reconnect_timer, on_handle_closed);
    uv_close((uv_handle_t *)&v->watchdog, on_handle_closed);
    uv_close((uv_handle_t *)&v->flush, on_handle_closed);
}
