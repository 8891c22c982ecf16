#include "appview/writer.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/strmap.h"

/* Past this many remembered records (about 250 bytes each with their place, so some 60 MB)
 * the writer forgets everything and reads again what it needs. */
#define MAX_REMEMBERED 250000
/* How often a round also checks that the prefix was not flushed behind the writer's back. */
#define SCHEMA_CHECK_MS 1000
/* Keys and fields: a DID is at most 2 KiB (atproto), a repository or a tag far less. */
#define KEY_MAX 2600
/* A TID is 13 characters. */
#define REV_MAX 16
/* "repository key" of a record: the lexicons bound both far below this. */
#define PLACE_MAX 512

/* A DID as the writer knows it. gen changes when the DID is purged: what was remembered of
 * its records before then is void. ttl_gen changes with gen, and whenever a script ran for
 * a record of the DID whose place the writer did not know: a script may empty an index zset,
 * which Valkey then deletes, and the next write creates it again without a TTL. Stored by
 * value in a strmap, so it is copied in and out (strmap values are not aligned). */
typedef struct {
    unsigned gen, ttl_gen;
    unsigned repos_gen; /* changes whenever P{D}/repos may have gone: what it named is void */
    int gone_state, rev_state;
    uint64_t gone;                      /* time_us of its purge mark; 0: none */
    char max_rev[REV_MAX];              /* the recs field ~rev: the newest rev written for it */
    uint64_t recs_ttl_ms, repos_ttl_ms; /* last TTL refresh of recs and repos in this ttl_gen */
} did_memo;

enum { MEMO_UNKNOWN, MEMO_READING, MEMO_KNOWN };

/* When the writer last refreshed a repository zset's TTL, and in which ttl_gen of its DID. */
typedef struct {
    unsigned gen;
    uint64_t ms;
} ttl_memo;

/* A record as the writer knows it, in the DID's generation gen. Stored with place cut to its
 * length: an update that keeps the record where it is rewrites the memo in place. */
typedef enum { REC_UNKNOWN, REC_READING, REC_ABSENT, REC_TOMBSTONE, REC_LIVE } rec_state;

typedef struct {
    unsigned gen;
    char state; /* rec_state */
    char kind;  /* REC_LIVE: 'm', 't' or 's' */
    char rev[REV_MAX];
    char place[PLACE_MAX]; /* REC_LIVE: "R key", where its index entries are */
} field_memo;

/* Who owns a manifest digest's index entry ("D m/R/G" in round_owners): the rkey in the recs
 * field m/R/G, "" when there is none. */
typedef struct {
    unsigned ttl_gen;
    int state; /* MEMO_READING or MEMO_KNOWN */
    char rkey[PLACE_MAX];
} owner_memo;

/* Items are cut from slabs: an event's copy is over a kilobyte, and every malloc of that size
 * makes glibc consolidate its free small chunks first. A slab is freed with its last item once
 * the writer has moved on to a new one; the current one is reused from the start when empty. */
#define SLAB_BYTES (256 * 1024)

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
    int outstanding;
    int failed;
    int indexed; /* written by the plain path: counts as indexed once acknowledged */
    event ev;    /* its strings point into text; ev.record is held only for the scripts */
    char text[];
} item;

typedef enum {
    READ_FIELD,
    READ_GONE,
    READ_MAX_REV,
    READ_RECS_EXIST,
    READ_SCHEMA,
    READ_OWNER
} read_kind;

typedef struct {
    writer *w;
    unsigned epoch;
    read_kind kind;
    size_t keylen;
    char key[]; /* memo key: the field's, or the DID */
} read_req;

struct writer {
    valkey *v;
    fold *f;
    char *prefix, *schema_key, *schema_value;
    const char *recent_key; /* the fold's */
    char ttl[16];
    uint64_t ttl_refresh_ms;
    strmap *dids, *fields, *ttls;
    strmap *listed;       /* "D R" -> the repos_gen of D in which the writer named R in repos */
    strmap *round_owners; /* who owns a manifest digest's entry, read for the current round */
    strmap *round_recent; /* P recent entries held back: member -> recent_entry */
    int recent_trim;      /* a put of the round asked for a trim of P recent */
    slab *slab;           /* where new items are cut from */
    item *queue, *queue_tail;
    size_t nqueued;
    item *round; /* waiting for its reads */
    size_t nround;
    int reads_outstanding, read_failed;
    unsigned epoch; /* replies to reads of an earlier epoch are ignored */
    int scripts_only;
    uint64_t schema_checked_ms;
    buf scratch; /* a record's header and JSON, as sent */
    uint64_t *indexed_total, *stale_total, *write_errors_total, *scripted_total, *forgets_total;
};

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* Concatenates parts (NULL-terminated) into out: the length, or -1 when it does not fit.
 * The per-record path builds a dozen strings, and printf would be a fifth of its time. */
static int join(char *out, size_t cap, const char *const *parts)
{
    size_t n = 0;
    for (; *parts; parts++) {
        size_t k = strlen(*parts);
        if (n + k >= cap) return -1;
        memcpy(out + n, *parts, k);
        n += k;
    }
    out[n] = 0;
    return (int)n;
}
#define JOIN(out, ...) join(out, sizeof out, (const char *const[]){__VA_ARGS__, NULL})

/* "did collection/rkey": what the writer remembers a record under. */
static int field_key(char *out, size_t cap, const event *ev)
{
    return join(out, cap, (const char *const[]){ev->did, " ", ev->collection, "/", ev->rkey, NULL});
}

/* "P{D}/": what every key of the DID starts with. */
static int did_base(char out[KEY_MAX], const writer *w, const char *did)
{
    return join(out, KEY_MAX, (const char *const[]){w->prefix, "{", did, "}/", NULL});
}

