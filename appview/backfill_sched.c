#include "appview/backfill_sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/backoff.h"
#include "atproto/strmap.h"

/* ---- whether a pass runs ---- */

bf_action bf_decide(bf_mode mode, const bf_view *v)
{
    if (v->schema == BF_SCHEMA_OTHER) return BF_REFUSE;
    if (v->schema == BF_SCHEMA_OLD) return BF_WAIT;
    if (mode == BF_OFF) return BF_IDLE;
    /* Asked for because the index lost what a pass loaded (its schema changed, the firehose
     * skipped events): the old pass's progress says nothing about the index any more. */
    if (v->requested && mode != BF_ONCE) return BF_NEW;
    if (!v->has_pass) return BF_NEW;
    if (!v->same_source && (mode == BF_COMMAND || !v->finished)) return BF_NEW;
    if (!v->finished) return BF_RESUME;
    if (v->failed) return mode == BF_COMMAND || v->now_ms >= v->retry_at_ms ? BF_RETRY : BF_IDLE;
    return mode == BF_COMMAND ? BF_NEW : BF_IDLE;
}

const char *bf_action_name(bf_action a)
{
    static const char *const names[] = {"idle", "wait", "refuse", "resume", "new", "retry"};
    return a <= BF_RETRY ? names[a] : "?";
}

/* ---- the window ---- */

struct bf_host {
    char *name;
    unsigned active; /* its DIDs loading */
    unsigned refs;   /* items that point at it */
    uint64_t parked_until;
};

struct bf_sched {
    unsigned concurrency, per_host, active;
    bf_item **items; /* in the order they came from the queue */
    size_t n, cap;
    strmap *by_did; /* DID -> bf_item * */
    strmap *hosts;  /* host -> bf_host * */
    /* A resolution was rate limited (the PLC directory's 429): none starts before then. */
    uint64_t resolving_parked_until;
};

static void *ptr_of(const void *val)
{
    void *p;
    memcpy(&p, val, sizeof p);
    return p;
}

bf_sched *bf_sched_new(unsigned concurrency, unsigned per_host)
{
    bf_sched *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->concurrency = concurrency ? concurrency : 1;
    s->per_host = per_host ? per_host : 1;
    s->by_did = strmap_new();
    s->hosts = strmap_new();
    if (!s->by_did || !s->hosts) {
        bf_sched_free(s);
        return NULL;
    }
    return s;
}

static int drop_host(const char *key, size_t keylen, const void *val, size_t vlen, void *ud)
{
    const uint64_t *now = ud;
    bf_host *h = ptr_of(val);
    if (now && (h->refs || h->active || h->parked_until > *now)) return 0;
    free(h->name);
    free(h);
    return 1;
}

void bf_sched_free(bf_sched *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i]->did);
        free(s->items[i]->hold);
        free(s->items[i]);
    }
    free(s->items);
    if (s->hosts) strmap_sweep(s->hosts, drop_host, NULL);
    strmap_free(s->hosts);
    strmap_free(s->by_did);
    free(s);
}

bf_item *bf_sched_find(const bf_sched *s, const char *did)
{
    const void *v = strmap_get(s->by_did, did, strlen(did), NULL);
    return v ? ptr_of(v) : NULL;
}

int bf_sched_add(bf_sched *s, const char *did, unsigned attempts)
{
    if (bf_sched_find(s, did)) return 1;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        bf_item **items = realloc(s->items, cap * sizeof *items);
        if (!items) return -1;
        s->items = items;
        s->cap = cap;
    }
    bf_item *it = calloc(1, sizeof *it);
    if (!it || !(it->did = strdup(did))) {
        free(it);
        return -1;
    }
    if (strmap_put(s->by_did, did, strlen(did), &it, sizeof it) < 0) {
        free(it->did);
        free(it);
        return -1;
    }
    /* Attempts a restart carried over leave it one at least: it is tried before it fails. */
    it->attempts = attempts < BF_ATTEMPTS ? attempts : BF_ATTEMPTS - 1;
    s->items[s->n++] = it;
    return 0;
}

static void wake_min(uint64_t *wake, uint64_t t)
{
    if (!*wake || t < *wake) *wake = t;
}

bf_step bf_sched_next(bf_sched *s, uint64_t now)
{
    bf_step st = {BF_STEP_NONE, NULL, 0};
    if (strmap_count(s->hosts) > s->n + 64) strmap_sweep(s->hosts, drop_host, &now);
    if (s->active >= s->concurrency) return st;
    bf_item *resolve = NULL;
    for (size_t i = 0; i < s->n; i++) {
        bf_item *it = s->items[i];
        if (it->state == BF_ITEM_READY) {
            bf_host *h = it->host;
            if (h->parked_until > now) {
                wake_min(&st.wake_at, h->parked_until);
            } else if (it->not_before > now) {
                wake_min(&st.wake_at, it->not_before);
            } else if (h->active < s->per_host) {
                it->state = BF_ITEM_LOADING;
                h->active++;
                s->active++;
                return (bf_step){BF_STEP_LOAD, it, 0};
            }
        } else if (it->state == BF_ITEM_NEW && !resolve) {
            if (s->resolving_parked_until > now)
                wake_min(&st.wake_at, s->resolving_parked_until);
            else if (it->not_before > now)
                wake_min(&st.wake_at, it->not_before);
            else
                resolve = it;
        }
    }
    if (!resolve) return st;
    resolve->state = BF_ITEM_RESOLVING;
    s->active++;
    return (bf_step){BF_STEP_RESOLVE, resolve, 0};
}

