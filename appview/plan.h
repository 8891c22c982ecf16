/* How one record event changes the index: the fold's rulebook, in one place and pure (data
 * in, decisions out; no I/O, no allocation).
 *
 * plan_record takes a record event (create, update or delete of an io.atcr.* record) and what
 * the index holds of it, and says what to write (cache/SCHEMA.md has the keys):
 *
 * - Revs decide. A record's field in P{D}/recs keeps the rev (a TID) of the commit that wrote
 *   it, or of the delete that left its tombstone; an event whose rev is not newer changes
 *   nothing, so a replayed older event never resurrects a deleted record or overwrites a newer
 *   one. A purged DID (P{D}/gone) ignores firehose commits from before its purge.
 * - A live record is indexed at its place: a manifest under its digest (member "G X" of its
 *   repository's manifests zset, one per record, and "D R G X at" in P recent), a tag under its
 *   name (member T of the tags zset). A record that moves (another repository, key or createdAt)
 *   or is deleted leaves its old place first.
 * - The hint fields m/R/G and t/R/T name the record written last at that place (a tag's also
 *   says what it points at); they are never removed, so a deleted one stays known as deleted.
 *   r/X says what the manifest record X is ("R G", "-" once deleted): a tag resolves by it.
 *   Several tag records may name one tag: the last written is the tag, and only it removes the
 *   tag when it goes.
 * - A firehose event raises the DID's ~rev; a create newer than ~rev needs no read of its
 *   record (it did not exist before that commit).
 *
 * Both writers of the index use it: the ingester (appview/writer.c) sends the ops as plain
 * pipelined commands, the loader (appview/loader.c) as one compare-and-set script call that runs
 * only if what they were planned from is unchanged (cache/guarded.lua). */
#ifndef APPVIEW_PLAN_H
#define APPVIEW_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "appview/event.h"

#define PLAN_REV_MAX 16
/* A repository (255), a digest or tag (128) and a datetime (64) fit, with room to spare. */
#define PLAN_PLACE_MAX 480
#define PLAN_KEY_MAX 2600 /* a DID is at most 2 KiB (atproto) */

typedef enum { STORED_UNKNOWN, STORED_ABSENT, STORED_TOMBSTONE, STORED_LIVE } stored_state;

/* What the index holds under a record's field, from its header. */
typedef struct {
    stored_state state;
    char kind;              /* STORED_LIVE: 'm', 't' or 's' */
    char rev[PLAN_REV_MAX]; /* TOMBSTONE and LIVE */
    char repo[PLAN_PLACE_MAX], key[PLAN_PLACE_MAX], at[PLAN_PLACE_MAX]; /* LIVE 'm' and 't' */
} stored_record;

/* A stored field's value ("rev kind R key target at cid\n{json}") into *out. 0, or -1 when it is
 * not a header the fold writes. */
int plan_parse_stored(const char *value, size_t len, stored_record *out);

/* What plan_record needs to know besides the event. */
typedef struct {
    stored_record cur; /* the record's field; STORED_UNKNOWN when not read */
    /* P{D}/gone: time_us of the DID's purge, 0 when none; gone_known 0 when not read. Needed
     * for firehose events of records the index does not hold. */
    int gone_known;
    uint64_t gone;
    /* P{D}/recs ~rev: NULL when not read, "" when there is none. history_known: the DID has
     * ~rev, or no recs at all (then creates newer than max_rev are new to the index). */
    const char *max_rev;
    int history_known;
    /* The value of t/R/T where a live tag record sits, for a delete or move of it: NULL when
     * not read, "" when absent. */
    const char *tag_owner;
} plan_state;

typedef enum {
    PLAN_NEED,  /* state missing: need says which */
    PLAN_STALE, /* not newer than what the index holds: at most repairs (ops) */
    PLAN_WRITE, /* the event changes the index */
    PLAN_ERROR, /* a key or value would not fit (no partial ops) */
} plan_verdict;

enum { NEED_RECORD = 1, NEED_GONE = 2, NEED_MAX_REV = 4, NEED_TAG_OWNER = 8 };

/* Which key an op writes: the writer batches and skips some of them. */
typedef enum {
    KEY_RECS,   /* P{D}/recs: HSET field value */
    KEY_INDEX,  /* a repository's manifests or tags zset */
    KEY_REPOS,  /* P{D}/repos: ZADD NX, naming the repository */
    KEY_RECENT, /* P recent */
} plan_key;

typedef enum { OP_HSET, OP_ZADD, OP_ZADD_NX, OP_ZREM } plan_op_kind;

/* One write. OP_HSET: field a, value b then b2 (a record's header and JSON). OP_ZADD and
 * OP_ZADD_NX: score a, member b. OP_ZREM: member b. Strings point into the plan or the event. */
typedef struct {
    plan_op_kind kind;
    plan_key target;
    const char *key;
    const char *a, *b, *b2;
    size_t alen, blen, b2len;
} plan_op;

#define PLAN_MAX_OPS 12
#define PLAN_TEXT_MAX (6 * PLAN_KEY_MAX + 4 * PLAN_PLACE_MAX)

typedef struct {
    plan_verdict verdict;
    unsigned need;
    plan_op ops[PLAN_MAX_OPS];
    int nops;
    /* What the record's field holds after the ops (PLAN_WRITE): for the writer's memo. */
    stored_record next;
    size_t text_used;
    char text[PLAN_TEXT_MAX];
} plan;

/* Names the plan's keys: base is "P{D}/" (with the prefix), recent_key "P recent". */
typedef struct {
    const char *base, *recent_key;
} plan_keys;

/* What of st plan_record would need for ev: NEED_* bits, 0 when it can decide. */
unsigned plan_needs(const event *ev, const plan_state *st);

/* Decides what ev (EVENT_COMMIT) does to the index given st, and fills p. A create or update
 * must have its record's JSON in ev->record_json. */
void plan_record(const event *ev, const plan_state *st, const plan_keys *keys, plan *p);

/* The field of ev's record in P{D}/recs, "<collection>/<rkey>"; the hint field of a place,
 * "m/R/G" or "t/R/T"; a tag's value of t/R/T. Each returns the length, or -1 when it does not
 * fit in cap (nothing is truncated). */
int plan_record_field(const event *ev, char *out, size_t cap);
int plan_hint_field(char kind, const char *repo, const char *key, char *out, size_t cap);

#endif
