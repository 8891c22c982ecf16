#include "appview/fold.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "cache/scripts.h"

#define TRIM_EVERY 1000
/* How long a hold's counts from its io.atcr.hold.stats record are kept as last known values. */
#define HOLD_STATS_TTL "2592000"

struct fold {
    cache_client *v;
    char *prefix;
    char gone_ttl[16];
    int script_purge, script_forget_recent, script_trim_recent, script_hold_stats;
    unsigned since_trim;
    char *recent_key, *recent_index_key;
    char *recent_index_old_key; /* kept by earlier versions: the next rebuild deletes it */
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
    char did[]; /* for the log line of a refused write */
} op;

fold *fold_new(cache_client *v, const fold_options *opt)
{
    fold *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->v = v;
    f->prefix = strdup(opt->prefix);
    f->recent_key = buf_dup_printf("%srecent", opt->prefix);
    /* On P recent's slot: its own name as the hash tag (a prefix's own tag, if any, is the
     * first and so wins in both names). */
    if (f->recent_key) {
        f->recent_index_key = buf_dup_printf("%s/by-did{%s}", f->recent_key, f->recent_key);
        f->recent_index_old_key = buf_dup_printf("%s/by-did-old{%s}", f->recent_key, f->recent_key);
    }
    snprintf(f->gone_ttl, sizeof f->gone_ttl, "%u", opt->gone_ttl ? opt->gone_ttl : 86400);
    f->script_purge = cache_register_script(v, "purge", lua_purge);
    f->script_forget_recent = cache_register_script(v, "forget_recent", lua_forget_recent);
    f->script_trim_recent = cache_register_script(v, "trim_recent", lua_trim_recent);
    f->script_hold_stats = cache_register_script(v, "hold_stats", lua_hold_stats);
    if (!f->prefix || !f->recent_key || !f->recent_index_key || !f->recent_index_old_key ||
        f->script_purge < 0 || f->script_forget_recent < 0 || f->script_trim_recent < 0 ||
        f->script_hold_stats < 0) {
        fold_free(f);
        return NULL;
    }
    if (!cache_keys_together(v, f->recent_key, f->recent_index_key) ||
        !cache_keys_together(v, f->recent_key, f->recent_index_old_key)) {
        log_error("fold",
                  "the key prefix %s puts %s and %s on different slots: use a prefix "
                  "with a whole {hash tag}, or none",
                  f->prefix, f->recent_key, f->recent_index_key);
        fold_free(f);
        return NULL;
    }
    f->purges_total =
        metrics_counter("appview_accounts_purged_total", "Accounts deleted or taken down");
    f->write_errors_total =
        metrics_counter("appview_write_errors_total", "Index writes Valkey refused or lost");
    return f;
}

int fold_recent_trim_due(fold *f)
{
    if (++f->since_trim < TRIM_EVERY) return 0;
    f->since_trim = 0;
    return 1;
}

const char *fold_recent_key(const fold *f)
{
    return f->recent_key;
}

const char *fold_recent_index_key(const fold *f)
{
    return f->recent_index_key;
}

/* A failed trim is caught up by the next. */
static void on_trimmed(const reply *r, void *ud) {}

void fold_trim_recent(fold *f)
{
    char keep[24], rebuild_at[24];
    snprintf(keep, sizeof keep, "%d", FOLD_RECENT_KEEP);
    snprintf(rebuild_at, sizeof rebuild_at, "%d", FOLD_RECENT_INDEX_MAX);
    cache_eval(f->v, f->script_trim_recent, on_trimmed, NULL, 3, 5,
               (const char *[]){f->recent_key, f->recent_index_key, f->recent_index_old_key, keep,
                                rebuild_at},
               NULL);
}

int fold_schema_outdated(const char *version)
{
    return !strcmp(version, "2") || !strcmp(version, "3") || !strcmp(version, "4");
}

void fold_free(fold *f)
{
    if (!f) return;
    free(f->prefix);
    free(f->recent_key);
    free(f->recent_index_key);
    free(f->recent_index_old_key);
    free(f);
}

static int reply_ok(op *o, const reply *r)
{
    if (r && r->type != REPLY_ERROR) return 1;
    (*o->f->write_errors_total)++;
    if (!r) {
        o->failed = 1; /* the connection was lost: the event is folded again later */
        return 0;
    }
    /* A refusal Valkey may lift (out of memory, ...) fails the event: it is folded again from
     * the last acknowledged cursor. Any other is not retried: the same event would be refused
     * again and stall the stream behind it. */
    if (cache_error_transient(r->str)) o->failed = 1;
    log_warn("fold", "write refused for %s: %s", o->did, r->str);
    return 0;
}

static void op_finish_one(op *o)
{
    if (--o->outstanding > 0) return;
    o->cb(o->ud, !o->failed);
    free(o);
}

