#include "appview/fold.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "cache/scripts.h"

/* The recent list keeps the newest manifests only; trimming on every add would double the
 * commands, so it is trimmed every TRIM_EVERY adds. */
#define RECENT_KEEP 10000
#define TRIM_EVERY 1000
/* outbox_done takes member, change pairs; larger outboxes are cleared over several calls. */
#define OUTBOX_BATCH 12
/* How long a hold's counts from its io.atcr.hold.stats record are kept as last known values. */
#define HOLD_STATS_TTL "2592000"

struct fold {
    valkey *v;
    char *prefix;
    char ttl[16];
    char gone_ttl[16];
    int script_apply, script_purge, script_identity, script_outbox_done, script_hold_stats;
    unsigned adds_since_trim;
    uint64_t *applied_total;
    uint64_t *stale_total;
    uint64_t *purges_total;
    uint64_t *write_errors_total;
    uint64_t *outbox_total;
};

/* The writes of one event; freed when the last reply arrived. */
typedef struct op {
    fold *f;
    fold_done_cb cb;
    void *ud;
    int outstanding;
    int failed;
    char *outbox_key;
    /* Changes of the DID's outbox applied to the recent list, to clear once acknowledged. */
    char **done;
    size_t ndone;
} op;

fold *fold_new(valkey *v, const fold_options *opt)
{
    fold *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->v = v;
    f->prefix = strdup(opt->prefix);
    snprintf(f->ttl, sizeof f->ttl, "%u", opt->record_ttl);
    snprintf(f->gone_ttl, sizeof f->gone_ttl, "%u", opt->gone_ttl ? opt->gone_ttl : 86400);
    f->script_apply = valkey_register_script(v, "apply", lua_apply);
    f->script_purge = valkey_register_script(v, "purge", lua_purge);
    f->script_identity = valkey_register_script(v, "identity", lua_identity);
    f->script_outbox_done = valkey_register_script(v, "outbox_done", lua_outbox_done);
    f->script_hold_stats = valkey_register_script(v, "hold_stats", lua_hold_stats);
    if (!f->prefix || f->script_apply < 0 || f->script_purge < 0 || f->script_identity < 0 ||
        f->script_outbox_done < 0 || f->script_hold_stats < 0) {
        fold_free(f);
        return NULL;
    }
    f->applied_total =
        metrics_counter("appview_records_indexed_total", "Record events that changed the index");
    f->stale_total = metrics_counter("appview_records_stale_total",
                                     "Record events older than what the index holds (replays)");
    f->purges_total =
        metrics_counter("appview_accounts_purged_total", "Accounts deleted or taken down");
    f->write_errors_total =
        metrics_counter("appview_write_errors_total", "Index writes Valkey refused or lost");
    f->outbox_total = metrics_counter("appview_recent_changes_total",
                                      "Changes of the recent list driven from DID outboxes");
    return f;
}

void fold_free(fold *f)
{
    if (!f) return;
    free(f->prefix);
    free(f);
}

static void op_free(op *o)
{
    for (size_t i = 0; i < o->ndone; i++)
        free(o->done[i]);
    free(o->done);
    free(o->outbox_key);
    free(o);
}

static int reply_ok(op *o, const redisReply *r)
{
    if (r && r->type != REDIS_REPLY_ERROR) return 1;
    (*o->f->write_errors_total)++;
    if (!r) {
        o->failed = 1; /* the connection was lost: the event is folded again later */
        return 0;
    }
    /* Not retried: the same event would be refused again and stall the stream behind it. */
    log_warn("fold", "write refused for %s: %s", o->outbox_key, r->str);
    return 0;
}

static void clear_outbox(op *o);

static void op_finish_one(op *o)
{
    if (--o->outstanding > 0) return;
    if (o->ndone && !o->failed) {
        clear_outbox(o); /* one more round: the event completes when the outbox is cleared */
        if (o->outstanding > 0) return;
    }
    o->cb(o->ud, !o->failed);
    op_free(o);
}

static void on_followup(redisReply *r, void *ud)
{
    op *o = ud;
    reply_ok(o, r);
    op_finish_one(o);
}

/* A command that belongs to the event's writes; failure to send fails the event. */
static void followup(op *o, int argc, const char **argv)
{
    if (valkey_command(o->f->v, on_followup, o, argc, argv, NULL) == 0)
        o->outstanding++;
    else
        o->failed = 1;
}

