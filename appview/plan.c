#include "appview/plan.h"

#include <string.h>

#include "atproto/buf.h"
#include "atproto/strjoin.h"

/* ---- building strings in the plan's text, failing on overflow ---- */

typedef struct {
    plan *p;
    int overflow;
} arena;

/* The concatenation of parts (NULL-terminated) as a new string in the plan's text; its length
 * in *len. NULL when it does not fit (and every later call fails too). */
static const char *join(arena *ar, size_t *len, const char *const *parts)
{
    plan *p = ar->p;
    char *out = p->text + p->text_used;
    int n = ar->overflow ? -1 : strjoin(out, sizeof p->text - p->text_used, parts);
    if (len) *len = n < 0 ? 0 : (size_t)n;
    if (n < 0) {
        ar->overflow = 1;
        return NULL;
    }
    p->text_used += (size_t)n + 1;
    return out;
}
#define JOIN(ar, len, ...) join((ar), (len), (const char *const[]){__VA_ARGS__, NULL})

int plan_record_field(const event *ev, char *out, size_t cap)
{
    return strjoin(out, cap, (const char *const[]){ev->collection, "/", ev->rkey, NULL});
}

int plan_hint_field(char kind, const char *repo, const char *key, char *out, size_t cap)
{
    const char k[2] = {kind, 0};
    return strjoin(out, cap, (const char *const[]){k, "/", repo, "/", key, NULL});
}

static void add_op(plan *p, plan_op_kind kind, plan_key target, const char *key, const char *a,
                   size_t alen, const char *b, size_t blen)
{
    if (p->nops == PLAN_MAX_OPS) {
        p->verdict = PLAN_ERROR;
        return;
    }
    p->ops[p->nops++] = (plan_op){
        .kind = kind, .target = target, .key = key, .a = a, .b = b, .alen = alen, .blen = blen};
}

/* ---- what the index holds ---- */

/* The next space-separated word of [*p, end) into out (cap bytes); -1 when absent or too
 * long. */
static int word(const char **p, const char *end, char *out, size_t cap)
{
    const char *s = *p, *sp = s;
    while (sp < end && *sp != ' ' && *sp != '\n')
        sp++;
    size_t n = (size_t)(sp - s);
    if (!n || n >= cap) return -1;
    memcpy(out, s, n);
    out[n] = 0;
    *p = sp < end && *sp == ' ' ? sp + 1 : sp;
    return 0;
}

int plan_parse_stored(const char *value, size_t len, stored_record *out)
{
    const char *nl = memchr(value, '\n', len);
    const char *end = nl ? nl : value + len, *p = value;
    char kind[4], target[PLAN_PLACE_MAX];
    memset(out, 0, sizeof *out);
    if (word(&p, end, out->rev, sizeof out->rev) < 0 || word(&p, end, kind, sizeof kind) < 0 ||
        kind[1])
        return -1;
    if (kind[0] == '-') {
        out->state = STORED_TOMBSTONE;
        return 0;
    }
    if (kind[0] != RECORD_MANIFEST && kind[0] != RECORD_TAG && kind[0] != RECORD_HOLD_STATS)
        return -1;
    /* rev kind R key target at cid */
    if (!nl || word(&p, end, out->repo, sizeof out->repo) < 0 ||
        word(&p, end, out->key, sizeof out->key) < 0 || word(&p, end, target, sizeof target) < 0 ||
        word(&p, end, out->at, sizeof out->at) < 0)
        return -1;
    out->state = STORED_LIVE;
    out->kind = kind[0];
    return 0;
}

/* ---- the rules ---- */

static int is_firehose(const event *ev)
{
    return ev->time_us > 0;
}

/* Whether the live record cur leaves its place: deleted, or put somewhere else (a manifest's
 * place includes its createdAt, which its P recent member carries). */
