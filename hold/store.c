#include "hold/store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atproto/log.h"
#include "atproto/path.h"
#include "hold/rkey.h"

typedef struct job {
    struct job *next;
    store_incr *incs;
    size_t n;
    store_done_fn done;
    void *ud;
    int ok;
} job;

typedef struct report {
    struct report *next;
    double seconds;
    size_t submissions, increments;
} report;

struct store {
    uv_loop_t *loop;
    uv_async_t async;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    /* Guarded by mu: */
    job *pending, **pending_tail;
    job *done, **done_tail;
    report *reports;
    int stopping;
    /* Loop thread only: */
    size_t outstanding;
    int closed;
    store_commit_fn on_commit;
    void *commit_ud;
    sqlite3 *rdb;
    sqlite3_stmt *get;
    /* Writer thread only (after open): */
    sqlite3 *wdb;
    sqlite3_stmt *up_total, *up_day;
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS stats("
    " did TEXT NOT NULL, repository TEXT NOT NULL, rkey TEXT NOT NULL UNIQUE,"
    " pull_count INTEGER NOT NULL DEFAULT 0, push_count INTEGER NOT NULL DEFAULT 0,"
    " last_pull INTEGER, last_push INTEGER,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " PRIMARY KEY(did, repository)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS stats_did_rkey ON stats(did, rkey);"
    "CREATE TABLE IF NOT EXISTS stats_daily("
    " did TEXT NOT NULL, repository TEXT NOT NULL, day TEXT NOT NULL,"
    " pull_count INTEGER NOT NULL DEFAULT 0, push_count INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(did, repository, day)) WITHOUT ROWID;";

static const char UP_TOTAL[] =
    "INSERT INTO stats(did, repository, rkey, pull_count, push_count, last_pull, last_push,"
    " created_at, updated_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)"
    " ON CONFLICT(did, repository) DO UPDATE SET"
    " pull_count = pull_count + excluded.pull_count,"
    " push_count = push_count + excluded.push_count,"
    " last_pull = coalesce(excluded.last_pull, last_pull),"
    " last_push = coalesce(excluded.last_push, last_push),"
    " updated_at = excluded.updated_at";

static const char UP_DAY[] =
    "INSERT INTO stats_daily(did, repository, day, pull_count, push_count)"
    " VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(did, repository, day) DO UPDATE SET"
    " pull_count = pull_count + excluded.pull_count,"
    " push_count = push_count + excluded.push_count";

static const char COLS[] = "SELECT did, repository, rkey, pull_count, push_count,"
                           " coalesce(last_pull, 0), coalesce(last_push, 0), created_at,"
                           " updated_at FROM stats";

static double mono_seconds(void)
{
    return (double)uv_hrtime() / 1e9;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        log_error("store", "%s: %s", sql, err ? err : sqlite3_errmsg(db));
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

/* Why path cannot be opened for reading and writing, as an errno; 0 when it can. SQLite's own
 * errno is that of its last attempt (a read-only open after the read-write one failed), which
 * names the wrong cause. */
static int open_errno(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return S_ISDIR(st.st_mode)                                      ? EISDIR
               : faccessat(AT_FDCWD, path, R_OK | W_OK, AT_EACCESS) < 0 ? errno
                                                                        : 0;
    if (errno != ENOENT) return errno;
    char dir[4096];
    if (path_dir(path, dir, sizeof dir) < 0) return ENAMETOOLONG;
    return faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) < 0 ? errno : 0;
}

/* Why SQLite could not open or set up the database at path, for an operator: its message, the
 * system error under it, and what to do. */
static void describe_failure(sqlite3 *db, const char *path, int rc, char *err, size_t n)
{
    if (!db) {
        snprintf(err, n, "out of memory");
        return;
    }
    int sys = (rc & 0xff) == SQLITE_CANTOPEN ? open_errno(path) : sqlite3_system_errno(db);
    const char *remedy = "";
    if ((rc & 0xff) == SQLITE_NOTADB)
        remedy = "; it is not an SQLite database: name the hold's database, or a new file";
    else if (sys == EACCES || sys == EPERM || sys == EROFS || (rc & 0xff) == SQLITE_READONLY)
        remedy = "; this user needs to read and write the file and its directory (SQLite "
                 "creates -wal and -shm files next to it)";
    else if (sys == ENOENT)
        remedy = "; create its directory";
    else if (sys == EISDIR)
        remedy = "; name a file, not a directory";
    snprintf(err, n, "%s%s%s%s%s", sqlite3_errmsg(db), sys ? " (" : "", sys ? strerror(sys) : "",
             sys ? ")" : "", remedy);
}

static sqlite3 *open_db(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    /* WAL + FULL: every COMMIT fsyncs the WAL, so an acknowledged increment survives kill -9
     * and power loss (NORMAL would only survive a process crash). Reading the journal mode is
     * also the first read of the file, where a file that is not a database shows. */
    if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(db, 5000);
    if (rc == SQLITE_OK)
        rc =
            sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        describe_failure(db, path, rc, err, errlen);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("store", "prepare: %s", sqlite3_errmsg(db));
        return NULL;
    }
    return st;
}

/* ---- writer thread ---- */

typedef struct {
    const store_incr *inc;
} incref;

static int cmp_incref(const void *a, const void *b)
{
    const store_incr *x = ((const incref *)a)->inc, *y = ((const incref *)b)->inc;
    int c = strcmp(x->did, y->did);
    return c ? c : strcmp(x->repository, y->repository);
}

static int step_done(sqlite3 *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_error("store", "write: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

static int apply_one(store *s, const store_incr *inc, int64_t pulls, int64_t pushes, int64_t now,
                     const char *day)
{
    char rkey[HOLD_RKEY_LEN + 1];
    hold_rkey(inc->did, inc->repository, rkey);
    sqlite3_stmt *t = s->up_total, *d = s->up_day;
    sqlite3_bind_text(t, 1, inc->did, -1, SQLITE_STATIC);
    sqlite3_bind_text(t, 2, inc->repository, -1, SQLITE_STATIC);
    sqlite3_bind_text(t, 3, rkey, -1, SQLITE_STATIC);
    sqlite3_bind_int64(t, 4, pulls);
    sqlite3_bind_int64(t, 5, pushes);
    if (pulls)
        sqlite3_bind_int64(t, 6, now);
    else
        sqlite3_bind_null(t, 6);
    if (pushes)
        sqlite3_bind_int64(t, 7, now);
    else
        sqlite3_bind_null(t, 7);
    sqlite3_bind_int64(t, 8, now);
    if (step_done(s->wdb, t) < 0) return -1;
    sqlite3_bind_text(d, 1, inc->did, -1, SQLITE_STATIC);
    sqlite3_bind_text(d, 2, inc->repository, -1, SQLITE_STATIC);
    sqlite3_bind_text(d, 3, day, -1, SQLITE_STATIC);
    sqlite3_bind_int64(d, 4, pulls);
    sqlite3_bind_int64(d, 5, pushes);
    return step_done(s->wdb, d);
}

/* One transaction for the whole group; increments for the same (did, repository) are summed
 * first so a hot repository costs one row update per commit, not one per request. */
static int apply_group(store *s, job *group, size_t total)
{
    incref *refs = malloc((total ? total : 1) * sizeof *refs);
    if (!refs) {
        log_error("store", "out of memory for a group of %zu increments", total);
        return -1;
    }
    size_t k = 0;
    for (job *j = group; j; j = j->next)
        for (size_t i = 0; i < j->n; i++)
            refs[k++].inc = &j->incs[i];
    qsort(refs, total, sizeof *refs, cmp_incref);

    int64_t now = wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    char day[11];
    gmtime_r(&secs, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);

    int rc = exec(s->wdb, "BEGIN IMMEDIATE");
    for (size_t i = 0; rc == 0 && i < total;) {
        int64_t pulls = 0, pushes = 0;
        size_t j = i;
        for (; j < total && cmp_incref(&refs[i], &refs[j]) == 0; j++) {
            if (refs[j].inc->event == STORE_PULL)
                pulls += refs[j].inc->count;
            else
                pushes += refs[j].inc->count;
        }
        rc = apply_one(s, refs[i].inc, pulls, pushes, now, day);
        i = j;
    }
    free(refs);
    if (rc == 0 && exec(s->wdb, "COMMIT") == 0) return 0;
    if (!sqlite3_get_autocommit(s->wdb)) exec(s->wdb, "ROLLBACK");
    return -1;
}

static void writer_main(void *arg)
{
    store *s = arg;
    uv_mutex_lock(&s->mu);
    for (;;) {
        while (!s->pending && !s->stopping)
            uv_cond_wait(&s->cv, &s->mu);
        if (!s->pending) break;
        job *group = s->pending;
        s->pending = NULL;
        s->pending_tail = &s->pending;
        uv_mutex_unlock(&s->mu);

        size_t subs = 0, total = 0;
        for (job *j = group; j; j = j->next) {
            subs++;
            total += j->n;
        }
        double t0 = mono_seconds();
        int ok = apply_group(s, group, total) == 0;
        report *r = calloc(1, sizeof *r);
        if (r) {
            r->seconds = mono_seconds() - t0;
            r->submissions = subs;
            r->increments = ok ? total : 0;
        }

        uv_mutex_lock(&s->mu);
        job *last = group;
        for (job *j = group; j; j = j->next) {
            j->ok = ok;
            last = j;
        }
        *s->done_tail = group;
        s->done_tail = &last->next;
        if (r) {
            r->next = s->reports;
            s->reports = r;
        }
        uv_async_send(&s->async);
    }
    uv_mutex_unlock(&s->mu);
}

/* ---- loop thread ---- */

static void deliver(store *s)
{
    uv_mutex_lock(&s->mu);
    job *done = s->done;
    report *reports = s->reports;
    s->done = NULL;
    s->done_tail = &s->done;
    s->reports = NULL;
    uv_mutex_unlock(&s->mu);
    while (reports) {
        report *next = reports->next;
        if (s->on_commit)
            s->on_commit(s->commit_ud, reports->seconds, reports->submissions, reports->increments);
        free(reports);
        reports = next;
    }
    while (done) {
        job *next = done->next;
        s->outstanding--;
        done->done(done->ud, done->ok);
        free(done);
        done = next;
    }
}

static void on_async(uv_async_t *a)
{
    deliver(a->data);
}

static void close_dbs(store *s)
{
    sqlite3_finalize(s->up_total);
    sqlite3_finalize(s->up_day);
    sqlite3_finalize(s->get);
    sqlite3_close(s->wdb);
    sqlite3_close(s->rdb);
}

static void free_after_close(uv_handle_t *h)
{
    free(h->data);
}

store *store_open(uv_loop_t *loop, const char *path, store_commit_fn on_commit, void *commit_ud,
                  char *err, size_t errlen)
{
    store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->loop = loop;
    s->on_commit = on_commit;
    s->commit_ud = commit_ud;
    s->pending_tail = &s->pending;
    s->done_tail = &s->done;
    s->wdb = open_db(path, err, errlen);
    if (!s->wdb) goto fail;
    int rc = sqlite3_exec(s->wdb, SCHEMA, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        describe_failure(s->wdb, path, rc, err, errlen);
        goto fail;
    }
    s->rdb = open_db(path, err, errlen);
    if (!s->rdb) goto fail;
    s->up_total = prepare(s->wdb, UP_TOTAL);
    s->up_day = prepare(s->wdb, UP_DAY);
    char sql[512];
    snprintf(sql, sizeof sql, "%s WHERE did = ?1 AND repository = ?2", COLS);
    s->get = prepare(s->rdb, sql);
    if (!s->up_total || !s->up_day || !s->get) {
        snprintf(err, errlen, "cannot prepare its statements (a database of another program?)");
        goto fail;
    }
    snprintf(err, errlen, "cannot start the writer thread");
    if (uv_mutex_init(&s->mu) != 0) goto fail;
    if (uv_cond_init(&s->cv) != 0) {
        uv_mutex_destroy(&s->mu);
        goto fail;
    }
    if (uv_async_init(loop, &s->async, on_async) != 0) goto fail_sync;
    s->async.data = s;
    if (uv_thread_create(&s->thread, writer_main, s) != 0) {
        close_dbs(s);
        uv_cond_destroy(&s->cv);
        uv_mutex_destroy(&s->mu);
        /* The handle is live now: the struct is freed by its close callback. */
        uv_close((uv_handle_t *)&s->async, free_after_close);
        return NULL;
    }
    log_info("store", "opened %s (WAL, synchronous=FULL)", path);
    return s;
fail_sync:
    uv_cond_destroy(&s->cv);
    uv_mutex_destroy(&s->mu);
fail:
    close_dbs(s);
    free(s);
    return NULL;
}

int store_submit(store *s, const store_incr *incs, size_t n, store_done_fn done, void *ud)
{
    if (s->closed) return -1;
    size_t strings = 0;
    for (size_t i = 0; i < n; i++)
        strings += strlen(incs[i].did) + strlen(incs[i].repository) + 2;
    job *j = malloc(sizeof *j + n * sizeof(store_incr) + strings);
    if (!j) return -1;
    j->next = NULL;
    j->incs = (store_incr *)(j + 1);
    j->n = n;
    j->done = done;
    j->ud = ud;
    j->ok = 0;
    char *p = (char *)(j->incs + n);
    for (size_t i = 0; i < n; i++) {
        size_t dl = strlen(incs[i].did) + 1, rl = strlen(incs[i].repository) + 1;
        j->incs[i] = incs[i];
        j->incs[i].did = memcpy(p, incs[i].did, dl);
        p += dl;
        j->incs[i].repository = memcpy(p, incs[i].repository, rl);
        p += rl;
    }
    uv_mutex_lock(&s->mu);
    *s->pending_tail = j;
    s->pending_tail = &j->next;
    uv_cond_signal(&s->cv);
    uv_mutex_unlock(&s->mu);
    s->outstanding++;
    return 0;
}

size_t store_pending(const store *s)
{
    return s->outstanding;
}

void store_close(store *s)
{
    if (!s || s->closed) return;
    s->closed = 1;
    uv_mutex_lock(&s->mu);
    s->stopping = 1;
    uv_cond_signal(&s->cv);
    uv_mutex_unlock(&s->mu);
    uv_thread_join(&s->thread);
    deliver(s);
    close_dbs(s);
    uv_cond_destroy(&s->cv);
    uv_mutex_destroy(&s->mu);
    log_info("store", "closed");
    uv_close((uv_handle_t *)&s->async, free_after_close);
}

/* ---- reads ---- */

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

static int read_row(sqlite3_stmt *st, store_row *r)
{
    memset(r, 0, sizeof *r);
    r->did = col_dup(st, 0);
    r->repository = col_dup(st, 1);
    r->rkey = col_dup(st, 2);
    r->pull_count = sqlite3_column_int64(st, 3);
    r->push_count = sqlite3_column_int64(st, 4);
    r->last_pull_ms = sqlite3_column_int64(st, 5);
    r->last_push_ms = sqlite3_column_int64(st, 6);
    r->created_ms = sqlite3_column_int64(st, 7);
    r->updated_ms = sqlite3_column_int64(st, 8);
    if (!r->did || !r->repository || !r->rkey) {
        store_row_clear(r);
        return -1;
    }
    return 0;
}

void store_row_clear(store_row *r)
{
    free(r->did);
    free(r->repository);
    free(r->rkey);
    memset(r, 0, sizeof *r);
}

void store_rows_free(store_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_row_clear(&rows[i]);
    free(rows);
}

static int get_one(store *s, sqlite3_stmt *st, store_row *out)
{
    int rc = sqlite3_step(st), ret;
    if (rc == SQLITE_ROW)
        ret = read_row(st, out) == 0 ? 1 : -1;
    else if (rc == SQLITE_DONE)
        ret = 0;
    else {
        log_error("store", "read: %s", sqlite3_errmsg(s->rdb));
        ret = -1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return ret;
}

int store_get(store *s, const char *did, const char *repository, store_row *out)
{
    sqlite3_bind_text(s->get, 1, did, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->get, 2, repository, -1, SQLITE_STATIC);
    return get_one(s, s->get, out);
}

int store_get_by_rkey(store *s, const char *rkey, store_row *out)
{
    char sql[512];
    snprintf(sql, sizeof sql, "%s WHERE rkey = ?1", COLS);
    sqlite3_stmt *st = prepare(s->rdb, sql);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, rkey, -1, SQLITE_STATIC);
    int ret = get_one(s, st, out);
    sqlite3_finalize(st);
    return ret;
}

int store_list(store *s, const char *did, const char *cursor, int reverse, size_t limit,
               store_row **rows, size_t *n)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "%s WHERE (?1 IS NULL OR did = ?1) AND (?2 IS NULL OR rkey %s ?2)"
             " ORDER BY rkey %s LIMIT ?3",
             COLS, reverse ? "<" : ">", reverse ? "DESC" : "ASC");
    sqlite3_stmt *st = prepare(s->rdb, sql);
    if (!st) return -1;
    if (did) sqlite3_bind_text(st, 1, did, -1, SQLITE_STATIC);
    if (cursor) sqlite3_bind_text(st, 2, cursor, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
    store_row *out = calloc(limit ? limit : 1, sizeof *out);
    size_t k = 0;
    int rc = SQLITE_ERROR;
    if (out) {
        while (k < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (read_row(st, &out[k]) < 0) break;
            k++;
        }
        if (k == limit) rc = SQLITE_DONE;
    }
    if (rc != SQLITE_DONE) {
        log_error("store", "list: %s", sqlite3_errmsg(s->rdb));
        store_rows_free(out, k);
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    *rows = out;
    *n = k;
    return 0;
}

int store_history(store *s, const char *did, const char *repository, const char *from_day,
                  store_day **days, size_t *n)
{
    sqlite3_stmt *st = prepare(s->rdb, "SELECT day, pull_count, push_count FROM stats_daily"
                                       " WHERE did = ?1 AND repository = ?2 AND day >= ?3"
                                       " ORDER BY day");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, did, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, repository, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, from_day, -1, SQLITE_STATIC);
    store_day *out = NULL;
    size_t k = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            store_day *p = realloc(out, ncap * sizeof *p);
            if (!p) {
                rc = SQLITE_NOMEM;
                break;
            }
            out = p;
            cap = ncap;
        }
        const unsigned char *d = sqlite3_column_text(st, 0);
        snprintf(out[k].day, sizeof out[k].day, "%s", d ? (const char *)d : "");
        out[k].pull_count = sqlite3_column_int64(st, 1);
        out[k].push_count = sqlite3_column_int64(st, 2);
        k++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        log_error("store", "history: %s", sqlite3_errmsg(s->rdb));
        free(out);
        return -1;
    }
    *days = out;
    *n = k;
    return 0;
}

int64_t store_count(store *s)
{
    sqlite3_stmt *st = prepare(s->rdb, "SELECT count(*) FROM stats");
    if (!st) return -1;
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return n;
}
