/* The backfill's decisions (appview/backfill_sched.c) without a socket: when a pass runs, and
 * which DID the worker starts next under its caps, retries, backoff and 429 parking. */
#include "appview/backfill_sched.h"
#include "tests/unit/check.h"

#include <stdio.h>
#include <string.h>

#define A "https://a.example.com"
#define B "https://b.example.com"

static bf_view view(bf_schema schema, int has_pass, int finished, uint64_t failed)
{
    return (bf_view){.schema = schema,
                     .has_pass = has_pass,
                     .finished = finished,
                     .same_source = 1,
                     .failed = failed,
                     .retry_at_ms = 5000,
                     .now_ms = 1000};
}

static void test_decide_table(void)
{
    static const struct {
        bf_mode mode;
        bf_schema schema;
        int has_pass, finished, same_source, requested;
        uint64_t failed, now;
        bf_action want;
    } rows[] = {
        /* The layout decides first, whatever the mode. */
        {BF_AUTO, BF_SCHEMA_OTHER, 0, 0, 1, 0, 0, 1000, BF_REFUSE},
        {BF_COMMAND, BF_SCHEMA_OTHER, 1, 0, 1, 0, 0, 1000, BF_REFUSE},
        {BF_AUTO, BF_SCHEMA_OLD, 0, 0, 1, 1, 0, 1000, BF_WAIT},
        {BF_OFF, BF_SCHEMA_CURRENT, 0, 0, 1, 1, 0, 1000, BF_IDLE},
        /* A fresh (or flushed) index gets a pass, in every mode but off. */
        {BF_ONCE, BF_SCHEMA_NONE, 0, 0, 1, 0, 0, 1000, BF_NEW},
        {BF_AUTO, BF_SCHEMA_CURRENT, 0, 0, 1, 0, 0, 1000, BF_NEW},
        {BF_COMMAND, BF_SCHEMA_NONE, 0, 0, 1, 0, 0, 1000, BF_NEW},
        /* A pass in progress goes on after a restart. */
        {BF_ONCE, BF_SCHEMA_CURRENT, 1, 0, 1, 0, 0, 1000, BF_RESUME},
        {BF_AUTO, BF_SCHEMA_CURRENT, 1, 0, 1, 0, 3, 1000, BF_RESUME},
        {BF_COMMAND, BF_SCHEMA_CURRENT, 1, 0, 1, 0, 0, 1000, BF_RESUME},
        /* A request (schema change, CursorTooOld) starts over, except in once mode. */
        {BF_AUTO, BF_SCHEMA_CURRENT, 1, 0, 1, 1, 0, 1000, BF_NEW},
        {BF_AUTO, BF_SCHEMA_CURRENT, 1, 1, 1, 1, 0, 1000, BF_NEW},
        {BF_COMMAND, BF_SCHEMA_CURRENT, 1, 0, 1, 1, 0, 1000, BF_NEW},
        {BF_ONCE, BF_SCHEMA_CURRENT, 1, 1, 1, 1, 0, 1000, BF_IDLE},
        /* A finished pass: its failures come back when due; the command retries them now. */
        {BF_ONCE, BF_SCHEMA_CURRENT, 1, 1, 1, 0, 0, 1000, BF_IDLE},
        {BF_AUTO, BF_SCHEMA_CURRENT, 1, 1, 1, 0, 2, 1000, BF_IDLE},
        {BF_AUTO, BF_SCHEMA_CURRENT, 1, 1, 1, 0, 2, 5000, BF_RETRY},
        {BF_ONCE, BF_SCHEMA_CURRENT, 1, 1, 1, 0, 2, 6000, BF_RETRY},
        {BF_COMMAND, BF_SCHEMA_CURRENT, 1, 1, 1, 0, 2, 1000, BF_RETRY},
        {BF_COMMAND, BF_SCHEMA_CURRENT, 1, 1, 1, 0, 0, 1000, BF_NEW},
        /* Another relay or DIDs file: the command and an unfinished pass start over. */
        {BF_COMMAND, BF_SCHEMA_CURRENT, 1, 0, 0, 0, 0, 1000, BF_NEW},
        {BF_COMMAND, BF_SCHEMA_CURRENT, 1, 1, 0, 0, 2, 1000, BF_NEW},
        {BF_AUTO, BF_SCHEMA_CURRENT, 1, 0, 0, 0, 0, 1000, BF_NEW},
        {BF_AUTO, BF_SCHEMA_CURRENT, 1, 1, 0, 0, 0, 1000, BF_IDLE},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        bf_view v = view(rows[i].schema, rows[i].has_pass, rows[i].finished, rows[i].failed);
        v.same_source = rows[i].same_source;
        v.requested = rows[i].requested;
        v.now_ms = rows[i].now;
        bf_action got = bf_decide(rows[i].mode, &v);
        if (got != rows[i].want)
            fprintf(stderr, "    row %zu: got %s, want %s\n", i, bf_action_name(got),
                    bf_action_name(rows[i].want));
        CHECK(got == rows[i].want);
    }
}

