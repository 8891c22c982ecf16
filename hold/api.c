#include "hold/api.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "atproto/buf.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/syntax.h"
#include "hold/blob_sig.h"
#include "hold/increments.h"
#include "hold/rkey.h"
#include "hold/sha256.h"
#include "hold/views.h"

static struct {
    uint64_t *applied, *requests, *commits, *commit_submissions, *commit_failures;
    uint64_t *bad_json, *bad_input, *auth_missing, *auth_wrong, *db_errors;
    uint64_t *pulls_counted, *pulls_deduped;
    uint64_t *blob_anonymous, *blob_token_wrong, *blob_sig_expired, *blob_sig_wrong, *blob_no_repo,
        *blob_not_found;
    metrics_histogram *commit_seconds, *incr_seconds;
    double last_batch;
    log_limit said_bad, said_auth_missing, said_auth_wrong;
} m;

static double gauge_last_batch(void *ud)
{
    return m.last_batch;
}

static double gauge_pending(void *ud)
{
    return (double)store_pending(((hold_api *)ud)->st);
}

static void metrics_init(hold_api *a)
{
    m.applied =
        metrics_counter("hold_increments_applied_total", "Increments committed (sum of counts)");
    m.requests = metrics_counter("hold_increment_requests_total",
                                 "incrementStats and getBlob submissions committed");
    m.commits = metrics_counter("hold_commits_total", "Group-commit transactions");
    m.commit_submissions =
        metrics_counter("hold_commit_submissions_total", "Submissions carried by group commits");
    m.commit_failures = metrics_counter("hold_commit_failures_total", "Failed transactions");
    m.bad_json = metrics_counter("hold_rejected_total{reason=\"json\"}", "Rejected requests");
    m.bad_input = metrics_counter("hold_rejected_total{reason=\"invalid\"}", "Rejected requests");
    m.auth_missing =
        metrics_counter("hold_rejected_total{reason=\"auth_missing\"}", "Rejected requests");
    m.auth_wrong =
        metrics_counter("hold_rejected_total{reason=\"auth_wrong\"}", "Rejected requests");
    m.db_errors = metrics_counter("hold_db_errors_total", "Database errors answered as 500");
    m.pulls_counted = metrics_counter("hold_blob_counted_total", "getBlob fetches counted");
    m.pulls_deduped = metrics_counter("hold_blob_deduped_total",
                                      "getBlob fetches inside the dedupe window, not counted");
    static const char uncounted[] = "getBlob fetches served or refused without a count";
    m.blob_anonymous =
        metrics_counter("hold_blob_uncounted_total{reason=\"anonymous\"}", uncounted);
    m.blob_token_wrong =
        metrics_counter("hold_blob_uncounted_total{reason=\"token_wrong\"}", uncounted);
    m.blob_sig_expired =
        metrics_counter("hold_blob_uncounted_total{reason=\"signature_expired\"}", uncounted);
    m.blob_sig_wrong =
        metrics_counter("hold_blob_uncounted_total{reason=\"signature_invalid\"}", uncounted);
    m.blob_no_repo =
        metrics_counter("hold_blob_uncounted_total{reason=\"no_repository\"}", uncounted);
    m.blob_not_found =
        metrics_counter("hold_blob_uncounted_total{reason=\"not_found\"}", uncounted);
    m.commit_seconds = metrics_histogram_get("hold_commit_seconds",
                                             "Group-commit transaction time including fsync");
    m.incr_seconds = metrics_histogram_get("hold_increment_seconds",
                                           "incrementStats request time until acknowledged");
    metrics_gauge("hold_commit_last_batch", "Submissions in the latest group commit",
                  gauge_last_batch, NULL);
    metrics_gauge("hold_pending_submissions", "Submissions waiting for their commit", gauge_pending,
                  a);
}

void hold_api_on_commit(void *ud, double seconds, size_t submissions, size_t increments)
{
    (*m.commits)++;
    *m.commit_submissions += submissions;
    if (!increments) (*m.commit_failures)++;
    m.last_batch = (double)submissions;
    metrics_observe(m.commit_seconds, seconds);
}

static void reply_json_status(httpd_req *r, int status, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!s) {
        httpd_reply_error(r, 500, "InternalServerError", "out of memory");
        return;
    }
    httpd_reply_json(r, status, s, strlen(s));
    free(s);
}

