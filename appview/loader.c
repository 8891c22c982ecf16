#include "appview/loader.h"

#include "appview/cas.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/buf.h"
#include "atproto/json_read.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/syntax.h"

#define NBUCKETS 1024
#define PAGE_SIZE 100
#define PAGE_LIMIT "100"
/* 1000 pages of 100: a repository larger than that is refused rather than listed forever. */
#define MAX_PAGES 1000

static const char *const collections[] = {"io.atcr.manifest", "io.atcr.tag"};
#define NCOLLECTIONS 2

/* What the identity path knows about an actor; strings valid during the callback only. */
typedef struct {
    load_status status;
    const char *did, *handle, *pds, *hold, *error;
    long plc_wait_ms; /* the PLC directory is parked (its 429): ms left; -1 when not */
} ident;

typedef void (*ident_cb)(const ident *id, void *ud);

typedef struct id_waiter {
    ident_cb cb;
    void *ud;
    struct id_waiter *next;
} id_waiter;

typedef struct repo_waiter {
    loader_cb cb;
    void *ud;
    struct repo_waiter *next;
} repo_waiter;

/* One identity lookup in progress, keyed by the normalised actor. */
typedef struct id_flight {
    struct id_flight *next;
    loader *l;
    char *key;
    int is_did;
    id_waiter *waiters;
    int replies; /* Valkey replies still expected for the current step */
    int broken;  /* a command of the step could not be sent: treat the step as a miss */
    int negative;
    char *did; /* handle path: what P handle:<h> pointed at */
    char *handle, *pds, *hold;
    int id_hit;
    int did_step;     /* handle path: the P{D}/id lookup was made */
    long plc_wait_ms; /* as ident's */
} id_flight;

typedef enum { STAGE_CHECK, STAGE_LISTING, STAGE_PRUNE, STAGE_SYNC, STAGE_MARK } repo_stage;

/* One repository load in progress, keyed by DID. */
typedef struct repo_flight {
    struct repo_flight *next;
    loader *l;
    char *did;
    repo_waiter *waiters;
    repo_stage stage;
    int outstanding; /* fetches, folds and Valkey commands of the current stage */
    int complete;    /* STAGE_CHECK: P{D}/complete exists */
    int rate_limited;
    long retry_after_ms;
    char *handle, *pds, *rev;
    load_status fail_status; /* LOAD_OK while nothing failed */
    char *fail_error;
    char **seen; /* "<collection>/<rkey>" of every listed record, for the prune */
    size_t nseen, seen_cap;
} repo_flight;

/* The pages of one collection. */
typedef struct listing {
    repo_flight *rf;
    const char *collection;
    char *cursor;
    int pages;
} listing;

struct loader {
    uv_loop_t *loop;
    cache_client *v;
    fold *f;
    resolver *r;
    http_client *http;
    const lexicon_set *lexicons;
    cas *cas;
    char *prefix;
    unsigned identity_ttl, negative_ttl, record_ttl;
    char s_identity_ttl[16], s_negative_ttl[16], s_record_ttl[16];
    id_flight *ids[NBUCKETS];
    repo_flight *repos[NBUCKETS];
    struct record_flight *records[NBUCKETS];
    unsigned live; /* flights in progress */
    int closing;
    uint64_t *runs_total, *coalesced_total, *records_total, *invalid_total, *pruned_total;
    uint64_t *id_hits_total, *id_misses_total;
    uint64_t *up_latest_total, *up_list_total, *up_get_total;
    uint64_t *fail_total, *timeout_total, *notfound_total;
};

/* ---- small helpers ---- */

static unsigned bucket(const char *key)
{
    unsigned h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % NBUCKETS;
}

static void on_ignored(const reply *r, void *ud)
{
    (void)ud;
    if (r && r->type == REPLY_ERROR) log_warn("loader", "cache write refused: %s", r->str);
}

/* A cache write nobody waits for: the identity path answers without it. */
static void write_quiet(loader *l, int argc, const char **argv)
{
    if (cache_command(l->v, on_ignored, NULL, argc, argv, NULL) < 0)
        log_debug("loader", "cache write skipped: Valkey not ready");
}

static load_status status_of_http(const http_result *res)
{
    return res->error == HTTP_E_TIMEOUT ? LOAD_UPSTREAM_TIMEOUT : LOAD_UPSTREAM_FAILURE;
}

static void count_status(loader *l, load_status st)
{
    if (st == LOAD_UPSTREAM_FAILURE) (*l->fail_total)++;
    if (st == LOAD_UPSTREAM_TIMEOUT) (*l->timeout_total)++;
    if (st == LOAD_NOT_FOUND) (*l->notfound_total)++;
}

static void maybe_release(loader *l);

/* ==== identity ==== */

static void id_finish(id_flight *f, load_status st, const char *did, const char *handle,
                      const char *pds, const char *hold, const char *error)
{
    loader *l = f->l;
    id_flight **pp = &l->ids[bucket(f->key)];
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    ident id = {st,
                st == LOAD_OK ? did : NULL,
                st == LOAD_OK ? handle : NULL,
                st == LOAD_OK ? pds : NULL,
                st == LOAD_OK && hold ? hold : "",
                error ? error : "",
                f->plc_wait_ms};
    for (id_waiter *w = f->waiters, *next; w; w = next) {
        next = w->next;
        w->cb(&id, w->ud);
        free(w);
    }
    free(f->key);
    free(f->did);
    free(f->handle);
    free(f->pds);
    free(f->hold);
    free(f);
    l->live--;
    maybe_release(l);
}

static void cache_identity(loader *l, const char *did, const char *handle, const char *pds,
                           const char *hold)
{
    char *id = buf_dup_printf("%s{%s}/id", l->prefix, did);
    if (!id) return;
    write_quiet(l, 8, (const char *[]){"HSET", id, "handle", handle, "pds", pds, "hold", hold});
    write_quiet(l, 3, (const char *[]){"EXPIRE", id, l->s_identity_ttl});
    free(id);
    if (*handle) {
        char *hk = buf_dup_printf("%shandle:%s", l->prefix, handle);
        if (!hk) return;
        write_quiet(l, 5, (const char *[]){"SET", hk, did, "EX", l->s_identity_ttl});
        free(hk);
    }
}

static void cache_negative(loader *l, const char *actor, int is_did)
{
    char *k = is_did ? buf_dup_printf("%s{%s}/neg", l->prefix, actor)
                     : buf_dup_printf("%shandle-neg:%s", l->prefix, actor);
    if (!k) return;
    write_quiet(l, 5, (const char *[]){"SET", k, "1", "EX", l->s_negative_ttl});
    free(k);
}

