#include "appview/writer.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "appview/plan.h"
#include "atproto/buf.h"
#include "atproto/json_pool.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/strjoin.h"
#include "atproto/strmap.h"

/* Past this many remembered records (about 250 bytes each with their place, so some 60 MB)
 * the writer forgets everything and reads again what it needs. */
#define MAX_REMEMBERED 250000
/* How often a round also checks that the prefix was not flushed behind the writer's back. */
#define SCHEMA_CHECK_MS 1000
/* The most items a round takes. Reading runs ahead of Valkey (up to 20,000 events' writes
 * pending, more queued while Valkey stalls), and a round that took everything queued grew to
 * 25,000 items: read ahead, planned and sent in one burst, its maps swept at that size. 4,096
 * is above what a round holds while Valkey keeps up (1,000-4,000 on make bench's stream). */
#define ROUND_MAX 4096
#define KEY_MAX PLAN_KEY_MAX

/* A DID as the writer knows it. gen changes when the DID is purged: what was remembered of
 * its records before then is void. ttl_gen changes with gen: the purge deleted the DID's
 * zsets, and the next write creates them again without a TTL. Stored by value in a strmap, so
 * it is copied in and out (strmap values are not aligned). */
typedef struct {
    unsigned gen, ttl_gen;
    unsigned repos_gen; /* changes whenever P{D}/repos may have gone: what it named is void */
    int gone_state, rev_state;
    int history_known;                  /* ~rev exists, or recs does not: see plan_state */
    uint64_t gone;                      /* time_us of its purge mark; 0: none */
    char max_rev[PLAN_REV_MAX];         /* the recs field ~rev: the newest rev written for it */
    uint64_t recs_ttl_ms, repos_ttl_ms; /* last TTL refresh of recs and repos in this ttl_gen */
} did_memo;

enum { MEMO_UNKNOWN, MEMO_READING, MEMO_KNOWN };

/* When the writer last refreshed a repository zset's TTL, and in which ttl_gen of its DID. */
typedef struct {
    unsigned gen;
    uint64_t ms;
} ttl_memo;

/* A record as the writer knows it, in the DID's generation gen: compact, as "R key at" for a
 * live record. An update that keeps the record where it is rewrites the memo in place. */
typedef struct {
    unsigned gen;
    char state; /* stored_state, or REC_READING */
    char kind;  /* STORED_LIVE: 'm', 't' or 's' */
    char rev[PLAN_REV_MAX];
    char place[PLAN_PLACE_MAX]; /* STORED_LIVE: "R key at" */
} field_memo;

#define REC_READING ((char)(STORED_LIVE + 1))

/* The value of a tag's hint field t/R/T ("D t/R/T" in round_owners), read for the current
 * round: who may remove the tag. */
typedef struct {
    int state; /* MEMO_READING or MEMO_KNOWN */
    char value[PLAN_PLACE_MAX];
} owner_memo;

/* Items are cut from slabs: an event's copy is over a kilobyte, and every malloc of that size
 * makes glibc consolidate its free small chunks first. A slab is done with its last item once
 * the writer has moved on to a new one; the current one is reused from the start when empty.
 * Up to SPARE_SLABS done slabs are kept for the next ones, for the same reason: a malloc and a
 * free of a slab each consolidated too (600 of each on make bench's stream, 2% of the
 * ingester's cycles). */
#define SLAB_BYTES (256 * 1024)
#define SPARE_SLABS 4

typedef struct slab {
    size_t used, cap, live;
    int retired;
    _Alignas(max_align_t) unsigned char data[];
} slab;

typedef struct item {
    struct item *next;
    slab *from;
    writer *w;
    writer_done_cb cb;
    void *ud;
    int outstanding; /* 1 until processed, then the writes in flight */
    int failed;
    int indexed;  /* the plan changed the index: counts as indexed once acknowledged */
    char *dumped; /* the record serialized here when the message's own bytes could not be kept */
    event ev;     /* its strings point into text; ev.record is held only for hold stats */
    char text[];
} item;

typedef enum {
    READ_FIELD,
    READ_GONE,
    READ_MAX_REV,
    READ_RECS_EXIST,
    READ_SCHEMA,
    READ_TAG_OWNER
} read_kind;

typedef struct {
    writer *w;
    unsigned epoch;
    read_kind kind;
    size_t keylen;
    char key[]; /* memo key: the field's, the DID, or "D t/R/T" */
} read_req;

struct writer {
    cache_client *v;
    fold *f;
    char *prefix, *schema_key, *schema_value;
    const char *recent_key, *recent_index_key; /* the fold's */
    char ttl[16];
    uint64_t ttl_refresh_ms;
    strmap *dids, *fields, *ttls;
    strmap *listed;       /* "D R" -> the repos_gen of D in which the writer named R in repos */
    strmap *round_owners; /* tags' hint fields, read for the current round */
    strmap *round_recent; /* P recent entries held back: member -> recent_entry */
    int recent_trim;      /* a put of the round asked for a trim of P recent */
    slab *slab;           /* where new items are cut from */
    slab *spare[SPARE_SLABS];
    int nspare;
    item *queue, *queue_tail;
    size_t nqueued;
    item *round;   /* the items of the round not yet planned: the first waits for reads */
    size_t nround; /* items of the round not yet planned */
    int reads_outstanding, read_failed;
    unsigned epoch; /* replies to reads of an earlier epoch are ignored */
    uint64_t schema_checked_ms;
    char refusal[160];       /* the last refusal Valkey may lift (out of memory, ...); "" none */
    uint64_t refused_log_ms; /* when a refused write was last logged */
    uint64_t refused_unlogged;
    plan plan;   /* the plan being sent (large: one per writer, not one per call) */
    buf scratch; /* a record's header and JSON, as sent */
    uint64_t *indexed_total, *stale_total, *write_errors_total, *forgets_total, *reads_total;
    uint64_t *rounds_total, *round_waits_total, *rounds_cut_total;
};

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* "D <collection>/<rkey>": what the writer remembers a record under. */
static int field_key(char *out, size_t cap, const event *ev)
{
    return strjoin(out, cap,
                   (const char *const[]){ev->did, " ", ev->collection, "/", ev->rkey, NULL});
}

/* "P{D}/": what every key of the DID starts with. */
static int did_base(char out[KEY_MAX], const writer *w, const char *did)
{
    return strjoin(out, KEY_MAX, (const char *const[]){w->prefix, "{", did, "}/", NULL});
}

/* What the writer remembers of one DID's index under: "D R" (a repository named in repos) or
 * "D t/R/T" (a tag's hint field). */
static int did_memo_key(char out[KEY_MAX], const char *did, const char *what)
{
    return strjoin(out, KEY_MAX, (const char *const[]){did, " ", what, NULL});
}

/* ---- what the writer remembers ---- */

static void recent_flush(writer *w);

static void forget(writer *w)
{
    recent_flush(w); /* what is held back is matched against what it knows: sent first */
    strmap_clear(w->dids);
    strmap_clear(w->fields);
    strmap_clear(w->ttls);
    strmap_clear(w->listed);
    strmap_clear(w->round_owners);
    (*w->forgets_total)++;
}

