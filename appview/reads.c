#include "appview/reads.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/syntax.h"
#include "cache/read_scripts.h"

#define DEFAULT_LIMIT 50
#define MAX_LIMIT 100
#define MAX_CURSOR 512
#define MAX_SCORE_DIGITS 17

typedef enum { M_REPOS, M_TAGS, M_MANIFEST, M_RECENT, M_COUNT } method;

static const char *const method_names[M_COUNT] = {"listRepositories", "listTags", "getManifest",
                                                  "listRecent"};

typedef struct {
    reads *r;
    method m;
} binding;

struct reads {
    valkey *v;
    loader *l;
    char *prefix;
    int script_list, script_manifest;
    binding routes[M_COUNT];
    buf out; /* the response being built: httpd copies it, so one serves every request */
    uint64_t *total[M_COUNT];
    uint64_t *invalid_total;
    uint64_t *hits_total, *misses_total, *stale_total;
};

/* One request in flight, from its parameters to its answer. */
typedef struct {
    reads *r;
    httpd_req *req;
    method m;
    char *did;
    /* Set when a handle was looked up in Valkey without a loader: P{D}/id must confirm it. */
    char *handle;
    const char *repository, *reference; /* owned by req */
    int ref_is_tag;
    unsigned limit;
    char cursor_score[MAX_SCORE_DIGITS + 2];
    char *cursor_member;
    int loaded; /* loader_ensure_repo ran */
    load_status load;
    char *load_error;
} rq;

/* The head of every read script's answer (see cache/read_list.lua). */
typedef struct {
    long long complete, known, found;
    const redisReply *handle;
    const redisReply *const *items;
    size_t nitems;
} read_result;

/* ---- small helpers ---- */

static void rq_free(rq *q)
{
    free(q->did);
    free(q->handle);
    free(q->cursor_member);
    free(q->load_error);
    free(q);
}

static void fail(rq *q, int status, const char *error, const char *msg)
{
    httpd_reply_error(q->req, status, error, "%s", msg);
    rq_free(q);
}

static void reply_out(rq *q)
{
    httpd_reply_json(q->req, 200, q->r->out.data, q->r->out.len);
    rq_free(q);
}

static char *put_digits(char *p, int v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

/* Milliseconds since the epoch as an RFC 3339 datetime, e.g. 2026-11-22T11:50:00.123Z
 * (years outside 0-9999 are clamped to the epoch: createdAt was a valid datetime). */
static void format_ms(long long ms, char out[32])
{
    long long secs = ms / 1000, frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
        memset(&tm, 0, sizeof tm);
        tm.tm_year = 70;
        tm.tm_mday = 1;
        frac = 0;
    }
    char *p = put_digits(out, tm.tm_year + 1900, 4);
    *p++ = '-';
    p = put_digits(p, tm.tm_mon + 1, 2);
    *p++ = '-';
    p = put_digits(p, tm.tm_mday, 2);
    *p++ = 'T';
    p = put_digits(p, tm.tm_hour, 2);
    *p++ = ':';
    p = put_digits(p, tm.tm_min, 2);
    *p++ = ':';
    p = put_digits(p, tm.tm_sec, 2);
    *p++ = '.';
    p = put_digits(p, (int)frac, 3);
    *p++ = 'Z';
    *p = '\0';
}

static long long score_ms(const redisReply *s)
{
    double d = strtod(s->str, NULL);
    return isfinite(d) ? llround(d) : 0;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c)
{
    const char *p = c ? strchr(b64url, c) : NULL;
    return p ? (int)(p - b64url) : -1;
}

static int b64url_append(buf *b, const unsigned char *s, size_t n)
{
    char out[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n) v |= s[i + 2];
        size_t k = n - i >= 3 ? 4 : n - i + 1;
        for (size_t j = 0; j < 4; j++)
            out[j] = b64url[(v >> (18 - 6 * j)) & 63];
        if (buf_append(b, out, k) < 0) return -1;
    }
    return 0;
}

/* Decodes unpadded base64url into a new NUL-terminated string; NULL when malformed. */
static char *b64url_decode(const char *s)
{
    size_t n = strlen(s);
    if (n % 4 == 1) return NULL;
    char *out = malloc(n * 3 / 4 + 1);
    if (!out) return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    if (o != strlen(out)) {
        free(out);
        return NULL;
    }
    return out;
}