static int leaves_place(const event *ev, const stored_record *cur)
{
    if (cur->state != STORED_LIVE) return 0;
    if (ev->is_delete || cur->kind != (char)ev->record_kind) return 1;
    if (cur->kind == RECORD_HOLD_STATS) return 0;
    if (strcmp(cur->repo, ev->repository) || strcmp(cur->key, ev->key)) return 1;
    return cur->kind == RECORD_MANIFEST && strcmp(cur->at, ev->at ? ev->at : "-");
}

/* Whether ev keeps the live manifest cur in its repository under its digest: its member of
 * the repository's manifests and its hints m/R/G and r/X stay as they are (a createdAt change
 * moves the member by the ZADD that follows). */
static int manifest_stays(const event *ev, const stored_record *cur)
{
    return cur->state == STORED_LIVE && cur->kind == RECORD_MANIFEST && !ev->is_delete &&
           ev->record_kind == RECORD_MANIFEST && !strcmp(cur->repo, ev->repository) &&
           !strcmp(cur->key, ev->key);
}

static const char *index_key(arena *ar, const plan_keys *k, const char *repo, char kind)
{
    return JOIN(ar, NULL, k->base, "repo/", repo, kind == RECORD_MANIFEST ? "/manifests" : "/tags");
}

/* Removes the live record cur from its place. A tag is removed only when it is the record
 * written last at its place (t/R/T names it): another record may have taken the tag since. */
static void unindex(plan *p, arena *ar, const event *ev, const plan_state *st, const plan_keys *k)
{
    const stored_record *cur = &st->cur;
    if (cur->kind == RECORD_HOLD_STATS) return;
    const char *zset = index_key(ar, k, cur->repo, cur->kind);
    size_t n;
    if (cur->kind == RECORD_MANIFEST) {
        const char *member = JOIN(ar, &n, cur->key, " ", ev->rkey);
        if (!manifest_stays(ev, cur)) add_op(p, OP_ZREM, KEY_INDEX, zset, NULL, 0, member, n);
        member = JOIN(ar, &n, ev->did, " ", cur->repo, " ", cur->key, " ", ev->rkey, " ", cur->at);
        add_op(p, OP_ZREM, KEY_RECENT, k->recent_key, NULL, 0, member, n);
        return;
    }
    size_t rn = strlen(ev->rkey);
    const char *owner = st->tag_owner;
    if (strncmp(owner, ev->rkey, rn) || (owner[rn] != ' ' && owner[rn] != 0)) return;
    const char *member = JOIN(ar, &n, cur->key); /* cur is the caller's: copied */
    add_op(p, OP_ZREM, KEY_INDEX, zset, NULL, 0, member, n);
}

/* HSET recs <field> <value> [<hint> <its value>] [~rev <rev>]: the record (or its tombstone)
 * last, after its index entries, so that a crash in between leaves entries that the replay of
 * the event writes again. */