static void on_followup(const reply *r, void *ud)
{
    op *o = ud;
    reply_ok(o, r);
    op_finish_one(o);
}

/* A command that belongs to the event's writes; failure to send fails the event. */
static void followup(op *o, int argc, const char **argv)
{
    if (cache_command(o->f->v, on_followup, o, argc, argv, NULL) == 0)
        o->outstanding++;
    else
        o->failed = 1;
}

/* Drops P handle:<handle> once the DID's cached identity is gone. */
static void drop_handle(op *o, const reply *handle)
{
    if (handle->type != REPLY_STRING || !handle->len) return;
    buf key = {0};
    if (buf_printf(&key, "%shandle:%s", o->f->prefix, handle->str) == 0)
        followup(o, 2, (const char *[]){"DEL", key.data});
    else
        o->failed = 1;
    buf_free(&key);
}

static void on_purge(const reply *r, void *ud)
{
    op *o = ud;
    if (reply_ok(o, r)) {
        (*o->f->purges_total)++;
        drop_handle(o, r);
    }
    op_finish_one(o);
}

static void on_identity(const reply *r, void *ud)
{
    op *o = ud;
    if (reply_ok(o, r)) drop_handle(o, r);
    op_finish_one(o);
}

static op *op_new(fold *f, const event *ev, fold_done_cb cb, void *ud)
{
    size_t n = strlen(ev->did) + 1;
    op *o = calloc(1, sizeof *o + n);
    if (!o) return NULL;
    memcpy(o->did, ev->did, n);
    o->f = f;
    o->cb = cb;
    o->ud = ud;
    o->outstanding = 1; /* the script call, or an identity's first command */
    return o;
}

static const char *time_or_dash(const json_t *record, const char *field)
{
    const char *t = json_string_value(json_object_get(record, field));
    return t && *t && !strchr(t, ' ') ? t : "-";
}

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
        rc = cache_eval(f->v, f->script_hold_stats, on_followup, o, 5, 9,
                        (const char *[]){k[0].data, k[1].data, k[2].data, k[3].data, k[4].data,
                                         ev->did, value, at, HOLD_STATS_TTL},
                        NULL);
    for (int i = 0; i < 5; i++)
        buf_free(&k[i]);
    return rc;
}

int fold_hold_stats(fold *f, const event *ev, fold_done_cb cb, void *ud)
{
    if (ev->kind != EVENT_COMMIT || ev->record_kind != RECORD_HOLD_STATS || !ev->record) return 1;
    op *o = op_new(f, ev, cb, ud);
    if (!o) return -1;
    if (send_hold_stats(f, ev, o) < 0) {
        free(o);
        return -1;
    }
    return 0;
}

int fold_changes_index(const event *ev)
{
    return ev->kind == EVENT_COMMIT || ev->kind == EVENT_IDENTITY ||
           (ev->kind == EVENT_ACCOUNT && ev->purge);
}

int fold_apply(fold *f, const event *ev, fold_done_cb cb, void *ud)
{
    if (ev->kind == EVENT_COMMIT || !fold_changes_index(ev)) return 1;
    char base[2200];
    snprintf(base, sizeof base, "%s{%s}/", f->prefix, ev->did);
    op *o = op_new(f, ev, cb, ud);
    if (!o) return -1;
    int rc;
    if (ev->kind == EVENT_ACCOUNT) {
        /* Two scripts, each on its key's slot; either order is safe, and a replay runs both
         * again. */
        static const char *const names[7] = {"keys",     "repos", "recs", "id",
                                             "complete", "neg",   "gone"};
        char keys[7][2300], time_us[24];
        const char *argv[10];
        for (int i = 0; i < 7; i++) {
            snprintf(keys[i], sizeof keys[i], "%s%s", base, names[i]);
            argv[i] = keys[i];
        }
        snprintf(time_us, sizeof time_us, "%llu", (unsigned long long)ev->time_us);
        argv[7] = base;
        argv[8] = time_us;
        argv[9] = f->gone_ttl;
        rc = cache_eval(f->v, f->script_purge, on_purge, o, 7, 10, argv, NULL);
        if (rc == 0 &&
            cache_eval(f->v, f->script_forget_recent, on_followup, o, 2, 3,
                       (const char *[]){f->recent_key, f->recent_index_key, ev->did}, NULL) == 0)
            o->outstanding++;
        else if (rc == 0)
            o->failed = 1;
    } else {
        /* Plain commands: a script call costs Valkey several times these two. Another client
         * writing the identity between them only makes the next query resolve it again. */
        char id[2300];
        snprintf(id, sizeof id, "%sid", base);
        rc = cache_command(f->v, on_identity, o, 3, (const char *[]){"HGET", id, "handle"}, NULL);
        if (rc == 0) followup(o, 2, (const char *[]){"DEL", id});
    }
    if (rc < 0) {
        free(o);
        return -1;
    }
    return 0;
}