/* A cursor is base64url("<score ms> <member>"): the last item of the page before. */
static int append_cursor(buf *b, const redisReply *score, const redisReply *member)
{
    buf raw = {0};
    int err = buf_printf(&raw, "%lld ", score_ms(score));
    err |= buf_append(&raw, member->str, member->len);
    err |= buf_puts(b, ",\"cursor\":\"");
    if (!err) err |= b64url_append(b, (const unsigned char *)raw.data, raw.len);
    err |= buf_puts(b, "\"");
    buf_free(&raw);
    return err;
}

static int is_recent_member(const char *s)
{
    const char *sp1 = strchr(s, ' ');
    const char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp2) return 0;
    const char *end = s + strlen(s);
    return atp_is_did(s, (size_t)(sp1 - s)) &&
           oci_is_repository(sp1 + 1, (size_t)(sp2 - sp1 - 1)) &&
           oci_is_digest(sp2 + 1, (size_t)(end - sp2 - 1));
}

static int parse_cursor(rq *q, const char *cursor)
{
    if (strlen(cursor) > MAX_CURSOR) return -1;
    char *raw = b64url_decode(cursor);
    if (!raw) return -1;
    char *sp = strchr(raw, ' ');
    size_t digits = sp ? (size_t)(sp - raw) : 0;
    size_t start = raw[0] == '-' ? 1 : 0;
    int ok = sp && digits > start && digits <= MAX_SCORE_DIGITS;
    for (size_t i = start; ok && i < digits; i++)
        ok = isdigit((unsigned char)raw[i]);
    if (ok) {
        const char *m = sp + 1;
        size_t n = strlen(m);
        switch (q->m) {
        case M_REPOS:
            ok = oci_is_repository(m, n);
            break;
        case M_TAGS:
            ok = oci_is_tag(m, n);
            break;
        case M_RECENT:
            ok = is_recent_member(m);
            break;
        default:
            ok = 0;
        }
    }
    if (!ok) {
        free(raw);
        return -1;
    }
    memcpy(q->cursor_score, raw, digits);
    q->cursor_score[digits] = '\0';
    q->cursor_member = strdup(sp + 1);
    free(raw);
    return q->cursor_member ? 0 : -1;
}

static int parse_limit(const char *s, unsigned *out)
{
    if (!s) {
        *out = DEFAULT_LIMIT;
        return 0;
    }
    size_t n = strlen(s);
    if (n == 0 || n > 3) return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > MAX_LIMIT) return -1;
    *out = v;
    return 0;
}

/* ---- responses ---- */

static int str_eq(const redisReply *e, const char *s)
{
    return e->type == REDIS_REPLY_STRING && e->len == strlen(s) && !memcmp(e->str, s, e->len);
}

static int is_str(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING;
}

static int json_field(buf *b, const char *name, const char *s, size_t n)
{
    int err = buf_printf(b, ",\"%s\":", name);
    return err | buf_json_string(b, s, n);
}

static int json_time(buf *b, const char *name, const redisReply *score)
{
    char t[32];
    format_ms(score_ms(score), t);
    return buf_printf(b, ",\"%s\":\"%s\"", name, t);
}

/* Items come in groups of `width`; one more group than the limit means a next page exists. */
static size_t page_groups(const rq *q, const read_result *res, size_t width, int *more)
{
    size_t groups = res->nitems / width;
    *more = groups > q->limit;
    return *more ? q->limit : groups;
}

static int build_repos(rq *q, const read_result *res, int stale)
{
    buf *b = &q->r->out;
    int more;
    size_t n = page_groups(q, res, 5, &more);
    int err = buf_puts(b, "{\"did\":");
    err |= buf_json_string(b, q->did, strlen(q->did));
    err |= buf_puts(b, ",\"repositories\":[");
    for (size_t i = 0; i < n; i++) {
        const redisReply *const *it = res->items + i * 5;
        if (!is_str(it[0]) || !is_str(it[1]) || !is_str(it[2]) ||
            it[3]->type != REDIS_REPLY_INTEGER || it[4]->type != REDIS_REPLY_INTEGER)
            return -1;
        err |= buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        err |= buf_json_string(b, it[0]->str, it[0]->len);
        if (it[2]->len) err |= json_field(b, "latestDigest", it[2]->str, it[2]->len);
        err |= json_time(b, "updatedAt", it[1]);
        err |= buf_printf(b, ",\"tagCount\":%lld,\"manifestCount\":%lld}", it[3]->integer,
                          it[4]->integer);
    }
    err |= buf_puts(b, "]");
    if (more) err |= append_cursor(b, res->items[(n - 1) * 5 + 1], res->items[(n - 1) * 5]);
    if (stale) err |= buf_puts(b, ",\"stale\":true");
    return err | buf_puts(b, "}");
}