/* Adds d0..d(n-1) and resolves the first ones to the hosts given, in order. */
static void fill(bf_sched *s, int n)
{
    char did[40];
    for (int i = 0; i < n; i++) {
        snprintf(did, sizeof did, "did:plc:d%d", i);
        CHECK(bf_sched_add(s, did, 0) == 0);
    }
}

/* Starts n resolutions (the next steps must be those) and resolves them to hosts[i]. */
static void resolve_n(bf_sched *s, int n, const char *const *hosts, bf_item **out, uint64_t now)
{
    for (int i = 0; i < n; i++) {
        bf_step st = bf_sched_next(s, now);
        CHECK(st.kind == BF_STEP_RESOLVE);
        out[i] = st.item;
    }
    for (int i = 0; i < n; i++)
        if (out[i]) CHECK(bf_sched_resolved(s, out[i], hosts[i]) == 0);
}

static void test_window_add_find_remove(void)
{
    bf_sched *s = bf_sched_new(2, 1);
    CHECK(bf_sched_add(s, "did:plc:x", 0) == 0);
    CHECK(bf_sched_add(s, "did:plc:x", 0) == 1);
    CHECK(bf_sched_size(s) == 1);
    bf_item *it = bf_sched_find(s, "did:plc:x");
    CHECK(it && !strcmp(it->did, "did:plc:x") && it->state == BF_ITEM_NEW);
    CHECK(!bf_sched_find(s, "did:plc:y"));
    bf_sched_remove(s, it);
    CHECK(bf_sched_size(s) == 0 && !bf_sched_find(s, "did:plc:x"));
    CHECK(bf_sched_next(s, 0).kind == BF_STEP_NONE);
    bf_sched_free(s);
}

static void test_loads_first_oldest_first_within_caps(void)
{
    bf_sched *s = bf_sched_new(3, 1);
    fill(s, 5);
    /* Resolutions in queue order, up to the concurrency. */
    bf_item *r[3] = {0};
    resolve_n(s, 3, (const char *[]){A, A, B}, r, 0);
    bf_item *a0 = r[0], *a1 = r[1], *b2 = r[2];
    CHECK(a0 && a1 && b2 && !strcmp(a0->did, "did:plc:d0") && !strcmp(b2->did, "did:plc:d2"));
    CHECK(bf_sched_active(s) == 0);
    /* Resolved DIDs load before more are resolved; host A takes one at a time. */
    bf_step st = bf_sched_next(s, 0);
    CHECK(st.kind == BF_STEP_LOAD && st.item == a0);
    st = bf_sched_next(s, 0);
    CHECK(st.kind == BF_STEP_LOAD && st.item == b2); /* a1 waits for host A */
    CHECK(bf_sched_host_active(s, A) == 1 && bf_sched_host_active(s, B) == 1);
    st = bf_sched_next(s, 0);
    CHECK(st.kind == BF_STEP_RESOLVE && !strcmp(st.item->did, "did:plc:d3"));
    CHECK(bf_sched_active(s) == 3);
    CHECK(bf_sched_next(s, 0).kind == BF_STEP_NONE); /* concurrency reached */
    bf_sched_loaded(s, a0);
    CHECK(a0->state == BF_ITEM_MARKING && bf_sched_active(s) == 2);
    st = bf_sched_next(s, 0);
    CHECK(st.kind == BF_STEP_LOAD && st.item == a1);
    CHECK(bf_sched_host_active(s, A) == 1);
    bf_sched_remove(s, a0);
    CHECK(bf_sched_size(s) == 4);
    bf_sched_free(s); /* frees what is still in the window */
}