static void clear_outbox(op *o)
{
    fold *f = o->f;
    size_t n = o->ndone;
    o->ndone = 0;
    for (size_t i = 0; i < n; i += 2 * OUTBOX_BATCH) {
        const char *argv[1 + 2 * OUTBOX_BATCH];
        int argc = 0;
        argv[argc++] = o->outbox_key;
        for (size_t j = i; j < n && j < i + 2 * OUTBOX_BATCH; j++)
            argv[argc++] = o->done[j];
        if (valkey_eval(f->v, f->script_outbox_done, on_followup, o, 1, argc, argv, NULL) == 0)
            o->outstanding++;
        else
            o->failed = 1;
    }
    for (size_t i = 0; i < n; i++)
        free(o->done[i]);
}

/* Applies the outbox pairs r->element[first..] to the recent list, and remembers them so
 * they are cleared from the outbox once acknowledged. */
static void drive_outbox(op *o, const redisReply *r, size_t first)
{
    fold *f = o->f;
    if (r->elements <= first) return;
    char key[256];
    snprintf(key, sizeof key, "%srecent", f->prefix);
    char **done = realloc(o->done, (r->elements - first) * sizeof *done);
    if (!done) {
        o->failed = 1;
        return;
    }
    o->done = done;
    for (size_t i = first; i + 1 < r->elements; i += 2) {
        const redisReply *member = r->element[i], *change = r->element[i + 1];
        if (member->type != REDIS_REPLY_STRING || change->type != REDIS_REPLY_STRING ||
            change->len < 1)
            continue;
        (*f->outbox_total)++;
        if (change->str[0] == '+') {
            followup(o, 4, (const char *[]){"ZADD", key, change->str + 1, member->str});
            if (++f->adds_since_trim >= TRIM_EVERY) {
                f->adds_since_trim = 0;
                char stop[24];
                snprintf(stop, sizeof stop, "%d", -RECENT_KEEP - 1);
                followup(o, 4, (const char *[]){"ZREMRANGEBYRANK", key, "0", stop});
            }
        } else {
            followup(o, 3, (const char *[]){"ZREM", key, member->str});
        }
        char *m = strdup(member->str), *c = strdup(change->str);
        if (!m || !c) {
            free(m);
            free(c);
            o->failed = 1;
            return;
        }
        o->done[o->ndone++] = m;
        o->done[o->ndone++] = c;
    }
}

static void on_apply(redisReply *r, void *ud)
{
    op *o = ud;
    fold *f = o->f;
    if (reply_ok(o, r)) {
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
            r->element[0]->type == REDIS_REPLY_INTEGER) {
            if (r->element[0]->integer == 1)
                (*f->applied_total)++;
            else
                (*f->stale_total)++;
            drive_outbox(o, r, 1);
        } else {
            o->failed = 1;
        }
    }
    op_finish_one(o);
}

static void on_purge(redisReply *r, void *ud)
{
    op *o = ud;
    fold *f = o->f;
    if (reply_ok(o, r) && r->type == REDIS_REPLY_ARRAY && r->elements >= 1) {
        (*f->purges_total)++;
        const redisReply *handle = r->element[0];
        if (handle->type == REDIS_REPLY_STRING && handle->len) {
            char hk[512];
            snprintf(hk, sizeof hk, "%shandle:%s", f->prefix, handle->str);
            followup(o, 2, (const char *[]){"DEL", hk});
        }
        drive_outbox(o, r, 1);
    }
    op_finish_one(o);
}

static void on_identity(redisReply *r, void *ud)
{
    op *o = ud;
    if (reply_ok(o, r) && r->type == REDIS_REPLY_STRING && r->len) {
        char hk[512];
        snprintf(hk, sizeof hk, "%shandle:%s", o->f->prefix, r->str);
        followup(o, 2, (const char *[]){"DEL", hk});
    }
    op_finish_one(o);
}

static op *op_new(fold *f, const char *base, fold_done_cb cb, void *ud)
{
    op *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->f = f;
    o->cb = cb;
    o->ud = ud;
    o->outstanding = 1; /* the script call */
    buf key = {0};
    if (buf_printf(&key, "%soutbox", base) < 0) {
        op_free(o);
        return NULL;
    }
    o->outbox_key = key.data;
    return o;
}

