/* hold/store: group commit, exact totals, per-day rows, reopen, pagination, record keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "hold/rkey.h"
#include "hold/sha256.h"
#include "hold/store.h"
#include "tests/unit/check.h"

static char dbpath[256];

typedef struct {
    int answered, failed;
    size_t commits, committed_incs;
} tally;

static void on_done(void *ud, int ok)
{
    tally *t = ud;
    t->answered++;
    if (!ok) t->failed++;
}

static void on_commit(void *ud, double seconds, size_t subs, size_t incs)
{
    tally *t = ud;
    t->commits++;
    t->committed_incs += incs;
}

static void fresh_db(const char *name)
{
    snprintf(dbpath, sizeof dbpath, "/tmp/test_hold_store_%d_%s.db", (int)getpid(), name);
    char p[300];
    unlink(dbpath);
    snprintf(p, sizeof p, "%s-wal", dbpath);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", dbpath);
    unlink(p);
}

static void close_store(uv_loop_t *loop, store *s)
{
    store_close(s);
    uv_run(loop, UV_RUN_DEFAULT);
}

static void today(char out[11])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static void test_sha256_vector(void)
{
    uint8_t d[32];
    sha256("abc", 3, d);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    /* Crosses a block boundary through the incremental interface. */
    char big[200];
    memset(big, 'a', sizeof big);
    sha256_ctx c;
    sha256_init(&c);
    for (int i = 0; i < 200; i += 7)
        sha256_update(&c, big + i, i + 7 <= 200 ? 7 : 200 - i);
    uint8_t d2[32], d3[32];
    sha256_final(&c, d2);
    sha256(big, sizeof big, d3);
    CHECK(!memcmp(d2, d3, 32));
}

static void test_rkey_deterministic(void)
{
    char a[HOLD_RKEY_LEN + 1], b[HOLD_RKEY_LEN + 1];
    hold_rkey("did:plc:abc", "alice/app", a);
    hold_rkey("did:plc:abc", "alice/app", b);
    CHECK(!strcmp(a, b));
    /* Computed independently with Python's hashlib. */
    CHECK(!strcmp(a, "7cqek3i736txxusryjf3mlowy6"));
    hold_rkey("did:plc:abc", "alice/ap", b);
    CHECK(strcmp(a, b) != 0);
    /* The separator keeps ("ab", "c") and ("a", "bc") apart. */
    hold_rkey("did:plc:ab", "c", a);
    hold_rkey("did:plc:a", "bc", b);
    CHECK(strcmp(a, b) != 0);
}

static void test_group_commit_exact(void)
{
    char err[512];
    fresh_db("group");
    uv_loop_t loop;
    uv_loop_init(&loop);
    tally t = {0};
    store *s = store_open(&loop, dbpath, on_commit, &t, err, sizeof err);
    CHECK(s != NULL);
    if (!s) return;
    /* 2000 submissions queued before the loop runs: the writer must fold them into far fewer
     * transactions than submissions, and every count must land exactly once. */
    const char *repos[] = {"alice/app", "alice/db", "bob/web"};
    int64_t want[3][2] = {{0}};
    int n = 2000;
    for (int i = 0; i < n; i++) {
        store_incr inc[2] = {{"did:plc:alice", repos[i % 3], STORE_PULL, 1 + i % 5},
                             {"did:plc:alice", repos[(i + 1) % 3], STORE_PUSH, 2}};
        size_t k = i % 4 == 0 ? 2 : 1;
        CHECK(store_submit(s, inc, k, on_done, &t) == 0);
        want[i % 3][0] += 1 + i % 5;
        if (k == 2) want[(i + 1) % 3][1] += 2;
    }
    CHECK(store_pending(s) == (size_t)n);
    while (t.answered < n)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(t.failed == 0);
    CHECK(store_pending(s) == 0);
    CHECK(t.commits >= 1 && t.commits < (size_t)n / 4);
    char day[11];
    today(day);
    for (int r = 0; r < 3; r++) {
        store_row row;
        CHECK(store_get(s, "did:plc:alice", repos[r], &row) == 1);
        CHECK(row.pull_count == want[r][0]);
        CHECK(row.push_count == want[r][1]);
        CHECK(row.last_pull_ms > 0 && row.created_ms > 0 && row.updated_ms >= row.created_ms);
        char rk[HOLD_RKEY_LEN + 1];
        hold_rkey("did:plc:alice", repos[r], rk);
        CHECK(!strcmp(row.rkey, rk));
        store_row_clear(&row);
        store_day *days = NULL;
        size_t nd = 0;
        CHECK(store_history(s, "did:plc:alice", repos[r], "2000-01-01", &days, &nd) == 0);
        /* A commit could straddle UTC midnight: the per-day rows must still add up. */
        int64_t pulls = 0, pushes = 0;
        for (size_t i = 0; i < nd; i++) {
            pulls += days[i].pull_count;
            pushes += days[i].push_count;
        }
        CHECK(nd >= 1 && pulls == want[r][0] && pushes == want[r][1]);
        CHECK(nd >= 1 && !strcmp(days[nd - 1].day, day));
        free(days);
    }
    store_row none;
    CHECK(store_get(s, "did:plc:alice", "never/seen", &none) == 0);
    close_store(&loop, s);
    CHECK(uv_loop_close(&loop) == 0);
}