static int build_tags(rq *q, const read_result *res, int stale)
{
    buf *b = &q->r->out;
    int more;
    size_t n = page_groups(q, res, 3, &more);
    int err = buf_puts(b, "{\"did\":");
    err |= buf_json_string(b, q->did, strlen(q->did));
    err |= json_field(b, "repository", q->repository, strlen(q->repository));
    err |= buf_puts(b, ",\"tags\":[");
    for (size_t i = 0; i < n; i++) {
        const redisReply *const *it = res->items + i * 3;
        if (!is_str(it[0]) || !is_str(it[1]) || !is_str(it[2])) return -1;
        err |= buf_puts(b, i ? ",{\"tag\":" : "{\"tag\":");
        err |= buf_json_string(b, it[0]->str, it[0]->len);
        err |= json_field(b, "digest", it[2]->str, it[2]->len);
        err |= json_time(b, "createdAt", it[1]);
        err |= buf_puts(b, "}");
    }
    err |= buf_puts(b, "]");
    if (more) err |= append_cursor(b, res->items[(n - 1) * 3 + 1], res->items[(n - 1) * 3]);
    if (stale) err |= buf_puts(b, ",\"stale\":true");
    return err | buf_puts(b, "}");
}

static int build_recent(rq *q, const read_result *res)
{
    buf *b = &q->r->out;
    int more;
    size_t n = page_groups(q, res, 2, &more);
    int err = buf_puts(b, "{\"manifests\":[");
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *m = res->items[i * 2], *score = res->items[i * 2 + 1];
        if (!is_str(m) || !is_str(score)) return -1;
        const char *sp1 = memchr(m->str, ' ', m->len);
        const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', m->len - (size_t)(sp1 + 1 - m->str)) : NULL;
        if (!sp2) continue; /* not written by the fold: nothing to show */
        err |= buf_puts(b, written++ ? ",{\"did\":" : "{\"did\":");
        err |= buf_json_string(b, m->str, (size_t)(sp1 - m->str));
        err |= json_field(b, "repository", sp1 + 1, (size_t)(sp2 - sp1 - 1));
        err |= json_field(b, "digest", sp2 + 1, m->len - (size_t)(sp2 + 1 - m->str));
        err |= json_time(b, "createdAt", score);
        err |= buf_puts(b, "}");
    }
    err |= buf_puts(b, "]");
    if (more) err |= append_cursor(b, res->items[(n - 1) * 2 + 1], res->items[(n - 1) * 2]);
    return err | buf_puts(b, "}");
}

/* items: digest, rkey, cid, record JSON. */
static int build_manifest(rq *q, const read_result *res)
{
    if (res->nitems < 4) return -1;
    const redisReply *digest = res->items[0], *rkey = res->items[1], *cid = res->items[2],
                     *val = res->items[3];
    if (!is_str(digest) || !is_str(rkey) || !is_str(cid) || !is_str(val)) return -1;
    json_error_t jerr;
    json_t *rec = json_loadb(val->str, val->len, 0, &jerr);
    const char *media = json_string_value(json_object_get(rec, "mediaType"));
    if (!json_is_object(rec) || !media) {
        log_warn("reads", "manifest %s of %s has no usable record", rkey->str, q->did);
        json_decref(rec);
        return -1;
    }
    const char *hold = json_string_value(json_object_get(rec, "holdDid"));
    buf *b = &q->r->out;
    int err = buf_puts(b, "{\"uri\":\"at://");
    err |= buf_append(b, q->did, strlen(q->did));
    err |= buf_puts(b, "/io.atcr.manifest/");
    err |= buf_append(b, rkey->str, rkey->len);
    err |= buf_puts(b, "\"");
    if (cid->len) err |= json_field(b, "cid", cid->str, cid->len);
    err |= json_field(b, "digest", digest->str, digest->len);
    err |= json_field(b, "repository", q->repository, strlen(q->repository));
    err |= json_field(b, "mediaType", media, strlen(media));
    if (hold) err |= json_field(b, "holdDid", hold, strlen(hold));
    /* The stored record is the fold's compact JSON, and it just parsed: embed it as is. */
    err |= buf_puts(b, ",\"record\":");
    err |= buf_append(b, val->str, val->len);
    err |= buf_puts(b, "}");
    json_decref(rec);
    return err;
}