/* The DID's memo, created (generation 1, nothing known) when absent. 0, or -1. */
static int did_get(writer *w, const char *did, did_memo *out)
{
    size_t n;
    const void *v = strmap_get(w->dids, did, strlen(did), &n);
    if (v && n == sizeof *out) {
        memcpy(out, v, sizeof *out);
        return 0;
    }
    *out = (did_memo){.gen = 1, .ttl_gen = 1};
    return strmap_put(w->dids, did, strlen(did), out, sizeof *out);
}

/* Stores a memo (strmap_put updates a value of the same size in place); out of memory, the
 * writer forgets everything rather than keep a stale memo. */
static void memo_put(writer *w, strmap *m, const char *key, size_t keylen, const void *val,
                     size_t vlen)
{
    if (strmap_put(m, key, keylen, val, vlen) < 0) forget(w);
}

static void did_put(writer *w, const char *did, const did_memo *d)
{
    memo_put(w, w->dids, did, strlen(did), d, sizeof *d);
}

/* Remembers a record in state st (a stored_state, or REC_READING), at place (placelen bytes;
 * STORED_LIVE only). What does not fit is not remembered: it is read again when needed. */
static void field_set(writer *w, const char *key, size_t keylen, unsigned gen, char st,
                      const char *rev, char kind, const char *place, size_t placelen)
{
    field_memo fm = {.gen = gen, .state = st, .kind = kind};
    size_t revlen = strlen(rev);
    if (revlen >= sizeof fm.rev || placelen >= sizeof fm.place) {
        strmap_del(w->fields, key, keylen);
        return;
    }
    memcpy(fm.rev, rev, revlen);
    memcpy(fm.place, place, placelen);
    memo_put(w, w->fields, key, keylen, &fm, offsetof(field_memo, place) + placelen + 1);
}

/* Remembers what a record's field holds, as the planner sees it. */
static void field_remember(writer *w, const char *key, size_t keylen, unsigned gen,
                           const stored_record *s)
{
    if (s->state != STORED_LIVE) {
        field_set(w, key, keylen, gen, (char)s->state, s->rev, 0, "", 0);
        return;
    }
    char place[PLAN_PLACE_MAX];
    int n = STRJOIN(place, s->repo, " ", s->key, " ", s->at);
    if (n < 0) {
        strmap_del(w->fields, key, keylen);
        return;
    }
    field_set(w, key, keylen, gen, STORED_LIVE, s->rev, s->kind, place, (size_t)n);
}

/* The record's memo; state STORED_UNKNOWN when there is none for the DID's generation gen. */
static void field_get(writer *w, const char *key, size_t keylen, unsigned gen, field_memo *fm)
{
    size_t n;
    const void *v = strmap_get(w->fields, key, keylen, &n);
    if (v && n > offsetof(field_memo, place) && n <= sizeof *fm) {
        memcpy(fm, v, n);
        if (fm->gen == gen) return;
    }
    fm->state = STORED_UNKNOWN;
}

/* A memo as the planner's stored_record: STORED_UNKNOWN while it is being read. */
static void stored_of(const field_memo *fm, stored_record *s)
{
    memset(s, 0, sizeof *s);
    s->state = fm->state == REC_READING ? STORED_UNKNOWN : (stored_state)fm->state;
    if (s->state != STORED_TOMBSTONE && s->state != STORED_LIVE) return;
    memcpy(s->rev, fm->rev, sizeof s->rev);
    if (s->state != STORED_LIVE) return;
    s->kind = fm->kind;
    const char *a = fm->place, *b = strchr(a, ' '), *c = b ? strchr(b + 1, ' ') : NULL;
    /* Parts of a memo the writer wrote fit; one that did not would mean it knows nothing. */
    if (!c || strput(s->repo, sizeof s->repo, a, (size_t)(b - a)) < 0 ||
        strput(s->key, sizeof s->key, b + 1, (size_t)(c - b - 1)) < 0 ||
        strput(s->at, sizeof s->at, c + 1, strlen(c + 1)) < 0)
        s->state = STORED_UNKNOWN;
}

/* 1 when a key's TTL should be refreshed now, given when it last was (*last, updated): the
 * first time in this generation, or after an eighth of the TTL. Refreshing at most that often
 * keeps a busy DID's keys between 7/8 and all of their TTL, with no EXPIRE per write. */
static int ttl_due(const writer *w, uint64_t *last, uint64_t now)
{
    if (*last && now - *last < w->ttl_refresh_ms) return 0;
    *last = now;
    return 1;
}

/* The same for a repository zset, remembered by key name. */
static int zset_ttl_due(writer *w, const char *key, unsigned gen, uint64_t now)
{
    size_t n, keylen = strlen(key);
    const void *v = strmap_get(w->ttls, key, keylen, &n);
    ttl_memo t = {gen, 0};
    if (v && n == sizeof t) memcpy(&t, v, sizeof t);
    if (t.gen != gen) t = (ttl_memo){gen, 0};
    if (!ttl_due(w, &t.ms, now)) return 0;
    memo_put(w, w->ttls, key, keylen, &t, sizeof t);
    return 1;
}

/* Remembers that rev was written for the DID as its ~rev. */
static void note_max_rev(did_memo *d, const char *rev)
{
    if (strlen(rev) >= PLAN_REV_MAX) {
        d->rev_state = MEMO_UNKNOWN; /* not a TID: read ~rev again */
        return;
    }
    memcpy(d->max_rev, rev, strlen(rev) + 1);
    d->history_known = 1;
}

/* ---- the round's tags' hint fields ---- */

static const owner_memo *round_owner(writer *w, const char *key, owner_memo *out)
{
    size_t n;
    const void *v = strmap_get(w->round_owners, key, strlen(key), &n);
    if (!v || n <= offsetof(owner_memo, value) || n > sizeof *out) return NULL;
    memcpy(out, v, n);
    return out;
}

static void owner_set(writer *w, const char *key, int state, const char *value, size_t len)
{
    owner_memo o = {.state = state};
    if (len >= sizeof o.value) {
        strmap_del(w->round_owners, key, strlen(key));
        return;
    }
    memcpy(o.value, value, len);
    memo_put(w, w->round_owners, key, strlen(key), &o, offsetof(owner_memo, value) + len + 1);
}

/* "D t/R/T" of the place a live tag record sits. -1 when it does not fit. */
static int tag_owner_key(char out[KEY_MAX], const char *did, const stored_record *s)
{
    char hint[KEY_MAX];
    if (plan_hint_field(RECORD_TAG, s->repo, s->key, hint, sizeof hint) < 0) return -1;
    return did_memo_key(out, did, hint);
}

/* ---- items ---- */

/* Copies n bytes of s, and a NUL, to *at; NULL stays NULL. */
static const char *copy_into(char **at, const char *s, size_t n)
{
    if (!s) return NULL;
    char *dst = *at;
    memcpy(dst, s, n);
    dst[n] = 0;
    *at += n + 1;
    return dst;
}

