#include "appview/cas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appview/plan.h"
#include "atproto/buf.h"
#include "atproto/json_pool.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "cache/scripts.h"

/* A batch whose fields keep changing under it (the ingester is busy with the same DID) is
 * planned again this many times before the load gives up and reports it. */
#define CAS_ATTEMPTS 5

struct cas {
    cache_client *v;
    char *prefix, *recent, *recent_index;
    char ttl[16];
    int script;
    uint64_t *conflicts_total, *written_total, *stale_total;
};

/* One event, owning copies of its strings and its record's JSON. */
typedef struct {
    event ev;
    char *text, *json;
} owned_event;

typedef struct {
    cas *c;
    owned_event *evs;
    size_t n;
    int attempts;
    char *base, *recs;
    stored_record *cur;
    char **owners; /* a live tag's hint field value, when the event moves it: "" absent */
    int *owner_read;
    size_t written; /* events whose plan changes the index, in the write in flight */
    /* P recent's entries to add once the script ran, when P recent lives on another slot than
     * the DID: "score\0member\0" pairs */
    buf recent_adds;
    size_t nrecent_adds;
    cas_done_cb cb;
    void *ud;
} job;

/* ---- copies ---- */

static int own(owned_event *o, const event *ev)
{
    const char *const *src[] = {&ev->did, &ev->collection,  &ev->rkey,
                                &ev->rev, &ev->cid,         &ev->repository,
                                &ev->key, &ev->target_rkey, &ev->at};
    enum { NSTR = sizeof src / sizeof src[0] };
    size_t n = 0;
    for (int i = 0; i < NSTR; i++)
        n += *src[i] ? strlen(*src[i]) + 1 : 0;
    o->ev = *ev;
    o->ev.doc = NULL;
    o->ev.value = JSON_DOC_NONE;
    o->ev.record = NULL;
    o->ev.owns_record = 0;
    o->json = NULL;
    o->text = malloc(n ? n : 1);
    if (!o->text) return -1;
    const char **dst[] = {&o->ev.did, &o->ev.collection,  &o->ev.rkey,
                          &o->ev.rev, &o->ev.cid,         &o->ev.repository,
                          &o->ev.key, &o->ev.target_rkey, &o->ev.at};
    char *at = o->text;
    for (int i = 0; i < NSTR; i++) {
        if (!*src[i]) continue;
        size_t k = strlen(*src[i]) + 1;
        memcpy(at, *src[i], k);
        *dst[i] = at;
        at += k;
    }
    if (!ev->is_delete && ev->record) {
        o->json = json_pool_dump(ev->record, &o->ev.record_json_len);
        if (!o->json) return -1;
        o->ev.record_json = o->json;
    }
    return 0;
}

static void job_free(job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->evs[i].text);
        free(j->evs[i].json);
        if (j->owners) free(j->owners[i]);
    }
    free(j->evs);
    free(j->cur);
    free(j->owners);
    free(j->owner_read);
    free(j->base);
    free(j->recs);
    buf_free(&j->recent_adds);
    free(j);
}

static void job_end(job *j, int ok, size_t written)
{
    j->cb(j->ud, ok, written);
    job_free(j);
}

/* ---- reads ---- */

static int read_states(job *j);

static int hint_of_tag(const stored_record *s, char *out, size_t cap)
{
    return plan_hint_field(RECORD_TAG, s->repo, s->key, out, cap);
}

/* Whether event i moves a live tag record, whose removal depends on its hint field. */
static int needs_owner(const job *j, size_t i)
{
    const plan_state st = {.cur = j->cur[i], .tag_owner = NULL};
    return plan_needs(&j->evs[i].ev, &st) & NEED_TAG_OWNER;
}

/* ---- the write ---- */

typedef struct {
    const char **argv;
    size_t *lens;
    int argc, cap;
} args;

static int push(args *a, const char *s, size_t n)
{
    if (a->argc == a->cap) {
        int cap = a->cap ? 2 * a->cap : 256;
        const char **argv = realloc(a->argv, (size_t)cap * sizeof *argv);
        if (argv) a->argv = argv;
        size_t *lens = realloc(a->lens, (size_t)cap * sizeof *lens);
        if (lens) a->lens = lens;
        if (!argv || !lens) return -1;
        a->cap = cap;
    }
    a->argv[a->argc] = s;
    a->lens[a->argc++] = n;
    return 0;
}

