#include "appview/event.h"

#include <stdlib.h>
#include <string.h>

#include "atproto/syntax.h"

#define ATCR_PREFIX "io.atcr."

const char *const event_collections[EVENT_NCOLLECTIONS] = {
    ATCR_PREFIX "manifest", ATCR_PREFIX "tag", EVENT_COLLECTION_HOLD_STATS};

/* ---- the cheap scan: no parse, no allocation ---- */

static const char *find(const char *data, size_t len, const char *needle)
{
    return memmem(data, len, needle, strlen(needle));
}

/* The value of the eight ASCII digits at p, or -1 when one of them is not a digit. Every frame
 * carries a sixteen-digit time_us, and a digit at a time was 4% of the ingester's work. */
static int64_t eight_digits(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w); /* the first digit in the lowest byte */
#endif
    const uint64_t high = 0xF0F0F0F0F0F0F0F0ull, zeros = 0x3030303030303030ull;
    /* a digit is 0x30-0x39: its high nibble is 3, and adding 6 leaves it 3 */
    if ((w & high) != zeros || ((w + 0x0606060606060606ull) & high) != zeros) return -1;
    w -= zeros;
    w = w * 10 + (w >> 8); /* each even byte: the two digits from it on */
    w = ((w & 0x000000FF000000FFull) * (100 + (1000000ull << 32)) +
         ((w >> 16) & 0x000000FF000000FFull) * (1 + (10000ull << 32))) >>
        32;
    return (int64_t)w;
}

/* The unsigned integer at p (after any spaces), or 0; at most its first 19 digits. Sets
 * *digits_end (when not NULL) past the digits read. */
