/* Docker Hub pull-count history: one SQLite database (WAL) under APPVIEW_DATA_DIR holding a
 * snapshot of each image's lifetime pull_count per UTC day, and the list of images the daily
 * refresh loop keeps in sync. Daily pulls are deltas between consecutive snapshots, computed
 * at query time; a gap of several days spreads its delta evenly over them.
 *
 * Every write is one small transaction committed before the call returns, so a crash loses
 * nothing already recorded. Days are numbered from the Unix epoch (UTC), so tests can pass any
 * "today". */
#ifndef APPVIEW_HISTORY_H
#define APPVIEW_HISTORY_H

#include <uv.h>

typedef struct history history;

/* Creates dir when missing and opens dir/stats-history.db. NULL with a reason in err. */
history *history_open(const char *dir, char *err, size_t errlen);
/* Stops the refresh loop (its timer closes on the loop) and closes the database. */
void history_close(history *h);

long history_day_of(long long unix_ms);
/* YYYY-MM-DD of a day number. */
void history_day_string(long day, char out[11]);

/* Makes an image known to the refresh loop (never synced yet: it comes first). 0 or -1. */
int history_add_image(history *h, const char *image);
/* Today's snapshot (replacing an earlier one of the same day) and the image's sync time. */
int history_record(history *h, const char *image, long day, long long pull_count, long long now_ms);
/* Marks an image synced without a snapshot (Hub says it does not exist). */
int history_touch(history *h, const char *image, long long now_ms);
/* The newest snapshot: 1 found, 0 none, -1 error. */
int history_latest(history *h, const char *image, long long *pull_count, long *day);
/* Daily pulls for the n days ending with end_day, oldest first; -1 where unknown. 0 or -1. */
int history_daily(history *h, const char *image, long end_day, int n, long long *out);
/* Up to max images last synced before cutoff_ms, stalest first. *out is a malloc'd array of
 * malloc'd strings; returns how many, or -1. */
int history_stalest(history *h, long long cutoff_ms, int max, char ***out);

/* The refresh loop: every image not synced for period_hours is fetched, stalest first, one at
 * a time; each is committed (by the fetcher calling history_record/history_touch) before the
 * next is asked for. fetch must call done exactly once, later; outcome < 0 means try again on
 * a later round. */
typedef void (*history_done_fn)(history *h, int outcome);
typedef int (*history_fetch_fn)(history *h, const char *image, history_done_fn done, void *ud);
/* First round after first_ms, then one check a minute. 0 or -1. */
int history_refresh_start(history *h, uv_loop_t *loop, unsigned period_hours, unsigned first_ms,
                          history_fetch_fn fetch, void *ud);

#endif
