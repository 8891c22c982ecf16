/* appview/history.c on a real SQLite file: daily deltas across simulated days (a missing day
 * spreads its delta), snapshots survive a reopen, and the stalest-first order of the refresh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "appview/history.h"
#include "check.h"

static char dir[64];

static history *open_db(void)
{
    char err[256];
    history *h = history_open(dir, err, sizeof err);
    if (!h) fprintf(stderr, "    open: %s\n", err);
    return h;
}

static void test_day_numbers(void)
{
    char s[11];
    long d = history_day_of(1763812200000LL); /* 2025-11-22T11:50Z */
    history_day_string(d, s);
    CHECK(strcmp(s, "2025-11-22") == 0);
    CHECK(history_day_of(0) == 0 && history_day_of(-1) == -1);
    history_day_string(d + 9, s);
    CHECK(strcmp(s, "2025-12-01") == 0);
}

static void test_deltas_with_missing_day(void)
{
    history *h = open_db();
    CHECK(h != NULL);
    if (!h) return;
    long d0 = 20000;
    /* Days d0..d0+6: d0+3 and d0+4 missing (the refresh did not run), d0+6 smaller (a Hub
     * correction: not negative pulls). */
    CHECK(history_record(h, "lib/redis", d0, 1000, 1) == 0);
    CHECK(history_record(h, "lib/redis", d0 + 1, 1010, 2) == 0);
    CHECK(history_record(h, "lib/redis", d0 + 2, 1030, 3) == 0);
    CHECK(history_record(h, "lib/redis", d0 + 5, 1060, 4) == 0);
    CHECK(history_record(h, "lib/redis", d0 + 6, 1050, 5) == 0);
    /* The same day again replaces that day's snapshot. */
    CHECK(history_record(h, "lib/redis", d0 + 2, 1031, 6) == 0);
    long long out[8];
    CHECK(history_daily(h, "lib/redis", d0 + 7, 8, out) == 0);
    long long want[8] = {-1, 10, 21, 10, 10, 9, 0, -1};
    for (int i = 0; i < 8; i++) {
        if (out[i] != want[i]) fprintf(stderr, "    day %d: %lld want %lld\n", i, out[i], want[i]);
        CHECK(out[i] == want[i]);
    }
    /* A window starting after the first snapshot still uses the one before it. */
    CHECK(history_daily(h, "lib/redis", d0 + 4, 2, out) == 0);
    CHECK(out[0] == 10 && out[1] == 10);
    long long pulls;
    long day;
    CHECK(history_latest(h, "lib/redis", &pulls, &day) == 1 && pulls == 1050 && day == d0 + 6);
    CHECK(history_latest(h, "nobody/none", &pulls, &day) == 0);
    CHECK(history_daily(h, "nobody/none", d0, 3, out) == 0 && out[0] == -1 && out[2] == -1);
    history_close(h);
}

static void test_stalest_first_and_durable(void)
{
    history *h = open_db();
    CHECK(h != NULL);
    if (!h) return;
    CHECK(history_add_image(h, "a/new") == 0);
    CHECK(history_touch(h, "b/old", 100) == 0);
    CHECK(history_touch(h, "c/fresh", 5000) == 0);
    CHECK(history_add_image(h, "b/old") == 0); /* known already: keeps its sync time */
    char **list;
    int n = history_stalest(h, 1000, 10, &list);
    CHECK(n == 3); /* lib/redis (synced at 6) too */
    if (n == 3) {
        CHECK(strcmp(list[0], "a/new") == 0);
        CHECK(strcmp(list[1], "lib/redis") == 0);
        CHECK(strcmp(list[2], "b/old") == 0);
    }
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
    /* A record commits at once: another connection sees it, and it survives a reopen. */
    CHECK(history_record(h, "a/new", 7, 42, 2000) == 0);
    history_close(h);
    h = open_db();
    CHECK(h != NULL);
    if (!h) return;
    n = history_stalest(h, 1000, 10, &list);
    CHECK(n == 2);
    for (int i = 0; i < n; i++) {
        CHECK(strcmp(list[i], "a/new") != 0);
        free(list[i]);
    }
    free(list);
    long long pulls;
    long day;
    CHECK(history_latest(h, "a/new", &pulls, &day) == 1 && pulls == 42 && day == 7);
    history_close(h);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/test_history.%d", (int)getpid());
    RUN(test_day_numbers);
    RUN(test_deltas_with_missing_day);
    RUN(test_stalest_first_and_durable);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    CHECK_EXIT();
}