static void write_record(plan *p, arena *ar, const event *ev, const stored_record *cur,
                         const char *recs, const char *field, size_t fieldn, int raise)
{
    int hints = !manifest_stays(ev, cur);
    size_t n;
    /* r/<X>: what a manifest record is, "R G", or "-" once deleted (a tag resolves by it). */
    int manifest = !strcmp(ev->collection, "io.atcr.manifest");
    const char *rfield = manifest ? JOIN(ar, NULL, "r/", ev->rkey) : NULL;
    size_t rfieldn = rfield ? strlen(rfield) : 0;
    if (ev->is_delete) {
        const char *v = JOIN(ar, &n, ev->rev, " - - - - - -");
        add_op(p, OP_HSET, KEY_RECS, recs, field, fieldn, v, n);
        if (manifest) add_op(p, OP_HSET, KEY_RECS, recs, rfield, rfieldn, "-", 1);
    } else {
        const char kind[2] = {(char)ev->record_kind, 0};
        const char *at = ev->at ? ev->at : "-";
        const char *target = "-";
        if (ev->record_kind == RECORD_TAG)
            target = JOIN(ar, NULL, ev->target_rkey ? ev->target_rkey : "-", "=",
                          ev->target_digest[0] ? ev->target_digest : "-");
        const char *head =
            JOIN(ar, &n, ev->rev, " ", kind, " ", ev->repository ? ev->repository : "-", " ",
                 ev->key ? ev->key : "-", " ", target ? target : "", " ", at, " ",
                 ev->cid && *ev->cid ? ev->cid : "-", "\n");
        add_op(p, OP_HSET, KEY_RECS, recs, field, fieldn, head, n);
        if (p->nops) {
            p->ops[p->nops - 1].b2 = ev->record_json;
            p->ops[p->nops - 1].b2len = ev->record_json_len;
        }
        if ((ev->record_kind == RECORD_MANIFEST && hints) || ev->record_kind == RECORD_TAG) {
            char hint[PLAN_KEY_MAX];
            int hn =
                plan_hint_field((char)ev->record_kind, ev->repository, ev->key, hint, sizeof hint);
            const char *h = hn < 0 ? NULL : JOIN(ar, NULL, hint);
            const char *v = ev->record_kind == RECORD_MANIFEST
                                ? JOIN(ar, &n, ev->rkey)
                                : JOIN(ar, &n, ev->rkey, " ", at, " ", target ? target : "");
            if (!h) ar->overflow = 1;
            add_op(p, OP_HSET, KEY_RECS, recs, h, h ? (size_t)hn : 0, v, n);
        }
        if (manifest && hints) {
            const char *v = JOIN(ar, &n, ev->repository, " ", ev->key);
            add_op(p, OP_HSET, KEY_RECS, recs, rfield, rfieldn, v, n);
        }
    }
    if (raise) add_op(p, OP_HSET, KEY_RECS, recs, "~rev", 4, ev->rev, strlen(ev->rev));
}

/* Puts ev's record at its place: its index entries, and the repository named in repos. */
static void index_record(plan *p, arena *ar, const event *ev, const plan_keys *k)
{
    if (ev->record_kind == RECORD_HOLD_STATS) return;
    char ms[24];
    *buf_format_ll(ms, ev->created_ms) = 0;
    size_t msn = strlen(ms), n;
    const char *score = JOIN(ar, NULL, ms);
    const char *zset = index_key(ar, k, ev->repository, (char)ev->record_kind);
    if (ev->record_kind == RECORD_MANIFEST) {
        const char *member = JOIN(ar, &n, ev->key, " ", ev->rkey);
        add_op(p, OP_ZADD, KEY_INDEX, zset, score, msn, member, n);
    } else {
        add_op(p, OP_ZADD, KEY_INDEX, zset, score, msn, ev->key, strlen(ev->key));
    }
    add_op(p, OP_ZADD_NX, KEY_REPOS, JOIN(ar, NULL, k->base, "repos"), score, msn, ev->repository,
           strlen(ev->repository));
    if (ev->record_kind == RECORD_MANIFEST) {
        const char *member = JOIN(ar, &n, ev->did, " ", ev->repository, " ", ev->key, " ", ev->rkey,
                                  " ", ev->at ? ev->at : "-");
        add_op(p, OP_ZADD, KEY_RECENT, k->recent_key, score, msn, member, n);
    }
}

/* s, "-" when NULL, as a field of a stored_record. An event's strings fit (its syntax checks
 * bound them); one that would not is left empty, a place nothing matches. */
static void put_str(char *out, size_t cap, const char *s)
{
    if (!s) s = "-";
    (void)strput(out, cap, s, strlen(s));
}

/* What cur holds once ev is written. */
static void next_state(const event *ev, stored_record *next)
{
    memset(next, 0, sizeof *next);
    put_str(next->rev, sizeof next->rev, ev->rev);
    if (ev->is_delete) {
        next->state = STORED_TOMBSTONE;
        return;
    }
    next->state = STORED_LIVE;
    next->kind = (char)ev->record_kind;
    put_str(next->repo, sizeof next->repo, ev->repository);
    put_str(next->key, sizeof next->key, ev->key);
    put_str(next->at, sizeof next->at, ev->at);
}

/* A same-rev replay of the live manifest the index holds: its P recent entry may be what a
 * crash lost (the ingester sends a round's entries at its end, after the records). */
