#include "appview/event.h"

#include <stdlib.h>
#include <string.h>

#include "atproto/json_read.h"
#include "atproto/syntax.h"

#define ATCR_PREFIX "io.atcr."

/* ---- the cheap scan: no parse, no allocation ---- */

static const char *find(const char *data, size_t len, const char *needle)
{
    return memmem(data, len, needle, strlen(needle));
}

/* The unsigned integer at p (after any spaces), or 0. */
static uint64_t uint_at(const char *p, const char *end)
{
    while (p < end && *p == ' ')
        p++;
    uint64_t v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 19) {
        v = v * 10 + (uint64_t)(*p++ - '0');
        digits++;
    }
    return v;
}

/* Where the value after the first occurrence of key starts, or NULL. */
static const char *value_of(const char *data, size_t len, const char *key)
{
    const char *p = find(data, len, key);
    return p ? p + strlen(key) : NULL;
}

/* The unsigned integer after the first occurrence of key (e.g. "\"time_us\":"), or 0. */
static uint64_t scan_uint(const char *data, size_t len, const char *key)
{
    const char *p = value_of(data, len, key);
    return p ? uint_at(p, data + len) : 0;
}

/* p past lit when the bytes at p are lit, else NULL (also when p is NULL). */
static const char *after(const char *p, const char *end, const char *lit, size_t n)
{
    return p && (size_t)(end - p) >= n && !memcmp(p, lit, n) ? p + n : NULL;
}
#define AFTER(p, end, lit) after((p), (end), (lit), sizeof(lit) - 1)

/* The closing quote of the string whose contents start at p, or NULL. */
static const char *string_end(const char *p, const char *end)
{
    return p ? memchr(p, '"', (size_t)(end - p)) : NULL;
}

/* A v1 commit laid out as Jetstream writes it:
 *   {"did":"D","time_us":N,"kind":"commit","commit":{"rev":"R","operation":"O","collection":"C
 * Then the three keys the scan wants are checked where they are, instead of three memmem calls
 * over the frame (a tenth of the ingester's time when nine events in ten are not for it). The
 * answer is the scan's own: each key found here is its first occurrence in the frame, as no
 * quote before it can start another one. Sets where time_us's and collection's values start;
 * 0 for any other layout, which the scan searches with memmem. */
static int commit_layout(const char *data, size_t len, const char **time_us,
                         const char **collection)
{
    const char *end = data + len;
    const char *p = string_end(AFTER(data, end, "{\"did\":\""), end);
    *time_us = p = AFTER(p, end, "\",\"time_us\":");
    while (p && p < end && *p >= '0' && *p <= '9')
        p++;
    p = string_end(AFTER(p, end, ",\"kind\":\"commit\",\"commit\":{\"rev\":\""), end);
    p = string_end(AFTER(p, end, "\",\"operation\":\""), end);
    *collection = AFTER(p, end, "\",\"collection\":\"");
    return *collection != NULL;
}

/* ---- the record's own bytes ----
 *
 * json_read_span notes where the commit's record starts and ends in the message while it
 * parses it, so the fold can store those bytes instead of serializing the parsed record again.
 * Where that is not possible the span is left unset and the fold serializes the record
 * itself: a "commit" or "record" member name spelled with escapes, nesting deeper than
 * SPAN_MAX_DEPTH levels, or whitespace other than spaces between the record's tokens (the fold
 * stores the bytes after a header line; a string cannot hold a raw control character). */

#define SPAN_MAX_DEPTH 64

static const char *const record_path[] = {"commit", "record", NULL};

static void record_span(event *ev, const json_span *span)
{
    if (!span->start || span->depth > SPAN_MAX_DEPTH || span->raw_whitespace) return;
    ev->record_json = span->start;
    ev->record_json_len = span->len;
}

/* ---- helpers for the full parse ---- */