static uint64_t uint_at(const char *p, const char *end, const char **digits_end)
{
    while (p < end && *p == ' ')
        p++;
    uint64_t v = 0;
    int digits = 0;
    int64_t eight;
    while (end - p >= 8 && digits <= 11 && (eight = eight_digits(p)) >= 0) {
        v = v * 100000000u + (uint64_t)eight;
        p += 8;
        digits += 8;
    }
    while (p < end && *p >= '0' && *p <= '9' && digits < 19) {
        v = v * 10 + (uint64_t)(*p++ - '0');
        digits++;
    }
    if (digits_end) *digits_end = p;
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
    return p ? uint_at(p, data + len, NULL) : 0;
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
 *   {"did":"D","time_us":N,"cursor":S,"kind":"commit","commit":{"rev":"R","operation":"O",
 *   "collection":"C
 * ("cursor" only from servers that have seqs). Then the keys the scan wants are checked where
 * they are, instead of memmem calls over the frame (a tenth of the ingester's time when nine
 * events in ten are not for it). The answer is the scan's own: each key found here is its
 * first occurrence in the frame, as no quote before it can start another one. Sets time_us,
 * cursor (0 when absent) and where collection's value starts; 0 for any other layout, which
 * the scan searches with memmem. */
static int commit_layout(const char *data, size_t len, uint64_t *time_us, uint64_t *cursor,
                         const char **collection)
{
    const char *end = data + len;
    const char *p = string_end(AFTER(data, end, "{\"did\":\""), end);
    p = AFTER(p, end, "\",\"time_us\":");
    *time_us = p ? uint_at(p, end, &p) : 0;
    const char *c = AFTER(p, end, ",\"cursor\":");
    *cursor = c ? uint_at(c, end, &p) : 0;
    p = string_end(AFTER(p, end, ",\"kind\":\"commit\",\"commit\":{\"rev\":\""), end);
    p = string_end(AFTER(p, end, "\",\"operation\":\""), end);
    *collection = AFTER(p, end, "\",\"collection\":\"");
    return *collection != NULL;
}

/* ---- v2 frames ---- */

#define V2_MESSAGE "{\"$type\":\"message\",\"payload\":{\"$type\":\"" JETSTREAM_V2_TYPE

/* The seq a v1 "cursor" carries: the server's seq namespace ends below 1e15 (above it a cursor
 * is a time_us), so a larger value is not a seq. */
static uint64_t as_seq(uint64_t v)
{
    return v < JETSTREAM_SEQ_LIMIT ? v : 0;
}

/* A v2 "time" (RFC 3339) to Unix microseconds; 0 when it does not parse. */
static uint64_t wire_time_us(const char *s, size_t n)
{
    char text[64];
    if (!s || n == 0 || n >= sizeof text) return 0;
    memcpy(text, s, n);
    text[n] = '\0';
    int64_t ms = event_datetime_ms(text);
    if (ms < 0) return 0;
    uint64_t us = (uint64_t)ms * 1000;
    const char *frac = text[19] == '.' ? text + 20 : NULL;
    for (int i = 0; frac && i < 6 && frac[i] >= '0' && frac[i] <= '9'; i++)
        if (i >= 3) us += (uint64_t)(frac[i] - '0') * (i == 3 ? 100 : i == 4 ? 10 : 1);
    return us;
}

/* The end every v2 event payload of the server's layout has (members sorted, seq and time
 * last): ,"seq":N,"time":"T"}} closing the payload and the frame. A "seq" key found there is
 * the payload's own: a nested object before it would have to close after it. Sets seq and
 * time_us; 0 for any other ending, which the full parse reads. */
static int v2_ending(const char *data, size_t len, uint64_t *seq, uint64_t *time_us)
{
    if (len < 24 || memcmp(data + len - 3, "\"}}", 3)) return 0;
    const char *open = memrchr(data, '"', len - 3);
    if (!open || open - data < 16 || memcmp(open - 8, ",\"time\":", 8)) return 0;
    const char *d = open - 8;
    const char *digits = d;
    while (digits > data && digits[-1] >= '0' && digits[-1] <= '9')
        digits--;
    if (digits == d || digits - data < 7 || memcmp(digits - 7, ",\"seq\":", 7)) return 0;
    *seq = uint_at(digits, d, NULL);
    *time_us = wire_time_us(open + 1, (size_t)(data + len - 3 - open - 1));
    return *seq != 0;
}

/* A v2 #commit of the server's layout: its collection, right after "$type" and "cid" (absent
 * on deletes). NULL for any other layout. */
static const char *v2_commit_collection(const char *data, size_t len)
{
    const char *end = data + len;
    const char *p = AFTER(data, end, V2_MESSAGE "commit\",");
    const char *cid = AFTER(p, end, "\"cid\":\"");
    if (cid) p = AFTER(string_end(cid, end), end, "\",");
    return AFTER(p, end, "\"collection\":\"");
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

static const char *const v1_record_path[] = {"commit", "record", NULL};
static const char *const v2_record_path[] = {"payload", "record", NULL};

static void record_span(event *ev, const json_span *span)
{
    if (!span->start || span->depth > SPAN_MAX_DEPTH || span->raw_whitespace) return;
    ev->record_json = span->start;
    ev->record_json_len = span->len;
}

/* ---- helpers for the full parse ---- */

static const char *get_string(const json_doc *d, json_ref obj, const char *key)
{
    return json_doc_string(d, json_doc_get(d, obj, key), NULL);
}

/* The record's string member name, from whichever form the event holds it in: the message's
 * doc (event_parse) or the caller's jansson value (event_from_record). */
static const char *record_string(const event *ev, const char *name)
{
    if (ev->doc) return get_string(ev->doc, ev->value, name);
    return json_string_value(json_object_get(ev->record, name));
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
    const char *d = record_string(ev, "manifestDigest");
    if (d && !oci_is_digest(d, strlen(d))) return "bad_digest";
    if (d) snprintf(ev->target_digest, sizeof ev->target_digest, "%s", d);
    const char *uri = record_string(ev, "manifest");
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
    ev->repository = record_string(ev, "repository");
    if (!valid(oci_is_repository, ev->repository)) return invalid(ev, "bad_repository");
    const char *at_field = "createdAt";
    if (!strcmp(ev->collection, ATCR_PREFIX "manifest")) {
        ev->record_kind = RECORD_MANIFEST;
        ev->key = record_string(ev, "digest");
        if (!valid(oci_is_digest, ev->key)) return invalid(ev, "bad_digest");
    } else if (!strcmp(ev->collection, ATCR_PREFIX "tag")) {
        ev->record_kind = RECORD_TAG;
        ev->key = record_string(ev, "tag");
        if (!valid(oci_is_tag, ev->key)) return invalid(ev, "bad_tag");
        const char *why = tag_target(ev);
        if (why) return invalid(ev, why);
    } else {
        ev->record_kind = RECORD_HOLD_STATS;
        ev->key = record_string(ev, "did");
        at_field = "updatedAt";
    }
    ev->at = record_string(ev, at_field);
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
    char why[160];
    /* either refuses what is not an object, a missing record too */
    int rc =
        ev->doc
            ? lexicon_validate_value(lexicons, ev->collection, ev->doc, ev->value, why, sizeof why)
            : lexicon_validate_record(lexicons, ev->collection, ev->record, why, sizeof why);
    if (rc < 0) return invalid(ev, "invalid_record");
    return record_fields(ev);
}

event_kind event_from_record(event *ev, const char *did, const char *collection, const char *rkey,
                             const char *rev, const char *cid, json_t *record,
                             const lexicon_set *lexicons)
{
    memset(ev, 0, sizeof *ev);
    ev->value = JSON_DOC_NONE;
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

/* The commit's members sit in `commit` (v1 "commit", v2 the payload itself). */
static event_kind parse_commit(event *ev, json_ref commit, const lexicon_set *lexicons)
{
    const json_doc *d = ev->doc;
    const char *op = get_string(d, commit, "operation");
    ev->collection = get_string(d, commit, "collection");
    ev->rkey = get_string(d, commit, "rkey");
    ev->rev = get_string(d, commit, "rev");
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
    ev->cid = get_string(d, commit, "cid");
    ev->value = json_doc_get(d, commit, "record");
    return check_record(ev, lexicons);
}

/* The upstream #account event (v1 "account", v2 payload.account). */
static event_kind parse_account(event *ev, json_ref acct)
{
    const json_doc *d = ev->doc;
    json_ref active = json_doc_get(d, acct, "active");
    int inactive = json_doc_is(d, active, JSON_DOC_FALSE);
    if (!inactive && !json_doc_is(d, active, JSON_DOC_TRUE)) return invalid(ev, "bad_account");
    const char *status = get_string(d, acct, "status");
    ev->purge = inactive && status && (!strcmp(status, "deleted") || !strcmp(status, "takendown"));
    return ev->kind = EVENT_ACCOUNT;
}

/* The event in `body`, of kind `kind`, once its position is known; with its record's span. */
static event_kind parse_body(event *ev, json_ref body, const char *kind, json_ref commit,
                             const json_span *span, const lexicon_set *lexicons)
{
    ev->did = get_string(ev->doc, body, "did");
    if (!valid(atp_is_did, ev->did)) return invalid(ev, "bad_did");
    if (!strcmp(kind, "commit")) {
        if (parse_commit(ev, commit, lexicons) == EVENT_COMMIT && !ev->is_delete) {
            record_span(ev, span);
            /* The fold reads hold stats from a jansson value, and stores a record whose own
             * bytes cannot be kept as jansson prints it (event.h). */
            if (ev->record_kind == RECORD_HOLD_STATS || !ev->record_json) {
                ev->record = json_doc_to_jansson(ev->doc, ev->value);
                if (!ev->record) return invalid(ev, "out_of_memory");
                ev->owns_record = 1;
            }
        }
        return ev->kind;
    }
    if (!strcmp(kind, "identity")) return ev->kind = EVENT_IDENTITY;
    if (!strcmp(kind, "account")) return parse_account(ev, json_doc_get(ev->doc, body, "account"));
    if (!strcmp(kind, "sync")) return ev->kind = EVENT_SYNC;
    return invalid(ev, "bad_kind");
}

static event_kind parse_v1(event *ev, const char *data, size_t len, const lexicon_set *lexicons)
{
    const char *end = data + len, *collection;
    uint64_t time_us, cursor;
    int is_commit = commit_layout(data, len, &time_us, &cursor, &collection);
    if (is_commit) {
        ev->time_us = time_us;
        ev->seq = as_seq(cursor);
    } else {
        ev->time_us = scan_uint(data, len, "\"time_us\":");
        /* A "cursor" inside a record must not pass for the event's: the top-level one comes
         * before the commit in any layout a server writes. */
        const char *c = value_of(data, len, "\"cursor\":");
        const char *commit = find(data, len, "\"commit\":");
        ev->seq = c && (!commit || c < commit) ? as_seq(uint_at(c, end, NULL)) : 0;
        is_commit = find(data, len, "\"kind\":\"commit\"") != NULL;
        /* In Jetstream frames "collection" comes before "record", so the first occurrence is
         * the commit's own; if a record ever came first, the full parse below still checks
         * the real field. */
        collection = is_commit ? value_of(data, len, "\"collection\":\"") : NULL;
    }
    if (!ev->time_us) return invalid(ev, "no_cursor");
    if (is_commit && !AFTER(collection, end, ATCR_PREFIX)) return ev->kind = EVENT_SKIP;

    json_span span;
    /* json_loadb's rules, at several times its speed, and where the record sits */
    json_doc *d = ev->doc;
    if (json_doc_read(d, data, len, v1_record_path, &span) < 0 ||
        !json_doc_is(d, 0, JSON_DOC_OBJECT))
        return invalid(ev, "bad_json");
    json_ref c = json_doc_get(d, 0, "cursor");
    ev->seq = json_doc_integer(d, c) > 0 ? as_seq((uint64_t)json_doc_integer(d, c)) : 0;
    const char *kind = get_string(d, 0, "kind");
    if (!kind) return invalid(ev, "bad_kind");
    if (!strcmp(kind, "sync")) return invalid(ev, "bad_kind"); /* v1 has no #sync */
    return parse_body(ev, 0, kind, json_doc_get(d, 0, "commit"), &span, lexicons);
}

static event_kind parse_v2(event *ev, const char *data, size_t len, const lexicon_set *lexicons)
{
    const char *collection = v2_commit_collection(data, len);
    if (collection && !AFTER(collection, data + len, ATCR_PREFIX) &&
        v2_ending(data, len, &ev->seq, &ev->time_us))
        return ev->kind = EVENT_SKIP;

    json_span span;
    json_doc *d = ev->doc;
    if (json_doc_read(d, data, len, v2_record_path, &span) < 0 ||
        !json_doc_is(d, 0, JSON_DOC_OBJECT))
        return invalid(ev, "bad_json");
    const char *type = get_string(d, 0, "$type");
    if (type && !strcmp(type, "error")) {
        ev->name = get_string(d, 0, "error");
        ev->message = get_string(d, 0, "message");
        return ev->kind = ev->name ? EVENT_ERROR : invalid(ev, "bad_error");
    }
    json_ref payload = json_doc_get(d, 0, "payload");
    const char *ptype = get_string(d, payload, "$type");
    if (!type || strcmp(type, "message") || !ptype) {
        ev->unknown = 1;
        return ev->kind = EVENT_SKIP;
    }
    json_ref seq = json_doc_get(d, payload, "seq");
    if (json_doc_integer(d, seq) > 0) ev->seq = (uint64_t)json_doc_integer(d, seq);
    const char *t = get_string(d, payload, "time");
    ev->time_us = t ? wire_time_us(t, strlen(t)) : 0;
    size_t plen = strlen(JETSTREAM_V2_TYPE);
    const char *kind = strncmp(ptype, JETSTREAM_V2_TYPE, plen) ? "" : ptype + plen;
    if (!strcmp(kind, "info")) {
        ev->name = get_string(d, payload, "name");
        ev->message = get_string(d, payload, "message");
        ev->seq = ev->time_us = 0; /* an advisory never moves the cursor */
        return ev->kind = ev->name ? EVENT_INFO : invalid(ev, "bad_info");
    }
    if (strcmp(kind, "commit") && strcmp(kind, "identity") && strcmp(kind, "account") &&
        strcmp(kind, "sync")) {
        ev->unknown = 1; /* a kind added after this appview: its seq still counts */
        return ev->kind = EVENT_SKIP;
    }
    if (!ev->seq) return invalid(ev, "no_cursor");
    if (!ev->time_us) return invalid(ev, "bad_time");
    return parse_body(ev, payload, kind, payload, &span, lexicons);
}

event_kind event_parse(event *ev, json_doc *doc, jetstream_flavor flavor, const char *data,
                       size_t len, const lexicon_set *lexicons)
{
    memset(ev, 0, sizeof *ev);
    ev->doc = doc;
    ev->value = JSON_DOC_NONE;
    return flavor == JETSTREAM_V2 ? parse_v2(ev, data, len, lexicons)
                                  : parse_v1(ev, data, len, lexicons);
}

void event_clear(event *ev)
{
    if (ev->owns_record) json_decref(ev->record);
    ev->record = NULL;
    ev->owns_record = 0;
}
