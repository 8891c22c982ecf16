#include "hold/views.h"

#include <stdio.h>
#include <time.h>

#include "hold/cid.h"

void hold_iso_time(int64_t ms, char out[32])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", base, (int)(ms % 1000));
}

json_t *view_stats(const char *did, const char *repository, const store_row *row)
{
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "did", json_string(did));
    json_object_set_new(o, "repository", json_string(repository));
    json_object_set_new(o, "pullCount", json_integer(row ? row->pull_count : 0));
    json_object_set_new(o, "pushCount", json_integer(row ? row->push_count : 0));
    char t[32];
    if (row && row->last_pull_ms) {
        hold_iso_time(row->last_pull_ms, t);
        json_object_set_new(o, "lastPull", json_string(t));
    }
    if (row && row->last_push_ms) {
        hold_iso_time(row->last_push_ms, t);
        json_object_set_new(o, "lastPush", json_string(t));
    }
    return o;
}

json_t *view_record(const char *hold_did, const store_row *row)
{
    char last_pull[32], last_push[32], created[32], updated[32];
    hold_iso_time(row->last_pull_ms, last_pull);
    hold_iso_time(row->last_push_ms, last_push);
    hold_iso_time(row->created_ms, created);
    hold_iso_time(row->updated_ms, updated);
    /* The CID covers exactly the fields of the value below. */
    cid_field f[9] = {
        {"$type", HOLD_STATS_COLLECTION, 0},
        {"did", row->did, 0},
        {"repository", row->repository, 0},
        {"pullCount", NULL, (uint64_t)row->pull_count},
        {"pushCount", NULL, (uint64_t)row->push_count},
        {"createdAt", created, 0},
        {"updatedAt", updated, 0},
    };
    size_t nf = 7;
    if (row->last_pull_ms) f[nf++] = (cid_field){"lastPull", last_pull, 0};
    if (row->last_push_ms) f[nf++] = (cid_field){"lastPush", last_push, 0};
    char cid[CID_STR_LEN + 1];
    if (cid_of_record(f, nf, cid) < 0) return NULL;

    json_t *value = json_object();
    for (size_t i = 0; value && i < nf; i++)
        json_object_set_new(value, f[i].key,
                            f[i].str ? json_string(f[i].str) : json_integer((json_int_t)f[i].num));
    char uri[2300];
    snprintf(uri, sizeof uri, "at://%s/%s/%s", hold_did, HOLD_STATS_COLLECTION, row->rkey);
    json_t *o = json_object();
    if (!o || !value) {
        json_decref(o);
        json_decref(value);
        return NULL;
    }
    json_object_set_new(o, "uri", json_string(uri));
    json_object_set_new(o, "cid", json_string(cid));
    json_object_set_new(o, "value", value);
    return o;
}

json_t *view_did_doc(const hold_config *c)
{
    return json_pack("{s:[s], s:s, s:[{s:s, s:s, s:s}]}", "@context",
                     "https://www.w3.org/ns/did/v1", "id", c->did, "service", "id", "#atcr_hold",
                     "type", "AtcrHoldService", "serviceEndpoint", c->public_url);
}
