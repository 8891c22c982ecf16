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

struct fold {
    valkey *v;
    char *prefix;
    char ttl[16];
    char gone_ttl[16];
    int script_apply, script_purge, script_identity;
    unsigned adds_since_trim;
    uint64_t *applied_total;
    uint64_t *stale_total;
    uint64_t *purges_total;
    uint64_t *write_errors_total;
};

/* The writes of one event; freed when the last reply arrived. */
typedef struct op {
    fold *f;
    fold_done_cb cb;
    void *ud;
    int outstanding;
    int failed;
    char *did;
    char *repository; /* for the recent list */
    char *key;
    int64_t created_ms;
    int is_manifest_put;
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
    if (!f->prefix || f->script_apply < 0 || f->script_purge < 0 || f->script_identity < 0) {
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
    free(o->did);
    free(o->repository);
    free(o->key);
    free(o);
}

static void op_finish_one(op *o)
{
    if (--o->outstanding > 0) return;
    o->cb(o->ud, !o->failed);
    op_free(o);
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
    log_warn("fold", "write refused for %s: %s", o->did, r->str);
    return 0;
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

static char *recent_member(const char *did, const char *repo, const char *digest)
{
    buf b = {0};
    if (buf_printf(&b, "%s %s %s", did, repo, digest) < 0) return NULL;
    return b.data;
}

static void recent_key(const fold *f, char *out, size_t n)
{
    snprintf(out, n, "%srecent", f->prefix);
}

static void on_apply(redisReply *r, void *ud)
{
    op *o = ud;
    fold *f = o->f;
    if (!reply_ok(o, r)) {
        op_finish_one(o);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 5) {
        o->failed = 1;
        op_finish_one(o);
        return;
    }
    int applied = r->element[0]->integer == 1;
    int replayed = r->element[4]->integer == 1;
    if (!applied)
        (*f->stale_total)++;
    else
        (*f->applied_total)++;
    char rk[256];
    recent_key(f, rk, sizeof rk);
    const redisReply *old_repo = r->element[1], *old_key = r->element[2], *old_kind = r->element[3];
    int old_is_manifest = old_kind->type == REDIS_REPLY_STRING && !strcmp(old_kind->str, "m");
    int same_member = o->is_manifest_put && old_repo->type == REDIS_REPLY_STRING &&
                      old_key->type == REDIS_REPLY_STRING &&
                      !strcmp(old_repo->str, o->repository) && !strcmp(old_key->str, o->key);
    if ((applied || replayed) && old_is_manifest && !same_member) {
        char *m = recent_member(o->did, r->element[1]->str, r->element[2]->str);
        if (m)
            followup(o, 3, (const char *[]){"ZREM", rk, m});
        else
            o->failed = 1;
        free(m);
    }
    /* ZADD is idempotent, so a replayed event repeats it in case a crash lost the first. */
    if ((applied || replayed) && o->is_manifest_put) {
        char *m = recent_member(o->did, o->repository, o->key);
        char score[24];
        snprintf(score, sizeof score, "%lld", (long long)o->created_ms);
        if (m)
            followup(o, 4, (const char *[]){"ZADD", rk, score, m});
        else
            o->failed = 1;
        free(m);
        if (++f->adds_since_trim >= TRIM_EVERY) {
            f->adds_since_trim = 0;
            char stop[24];
            snprintf(stop, sizeof stop, "%d", -RECENT_KEEP - 1);
            followup(o, 4, (const char *[]){"ZREMRANGEBYRANK", rk, "0", stop});
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
        char rk[256];
        recent_key(f, rk, sizeof rk);
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            char *m = recent_member(o->did, r->element[i]->str, r->element[i + 1]->str);
            if (m)
                followup(o, 3, (const char *[]){"ZREM", rk, m});
            else
                o->failed = 1;
            free(m);
        }
        const redisReply *handle = r->element[r->elements - 1];
        if (handle->type == REDIS_REPLY_STRING && handle->len) {
            char hk[512];
            snprintf(hk, sizeof hk, "%shandle:%s", f->prefix, handle->str);
            followup(o, 2, (const char *[]){"DEL", hk});
        }
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

static op *op_new(fold *f, const event *ev, fold_done_cb cb, void *ud)
{
    op *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->f = f;
    o->cb = cb;
    o->ud = ud;
    o->outstanding = 1; /* the script call */
    o->did = strdup(ev->did);
    if (!o->did) {
        op_free(o);
        return NULL;
    }
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
    const char *argv[14] = {key.data,
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
                            ev->rkey};
    int rc = (ev->record && !val)
                 ? -1
                 : valkey_eval(f->v, f->script_apply, on_apply, o, 1, 14, argv, NULL);
    free(val);
    buf_free(&key);
    return rc;
}

int fold_apply(fold *f, const event *ev, fold_done_cb cb, void *ud)
{
    if (ev->kind == EVENT_ACCOUNT && !ev->purge) return 1;
    if (ev->kind != EVENT_COMMIT && ev->kind != EVENT_ACCOUNT && ev->kind != EVENT_IDENTITY)
        return 1;
    op *o = op_new(f, ev, cb, ud);
    if (!o) return -1;
    char base[2200];
    snprintf(base, sizeof base, "%s{%s}/", f->prefix, ev->did);
    int rc;
    if (ev->kind == EVENT_COMMIT) {
        if (!ev->is_delete && ev->record_kind == RECORD_MANIFEST) {
            o->is_manifest_put = 1;
            o->created_ms = ev->created_ms;
            o->repository = strdup(ev->repository);
            o->key = strdup(ev->key);
            if (!o->repository || !o->key) {
                op_free(o);
                return -1;
            }
        }
        rc = send_apply(f, ev, o, base);
    } else if (ev->kind == EVENT_ACCOUNT) {
        char keys[2300], time_us[24];
        snprintf(keys, sizeof keys, "%skeys", base);
        snprintf(time_us, sizeof time_us, "%llu", (unsigned long long)ev->time_us);
        rc = valkey_eval(f->v, f->script_purge, on_purge, o, 1, 4,
                         (const char *[]){keys, base, time_us, f->gone_ttl}, NULL);
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