/* The zset of a repository's manifests (kind 'm') or tags, under the DID's base. */
static int index_key(char out[KEY_MAX], const char *base, const char *repo, char kind)
{
    const char *zset = kind == RECORD_MANIFEST ? "/manifests" : "/tags";
    return join(out, KEY_MAX, (const char *const[]){base, "repo/", repo, zset, NULL});
}

/* The recs field that maps an index entry to its record: "m/R/G" (the manifest's rkey) or
 * "t/R/T" (the digest the tag points at). */
static int map_field(char out[KEY_MAX], char kind, const char *repo, const char *key)
{
    const char k[2] = {kind, 0};
    return join(out, KEY_MAX, (const char *const[]){k, "/", repo, "/", key, NULL});
}

/* A manifest's member of P recent: "D R G". */
static int recent_member(char out[KEY_MAX], const char *did, const char *repo, const char *digest)
{
    return join(out, KEY_MAX, (const char *const[]){did, " ", repo, " ", digest, NULL});
}

/* What the writer remembers of one DID's index under: "D R" (a repository named in repos) or
 * "D m/R/G" (who owns a digest's entry). */
static int did_memo_key(char out[KEY_MAX], const char *did, const char *what)
{
    return join(out, KEY_MAX, (const char *const[]){did, " ", what, NULL});
}

/* Where a create or update puts its record: "R key" ("" for a delete). 0, or -1 when it does
 * not fit. */