static int push_str(args *a, const char *s)
{
    return push(a, s, strlen(s));
}

/* Keys the batch writes, for the script's KEYS and their TTLs. */
typedef struct {
    const char **keys;
    size_t n, cap;
} keyset;

static int key_add(keyset *k, const char *key)
{
    for (size_t i = 0; i < k->n; i++)
        if (!strcmp(k->keys[i], key)) return 0;
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 16;
        const char **keys = realloc(k->keys, cap * sizeof *keys);
        if (!keys) return -1;
        k->keys = keys;
        k->cap = cap;
    }
    k->keys[k->n++] = key;
    return 0;
}

static void on_written(const reply *r, void *ud);

/* Where a string sits in a buf that may still move while it grows. */
typedef struct {
    size_t off, len;
} span;

static int append_span(buf *b, span *out, const char *s, size_t n)
{
    out->off = b->len;
    out->len = n;
    return buf_append(b, s, n) < 0 || buf_append(b, "", 1) < 0 ? -1 : 0;
}

static int push_span(args *a, const buf *b, span s)
{
    return push(a, b->data + s.off, s.len);
}

/* A plan op's arguments after the command's key (and NX): a value or score and member. */
static int push_op_args(args *a, const plan_op *op, const buf *text, span value)
{
    if (op->kind == OP_ZREM) return push(a, op->b, op->blen);
    int err = push(a, op->a, op->alen);
    if (op->kind == OP_HSET && op->b2) return err | push_span(a, text, value);
    return err | push(a, op->b, op->blen);
}

static int op_argc(const plan_op *op)
{
    return op->kind == OP_ZREM ? 1 : 2;
}

/* The batch's plans, their guards and their records' values (header and JSON joined). */
typedef struct {
    plan *plans;
    span *guards; /* field, expected: up to two pairs an event */
    span *values; /* per event: the value of its record's HSET */
    size_t nguards, written;
    char nguards_arg[24]; /* ARGV[1], alive until the call is queued */
    char (*argcs)[12];    /* each command's argument count, alive until the call is queued */
    buf text;
} batch;

static void batch_free(batch *b)
{
    free(b->argcs);
    free(b->plans);
    free(b->guards);
    free(b->values);
    buf_free(&b->text);
}

/* Plans event i and notes its guards: the record's field as it was read (absent, or its rev),
 * and the tag hint field read for it. -1 out of memory. */
static int plan_one(job *j, batch *b, size_t i)
{
    const event *ev = &j->evs[i].ev;
    const stored_record *cur = &j->cur[i];
    int owner = j->owner_read[i];
    plan_state st = {.cur = *cur, .tag_owner = owner ? j->owners[i] : NULL};
    plan *p = &b->plans[i];
    plan_record(ev, &st, &(plan_keys){.base = j->base, .recent_key = j->c->recent}, p);
    if (p->verdict == PLAN_NEED || p->verdict == PLAN_ERROR) {
        log_warn("loader", "%s/%s of %s cannot be folded: %s", ev->collection, ev->rkey, ev->did,
                 p->verdict == PLAN_NEED ? "state missing" : "keys too long");
        p->nops = 0;
        return 0;
    }
    if (p->verdict == PLAN_WRITE) b->written++;
    if (!p->nops) return 0;
    char field[PLAN_KEY_MAX], hint[PLAN_KEY_MAX];
    const char *rev = cur->state == STORED_ABSENT ? "" : cur->rev;
    span *g = &b->guards[2 * b->nguards];
    if (plan_record_field(ev, field, sizeof field) < 0 ||
        append_span(&b->text, &g[0], field, strlen(field)) < 0 ||
        append_span(&b->text, &g[1], rev, strlen(rev)) < 0)
        return -1;
    b->nguards++;
    if (owner && hint_of_tag(cur, hint, sizeof hint) >= 0) {
        g = &b->guards[2 * b->nguards];
        size_t on = strlen(j->owners[i]);
        if (append_span(&b->text, &g[0], hint, strlen(hint)) < 0) return -1;
        g[1] = (span){b->text.len, on ? on + 1 : 0};
        if ((on && buf_append(&b->text, "=", 1) < 0) ||
            buf_append(&b->text, j->owners[i], on) < 0 || buf_append(&b->text, "", 1) < 0)
            return -1;
        b->nguards++;
    }
    for (int k = 0; k < p->nops; k++) {
        const plan_op *op = &p->ops[k];
        if (!op->b2) continue;
        b->values[i] = (span){b->text.len, op->blen + op->b2len};
        if (buf_append(&b->text, op->b, op->blen) < 0 ||
            buf_append(&b->text, op->b2, op->b2len) < 0)
            return -1;
    }
    return 0;
}

