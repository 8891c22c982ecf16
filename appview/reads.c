#include "appview/reads.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/base64url.h"
#include "atproto/buf.h"
#include "atproto/json_read.h"
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

/* One string of a read script's answer, inside the reply. */
typedef struct {
    const char *s;
    size_t n;
} field;

/* The most strings a list page has: 2 per entry (member, score) and 4 more per repository, for
 * a page of MAX_LIMIT entries and the one that tells whether another page follows. */
#define MAX_PAGE_FIELDS (2 * (MAX_LIMIT + 1))
#define REPO_EXTRA 4 /* latest digest, tag count, manifest count, updatedAt */
#define TAG_EXTRA 3  /* digest, createdAt, state */
#define MAX_EXTRA_FIELDS (REPO_EXTRA * (MAX_LIMIT + 1))

struct reads {
    cache_client *v;
    loader *l;
    char *prefix;
    int script;
    binding routes[M_COUNT];
    buf out;       /* the response being built: httpd copies it, so one serves every request */
    buf base, key; /* the read script's key names, likewise copied when the command is queued */
    /* The current answer's lists, split (answers are handled one at a time). */
    field page[MAX_PAGE_FIELDS], extra[MAX_EXTRA_FIELDS];
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
    int loaded;   /* loader_ensure_repo ran */
    int fetched;  /* loader_fetch_record ran for the manifest of the tag asked for */
    int unpacked; /* the list is read as arrays (its values hold newlines: see read.lua) */
    load_status load;
    char *load_error;
} rq;

/* The read script's answer (cache/read.lua): the head, then a manifest's fields as items, or a
 * list's page and extra as fields. */
typedef struct {
    long long complete, known, found;
    char state; /* getManifest: 'f' found, 'd' deleted, 'u' a tag's manifest not seen, 0 unknown */
    const reply *handle;
    const reply *const *items;
    size_t nitems;
    const field *page, *extra;
    size_t npage, nextra;
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

#define YEAR0_MS (-62167219200000LL)   /* 0000-01-01T00:00:00Z */
#define YEAR10000_MS 253402300800000LL /* 10000-01-01T00:00:00Z */
#define DATETIME_LEN 24                /* 2026-11-22T11:50:00.123Z */

/* Milliseconds since the epoch as an RFC 3339 datetime, e.g. 2026-11-22T11:50:00.123Z, in
 * out[0..DATETIME_LEN) (years outside 0-9999 are clamped to the epoch: createdAt was a valid
 * datetime). The proleptic Gregorian calendar of gmtime, computed (H. Hinnant's
 * civil_from_days) rather than asked of the C library, which costs more than the rest of an
 * entry. */
static void format_ms(long long ms, char *out)
{
    if (ms < YEAR0_MS || ms >= YEAR10000_MS) ms = 0;
    long long secs = ms / 1000, frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        secs--;
    }
    long long days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    long long z = days + 719468; /* days since 0000-03-01 */
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    int day = (int)(doy - (153 * mp + 2) / 5 + 1);
    int month = (int)(mp < 10 ? mp + 3 : mp - 9);
    int year = (int)(yoe + era * 400 + (month <= 2));
    char *p = put_digits(out, year, 4);
    *p++ = '-';
    p = put_digits(p, month, 2);
    *p++ = '-';
    p = put_digits(p, day, 2);
    *p++ = 'T';
    p = put_digits(p, (int)(sod / 3600), 2);
    *p++ = ':';
    p = put_digits(p, (int)(sod / 60 % 60), 2);
    *p++ = ':';
    p = put_digits(p, (int)(sod % 60), 2);
    *p++ = '.';
    p = put_digits(p, (int)frac, 3);
    *p = 'Z';
}

/* A score as whole milliseconds. Valkey writes an integral score as its digits: those are read
 * exactly (up to 15 digits, where a double is exact anyway), anything else as a double. */