void hold_reply_json(httpd_req *r, json_t *v)
{
    reply_json_status(r, 200, v);
}

static int parse_long(const char *s, long *out)
{
    char *end;
    if (!*s || strspn(s, "0123456789-") != strlen(s)) return -1;
    long v = strtol(s, &end, 10);
    if (*end) return -1;
    *out = v;
    return 0;
}

int hold_int_param(httpd_req *r, const char *name, long lo, long hi, long dflt, long *out)
{
    const char *v = httpd_req_param(r, name);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (parse_long(v, out) < 0 || *out < lo || *out > hi) {
        (*m.bad_input)++;
        httpd_reply_error(r, 400, "InvalidRequest", "%s must be an integer in %ld..%ld", name, lo,
                          hi);
        return -1;
    }
    return 0;
}

static void bad_request(httpd_req *r, uint64_t *counter, const char *what)
{
    (*counter)++;
    log_limited(&m.said_bad, LOG_WARN, "api", "%s from %s: %s", httpd_req_path(r),
                httpd_req_peer(r), what);
    httpd_reply_error(r, 400, "InvalidRequest", "%s", what);
}

void hold_bad_request(httpd_req *r, const char *what)
{
    bad_request(r, m.bad_input, what);
}

/* Required did (and repository when repo_name is set) query parameters. */
static int need_target(httpd_req *r, const char **did, const char *repo_name, const char **repo)
{
    *did = httpd_req_param(r, "did");
    if (!*did || !atp_is_did(*did, strlen(*did))) {
        bad_request(r, m.bad_input, "did must be a valid DID");
        return -1;
    }
    if (!repo_name) return 0;
    *repo = httpd_req_param(r, repo_name);
    if (!*repo || !oci_is_repository(*repo, strlen(*repo))) {
        bad_request(r, m.bad_input, "repository must be a valid OCI repository name");
        return -1;
    }
    return 0;
}

/* ---- auth ---- */

/* Both sides are hashed first, so the comparison takes the same time whatever the lengths,
 * and every configured token is compared so the position of a match does not show. */
static int token_ok(const hold_api *a, const char *presented, size_t len)
{
    uint8_t d[32];
    sha256(presented, len, d);
    unsigned match = 0;
    for (size_t i = 0; i < a->ntokens; i++)
        match |= (unsigned)bytes_equal_ct(d, a->token_digests[i], sizeof d);
    return (int)match;
}

typedef enum { AUTH_NONE, AUTH_MALFORMED, AUTH_WRONG, AUTH_OK } auth_result;

/* The bearer token of the Authorization header, taken as bytes with their length: a token is
 * visible ASCII (no space, no control character), anything else is malformed. */
static auth_result bearer(const hold_api *a, httpd_req *r)
{
    size_t len;
    const char *h = httpd_req_header_len(r, "authorization", &len);
    if (!h) return AUTH_NONE;
    if (len <= 7 || strncasecmp(h, "Bearer ", 7) != 0) return AUTH_MALFORMED;
    for (size_t i = 7; i < len; i++)
        if ((unsigned char)h[i] <= 0x20 || (unsigned char)h[i] >= 0x7f) return AUTH_MALFORMED;
    return token_ok(a, h + 7, len - 7) ? AUTH_OK : AUTH_WRONG;
}

/* incrementStats is authenticated from its headers, before its body is read: a refused
 * request costs no body, and its connection closes after the answer (atproto/httpd.h). */
static int check_increment(httpd_req *r, void *ud)
{
    const hold_api *a = ud;
    switch (bearer(a, r)) {
    case AUTH_OK:
        return 0;
    case AUTH_WRONG:
        (*m.auth_wrong)++;
        log_limited(&m.said_auth_wrong, LOG_WARN, "api",
                    "incrementStats from %s: wrong service token", httpd_req_peer(r));
        httpd_reply_error(r, 403, "InvalidToken", "the service token is not accepted");
        return -1;
    default:
        (*m.auth_missing)++;
        log_limited(&m.said_auth_missing, LOG_WARN, "api",
                    "incrementStats from %s: no bearer token", httpd_req_peer(r));
        httpd_reply_error(r, 401, "AuthRequired", "a bearer service token is required");
        return -1;
    }
}

/* ---- incrementStats ---- */

typedef struct {
    httpd_req *req;
    int64_t applied;
} incr_wait;