static const char *copy_str(char **at, const char *s)
{
    return copy_into(at, s, s ? strlen(s) : 0);
}

static size_t size_of(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* A retired slab whose items are all done: kept as a spare, or freed. */
static void slab_done(writer *w, slab *s)
{
    if (w->nspare < SPARE_SLABS && s->cap == SLAB_BYTES)
        w->spare[w->nspare++] = s;
    else
        free(s);
}

static void slab_retire(writer *w, slab *s)
{
    s->retired = 1;
    if (!s->live) slab_done(w, s);
}

static void slab_release(writer *w, slab *s)
{
    if (--s->live) return;
    if (s->retired)
        slab_done(w, s);
    else
        s->used = 0;
}

/* size bytes from the writer's slab (a new one when it is full), aligned for any type. */
static void *slab_alloc(writer *w, size_t size, slab **from)
{
    size = (size + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
    slab *s = w->slab;
    if (!s || s->cap - s->used < size) {
        size_t cap = size > SLAB_BYTES ? size : SLAB_BYTES;
        slab *fresh =
            cap == SLAB_BYTES && w->nspare ? w->spare[--w->nspare] : malloc(sizeof *fresh + cap);
        if (!fresh) return NULL;
        *fresh = (slab){.cap = cap};
        if (s) slab_retire(w, s);
        w->slab = s = fresh;
    }
    void *p = s->data + s->used;
    s->used += size;
    s->live++;
    *from = s;
    return p;
}

static item *item_new(writer *w, const event *ev, writer_done_cb cb, void *ud)
{
    size_t n = size_of(ev->did) + size_of(ev->collection) + size_of(ev->rkey) + size_of(ev->rev) +
               size_of(ev->cid) + size_of(ev->repository) + size_of(ev->key) +
               size_of(ev->target_rkey) + size_of(ev->at) +
               (ev->record_json ? ev->record_json_len + 1 : 0);
    slab *from;
    item *it = slab_alloc(w, sizeof *it + n, &from);
    if (!it) return NULL;
    *it = (item){.from = from, .w = w, .cb = cb, .ud = ud, .outstanding = 1, .ev = *ev};
    char *at = it->text;
    it->ev.doc = NULL;
    it->ev.value = JSON_DOC_NONE;
    it->ev.owns_record = 0;
    it->ev.reason = NULL;
    it->ev.did = copy_str(&at, ev->did);
    it->ev.collection = copy_str(&at, ev->collection);
    it->ev.rkey = copy_str(&at, ev->rkey);
    it->ev.rev = copy_str(&at, ev->rev);
    it->ev.cid = copy_str(&at, ev->cid);
    it->ev.repository = copy_str(&at, ev->repository);
    it->ev.key = copy_str(&at, ev->key);
    it->ev.target_rkey = copy_str(&at, ev->target_rkey);
    it->ev.at = copy_str(&at, ev->at);
    it->ev.record_json = copy_into(&at, ev->record_json, ev->record_json_len);
    if (ev->record && !ev->record_json) {
        /* The message's own bytes could not be kept (see event.h): the record as JSON. */
        it->dumped = json_pool_dump(ev->record, &it->ev.record_json_len);
        if (!it->dumped) {
            slab_release(w, from);
            return NULL;
        }
        it->ev.record_json = it->dumped;
    }
    /* Hold stats also update the user's counts (fold_hold_stats), from the parsed record. */
    int keep_record = ev->record && ev->record_kind == RECORD_HOLD_STATS;
    it->ev.record = keep_record ? json_incref(ev->record) : NULL;
    return it;
}

static void item_free(item *it)
{
    json_decref(it->ev.record);
    free(it->dumped);
    slab_release(it->w, it->from);
}

static void finish_one(item *it)
{
    if (--it->outstanding > 0) return;
    if (it->indexed && !it->failed) (*it->w->indexed_total)++;
    it->cb(it->ud, !it->failed);
    item_free(it);
}

static void fail_all(item *list)
{
    for (item *it = list, *next; it; it = next) {
        next = it->next;
        it->cb(it->ud, 0);
        item_free(it);
    }
}

/* ---- writes ---- */

/* One line every few seconds for refused writes, however many there are. */
#define REFUSED_LOG_MS 5000

static void note_reply(item *it, const reply *r)
{
    writer *w = it->w;
    if (!r) {
        it->failed = 1; /* the connection was lost: the event is folded again later */
        return;
    }
    if (r->type != REPLY_ERROR) return;
    (*w->write_errors_total)++;
    it->indexed = 0;
    int transient = cache_error_transient(r->str);
    if (transient) {
        /* Valkey may take it later (out of memory, ...): the event fails, and the stream is
         * read again from the last acknowledged cursor once it does (appview/ingest.c). */
        it->failed = 1;
        snprintf(w->refusal, sizeof w->refusal, "%s", r->str);
    }
    /* Otherwise not retried: the same write would be refused again and stall the stream. */
    uint64_t now = now_ms();
    if (w->refused_log_ms && now - w->refused_log_ms < REFUSED_LOG_MS) {
        w->refused_unlogged++;
        return;
    }
    log_warn("writer", "write refused for %s: %s%s (and %llu more since the last line)", it->ev.did,
             r->str, transient ? "; will be written again" : "",
             (unsigned long long)w->refused_unlogged);
    w->refused_log_ms = now;
    w->refused_unlogged = 0;
}

const char *writer_refusal(const writer *w)
{
    return w->refusal[0] ? w->refusal : NULL;
}

static void on_write(const reply *r, void *ud)
{
    item *it = ud;
    note_reply(it, r);
    finish_one(it);
}

static void write_cmd(item *it, int argc, const char **argv, const size_t *lens)
{
    if (cache_command(it->w->v, on_write, it, argc, argv, lens) == 0)
        it->outstanding++;
    else
        it->failed = 1;
}

static void expire(item *it, const char *key)
{
    write_cmd(it, 3, (const char *[]){"EXPIRE", key, it->w->ttl}, NULL);
}

/* ---- P recent, one ZADD per round ----
 *
 * One ZADD of a round's hundreds of recent entries costs Valkey a fraction of a ZADD each. The
 * entries go after the records they index, so a crash may leave a record without its entry:
 * the replay finds the record already written (stale, same rev) and the plan adds the entry
 * again. Within the round, an entry held back is sent or dropped before anything else may
 * touch its member: a ZREM of it, a purge of its DID. */

/* An entry held back, under its member in round_recent: the item stays outstanding until the
 * entry is sent and acknowledged. Stored by value (copied in and out). */
typedef struct {
    item *it;
    char score[24];
} recent_entry;

static recent_entry entry_of(const void *val)
{
    recent_entry e;
    memcpy(&e, val, sizeof e);
    return e;
}

static void recent_hold(writer *w, item *it, const char *member, size_t mlen, const char *score,
                        size_t slen)
{
    const void *old = strmap_get(w->round_recent, member, mlen, NULL);
    if (old) finish_one(entry_of(old).it); /* the member's newer score replaces it */
    recent_entry e = {.it = it};
    if (slen >= sizeof e.score) {
        it->failed = 1;
        return;
    }
    memcpy(e.score, score, slen);
    if (strmap_put(w->round_recent, member, mlen, &e, sizeof e) < 0) {
        it->failed = 1;
        return;
    }
    it->outstanding++;
}

/* The entry held back for member is dropped: its member is being removed. */
static void recent_drop(writer *w, const char *member, size_t mlen)
{
    const void *v = strmap_get(w->round_recent, member, mlen, NULL);
    if (!v) return;
    recent_entry e = entry_of(v);
    strmap_del(w->round_recent, member, mlen);
    finish_one(e.it);
}

static int drop_of_did(const char *member, size_t mlen, const void *val, size_t vlen, void *ud)
{
    const char *did = *(const char **)ud;
    size_t dlen = strlen(did);
    if (mlen <= dlen || memcmp(member, did, dlen) != 0 || member[dlen] != ' ') return 0;
    finish_one(entry_of(val).it);
    return 1;
}

/* A purge removes the DID's entries: those held back must not come back after it. */
static void recent_drop_did(writer *w, const char *did)
{
    strmap_sweep(w->round_recent, drop_of_did, &did);
}

static void fail_items(item *const *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        items[i]->failed = 1;
        finish_one(items[i]);
    }
}

static int fail_entry(const char *member, size_t mlen, const void *val, size_t vlen, void *ud)
{
    item *it = entry_of(val).it;
    fail_items(&it, 1);
    return 1;
}

/* A round's entries, sent to P recent's index (fold_recent_index_key) and then to P recent:
 * each item finishes once both were answered, and fails if either failed. */
typedef struct {
    size_t n;
    int pending;
    item *items[];
} recent_batch;

static void on_recent_batch(const reply *r, void *ud)
{
    recent_batch *b = ud;
    for (size_t i = 0; i < b->n; i++)
        note_reply(b->items[i], r);
    if (--b->pending > 0) return;
    for (size_t i = 0; i < b->n; i++)
        finish_one(b->items[i]);
    free(b);
}

/* An entry of the round, as the two ZADDs send it. */
typedef struct {
    const char *member, *score; /* the score as the map holds it, until the ZADDs are sent */
    size_t mlen, slen;
    double ms;
} recent_pick;

typedef struct {
    recent_batch *batch;
    recent_pick *picks;
} recent_args;

/* Adds an entry to the round's picks; the map is cleared once they are sent. */
static int collect_entry(const char *member, size_t mlen, const void *val, size_t vlen, void *ud)
{
    recent_args *a = ud;
    const char *score = (const char *)val + offsetof(recent_entry, score);
    recent_pick *p = &a->picks[a->batch->n];
    *p = (recent_pick){.member = member,
                       .mlen = mlen,
                       .score = score,
                       .slen = strlen(score),
                       .ms = strtod(score, NULL)};
    a->batch->items[a->batch->n++] = entry_of(val).it;
    return 0;
}

/* Entries go to each ZADD in that zset's own order: members that land next to each other in
 * its skiplist walk the nodes the previous insert brought into the cache, where the map's
 * order lands each at random (on the bench's stream, a fifth of the index's Valkey time). */
static int by_member(const void *x, const void *y)
{
    const recent_pick *a = x, *b = y;
    int c = memcmp(a->member, b->member, a->mlen < b->mlen ? a->mlen : b->mlen);
    return c ? c : (a->mlen > b->mlen) - (a->mlen < b->mlen);
}

static int by_score(const void *x, const void *y)
{
    const recent_pick *a = x, *b = y;
    return (a->ms > b->ms) - (a->ms < b->ms);
}

/* ZADD key s1 m1 s2 m2 ... of the n picks, each with its own score or with "0". */
static int send_zadd(writer *w, recent_batch *b, const char *key, const recent_pick *picks,
                     size_t n, int own_score)
{
    const char **argv = malloc((2 * n + 2) * sizeof *argv);
    size_t *lens = malloc((2 * n + 2) * sizeof *lens);
    int rc = -1;
    if (argv && lens) {
        argv[0] = "ZADD";
        lens[0] = 4;
        argv[1] = key;
        lens[1] = strlen(key);
        for (size_t i = 0; i < n; i++) {
            argv[2 + 2 * i] = own_score ? picks[i].score : "0";
            lens[2 + 2 * i] = own_score ? picks[i].slen : 1;
            argv[3 + 2 * i] = picks[i].member;
            lens[3 + 2 * i] = picks[i].mlen;
        }
        rc = cache_command(w->v, on_recent_batch, b, (int)(2 * n + 2), argv, lens);
    }
    free(argv);
    free(lens);
    return rc;
}

/* The index first (fold_recent_index_key's rule), then P recent. */
static void send_recent(writer *w, recent_args *a)
{
    recent_batch *b = a->batch;
    b->pending = 2;
    qsort(a->picks, b->n, sizeof *a->picks, by_member);
    if (send_zadd(w, b, w->recent_index_key, a->picks, b->n, 0) < 0) {
        fail_items(b->items, b->n);
        free(b);
        return;
    }
    qsort(a->picks, b->n, sizeof *a->picks, by_score);
    if (send_zadd(w, b, w->recent_key, a->picks, b->n, 1) < 0) {
        for (size_t i = 0; i < b->n; i++)
            b->items[i]->failed = 1;
        b->pending--; /* the index's answer finishes them */
    }
}

/* Sends every entry held back (to P recent's index, then to P recent: one ZADD each), then the
 * trim a put of the round asked for. */
static void recent_flush(writer *w)
{
    size_t n = strmap_count(w->round_recent);
    if (n) {
        recent_args a = {.batch = malloc(sizeof *a.batch + n * sizeof(item *)),
                         .picks = malloc(n * sizeof *a.picks)};
        if (a.batch && a.picks) {
            a.batch->n = 0;
            strmap_sweep(w->round_recent, collect_entry, &a);
            send_recent(w, &a);
            strmap_clear(w->round_recent);
        } else {
            free(a.batch);
            strmap_sweep(w->round_recent, fail_entry, NULL);
        }
        free(a.picks);
    }
    if (w->recent_trim) {
        w->recent_trim = 0;
        fold_trim_recent(w->f);
    }
}

/* ---- scripts: purges, identities, hold stats ---- */

static void on_scripted(void *ud, int ok)
{
    item *it = ud;
    if (!ok) it->failed = 1;
    finish_one(it);
}

static void send_to_fold(writer *w, item *it,
                         int (*send)(fold *, const event *, fold_done_cb, void *))
{
    switch (send(w->f, &it->ev, on_scripted, it)) {
    case 0:
        it->outstanding++;
        break;
    case 1:
        break;
    default:
        it->failed = 1;
    }
}

/* A purge (cache/purge.lua) removes every key of the DID, ~rev too, and leaves its mark: what
 * the writer knew of the DID is void, and its P recent entries held back must not come back. */
static void purge(writer *w, item *it)
{
    const event *ev = &it->ev;
    recent_drop_did(w, ev->did);
    send_to_fold(w, it, fold_apply);
    did_memo d;
    if (did_get(w, ev->did, &d) < 0) {
        forget(w);
        return;
    }
    d.gen++;
    d.ttl_gen++;
    d.recs_ttl_ms = d.repos_ttl_ms = 0;
    d.rev_state = MEMO_KNOWN;
    d.history_known = 1;
    d.max_rev[0] = 0;
    if (d.gone_state == MEMO_KNOWN && ev->time_us > d.gone) d.gone = ev->time_us;
    did_put(w, ev->did, &d);
}

/* ---- sending a plan ---- */

/* Whether the repository is surely named in repos already, so its ZADD can be left out: the
 * writer named it there since repos last may have gone. repos may have gone when a purge
 * deleted it (repos_ttl_ms is 0 then) or its TTL ran out: when it was last refreshed 7/8 of the
 * TTL ago (the last eighth is a margin for commands still queued in Valkey). When it returns
 * 0, the repository counts as named: the caller sends the ZADD. */
static int named_in_repos(writer *w, did_memo *d, const char *did, const char *repo, uint64_t now)
{
    if (!d->repos_ttl_ms || now - d->repos_ttl_ms >= 7 * w->ttl_refresh_ms) d->repos_gen++;
    char key[KEY_MAX];
    if (did_memo_key(key, did, repo) < 0) return 0;
    size_t n;
    const void *v = strmap_get(w->listed, key, strlen(key), &n);
    unsigned gen;
    if (v && n == sizeof gen) {
        memcpy(&gen, v, sizeof gen);
        if (gen == d->repos_gen) return 1;
    }
    gen = d->repos_gen;
    memo_put(w, w->listed, key, strlen(key), &gen, sizeof gen);
    return 0;
}

/* The plan's HSETs of recs as one command: the record's value is its header and JSON. */
static void send_recs(writer *w, item *it, const plan *p, const char *base, did_memo *d,
                      uint64_t now)
{
    const char *argv[2 + 2 * PLAN_MAX_OPS];
    size_t lens[2 + 2 * PLAN_MAX_OPS];
    int argc = 2;
    const char *recs = NULL;
    buf *value = &w->scratch;
    for (int i = 0; i < p->nops; i++) {
        const plan_op *op = &p->ops[i];
        if (op->target != KEY_RECS) continue;
        recs = op->key;
        argv[argc] = op->a;
        lens[argc++] = op->alen;
        if (op->b2) {
            buf_reset(value);
            if (buf_append(value, op->b, op->blen) < 0 ||
                buf_append(value, op->b2, op->b2len) < 0) {
                it->failed = 1;
                return;
            }
            argv[argc] = value->data;
            lens[argc++] = value->len;
        } else {
            argv[argc] = op->b;
            lens[argc++] = op->blen;
        }
    }
    if (!recs) {
        /* Nothing to write, but after a restart the crash may have come between the record's
         * write and its TTL. */
        char key[KEY_MAX];
        if (ttl_due(w, &d->recs_ttl_ms, now) && STRJOIN(key, base, "recs") >= 0) expire(it, key);
        return;
    }
    argv[0] = "HSET";
    lens[0] = 4;
    argv[1] = recs;
    lens[1] = strlen(recs);
    write_cmd(it, argc, argv, lens);
    if (ttl_due(w, &d->recs_ttl_ms, now)) expire(it, recs);
}

/* The plan's removals from P recent, sent first. A replay cannot tell which entry a record
 * had before it moved, so the removal must never be lost while the move survives: where P
 * recent and the DID's keys are not one ordered stream (a cluster), the DID's writes of this
 * event wait until the removals are answered and replicated (cache_order). */
static int send_recent_removals(writer *w, item *it, const plan *p, const char *base)
{
    int sent = 0;
    for (int i = 0; i < p->nops; i++) {
        const plan_op *op = &p->ops[i];
        if (op->target != KEY_RECENT || op->kind != OP_ZREM) continue;
        recent_drop(w, op->b, op->blen);
        write_cmd(it, 3, (const char *[]){"ZREM", op->key, op->b},
                  (const size_t[]){4, strlen(op->key), op->blen});
        sent = 1;
    }
    char recs[KEY_MAX];
    if (sent && (STRJOIN(recs, base, "recs") < 0 || cache_order(w->v, w->recent_key, recs) < 0)) {
        it->failed = 1; /* nothing else of the event is sent: it is folded again */
        return -1;
    }
    return 0;
}

/* Sends a plan's ops as plain commands in their order (the record's HSET, which the planner
 * puts last, as one command), with what the writer saves: a round's P recent entries in one
 * ZADD at its end, a repository named in repos once, TTLs refreshed at most every eighth of
 * the TTL. */
static void send_plan(writer *w, item *it, const plan *p, const char *base, did_memo *d)
{
    uint64_t now = now_ms();
    if (send_recent_removals(w, it, p, base) < 0) return;
    for (int i = 0; i < p->nops; i++) {
        const plan_op *op = &p->ops[i];
        switch (op->target) {
        case KEY_RECS:
            continue;
        case KEY_RECENT:
            if (op->kind == OP_ZADD) {
                recent_hold(w, it, op->b, op->blen, op->a, op->alen);
                if (fold_recent_trim_due(w->f)) w->recent_trim = 1;
            }
            continue;
        case KEY_REPOS:
            /* Before the TTL refresh below: that tells whether repos may have gone. */
            if (!named_in_repos(w, d, it->ev.did, op->b, now))
                write_cmd(it, 5, (const char *[]){"ZADD", op->key, "NX", op->a, op->b},
                          (const size_t[]){4, strlen(op->key), 2, op->alen, op->blen});
            if (ttl_due(w, &d->repos_ttl_ms, now)) expire(it, op->key);
            continue;
        case KEY_INDEX:
            if (op->kind == OP_ZREM) {
                write_cmd(it, 3, (const char *[]){"ZREM", op->key, op->b},
                          (const size_t[]){4, strlen(op->key), op->blen});
                /* The zset may be emptied, and so deleted: the next write gives it its TTL. */
                strmap_del(w->ttls, op->key, strlen(op->key));
            } else {
                write_cmd(it, 4, (const char *[]){"ZADD", op->key, op->a, op->b},
                          (const size_t[]){4, strlen(op->key), op->alen, op->blen});
                if (zset_ttl_due(w, op->key, d->ttl_gen, now)) expire(it, op->key);
            }
            continue;
        }
    }
    send_recs(w, it, p, base, d, now);
}

/* ---- planning ---- */

static void send_read(writer *w, read_kind kind, const char *memo_key, size_t keylen, int argc,
                      const char **argv);

/* Reads of a DID's purge mark and ~rev (with whether recs exists), unless known or asked. */
static void read_did(writer *w, const char *did, did_memo *d, const char *base, unsigned need)
{
    char key[KEY_MAX], recs[KEY_MAX];
    if (STRJOIN(recs, base, "recs") < 0) return;
    if ((need & NEED_GONE) && d->gone_state == MEMO_UNKNOWN && STRJOIN(key, base, "gone") >= 0) {
        d->gone_state = MEMO_READING;
        send_read(w, READ_GONE, did, strlen(did), 2, (const char *[]){"GET", key});
    }
    if ((need & NEED_MAX_REV) && d->rev_state == MEMO_UNKNOWN) {
        d->rev_state = MEMO_READING;
        send_read(w, READ_MAX_REV, did, strlen(did), 3, (const char *[]){"HGET", recs, "~rev"});
        send_read(w, READ_RECS_EXIST, did, strlen(did), 2, (const char *[]){"EXISTS", recs});
    }
}

/* Sends the reads a plan said it needs and the writer has not asked for yet. */
static void read_needs(writer *w, const event *ev, did_memo *d, const char *base, const char *fk,
                       size_t fklen, const stored_record *cur, unsigned need)
{
    read_did(w, ev->did, d, base, need);
    char recs[KEY_MAX];
    if (STRJOIN(recs, base, "recs") < 0) return;
    field_memo fm;
    field_get(w, fk, fklen, d->gen, &fm);
    if ((need & NEED_RECORD) && fm.state == STORED_UNKNOWN) {
        field_set(w, fk, fklen, d->gen, REC_READING, "", 0, "", 0);
        /* The field is what follows the DID and its space in the memo key. */
        send_read(w, READ_FIELD, fk, fklen, 3,
                  (const char *[]){"HGET", recs, fk + strlen(ev->did) + 1});
    }
    char key[KEY_MAX], hint[KEY_MAX];
    owner_memo o;
    if ((need & NEED_TAG_OWNER) && tag_owner_key(key, ev->did, cur) >= 0 &&
        !round_owner(w, key, &o) &&
        plan_hint_field(RECORD_TAG, cur->repo, cur->key, hint, sizeof hint) >= 0) {
        owner_set(w, key, MEMO_READING, "", 0);
        send_read(w, READ_TAG_OWNER, key, strlen(key), 3, (const char *[]){"HGET", recs, hint});
    }
}

typedef enum { PLANNED, WAITING } progress;

/* What the planner is given: what the writer remembers of the record and its DID. */
static void state_of(writer *w, const event *ev, const did_memo *d, const field_memo *fm,
                     plan_state *st, owner_memo *o)
{
    *st = (plan_state){.gone_known = d->gone_state == MEMO_KNOWN,
                       .gone = d->gone,
                       .max_rev = d->rev_state == MEMO_KNOWN ? d->max_rev : NULL,
                       .history_known = d->history_known};
    stored_of(fm, &st->cur);
    char key[KEY_MAX];
    const owner_memo *got;
    if (st->cur.state == STORED_LIVE && st->cur.kind == RECORD_TAG &&
        tag_owner_key(key, ev->did, &st->cur) >= 0 && (got = round_owner(w, key, o)) &&
        got->state == MEMO_KNOWN)
        st->tag_owner = got->value;
}

/* What a plan wrote that the writer remembers: the record's new state, ~rev, and a tag's hint
 * field for the rest of the round. */
static void note_plan(writer *w, const item *it, const plan *p, did_memo *d, const char *fk,
                      size_t fklen)
{
    const event *ev = &it->ev;
    for (int i = 0; i < p->nops; i++) {
        const plan_op *op = &p->ops[i];
        if (op->kind != OP_HSET) continue;
        if (op->alen == 4 && !memcmp(op->a, "~rev", 4)) {
            note_max_rev(d, ev->rev);
        } else if (op->alen > 2 && !memcmp(op->a, "t/", 2)) {
            char key[KEY_MAX];
            if (did_memo_key(key, ev->did, op->a) >= 0)
                owner_set(w, key, MEMO_KNOWN, op->b, op->blen);
        }
    }
    if (p->verdict == PLAN_WRITE) field_remember(w, fk, fklen, d->gen, &p->next);
}

/* Plans a record event and sends its writes; WAITING when the plan needs reads (sent), and the
 * item is planned again once they are answered. */
static progress process_record(writer *w, item *it)
{
    const event *ev = &it->ev;
    did_memo d;
    char fk[KEY_MAX], base[KEY_MAX];
    int fklen = field_key(fk, sizeof fk, ev);
    if (fklen < 0 || did_get(w, ev->did, &d) < 0 || did_base(base, w, ev->did) < 0) {
        log_warn("writer", "%s: event of %s too large to index", ev->rkey, ev->did);
        (*w->write_errors_total)++;
        return PLANNED;
    }
    field_memo fm;
    field_get(w, fk, (size_t)fklen, d.gen, &fm);
    plan_state st;
    owner_memo o;
    state_of(w, ev, &d, &fm, &st, &o);
    plan *p = &w->plan;
    plan_record(ev, &st, &(plan_keys){.base = base, .recent_key = w->recent_key}, p);
    switch (p->verdict) {
    case PLAN_NEED:
        read_needs(w, ev, &d, base, fk, (size_t)fklen, &st.cur, p->need);
        did_put(w, ev->did, &d);
        return WAITING;
    case PLAN_ERROR:
        log_warn("writer", "%s/%s of %s: keys too long to index", ev->collection, ev->rkey,
                 ev->did);
        (*w->write_errors_total)++;
        return PLANNED;
    case PLAN_STALE:
        (*w->stale_total)++;
        break;
    case PLAN_WRITE:
        it->indexed = 1;
        break;
    }
    send_plan(w, it, p, base, &d);
    note_plan(w, it, p, &d, fk, (size_t)fklen);
    if (p->verdict == PLAN_WRITE && ev->record_kind == RECORD_HOLD_STATS && !ev->is_delete)
        send_to_fold(w, it, fold_hold_stats);
    did_put(w, ev->did, &d);
    return PLANNED;
}

static progress process(writer *w, item *it)
{
    const event *ev = &it->ev;
    if (ev->kind == EVENT_COMMIT) {
        if (process_record(w, it) == WAITING) return WAITING;
    } else if (ev->kind == EVENT_ACCOUNT) {
        purge(w, it);
    } else {
        /* An identity change: plain commands that touch nothing the writer knows. */
        send_to_fold(w, it, fold_apply);
    }
    finish_one(it); /* the hold of item_new */
    return PLANNED;
}

/* ---- rounds ---- */

static void round_ready(writer *w);

static void read_done(writer *w)
{
    if (--w->reads_outstanding == 0) round_ready(w);
}

static void on_schema_written(const reply *r, void *ud)
{
    (void)ud;
    if (r && r->type == REPLY_ERROR) log_warn("writer", "schema mark refused: %s", r->str);
}

int writer_mark_schema(writer *w)
{
    return cache_command(w->v, on_schema_written, NULL, 3,
                         (const char *[]){"SET", w->schema_key, w->schema_value}, NULL);
}

/* A TTL that failed is caught up when the key is next written. */
static void on_reexpired(const reply *r, void *ud) {}

static void reexpire(writer *w, const char *key)
{
    cache_command(w->v, on_reexpired, NULL, 3, (const char *[]){"EXPIRE", key, w->ttl}, NULL);
}

static int reexpire_zset(const char *key, size_t keylen, const void *val, size_t vlen, void *ud)
{
    char k[KEY_MAX];
    if (keylen < sizeof k) {
        memcpy(k, key, keylen);
        k[keylen] = 0;
        reexpire(ud, k);
    }
    return 0;
}

static int reexpire_did(const char *did, size_t didlen, const void *val, size_t vlen, void *ud)
{
    writer *w = ud;
    char d[KEY_MAX], base[KEY_MAX], key[KEY_MAX];
    if (didlen >= sizeof d) return 0;
    memcpy(d, did, didlen);
    d[didlen] = 0;
    if (did_base(base, w, d) < 0) return 0;
    if (STRJOIN(key, base, "recs") >= 0) reexpire(w, key);
    if (STRJOIN(key, base, "repos") >= 0) reexpire(w, key);
    return 0;
}

static void remember_schema(writer *w, const reply *r)
{
    if (r->type != REPLY_INTEGER || r->integer != 0) return;
    /* Flushed: keys written since the last check were written as if they had their TTL, and
     * may exist again without one. Every key the writer remembers giving a TTL gets it again
     * (an EXPIRE of a key that is gone does nothing); then it forgets what it knew. */
    log_warn("writer", "%s is gone: the index was flushed; forgetting what was known",
             w->schema_key);
    strmap_sweep(w->ttls, reexpire_zset, w);
    strmap_sweep(w->dids, reexpire_did, w);
    forget(w);
    if (writer_mark_schema(w) < 0) w->read_failed = 1;
}

static void remember_owner(writer *w, const read_req *q, const reply *r)
{
    if (r->type == REPLY_NIL || r->type == REPLY_STRING)
        owner_set(w, q->key, MEMO_KNOWN, r->type == REPLY_STRING ? r->str : "",
                  r->type == REPLY_STRING ? r->len : 0);
    else
        strmap_del(w->round_owners, q->key, q->keylen);
}

static void remember_did(writer *w, read_kind kind, const char *did, const reply *r)
{
    did_memo d;
    if (did_get(w, did, &d) < 0) return;
    switch (kind) {
    case READ_MAX_REV:
        d.rev_state = MEMO_UNKNOWN;
        d.max_rev[0] = 0;
        if (r->type == REPLY_NIL || (r->type == REPLY_STRING && r->len < PLAN_REV_MAX)) {
            if (r->type == REPLY_STRING) memcpy(d.max_rev, r->str, r->len + 1);
            d.rev_state = MEMO_KNOWN;
            d.history_known = r->type == REPLY_STRING; /* or no recs: READ_RECS_EXIST */
        }
        break;
    case READ_RECS_EXIST:
        /* Records without ~rev were written only by the loader (or before ~rev existed): their
         * history is unknown, so no create counts as new until an event sets ~rev. */
        if (r->type == REPLY_INTEGER && r->integer == 0) d.history_known = 1;
        break;
    default: /* READ_GONE */
        d.gone_state = MEMO_UNKNOWN;
        if (r->type == REPLY_NIL || r->type == REPLY_STRING) {
            d.gone = r->type == REPLY_STRING ? strtoull(r->str, NULL, 10) : 0;
            d.gone_state = MEMO_KNOWN;
        }
    }
    did_put(w, did, &d);
}

static void remember(writer *w, const read_req *q, const reply *r)
{
    switch (q->kind) {
    case READ_SCHEMA:
        remember_schema(w, r);
        return;
    case READ_TAG_OWNER:
        remember_owner(w, q, r);
        return;
    case READ_FIELD:
        break;
    default:
        remember_did(w, q->kind, q->key, r);
        return;
    }
    char did[KEY_MAX];
    const char *sp = strchr(q->key, ' ');
    size_t didlen = sp ? (size_t)(sp - q->key) : q->keylen;
    if (didlen >= sizeof did) return;
    memcpy(did, q->key, didlen);
    did[didlen] = 0;
    did_memo d;
    if (did_get(w, did, &d) < 0) return;
    stored_record s = {.state = STORED_ABSENT};
    if (r->type == REPLY_STRING && plan_parse_stored(r->str, r->len, &s) < 0) {
        /* Not a header the fold writes: written over as if absent. */
        log_warn("writer", "%s: unreadable field, written over", q->key);
        s.state = STORED_ABSENT;
    } else if (r->type != REPLY_STRING && r->type != REPLY_NIL) {
        strmap_del(w->fields, q->key, q->keylen); /* read again when needed */
        return;
    }
    field_remember(w, q->key, q->keylen, d.gen, &s);
}

static void on_read(const reply *r, void *ud)
{
    read_req *q = ud;
    writer *w = q->w;
    if (q->epoch == w->epoch) {
        if (!r)
            w->read_failed = 1;
        else
            remember(w, q, r);
        read_done(w);
    }
    free(q);
}

static void send_read(writer *w, read_kind kind, const char *memo_key, size_t keylen, int argc,
                      const char **argv)
{
    read_req *q = malloc(sizeof *q + keylen + 1);
    if (!q) {
        w->read_failed = 1;
        return;
    }
    q->w = w;
    q->epoch = w->epoch;
    q->kind = kind;
    q->keylen = keylen;
    memcpy(q->key, memo_key, keylen);
    q->key[keylen] = 0;
    if (cache_command(w->v, on_read, q, argc, argv, NULL) < 0) {
        free(q);
        w->read_failed = 1;
        return;
    }
    (*w->reads_total)++;
    w->reads_outstanding++;
}

/* Reads ahead, in one pipelined round trip, what planning the event will need and the writer
 * does not know: its DID's purge mark and ~rev, the record's stored header unless the event is
 * a create new to the index, and a live tag's hint field should the event move it. What it
 * cannot foresee (the hint of a tag it learns is live only from this read) is read when the
 * plan asks. */
static void read_ahead(writer *w, const item *it)
{
    const event *ev = &it->ev;
    if (ev->kind != EVENT_COMMIT) return;
    did_memo d;
    char base[KEY_MAX], fk[KEY_MAX];
    int fklen = field_key(fk, sizeof fk, ev);
    if (fklen < 0 || did_get(w, ev->did, &d) < 0 || did_base(base, w, ev->did) < 0) return;
    field_memo fm;
    field_get(w, fk, (size_t)fklen, d.gen, &fm);
    plan_state st;
    owner_memo o;
    state_of(w, ev, &d, &fm, &st, &o);
    unsigned need = plan_needs(ev, &st);
    if (!need) return;
    read_needs(w, ev, &d, base, fk, (size_t)fklen, &st.cur, need);
    did_put(w, ev->did, &d);
}

/* Plans the round's items in order. One that needs reads stops the round until they are
 * answered (read_done calls back here), so each item is planned from what the ones before it
 * wrote. */
static void round_ready(writer *w)
{
    while (w->round && !w->read_failed) {
        item *it = w->round;
        item *next = it->next;
        w->reads_outstanding = 1; /* held while the item is planned */
        progress pr = process(w, it);
        if (pr == WAITING && !w->read_failed && w->reads_outstanding > 1) {
            (*w->round_waits_total)++;
            read_done(w);
            return;
        }
        w->reads_outstanding = 0;
        if (w->read_failed) break;
        if (pr == WAITING) {
            /* Nothing it needs can be read (a key too long): it cannot be folded. */
            log_warn("writer", "%s/%s of %s cannot be planned: skipped", it->ev.collection,
                     it->ev.rkey, it->ev.did);
            (*w->write_errors_total)++;
            finish_one(it);
        }
        w->round = next;
        w->nround--;
    }
    if (w->read_failed) {
        item *rest = w->round;
        w->round = NULL;
        w->nround = 0;
        fail_all(rest);
        forget(w);
        return;
    }
    recent_flush(w);
    writer_flush(w);
}

void writer_flush(writer *w)
{
    if (w->round || !w->queue) return;
    if (strmap_count(w->fields) > MAX_REMEMBERED) forget(w);
    w->read_failed = 0;
    strmap_clear(w->round_owners);
    w->reads_outstanding = 1; /* held until every read was sent */
    uint64_t now = now_ms();
    if (now - w->schema_checked_ms >= SCHEMA_CHECK_MS) {
        w->schema_checked_ms = now;
        send_read(w, READ_SCHEMA, "", 0, 2, (const char *[]){"EXISTS", w->schema_key});
    }
    /* The round is the first ROUND_MAX queued items: read ahead for each, and cut there. */
    item *last = w->queue;
    size_t n = 1;
    read_ahead(w, last);
    for (; last->next && n < ROUND_MAX; n++) {
        last = last->next;
        read_ahead(w, last);
    }
    w->round = w->queue;
    w->queue = last->next;
    last->next = NULL;
    if (!w->queue) w->queue_tail = NULL;
    w->nround = n;
    w->nqueued -= n;
    if (w->nqueued) (*w->rounds_cut_total)++;
    (*w->rounds_total)++;
    if (w->reads_outstanding > 1) (*w->round_waits_total)++;
    read_done(w);
}

int writer_add(writer *w, const event *ev, writer_done_cb cb, void *ud)
{
    if (!fold_changes_index(ev)) return 1;
    item *it = item_new(w, ev, cb, ud);
    if (!it) return -1;
    if (w->queue_tail)
        w->queue_tail->next = it;
    else
        w->queue = it;
    w->queue_tail = it;
    w->nqueued++;
    return 0;
}

size_t writer_backlog(const writer *w)
{
    return w->nqueued + w->nround;
}

static void drop_unsent(writer *w)
{
    w->epoch++;
    item *round = w->round, *queue = w->queue;
    w->round = w->queue = w->queue_tail = NULL;
    w->nround = w->nqueued = 0;
    w->reads_outstanding = 0;
    fail_all(round);
    fail_all(queue);
}

void writer_forget_did(writer *w, const char *did)
{
    did_memo d;
    if (did_get(w, did, &d) < 0) {
        forget(w);
        return;
    }
    d.gen++;     /* what it remembered of D's records is void */
    d.ttl_gen++; /* and of D's zsets, which a reload may empty (Valkey deletes them) */
    d.recs_ttl_ms = d.repos_ttl_ms = 0;
    d.gone_state = d.rev_state = MEMO_UNKNOWN;
    did_put(w, did, &d);
}

void writer_reset(writer *w)
{
    drop_unsent(w);
    forget(w);
    w->refusal[0] = 0;
}

static double gauge_remembered(void *ud)
{
    const writer *w = ud;
    return (double)strmap_count(w->fields);
}

writer *writer_new(cache_client *v, fold *f, const writer_options *opt)
{
    writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->v = v;
    w->f = f;
    w->recent_key = fold_recent_key(f);
    w->recent_index_key = fold_recent_index_key(f);
    buf schema = {0};
    if (buf_printf(&schema, "%sschema", opt->prefix) == 0) w->schema_key = schema.data;
    w->prefix = strdup(opt->prefix);
    w->schema_value = strdup(opt->schema_value);
    w->dids = strmap_new();
    w->fields = strmap_new();
    w->ttls = strmap_new();
    w->listed = strmap_new();
    w->round_owners = strmap_new();
    w->round_recent = strmap_new();
    if (!w->listed || !w->round_owners || !w->round_recent || !w->schema_key || !w->prefix ||
        !w->schema_value || !w->dids || !w->fields || !w->ttls) {
        writer_free(w);
        return NULL;
    }
    snprintf(w->ttl, sizeof w->ttl, "%u", opt->record_ttl);
    w->ttl_refresh_ms = (uint64_t)opt->record_ttl * 1000u / 8u;
    w->indexed_total =
        metrics_counter("appview_records_indexed_total", "Record events that changed the index");
    w->stale_total = metrics_counter("appview_records_stale_total",
                                     "Record events older than what the index holds (replays)");
    w->write_errors_total =
        metrics_counter("appview_write_errors_total", "Index writes Valkey refused or lost");
    w->reads_total = metrics_counter("appview_ingest_reads_total",
                                     "Index reads the ingester made to plan events (state it "
                                     "did not remember)");
    w->rounds_total = metrics_counter("appview_ingest_rounds_total",
                                      "Writer rounds (the first 4,096 events queued, or all)");
    w->rounds_cut_total = metrics_counter(
        "appview_ingest_rounds_cut_total",
        "Writer rounds that took the most events a round takes and left more queued: the "
        "ingester was behind the stream");
    w->round_waits_total = metrics_counter(
        "appview_ingest_round_waits_total",
        "Round trips a writer round waited on (its read-ahead, reads a plan asked for)");
    w->forgets_total = metrics_counter(
        "appview_ingest_forgets_total",
        "Times the ingester forgot what it knew of the index (reconnect, flush, size bound)");
    metrics_gauge("appview_ingest_remembered_records",
                  "Records whose state the ingester remembers (no read needed to fold them)",
                  gauge_remembered, w);
    return w;
}

void writer_free(writer *w)
{
    if (!w) return;
    drop_unsent(w);
    strmap_free(w->dids);
    strmap_free(w->fields);
    strmap_free(w->ttls);
    strmap_free(w->listed);
    strmap_free(w->round_owners);
    strmap_free(w->round_recent);
    /* Every item is done by now: the cache client, freed first, answered its commands. */
    if (w->slab) slab_retire(w, w->slab);
    while (w->nspare)
        free(w->spare[--w->nspare]);
    free(w->prefix);
    free(w->schema_key);
    free(w->schema_value);
    buf_free(&w->scratch);
    free(w);
}