static void test_failures_back_off_then_give_up(void)
{
    bf_sched *s = bf_sched_new(2, 2);
    fill(s, 1);
    bf_step st = bf_sched_next(s, 1000);
    bf_item *it = st.item;
    /* A failed resolution: tried again after 0.5-1 s (here the least), not before. */
    CHECK(bf_sched_failed(s, it, BF_FAIL_TRANSIENT, -1, "PLC: timeout", 1000, 0) == 0);
    CHECK(it->state == BF_ITEM_NEW && it->attempts == 1 && it->not_before == 1500);
    CHECK(bf_sched_active(s) == 0);
    st = bf_sched_next(s, 1200);
    CHECK(st.kind == BF_STEP_NONE && st.wake_at == 1500);
    st = bf_sched_next(s, 1500);
    CHECK(st.kind == BF_STEP_RESOLVE && st.item == it);
    CHECK(bf_sched_resolved(s, it, A) == 0);
    st = bf_sched_next(s, 1500);
    CHECK(st.kind == BF_STEP_LOAD);
    /* A failed load waits as resolved: no second resolution. */
    CHECK(bf_sched_failed(s, it, BF_FAIL_TRANSIENT, -1, "HTTP 500", 1500, 0) == 0);
    CHECK(it->state == BF_ITEM_READY && it->attempts == 2 && it->not_before == 1500 + 1000);
    CHECK(bf_sched_next(s, 2499).kind == BF_STEP_NONE);
    st = bf_sched_next(s, 2500);
    CHECK(st.kind == BF_STEP_LOAD && st.item == it);
    /* The third failure gives up, with its reason. */
    CHECK(bf_sched_failed(s, it, BF_FAIL_TRANSIENT, -1, "listRecords: HTTP 500", 3500, 0) == 1);
    CHECK(it->state == BF_ITEM_MARKING && !strcmp(it->error, "listRecords: HTTP 500"));
    CHECK(bf_sched_active(s) == 0 && bf_sched_host_active(s, A) == 0);
    CHECK(bf_sched_next(s, 99999).kind == BF_STEP_NONE);
    /* A DID that does not exist is given up at once. */
    CHECK(bf_sched_add(s, "did:plc:gone", 0) == 0);
    st = bf_sched_next(s, 4000);
    CHECK(bf_sched_failed(s, st.item, BF_FAIL_FINAL, -1, "RepoNotFound", 4000, 0) == 1);
    CHECK(st.item->attempts == 0);
    bf_sched_free(s);
}

static void test_rate_limit_parks_the_host_only(void)
{
    bf_sched *s = bf_sched_new(4, 2);
    fill(s, 4);
    bf_item *r[4] = {0};
    resolve_n(s, 4, (const char *[]){A, A, B, B}, r, 0);
    bf_item *a0 = r[0], *a1 = r[1], *b2 = r[2], *b3 = r[3];
    CHECK(bf_sched_next(s, 0).item == a0);
    /* 429 with a reset 3 s away: A parks, a0 keeps its attempts and waits there. */
    CHECK(bf_sched_failed(s, a0, BF_FAIL_RATE_LIMITED, 3000, "HTTP 429", 100, 0) == 0);
    CHECK(a0->state == BF_ITEM_READY && a0->attempts == 0);
    CHECK(bf_sched_parked_hosts(s, 100) == 1 && bf_sched_parked_hosts(s, 3100) == 0);
    bf_step st = bf_sched_next(s, 200);
    CHECK(st.kind == BF_STEP_LOAD && st.item == b2);
    st = bf_sched_next(s, 200);
    CHECK(st.kind == BF_STEP_LOAD && st.item == b3);
    st = bf_sched_next(s, 200);
    CHECK(st.kind == BF_STEP_NONE && st.wake_at == 3100);
    CHECK(bf_sched_wants_more(s, 3000)); /* A's DIDs cannot start soon: fetch more */
    st = bf_sched_next(s, 3100);
    CHECK(st.kind == BF_STEP_LOAD && st.item == a0);
    st = bf_sched_next(s, 3100);
    CHECK(st.kind == BF_STEP_LOAD && st.item == a1);
    /* No reset named: the default park; a huge one is capped. */
    CHECK(bf_sched_failed(s, a1, BF_FAIL_RATE_LIMITED, -1, "HTTP 429", 4000, 0) == 0);
    CHECK(bf_sched_next(s, 4000 + BF_PARK_DEFAULT_MS - 1).kind == BF_STEP_NONE);
    CHECK(bf_sched_failed(s, a0, BF_FAIL_RATE_LIMITED, 99999999, "HTTP 429", 5000, 0) == 0);
    st = bf_sched_next(s, 5000 + BF_PARK_MAX_MS);
    CHECK(st.kind == BF_STEP_LOAD && st.item == a0);
    bf_sched_free(s);
}

