#include "appview/history.h"

#include <errno.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "atproto/log.h"

#define DAY_MS 86400000LL
#define PAGE 20
#define CHECK_EVERY_MS 60000

struct history {
    sqlite3 *db;
    /* the refresh loop */
    uv_timer_t *timer;
    unsigned period_hours;
    history_fetch_fn fetch;
    void *fetch_ud;
    char **page;
    int npage, next, page_ok, busy;
};

static const char SCHEMA[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS images(image TEXT PRIMARY KEY, synced_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS snapshots(image TEXT NOT NULL, day INTEGER NOT NULL,"
    " pull_count INTEGER NOT NULL, PRIMARY KEY(image, day));";

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long history_day_of(long long unix_ms)
{
    long long d = unix_ms / DAY_MS;
    if (unix_ms < 0 && unix_ms % DAY_MS) d--;
    return (long)d;
}

void history_day_string(long day, char out[11])
{
    time_t t = (time_t)day * 86400;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
        memcpy(out, "1970-01-01", 11);
        return;
    }
    snprintf(out, 11, "%04u-%02u-%02u", (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u);
}

history *history_open(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
        return NULL;
    }
    history *h = calloc(1, sizeof *h);
    char path[4096];
    if (!h || snprintf(path, sizeof path, "%s/stats-history.db", dir) >= (int)sizeof path) {
        snprintf(err, errlen, "out of memory or path too long");
        free(h);
        return NULL;
    }
    char *msg = NULL;
    if (sqlite3_open(path, &h->db) != SQLITE_OK || sqlite3_busy_timeout(h->db, 1000) != SQLITE_OK ||
        sqlite3_exec(h->db, SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(h->db));
        sqlite3_free(msg);
        sqlite3_close(h->db);
        free(h);
        return NULL;
    }
    return h;
}

static void free_page(history *h)
{
    for (int i = 0; i < h->npage; i++)
        free(h->page[i]);
    free(h->page);
    h->page = NULL;
    h->npage = h->next = 0;
}

static void on_timer_closed(uv_handle_t *t)
{
    free(t);
}

void history_close(history *h)
{
    if (!h) return;
    if (h->timer) uv_close((uv_handle_t *)h->timer, on_timer_closed);
    free_page(h);
    sqlite3_close(h->db);
    free(h);
}

/* Runs one statement with text/int64 arguments described by types ('t' or 'i'). */
static int exec(history *h, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(h->db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("history", "prepare: %s", sqlite3_errmsg(h->db));
        return -1;
    }
    va_list ap;
    va_start(ap, types);
    int rc = SQLITE_OK;
    for (int i = 0; types[i] && rc == SQLITE_OK; i++) {
        if (types[i] == 't')
            rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
        else
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, long long));
    }
    va_end(ap);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        log_error("history", "write: %s", sqlite3_errmsg(h->db));
        return -1;
    }
    return 0;
}

int history_add_image(history *h, const char *image)
{
    return exec(h, "INSERT OR IGNORE INTO images(image, synced_ms) VALUES(?, 0)", "t", image);
}

int history_touch(history *h, const char *image, long long now_ms)
{
    return exec(h,
                "INSERT INTO images(image, synced_ms) VALUES(?, ?) ON CONFLICT(image) DO UPDATE "
                "SET synced_ms = excluded.synced_ms",
                "ti", image, now_ms);
}

int history_record(history *h, const char *image, long day, long long pull_count, long long now_ms)
{
    if (exec(h, "BEGIN", "") < 0) return -1;
    int rc = exec(h, "INSERT OR REPLACE INTO snapshots(image, day, pull_count) VALUES(?, ?, ?)",
                  "tii", image, (long long)day, pull_count);
    if (rc == 0) rc = history_touch(h, image, now_ms);
    if (rc == 0) return exec(h, "COMMIT", "");
    exec(h, "ROLLBACK", "");
    return -1;
}