static void on_resolved(const resolver_identity *id, void *ud)
{
    id_flight *f = ud;
    loader *l = f->l;
    switch (id->status) {
    case RESOLVER_OK:
        break;
    case RESOLVER_NOT_FOUND:
        if (!l->closing) cache_negative(l, f->key, f->is_did);
        id_finish(f, LOAD_NOT_FOUND, NULL, NULL, NULL, NULL, id->error);
        return;
    case RESOLVER_INVALID: {
        /* A malformed actor is the caller's fault; a valid one whose document or endpoint is
         * unusable (garbage, a private address) is the network's, and not cached: it may be
         * fixed at any time. */
        int malformed = f->is_did ? !atp_is_did(f->key, strlen(f->key))
                                  : !atp_is_handle(f->key, strlen(f->key));
        id_finish(f, malformed ? LOAD_INVALID : LOAD_UPSTREAM_FAILURE, NULL, NULL, NULL, NULL,
                  id->error);
        return;
    }
    case RESOLVER_UPSTREAM_TIMEOUT:
        id_finish(f, LOAD_UPSTREAM_TIMEOUT, NULL, NULL, NULL, NULL, id->error);
        return;
    case RESOLVER_RATE_LIMITED:
        f->plc_wait_ms = resolver_plc_wait_ms(l->r);
        id_finish(f, LOAD_UPSTREAM_FAILURE, NULL, NULL, NULL, NULL, id->error);
        return;
    default:
        id_finish(f, LOAD_UPSTREAM_FAILURE, NULL, NULL, NULL, NULL, id->error);
        return;
    }
    const char *pds = id->pds ? id->pds : "";
    /* A hold's service, where its io.atcr.hold.stats records are listed (appview/holds.c asks
     * it for counts); the HTTP client refuses it on a private address unless allowed. */
    const char *hold = id->doc ? did_doc_service(id->doc, "#atcr_hold", NULL) : NULL;
    if (!hold || strncmp(hold, "http", 4)) hold = "";
    if (id->handle_state == RESOLVER_HANDLE_UNCHECKED) {
        /* The DID is sound but the handle could not be checked: answer, cache nothing. */
        if (f->is_did)
            id_finish(f, LOAD_OK, id->did, NULL, pds, hold, NULL);
        else
            id_finish(f, LOAD_UPSTREAM_FAILURE, NULL, NULL, NULL, NULL,
                      "handle could not be verified");
        return;
    }
    if (!f->is_did && id->handle_state == RESOLVER_HANDLE_INVALID) {
        /* The handle points at a DID whose document does not claim it: serving that DID's
         * data under this name would let anyone pose as anyone. What the DID's real handle
         * is was not checked here, so its identity is not cached either. */
        if (!l->closing) cache_negative(l, f->key, 0);
        id_finish(f, LOAD_NOT_FOUND, NULL, NULL, NULL, NULL,
                  "handle does not match its DID document");
        return;
    }
    const char *handle =
        id->handle_state == RESOLVER_HANDLE_VERIFIED && id->handle ? id->handle : "";
    if (!l->closing) cache_identity(l, id->did, handle, pds, hold);
    id_finish(f, LOAD_OK, id->did, *handle ? handle : NULL, pds, hold, NULL);
}

static int id_network(id_flight *f)
{
    (*f->l->id_misses_total)++;
    return resolver_resolve(f->l->r, f->key, on_resolved, f);
}

static void id_network_or_fail(id_flight *f)
{
    if (f->l->closing) {
        id_finish(f, LOAD_UPSTREAM_FAILURE, NULL, NULL, NULL, NULL, "shutting down");
    } else if (id_network(f) < 0) {
        id_finish(f, LOAD_UPSTREAM_FAILURE, NULL, NULL, NULL, NULL, "out of memory");
    }
}

/* HMGET P{D}/id handle pds hold: a hit when pds is present (possibly empty: no PDS). */
static void take_id_reply(id_flight *f, const reply *r)
{
    if (!r || r->type != REPLY_ARRAY || r->elements != 3) return;
    if (!reply_is_string(r->element[1])) return;
    f->pds = strdup(r->element[1]->str);
    f->handle = strdup(reply_is_string(r->element[0]) ? r->element[0]->str : "");
    f->hold = strdup(reply_is_string(r->element[2]) ? r->element[2]->str : "");
    f->id_hit = f->pds && f->handle && f->hold;
}

static void id_step_done(id_flight *f);

static void on_id_reply(const reply *r, void *ud)
{
    id_flight *f = ud;
    if (!r) {
        f->broken = 1;
    } else if (r->type == REPLY_INTEGER) {
        f->negative |= r->integer > 0; /* EXISTS of a negative key */
    } else if (r->type == REPLY_STRING && !f->is_did && !f->did) {
        f->did = strdup(r->str); /* GET P handle:<h> */
    } else if (r->type == REPLY_ARRAY) {
        take_id_reply(f, r);
    }
    if (--f->replies == 0) id_step_done(f);
}

static void id_send(id_flight *f, int argc, const char **argv)
{
    if (cache_command(f->l->v, on_id_reply, f, argc, argv, NULL) == 0)
        f->replies++;
    else
        f->broken = 1;
}

/* Sends the lookups of the next step; 0 when at least one is in flight. */
static int id_lookup_did(id_flight *f, const char *did)
{
    loader *l = f->l;
    char *id = buf_dup_printf("%s{%s}/id", l->prefix, did);
    if (!id) return -1;
    f->did_step = !f->is_did;
    if (f->is_did) {
        char *neg = buf_dup_printf("%s{%s}/neg", l->prefix, did);
        if (neg) id_send(f, 2, (const char *[]){"EXISTS", neg});
        free(neg);
    }
    id_send(f, 5, (const char *[]){"HMGET", id, "handle", "pds", "hold"});
    free(id);
    return f->replies ? 0 : -1;
}

static void id_step_done(id_flight *f)
{
    loader *l = f->l;
    if (f->negative) {
        (*l->id_hits_total)++;
        id_finish(f, LOAD_NOT_FOUND, NULL, NULL, NULL, NULL, "not found (cached)");
        return;
    }
    if (f->broken || l->closing) {
        id_network_or_fail(f);
        return;
    }
    if (f->id_hit) {
        const char *did = f->is_did ? f->key : f->did;
        /* By handle, P handle:<h> is trusted only when the DID's identity names it back. */
        if (f->is_did || !strcmp(f->handle, f->key)) {
            (*l->id_hits_total)++;
            id_finish(f, LOAD_OK, did, *f->handle ? f->handle : NULL, f->pds, f->hold, NULL);
            return;
        }
        id_network_or_fail(f);
        return;
    }
    if (!f->is_did && f->did && !f->did_step && atp_is_did(f->did, strlen(f->did)) &&
        id_lookup_did(f, f->did) == 0)
        return;
    id_network_or_fail(f);
}