static int place_of(const event *ev, char out[PLACE_MAX])
{
    out[0] = 0;
    if (ev->is_delete) return 0;
    return join(out, PLACE_MAX, (const char *const[]){ev->repository, " ", ev->key, NULL}) < 0 ? -1
                                                                                               : 0;
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

/* The DID's memo, created (generation 1, purge mark unknown) when absent. 0, or -1. */
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

/* Remembers a record in state st, at place (placelen bytes; REC_LIVE only). What does not
 * fit is not remembered: the record is forgotten, and read again when needed. */
static void field_set(writer *w, const char *key, size_t keylen, unsigned gen, rec_state st,
                      const char *rev, size_t revlen, char kind, const char *place, size_t placelen)
{
    field_memo fm = {.gen = gen, .state = (char)st, .kind = kind};
    if (revlen >= sizeof fm.rev || placelen >= sizeof fm.place) {
        strmap_del(w->fields, key, keylen);
        return;
    }
    memcpy(fm.rev, rev, revlen);
    memcpy(fm.place, place, placelen);
    memo_put(w, w->fields, key, keylen, &fm, offsetof(field_memo, place) + placelen + 1);
}

/* The record's memo; state REC_UNKNOWN when there is none for the DID's generation gen. */
static void field_get(writer *w, const char *key, size_t keylen, unsigned gen, field_memo *fm)
{
    size_t n;
    const void *v = strmap_get(w->fields, key, keylen, &n);
    if (v && n > offsetof(field_memo, place) && n <= sizeof *fm) {
        memcpy(fm, v, n);
        if (fm->gen == gen) return;
    }
    fm->state = REC_UNKNOWN;
}

/* Whether the event removes a live record's index entries: it deletes the record, or puts it
 * somewhere else (place, from place_of). */
static int leaves(const event *ev, const field_memo *fm, const char *place)
{
    return fm->state == REC_LIVE && (ev->is_delete || strcmp(fm->place, place) != 0);
}

/* A live record's repository (copied into repo) and key (returned, pointing into fm), or
 * NULL when it has no index entries to remove (not a manifest or tag). */
static const char *split_place(const field_memo *fm, char repo[PLACE_MAX])
{
    const char *sp = strchr(fm->place, ' ');
    if (!sp || (fm->kind != RECORD_MANIFEST && fm->kind != RECORD_TAG)) return NULL;
    memcpy(repo, fm->place, (size_t)(sp - fm->place));
    repo[sp - fm->place] = 0;
    return sp + 1;
}

/* A script ran for the DID: it may have emptied, and so deleted, a repository zset, or (a
 * purge) repos, which a later write creates again. It never deletes recs (a delete leaves a
 * tombstone). */
static void forget_index_ttls(did_memo *d)
{
    d->ttl_gen++;
    d->repos_ttl_ms = 0;
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

/* A create whose rev is newer than any the firehose brought for its DID (the recs field ~rev,
 * which only the ingester writes: plain writes and apply.lua keep it): its commit was never
 * folded, and its record did not exist before it, so the record's state needs no read. The
 * rev, not the time of arrival, decides: a stream may deliver an old commit again, later. */
static int is_new(const event *ev, const did_memo *d)
{
    return ev->is_create && d->rev_state == MEMO_KNOWN && strcmp(ev->rev, d->max_rev) > 0;
}

/* Whether a plain write of rev moves the DID's ~rev forward, and so writes it too. Plain
 * writes are only planned while ~rev is known: a ~rev left too old would let an old commit
 * delivered again pass for a new one. */
static int raises_max_rev(const did_memo *d, const char *rev)
{
    return d->rev_state == MEMO_KNOWN && strcmp(rev, d->max_rev) > 0;
}

/* Remembers that rev was written for the DID: a plain write wrote ~rev if it raised it, and
 * apply.lua raises it for every firehose event it sees, applied or not. (Not for an event of
 * a purged DID: there is no recs hash left to hold it, and the purge mark turns such events
 * away anyway.) */
static void note_rev(did_memo *d, const char *rev)
{
    if (!raises_max_rev(d, rev)) return;
    if (strlen(rev) < REV_MAX)
        snprintf(d->max_rev, sizeof d->max_rev, "%s", rev);
    else
        d->rev_state = MEMO_UNKNOWN; /* not a TID: read ~rev again */
}

/* ---- what the current round read for unindexing ---- */

/* The owner of a manifest digest's entry, in this round: 1 with *out set ("" for none), or 0
 * when not known. */
static int round_owner(writer *w, const char *key, size_t keylen, unsigned ttl_gen, owner_memo *out)
{
    size_t n;
    const void *v = strmap_get(w->round_owners, key, keylen, &n);
    if (!v || n <= offsetof(owner_memo, rkey) || n > sizeof *out) return 0;
    memcpy(out, v, n);
    return out->ttl_gen == ttl_gen && out->state == MEMO_KNOWN;
}

static void owner_set(writer *w, const char *key, size_t keylen, unsigned ttl_gen, int state,
                      const char *rkey, size_t rkeylen)
{
    owner_memo o = {.ttl_gen = ttl_gen, .state = state};
    if (rkeylen >= sizeof o.rkey) {
        strmap_del(w->round_owners, key, keylen);
        return;
    }
    memcpy(o.rkey, rkey, rkeylen);
    memo_put(w, w->round_owners, key, keylen, &o, offsetof(owner_memo, rkey) + rkeylen + 1);
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

static void slab_retire(slab *s)
{
    s->retired = 1;
    if (!s->live) free(s);
}

static void slab_release(slab *s)
{
    if (--s->live) return;
    if (s->retired)
        free(s);
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
        slab *fresh = malloc(sizeof *fresh + cap);
        if (!fresh) return NULL;
        *fresh = (slab){.cap = cap};
        if (s) slab_retire(s);
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
               (ev->record_json ? ev->record_json_len + 1 : 0);
    slab *from;
    item *it = slab_alloc(w, sizeof *it + n, &from);
    if (!it) return NULL;
    *it = (item){.from = from, .w = w, .cb = cb, .ud = ud, .ev = *ev};
    char *at = it->text;
    it->ev.root = NULL;
    it->ev.reason = NULL;
    it->ev.did = copy_str(&at, ev->did);
    it->ev.collection = copy_str(&at, ev->collection);
    it->ev.rkey = copy_str(&at, ev->rkey);
    it->ev.rev = copy_str(&at, ev->rev);
    it->ev.cid = copy_str(&at, ev->cid);
    it->ev.repository = copy_str(&at, ev->repository);
    it->ev.key = copy_str(&at, ev->key);
    it->ev.record_json = copy_into(&at, ev->record_json, ev->record_json_len);
    /* The scripts need the parsed record for hold stats, and to serialize a record whose own
     * bytes could not be kept; the message it came from is gone by then. */
    int keep_record = ev->record && (ev->record_kind == RECORD_HOLD_STATS || !ev->record_json);
    it->ev.record = keep_record ? json_incref(ev->record) : NULL;
    return it;
}

static void item_free(item *it)
{
    json_decref(it->ev.record);
    slab_release(it->from);
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

static void note_reply(item *it, const redisReply *r)
{
    if (!r) {
        it->failed = 1; /* the connection was lost: the event is folded again later */
    } else if (r->type == REDIS_REPLY_ERROR) {
        /* Not retried: the same write would be refused again and stall the stream. */
        (*it->w->write_errors_total)++;
        it->indexed = 0;
        log_warn("writer", "write refused for %s: %s", it->ev.did, r->str);
    }
}

static void on_write(redisReply *r, void *ud)
{
    item *it = ud;
    note_reply(it, r);
    finish_one(it);
}

static void write_cmd(item *it, int argc, const char **argv, const size_t *lens)
{
    if (valkey_command(it->w->v, on_write, it, argc, argv, lens) == 0)
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
 * the replay finds the record already written (stale, same rev) and adds the entry again.
 * Within the round, an entry held back is sent or dropped before anything else may touch its
 * member: a ZREM of it, a script for its record or DID. */

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

static void recent_hold(writer *w, item *it, const char *member, const char *score)
{
    size_t mlen = strlen(member);
    const void *old = strmap_get(w->round_recent, member, mlen, NULL);
    if (old) finish_one(entry_of(old).it); /* the member's newer score replaces it */
    recent_entry e = {.it = it};
    snprintf(e.score, sizeof e.score, "%s", score);
    if (strmap_put(w->round_recent, member, mlen, &e, sizeof e) < 0) {
        it->failed = 1;
        return;
    }
    it->outstanding++;
}

/* The entry held back for member, sent now (send) or dropped (its member is being removed). */
static void recent_release(writer *w, const char *member, int send)
{
    size_t mlen = strlen(member);
    const void *v = strmap_get(w->round_recent, member, mlen, NULL);
    if (!v) return;
    recent_entry e = entry_of(v);
    strmap_del(w->round_recent, member, mlen);
    if (send) write_cmd(e.it, 4, (const char *[]){"ZADD", w->recent_key, e.score, member}, NULL);
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

typedef struct {
    size_t n;
    item *items[];
} recent_batch;

static void on_recent_batch(redisReply *r, void *ud)
{
    recent_batch *b = ud;
    for (size_t i = 0; i < b->n; i++) {
        note_reply(b->items[i], r);
        finish_one(b->items[i]);
    }
    free(b);
}

typedef struct {
    recent_batch *batch;
    const char **argv;
    size_t *lens;
    int argc;
} recent_args;

/* Adds an entry's score and member to the ZADD; the map is cleared once it is sent. */
static int collect_entry(const char *member, size_t mlen, const void *val, size_t vlen, void *ud)
{
    recent_args *a = ud;
    /* The score as the map holds it: it must outlive this call, until the ZADD is sent. */
    const char *score = (const char *)val + offsetof(recent_entry, score);
    a->batch->items[a->batch->n++] = entry_of(val).it;
    a->argv[a->argc] = score;
    a->lens[a->argc++] = strlen(score);
    a->argv[a->argc] = member;
    a->lens[a->argc++] = mlen;
    return 0;
}

/* A failed trim is caught up by the next. */
static void on_trimmed(redisReply *r, void *ud) {}

/* Sends every entry held back with one ZADD, then the trim a put of the round asked for. */
static void recent_flush(writer *w)
{
    size_t n = strmap_count(w->round_recent);
    if (n) {
        recent_args a = {.batch = malloc(sizeof *a.batch + n * sizeof(item *)),
                         .argv = malloc((2 * n + 2) * sizeof *a.argv),
                         .lens = malloc((2 * n + 2) * sizeof *a.lens),
                         .argc = 2};
        if (a.batch && a.argv && a.lens) {
            a.batch->n = 0;
            a.argv[0] = "ZADD";
            a.lens[0] = 4;
            a.argv[1] = w->recent_key;
            a.lens[1] = strlen(w->recent_key);
            strmap_sweep(w->round_recent, collect_entry, &a);
            if (valkey_command(w->v, on_recent_batch, a.batch, a.argc, a.argv, a.lens) < 0) {
                fail_items(a.batch->items, a.batch->n);
                free(a.batch);
            }
            strmap_clear(w->round_recent);
        } else {
            free(a.batch);
            strmap_sweep(w->round_recent, fail_entry, NULL);
        }
        free(a.argv);
        free(a.lens);
    }
    if (w->recent_trim) {
        w->recent_trim = 0;
        char stop[24];
        snprintf(stop, sizeof stop, "%d", -FOLD_RECENT_KEEP - 1);
        valkey_command(w->v, on_trimmed, NULL, 4,
                       (const char *[]){"ZREMRANGEBYRANK", w->recent_key, "0", stop}, NULL);
    }
}

static void on_scripted(void *ud, int ok)
{
    item *it = ud;
    if (!ok) it->failed = 1;
    finish_one(it);
}

/* Before a script: the P recent entries held back that it may touch go first (or, for a purge,
 * not at all), so that it finds them where the stream order puts them. Those are the entries of
 * where the record is (fm, NULL when not known) and of where the event puts it. */
static void recent_before_script(writer *w, const event *ev, const field_memo *fm)
{
    if (!strmap_count(w->round_recent)) return;
    if (ev->kind == EVENT_ACCOUNT) { /* only a purge comes here (fold_changes_index) */
        recent_drop_did(w, ev->did);
        return;
    }
    if (!fm) {
        recent_flush(w); /* where the record is cannot be known: everything goes first */
        return;
    }
    char member[KEY_MAX], repo[PLACE_MAX];
    if (ev->record_kind == RECORD_MANIFEST && !ev->is_delete &&
        recent_member(member, ev->did, ev->repository, ev->key) >= 0)
        recent_release(w, member, 1);
    const char *oldkey =
        fm->state == REC_LIVE && fm->kind == RECORD_MANIFEST ? split_place(fm, repo) : NULL;
    if (oldkey && recent_member(member, ev->did, repo, oldkey) >= 0) recent_release(w, member, 1);
}

/* What the round read of who owns a manifest digest's entry (of a tag: nothing): void once a
 * script may have changed it. */
static void forget_owner(writer *w, const char *did, const char *repo, char kind, const char *key)
{
    char k[KEY_MAX], map[KEY_MAX];
    if (kind == RECORD_MANIFEST && map_field(map, kind, repo, key) >= 0 &&
        did_memo_key(k, did, map) >= 0)
        strmap_del(w->round_owners, k, strlen(k));
}

/* What a script for a record event may have changed, forgotten. It writes the record's new
 * place with TTLs, and takes the record out of its old place: that zset may be emptied, and so
 * deleted, and the next plain write must give it a TTL again. When the writer does not know
 * where the record was, that is any zset of the DID. */
static void forget_script_changes(writer *w, const event *ev, did_memo *d, const field_memo *fm)
{
    if (fm->state == REC_UNKNOWN || fm->state == REC_READING) {
        forget_index_ttls(d);
        return;
    }
    char repo[PLACE_MAX], base[KEY_MAX], zset[KEY_MAX];
    const char *oldkey = fm->state == REC_LIVE ? split_place(fm, repo) : NULL;
    if (oldkey) {
        if (did_base(base, w, ev->did) < 0 || index_key(zset, base, repo, fm->kind) < 0) {
            forget_index_ttls(d);
            return;
        }
        strmap_del(w->ttls, zset, strlen(zset));
        forget_owner(w, ev->did, repo, fm->kind, oldkey);
    }
    if (!ev->is_delete && ev->repository && ev->key)
        forget_owner(w, ev->did, ev->repository, (char)ev->record_kind, ev->key);
}

static void send_to_fold(writer *w, item *it)
{
    switch (fold_apply(w->f, &it->ev, on_scripted, it)) {
    case 0:
        it->outstanding++;
        break;
    case 1:
        break;
    default:
        it->failed = 1;
    }
}

/* The event goes through fold_apply: the scripts decide, atomically, with what Valkey holds.
 * What the writer knew of the record is void then; the scripts may have emptied (so deleted)
 * an index zset, and raised ~rev (apply.lua raises it for every firehose event it sees); a
 * purge removed every key of the DID, ~rev too, and left its mark. An identity change is no
 * script (fold.c sends plain commands) and touches nothing the writer knows. */
static void script(writer *w, item *it)
{
    const event *ev = &it->ev;
    if (ev->kind == EVENT_IDENTITY) {
        send_to_fold(w, it);
        return;
    }
    (*w->scripted_total)++;
    char fk[KEY_MAX];
    int fklen = ev->kind == EVENT_COMMIT ? field_key(fk, sizeof fk, ev) : -1;
    did_memo d;
    field_memo fm = {.state = REC_UNKNOWN};
    int noted = (ev->kind != EVENT_COMMIT || fklen >= 0) && did_get(w, ev->did, &d) == 0;
    if (noted && fklen >= 0) field_get(w, fk, (size_t)fklen, d.gen, &fm);
    recent_before_script(w, ev, noted ? &fm : NULL);
    send_to_fold(w, it);
    if (fklen >= 0) strmap_del(w->fields, fk, (size_t)fklen);
    if (!noted) {
        forget(w); /* what the script changes cannot be noted */
        return;
    }
    if (ev->kind == EVENT_COMMIT) {
        forget_script_changes(w, ev, &d, &fm);
        note_rev(&d, ev->rev);
    } else { /* a purge */
        forget_index_ttls(&d);
        d.gen++;
        d.recs_ttl_ms = 0;
        d.rev_state = MEMO_KNOWN;
        d.max_rev[0] = 0;
        if (d.gone_state == MEMO_KNOWN && ev->time_us > d.gone) d.gone = ev->time_us;
    }
    did_put(w, ev->did, &d);
}

/* The put wrote a manifest's mapping (field map): whatever the round read, the digest's entry
 * is this record's now, and a delete later in the round needs no read to know it. */
static void note_owner(writer *w, const event *ev, const did_memo *d, const char *map)
{
    char key[KEY_MAX];
    if (ev->record_kind == RECORD_MANIFEST && did_memo_key(key, ev->did, map) >= 0)
        owner_set(w, key, strlen(key), d->ttl_gen, MEMO_KNOWN, ev->rkey, strlen(ev->rkey));
}

/* Removes a live record's index entries with plain commands, as apply.lua's unindex does. A
 * manifest's entry is removed only if the round read who owns the digest's entry and it is
 * this record (another record's is left alone). 0 when done, -1 when the writer cannot be
 * sure: nothing was sent, and the script decides. The repository stays in repos. */
static int unindex_plain(writer *w, item *it, const char *base, did_memo *d, const field_memo *fm)
{
    const event *ev = &it->ev;
    char repo[PLACE_MAX];
    const char *oldkey = split_place(fm, repo);
    if (!oldkey) return -1;
    int manifest = fm->kind == RECORD_MANIFEST;
    char map[KEY_MAX], ownerkey[KEY_MAX], zset[KEY_MAX], recs[KEY_MAX], member[KEY_MAX];
    if (map_field(map, fm->kind, repo, oldkey) < 0 || did_memo_key(ownerkey, ev->did, map) < 0 ||
        JOIN(recs, base, "recs") < 0 || index_key(zset, base, repo, fm->kind) < 0 ||
        recent_member(member, ev->did, repo, oldkey) < 0)
        return -1;
    if (manifest) {
        owner_memo o;
        if (!round_owner(w, ownerkey, strlen(ownerkey), d->ttl_gen, &o)) return -1;
        if (strcmp(o.rkey, ev->rkey) != 0) return 0;
    }
    write_cmd(it, 3, (const char *[]){"HDEL", recs, map}, NULL);
    write_cmd(it, 3, (const char *[]){"ZREM", zset, oldkey}, NULL);
    if (manifest) {
        recent_release(w, member, 0);
        write_cmd(it, 3, (const char *[]){"ZREM", w->recent_key, member}, NULL);
        owner_set(w, ownerkey, strlen(ownerkey), d->ttl_gen, MEMO_KNOWN, "", 0);
    }
    /* The zset may be emptied, and so deleted: the next write gives it its TTL again. */
    strmap_del(w->ttls, zset, strlen(zset));
    return 0;
}

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

/* A record created, or updated in place: its index entries first, then the record (a crash
 * in between leaves entries the replay writes again), as cache/apply.lua would. */
static void put_plain(writer *w, item *it, const char *base, did_memo *d, uint64_t now)
{
    const event *ev = &it->ev;
    int manifest = ev->record_kind == RECORD_MANIFEST;
    char zset[KEY_MAX], repos[KEY_MAX], recs[KEY_MAX], field[KEY_MAX], map[KEY_MAX],
        member[KEY_MAX], at[24], kind[2] = {(char)ev->record_kind, 0};
    snprintf(at, sizeof at, "%" PRId64, ev->created_ms);
    const char *digest = ev->digest[0] ? ev->digest : "-";
    const char *cid = ev->cid && *ev->cid ? ev->cid : "-";
    buf *value = &w->scratch;
    buf_reset(value);
    if (index_key(zset, base, ev->repository, (char)ev->record_kind) < 0 ||
        JOIN(repos, base, "repos") < 0 || JOIN(recs, base, "recs") < 0 ||
        JOIN(field, ev->collection, "/", ev->rkey) < 0 ||
        map_field(map, (char)ev->record_kind, ev->repository, ev->key) < 0 ||
        (manifest && recent_member(member, ev->did, ev->repository, ev->key) < 0) ||
        buf_reserve(value, KEY_MAX + ev->record_json_len) < 0) {
        it->failed = 1;
        return;
    }
    int head = join(value->data, value->cap,
                    (const char *const[]){ev->rev, " ", kind, " ", ev->repository, " ", ev->key,
                                          " ", digest, " ", at, " ", cid, "\n", NULL});
    if (head < 0) {
        it->failed = 1;
        return;
    }
    value->len = (size_t)head;
    buf_append(value, ev->record_json, ev->record_json_len); /* room reserved above */
    write_cmd(it, 4, (const char *[]){"ZADD", zset, at, ev->key}, NULL);
    /* Before the TTL refresh below: that tells whether repos may have gone. */
    if (!named_in_repos(w, d, ev->did, ev->repository, now))
        write_cmd(it, 5, (const char *[]){"ZADD", repos, "NX", at, ev->repository}, NULL);
    if (manifest) {
        recent_hold(w, it, member, at);
        if (fold_recent_trim_due(w->f)) w->recent_trim = 1;
    }
    if (zset_ttl_due(w, zset, d->ttl_gen, now)) expire(it, zset);
    if (ttl_due(w, &d->repos_ttl_ms, now)) expire(it, repos);
    const char *mapped = manifest ? ev->rkey : ev->digest;
    write_cmd(it, raises_max_rev(d, ev->rev) ? 8 : 6,
              (const char *[]){"HSET", recs, field, value->data, map, mapped, "~rev", ev->rev},
              (const size_t[]){4, strlen(recs), strlen(field), value->len, strlen(map),
                               strlen(mapped), 4, strlen(ev->rev)});
    if (ttl_due(w, &d->recs_ttl_ms, now)) expire(it, recs);
    it->indexed = 1;
    note_owner(w, ev, d, map);
}

/* A delete of a record that is absent or already a tombstone: nothing to unindex. */
static void tombstone_plain(item *it, const char *base, did_memo *d, uint64_t now)
{
    char recs[KEY_MAX], field[KEY_MAX], value[64];
    if (JOIN(recs, base, "recs") < 0 || JOIN(field, it->ev.collection, "/", it->ev.rkey) < 0 ||
        JOIN(value, it->ev.rev, " - - - - - -") < 0) {
        it->failed = 1;
        return;
    }
    write_cmd(it, raises_max_rev(d, it->ev.rev) ? 6 : 4,
              (const char *[]){"HSET", recs, field, value, "~rev", it->ev.rev}, NULL);
    if (ttl_due(it->w, &d->recs_ttl_ms, now)) expire(it, recs);
    it->indexed = 1;
}

/* A record event the index already has (or a newer one): nothing to write, but after a restart
 * the crash may have come between the record's write and its TTL, so that one is refreshed,
 * or, for the very record the index holds (same rev), before its P recent entry. */
static void stale(writer *w, item *it, const char *base, did_memo *d, const field_memo *fm,
                  uint64_t now)
{
    const event *ev = &it->ev;
    (*w->stale_total)++;
    char recs[KEY_MAX], member[KEY_MAX], at[24];
    if (JOIN(recs, base, "recs") >= 0 && ttl_due(w, &d->recs_ttl_ms, now)) expire(it, recs);
    if (ev->record_kind == RECORD_MANIFEST && !ev->is_delete && fm->state == REC_LIVE &&
        strcmp(fm->rev, ev->rev) == 0 &&
        recent_member(member, ev->did, ev->repository, ev->key) >= 0) {
        snprintf(at, sizeof at, "%" PRId64, ev->created_ms);
        recent_hold(w, it, member, at);
    }
}

/* PLAN_MOVE: a live record deleted or moved; its index entries go first. */
typedef enum { PLAN_SCRIPT, PLAN_STALE, PLAN_TOMBSTONE, PLAN_PUT, PLAN_MOVE } plan;

/* What to do with a record event, given what the writer knows: cache/apply.lua's rules. place
 * is where the event puts the record ("" for a delete). */
static plan decide(const event *ev, const field_memo *fm, const did_memo *d, const char *place)
{
    rec_state state = fm->state == REC_UNKNOWN && is_new(ev, d) ? REC_ABSENT : fm->state;
    if (state == REC_UNKNOWN || state == REC_READING) return PLAN_SCRIPT;
    if (state == REC_ABSENT) {
        if (d->gone_state != MEMO_KNOWN) return PLAN_SCRIPT;
        if (ev->time_us && d->gone && ev->time_us <= d->gone) return PLAN_STALE; /* purged */
    } else if (strcmp(fm->rev, ev->rev) >= 0) {
        return PLAN_STALE;
    }
    if (d->rev_state != MEMO_KNOWN) return PLAN_SCRIPT;
    if (leaves(ev, fm, place)) return PLAN_MOVE;
    return ev->is_delete ? PLAN_TOMBSTONE : PLAN_PUT;
}

static void process_record(writer *w, item *it)
{
    const event *ev = &it->ev;
    did_memo d;
    char fk[KEY_MAX], base[KEY_MAX];
    int fklen = field_key(fk, sizeof fk, ev);
    if (fklen < 0 || did_get(w, ev->did, &d) < 0 || did_base(base, w, ev->did) < 0) {
        script(w, it);
        return;
    }
    size_t fkn = (size_t)fklen;
    field_memo fm;
    field_get(w, fk, fkn, d.gen, &fm);
    uint64_t now = now_ms();
    char place[PLACE_MAX];
    plan p = place_of(ev, place) < 0 ? PLAN_SCRIPT : decide(ev, &fm, &d, place);
    if (p == PLAN_MOVE)
        p = unindex_plain(w, it, base, &d, &fm) < 0 ? PLAN_SCRIPT
            : ev->is_delete                         ? PLAN_TOMBSTONE
                                                    : PLAN_PUT;
    switch (p) {
    case PLAN_STALE:
        stale(w, it, base, &d, &fm, now);
        break;
    case PLAN_TOMBSTONE:
        tombstone_plain(it, base, &d, now);
        note_rev(&d, ev->rev);
        field_set(w, fk, fkn, d.gen, REC_TOMBSTONE, ev->rev, strlen(ev->rev), '-', "", 0);
        break;
    case PLAN_PUT:
        put_plain(w, it, base, &d, now);
        note_rev(&d, ev->rev);
        field_set(w, fk, fkn, d.gen, REC_LIVE, ev->rev, strlen(ev->rev), (char)ev->record_kind,
                  place, strlen(place));
        break;
    default:
        /* PLAN_SCRIPT (PLAN_MOVE was settled above). The script notes in the DID's memo what
         * it changes. */
        script(w, it);
        return;
    }
    did_put(w, ev->did, &d);
}

static void process(writer *w, item *it)
{
    const event *ev = &it->ev;
    it->outstanding = 1; /* held until every write below was sent */
    if (!w->scripts_only && ev->kind == EVENT_COMMIT && ev->record_kind != RECORD_HOLD_STATS &&
        (ev->is_delete || ev->record_json)) {
        process_record(w, it);
    } else {
        script(w, it);
    }
    finish_one(it);
}

/* ---- rounds ---- */

static void round_ready(writer *w);

static void read_done(writer *w)
{
    if (--w->reads_outstanding == 0) round_ready(w);
}

static void on_schema_written(redisReply *r, void *ud)
{
    (void)ud;
    if (r && r->type == REDIS_REPLY_ERROR) log_warn("writer", "schema mark refused: %s", r->str);
}

int writer_mark_schema(writer *w)
{
    return valkey_command(w->v, on_schema_written, NULL, 3,
                          (const char *[]){"SET", w->schema_key, w->schema_value}, NULL);
}

static void remember_schema(writer *w, const redisReply *r)
{
    if (r->type != REDIS_REPLY_INTEGER || r->integer != 0) return;
    /* Flushed: keys the writer believes have a TTL may be written again without one. */
    log_warn("writer", "%s is gone: the index was flushed; forgetting what was known",
             w->schema_key);
    forget(w);
    if (writer_mark_schema(w) < 0) w->read_failed = 1;
}

static void remember_owner(writer *w, const read_req *q, const redisReply *r)
{
    size_t n;
    const void *v = strmap_get(w->round_owners, q->key, q->keylen, &n);
    owner_memo o;
    if (!v || n <= offsetof(owner_memo, rkey) || n > sizeof o) return;
    memcpy(&o, v, n);
    if (r->type == REDIS_REPLY_NIL || r->type == REDIS_REPLY_STRING)
        owner_set(w, q->key, q->keylen, o.ttl_gen, MEMO_KNOWN,
                  r->type == REDIS_REPLY_STRING ? r->str : "",
                  r->type == REDIS_REPLY_STRING ? r->len : 0);
    else
        strmap_del(w->round_owners, q->key, q->keylen);
}

static void remember(writer *w, const read_req *q, const redisReply *r)
{
    switch (q->kind) {
    case READ_SCHEMA:
        remember_schema(w, r);
        return;
    case READ_OWNER:
        remember_owner(w, q, r);
        return;
    default:
        break;
    }
    char did[KEY_MAX];
    const char *sp = q->kind == READ_FIELD ? strchr(q->key, ' ') : NULL;
    size_t didlen = sp ? (size_t)(sp - q->key) : q->keylen;
    if (didlen >= sizeof did) return;
    memcpy(did, q->key, didlen);
    did[didlen] = 0;
    did_memo d;
    if (did_get(w, did, &d) < 0) return;
    if (q->kind == READ_MAX_REV) {
        /* No ~rev: known to be "" only if the DID has no records at all (READ_RECS_EXIST, next). */
        d.rev_state = r->type == REDIS_REPLY_NIL ? MEMO_READING : MEMO_UNKNOWN;
        d.max_rev[0] = 0;
        if (r->type == REDIS_REPLY_STRING && r->len < REV_MAX) {
            snprintf(d.max_rev, sizeof d.max_rev, "%s", r->str);
            d.rev_state = MEMO_KNOWN;
        }
        did_put(w, did, &d);
        return;
    }
    if (q->kind == READ_RECS_EXIST) {
        /* Records without ~rev: written before there was one, or only by the loader. Their
         * history is unknown, so nothing counts as new and the scripts fold the DID's events
         * until one of them has set ~rev, read again in the next round. */
        if (d.rev_state == MEMO_READING)
            d.rev_state =
                r->type == REDIS_REPLY_INTEGER && r->integer == 0 ? MEMO_KNOWN : MEMO_UNKNOWN;
        did_put(w, did, &d);
        return;
    }
    if (q->kind == READ_GONE) {
        if (r->type == REDIS_REPLY_NIL || r->type == REDIS_REPLY_STRING) {
            d.gone = r->type == REDIS_REPLY_STRING ? strtoull(r->str, NULL, 10) : 0;
            d.gone_state = MEMO_KNOWN;
        } else {
            d.gone_state = MEMO_UNKNOWN;
        }
        did_put(w, did, &d);
        return;
    }
    if (r->type == REDIS_REPLY_NIL) {
        field_set(w, q->key, q->keylen, d.gen, REC_ABSENT, "", 0, 0, "", 0);
        return;
    }
    /* "rev kind repo key digest at cid\n{json}": the first four words. */
    const char *word[5] = {0};
    size_t nwords = 0, len = r->type == REDIS_REPLY_STRING ? r->len : 0;
    const char *end = len ? memchr(r->str, '\n', len) : NULL;
    if (len && !end) end = r->str + len;
    for (const char *p = len ? r->str : NULL; p && nwords < 5; nwords++) {
        word[nwords] = p;
        p = memchr(p, ' ', (size_t)(end - p));
        if (p) p++;
    }
    if (nwords < 5 || word[1] + 2 != word[2]) {
        strmap_del(w->fields, q->key, q->keylen); /* not the fold's: the script decides */
        return;
    }
    size_t revlen = (size_t)(word[1] - 1 - word[0]);
    if (word[1][0] == '-') {
        field_set(w, q->key, q->keylen, d.gen, REC_TOMBSTONE, word[0], revlen, '-', "", 0);
        return;
    }
    /* "R key", as in the header */
    field_set(w, q->key, q->keylen, d.gen, REC_LIVE, word[0], revlen, word[1][0], word[2],
              (size_t)(word[4] - 1 - word[2]));
}

static void on_read(redisReply *r, void *ud)
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
    if (valkey_command(w->v, on_read, q, argc, argv, NULL) < 0) {
        free(q);
        w->read_failed = 1;
        return;
    }
    w->reads_outstanding++;
}

/* Reads what unindexing a live manifest (in recs) takes, should the event delete or move it:
 * who owns its digest's entry. A tag's takes nothing. Once per round: the round keeps it up to
 * date from there (note_owner, unindex_plain). */
static void request_owner_read(writer *w, const event *ev, const char *recs, const did_memo *d,
                               const field_memo *fm)
{
    if (fm->kind != RECORD_MANIFEST) return;
    char place[PLACE_MAX], repo[PLACE_MAX], key[KEY_MAX], map[KEY_MAX];
    const char *oldkey = split_place(fm, repo);
    if (!oldkey || place_of(ev, place) < 0 || !leaves(ev, fm, place) ||
        map_field(map, fm->kind, repo, oldkey) < 0 || did_memo_key(key, ev->did, map) < 0 ||
        strmap_get(w->round_owners, key, strlen(key), NULL))
        return;
    owner_set(w, key, strlen(key), d->ttl_gen, MEMO_READING, "", 0);
    send_read(w, READ_OWNER, key, strlen(key), 3, (const char *[]){"HGET", recs, map});
}

/* Reads what deciding it needs and the writer does not know: its DID's purge mark and ~rev,
 * the record's stored header, and what unindexing it would take. */
static void request_reads(writer *w, const item *it)
{
    const event *ev = &it->ev;
    if (w->scripts_only || ev->kind != EVENT_COMMIT || ev->record_kind == RECORD_HOLD_STATS) return;
    did_memo d;
    char base[KEY_MAX], key[KEY_MAX], recs[KEY_MAX], fk[KEY_MAX];
    if (did_get(w, ev->did, &d) < 0 || did_base(base, w, ev->did) < 0 ||
        JOIN(recs, base, "recs") < 0)
        return;
    int asked = 0;
    if (d.gone_state == MEMO_UNKNOWN && JOIN(key, base, "gone") >= 0) {
        d.gone_state = MEMO_READING;
        send_read(w, READ_GONE, ev->did, strlen(ev->did), 2, (const char *[]){"GET", key});
        asked = 1;
    }
    if (d.rev_state == MEMO_UNKNOWN) {
        d.rev_state = MEMO_READING;
        send_read(w, READ_MAX_REV, ev->did, strlen(ev->did), 3,
                  (const char *[]){"HGET", recs, "~rev"});
        send_read(w, READ_RECS_EXIST, ev->did, strlen(ev->did), 2,
                  (const char *[]){"EXISTS", recs});
        asked = 1;
    }
    if (asked) did_put(w, ev->did, &d);
    if (is_new(ev, &d)) return;
    int fklen = field_key(fk, sizeof fk, ev);
    if (fklen < 0) return;
    field_memo fm;
    field_get(w, fk, (size_t)fklen, d.gen, &fm);
    if (fm.state == REC_LIVE) request_owner_read(w, ev, recs, &d, &fm);
    /* A delete of a record not known goes to the script, which reads what it needs. */
    if (fm.state != REC_UNKNOWN || ev->is_delete) return;
    field_set(w, fk, (size_t)fklen, d.gen, REC_READING, "", 0, 0, "", 0);
    /* The field is what follows the DID and its space in the memo key. */
    send_read(w, READ_FIELD, fk, (size_t)fklen, 3,
              (const char *[]){"HGET", recs, fk + strlen(ev->did) + 1});
}

static void round_ready(writer *w)
{
    item *round = w->round;
    w->round = NULL;
    w->nround = 0;
    if (w->read_failed) {
        fail_all(round);
        forget(w);
        return;
    }
    for (item *it = round, *next; it; it = next) {
        next = it->next;
        process(w, it);
    }
    recent_flush(w);
    writer_flush(w);
}

void writer_flush(writer *w)
{
    if (w->round || !w->queue) return;
    if (strmap_count(w->fields) > MAX_REMEMBERED) forget(w);
    w->round = w->queue;
    w->nround = w->nqueued;
    w->queue = w->queue_tail = NULL;
    w->nqueued = 0;
    w->read_failed = 0;
    strmap_clear(w->round_owners);
    w->reads_outstanding = 1; /* held until every read was sent */
    uint64_t now = now_ms();
    if (now - w->schema_checked_ms >= SCHEMA_CHECK_MS) {
        w->schema_checked_ms = now;
        send_read(w, READ_SCHEMA, "", 0, 2, (const char *[]){"EXISTS", w->schema_key});
    }
    for (const item *it = w->round; it; it = it->next)
        request_reads(w, it);
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

void writer_reset(writer *w)
{
    drop_unsent(w);
    forget(w);
}

static double gauge_remembered(void *ud)
{
    const writer *w = ud;
    return (double)strmap_count(w->fields);
}

writer *writer_new(valkey *v, fold *f, const writer_options *opt)
{
    writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->v = v;
    w->f = f;
    w->scripts_only = opt->scripts_only;
    w->recent_key = fold_recent_key(f);
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
    w->scripted_total =
        metrics_counter("appview_ingest_scripted_total",
                        "Events the ingester handed to a Lua script (hold stats, purges, "
                        "unknown state)");
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
    if (w->slab) slab_retire(w->slab); /* items still in flight free it */
    free(w->prefix);
    free(w->schema_key);
    free(w->schema_value);
    buf_free(&w->scratch);
    free(w);
}