/* Whether the script writes op: not P recent's when it lives on another slot (split). */
static int in_script(const plan_op *op, int split)
{
    return !split || op->target != KEY_RECENT;
}

/* One command of the call: the batch's ops of one kind on one key, in their order. */
typedef struct {
    const plan_op *op;  /* the first */
    size_t first, last; /* indices into the op list, chained by next */
    int argc;
} command;

typedef struct {
    const plan_op *op;
    size_t plan; /* its event's index, for the record's value */
    size_t next; /* the next op of its command; SIZE_MAX for none */
} listed_op;

/* The batch's ops as the fewest commands: an op joins the last command on its key when that
 * is of its kind (HSET, ZADD, ZADD NX or ZREM), else it starts one. Each key's ops keep their
 * order, and ops on different keys commute, so the writes are those of the ops one by one;
 * Valkey runs a page's hundred HSETs of P{D}/recs as one. -1 out of memory. */
static int group_ops(const job *j, const batch *b, int split, listed_op **ops_out,
                     command **cmds_out, size_t *ncmds_out, plan_op **mirrors_out)
{
    size_t n = 0;
    for (size_t i = 0; i < j->n; i++)
        n += (size_t)b->plans[i].nops;
    /* Each addition to P recent has its mirror on P recent's index (fold_recent_index_key). */
    listed_op *ops = calloc(2 * n + 1, sizeof *ops);
    command *cmds = calloc(2 * n + 1, sizeof *cmds);
    plan_op *mirrors = calloc(n + 1, sizeof *mirrors);
    if (!ops || !cmds || !mirrors) {
        free(ops);
        free(cmds);
        free(mirrors);
        return -1;
    }
    size_t nops = 0, ncmds = 0, nmirrors = 0;
    for (size_t i = 0; i < j->n; i++) {
        for (int k = 0; k < b->plans[i].nops; k++) {
            const plan_op *op = &b->plans[i].ops[k];
            if (!in_script(op, split)) continue;
            const plan_op *mirror = NULL;
            if (op->target == KEY_RECENT && op->kind != OP_ZREM) {
                mirrors[nmirrors] = *op;
                mirrors[nmirrors].key = j->c->recent_index;
                mirrors[nmirrors].a = "0";
                mirrors[nmirrors].alen = 1;
                mirror = &mirrors[nmirrors++];
            }
            /* The index's addition before P recent's (the same script, but the order the rule
             * asks of every writer). */
            const plan_op *seq[2] = {op, NULL};
            if (mirror) {
                seq[0] = mirror;
                seq[1] = op;
            }
            for (int s = 0; s < 2 && seq[s]; s++) {
                const plan_op *o = seq[s];
                ops[nops] = (listed_op){.op = o, .plan = i, .next = SIZE_MAX};
                size_t c = ncmds;
                while (c > 0 && strcmp(cmds[c - 1].op->key, o->key))
                    c--;
                if (c > 0 && cmds[c - 1].op->kind == o->kind) {
                    command *cmd = &cmds[c - 1];
                    ops[cmd->last].next = nops;
                    cmd->last = nops;
                    cmd->argc += op_argc(o);
                } else {
                    cmds[ncmds++] = (command){.op = o,
                                              .first = nops,
                                              .last = nops,
                                              .argc = 2 + (o->kind == OP_ZADD_NX) + op_argc(o)};
                }
                nops++;
            }
        }
    }
    *ops_out = ops;
    *cmds_out = cmds;
    *ncmds_out = ncmds;
    *mirrors_out = mirrors;
    return 0;
}

static const char *command_name(plan_op_kind kind)
{
    switch (kind) {
    case OP_HSET:
        return "HSET";
    case OP_ZREM:
        return "ZREM";
    default:
        return "ZADD";
    }
}

/* The script's call: KEYS (every key written, recs first), the guards, the commands, and an
 * EXPIRE for each key but P recent and its index. */