/* The PLC directory's 429 while resolving: every resolution waits, the DID keeps its
 * attempts, and loads of resolved DIDs go on. */
static void test_rate_limited_resolution_parks_resolving(void)
{
    bf_sched *s = bf_sched_new(4, 2);
    fill(s, 4);
    bf_item *r[3] = {0};
    resolve_n(s, 3, (const char *[]){A, A, A}, r, 0);
    CHECK(bf_sched_next(s, 0).item == r[0] && bf_sched_next(s, 0).item == r[1]);
    bf_step st = bf_sched_next(s, 0); /* r[2] waits for A's cap: the last DID resolves */
    CHECK(st.kind == BF_STEP_RESOLVE);
    bf_item *d3 = st.item;
    CHECK(bf_sched_failed(s, d3, BF_FAIL_RATE_LIMITED, 2000, "429", 100, 0) == 0);
    CHECK(d3->state == BF_ITEM_NEW && d3->attempts == 0 && bf_sched_active(s) == 2);
    bf_sched_loaded(s, r[0]);
    bf_sched_remove(s, r[0]);
    st = bf_sched_next(s, 200);
    CHECK(st.kind == BF_STEP_LOAD && st.item == r[2]);
    st = bf_sched_next(s, 200);
    CHECK(st.kind == BF_STEP_NONE && st.wake_at == 2100);
    st = bf_sched_next(s, 2100);
    CHECK(st.kind == BF_STEP_RESOLVE && st.item == d3);
    bf_sched_free(s);
}

static void test_wants_more_until_the_window_is_full(void)
{
    bf_sched *s = bf_sched_new(2, 1);
    CHECK(bf_sched_wants_more(s, 0));
    fill(s, 3);
    CHECK(bf_sched_wants_more(s, 0)); /* 3 startable < 2 x 2 */
    CHECK(bf_sched_add(s, "did:plc:more", 0) == 0);
    CHECK(!bf_sched_wants_more(s, 0));
    /* DIDs backing off do not count as startable. */
    bf_step st = bf_sched_next(s, 0);
    CHECK(bf_sched_failed(s, st.item, BF_FAIL_TRANSIENT, -1, "x", 0, 0) == 0);
    CHECK(bf_sched_wants_more(s, 0));
    bf_sched_free(s);
    /* A full window takes no more, however stuck it is. */
    s = bf_sched_new(1, 1);
    fill(s, BF_WINDOW_MIN);
    for (int i = 0; i < BF_WINDOW_MIN; i++) {
        bf_step x = bf_sched_next(s, 0);
        if (x.kind == BF_STEP_RESOLVE) bf_sched_resolved(s, x.item, A);
        bf_sched_failed(s, x.item, BF_FAIL_RATE_LIMITED, 1000, "429", 0, 0);
    }
    CHECK(!bf_sched_wants_more(s, 0));
    bf_sched_free(s);
}

int main(void)
{
    RUN(test_decide_table);
    RUN(test_window_add_find_remove);
    RUN(test_loads_first_oldest_first_within_caps);
    RUN(test_failures_back_off_then_give_up);
    RUN(test_rate_limit_parks_the_host_only);
    RUN(test_rate_limited_resolution_parks_resolving);
    RUN(test_wants_more_until_the_window_is_full);
    CHECK_EXIT();
}