/* ---- the request flow ---- */

static void run_read(rq *q);

static void upstream_error(rq *q)
{
    const char *msg = q->load_error ? q->load_error : "the user's PDS could not be reached";
    if (q->load == LOAD_UPSTREAM_TIMEOUT)
        fail(q, 504, "UpstreamTimeout", msg);
    else
        fail(q, 502, "UpstreamFailure", msg);
}

static void serve(rq *q, const read_result *res)
{
    reads *r = q->r;
    int stale = q->loaded && (q->load == LOAD_UPSTREAM_FAILURE || q->load == LOAD_UPSTREAM_TIMEOUT);
    /* Without a loader nothing but Valkey can tell whether the actor exists. */
    int unknown_actor = !r->l && !res->known;
    if (q->m == M_REPOS && stale && !res->known) {
        upstream_error(q);
        return;
    }
    if ((q->m == M_TAGS || q->m == M_MANIFEST || q->m == M_REPOS) && unknown_actor) {
        fail(q, 404, "RepoNotFound", "no index for this actor");
        return;
    }
    if ((q->m == M_TAGS || q->m == M_MANIFEST) && !res->found) {
        if (stale)
            upstream_error(q);
        else if (q->m == M_TAGS)
            fail(q, 404, "NotFound", "no tags in this repository");
        else
            fail(q, 404, "NotFound", "no manifest with this reference in this repository");
        return;
    }
    buf_reset(&r->out);
    int rc;
    switch (q->m) {
    case M_REPOS:
        rc = build_repos(q, res, stale);
        break;
    case M_TAGS:
        rc = build_tags(q, res, stale);
        break;
    case M_MANIFEST:
        rc = build_manifest(q, res);
        break;
    default:
        rc = build_recent(q, res);
        break;
    }
    if (rc < 0) {
        fail(q, 500, "InternalServerError", "could not build the response");
        return;
    }
    if (stale && q->m != M_MANIFEST) {
        (*r->stale_total)++;
        log_warn("reads", "%s of %s served stale: %s", method_names[q->m], q->did,
                 q->load_error ? q->load_error : "upstream failed");
    }
    reply_out(q);
}

static void on_ensure(const load_result *res, void *ud)
{
    rq *q = ud;
    q->load = res->status;
    if (res->error) {
        free(q->load_error);
        q->load_error = strdup(res->error);
    }
    switch (res->status) {
    case LOAD_NOT_FOUND:
        fail(q, 404, "RepoNotFound", res->error ? res->error : "actor not found");
        return;
    case LOAD_INVALID:
        fail(q, 400, "InvalidRequest", res->error ? res->error : "invalid actor");
        return;
    default:
        run_read(q);
    }
}

static int parse_result(const redisReply *reply, read_result *res)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 4) return -1;
    for (int i = 0; i < 4; i++)
        if (i != 2 && reply->element[i]->type != REDIS_REPLY_INTEGER) return -1;
    if (!is_str(reply->element[2])) return -1;
    res->complete = reply->element[0]->integer;
    res->known = reply->element[1]->integer;
    res->handle = reply->element[2];
    res->found = reply->element[3]->integer;
    res->items = (const redisReply *const *)reply->element + 4;
    res->nitems = reply->elements - 4;
    return 0;
}