static long long score_ms(const field *f)
{
    size_t i = f->n && f->s[0] == '-';
    if (f->n > i && f->n - i <= 15) {
        long long v = 0;
        size_t j = i;
        for (; j < f->n && f->s[j] >= '0' && f->s[j] <= '9'; j++)
            v = v * 10 + (f->s[j] - '0');
        if (j == f->n) return i ? -v : v;
    }
    char small[64], *str = f->n < sizeof small ? small : malloc(f->n + 1);
    if (!str) return 0;
    memcpy(str, f->s, f->n);
    str[f->n] = '\0';
    double d = strtod(str, NULL);
    if (str != small) free(str);
    return isfinite(d) ? llround(d) : 0;
}

/* A count written by tostring (a decimal integer); -1 when it is not one. */
static long long count_of(const field *f)
{
    if (!f->n || f->n > 18) return -1;
    long long v = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (f->s[i] < '0' || f->s[i] > '9') return -1;
        v = v * 10 + (f->s[i] - '0');
    }
    return v;
}

/* ---- writing JSON: direct appends, no printf (this runs for every entry of every answer) ---- */

#define PUT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

/* ,"name":"<string>" and ,"name":"<datetime>"; name must be a string literal. */
#define FIELD(b, name, s, n) (PUT(b, ",\"" name "\":") | buf_json_string(b, s, n))
#define TIME_FIELD(b, name, score) time_field(b, ",\"" name "\":\"", sizeof(name) + 4, score)

/* A datetime as the record wrote it (written, when it has one), else from its score. */
#define AT_FIELD(b, name, written, score)                                                          \
    ((written)->n && !((written)->n == 1 && (written)->s[0] == '-')                                \
         ? FIELD(b, name, (written)->s, (written)->n)                                              \
         : TIME_FIELD(b, name, score))

static int time_field(buf *b, const char *prefix, size_t plen, const field *score)
{
    char t[32 + DATETIME_LEN + 1]; /* prefix, datetime, closing quote */
    if (plen > 32) return -1;
    memcpy(t, prefix, plen);
    format_ms(score_ms(score), t + plen);
    t[plen + DATETIME_LEN] = '"';
    return buf_append(b, t, plen + DATETIME_LEN + 1);
}

static int b64url_append(buf *b, const unsigned char *s, size_t n)
{
    char *text = malloc(b64url_encoded_len(n) + 1);
    if (!text) return -1;
    b64url_encode(s, n, text);
    int rc = buf_append(b, text, strlen(text));
    free(text);
    return rc;
}

/* Decodes base64url into a new NUL-terminated string; NULL when malformed or holding a NUL. */
static char *b64url_text(const char *s)
{
    size_t n = strlen(s), cap = n * 3 / 4 + 1;
    char *out = malloc(cap + 1);
    if (!out) return NULL;
    long o = b64url_decode(s, n, (uint8_t *)out, cap);
    if (o < 0 || memchr(out, '\0', (size_t)o)) {
        free(out);
        return NULL;
    }
    out[o] = '\0';
    return out;
}

/* A cursor is base64url("<score ms> <member>"): the last item of the page before. */
static int append_cursor(buf *b, const field *score, const field *member)
{
    buf raw = {0};
    int err = buf_append_ll(&raw, score_ms(score));
    err |= PUT(&raw, " ");
    err |= buf_append(&raw, member->s, member->n);
    err |= PUT(b, ",\"cursor\":\"");
    if (!err) err |= b64url_append(b, (const unsigned char *)raw.data, raw.len);
    err |= PUT(b, "\"");
    buf_free(&raw);
    return err;
}

/* The words of a P recent member: "D R G X at" (cache/SCHEMA.md). 0, or -1. */
static int recent_words(const char *s, size_t n, field w[5])
{
    const char *p = s, *end = s + n;
    for (int i = 0; i < 5; i++) {
        const char *sp = i < 4 ? memchr(p, ' ', (size_t)(end - p)) : end;
        if (!sp || sp == p) return -1;
        w[i] = (field){p, (size_t)(sp - p)};
        p = sp + 1;
    }
    return 0;
}

static int is_recent_member(const char *s)
{
    field w[5];
    return recent_words(s, strlen(s), w) == 0 && atp_is_did(w[0].s, w[0].n) &&
           oci_is_repository(w[1].s, w[1].n) && oci_is_digest(w[2].s, w[2].n) &&
           atp_is_rkey(w[3].s, w[3].n);
}