int bf_sched_resolved(bf_sched *s, bf_item *it, const char *host)
{
    const void *v = strmap_get(s->hosts, host, strlen(host), NULL);
    bf_host *h = v ? ptr_of(v) : NULL;
    if (!h) {
        h = calloc(1, sizeof *h);
        if (!h || !(h->name = strdup(host)) ||
            strmap_put(s->hosts, host, strlen(host), &h, sizeof h) < 0) {
            if (h) free(h->name);
            free(h);
            return -1;
        }
    }
    h->refs++;
    it->host = h;
    it->state = BF_ITEM_READY;
    it->not_before = 0;
    s->active--;
    return 0;
}

/* Gives back the slots the item's step held. */
static void release_slots(bf_sched *s, bf_item *it)
{
    if (it->state == BF_ITEM_RESOLVING || it->state == BF_ITEM_LOADING) s->active--;
    if (it->state == BF_ITEM_LOADING) it->host->active--;
}

void bf_sched_loaded(bf_sched *s, bf_item *it)
{
    release_slots(s, it);
    it->state = BF_ITEM_MARKING;
}

int bf_sched_failed(bf_sched *s, bf_item *it, bf_fail_kind kind, long wait_ms, const char *error,
                    uint64_t now, uint64_t rnd)
{
    release_slots(s, it);
    snprintf(it->error, sizeof it->error, "%s", error ? error : "");
    if (kind == BF_FAIL_RATE_LIMITED) {
        uint64_t wait = wait_ms < 0 ? BF_PARK_DEFAULT_MS : (uint64_t)wait_ms;
        if (wait > BF_PARK_MAX_MS) wait = BF_PARK_MAX_MS;
        /* Loading: its PDS host parks. Resolving: the identity service (the PLC directory)
         * does, and so every resolution. Neither costs the DID an attempt. */
        uint64_t *until = it->host ? &it->host->parked_until : &s->resolving_parked_until;
        if (now + wait > *until) *until = now + wait;
        it->state = it->host ? BF_ITEM_READY : BF_ITEM_NEW;
        return 0;
    }
    if (kind == BF_FAIL_FINAL || ++it->attempts >= BF_ATTEMPTS) {
        it->state = BF_ITEM_MARKING;
        return 1;
    }
    it->not_before =
        now + backoff_delay_with(BF_BACKOFF_BASE_MS, BF_BACKOFF_MAX_MS, it->attempts - 1, rnd);
    it->state = it->host ? BF_ITEM_READY : BF_ITEM_NEW;
    return 0;
}

void bf_sched_remove(bf_sched *s, bf_item *it)
{
    size_t i = 0;
    while (i < s->n && s->items[i] != it)
        i++;
    if (i == s->n) return;
    release_slots(s, it);
    memmove(&s->items[i], &s->items[i + 1], (s->n - i - 1) * sizeof *s->items);
    s->n--;
    strmap_del(s->by_did, it->did, strlen(it->did));
    if (it->host) it->host->refs--;
    free(it->did);
    free(it->hold);
    free(it);
}

int bf_sched_wants_more(const bf_sched *s, uint64_t now)
{
    size_t max = (size_t)s->concurrency * BF_WINDOW_PER_SLOT;
    if (max < BF_WINDOW_MIN) max = BF_WINDOW_MIN;
    if (s->n >= max) return 0;
    size_t soon = 0;
    for (size_t i = 0; i < s->n; i++) {
        const bf_item *it = s->items[i];
        if (it->not_before > now) continue;
        if (it->state == BF_ITEM_NEW ||
            (it->state == BF_ITEM_READY && it->host->parked_until <= now))
            soon++;
    }
    return soon < 2 * (size_t)s->concurrency;
}

size_t bf_sched_size(const bf_sched *s)
{
    return s->n;
}

unsigned bf_sched_active(const bf_sched *s)
{
    return s->active;
}

static int count_parked(const char *key, size_t keylen, const void *val, size_t vlen, void *ud)
{
    uint64_t *acc = ud; /* [0] now, [1] count */
    if (((const bf_host *)ptr_of(val))->parked_until > acc[0]) acc[1]++;
    return 0;
}

unsigned bf_sched_parked_hosts(const bf_sched *s, uint64_t now)
{
    uint64_t acc[2] = {now, 0};
    strmap_sweep(s->hosts, count_parked, acc);
    return (unsigned)acc[1];
}

unsigned bf_sched_host_active(const bf_sched *s, const char *host)
{
    const void *v = strmap_get(s->hosts, host, strlen(host), NULL);
    return v ? ((const bf_host *)ptr_of(v))->active : 0;
}