static void repair_recent(plan *p, arena *ar, const event *ev, const plan_state *st,
                          const plan_keys *k)
{
    const stored_record *cur = &st->cur;
    if (ev->is_delete || ev->record_kind != RECORD_MANIFEST || cur->state != STORED_LIVE ||
        strcmp(cur->rev, ev->rev) || leaves_place(ev, cur))
        return;
    char ms[24];
    *buf_format_ll(ms, ev->created_ms) = 0;
    size_t n;
    const char *member = JOIN(ar, &n, ev->did, " ", ev->repository, " ", ev->key, " ", ev->rkey,
                              " ", ev->at ? ev->at : "-");
    add_op(p, OP_ZADD, KEY_RECENT, k->recent_key, JOIN(ar, NULL, ms), strlen(ms), member, n);
}

/* The state the rules need that st lacks; st->cur becomes STORED_ABSENT when the event is a
 * create new to the index. */
static unsigned needs(const event *ev, plan_state *st)
{
    unsigned need = 0;
    int firehose = is_firehose(ev);
    if (st->cur.state == STORED_UNKNOWN) {
        if (firehose && ev->is_create && st->max_rev && st->history_known &&
            strcmp(ev->rev, st->max_rev) > 0)
            st->cur.state = STORED_ABSENT; /* no writer saw its commit: it did not exist */
        else
            need |= NEED_RECORD;
    }
    if (firehose && !st->max_rev) need |= NEED_MAX_REV;
    /* An absent record needs the purge mark; one not read yet may turn out absent, so the mark
     * is asked with it rather than in a second round trip that stalls the writer's round. */
    if (firehose && !st->gone_known &&
        (st->cur.state == STORED_UNKNOWN || st->cur.state == STORED_ABSENT))
        need |= NEED_GONE;
    if (!need && leaves_place(ev, &st->cur) && st->cur.kind == RECORD_TAG && !st->tag_owner)
        need |= NEED_TAG_OWNER;
    return need;
}

unsigned plan_needs(const event *ev, const plan_state *st)
{
    plan_state s = *st;
    return needs(ev, &s);
}

void plan_record(const event *ev, const plan_state *st, const plan_keys *k, plan *p)
{
    p->verdict = PLAN_ERROR;
    p->nops = 0;
    p->text_used = 0;
    arena ar = {p, 0};
    plan_state s = *st;
    int firehose = is_firehose(ev);
    p->need = needs(ev, &s);
    if (p->need) {
        p->verdict = PLAN_NEED;
        return;
    }
    int raise = firehose && strcmp(ev->rev, s.max_rev) > 0;
    char field[PLAN_KEY_MAX];
    int fieldn = plan_record_field(ev, field, sizeof field);
    const char *recs = JOIN(&ar, NULL, k->base, "recs");
    const char *f = fieldn < 0 ? NULL : JOIN(&ar, NULL, field);
    if (!f) return;

    if (s.cur.state == STORED_ABSENT) {
        /* A purged DID has no records: what exists was written after the purge. */
        if (firehose && s.gone && ev->time_us <= s.gone) {
            p->verdict = PLAN_STALE;
            return;
        }
    } else if (strcmp(s.cur.rev, ev->rev) >= 0) {
        p->verdict = PLAN_STALE;
        repair_recent(p, &ar, ev, &s, k);
        if (raise) add_op(p, OP_HSET, KEY_RECS, recs, "~rev", 4, ev->rev, strlen(ev->rev));
        if (ar.overflow) p->verdict = PLAN_ERROR;
        return;
    }
    p->verdict = PLAN_WRITE;
    if (leaves_place(ev, &s.cur)) unindex(p, &ar, ev, &s, k);
    if (!ev->is_delete) index_record(p, &ar, ev, k);
    write_record(p, &ar, ev, &s.cur, recs, f, (size_t)fieldn, raise);
    next_state(ev, &p->next);
    if (ar.overflow) p->verdict = PLAN_ERROR;
    if (p->verdict == PLAN_ERROR) p->nops = 0;
}