static int build_call(job *j, batch *b, args *call, int split)
{
    keyset keys = {0};
    listed_op *ops = NULL;
    command *cmds = NULL;
    plan_op *mirrors = NULL;
    size_t ncmds = 0;
    int err = key_add(&keys, j->recs) | group_ops(j, b, split, &ops, &cmds, &ncmds, &mirrors);
    for (size_t c = 0; !err && c < ncmds; c++)
        err |= key_add(&keys, cmds[c].op->key);
    if (!err && !(b->argcs = calloc(ncmds + 1, sizeof *b->argcs))) err = -1;
    for (size_t k = 0; !err && k < keys.n; k++)
        err |= push_str(call, keys.keys[k]);
    snprintf(b->nguards_arg, sizeof b->nguards_arg, "%zu", b->nguards);
    err |= push_str(call, b->nguards_arg);
    for (size_t g = 0; !err && g < 2 * b->nguards; g++)
        err |= push_span(call, &b->text, b->guards[g]);
    for (size_t c = 0; !err && c < ncmds; c++) {
        const plan_op *op = cmds[c].op;
        snprintf(b->argcs[c], sizeof b->argcs[c], "%d", cmds[c].argc);
        err |= push_str(call, b->argcs[c]) | push_str(call, command_name(op->kind)) |
               push_str(call, op->key);
        if (op->kind == OP_ZADD_NX) err |= push_str(call, "NX");
        for (size_t o = cmds[c].first; o != SIZE_MAX; o = ops[o].next)
            err |= push_op_args(call, ops[o].op, &b->text, b->values[ops[o].plan]);
    }
    for (size_t k = 0; !err && k < keys.n; k++)
        if (strcmp(keys.keys[k], j->c->recent) && strcmp(keys.keys[k], j->c->recent_index))
            err |= push_str(call, "3") | push_str(call, "EXPIRE") | push_str(call, keys.keys[k]) |
                   push_str(call, j->c->ttl);
    int nkeys = (int)keys.n;
    free(keys.keys);
    free(ops);
    free(cmds);
    free(mirrors);
    return err ? -1 : nkeys;
}

/* A removal from P recent refused: the script held behind it fails too (cache_order). */
static void on_recent_removed(const reply *r, void *ud)
{
    (void)ud;
    if (r && r->type == REPLY_ERROR) log_warn("loader", "recent list removal refused: %s", r->str);
}

/* Where P recent lives on another slot than the DID (a cluster), its changes cannot be in the
 * script. Removals go first, and the script waits until they are answered and replicated: a
 * crash never leaves an entry whose record moved. Additions are kept to be sent once the
 * script ran: a crash before leaves a record without its entry, which the next load of the
 * DID adds again (the load did not finish, so the index is still incomplete). */
static int split_recent(job *j, const batch *b)
{
    cas *c = j->c;
    int removed = 0, err = 0;
    buf_reset(&j->recent_adds);
    j->nrecent_adds = 0;
    for (size_t i = 0; !err && i < j->n; i++) {
        for (int k = 0; !err && k < b->plans[i].nops; k++) {
            const plan_op *op = &b->plans[i].ops[k];
            if (op->target != KEY_RECENT) continue;
            if (op->kind == OP_ZREM) {
                err = cache_command(c->v, on_recent_removed, NULL, 3,
                                    (const char *[]){"ZREM", c->recent, op->b},
                                    (const size_t[]){4, strlen(c->recent), op->blen}) < 0;
                removed = 1;
            } else {
                err = buf_append(&j->recent_adds, op->a, op->alen) < 0 ||
                      buf_append(&j->recent_adds, "", 1) < 0 ||
                      buf_append(&j->recent_adds, op->b, op->blen) < 0 ||
                      buf_append(&j->recent_adds, "", 1) < 0;
                j->nrecent_adds++;
            }
        }
    }
    if (!err && removed) err = cache_order(c->v, c->recent, j->recs) < 0;
    return err ? -1 : 0;
}

static void plan_and_write(job *j)
{
    batch b = {.plans = calloc(j->n, sizeof *b.plans),
               .guards = calloc(4 * j->n, sizeof *b.guards),
               .values = calloc(j->n, sizeof *b.values)};
    int ok = b.plans && b.guards && b.values;
    for (size_t i = 0; ok && i < j->n; i++)
        ok = plan_one(j, &b, i) == 0;
    int split = !cache_keys_together(j->c->v, j->recs, j->c->recent);
    args call = {0};
    int nkeys = ok && b.nguards ? build_call(j, &b, &call, split) : -1;
    j->attempts++;
    j->written = b.written;
    int rc = ok && !b.nguards ? 1 : -1; /* no guard: nothing to write, all was stale */
    if (nkeys > 0 && (!split || split_recent(j, &b) == 0))
        rc = cache_eval(j->c->v, j->c->script, on_written, j, nkeys, call.argc, call.argv,
                        call.lens);
    batch_free(&b);
    free(call.argv);
    free(call.lens);
    if (rc == 1) {
        (*j->c->stale_total) += j->n;
        job_end(j, 1, 0);
    } else if (rc < 0) {
        job_end(j, 0, 0);
    }
}