static void incr_committed(void *ud, int ok)
{
    incr_wait *w = ud;
    if (ok) {
        *m.applied += (uint64_t)w->applied;
        (*m.requests)++;
        metrics_observe(m.incr_seconds, httpd_req_age(w->req));
        char body[64];
        int n = snprintf(body, sizeof body, "{\"applied\":%lld}", (long long)w->applied);
        httpd_reply_json(w->req, 200, body, (size_t)n);
    } else {
        (*m.db_errors)++;
        httpd_reply_error(w->req, 500, "InternalServerError", "the increment was not stored");
    }
    free(w);
}

static void handle_increment(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    size_t len;
    const char *body = httpd_req_body(r, &len);
    increment_batch inc;
    char why[128];
    switch (increments_parse(body, len, &inc, why, sizeof why)) {
    case INCREMENTS_OK:
        break;
    case INCREMENTS_BAD_JSON:
        bad_request(r, m.bad_json, why);
        return;
    case INCREMENTS_INVALID:
        bad_request(r, m.bad_input, why);
        return;
    case INCREMENTS_NOMEM:
        httpd_reply_error(r, 500, "InternalServerError", "out of memory");
        return;
    }
    incr_wait *w = calloc(1, sizeof *w);
    if (!w) {
        increments_clear(&inc);
        httpd_reply_error(r, 500, "InternalServerError", "out of memory");
        return;
    }
    w->req = r;
    w->applied = inc.total;
    int rc = store_submit(a->st, inc.incs, inc.n, incr_committed, w);
    increments_clear(&inc);
    if (rc < 0) {
        free(w);
        httpd_reply_error(r, 503, "ServiceUnavailable", "the hold is shutting down");
    }
}

/* ---- getBlob ---- */

typedef struct {
    httpd_req *req;
    char *location;
} blob_wait;

static void blob_answer(httpd_req *r, const char *location)
{
    if (location)
        httpd_reply_redirect(r, 302, location);
    else
        httpd_reply_error(r, 404, "BlobNotFound", "this hold has no blob URL configured");
}

static void blob_committed(void *ud, int ok)
{
    blob_wait *w = ud;
    if (ok) {
        (*m.requests)++;
        (*m.applied)++;
    } else {
        /* The blob is still served: a lost count must not break a docker pull. */
        (*m.db_errors)++;
        log_error("api", "getBlob: the pull was not stored");
    }
    blob_answer(w->req, w->location);
    free(w->location);
    free(w);
}

