#include "appview/event.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atproto/json_read.h"
#include "atproto/syntax.h"

#define ATCR_PREFIX "io.atcr."

/* ---- the cheap scan: no parse, no allocation ---- */

static const char *find(const char *data, size_t len, const char *needle)
{
    return memmem(data, len, needle, strlen(needle));
}

/* The unsigned integer after the first occurrence of key (e.g. "\"time_us\":"), or 0. */
static uint64_t scan_uint(const char *data, size_t len, const char *key)
{
    const char *p = find(data, len, key);
    if (!p) return 0;
    const char *end = data + len;
    p += strlen(key);
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

/* Whether the string value of the first occurrence of key starts with prefix. In Jetstream
 * frames "collection" comes before "record", so the first occurrence is the commit's own;
 * if a record ever came first, the full parse below still checks the real field. */
static int value_starts_with(const char *data, size_t len, const char *key, const char *prefix)
{
    const char *p = find(data, len, key);
    if (!p) return 0;
    p += strlen(key);
    size_t n = strlen(prefix);
    return (size_t)(data + len - p) >= n && !memcmp(p, prefix, n);
}

/* ---- the record's own bytes ----
 *
 * A strict skipper over JSON values, to find where the commit's record starts and ends in the
 * message, so the fold can store those bytes instead of serializing the parsed record again.
 * It runs only on messages jansson accepted (duplicate keys rejected), so the one member it
 * finds is the one jansson parsed. Where it gives up (too deep, an escaped key), the span is
 * left unset and the fold serializes the record itself. */

#define SPAN_MAX_DEPTH 64

typedef struct {
    const char *p, *end;
    int control; /* whitespace other than a space was skipped */
} scan;

/* The loops below work on a local pointer: stores through s->p would otherwise make the
 * compiler reload it for every byte (a char store may alias anything). */
static void skip_ws(scan *s)
{
    const char *p = s->p;
    for (; p < s->end; p++) {
        if (*p == '\t' || *p == '\n' || *p == '\r')
            s->control = 1;
        else if (*p != ' ')
            break;
    }
    s->p = p;
}

static int eat(scan *s, char c)
{
    if (s->p >= s->end || *s->p != c) return -1;
    s->p++;
    return 0;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int skip_string(scan *s)
{
    const char *p = s->p, *end = s->end;
    if (p >= end || *p++ != '"') return -1;
    for (;;) {
        while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
            p++;
        if (p >= end || (unsigned char)*p < 0x20) return -1;
        if (*p++ == '"') break;
        if (p >= end) return -1;
        char c = *p++;
        if (c == 'u') {
            if (end - p < 4 || !is_hex(p[0]) || !is_hex(p[1]) || !is_hex(p[2]) || !is_hex(p[3]))
                return -1;
            p += 4;
        } else if (c == 0 || !strchr("\"\\/bfnrt", c)) {
            return -1;
        }
    }
    s->p = p;
    return 0;
}

static int skip_digits(scan *s)
{
    const char *start = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > start ? 0 : -1;
}

static int skip_number(scan *s)
{
    if (s->p < s->end && *s->p == '-') s->p++;
    if (s->p < s->end && *s->p == '0')
        s->p++;
    else if (skip_digits(s) < 0)
        return -1;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (skip_digits(s) < 0) return -1;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
        if (skip_digits(s) < 0) return -1;
    }
    return 0;
}

static int skip_word(scan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n)) return -1;
    s->p += n;
    return 0;
}

static int skip_value(scan *s, int depth);

/* The members or elements of an object or array after its opening bracket, up to and
 * including the closing one. */
static int skip_container(scan *s, char close, int depth)
{
    skip_ws(s);
    if (eat(s, close) == 0) return 0;
    for (;;) {
        if (close == '}') {
            if (skip_string(s) < 0) return -1;
            skip_ws(s);
            if (eat(s, ':') < 0) return -1;
            skip_ws(s);
        }
        if (skip_value(s, depth) < 0) return -1;
        skip_ws(s);
        if (eat(s, close) == 0) return 0;
        if (eat(s, ',') < 0) return -1;
        skip_ws(s);
    }
}

/* One value at s->p (no leading whitespace) with at most SPAN_MAX_DEPTH - depth levels of
 * containers. */
static int skip_value(scan *s, int depth)
{
    if (s->p >= s->end) return -1;
    switch (*s->p) {
    case '"':
        return skip_string(s);
    case '{':
    case '[':
        if (depth >= SPAN_MAX_DEPTH) return -1;
        return skip_container(s, *s->p++ == '{' ? '}' : ']', depth + 1);
    case 't':
        return skip_word(s, "true");
    case 'f':
        return skip_word(s, "false");
    case 'n':
        return skip_word(s, "null");
    default:
        return skip_number(s);
    }
}

/* Moves s from an object to the value of its member key. Keys are compared as written: a key
 * spelled with escapes is not recognized (the caller then goes without the span). */