/* The entries' call: the job ends with its answer. */
static void on_recent_added(const reply *r, void *ud)
{
    job *j = ud;
    int ok = r && r->type != REPLY_ERROR;
    if (r && !ok)
        log_warn("loader", "recent list addition refused for %s: %s", j->evs[0].ev.did, r->str);
    job_end(j, ok, j->written);
}

/* The entries split_recent kept: a ZADD to P recent's index, then one to P recent, as one call
 * of cache/guarded.lua without guards, on P recent's slot. One call, so that no rebuild of the
 * index (cache/trim_recent.lua, which another replica's ingester runs) falls between the two
 * (fold_recent_index_key's rule). 0 when sent (it ends the job), -1 when not. */
static int add_recent(job *j)
{
    args call = {0};
    char argc[24]; /* each ZADD's argument count */
    snprintf(argc, sizeof argc, "%zu", 2 + 2 * j->nrecent_adds);
    int err =
        push_str(&call, j->c->recent) | push_str(&call, j->c->recent_index) | push_str(&call, "0");
    for (int to_recent = 0; to_recent < 2; to_recent++) {
        err |= push_str(&call, argc) | push_str(&call, "ZADD") |
               push_str(&call, to_recent ? j->c->recent : j->c->recent_index);
        const char *p = j->recent_adds.data;
        for (size_t i = 0; !err && i < j->nrecent_adds; i++) {
            size_t sn = strlen(p), mn = strlen(p + sn + 1);
            err |= (to_recent ? push(&call, p, sn) : push(&call, "0", 1)) |
                   push(&call, p + sn + 1, mn);
            p += sn + mn + 2;
        }
    }
    int rc = err ? -1
                 : cache_eval(j->c->v, j->c->script, on_recent_added, j, 2, call.argc, call.argv,
                              call.lens);
    free(call.argv);
    free(call.lens);
    return rc;
}

static void on_written(const reply *r, void *ud)
{
    job *j = ud;
    cas *c = j->c;
    if (r && r->type == REPLY_INTEGER && r->integer == 1) {
        (*c->written_total) += j->written;
        (*c->stale_total) += j->n - j->written;
        if (j->nrecent_adds && add_recent(j) == 0) return;
        job_end(j, !j->nrecent_adds, j->written);
        return;
    }
    if (r && r->type == REPLY_INTEGER && j->attempts < CAS_ATTEMPTS) {
        (*c->conflicts_total)++;
        if (read_states(j) == 0) return;
    }
    if (r && r->type == REPLY_ERROR)
        log_warn("loader", "index write refused for %s: %s", j->evs[0].ev.did, r->str);
    job_end(j, 0, 0);
}

/* ---- reads ---- */

static void on_owners(const reply *r, void *ud)
{
    job *j = ud;
    if (!r || r->type != REPLY_ARRAY) {
        job_end(j, 0, 0);
        return;
    }
    size_t e = 0;
    for (size_t i = 0; i < j->n; i++) {
        if (!j->owner_read[i]) continue;
        const reply *v = e < r->elements ? r->element[e++] : NULL;
        free(j->owners[i]);
        j->owners[i] = strdup(v && v->type == REPLY_STRING ? v->str : "");
        if (!j->owners[i]) {
            job_end(j, 0, 0);
            return;
        }
    }
    plan_and_write(j);
}