static int send_apply(fold *f, const event *ev, op *o, const char *base)
{
    buf key = {0};
    if (buf_printf(&key, "%srec/%s/%s", base, ev->collection, ev->rkey) < 0) return -1;
    char time_us[24], at[24], kind[2] = {(char)ev->record_kind, 0};
    snprintf(time_us, sizeof time_us, "%llu", (unsigned long long)ev->time_us);
    snprintf(at, sizeof at, "%lld", (long long)ev->created_ms);
    char *val = ev->record ? json_dumps(ev->record, JSON_COMPACT) : NULL;
    const char *argv[16] = {key.data,
                            base,
                            ev->is_delete ? "del" : "put",
                            ev->rev,
                            time_us,
                            f->ttl,
                            ev->is_delete ? "" : kind,
                            ev->cid ? ev->cid : "",
                            val ? val : "",
                            ev->repository ? ev->repository : "",
                            ev->key ? ev->key : "",
                            ev->digest,
                            at,
                            ev->rkey,
                            ev->did,
                            f->gone_ttl};
    int rc = (ev->record && !val)
                 ? -1
                 : valkey_eval(f->v, f->script_apply, on_apply, o, 1, 16, argv, NULL);
    free(val);
    buf_free(&key);
    return rc;
}

static const char *time_or_dash(const json_t *record, const char *field)
{
    const char *t = json_string_value(json_object_get(record, field));
    return t && *t && !strchr(t, ' ') ? t : "-";
}

/* A hold's stats record also updates the user's per-hold last known values (in the user's
 * slot, so a script of its own next to the record's). */
static int send_hold_stats(fold *f, const event *ev, op *o)
{
    const json_t *rec = ev->record;
    json_int_t pulls = json_integer_value(json_object_get(rec, "pullCount"));
    json_int_t pushes = json_integer_value(json_object_get(rec, "pushCount"));
    char value[160], at[24];
    snprintf(value, sizeof value, "%lld %lld %s %s", (long long)pulls, (long long)pushes,
             time_or_dash(rec, "lastPull"), time_or_dash(rec, "lastPush"));
    snprintf(at, sizeof at, "%lld", (long long)ev->created_ms);
    buf k[5] = {{0}};
    static const char *const suffix[4] = {"holdstats", "holds", "holdstats-at", "stats"};
    int rc = 0;
    for (int i = 0; i < 4; i++)
        rc |= buf_printf(&k[i], "%s{%s}/repo/%s/%s", f->prefix, ev->key, ev->repository, suffix[i]);
    rc |= buf_printf(&k[4], "%s{%s}/keys", f->prefix, ev->key);
    if (rc == 0)
        rc = valkey_eval(f->v, f->script_hold_stats, on_followup, o, 5, 9,
                         (const char *[]){k[0].data, k[1].data, k[2].data, k[3].data, k[4].data,
                                          ev->did, value, at, HOLD_STATS_TTL},
                         NULL);
    for (int i = 0; i < 5; i++)
        buf_free(&k[i]);
    if (rc == 0) o->outstanding++;
    return rc;
}

int fold_apply(fold *f, const event *ev, fold_done_cb cb, void *ud)
{
    if (ev->kind == EVENT_ACCOUNT && !ev->purge) return 1;
    if (ev->kind != EVENT_COMMIT && ev->kind != EVENT_ACCOUNT && ev->kind != EVENT_IDENTITY)
        return 1;
    char base[2200];
    snprintf(base, sizeof base, "%s{%s}/", f->prefix, ev->did);
    op *o = op_new(f, base, cb, ud);
    if (!o) return -1;
    int rc;
    if (ev->kind == EVENT_COMMIT) {
        rc = send_apply(f, ev, o, base);
        if (rc == 0 && !ev->is_delete && ev->record_kind == RECORD_HOLD_STATS &&
            send_hold_stats(f, ev, o) < 0)
            o->failed = 1; /* the record was sent: its reply still finishes the op */
    } else if (ev->kind == EVENT_ACCOUNT) {
        char keys[2300], time_us[24];
        snprintf(keys, sizeof keys, "%skeys", base);
        snprintf(time_us, sizeof time_us, "%llu", (unsigned long long)ev->time_us);
        rc = valkey_eval(f->v, f->script_purge, on_purge, o, 1, 5,
                         (const char *[]){keys, base, time_us, f->gone_ttl, ev->did}, NULL);
    } else {
        char id[2300];
        snprintf(id, sizeof id, "%sid", base);
        rc =
            valkey_eval(f->v, f->script_identity, on_identity, o, 1, 1, (const char *[]){id}, NULL);
    }
    if (rc < 0) {
        op_free(o);
        return -1;
    }
    return 0;
}
