#include "hold/records.h"

#include <jansson.h>
#include <string.h>

#include "atproto/syntax.h"
#include "hold/views.h"

/* The repo parameter must name this hold (by DID); 404 RepoNotFound otherwise. */
static int own_repo(hold_api *a, httpd_req *r)
{
    const char *repo = httpd_req_param(r, "repo");
    if (!repo) {
        hold_bad_request(r, "repo is required");
        return -1;
    }
    if (strcmp(repo, a->cfg->did) != 0) {
        httpd_reply_error(r, 404, "RepoNotFound", "this hold only serves its own repo, %s",
                          a->cfg->did);
        return -1;
    }
    return 0;
}

static void handle_describe(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    if (own_repo(a, r) < 0) return;
    /* The hold has no handle; "handle.invalid" is the protocol's marker for that. */
    hold_reply_json(r, json_pack("{s:s, s:s, s:o, s:[s], s:b}", "handle", "handle.invalid", "did",
                                 a->cfg->did, "didDoc", view_did_doc(a->cfg), "collections",
                                 HOLD_STATS_COLLECTION, "handleIsCorrect", 0));
}

static void handle_get_record(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    if (own_repo(a, r) < 0) return;
    const char *coll = httpd_req_param(r, "collection"), *rkey = httpd_req_param(r, "rkey");
    if (!coll || !atp_is_nsid(coll, strlen(coll)) || !rkey || !atp_is_rkey(rkey, strlen(rkey))) {
        hold_bad_request(r, "collection (NSID) and rkey are required");
        return;
    }
    store_row row;
    int found = strcmp(coll, HOLD_STATS_COLLECTION) ? 0 : store_get_by_rkey(a->st, rkey, &row);
    if (found < 0) {
        httpd_reply_error(r, 500, "InternalServerError", "database error");
        return;
    }
    if (!found) {
        httpd_reply_error(r, 404, "RecordNotFound", "no record %s/%s", coll, rkey);
        return;
    }
    json_t *rec = view_record(a->cfg->did, &row);
    store_row_clear(&row);
    const char *want_cid = httpd_req_param(r, "cid");
    if (rec && want_cid && strcmp(want_cid, json_string_value(json_object_get(rec, "cid")))) {
        json_decref(rec);
        httpd_reply_error(r, 404, "RecordNotFound", "the record has changed since that cid");
        return;
    }
    hold_reply_json(r, rec);
}

static void handle_list_records(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    if (own_repo(a, r) < 0) return;
    const char *coll = httpd_req_param(r, "collection"), *cursor = httpd_req_param(r, "cursor");
    const char *reverse = httpd_req_param(r, "reverse");
    long limit;
    if (!coll || !atp_is_nsid(coll, strlen(coll))) {
        hold_bad_request(r, "collection must be an NSID");
        return;
    }
    if (reverse && strcmp(reverse, "true") && strcmp(reverse, "false")) {
        hold_bad_request(r, "reverse must be true or false");
        return;
    }
    if (cursor && !atp_is_rkey(cursor, strlen(cursor))) {
        hold_bad_request(r, "cursor is not a record key");
        return;
    }
    if (hold_int_param(r, "limit", 1, 100, 50, &limit) < 0) return;
    store_row *rows = NULL;
    size_t n = 0;
    if (!strcmp(coll, HOLD_STATS_COLLECTION) &&
        store_list(a->st, NULL, cursor, reverse && !strcmp(reverse, "true"), (size_t)limit, &rows,
                   &n) < 0) {
        httpd_reply_error(r, 500, "InternalServerError", "database error");
        return;
    }
    json_t *out = json_object(), *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, view_record(a->cfg->did, &rows[i]));
    json_object_set_new(out, "records", arr);
    if (n && n == (size_t)limit) json_object_set_new(out, "cursor", json_string(rows[n - 1].rkey));
    store_rows_free(rows, n);
    hold_reply_json(r, out);
}

static void handle_did_json(httpd_req *r, void *ud)
{
    hold_api *a = ud;
    hold_reply_json(r, view_did_doc(a->cfg));
}

int hold_records_routes(hold_api *a, httpd *h)
{
    int rc = 0;
    rc |= httpd_route(h, "GET", "/xrpc/com.atproto.repo.describeRepo", handle_describe, a);
    rc |= httpd_route(h, "GET", "/xrpc/com.atproto.repo.getRecord", handle_get_record, a);
    rc |= httpd_route(h, "GET", "/xrpc/com.atproto.repo.listRecords", handle_list_records, a);
    rc |= httpd_route(h, "GET", "/.well-known/did.json", handle_did_json, a);
    return rc ? -1 : 0;
}