static char *fill_template(const char *tpl, const char *did, const char *cid)
{
    buf b = {0};
    int rc = 0;
    for (const char *p = tpl; rc == 0 && *p;) {
        if (!strncmp(p, "{did}", 5)) {
            rc = buf_puts(&b, did);
            p += 5;
        } else if (!strncmp(p, "{cid}", 5)) {
            rc = buf_puts(&b, cid);
            p += 5;
        } else {
            rc = buf_append(&b, p++, 1);
        }
    }
    if (rc != 0 || !b.data) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* Whether a getBlob request may count: it proves the registry sent it (the service token, or
 * a signed URL that has not expired), or the operator counts anonymous fetches. A proof that
 * fails never counts: the redirect is still served, a pull must not break over a count. */
static int blob_countable(const hold_api *a, httpd_req *r, const blob_sig_fields *f)
{
    switch (bearer(a, r)) {
    case AUTH_OK:
        return 1;
    case AUTH_NONE:
        break;
    default:
        (*m.blob_token_wrong)++;
        return 0;
    }
    const char *exp = httpd_req_param(r, "exp"), *sig = httpd_req_param(r, "sig");
    if (exp || sig) {
        switch (blob_sig_check(a->cfg->blob_url_secrets, a->cfg->nblob_url_secrets, f, exp, sig,
                               time(NULL))) {
        case BLOB_SIG_VALID:
            return 1;
        case BLOB_SIG_EXPIRED:
            (*m.blob_sig_expired)++;
            return 0;
        default:
            (*m.blob_sig_wrong)++;
            return 0;
        }
    }
    if (a->cfg->count_anonymous) return 1;
    (*m.blob_anonymous)++;
    return 0;
}

static void handle_get_blob(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    const char *did, *repo = NULL;
    if (need_target(r, &did, NULL, NULL) < 0) return;
    const char *cid = httpd_req_param(r, "cid");
    if (!cid || !atp_is_cid(cid, strlen(cid))) {
        bad_request(r, m.bad_input, "cid must be a valid CID");
        return;
    }
    repo = httpd_req_param(r, "repo");
    if (repo && !oci_is_repository(repo, strlen(repo))) {
        bad_request(r, m.bad_input, "repo must be a valid OCI repository name");
        return;
    }
    const char *method = httpd_req_param(r, "method");
    enum store_event ev = STORE_PULL;
    if (!method || !strcasecmp(method, "GET") || !strcasecmp(method, "HEAD"))
        ev = STORE_PULL;
    else if (!strcasecmp(method, "PUT") || !strcasecmp(method, "POST") ||
             !strcasecmp(method, "PATCH"))
        ev = STORE_PUSH;
    else {
        bad_request(r, m.bad_input, "method must be GET, HEAD, PUT, POST or PATCH");
        return;
    }
    /* Without a blob URL the hold serves nothing, so nothing is counted. */
    if (!a->cfg->blob_url_template) {
        (*m.blob_not_found)++;
        blob_answer(r, NULL);
        return;
    }
    char *location = fill_template(a->cfg->blob_url_template, did, cid);
    if (!location) {
        httpd_reply_error(r, 500, "InternalServerError", "out of memory");
        return;
    }
    blob_sig_fields f = {did, cid, repo, method};
    if (!repo || !blob_countable(a, r, &f)) {
        if (!repo) (*m.blob_no_repo)++;
        blob_answer(r, location);
        free(location);
        return;
    }
    buf key = {0};
    if (buf_printf(&key, "%s\n%s\n%s\n%d", httpd_req_peer(r), did, repo, (int)ev) < 0) {
        free(location);
        httpd_reply_error(r, 500, "InternalServerError", "out of memory");
        return;
    }
    int first = dedupe_first(a->pulls, key.data, (double)uv_hrtime() / 1e9);
    buf_free(&key);
    if (!first) {
        (*m.pulls_deduped)++;
        blob_answer(r, location);
        free(location);
        return;
    }
    (*m.pulls_counted)++;
    blob_wait *w = calloc(1, sizeof *w);
    store_incr inc = {did, repo, ev, 1};
    if (!w) {
        blob_answer(r, location);
        free(location);
        return;
    }
    w->req = r;
    w->location = location;
    if (store_submit(a->st, &inc, 1, blob_committed, w) < 0) {
        blob_answer(r, location);
        free(location);
        free(w);
    }
}

/* ---- reads ---- */

static void handle_get_stats(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    const char *did, *repo;
    if (need_target(r, &did, "repository", &repo) < 0) return;
    store_row row;
    int found = store_get(a->st, did, repo, &row);
    if (found < 0) {
        (*m.db_errors)++;
        httpd_reply_error(r, 500, "InternalServerError", "database error");
        return;
    }
    hold_reply_json(r, view_stats(did, repo, found ? &row : NULL));
    if (found) store_row_clear(&row);
}

static int valid_cursor(const char *c)
{
    return strlen(c) == HOLD_RKEY_LEN &&
           strspn(c, "234567abcdefghijklmnopqrstuvwxyz") == HOLD_RKEY_LEN;
}

static void handle_list_stats(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    const char *did = httpd_req_param(r, "did"), *cursor = httpd_req_param(r, "cursor");
    long limit;
    if (did && !atp_is_did(did, strlen(did))) {
        bad_request(r, m.bad_input, "did must be a valid DID");
        return;
    }
    if (cursor && !valid_cursor(cursor)) {
        bad_request(r, m.bad_input, "cursor is not one this hold returned");
        return;
    }
    if (hold_int_param(r, "limit", 1, 100, 50, &limit) < 0) return;
    store_row *rows;
    size_t n;
    if (store_list(a->st, did, cursor, 0, (size_t)limit, &rows, &n) < 0) {
        (*m.db_errors)++;
        httpd_reply_error(r, 500, "InternalServerError", "database error");
        return;
    }
    json_t *out = json_object(), *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, view_stats(rows[i].did, rows[i].repository, &rows[i]));
    json_object_set_new(out, "stats", arr);
    if (n == (size_t)limit) json_object_set_new(out, "cursor", json_string(rows[n - 1].rkey));
    store_rows_free(rows, n);
    hold_reply_json(r, out);
}