static int find_member(scan *s, const char *key)
{
    size_t n = strlen(key);
    skip_ws(s);
    if (eat(s, '{') < 0) return -1;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') return -1;
    for (;;) {
        const char *k = s->p;
        if (skip_string(s) < 0) return -1;
        int match = (size_t)(s->p - k) == n + 2 && !memcmp(k + 1, key, n);
        skip_ws(s);
        if (eat(s, ':') < 0) return -1;
        skip_ws(s);
        if (match) return 0;
        if (skip_value(s, 0) < 0) return -1;
        skip_ws(s);
        if (eat(s, ',') < 0) return -1; /* '}': not there */
        skip_ws(s);
    }
}

/* Sets ev->record_json to the bytes of commit.record in the message. The fold stores them
 * after a header line, so a span holding a raw control character is not used: strings cannot
 * hold one, so that is whitespace other than a space between the record's tokens. */
static void record_span(event *ev, const char *data, size_t len)
{
    scan s = {data, data + len, 0};
    if (find_member(&s, "commit") < 0 || find_member(&s, "record") < 0) return;
    const char *start = s.p;
    s.control = 0;
    if (skip_value(&s, 0) < 0 || s.control) return;
    ev->record_json = start;
    ev->record_json_len = (size_t)(s.p - start);
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

int64_t event_datetime_ms(const char *s)
{
    if (!s || !atp_is_datetime(s, strlen(s))) return -1;
    struct tm tm = {0};
    int ms = 0;
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) return -1;
    if (*p == '.') {
        int scale = 100;
        for (p++; *p >= '0' && *p <= '9'; p++) {
            ms += (*p - '0') * scale;
            scale /= 10;
        }
    }
    int64_t secs = (int64_t)timegm(&tm);
    if (*p == '+' || *p == '-') {
        int sign = *p == '+' ? 1 : -1;
        int hh = atoi(p + 1), mm = atoi(p + 4);
        secs -= sign * (hh * 3600 + mm * 60);
    }
    return secs * 1000 + ms;
}

static event_kind invalid(event *ev, const char *reason)
{
    ev->kind = EVENT_INVALID;
    ev->reason = reason;
    return ev->kind;
}

/* The digest a tag points at: its deprecated manifestDigest when present, else the record key
 * of its manifest at-uri, which ATCR names after the digest's hex. */
static int tag_digest(event *ev)
{
    const char *d = get_string(ev->record, "manifestDigest");
    if (d && oci_is_digest(d, strlen(d))) {
        snprintf(ev->digest, sizeof ev->digest, "%s", d);
        return 0;
    }
    const char *uri = get_string(ev->record, "manifest");
    const char *slash = uri ? strrchr(uri, '/') : NULL;
    if (!slash) return -1;
    const char *rkey = slash + 1;
    if (strchr(rkey, ':')) {
        snprintf(ev->digest, sizeof ev->digest, "%s", rkey);
    } else {
        snprintf(ev->digest, sizeof ev->digest, "sha256:%s", rkey);
    }
    return oci_is_digest(ev->digest, strlen(ev->digest)) ? 0 : -1;
}

static event_kind record_fields(event *ev)
{
    ev->repository = get_string(ev->record, "repository");
    if (!valid(oci_is_repository, ev->repository)) return invalid(ev, "bad_repository");
    const char *created = get_string(ev->record, "createdAt");
    if (!strcmp(ev->collection, ATCR_PREFIX "manifest")) {
        ev->record_kind = RECORD_MANIFEST;
        ev->key = get_string(ev->record, "digest");
        if (!valid(oci_is_digest, ev->key)) return invalid(ev, "bad_digest");
        snprintf(ev->digest, sizeof ev->digest, "%s", ev->key);
    } else if (!strcmp(ev->collection, ATCR_PREFIX "tag")) {
        ev->record_kind = RECORD_TAG;
        ev->key = get_string(ev->record, "tag");
        if (!valid(oci_is_tag, ev->key)) return invalid(ev, "bad_tag");
        if (tag_digest(ev) < 0) return invalid(ev, "bad_digest");
    } else {
        ev->record_kind = RECORD_HOLD_STATS;
        ev->key = get_string(ev->record, "did");
        created = get_string(ev->record, "updatedAt");
    }
    ev->created_ms = event_datetime_ms(created);
    if (ev->created_ms < 0) ev->created_ms = (int64_t)(ev->time_us / 1000);
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
    ev->time_us = scan_uint(data, len, "\"time_us\":");
    ev->cursor = flavor == JETSTREAM_V2 ? scan_uint(data, len, "\"seq\":") : ev->time_us;
    if (!ev->cursor) return invalid(ev, "no_cursor");

    int is_commit = find(data, len, "\"kind\":\"commit\"") != NULL;
    if (is_commit && !value_starts_with(data, len, "\"collection\":\"", ATCR_PREFIX))
        return ev->kind = EVENT_SKIP;

    ev->root = json_read(data, len); /* json_loadb's rules, at several times its speed */
    if (!json_is_object(ev->root)) return invalid(ev, "bad_json");
    ev->did = get_string(ev->root, "did");
    if (!valid(atp_is_did, ev->did)) return invalid(ev, "bad_did");
    const char *kind = get_string(ev->root, "kind");
    if (!kind) return invalid(ev, "bad_kind");
    if (!strcmp(kind, "commit")) {
        if (parse_commit(ev, lexicons) == EVENT_COMMIT && !ev->is_delete)
            record_span(ev, data, len);
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