static void on_states(const reply *r, void *ud)
{
    job *j = ud;
    if (!r || r->type != REPLY_ARRAY || r->elements != j->n) {
        job_end(j, 0, 0);
        return;
    }
    args a = {0};
    int err = push_str(&a, "HMGET") | push_str(&a, j->recs);
    char hint[PLAN_KEY_MAX];
    buf names = {0};
    span *spans = calloc(j->n, sizeof *spans);
    size_t nowners = 0;
    if (!spans) {
        free(a.argv);
        free(a.lens);
        job_end(j, 0, 0);
        return;
    }
    for (size_t i = 0; !err && i < j->n; i++) {
        const reply *v = r->element[i];
        stored_record *cur = &j->cur[i];
        memset(cur, 0, sizeof *cur);
        cur->state = STORED_ABSENT;
        if (v->type == REPLY_STRING && plan_parse_stored(v->str, v->len, cur) < 0) {
            log_warn("loader", "%s: unreadable field %s/%s, written over", j->evs[i].ev.did,
                     j->evs[i].ev.collection, j->evs[i].ev.rkey);
            cur->state = STORED_ABSENT;
        }
        j->owner_read[i] = needs_owner(j, i) && hint_of_tag(cur, hint, sizeof hint) >= 0;
        if (j->owner_read[i]) {
            err |= append_span(&names, &spans[nowners++], hint, strlen(hint));
        }
    }
    for (size_t k = 0; !err && k < nowners; k++)
        err |= push_span(&a, &names, spans[k]);
    int rc = 0;
    if (!err && nowners) rc = cache_command(j->c->v, on_owners, j, a.argc, a.argv, a.lens);
    buf_free(&names);
    free(spans);
    free(a.argv);
    free(a.lens);
    if (err || rc < 0) {
        job_end(j, 0, 0);
        return;
    }
    if (!nowners) plan_and_write(j);
}

static int read_states(job *j)
{
    args a = {0};
    char field[PLAN_KEY_MAX];
    buf names = {0};
    span *spans = calloc(j->n, sizeof *spans);
    if (!spans) return -1;
    int err = push_str(&a, "HMGET") | push_str(&a, j->recs);
    for (size_t i = 0; !err && i < j->n; i++) {
        int n = plan_record_field(&j->evs[i].ev, field, sizeof field);
        err |= n < 0 || append_span(&names, &spans[i], field, (size_t)n) < 0;
    }
    for (size_t i = 0; !err && i < j->n; i++)
        err |= push_span(&a, &names, spans[i]);
    int rc = err ? -1 : cache_command(j->c->v, on_states, j, a.argc, a.argv, a.lens);
    buf_free(&names);
    free(spans);
    free(a.argv);
    free(a.lens);
    return rc;
}

/* ---- lifetime ---- */

int cas_fold(cas *c, const event *evs, size_t n, cas_done_cb cb, void *ud)
{
    if (!n) return 1;
    job *j = calloc(1, sizeof *j);
    if (!j) return -1;
    j->c = c;
    j->cb = cb;
    j->ud = ud;
    j->evs = calloc(n, sizeof *j->evs);
    j->cur = calloc(n, sizeof *j->cur);
    j->owners = calloc(n, sizeof *j->owners);
    j->owner_read = calloc(n, sizeof *j->owner_read);
    buf base = {0}, recs = {0};
    int err = !j->evs || !j->cur || !j->owners || !j->owner_read;
    for (size_t i = 0; !err && i < n; i++, j->n++)
        err = own(&j->evs[i], &evs[i]);
    if (!err) {
        err = buf_printf(&base, "%s{%s}/", c->prefix, evs[0].did) < 0 ||
              buf_printf(&recs, "%srecs", base.data) < 0;
    }
    j->base = base.data;
    j->recs = recs.data;
    if (err) {
        job_free(j);
        return -1;
    }
    if (read_states(j) < 0) {
        job_free(j);
        return -1;
    }
    return 0;
}

cas *cas_new(cache_client *v, const cas_options *opt)
{
    cas *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->v = v;
    c->prefix = strdup(opt->prefix);
    c->recent = strdup(opt->recent);
    c->recent_index = strdup(opt->recent_index);
    snprintf(c->ttl, sizeof c->ttl, "%u", opt->record_ttl);
    c->script = cache_register_script(v, "guarded", lua_guarded);
    if (!c->prefix || !c->recent || !c->recent_index || c->script < 0) {
        cas_free(c);
        return NULL;
    }
    c->conflicts_total = metrics_counter(
        "appview_loader_conflicts_total",
        "Loader writes planned again because the index changed under them (the ingester)");
    c->written_total = metrics_counter("appview_loader_records_written_total",
                                       "Records from PDSes that changed the index");
    c->stale_total = metrics_counter("appview_loader_records_stale_total",
                                     "Records from PDSes the index already held, or newer");
    return c;
}

void cas_free(cas *c)
{
    if (!c) return;
    free(c->prefix);
    free(c->recent);
    free(c->recent_index);
    free(c);
}