static void handle_history(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    const char *did, *repo;
    long ndays;
    if (need_target(r, &did, "repository", &repo) < 0) return;
    if (hold_int_param(r, "days", 1, 365, 30, &ndays) < 0) return;
    time_t now = time(NULL), first = now - (ndays - 1) * 86400;
    struct tm tm;
    char from[11];
    gmtime_r(&first, &tm);
    strftime(from, sizeof from, "%Y-%m-%d", &tm);
    store_day *rows;
    size_t n;
    if (store_history(a->st, did, repo, from, &rows, &n) < 0) {
        (*m.db_errors)++;
        httpd_reply_error(r, 500, "InternalServerError", "database error");
        return;
    }
    /* Every day of the range is listed, oldest first, zero when nothing happened. */
    json_t *arr = json_array();
    size_t k = 0;
    for (long d = 0; d < ndays; d++) {
        time_t t = first + d * 86400;
        char day[11];
        gmtime_r(&t, &tm);
        strftime(day, sizeof day, "%Y-%m-%d", &tm);
        while (k < n && strcmp(rows[k].day, day) < 0)
            k++;
        int hit = k < n && !strcmp(rows[k].day, day);
        json_array_append_new(arr,
                              json_pack("{s:s, s:I, s:I}", "date", day, "pullCount",
                                        (json_int_t)(hit ? rows[k].pull_count : 0), "pushCount",
                                        (json_int_t)(hit ? rows[k].push_count : 0)));
    }
    free(rows);
    hold_reply_json(r, json_pack("{s:s, s:s, s:o}", "did", did, "repository", repo, "days", arr));
}

/* ---- ops ---- */

/* 503 "degraded" when the database cannot be read: a load balancer must not count on it. */
static void handle_health(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    int64_t rows = store_count(a->st);
    reply_json_status(r, rows >= 0 ? 200 : 503,
                      json_pack("{s:s, s:s, s:s, s:I, s:I, s:f}", "status",
                                rows >= 0 ? "ok" : "degraded", "version", HOLD_VERSION, "did",
                                a->cfg->did, "repositories", (json_int_t)rows, "pending",
                                (json_int_t)store_pending(a->st), "commitP99Seconds",
                                metrics_quantile(m.commit_seconds, 0.99)));
}

static void handle_metrics(httpd_req *r, void *ud)
{
    buf b = {0};
    metrics_render(&b);
    httpd_reply(r, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
    buf_free(&b);
}

int hold_api_init(hold_api *a, const hold_config *cfg, store *st)
{
    memset(a, 0, sizeof *a);
    a->cfg = cfg;
    a->st = st;
    a->pulls = dedupe_new(cfg->pull_dedupe_seconds);
    a->ntokens = cfg->ntokens;
    a->token_digests = calloc(cfg->ntokens ? cfg->ntokens : 1, sizeof *a->token_digests);
    if (!a->pulls || !a->token_digests) {
        hold_api_free(a);
        return -1;
    }
    for (size_t i = 0; i < cfg->ntokens; i++)
        sha256(cfg->tokens[i], strlen(cfg->tokens[i]), a->token_digests[i]);
    if (!cfg->ntokens)
        log_warn("api", "no HOLD_SERVICE_TOKENS: incrementStats refuses every request");
    if (cfg->count_anonymous)
        log_warn("api", "HOLD_COUNT_ANONYMOUS is on: getBlob counts fetches nobody vouches for");
    metrics_init(a);
    return 0;
}

int hold_api_routes(hold_api *a, httpd *h)
{
    int rc = 0;
    rc |= httpd_route_checked(h, "POST", "/xrpc/io.atcr.hold.incrementStats", check_increment,
                              handle_increment, a);
    rc |= httpd_route(h, "GET", "/xrpc/com.atproto.sync.getBlob", handle_get_blob, a);
    rc |= httpd_route(h, "GET", "/xrpc/io.atcr.hold.getStats", handle_get_stats, a);
    rc |= httpd_route(h, "GET", "/xrpc/io.atcr.hold.listStats", handle_list_stats, a);
    rc |= httpd_route(h, "GET", "/xrpc/io.atcr.hold.getStatsHistory", handle_history, a);
    rc |= httpd_route(h, "GET", "/xrpc/_health", handle_health, a);
    rc |= httpd_route(h, "GET", "/metrics", handle_metrics, a);
    return rc ? -1 : 0;
}

void hold_api_free(hold_api *a)
{
    dedupe_free(a->pulls);
    free(a->token_digests);
    memset(a, 0, sizeof *a);
}
