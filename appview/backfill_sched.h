/* The backfill's decisions, pure: data in, decisions out, no I/O and no clock (callers pass the
 * time and a random number). appview/backfill.c does the I/O; tests/unit/test_backfill_sched.c
 * tables the rules.
 *
 * bf_decide says whether a pass runs: a new one, the one in progress, or the failed DIDs of a
 * finished one again.
 *
 * bf_sched is the worker's window: the DIDs it took from the queue (P backfill:todo), each
 * resolved to its PDS and then loaded. It says which step starts next, within the concurrency
 * (DIDs resolving or loading at once) and the per-host cap (DIDs loading from one PDS at once):
 * loads of resolved DIDs first, oldest first, then resolutions. A failure is tried again after a
 * backoff with jitter (atproto/backoff.h), BF_ATTEMPTS attempts in all, unless it is final (the
 * DID or its repository does not exist). A 429 parks the DID's host until the reset it named (the
 * DID loses no attempt) while other hosts go on. A DID leaves the window only once its mark (done
 * or failed) is written, so a queue scan answered meanwhile cannot bring it back. */
#ifndef APPVIEW_BACKFILL_SCHED_H
#define APPVIEW_BACKFILL_SCHED_H

#include <stddef.h>
#include <stdint.h>

#define BF_ATTEMPTS 3
/* A failed DID waits atproto/backoff.h's delay from this base: 0.5-1 s, then 1-2 s. */
#define BF_BACKOFF_BASE_MS 1000
#define BF_BACKOFF_MAX_MS 60000
#define BF_PARK_DEFAULT_MS 60000 /* a 429 that names no reset */
#define BF_PARK_MAX_MS 3600000
/* A finished pass's failed DIDs are tried again after the same rule's delay from this base
 * (5-10 min, doubling per retry up to 3-6 h). */
#define BF_RETRY_BASE_MS (10 * 60 * 1000ULL)
#define BF_RETRY_MAX_MS (6 * 3600 * 1000ULL)

/* ---- whether a pass runs ---- */

typedef enum {
    BF_OFF,     /* APPVIEW_BACKFILL=off: never in the service */
    BF_ONCE,    /* one pass per index, resumed across restarts; failed DIDs tried again later */
    BF_AUTO,    /* as once, and a new pass whenever one is requested (backfill_request) */
    BF_COMMAND, /* `appview backfill`: resume, else retry the failed, else a new pass */
} bf_mode;

typedef enum {
    BF_SCHEMA_NONE,    /* P schema absent: a fresh index */
    BF_SCHEMA_CURRENT, /* the layout this appview writes */
    BF_SCHEMA_OLD,     /* an older layout, which the ingester drops and then marks current */
    BF_SCHEMA_OTHER,   /* another layout: nobody here writes into it */
} bf_schema;

typedef struct {
    bf_schema schema;
    int has_pass;         /* P backfill names a pass */
    int finished;         /* ... which finished: every DID found was loaded or failed */
    int same_source;      /* ... of the relay or DIDs file configured now */
    uint64_t failed;      /* its failed DIDs */
    uint64_t retry_at_ms; /* finished with failures: when they are due again */
    int requested;        /* a new pass was asked for (P backfill's request field) */
    uint64_t now_ms;
} bf_view;

typedef enum {
    BF_IDLE,   /* nothing to do */
    BF_WAIT,   /* not yet: an older index is being dropped; look again later */
    BF_REFUSE, /* the index is of another layout: write nothing into it */
    BF_RESUME, /* the pass in progress goes on */
    BF_NEW,    /* a new pass (the old one's progress is forgotten) */
    BF_RETRY,  /* the finished pass's failed DIDs go back in its queue */
} bf_action;

bf_action bf_decide(bf_mode mode, const bf_view *v);
const char *bf_action_name(bf_action a);

/* ---- the worker's window ---- */