static int parse_cursor(rq *q, const char *cursor)
{
    if (strlen(cursor) > MAX_CURSOR) return -1;
    char *raw = b64url_text(cursor);
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

static int str_eq(const reply *e, const char *s)
{
    return e->type == REPLY_STRING && e->len == strlen(s) && !memcmp(e->str, s, e->len);
}

static int is_str(const reply *e)
{
    return e->type == REPLY_STRING;
}

/* The entries of a page (member, score pairs) to show, and whether there are more: the read
 * asks for one entry beyond the limit. */
static size_t page_entries(const rq *q, const read_result *res, int *more)
{
    size_t entries = res->npage / 2;
    *more = entries > q->limit;
    return *more ? q->limit : entries;
}

/* The end of a list answer: the array closed, the cursor to the next page, the stale mark. */
static int close_page(buf *b, const read_result *res, size_t n, int more, int stale)
{
    int err = PUT(b, "]");
    if (more) err |= append_cursor(b, &res->page[2 * n - 1], &res->page[2 * n - 2]);
    if (stale) err |= PUT(b, ",\"stale\":true");
    return err | PUT(b, "}");
}

static int build_repos(rq *q, const read_result *res, int stale)
{
    buf *b = &q->r->out;
    int more;
    size_t n = page_entries(q, res, &more);
    if (res->nextra < n * REPO_EXTRA) return -1;
    int err = PUT(b, "{\"did\":");
    err |= buf_json_string(b, q->did, strlen(q->did));
    err |= PUT(b, ",\"repositories\":[");
    for (size_t i = 0; i < n; i++) {
        const field *name = &res->page[2 * i], *score = name + 1, *x = &res->extra[REPO_EXTRA * i];
        long long tags = count_of(&x[1]), manifests = count_of(&x[2]);
        if (tags < 0 || manifests < 0) return -1;
        err |= i ? PUT(b, ",{\"name\":") : PUT(b, "{\"name\":");
        err |= buf_json_string(b, name->s, name->n);
        if (x[0].n) err |= FIELD(b, "latestDigest", x[0].s, x[0].n);
        err |= AT_FIELD(b, "updatedAt", &x[3], score);
        err |= PUT(b, ",\"tagCount\":");
        err |= buf_append_ll(b, tags);
        err |= PUT(b, ",\"manifestCount\":");
        err |= buf_append_ll(b, manifests);
        err |= PUT(b, "}");
    }
    return err | close_page(b, res, n, more, stale);
}

/* A tag whose manifest the index has not seen (state 'u'): in a complete index that means the
 * manifest is not in the repository, and the tag points at nothing; in a partial one (its load
 * failed) nobody knows, and the list is stale. Either way the tag is listed without a digest. */
static int build_tags(rq *q, const read_result *res, int stale)
{
    buf *b = &q->r->out;
    int more;
    size_t n = page_entries(q, res, &more);
    if (res->nextra < n * TAG_EXTRA) return -1;
    for (size_t i = 0; i < n && !res->complete; i++)
        stale |= res->extra[TAG_EXTRA * i + 2].n == 1 && res->extra[TAG_EXTRA * i + 2].s[0] == 'u';
    int err = PUT(b, "{\"did\":");
    err |= buf_json_string(b, q->did, strlen(q->did));
    err |= FIELD(b, "repository", q->repository, strlen(q->repository));
    err |= PUT(b, ",\"tags\":[");
    for (size_t i = 0; i < n; i++) {
        const field *tag = &res->page[2 * i], *score = tag + 1, *x = &res->extra[TAG_EXTRA * i];
        err |= i ? PUT(b, ",{\"tag\":") : PUT(b, "{\"tag\":");
        err |= buf_json_string(b, tag->s, tag->n);
        if (x[0].n) err |= FIELD(b, "digest", x[0].s, x[0].n);
        err |= AT_FIELD(b, "createdAt", &x[1], score);
        err |= PUT(b, "}");
    }
    return err | close_page(b, res, n, more, stale);
}

static int build_recent(rq *q, const read_result *res)
{
    buf *b = &q->r->out;
    int more;
    size_t n = page_entries(q, res, &more);
    int err = PUT(b, "{\"manifests\":[");
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        const field *m = &res->page[i * 2], *score = m + 1;
        field w[5];
        if (recent_words(m->s, m->n, w) < 0) continue; /* not written by the fold */
        err |= written++ ? PUT(b, ",{\"did\":") : PUT(b, "{\"did\":");
        err |= buf_json_string(b, w[0].s, w[0].n);
        err |= FIELD(b, "repository", w[1].s, w[1].n);
        err |= FIELD(b, "digest", w[2].s, w[2].n);
        err |= AT_FIELD(b, "createdAt", &w[4], score);
        err |= PUT(b, "}");
    }
    return err | close_page(b, res, n, more, 0);
}