/* Starts the first step; -1 when nothing could be started (caller cleans up). */
static int id_start(id_flight *f)
{
    loader *l = f->l;
    size_t n = strlen(f->key);
    int wellformed = f->is_did ? atp_is_did(f->key, n) : atp_is_handle(f->key, n);
    if (!wellformed) return id_network(f);
    if (f->is_did) {
        if (id_lookup_did(f, f->key) == 0) return 0;
    } else {
        char *neg = buf_dup_printf("%shandle-neg:%s", l->prefix, f->key);
        char *hk = buf_dup_printf("%shandle:%s", l->prefix, f->key);
        if (neg && hk) {
            id_send(f, 2, (const char *[]){"EXISTS", neg});
            id_send(f, 2, (const char *[]){"GET", hk});
        }
        free(neg);
        free(hk);
        if (f->replies) return 0;
    }
    f->broken = 0;
    return id_network(f);
}

static int ident_resolve(loader *l, const char *actor, ident_cb cb, void *ud)
{
    id_waiter *w = calloc(1, sizeof *w);
    if (!w) return -1;
    w->cb = cb;
    w->ud = ud;
    int is_did = !strncmp(actor, "did:", 4);
    char *key = strdup(actor);
    if (!key) {
        free(w);
        return -1;
    }
    if (!is_did)
        for (char *p = key; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    unsigned b = bucket(key);
    for (id_flight *f = l->ids[b]; f; f = f->next) {
        if (!strcmp(f->key, key)) {
            free(key);
            w->next = f->waiters;
            f->waiters = w;
            (*l->coalesced_total)++;
            return 0;
        }
    }
    id_flight *f = calloc(1, sizeof *f);
    if (!f) {
        free(key);
        free(w);
        return -1;
    }
    f->l = l;
    f->key = key;
    f->is_did = is_did;
    f->waiters = w;
    f->plc_wait_ms = -1;
    if (id_start(f) < 0) {
        free(f->key);
        free(f);
        free(w);
        return -1;
    }
    /* Replies always come later, so registering after the sends is safe. */
    f->next = l->ids[b];
    l->ids[b] = f;
    l->live++;
    return 0;
}

typedef struct {
    loader_cb cb;
    void *ud;
} public_waiter;

static void on_public_ident(const ident *id, void *ud)
{
    public_waiter *w = ud;
    load_result res = {.status = id->status,
                       .did = id->did,
                       .handle = id->handle,
                       .error = id->error,
                       .pds = id->pds,
                       .hold = id->hold,
                       .rate_limited = id->plc_wait_ms >= 0,
                       .retry_after_ms = id->plc_wait_ms};
    w->cb(&res, w->ud);
    free(w);
}

int loader_resolve(loader *l, const char *actor, loader_cb cb, void *ud)
{
    public_waiter *w = malloc(sizeof *w);
    if (!w) return -1;
    w->cb = cb;
    w->ud = ud;
    if (ident_resolve(l, actor, on_public_ident, w) < 0) {
        free(w);
        return -1;
    }
    return 0;
}

/* ==== records: listing entry -> event ==== */

static const char *get_string(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* ==== repositories ==== */

static void rf_free(repo_flight *rf)
{
    for (size_t i = 0; i < rf->nseen; i++)
        free(rf->seen[i]);
    free(rf->seen);
    free(rf->did);
    free(rf->handle);
    free(rf->pds);
    free(rf->rev);
    free(rf->fail_error);
    free(rf);
}

static void rf_finish(repo_flight *rf, load_status st, const char *error)
{
    loader *l = rf->l;
    repo_flight **pp = &l->repos[bucket(rf->did)];
    while (*pp != rf)
        pp = &(*pp)->next;
    *pp = rf->next;
    count_status(l, st);
    if (st != LOAD_OK && st != LOAD_NOT_FOUND)
        log_warn("loader", "loading %s failed: %s", rf->did, error ? error : "");
    load_result res = {.status = st,
                       .did = st == LOAD_OK ? rf->did : NULL,
                       .handle = st == LOAD_OK ? rf->handle : NULL,
                       .error = error ? error : "",
                       .pds = st == LOAD_OK && rf->pds ? rf->pds : NULL,
                       .records = rf->nseen,
                       .rate_limited = rf->rate_limited,
                       .retry_after_ms = rf->retry_after_ms};
    for (repo_waiter *w = rf->waiters, *next; w; w = next) {
        next = w->next;
        w->cb(&res, w->ud);
        free(w);
    }
    rf_free(rf);
    l->live--;
    maybe_release(l);
}

/* Records the first failure; the flight ends once everything it started has come back. */
static void rf_fail(repo_flight *rf, load_status st, const char *error)
{
    if (rf->fail_status != LOAD_OK) return;
    rf->fail_status = st;
    rf->fail_error = strdup(error);
}

static void rf_next(repo_flight *rf);

static void rf_release(repo_flight *rf)
{
    if (--rf->outstanding == 0) rf_next(rf);
}

static void on_folded(void *ud, int ok, size_t written)
{
    repo_flight *rf = ud;
    if (!ok) rf_fail(rf, LOAD_UPSTREAM_FAILURE, "cache write failed");
    rf_release(rf);
}

/* Folds a batch of the DID's records (from one page, or the prune) through the fold's rules,
 * as one compare-and-set beside the ingester (appview/cas.h). */
static void rf_fold(repo_flight *rf, const event *evs, size_t n)
{
    int rc = cas_fold(rf->l->cas, evs, n, on_folded, rf);
    if (rc == 0)
        rf->outstanding++;
    else if (rc < 0)
        rf_fail(rf, LOAD_UPSTREAM_FAILURE, "cache unavailable");
}

static int seen_add(repo_flight *rf, const char *collection, const char *rkey)
{
    if (rf->nseen == rf->seen_cap) {
        size_t cap = rf->seen_cap ? rf->seen_cap * 2 : 64;
        char **s = realloc(rf->seen, cap * sizeof *s);
        if (!s) return -1;
        rf->seen = s;
        rf->seen_cap = cap;
    }
    char *k = buf_dup_printf("%s/%s", collection, rkey);
    if (!k) return -1;
    rf->seen[rf->nseen++] = k;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One listRecords entry: {"uri": "at://D/<collection>/<rkey>", "cid", "value"}, into *ev
 * (pointing into item). 0 when it is a record to fold. */
static int take_record(listing *ls, json_t *item, event *ev)
{
    repo_flight *rf = ls->rf;
    loader *l = rf->l;
    const char *uri = get_string(item, "uri");
    const char *cid = get_string(item, "cid");
    json_t *value = json_object_get(item, "value");
    char *prefix = buf_dup_printf("at://%s/%s/", rf->did, ls->collection);
    if (!prefix) {
        rf_fail(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
        return -1;
    }
    size_t pn = strlen(prefix);
    const char *rkey = uri && !strncmp(uri, prefix, pn) ? uri + pn : NULL;
    free(prefix);
    if (event_from_record(ev, rf->did, ls->collection, rkey, rf->rev, cid, value, l->lexicons) !=
        EVENT_COMMIT) {
        (*l->invalid_total)++;
        log_info("loader", "%s: skipping record %s: %s", rf->did, uri ? uri : "(no uri)",
                 ev->reason);
        /* Still listed: the prune must not delete what the PDS holds, even if unusable. */
        if (rkey && seen_add(rf, ls->collection, rkey) < 0)
            rf_fail(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
        return -1;
    }
    (*l->records_total)++;
    if (seen_add(rf, ls->collection, rkey) < 0) {
        rf_fail(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
        return -1;
    }
    return 0;
}

/* The XRPC error name of a response, e.g. "RepoNotFound"; "" when none. */
static const char *xrpc_error_name(const http_result *res, json_t **root)
{
    *root = json_read(res->body, res->len);
    const char *e = get_string(*root, "error");
    return e ? e : "";
}

/* Sorts an upstream answer: 0 when it is a 200 to parse, else the status to end with, and for
 * a 429 how long the host asked to wait. A repository that is not there is cached as a
 * negative entry of negative_did (NULL: nothing cached). */
static load_status classify(loader *l, const char *negative_did, const http_result *res,
                            const char *what, char *msg, size_t msglen, int *rate_limited,
                            long *retry_after_ms)
{
    if (res->error != HTTP_OK) {
        snprintf(msg, msglen, "%s: %s", what, res->error_text);
        return status_of_http(res);
    }
    if (res->status == 200) return LOAD_OK;
    if (res->status == 429) {
        *rate_limited = 1;
        *retry_after_ms = http_result_wait_ms(res, NULL);
    }
    json_t *root = NULL;
    const char *name = xrpc_error_name(res, &root);
    load_status st = LOAD_UPSTREAM_FAILURE;
    if (res->status == 404 || !strcmp(name, "RepoNotFound") || !strcmp(name, "RepoDeactivated") ||
        !strcmp(name, "RepoTakendown") || !strcmp(name, "RepoSuspended"))
        st = LOAD_NOT_FOUND;
    snprintf(msg, msglen, "%s: HTTP %ld %s", what, res->status, *name ? name : "");
    json_decref(root);
    if (st == LOAD_NOT_FOUND && negative_did && !l->closing) cache_negative(l, negative_did, 1);
    return st;
}

/* The cursor of the page after a listRecords page, or NULL when it was the last: a short page
 * is the last one (a PDS still names a cursor there), and so is one whose cursor did not move
 * from prev, the cursor that asked for it. */
static const char *next_cursor(const json_t *root, const json_t *records, const char *prev)
{
    const char *cursor = get_string(root, "cursor");
    return cursor && *cursor && json_array_size(records) >= PAGE_SIZE &&
                   (!prev || strcmp(cursor, prev))
               ? cursor
               : NULL;
}

/* classify for a repository's load. */
static load_status classify_repo(repo_flight *rf, const http_result *res, const char *what,
                                 char *msg, size_t msglen)
{
    return classify(rf->l, rf->did, res, what, msg, msglen, &rf->rate_limited, &rf->retry_after_ms);
}

static int list_page(listing *ls);

static void listing_end(listing *ls)
{
    repo_flight *rf = ls->rf;
    free(ls->cursor);
    free(ls);
    rf_release(rf);
}

static void on_page(const http_result *res, void *ud)
{
    listing *ls = ud;
    repo_flight *rf = ls->rf;
    char msg[256];
    load_status st = classify_repo(rf, res, "listRecords", msg, sizeof msg);
    if (st != LOAD_OK) {
        rf_fail(rf, st, msg);
        listing_end(ls);
        return;
    }
    json_t *root = json_read(res->body, res->len);
    json_t *records = json_object_get(root, "records");
    if (!json_is_array(records)) {
        json_decref(root);
        rf_fail(rf, LOAD_UPSTREAM_FAILURE, "listRecords: malformed response");
        listing_end(ls);
        return;
    }
    size_t i, n = 0;
    json_t *item;
    event *evs = calloc(json_array_size(records) + 1, sizeof *evs);
    if (!evs) rf_fail(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
    json_array_foreach(records, i, item)
    {
        if (evs && json_is_object(item) && take_record(ls, item, &evs[n]) == 0) n++;
    }
    if (evs && rf->fail_status == LOAD_OK) rf_fold(rf, evs, n);
    free(evs);
    const char *cursor = next_cursor(root, records, ls->cursor);
    int more = cursor != NULL;
    char *next = more ? strdup(cursor) : NULL;
    json_decref(root);
    if (!more || rf->fail_status != LOAD_OK) {
        free(next);
        listing_end(ls);
        return;
    }
    free(ls->cursor);
    ls->cursor = next;
    if (!next || ++ls->pages >= MAX_PAGES || rf->l->closing || list_page(ls) < 0) {
        rf_fail(rf, LOAD_UPSTREAM_FAILURE,
                ls->pages >= MAX_PAGES ? "repository too large" : "listing interrupted");
        listing_end(ls);
    }
}

/* GET <host>/xrpc/com.atproto.repo.listRecords of one page. 0 when sent (cb runs once), -1 when
 * not (cb does not run). */
static int get_list_page(loader *l, const char *host, const char *did, const char *collection,
                         const char *cursor, http_done_cb cb, void *ud)
{
    buf url = {0};
    int rc = buf_printf(&url, "%s/xrpc/com.atproto.repo.listRecords?repo=", host);
    rc |= buf_url_encode(&url, did);
    rc |= buf_printf(&url, "&collection=%s&limit=" PAGE_LIMIT, collection);
    if (cursor) {
        rc |= buf_puts(&url, "&cursor=");
        rc |= buf_url_encode(&url, cursor);
    }
    if (rc == 0) rc = http_get(l->http, url.data, NULL, cb, ud);
    buf_free(&url);
    if (rc) return -1;
    (*l->up_list_total)++;
    return 0;
}

/* Callers test < 0; ls is owned by on_page only when the request was submitted. */
static int list_page(listing *ls)
{
    repo_flight *rf = ls->rf;
    return get_list_page(rf->l, rf->pds, rf->did, ls->collection, ls->cursor, on_page, ls);
}

static void start_listing(repo_flight *rf)
{
    rf->stage = STAGE_LISTING;
    rf->outstanding = 1; /* held until both listings are started */
    for (int i = 0; i < NCOLLECTIONS; i++) {
        listing *ls = calloc(1, sizeof *ls);
        if (!ls) {
            rf_fail(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
            break;
        }
        ls->rf = rf;
        ls->collection = collections[i];
        if (list_page(ls) < 0) {
            free(ls);
            rf_fail(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
            break;
        }
        rf->outstanding++;
    }
    rf_release(rf);
}

static void on_latest_commit(const http_result *res, void *ud)
{
    repo_flight *rf = ud;
    char msg[256];
    load_status st = classify_repo(rf, res, "getLatestCommit", msg, sizeof msg);
    if (st != LOAD_OK) {
        rf_finish(rf, st, msg);
        return;
    }
    json_t *root = json_read(res->body, res->len);
    const char *rev = get_string(root, "rev");
    if (rev && atp_is_tid(rev, strlen(rev))) rf->rev = strdup(rev);
    json_decref(root);
    if (!rf->rev) {
        rf_finish(rf, LOAD_UPSTREAM_FAILURE, "getLatestCommit: malformed response");
        return;
    }
    if (rf->l->closing) {
        rf_finish(rf, LOAD_UPSTREAM_FAILURE, "shutting down");
        return;
    }
    start_listing(rf);
}

static void on_repo_ident(const ident *id, void *ud)
{
    repo_flight *rf = ud;
    loader *l = rf->l;
    if (id->status != LOAD_OK) {
        rf_finish(rf, id->status, id->error);
        return;
    }
    if (!id->pds || !*id->pds) {
        rf_finish(rf, LOAD_NOT_FOUND, "the DID document names no PDS");
        return;
    }
    rf->pds = strdup(id->pds);
    free(rf->handle);
    rf->handle = id->handle ? strdup(id->handle) : NULL;
    if (!rf->pds || (id->handle && !rf->handle) || l->closing) {
        rf_finish(rf, LOAD_UPSTREAM_FAILURE, l->closing ? "shutting down" : "out of memory");
        return;
    }
    (*l->runs_total)++;
    buf url = {0};
    int rc = buf_printf(&url, "%s/xrpc/com.atproto.sync.getLatestCommit?did=", rf->pds);
    rc |= buf_url_encode(&url, rf->did);
    if (rc == 0) rc = http_get(l->http, url.data, NULL, on_latest_commit, rf);
    buf_free(&url);
    if (rc < 0) {
        rf_finish(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
        return;
    }
    (*l->up_latest_total)++;
}

/* Records of D in Valkey that the listing did not return were deleted on the PDS (a delete
 * the firehose did not deliver): they get a delete at the listing's rev, which the plan
 * ignores for any record written by a newer commit than the listing. */
static void on_recs(const reply *r, void *ud)
{
    repo_flight *rf = ud;
    loader *l = rf->l;
    if (!r || r->type != REPLY_ARRAY) {
        rf_fail(rf, LOAD_UPSTREAM_FAILURE, "cache unavailable");
        rf_release(rf);
        return;
    }
    if (rf->nseen) qsort(rf->seen, rf->nseen, sizeof *rf->seen, cmp_str);
    event *evs = calloc(r->elements + 1, sizeof *evs);
    char **collections_of = calloc(r->elements + 1, sizeof *collections_of);
    size_t n = 0;
    if (!evs || !collections_of) rf_fail(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
    for (size_t i = 0; evs && collections_of && i < r->elements; i++) {
        const reply *m = r->element[i];
        if (m->type != REPLY_STRING) continue;
        const char *rest = m->str; /* <collection>/<rkey>, or another field of the hash */
        const char *slash = strchr(rest, '/');
        if (!slash) continue;
        size_t cn = (size_t)(slash - rest);
        int listed_collection = 0;
        for (int c = 0; c < NCOLLECTIONS; c++)
            listed_collection |= strlen(collections[c]) == cn && !strncmp(rest, collections[c], cn);
        if (!listed_collection ||
            (rf->nseen && bsearch(&rest, rf->seen, rf->nseen, sizeof *rf->seen, cmp_str)))
            continue;
        if (!(collections_of[n] = strndup(rest, cn))) {
            rf_fail(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
            break;
        }
        evs[n] = (event){.kind = EVENT_COMMIT,
                         .did = rf->did,
                         .is_delete = 1,
                         .collection = collections_of[n],
                         .rkey = slash + 1,
                         .rev = rf->rev};
        n++;
        (*l->pruned_total)++;
    }
    if (rf->fail_status == LOAD_OK) rf_fold(rf, evs, n);
    for (size_t i = 0; collections_of && i < n; i++)
        free(collections_of[i]);
    free(collections_of);
    free(evs);
    rf_release(rf);
}

static void on_marked(const reply *r, void *ud)
{
    repo_flight *rf = ud;
    if (!r || r->type == REPLY_ERROR) rf_fail(rf, LOAD_UPSTREAM_FAILURE, "cache write failed");
    rf_release(rf);
}

static void on_synced(int ok, void *ud)
{
    repo_flight *rf = ud;
    if (!ok) rf_fail(rf, LOAD_UPSTREAM_FAILURE, "cache writes not confirmed");
    rf_release(rf);
}

static int rf_send(repo_flight *rf, cache_reply_cb cb, int argc, const char **argv)
{
    if (cache_command(rf->l->v, cb, rf, argc, argv, NULL) < 0) return -1;
    rf->outstanding++;
    return 0;
}

/* Runs when everything of a stage has come back. */
static void rf_next(repo_flight *rf)
{
    loader *l = rf->l;
    if (rf->fail_status != LOAD_OK) {
        rf_finish(rf, rf->fail_status, rf->fail_error);
        return;
    }
    if (l->closing) {
        rf_finish(rf, LOAD_UPSTREAM_FAILURE, "shutting down");
        return;
    }
    int rc = -1;
    switch (rf->stage) {
    case STAGE_CHECK:
        if (rf->complete) {
            rf_finish(rf, LOAD_OK, NULL);
            return;
        }
        if (ident_resolve(l, rf->did, on_repo_ident, rf) < 0)
            rf_finish(rf, LOAD_UPSTREAM_FAILURE, "out of memory");
        return;
    case STAGE_LISTING: {
        rf->stage = STAGE_PRUNE;
        char *recs = buf_dup_printf("%s{%s}/recs", l->prefix, rf->did);
        if (recs) rc = rf_send(rf, on_recs, 2, (const char *[]){"HKEYS", recs});
        free(recs);
        if (rc == 0) return;
        break;
    }
    case STAGE_PRUNE:
        /* What the load wrote (the recent list may live on another node than the DID) is
         * answered, and with WAIT configured on the replicas, before the index says complete:
         * a crash or a failover before leaves it incomplete, and it is loaded again. */
        rf->stage = STAGE_SYNC;
        if (cache_sync(l->v, on_synced, rf) == 0) {
            rf->outstanding++;
            return;
        }
        break;
    case STAGE_SYNC: {
        rf->stage = STAGE_MARK;
        char *complete = buf_dup_printf("%s{%s}/complete", l->prefix, rf->did);
        if (complete)
            rc = rf_send(rf, on_marked, 5,
                         (const char *[]){"SET", complete, "1", "EX", l->s_record_ttl});
        free(complete);
        if (rc == 0) return;
        break;
    }
    case STAGE_MARK:
        log_info("loader", "loaded %s from %s at rev %s (%zu records)", rf->did, rf->pds, rf->rev,
                 rf->nseen);
        rf_finish(rf, LOAD_OK, NULL);
        return;
    }
    rf_finish(rf, LOAD_UPSTREAM_FAILURE, "cache unavailable");
}

static void on_check(const reply *r, void *ud)
{
    repo_flight *rf = ud;
    if (r && r->type == REPLY_STRING && !strcmp(r->str, "1")) rf->complete = 1;
    rf_release(rf);
}

static void on_check_handle(const reply *r, void *ud)
{
    repo_flight *rf = ud;
    if (r && r->type == REPLY_STRING && r->len && !rf->handle) rf->handle = strdup(r->str);
    rf_release(rf);
}

static int rf_start(repo_flight *rf, int reload)
{
    loader *l = rf->l;
    rf->stage = STAGE_CHECK;
    if (!reload && atp_is_did(rf->did, strlen(rf->did))) {
        char *complete = buf_dup_printf("%s{%s}/complete", l->prefix, rf->did);
        char *id = buf_dup_printf("%s{%s}/id", l->prefix, rf->did);
        if (complete && id && rf_send(rf, on_check, 2, (const char *[]){"GET", complete}) == 0)
            rf_send(rf, on_check_handle, 3, (const char *[]){"HGET", id, "handle"});
        free(complete);
        free(id);
        if (rf->outstanding) return 0;
    }
    /* Malformed, or Valkey away: the identity path reports it (always later). */
    return ident_resolve(l, rf->did, on_repo_ident, rf);
}

static int ensure(loader *l, const char *did, int reload, loader_cb cb, void *ud)
{
    repo_waiter *w = calloc(1, sizeof *w);
    if (!w) return -1;
    w->cb = cb;
    w->ud = ud;
    unsigned b = bucket(did);
    /* the newest flight comes first in its bucket: later calls join the reload */
    for (repo_flight *rf = reload ? NULL : l->repos[b]; rf; rf = rf->next) {
        if (!strcmp(rf->did, did)) {
            w->next = rf->waiters;
            rf->waiters = w;
            /* Still before its check's answer: the flight now lists whatever it finds. */
            (*l->coalesced_total)++;
            return 0;
        }
    }
    repo_flight *rf = calloc(1, sizeof *rf);
    if (!rf || !(rf->did = strdup(did))) {
        free(rf);
        free(w);
        return -1;
    }
    rf->l = l;
    rf->waiters = w;
    rf->fail_status = LOAD_OK;
    rf->retry_after_ms = -1;
    if (rf_start(rf, reload) < 0) {
        rf->waiters = NULL;
        rf_free(rf);
        free(w);
        return -1;
    }
    rf->next = l->repos[b];
    l->repos[b] = rf;
    l->live++;
    return 0;
}

int loader_ensure_repo(loader *l, const char *did, loader_cb cb, void *ud)
{
    return ensure(l, did, 0, cb, ud);
}

int loader_reload_repo(loader *l, const char *did, loader_cb cb, void *ud)
{
    return ensure(l, did, 1, cb, ud);
}

/* ==== a hold's stats ==== */

/* The io.atcr.hold.stats records of one hold, listed from its #atcr_hold service, each folded
 * as the firehose folds it (fold_hold_stats: the user's last known counts from that hold,
 * guarded by the record's updatedAt, so a listing never overwrites a newer event). */
typedef struct {
    loader *l;
    char *did, *hold, *cursor;
    int pages, outstanding;
    size_t records;
    load_status fail_status;
    char fail_error[256];
    int rate_limited;
    long retry_after_ms;
    loader_cb cb;
    void *ud;
} hold_flight;

static int hold_page(hold_flight *hf);

static void hold_fail(hold_flight *hf, load_status st, const char *error)
{
    if (hf->fail_status != LOAD_OK) return;
    hf->fail_status = st;
    snprintf(hf->fail_error, sizeof hf->fail_error, "%s", error);
}

static void hold_release(hold_flight *hf)
{
    if (--hf->outstanding > 0) return;
    loader *l = hf->l;
    count_status(l, hf->fail_status);
    if (hf->fail_status != LOAD_OK)
        log_warn("loader", "loading the stats of hold %s failed: %s", hf->did, hf->fail_error);
    load_result res = {.status = hf->fail_status,
                       .did = hf->fail_status == LOAD_OK ? hf->did : NULL,
                       .error = hf->fail_error,
                       .records = hf->records,
                       .rate_limited = hf->rate_limited,
                       .retry_after_ms = hf->retry_after_ms};
    hf->cb(&res, hf->ud);
    free(hf->did);
    free(hf->hold);
    free(hf->cursor);
    free(hf);
    l->live--;
    maybe_release(l);
}

static void on_hold_folded(void *ud, int ok)
{
    hold_flight *hf = ud;
    if (!ok) hold_fail(hf, LOAD_UPSTREAM_FAILURE, "cache write failed");
    hold_release(hf);
}

/* One listed record: folded when it is a valid stats record of this hold. */
static void hold_record(hold_flight *hf, json_t *item, const char *prefix, size_t pn)
{
    loader *l = hf->l;
    const char *uri = get_string(item, "uri");
    const char *rkey = uri && !strncmp(uri, prefix, pn) ? uri + pn : NULL;
    event ev;
    /* A hold has no commit to name; its stats fold by updatedAt, not by rev (the lowest TID
     * stands in, for the record checks). */
    if (event_from_record(&ev, hf->did, EVENT_COLLECTION_HOLD_STATS, rkey, "2222222222222",
                          get_string(item, "cid"), json_object_get(item, "value"),
                          l->lexicons) != EVENT_COMMIT ||
        !rkey) {
        (*l->invalid_total)++;
        log_info("loader", "%s: skipping record %s: %s", hf->did, uri ? uri : "(no uri)",
                 rkey ? ev.reason : "not of this hold");
        return;
    }
    (*l->records_total)++;
    hf->records++;
    int rc = fold_hold_stats(l->f, &ev, on_hold_folded, hf);
    if (rc == 0)
        hf->outstanding++;
    else if (rc < 0)
        hold_fail(hf, LOAD_UPSTREAM_FAILURE, "cache unavailable");
}

static void on_hold_page(const http_result *res, void *ud)
{
    hold_flight *hf = ud;
    char msg[256];
    load_status st = classify(hf->l, NULL, res, "listRecords", msg, sizeof msg, &hf->rate_limited,
                              &hf->retry_after_ms);
    if (st != LOAD_OK) {
        hold_fail(hf, st, msg);
        hold_release(hf);
        return;
    }
    json_t *root = json_read(res->body, res->len);
    json_t *records = json_object_get(root, "records");
    char *prefix = buf_dup_printf("at://%s/%s/", hf->did, EVENT_COLLECTION_HOLD_STATS);
    if (!json_is_array(records) || !prefix) {
        hold_fail(hf, LOAD_UPSTREAM_FAILURE,
                  prefix ? "listRecords: malformed response" : "out of memory");
    } else {
        size_t i;
        json_t *item;
        json_array_foreach(records, i, item)
        {
            if (json_is_object(item)) hold_record(hf, item, prefix, strlen(prefix));
        }
        const char *cursor = next_cursor(root, records, hf->cursor);
        if (hf->fail_status == LOAD_OK && cursor) {
            free(hf->cursor);
            hf->cursor = strdup(cursor);
            if (!hf->cursor || ++hf->pages >= MAX_PAGES || hf->l->closing || hold_page(hf) < 0)
                hold_fail(hf, LOAD_UPSTREAM_FAILURE,
                          hf->pages >= MAX_PAGES ? "too many stats records"
                                                 : "listing interrupted");
        }
    }
    free(prefix);
    json_decref(root);
    hold_release(hf);
}

static int hold_page(hold_flight *hf)
{
    if (get_list_page(hf->l, hf->hold, hf->did, EVENT_COLLECTION_HOLD_STATS, hf->cursor,
                      on_hold_page, hf) < 0)
        return -1;
    hf->outstanding++;
    return 0;
}

int loader_load_hold_stats(loader *l, const char *did, const char *hold, loader_cb cb, void *ud)
{
    hold_flight *hf = calloc(1, sizeof *hf);
    if (!hf) return -1;
    hf->l = l;
    hf->did = strdup(did);
    hf->hold = strdup(hold);
    hf->cb = cb;
    hf->ud = ud;
    hf->retry_after_ms = -1;
    if (!hf->did || !hf->hold || hold_page(hf) < 0) {
        free(hf->did);
        free(hf->hold);
        free(hf);
        return -1;
    }
    (*l->runs_total)++;
    l->live++;
    return 0;
}

/* ==== single records ==== */

/* One record fetched from its PDS (com.atproto.repo.getRecord), keyed "D collection/rkey": the
 * record and the repository's latest commit are asked at once; the record is folded at that
 * commit's rev (so the firehose's newer events still win), or, when the PDS has no such record,
 * a delete at that rev leaves its tombstone (so the index knows it is gone). */
typedef struct record_flight {
    struct record_flight *next;
    loader *l;
    char *key, *did, *collection, *rkey;
    repo_waiter *waiters;
    int outstanding;
    char *rev;
    json_t *got; /* getRecord's answer; NULL when the PDS has no such record */
    load_status fail_status;
    char *fail_error;
} record_flight;

static void rec_finish(record_flight *f, load_status st, const char *error)
{
    loader *l = f->l;
    record_flight **pp = &l->records[bucket(f->key)];
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    count_status(l, st);
    if (st != LOAD_OK && st != LOAD_NOT_FOUND)
        log_warn("loader", "fetching %s failed: %s", f->key, error ? error : "");
    load_result res = {.status = st,
                       .did = st == LOAD_OK ? f->did : NULL,
                       .error = error ? error : "",
                       .retry_after_ms = -1};
    for (repo_waiter *w = f->waiters, *next; w; w = next) {
        next = w->next;
        w->cb(&res, w->ud);
        free(w);
    }
    json_decref(f->got);
    free(f->key);
    free(f->did);
    free(f->collection);
    free(f->rkey);
    free(f->rev);
    free(f->fail_error);
    free(f);
    l->live--;
    maybe_release(l);
}

static void rec_fail(record_flight *f, load_status st, const char *error)
{
    if (f->fail_status != LOAD_OK) return;
    f->fail_status = st;
    f->fail_error = strdup(error);
}

static void on_rec_folded(void *ud, int ok, size_t written)
{
    record_flight *f = ud;
    rec_finish(f, ok ? LOAD_OK : LOAD_UPSTREAM_FAILURE, ok ? NULL : "cache write failed");
}

/* Both answers are in: fold what the PDS holds. */
static void rec_fold(record_flight *f)
{
    loader *l = f->l;
    if (f->fail_status != LOAD_OK || l->closing) {
        rec_finish(f, l->closing ? LOAD_UPSTREAM_FAILURE : f->fail_status,
                   l->closing ? "shutting down" : f->fail_error);
        return;
    }
    event ev = {.kind = EVENT_COMMIT,
                .did = f->did,
                .collection = f->collection,
                .rkey = f->rkey,
                .rev = f->rev,
                .is_delete = 1};
    if (f->got &&
        event_from_record(&ev, f->did, f->collection, f->rkey, f->rev, get_string(f->got, "cid"),
                          json_object_get(f->got, "value"), l->lexicons) != EVENT_COMMIT) {
        (*l->invalid_total)++;
        log_info("loader", "%s: skipping record: %s", f->key, ev.reason);
        rec_finish(f, LOAD_OK, NULL);
        return;
    }
    if (f->got) (*l->records_total)++;
    int rc = cas_fold(l->cas, &ev, 1, on_rec_folded, f);
    if (rc < 0) rec_finish(f, LOAD_UPSTREAM_FAILURE, "cache unavailable");
}

static void rec_release(record_flight *f)
{
    if (--f->outstanding == 0) rec_fold(f);
}

/* The answer to an XRPC call: its parsed body when 200, else the status it ends with. */
static load_status rec_classify(record_flight *f, const http_result *res, const char *what,
                                json_t **body)
{
    char msg[256];
    *body = NULL;
    if (res->error != HTTP_OK) {
        snprintf(msg, sizeof msg, "%s: %s", what, res->error_text);
        rec_fail(f, status_of_http(res), msg);
        return status_of_http(res);
    }
    json_error_t err;
    json_t *root = json_loadb(res->body, res->len, 0, &err);
    if (res->status == 200 && json_is_object(root)) {
        *body = root;
        return LOAD_OK;
    }
    const char *name = get_string(root, "error");
    load_status st = res->status == 400 && name && !strcmp(name, "RecordNotFound")
                         ? LOAD_NOT_FOUND
                         : LOAD_UPSTREAM_FAILURE;
    if (st == LOAD_UPSTREAM_FAILURE) {
        snprintf(msg, sizeof msg, "%s: HTTP %ld %s", what, res->status, name ? name : "");
        rec_fail(f, res->status == 404 || (name && !strncmp(name, "Repo", 4)) ? LOAD_NOT_FOUND : st,
                 msg);
    }
    json_decref(root);
    return st;
}

static void on_rec_commit(const http_result *res, void *ud)
{
    record_flight *f = ud;
    json_t *body;
    if (rec_classify(f, res, "getLatestCommit", &body) == LOAD_OK) {
        const char *rev = get_string(body, "rev");
        if (rev && atp_is_tid(rev, strlen(rev)))
            f->rev = strdup(rev);
        else
            rec_fail(f, LOAD_UPSTREAM_FAILURE, "getLatestCommit: malformed response");
        json_decref(body);
    } else if (f->fail_status == LOAD_OK) {
        rec_fail(f, LOAD_UPSTREAM_FAILURE, "getLatestCommit: unexpected answer");
    }
    rec_release(f);
}

static void on_rec_record(const http_result *res, void *ud)
{
    record_flight *f = ud;
    json_t *body;
    if (rec_classify(f, res, "getRecord", &body) == LOAD_OK) f->got = body;
    rec_release(f);
}

static void on_rec_ident(const ident *id, void *ud)
{
    record_flight *f = ud;
    loader *l = f->l;
    if (id->status != LOAD_OK || !id->pds || !*id->pds || l->closing) {
        rec_finish(f, id->status != LOAD_OK ? id->status : LOAD_NOT_FOUND,
                   id->status != LOAD_OK ? id->error : "the DID document names no PDS");
        return;
    }
    buf commit = {0}, record = {0};
    int rc = buf_printf(&commit, "%s/xrpc/com.atproto.sync.getLatestCommit?did=", id->pds);
    rc |= buf_url_encode(&commit, f->did);
    rc |= buf_printf(&record, "%s/xrpc/com.atproto.repo.getRecord?repo=", id->pds);
    rc |= buf_url_encode(&record, f->did);
    rc |= buf_printf(&record, "&collection=%s&rkey=", f->collection);
    rc |= buf_url_encode(&record, f->rkey);
    f->outstanding = 1; /* held until both are sent */
    if (rc == 0 && http_get(l->http, commit.data, NULL, on_rec_commit, f) == 0) {
        f->outstanding++;
        (*l->up_latest_total)++;
        if (http_get(l->http, record.data, NULL, on_rec_record, f) == 0) {
            f->outstanding++;
            (*l->up_get_total)++;
        } else {
            rec_fail(f, LOAD_UPSTREAM_FAILURE, "out of memory");
        }
    } else {
        rec_fail(f, LOAD_UPSTREAM_FAILURE, "out of memory");
    }
    buf_free(&commit);
    buf_free(&record);
    rec_release(f);
}

int loader_fetch_record(loader *l, const char *did, const char *collection, const char *rkey,
                        loader_cb cb, void *ud)
{
    repo_waiter *w = calloc(1, sizeof *w);
    char *key = buf_dup_printf("%s %s/%s", did, collection, rkey);
    if (!w || !key) {
        free(w);
        free(key);
        return -1;
    }
    w->cb = cb;
    w->ud = ud;
    unsigned b = bucket(key);
    for (record_flight *f = l->records[b]; f; f = f->next) {
        if (!strcmp(f->key, key)) {
            w->next = f->waiters;
            f->waiters = w;
            (*l->coalesced_total)++;
            free(key);
            return 0;
        }
    }
    record_flight *f = calloc(1, sizeof *f);
    if (!f || !(f->did = strdup(did)) || !(f->collection = strdup(collection)) ||
        !(f->rkey = strdup(rkey))) {
        if (f) {
            free(f->did);
            free(f->collection);
        }
        free(f);
        free(w);
        free(key);
        return -1;
    }
    f->l = l;
    f->key = key;
    f->waiters = w;
    f->fail_status = LOAD_OK;
    f->next = l->records[b];
    l->records[b] = f;
    l->live++;
    if (ident_resolve(l, did, on_rec_ident, f) < 0) {
        f->waiters = NULL;
        rec_finish(f, LOAD_UPSTREAM_FAILURE, "out of memory");
        free(w);
        return -1;
    }
    return 0;
}

/* ==== lifetime ==== */

loader *loader_new(uv_loop_t *loop, cache_client *v, fold *f, resolver *r, http_client *http,
                   const lexicon_set *lexicons, const loader_options *opt)
{
    loader *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->loop = loop;
    l->v = v;
    l->f = f;
    l->r = r;
    l->http = http;
    l->lexicons = lexicons;
    l->prefix = strdup(opt->prefix);
    l->cas = cas_new(v, &(cas_options){.prefix = opt->prefix,
                                       .recent = fold_recent_key(f),
                                       .recent_index = fold_recent_index_key(f),
                                       .record_ttl = opt->record_ttl});
    if (!l->prefix || !l->cas) {
        cas_free(l->cas);
        free(l->prefix);
        free(l);
        return NULL;
    }
    l->identity_ttl = opt->identity_ttl;
    l->negative_ttl = opt->negative_ttl;
    l->record_ttl = opt->record_ttl;
    snprintf(l->s_identity_ttl, sizeof l->s_identity_ttl, "%u", opt->identity_ttl);
    snprintf(l->s_negative_ttl, sizeof l->s_negative_ttl, "%u", opt->negative_ttl);
    snprintf(l->s_record_ttl, sizeof l->s_record_ttl, "%u", opt->record_ttl);
    l->runs_total = metrics_counter("appview_loader_runs_total",
                                    "Repository loads that listed a PDS (cache misses)");
    l->coalesced_total = metrics_counter("appview_loader_coalesced_total",
                                         "Loader calls that joined a load already in flight");
    l->records_total =
        metrics_counter("appview_loader_records_total", "Records folded from PDS listings");
    l->invalid_total = metrics_counter("appview_loader_invalid_records_total",
                                       "Listed records skipped as invalid");
    l->pruned_total =
        metrics_counter("appview_loader_pruned_total",
                        "Cached records absent from a full PDS listing, folded as deletes");
    l->id_hits_total = metrics_counter("appview_identity_cache_hits_total",
                                       "Identity lookups answered from Valkey");
    l->id_misses_total = metrics_counter("appview_identity_cache_misses_total",
                                         "Identity lookups that went to the network");
    l->up_latest_total =
        metrics_counter("appview_upstream_requests_total{method=\"getLatestCommit\"}",
                        "Requests to PDSes by XRPC method");
    l->up_list_total = metrics_counter("appview_upstream_requests_total{method=\"listRecords\"}",
                                       "Requests to PDSes by XRPC method");
    l->up_get_total = metrics_counter("appview_upstream_requests_total{method=\"getRecord\"}",
                                      "Requests to PDSes by XRPC method");
    l->fail_total = metrics_counter("appview_loader_failures_total{status=\"upstream_failure\"}",
                                    "Repository loads that failed, by outcome");
    l->timeout_total = metrics_counter("appview_loader_failures_total{status=\"upstream_timeout\"}",
                                       "Repository loads that failed, by outcome");
    l->notfound_total = metrics_counter("appview_loader_failures_total{status=\"not_found\"}",
                                        "Repository loads that failed, by outcome");
    return l;
}

static void maybe_release(loader *l)
{
    if (!l->closing || l->live) return;
    cas_free(l->cas);
    free(l->prefix);
    free(l);
}

void loader_free(loader *l)
{
    if (!l) return;
    l->closing = 1;
    maybe_release(l);
}