static void on_read(redisReply *reply, void *ud)
{
    rq *q = ud;
    reads *r = q->r;
    if (!reply) {
        fail(q, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
        return;
    }
    read_result res;
    if (parse_result(reply, &res) < 0) {
        log_error("reads", "%s: unexpected reply from the read script: %s", method_names[q->m],
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "wrong shape");
        fail(q, 500, "InternalServerError", "index read failed");
        return;
    }
    if (q->handle && !str_eq(res.handle, q->handle)) {
        fail(q, 404, "RepoNotFound", "handle not resolved");
        return;
    }
    /* A record is a record: a manifest found needs no complete index. */
    int usable =
        res.complete || !r->l || q->loaded || q->m == M_RECENT || (q->m == M_MANIFEST && res.found);
    if (!usable) {
        (*r->misses_total)++;
        q->loaded = 1;
        if (loader_ensure_repo(r->l, q->did, on_ensure, q) < 0)
            fail(q, 500, "InternalServerError", "out of memory");
        return;
    }
    if (!q->loaded) (*r->hits_total)++;
    serve(q, &res);
}

static void run_read(rq *q)
{
    reads *r = q->r;
    buf base = {0}, key = {0};
    int err = 0;
    if (q->m != M_RECENT) err |= buf_printf(&base, "%s{%s}/", r->prefix, q->did);
    switch (q->m) {
    case M_REPOS:
        err |= buf_printf(&key, "%srepos", base.data);
        break;
    case M_TAGS:
        err |= buf_printf(&key, "%srepo/%s/tags", base.data, q->repository);
        break;
    case M_MANIFEST:
        err |= buf_printf(&key, "%srecs", base.data);
        break;
    default:
        err |= buf_printf(&key, "%srecent", r->prefix);
        break;
    }
    int rc = -1;
    if (!err && q->m == M_MANIFEST) {
        const char *argv[] = {key.data, base.data, q->repository, q->reference,
                              q->ref_is_tag ? "t" : "d"};
        rc = valkey_eval(r->v, r->script_manifest, on_read, q, 1, 5, argv, NULL);
    } else if (!err) {
        static const char *const modes[M_COUNT] = {"repos", "tags", "", "recent"};
        char count[16];
        snprintf(count, sizeof count, "%u", q->limit + 1);
        const char *argv[] = {key.data,
                              modes[q->m],
                              base.data ? base.data : "",
                              count,
                              q->cursor_score,
                              q->cursor_member ? q->cursor_member : "",
                              q->repository ? q->repository : ""};
        rc = valkey_eval(r->v, r->script_list, on_read, q, 1, 7, argv, NULL);
    }
    buf_free(&base);
    buf_free(&key);
    if (rc < 0) fail(q, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
}

static void on_resolved(const load_result *res, void *ud)
{
    rq *q = ud;
    switch (res->status) {
    case LOAD_OK:
        q->did = strdup(res->did);
        if (!q->did) {
            fail(q, 500, "InternalServerError", "out of memory");
            return;
        }
        run_read(q);
        return;
    case LOAD_NOT_FOUND:
        fail(q, 404, "RepoNotFound", res->error ? res->error : "actor not found");
        return;
    case LOAD_INVALID:
        fail(q, 400, "InvalidRequest", res->error ? res->error : "invalid actor");
        return;
    case LOAD_UPSTREAM_TIMEOUT:
        fail(q, 504, "UpstreamTimeout", res->error ? res->error : "handle resolution timed out");
        return;
    default:
        fail(q, 502, "UpstreamFailure", res->error ? res->error : "handle resolution failed");
    }
}

static void on_handle(redisReply *reply, void *ud)
{
    rq *q = ud;
    if (!reply) {
        fail(q, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
        return;
    }
    if (reply->type != REDIS_REPLY_STRING || !atp_is_did(reply->str, reply->len)) {
        fail(q, 404, "RepoNotFound", "handle not resolved");
        return;
    }
    q->did = strdup(reply->str);
    if (!q->did) {
        fail(q, 500, "InternalServerError", "out of memory");
        return;
    }
    run_read(q);
}

/* A handle without a loader: P handle:<h>, confirmed by the read (see on_read). */
static void lookup_handle(rq *q, const char *actor)
{
    q->handle = strdup(actor);
    buf key = {0};
    if (!q->handle || buf_printf(&key, "%shandle:%s", q->r->prefix, actor) < 0) {
        buf_free(&key);
        fail(q, 500, "InternalServerError", "out of memory");
        return;
    }
    for (char *p = q->handle; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    for (char *p = key.data + strlen(q->r->prefix); *p; p++)
        *p = (char)tolower((unsigned char)*p);
    int rc = valkey_command(q->r->v, on_handle, q, 2, (const char *[]){"GET", key.data}, NULL);
    buf_free(&key);
    if (rc < 0) fail(q, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
}

/* ---- parameters ---- */

static const char *check_params(rq *q, const char **actor)
{
    httpd_req *req = q->req;
    *actor = httpd_req_param(req, "actor");
    if (q->m != M_RECENT) {
        if (!*actor || !**actor) return "actor is required";
        size_t n = strlen(*actor);
        if (!atp_is_did(*actor, n) && !atp_is_handle(*actor, n))
            return "actor must be a DID or a handle";
    }
    if (q->m == M_TAGS || q->m == M_MANIFEST) {
        q->repository = httpd_req_param(req, "repository");
        if (!q->repository || !*q->repository) return "repository is required";
        if (!oci_is_repository(q->repository, strlen(q->repository)))
            return "repository is not a valid OCI repository name";
    }
    if (q->m == M_MANIFEST) {
        q->reference = httpd_req_param(req, "reference");
        if (!q->reference || !*q->reference) return "reference is required";
        size_t n = strlen(q->reference);
        if (oci_is_digest(q->reference, n))
            q->ref_is_tag = 0;
        else if (oci_is_tag(q->reference, n))
            q->ref_is_tag = 1;
        else
            return "reference must be a tag or a digest";
        return NULL;
    }
    if (parse_limit(httpd_req_param(req, "limit"), &q->limit) < 0)
        return "limit must be an integer from 1 to 100";
    const char *cursor = httpd_req_param(req, "cursor");
    if (cursor && parse_cursor(q, cursor) < 0) return "cursor is malformed";
    return NULL;
}

static void handle_read(httpd_req *req, void *ud)
{
    const binding *bd = ud;
    reads *r = bd->r;
    (*r->total[bd->m])++;
    rq *q = calloc(1, sizeof *q);
    if (!q) {
        httpd_reply_error(req, 500, "InternalServerError", "out of memory");
        return;
    }
    q->r = r;
    q->req = req;
    q->m = bd->m;
    q->load = LOAD_OK;
    const char *actor = NULL;
    const char *bad = check_params(q, &actor);
    if (bad) {
        (*r->invalid_total)++;
        log_info("reads", "%s: bad request from %s: %s", method_names[q->m], httpd_req_peer(req),
                 bad);
        fail(q, 400, "InvalidRequest", bad);
        return;
    }
    if (q->m == M_RECENT) {
        run_read(q);
    } else if (atp_is_did(actor, strlen(actor))) {
        q->did = strdup(actor);
        if (q->did)
            run_read(q);
        else
            fail(q, 500, "InternalServerError", "out of memory");
    } else if (r->l) {
        if (loader_resolve(r->l, actor, on_resolved, q) < 0)
            fail(q, 500, "InternalServerError", "out of memory");
    } else {
        lookup_handle(q, actor);
    }
}

/* ---- setup ---- */

reads *reads_new(httpd *h, valkey *v, loader *l, const reads_options *opt)
{
    reads *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->v = v;
    r->l = l;
    r->prefix = strdup(opt->prefix ? opt->prefix : "atcr:");
    r->script_list = valkey_register_script(v, "read_list", lua_read_list);
    r->script_manifest = valkey_register_script(v, "read_manifest", lua_read_manifest);
    if (!r->prefix || r->script_list < 0 || r->script_manifest < 0) {
        log_error("reads", "could not register the read scripts");
        reads_free(r);
        return NULL;
    }
    for (int m = 0; m < M_COUNT; m++) {
        char name[96], path[96];
        snprintf(name, sizeof name, "appview_reads_total{method=\"%s\"}", method_names[m]);
        r->total[m] = metrics_counter(name, "XRPC read requests by method");
        r->routes[m] = (binding){r, (method)m};
        snprintf(path, sizeof path, "/xrpc/io.atcr.repo.%s", method_names[m]);
        if (httpd_route(h, "GET", path, handle_read, &r->routes[m]) < 0) {
            reads_free(r);
            return NULL;
        }
    }
    r->invalid_total = metrics_counter("appview_reads_invalid_total",
                                       "XRPC read requests refused for bad parameters");
    r->hits_total = metrics_counter("appview_reads_cache_hits_total",
                                    "Reads answered from Valkey without the loader");
    r->misses_total = metrics_counter("appview_reads_cache_misses_total",
                                      "Reads that needed the loader (index not complete)");
    r->stale_total = metrics_counter("appview_reads_stale_total",
                                     "Partial lists served because the upstream failed");
    return r;
}

void reads_free(reads *r)
{
    if (!r) return;
    buf_free(&r->out);
    free(r->prefix);
    free(r);
}