/* items: digest, rkey, cid, record JSON. */
static int build_manifest(rq *q, const read_result *res)
{
    if (res->nitems < 4) return -1;
    const reply *digest = res->items[0], *rkey = res->items[1], *cid = res->items[2],
                *val = res->items[3];
    if (!is_str(digest) || !is_str(rkey) || !is_str(cid) || !is_str(val)) return -1;
    json_t *rec = json_read(val->str, val->len);
    const char *media = json_string_value(json_object_get(rec, "mediaType"));
    if (!json_is_object(rec) || !media) {
        log_warn("reads", "manifest %s of %s has no usable record", rkey->str, q->did);
        json_decref(rec);
        return -1;
    }
    const char *hold = json_string_value(json_object_get(rec, "holdDid"));
    buf *b = &q->r->out;
    int err = PUT(b, "{\"uri\":\"at://");
    err |= buf_append(b, q->did, strlen(q->did));
    err |= PUT(b, "/io.atcr.manifest/");
    err |= buf_append(b, rkey->str, rkey->len);
    err |= PUT(b, "\"");
    if (cid->len) err |= FIELD(b, "cid", cid->str, cid->len);
    err |= FIELD(b, "digest", digest->str, digest->len);
    err |= FIELD(b, "repository", q->repository, strlen(q->repository));
    err |= FIELD(b, "mediaType", media, strlen(media));
    if (hold) err |= FIELD(b, "holdDid", hold, strlen(hold));
    /* The stored record is the fold's compact JSON, and it just parsed: embed it as is. */
    err |= PUT(b, ",\"record\":");
    err |= buf_append(b, val->str, val->len);
    err |= PUT(b, "}");
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
    int stale = (q->loaded || q->fetched) &&
                (q->load == LOAD_UPSTREAM_FAILURE || q->load == LOAD_UPSTREAM_TIMEOUT);
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
    if (q->m == M_MANIFEST && res->state == 'd') {
        /* Known to be deleted: true whatever the network says. */
        fail(q, 404, "NotFound", "this manifest or tag was deleted");
        return;
    }
    if ((q->m == M_TAGS && !res->found) || (q->m == M_MANIFEST && res->state != 'f')) {
        if (stale)
            upstream_error(q);
        else if (q->m == M_TAGS)
            fail(q, 404, "NotFound", "no tags in this repository");
        else if (res->state == 'u')
            fail(q, 404, "NotFound", "the tag's manifest is not in this repository");
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

/* Answers a load that found no such actor, or a malformed one, and returns 1; else 0. */
static int fail_bad_actor(rq *q, const load_result *res)
{
    if (res->status == LOAD_NOT_FOUND)
        fail(q, 404, "RepoNotFound", res->error ? res->error : "actor not found");
    else if (res->status == LOAD_INVALID)
        fail(q, 400, "InvalidRequest", res->error ? res->error : "invalid actor");
    else
        return 0;
    return 1;
}

/* A load or a fetch is done: a failure is noted (the answer may be served stale), and the
 * index read again. */
static void on_ensure(const load_result *res, void *ud)
{
    rq *q = ud;
    q->load = res->status;
    if (res->error) {
        free(q->load_error);
        q->load_error = strdup(res->error);
    }
    if (!fail_bad_actor(q, res)) run_read(q);
}

static int parse_result(const reply *answer, method m, read_result *res)
{
    if (answer->type != REPLY_ARRAY || answer->elements < 4) return -1;
    const reply *const *e = (const reply *const *)answer->element;
    if (e[0]->type != REPLY_INTEGER || e[1]->type != REPLY_INTEGER || !is_str(e[2])) return -1;
    res->complete = e[0]->integer;
    res->known = e[1]->integer;
    res->handle = e[2];
    res->state = 0;
    if (m == M_MANIFEST) {
        if (!is_str(e[3]) || e[3]->len > 1) return -1;
        res->state = e[3]->len ? e[3]->str[0] : 0;
        res->found = res->state == 'f';
    } else {
        if (e[3]->type != REPLY_INTEGER) return -1;
        res->found = e[3]->integer;
    }
    res->items = e + 4;
    res->nitems = answer->elements - 4;
    res->page = res->extra = NULL;
    res->npage = res->nextra = 0;
    return 0;
}

/* Splits one of read.lua's lists, `count` strings packed into one joined by newlines (or,
 * read unpacked, an array of them), into f. 1 when the packed string does not split into
 * `count`: a value holds a newline, and the list must be read unpacked; -1 when malformed. */
static int unpack_list(const reply *count, const reply *list, field *f, size_t max, size_t *n)
{
    if (count->type != REPLY_INTEGER || count->integer < 0 || (size_t)count->integer > max)
        return -1;
    size_t want = (size_t)count->integer;
    *n = want;
    if (list->type == REPLY_ARRAY) {
        if (list->elements != want) return -1;
        for (size_t i = 0; i < want; i++) {
            if (!is_str(list->element[i])) return -1;
            f[i] = (field){list->element[i]->str, list->element[i]->len};
        }
        return 0;
    }
    if (!is_str(list)) return -1;
    if (want == 0) return list->len ? 1 : 0;
    const char *p = list->str, *end = p + list->len;
    for (size_t i = 0; i < want; i++) {
        const char *nl = i + 1 < want ? memchr(p, '\n', (size_t)(end - p)) : end;
        if (!nl) return 1;
        f[i] = (field){p, (size_t)(nl - p)};
        p = nl + 1;
    }
    return memchr(f[want - 1].s, '\n', f[want - 1].n) ? 1 : 0;
}

/* A list's page and extra (read.lua's answer) into r->page and r->extra. */
static int unpack_lists(reads *r, read_result *res)
{
    if (res->nitems != 4) return -1;
    int a = unpack_list(res->items[0], res->items[1], r->page, MAX_PAGE_FIELDS, &res->npage);
    int b = unpack_list(res->items[2], res->items[3], r->extra, MAX_EXTRA_FIELDS, &res->nextra);
    if (a < 0 || b < 0) return -1;
    if (res->npage % 2) return -1;
    res->page = r->page;
    res->extra = r->extra;
    return a || b;
}

static void on_read(const reply *answer, void *ud)
{
    rq *q = ud;
    reads *r = q->r;
    if (!answer) {
        fail(q, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
        return;
    }
    read_result res;
    int rc = parse_result(answer, q->m, &res);
    if (rc == 0 && q->m != M_MANIFEST) rc = unpack_lists(r, &res);
    if (rc > 0 && !q->unpacked) {
        /* Values with newlines, which the fold never writes: read the arrays instead. */
        log_warn("reads", "%s of %s: list values hold newlines: reading them unpacked",
                 method_names[q->m], q->did ? q->did : "recent");
        q->unpacked = 1;
        run_read(q);
        return;
    }
    if (rc != 0) {
        log_error("reads", "%s: unexpected reply from the read script: %s", method_names[q->m],
                  answer->type == REPLY_ERROR ? answer->str : "wrong shape");
        fail(q, 500, "InternalServerError", "index read failed");
        return;
    }
    if (q->handle && !str_eq(res.handle, q->handle)) {
        fail(q, 404, "RepoNotFound", "handle not resolved");
        return;
    }
    /* A record is a record: a manifest found, or known deleted, needs no complete index. A tag
     * whose manifest the index has not seen needs that one record from the PDS. */
    if (q->m == M_MANIFEST && res.state == 'u' && !res.complete && r->l && !q->fetched &&
        !q->loaded && res.nitems >= 5 && is_str(res.items[4]) && res.items[4]->len) {
        q->fetched = 1;
        if (loader_fetch_record(r->l, q->did, "io.atcr.manifest", res.items[4]->str, on_ensure, q) <
            0)
            fail(q, 500, "InternalServerError", "out of memory");
        return;
    }
    int usable = res.complete || !r->l || q->loaded || q->m == M_RECENT ||
                 (q->m == M_MANIFEST && (res.state == 'f' || res.state == 'd' || q->fetched));
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
    /* The key names go into buffers kept from one read to the next: the command copies them. */
    buf *base = &r->base, *key = &r->key;
    buf_reset(base);
    buf_reset(key);
    int err = 0;
    if (q->m != M_RECENT) {
        err |= buf_puts(base, r->prefix);
        err |= PUT(base, "{");
        err |= buf_puts(base, q->did);
        err |= PUT(base, "}/");
        err |= buf_append(key, base->data, base->len);
    }
    switch (q->m) {
    case M_REPOS:
        err |= PUT(key, "repos");
        break;
    case M_TAGS:
        err |= PUT(key, "repo/");
        err |= buf_puts(key, q->repository);
        err |= PUT(key, "/tags");
        break;
    case M_MANIFEST:
        err |= PUT(key, "recs");
        break;
    default:
        err |= buf_puts(key, r->prefix);
        err |= PUT(key, "recent");
        break;
    }
    /* The handle is worth reading only when it is to be checked (see on_read). */
    const char *want_handle = q->handle ? "h" : "";
    int rc = -1;
    if (!err) {
        static const char *const modes[M_COUNT] = {"repos", "tags", "manifest", "recent"};
        char count[16];
        snprintf(count, sizeof count, "%u", q->limit + 1);
        const char *argv[] = {key->data,
                              modes[q->m],
                              base->data ? base->data : "",
                              count,
                              q->cursor_score,
                              q->cursor_member ? q->cursor_member : "",
                              q->repository ? q->repository : "",
                              want_handle,
                              q->unpacked ? "a" : "",
                              q->reference ? q->reference : "",
                              q->ref_is_tag ? "t" : "d"};
        rc = cache_eval(r->v, r->script, on_read, q, 1, 11, argv, NULL);
    }
    if (rc < 0) fail(q, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
}

static void on_resolved(const load_result *res, void *ud)
{
    rq *q = ud;
    if (fail_bad_actor(q, res)) return;
    switch (res->status) {
    case LOAD_OK:
        q->did = strdup(res->did);
        if (!q->did) {
            fail(q, 500, "InternalServerError", "out of memory");
            return;
        }
        run_read(q);
        return;
    case LOAD_UPSTREAM_TIMEOUT:
        fail(q, 504, "UpstreamTimeout", res->error ? res->error : "handle resolution timed out");
        return;
    default:
        fail(q, 502, "UpstreamFailure", res->error ? res->error : "handle resolution failed");
    }
}

static void on_handle(const reply *answer, void *ud)
{
    rq *q = ud;
    if (!answer) {
        fail(q, 502, "UpstreamFailure", "the index (Valkey) is unavailable");
        return;
    }
    if (answer->type != REPLY_STRING || !atp_is_did(answer->str, answer->len)) {
        fail(q, 404, "RepoNotFound", "handle not resolved");
        return;
    }
    q->did = strdup(answer->str);
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
    int rc = cache_command(q->r->v, on_handle, q, 2, (const char *[]){"GET", key.data}, NULL);
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

reads *reads_new(httpd *h, cache_client *v, loader *l, const reads_options *opt)
{
    reads *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->v = v;
    r->l = l;
    r->prefix = strdup(opt->prefix ? opt->prefix : "atcr:");
    r->script = cache_register_script(v, "read", lua_read);
    if (!r->prefix || r->script < 0) {
        log_error("reads", "could not register the read script");
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
    buf_free(&r->base);
    buf_free(&r->key);
    free(r->prefix);
    free(r);
}