static const char *get_string(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static int valid(bool (*check)(const char *, size_t), const char *s)
{
    return s && check(s, strlen(s));
}

/* Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
 * days_from_civil), in place of strptime and timegm and their 1,800 instructions a record. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

int64_t event_datetime_ms(const char *s)
{
    /* The syntax check fixes where every field is and that each is in its range. */
    if (!s || !atp_is_datetime(s, strlen(s))) return -1;
    int64_t secs =
        days_from_civil(digits(s, 4), (unsigned)digits(s + 5, 2), (unsigned)digits(s + 8, 2)) *
            86400 +
        digits(s + 11, 2) * 3600 + digits(s + 14, 2) * 60 + digits(s + 17, 2);
    const char *p = s + 19;
    int ms = 0;
    if (*p == '.') {
        int scale = 100;
        for (p++; *p >= '0' && *p <= '9'; p++) {
            ms += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (*p == '+' || *p == '-') {
        int sign = *p == '+' ? 1 : -1;
        secs -= sign * (digits(p + 1, 2) * 3600 + digits(p + 4, 2) * 60);
    }
    return secs * 1000 + ms;
}

static event_kind invalid(event *ev, const char *reason)
{
    ev->kind = EVENT_INVALID;
    ev->reason = reason;
    return ev->kind;
}

/* What a tag points at. Its manifest at-uri names a record of the tag's own repository:
 * at://<the event's DID>/io.atcr.manifest/<rkey>, whatever the rkey looks like (a TID as the
 * lexicon says, or any other record key): the digest is read from that record, never from the
 * rkey's spelling. The deprecated manifestDigest is kept beside it when well-formed, and is all
 * a tag without an at-uri has. NULL, or the drop reason. */
static const char *tag_target(event *ev)
{
    static const char scheme[] = "at://", collection[] = "/" ATCR_PREFIX "manifest/";
    const char *d = get_string(ev->record, "manifestDigest");
    if (d && !oci_is_digest(d, strlen(d))) return "bad_digest";
    if (d) snprintf(ev->target_digest, sizeof ev->target_digest, "%s", d);
    const char *uri = get_string(ev->record, "manifest");
    if (!uri) return d ? NULL : "no_manifest_ref";
    size_t dn = strlen(ev->did), cn = sizeof collection - 1, sn = sizeof scheme - 1;
    if (!valid(atp_is_at_uri, uri) || strncmp(uri, scheme, sn)) return "bad_manifest_uri";
    const char *authority = uri + sn, *slash = strchr(authority, '/');
    if (!slash) return "bad_manifest_uri";
    if ((size_t)(slash - authority) != dn || memcmp(authority, ev->did, dn))
        return "manifest_uri_other_repo";
    if (strncmp(slash, collection, cn)) return "manifest_uri_other_collection";
    if (!valid(atp_is_rkey, slash + cn)) return "bad_manifest_uri";
    ev->target_rkey = slash + cn;
    return NULL;
}

static event_kind record_fields(event *ev)
{
    ev->repository = get_string(ev->record, "repository");
    if (!valid(oci_is_repository, ev->repository)) return invalid(ev, "bad_repository");
    const char *at_field = "createdAt";
    if (!strcmp(ev->collection, ATCR_PREFIX "manifest")) {
        ev->record_kind = RECORD_MANIFEST;
        ev->key = get_string(ev->record, "digest");
        if (!valid(oci_is_digest, ev->key)) return invalid(ev, "bad_digest");
    } else if (!strcmp(ev->collection, ATCR_PREFIX "tag")) {
        ev->record_kind = RECORD_TAG;
        ev->key = get_string(ev->record, "tag");
        if (!valid(oci_is_tag, ev->key)) return invalid(ev, "bad_tag");
        const char *why = tag_target(ev);
        if (why) return invalid(ev, why);
    } else {
        ev->record_kind = RECORD_HOLD_STATS;
        ev->key = get_string(ev->record, "did");
        at_field = "updatedAt";
    }
    ev->at = get_string(ev->record, at_field);
    ev->created_ms = event_datetime_ms(ev->at);
    if (ev->created_ms < 0) {
        ev->at = NULL;
        ev->created_ms = (int64_t)(ev->time_us / 1000);
    }
    return ev->kind = EVENT_COMMIT;
}

/* The checks of a created or updated record, whether it came from the firehose or a PDS
 * listing. */
static event_kind check_record(event *ev, const lexicon_set *lexicons)
{
    if (!valid(atp_is_rkey, ev->rkey)) return invalid(ev, "bad_rkey");
    if (!valid(atp_is_tid, ev->rev)) return invalid(ev, "bad_rev");
    if (!valid(atp_is_cid, ev->cid)) return invalid(ev, "bad_cid");
    if (!json_is_object(ev->record)) return invalid(ev, "invalid_record");
    char why[160];
    if (lexicon_validate_record(lexicons, ev->collection, ev->record, why, sizeof why) < 0)
        return invalid(ev, "invalid_record");
    return record_fields(ev);
}

event_kind event_from_record(event *ev, const char *did, const char *collection, const char *rkey,
                             const char *rev, const char *cid, json_t *record,
                             const lexicon_set *lexicons)
{
    memset(ev, 0, sizeof *ev);
    ev->did = did;
    ev->collection = collection;
    ev->rkey = rkey;
    ev->rev = rev;
    ev->cid = cid;
    ev->record = record;
    if (!valid(atp_is_did, did)) return invalid(ev, "bad_did");
    if (!collection || !lexicon_is_record_type(lexicons, collection))
        return invalid(ev, "bad_collection");
    return check_record(ev, lexicons);
}

static event_kind parse_commit(event *ev, const lexicon_set *lexicons)
{
    json_t *commit = json_object_get(ev->root, "commit");
    const char *op = get_string(commit, "operation");
    ev->collection = get_string(commit, "collection");
    ev->rkey = get_string(commit, "rkey");
    ev->rev = get_string(commit, "rev");
    if (!op || !ev->collection) return invalid(ev, "bad_commit");
    if (strncmp(ev->collection, ATCR_PREFIX, strlen(ATCR_PREFIX)) ||
        !lexicon_is_record_type(lexicons, ev->collection))
        return ev->kind = EVENT_SKIP;
    if (!strcmp(op, "delete")) {
        if (!valid(atp_is_rkey, ev->rkey)) return invalid(ev, "bad_rkey");
        if (!valid(atp_is_tid, ev->rev)) return invalid(ev, "bad_rev");
        ev->is_delete = 1;
        return ev->kind = EVENT_COMMIT;
    }
    if (strcmp(op, "create") && strcmp(op, "update")) return invalid(ev, "bad_operation");
    ev->is_create = !strcmp(op, "create");
    ev->cid = get_string(commit, "cid");
    ev->record = json_object_get(commit, "record");
    return check_record(ev, lexicons);
}

static event_kind parse_account(event *ev)
{
    json_t *acct = json_object_get(ev->root, "account");
    json_t *active = json_object_get(acct, "active");
    if (!json_is_boolean(active)) return invalid(ev, "bad_account");
    const char *status = get_string(acct, "status");
    ev->purge = json_is_false(active) && status &&
                (!strcmp(status, "deleted") || !strcmp(status, "takendown"));
    return ev->kind = EVENT_ACCOUNT;
}

event_kind event_parse(event *ev, jetstream_flavor flavor, const char *data, size_t len,
                       const lexicon_set *lexicons)
{
    memset(ev, 0, sizeof *ev);
    const char *end = data + len, *time_us, *collection;
    int is_commit = flavor == JETSTREAM_V1 && commit_layout(data, len, &time_us, &collection);
    if (is_commit) {
        ev->time_us = ev->cursor = uint_at(time_us, end);
    } else {
        ev->time_us = scan_uint(data, len, "\"time_us\":");
        ev->cursor = flavor == JETSTREAM_V2 ? scan_uint(data, len, "\"seq\":") : ev->time_us;
        is_commit = find(data, len, "\"kind\":\"commit\"") != NULL;
        /* In Jetstream frames "collection" comes before "record", so the first occurrence is
         * the commit's own; if a record ever came first, the full parse below still checks
         * the real field. */
        collection = is_commit ? value_of(data, len, "\"collection\":\"") : NULL;
    }
    if (!ev->cursor) return invalid(ev, "no_cursor");
    if (is_commit && !AFTER(collection, end, ATCR_PREFIX)) return ev->kind = EVENT_SKIP;

    json_span span;
    /* json_loadb's rules, at several times its speed, and where the record sits */
    ev->root = json_read_span(data, len, record_path, &span);
    if (!json_is_object(ev->root)) return invalid(ev, "bad_json");
    ev->did = get_string(ev->root, "did");
    if (!valid(atp_is_did, ev->did)) return invalid(ev, "bad_did");
    const char *kind = get_string(ev->root, "kind");
    if (!kind) return invalid(ev, "bad_kind");
    if (!strcmp(kind, "commit")) {
        if (parse_commit(ev, lexicons) == EVENT_COMMIT && !ev->is_delete) record_span(ev, &span);
        return ev->kind;
    }
    if (!strcmp(kind, "identity")) return ev->kind = EVENT_IDENTITY;
    if (!strcmp(kind, "account")) return parse_account(ev);
    return invalid(ev, "bad_kind");
}

void event_clear(event *ev)
{
    json_decref(ev->root);
    ev->root = NULL;
}