int history_latest(history *h, const char *image, long long *pull_count, long *day)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(h->db,
                           "SELECT day, pull_count FROM snapshots WHERE image = ? "
                           "ORDER BY day DESC LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_bind_text(st, 1, image, -1, SQLITE_TRANSIENT) == SQLITE_OK ? sqlite3_step(st)
                                                                                : SQLITE_ERROR;
    int found = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
    if (found == 1) {
        *day = (long)sqlite3_column_int64(st, 0);
        *pull_count = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return found;
}

int history_daily(history *h, const char *image, long end_day, int n, long long *out)
{
    long start = end_day - n + 1;
    for (int i = 0; i < n; i++)
        out[i] = -1;
    /* Every snapshot in the window and the nearest one on each side: a gap that straddles
     * an edge still spreads into the window. */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(h->db,
                           "SELECT day, pull_count FROM ("
                           "SELECT * FROM (SELECT day, pull_count FROM snapshots WHERE image = ?1 "
                           "AND day < ?2 ORDER BY day DESC LIMIT 1) UNION ALL "
                           "SELECT day, pull_count FROM snapshots WHERE image = ?1 AND day >= ?2 "
                           "AND day <= ?3 UNION ALL "
                           "SELECT * FROM (SELECT day, pull_count FROM snapshots WHERE image = ?1 "
                           "AND day > ?3 ORDER BY day LIMIT 1)) ORDER BY day",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_bind_text(st, 1, image, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, start) != SQLITE_OK ||
        sqlite3_bind_int64(st, 3, end_day) != SQLITE_OK) {
        sqlite3_finalize(st);
        return -1;
    }
    int have_prev = 0, rc;
    long prev_day = 0;
    long long prev_count = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        long day = (long)sqlite3_column_int64(st, 0);
        long long count = sqlite3_column_int64(st, 1);
        if (have_prev && day > prev_day) {
            long gap = day - prev_day;
            /* Hub counts only grow; a smaller number is a Hub correction, not negative pulls. */
            long long delta = count > prev_count ? count - prev_count : 0;
            for (long k = 1; k <= gap; k++) {
                long d = prev_day + k;
                long long share = delta / gap + (k <= delta % gap ? 1 : 0);
                if (d >= start && d <= end_day) out[d - start] = share;
            }
        }
        have_prev = 1;
        prev_day = day;
        prev_count = count;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int history_stalest(history *h, long long cutoff_ms, int max, char ***out)
{
    *out = NULL;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(h->db,
                           "SELECT image FROM images WHERE synced_ms < ? ORDER BY synced_ms, "
                           "image LIMIT ?",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    char **list = calloc((size_t)max, sizeof *list);
    int n = 0, rc = SQLITE_ERROR;
    if (list && sqlite3_bind_int64(st, 1, cutoff_ms) == SQLITE_OK &&
        sqlite3_bind_int(st, 2, max) == SQLITE_OK) {
        while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            list[n] = strdup((const char *)sqlite3_column_text(st, 0));
            if (!list[n]) break;
            n++;
        }
    }
    sqlite3_finalize(st);
    if (!list || (rc != SQLITE_DONE && rc != SQLITE_ROW) || (n < max && rc == SQLITE_ROW)) {
        for (int i = 0; i < n; i++)
            free(list[i]);
        free(list);
        return -1;
    }
    *out = list;
    return n;
}

/* ---- the refresh loop ---- */

static void fetch_next(history *h);

static void on_fetched(history *h, int outcome)
{
    if (outcome >= 0) h->page_ok = 1;
    h->next++;
    fetch_next(h);
}

static int load_page(history *h)
{
    free_page(h);
    long long cutoff = wall_ms() - (long long)h->period_hours * 3600 * 1000;
    int n = history_stalest(h, cutoff, PAGE, &h->page);
    if (n < 0) {
        log_error("history", "could not list images to refresh");
        return -1;
    }
    h->npage = n;
    h->page_ok = 0;
    return n;
}

static void fetch_next(history *h)
{
    for (;;) {
        if (h->next >= h->npage) {
            /* A full page where something succeeded may have more behind it; a page where
             * everything failed waits for the next check rather than spinning. */
            if (h->npage < PAGE || !h->page_ok || load_page(h) <= 0) {
                free_page(h);
                h->busy = 0;
                return;
            }
        }
        if (h->fetch(h, h->page[h->next], on_fetched, h->fetch_ud) == 0) return;
        h->next++;
    }
}

static void on_tick(uv_timer_t *t)
{
    history *h = t->data;
    if (h->busy) return;
    if (load_page(h) <= 0) return;
    h->busy = 1;
    fetch_next(h);
}

int history_refresh_start(history *h, uv_loop_t *loop, unsigned period_hours, unsigned first_ms,
                          history_fetch_fn fetch, void *ud)
{
    h->timer = malloc(sizeof *h->timer);
    if (!h->timer) return -1;
    uv_timer_init(loop, h->timer);
    h->timer->data = h;
    h->period_hours = period_hours;
    h->fetch = fetch;
    h->fetch_ud = ud;
    uv_timer_start(h->timer, on_tick, first_ms, CHECK_EVERY_MS);
    uv_unref((uv_handle_t *)h->timer);
    return 0;
}
