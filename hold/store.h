/* Durable pull/push counters in SQLite (WAL, synchronous=FULL), with group commit.
 *
 * Increments are submitted from the loop thread; a writer thread applies every increment
 * pending at that moment in ONE transaction (one fsync), then the loop thread gets each
 * submission's callback, only after its transaction committed. Totals and the per-day row
 * (UTC day of the commit) change in the same transaction, so they always agree. Reads run
 * on the loop thread on a separate connection (WAL readers never wait for the writer). */
#ifndef HOLD_STORE_H
#define HOLD_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct store store;

enum store_event { STORE_PULL = 0, STORE_PUSH = 1 };

typedef struct {
    const char *did;
    const char *repository;
    enum store_event event;
    int64_t count;
} store_incr;

/* ok is 1 when the increments are committed, 0 when the transaction failed (nothing applied). */
typedef void (*store_done_fn)(void *ud, int ok);
/* Called on the loop thread once per committed group, for metrics. */
typedef void (*store_commit_fn)(void *ud, double seconds, size_t submissions, size_t increments);

/* Opens or creates the database and starts the writer thread. NULL on failure, with why in err
 * (SQLite's message, the system error and what to do). */
store *store_open(uv_loop_t *loop, const char *path, store_commit_fn on_commit, void *commit_ud,
                  char *err, size_t errlen);
/* Copies the increments; done runs later on the loop thread. Returns 0, or -1 (out of memory,
 * or the store is closing) in which case done is never called. */
int store_submit(store *s, const store_incr *incs, size_t n, store_done_fn done, void *ud);
/* Submissions not yet answered (queued or in the running transaction). */
size_t store_pending(const store *s);
/* Commits everything pending, answers it, stops the writer thread and closes the database.
 * The struct is freed once the loop has run again (its uv_async handle closes). */
void store_close(store *s);

typedef struct {
    char *did;
    char *repository;
    char *rkey;
    int64_t pull_count, push_count;
    int64_t last_pull_ms, last_push_ms; /* 0 when none */
    int64_t created_ms, updated_ms;
} store_row;

void store_row_clear(store_row *r);
void store_rows_free(store_row *rows, size_t n);

/* 1 found (out filled), 0 not found, -1 database error. */
int store_get(store *s, const char *did, const char *repository, store_row *out);
int store_get_by_rkey(store *s, const char *rkey, store_row *out);
/* Up to limit rows in rkey order (descending when reverse), after the cursor rkey when given,
 * restricted to did when given. Returns 0 with *rows (caller frees) and *n, or -1. */
int store_list(store *s, const char *did, const char *cursor, int reverse, size_t limit,
               store_row **rows, size_t *n);

typedef struct {
    char day[11]; /* YYYY-MM-DD, UTC */
    int64_t pull_count, push_count;
} store_day;

/* Rows for days >= from_day ("YYYY-MM-DD"), ascending. Returns 0 with *days, *n, or -1. */
int store_history(store *s, const char *did, const char *repository, const char *from_day,
                  store_day **days, size_t *n);
/* Number of (did, repository) rows, for describeRepo and health. -1 on error. */
int64_t store_count(store *s);

#endif