typedef enum {
    BF_ITEM_NEW,       /* to resolve (not before not_before) */
    BF_ITEM_RESOLVING, /* its identity is being resolved: holds a slot */
    BF_ITEM_READY,     /* resolved: to load from its host (not before not_before) */
    BF_ITEM_LOADING,   /* its repository is being listed: holds a slot and a host slot */
    BF_ITEM_MARKING,   /* loaded or given up: its mark is being written */
} bf_item_state;

typedef struct bf_host bf_host;

typedef struct {
    char *did;
    bf_item_state state;
    bf_host *host; /* READY and LOADING, and MARKING after a load */
    unsigned attempts;
    uint64_t not_before;
    char error[200]; /* the last failure, for the failed mark */
    /* What its load lists (appview/backfill.c sets them once resolved): its repository, when
     * its document names a PDS (repo 1 until that is done), then a hold's stats from its
     * #atcr_hold endpoint (hold, owned; NULL when none); records: what they listed. */
    int repo;
    char *hold;
    size_t records;
} bf_item;

typedef struct bf_sched bf_sched;

/* concurrency >= 1, per_host >= 1. NULL when out of memory. */
bf_sched *bf_sched_new(unsigned concurrency, unsigned per_host);
void bf_sched_free(bf_sched *s);

/* A DID taken from the queue, with the attempts that already failed for it (counted before a
 * restart): 0 added, 1 already in the window, -1 out of memory. */
int bf_sched_add(bf_sched *s, const char *did, unsigned attempts);

typedef enum { BF_STEP_NONE, BF_STEP_RESOLVE, BF_STEP_LOAD } bf_step_kind;

typedef struct {
    bf_step_kind kind;
    bf_item *item;    /* RESOLVE, LOAD: now RESOLVING or LOADING */
    uint64_t wake_at; /* NONE: when a waiting DID may start (0: not before a step ends) */
} bf_step;

/* The next step to start at now, already counted as started. */
bf_step bf_sched_next(bf_sched *s, uint64_t now);
/* The item's DID lives on host (its PDS endpoint): READY. -1 when out of memory (the item
 * stays RESOLVING: fail it). */
int bf_sched_resolved(bf_sched *s, bf_item *it, const char *host);
/* Its repository is loaded: MARKING (the slots are free). */
void bf_sched_loaded(bf_sched *s, bf_item *it);

typedef enum {
    BF_FAIL_TRANSIENT,    /* the network or the PDS failed: tried again after a backoff */
    BF_FAIL_FINAL,        /* the DID or its repository does not exist: no use trying again */
    BF_FAIL_RATE_LIMITED, /* 429: its host parks for wait_ms (default if < 0, capped); while
                           * resolving, every resolution does (the PLC directory's 429) */
} bf_fail_kind;

/* A step failed. 1 when the DID is given up (MARKING: record it as failed with it->error),
 * 0 when it waits to be tried again. */
int bf_sched_failed(bf_sched *s, bf_item *it, bf_fail_kind kind, long wait_ms, const char *error,
                    uint64_t now, uint64_t rnd);
/* Its mark is written (or the pass ended): the item leaves the window and is freed. */
void bf_sched_remove(bf_sched *s, bf_item *it);
/* The item of a DID in the window, or NULL. */
bf_item *bf_sched_find(const bf_sched *s, const char *did);

/* Whether to take more DIDs from the queue: few in the window can start soon, and it has
 * room (it holds at most BF_WINDOW_PER_SLOT per slot of concurrency, at least BF_WINDOW_MIN). */
#define BF_WINDOW_PER_SLOT 16
#define BF_WINDOW_MIN 256
int bf_sched_wants_more(const bf_sched *s, uint64_t now);
size_t bf_sched_size(const bf_sched *s);
/* DIDs resolving or loading. */
unsigned bf_sched_active(const bf_sched *s);
/* Hosts parked at now (for progress reports). */
unsigned bf_sched_parked_hosts(const bf_sched *s, uint64_t now);
/* The DIDs loading from host now (what the per-host cap bounds). */
unsigned bf_sched_host_active(const bf_sched *s, const char *host);

#endif