static void test_reopen_keeps_counts(void)
{
    char err[512];
    fresh_db("reopen");
    uv_loop_t loop;
    uv_loop_init(&loop);
    tally t = {0};
    store *s = store_open(&loop, dbpath, NULL, NULL, err, sizeof err);
    CHECK(s != NULL);
    if (!s) return;
    store_incr inc = {"did:web:example.com", "x/y", STORE_PUSH, 7};
    CHECK(store_submit(s, &inc, 1, on_done, &t) == 0);
    /* store_close commits and answers what is still pending. */
    close_store(&loop, s);
    CHECK(t.answered == 1 && t.failed == 0);
    s = store_open(&loop, dbpath, NULL, NULL, err, sizeof err);
    CHECK(s != NULL);
    if (!s) return;
    store_row row;
    CHECK(store_get(s, "did:web:example.com", "x/y", &row) == 1);
    CHECK(row.push_count == 7 && row.pull_count == 0 && row.last_pull_ms == 0);
    store_row_clear(&row);
    CHECK(store_submit(s, &inc, 1, on_done, &t) == 0);
    while (t.answered < 2)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(store_get(s, "did:web:example.com", "x/y", &row) == 1);
    CHECK(row.push_count == 14);
    char rk[HOLD_RKEY_LEN + 1];
    hold_rkey("did:web:example.com", "x/y", rk);
    store_row by;
    CHECK(store_get_by_rkey(s, rk, &by) == 1);
    CHECK(by.push_count == 14 && !strcmp(by.repository, "x/y"));
    store_row_clear(&by);
    store_row_clear(&row);
    CHECK(store_count(s) == 1);
    close_store(&loop, s);
    CHECK(uv_loop_close(&loop) == 0);
}

static void test_list_pagination(void)
{
    char err[512];
    fresh_db("list");
    uv_loop_t loop;
    uv_loop_init(&loop);
    tally t = {0};
    store *s = store_open(&loop, dbpath, NULL, NULL, err, sizeof err);
    CHECK(s != NULL);
    if (!s) return;
    enum { N = 250 };
    for (int i = 0; i < N; i++) {
        char repo[32];
        snprintf(repo, sizeof repo, "r/n%d", i);
        store_incr inc = {i % 2 ? "did:plc:odd" : "did:plc:even", repo, STORE_PULL, 1};
        CHECK(store_submit(s, &inc, 1, on_done, &t) == 0);
    }
    while (t.answered < N)
        uv_run(&loop, UV_RUN_ONCE);
    for (int reverse = 0; reverse < 2; reverse++) {
        char cursor[HOLD_RKEY_LEN + 1] = "";
        char prev[HOLD_RKEY_LEN + 1] = "";
        int seen = 0, pages = 0;
        for (;;) {
            store_row *rows = NULL;
            size_t n = 0;
            CHECK(store_list(s, NULL, cursor[0] ? cursor : NULL, reverse, 100, &rows, &n) == 0);
            for (size_t i = 0; i < n; i++) {
                int order = strcmp(prev, rows[i].rkey);
                CHECK(!prev[0] || (reverse ? order > 0 : order < 0));
                snprintf(prev, sizeof prev, "%s", rows[i].rkey);
            }
            seen += (int)n;
            pages++;
            if (n) snprintf(cursor, sizeof cursor, "%s", rows[n - 1].rkey);
            store_rows_free(rows, n);
            if (n < 100) break;
        }
        CHECK(seen == N);
        CHECK(pages == 3);
    }
    store_row *rows = NULL;
    size_t n = 0;
    CHECK(store_list(s, "did:plc:odd", NULL, 0, 1000, &rows, &n) == 0);
    CHECK(n == N / 2);
    for (size_t i = 0; i < n; i++)
        CHECK(!strcmp(rows[i].did, "did:plc:odd"));
    store_rows_free(rows, n);
    close_store(&loop, s);
    CHECK(uv_loop_close(&loop) == 0);
}

static void test_open_failure(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    CHECK(store_open(&loop, "/nonexistent-dir/x/hold.db", NULL, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "unable to open database file (No such file or directory)") &&
          strstr(err, "create its directory"));
    CHECK(uv_loop_close(&loop) == 0);
}

int main(void)
{
    RUN(test_sha256_vector);
    RUN(test_rkey_deterministic);
    RUN(test_group_commit_exact);
    RUN(test_reopen_keeps_counts);
    RUN(test_list_pagination);
    RUN(test_open_failure);
    fresh_db("group");
    fresh_db("reopen");
    fresh_db("list");
    CHECK_EXIT();
}
