/* event_parse against the project's own lexicons/ (tests run from the repo root), here for the
 * record's own bytes (record_json): the exact span of commit.record in v1 and v2 frames, with
 * look-alike text inside strings, any spacing, and the cases that must leave it unset; v1
 * frames in Jetstream's own layout (read at their places) against the same frames laid out
 * otherwise (read by search); and event_datetime_ms against glibc's timegm over four
 * centuries of days. */
#include "appview/event.h"
#include "tests/unit/check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static lexicon_set *lex;

#define HEX "6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"
#define DIGEST "sha256:" HEX
#define DID "did:plc:7iza6de2dwap2sbkpav7c6c6"
#define CID "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
#define REV "3lbbuqg2k36wa"

#define V1_HEAD "{\"did\":\"" DID "\",\"time_us\":1732000000000036,\"kind\":\"commit\","
/* A v2 #commit as the server lays it out: members sorted, seq and time last. */
#define V2_HEAD(op, coll)                                                                          \
    "{\"$type\":\"message\",\"payload\":{\"$type\":\"network.bsky.jetstream.subscribeEvents#"      \
    "commit\",\"cid\":\"" CID "\",\"collection\":\"" coll "\",\"did\":\"" DID                      \
    "\",\"operation\":\"" op "\","
#define V2_TAIL(rkey)                                                                              \
    ",\"rev\":\"" REV "\",\"rkey\":\"" rkey "\",\"seq\":4000000001,\"time\":"                      \
    "\"2024-11-19T07:06:40.000036Z\"}}"
#define COMMIT(op, coll, rkey)                                                                     \
    "\"commit\":{\"rev\":\"" REV "\",\"operation\":\"" op "\",\"collection\":\"" coll "\","        \
    "\"rkey\":\"" rkey "\","
#define TAIL ",\"cid\":\"" CID "\"}}"

#define MANIFEST                                                                                   \
    "{\"$type\":\"io.atcr.manifest\",\"repository\":\"tools/cli\",\"digest\":\"" DIGEST "\","      \
    "\"holdDid\":\"did:web:hold.example.com\",\"mediaType\":"                                      \
    "\"application/vnd.oci.image.manifest.v1+json\",\"schemaVersion\":2,\"config\":{"              \
    "\"mediaType\":\"application/"                                                                 \
    "vnd.oci.image.config.v1+json\",\"size\":1470,\"digest\":\"" DIGEST                            \
    "\"},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","              \
    "\"size\":3208,\"digest\":\"" DIGEST "\"}],\"createdAt\":\"2025-01-12T23:20:50.123Z\"}"
#define TAG                                                                                        \
    "{\"$type\":\"io.atcr.tag\",\"repository\":\"myapp\",\"tag\":\"latest\",\"manifest\":"         \
    "\"at://" DID "/io.atcr.manifest/" HEX "\",\"createdAt\":\"2025-01-12T23:20:50Z\"}"

static event ev;
static json_doc doc;
static char *copy; /* the message being parsed, in a buffer of its exact size (no NUL) */

static event_kind parse(jetstream_flavor flavor, const char *msg)
{
    event_clear(&ev);
    free(copy);
    size_t len = strlen(msg);
    copy = malloc(len);
    if (!copy) abort();
    memcpy(copy, msg, len);
    return event_parse(&ev, &doc, flavor, copy, len, lex);
}

/* The event's span is exactly the one occurrence of record in msg, and parses to the record the
 * event read. */
static int span_is(const char *msg, const char *record)
{
    const char *at = strstr(msg, record);
    if (!at || strstr(at + 1, record)) {
        fprintf(stderr, "    the record text must occur once in the message\n");
        return 0;
    }
    if (ev.record_json != copy + (at - msg) || ev.record_json_len != strlen(record)) {
        fprintf(stderr, "    span at %td+%zu, want %td+%zu\n",
                ev.record_json ? ev.record_json - copy : -1, ev.record_json_len, at - msg,
                strlen(record));
        return 0;
    }
    json_error_t err;
    json_t *again = json_loadb(ev.record_json, ev.record_json_len, 0, &err);
    json_t *read = json_doc_to_jansson(&doc, ev.value);
    int same = json_equal(again, read);
    json_decref(again);
    json_decref(read);
    return same;
}

static void v1_manifest_and_tag(void)
{
    const char *m = V1_HEAD COMMIT("create", "io.atcr.manifest", HEX) "\"record\":" MANIFEST TAIL;
    CHECK(parse(JETSTREAM_V1, m) == EVENT_COMMIT);
    CHECK(ev.record_kind == RECORD_MANIFEST);
    CHECK(span_is(m, MANIFEST));
    CHECK(ev.record == NULL); /* its bytes are stored as they are: no jansson value is made */

    const char *t = V1_HEAD COMMIT("update", "io.atcr.tag", "myapp_latest") "\"record\":" TAG TAIL;
    CHECK(parse(JETSTREAM_V1, t) == EVENT_COMMIT);
    CHECK(ev.record_kind == RECORD_TAG);
    CHECK(span_is(t, TAG));
}

static void v2_manifest_and_tag(void)
{
    const char *m = V2_HEAD("create", "io.atcr.manifest") "\"record\":" MANIFEST V2_TAIL(HEX);
    CHECK(parse(JETSTREAM_V2, m) == EVENT_COMMIT);
    CHECK(ev.seq == 4000000001u && ev.time_us == 1732000000000036);
    CHECK(span_is(m, MANIFEST));

    const char *t = V2_HEAD("create", "io.atcr.tag") "\"record\":" TAG V2_TAIL("myapp_latest");
    CHECK(parse(JETSTREAM_V2, t) == EVENT_COMMIT);
    CHECK(span_is(t, TAG));
}

/* Text that looks like structure inside strings, every kind of value, members named like
 * "record" and "commit" elsewhere, and the record last in its commit. */
static void lookalikes_inside_strings(void)
{
#define TRICKY                                                                                     \
    "{\"$type\":\"io.atcr.manifest\",\"repository\":\"tools/cli\",\"digest\":\"" DIGEST "\","      \
    "\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"schemaVersion\":2,"            \
    "\"annotations\":{\"a\":\"\\\"record\\\":{\\\"x\\\":1}}\",\"b\":\"}]},\\\\\",\"c\":"           \
    "\"\\u00e9\\/\\b\\f\\n\\r\\t\\uD83D\\uDE00\",\"record\":{\"commit\":[]},\"\\\"\":\"\\\\\"},"   \
    "\"extra\":{\"n\":[-0,0,-1.5e+3,0.25E-2,12,1e9,true,false,null,[],{},[[{}]]],\"s\":\"{\"},"    \
    "\"createdAt\":\"2025-01-12T23:20:50Z\"}"
    const char *m = V1_HEAD "\"record\":{\"not\":\"this one\"},\"commitment\":{\"record\":1},"
                            "\"commit\":{\"cid\":\"" CID "\",\"records\":[{}],\"recor\":2,"
                            "\"rev\":\"" REV "\",\"operation\":\"create\",\"collection\":"
                            "\"io.atcr.manifest\",\"rkey\":\"" HEX "\",\"record\":" TRICKY "}}";
    CHECK(parse(JETSTREAM_V1, m) == EVENT_COMMIT);
    CHECK(span_is(m, TRICKY));
    const char *a = json_doc_string(
        &doc, json_doc_get(&doc, json_doc_get(&doc, ev.value, "annotations"), "a"), NULL);
    CHECK(a && !strcmp(a, "\"record\":{\"x\":1}}"));
#undef TRICKY
}

static void spaces_between_tokens(void)
{
#define SPACED                                                                                     \
    "{ \"$type\" : \"io.atcr.tag\" , \"repository\":\"myapp\",\"tag\" :\"v1\",  \"manifest\":"     \
    "\"at://" DID "/io.atcr.manifest/" HEX "\" , \"createdAt\": \"2025-01-12T23:20:50Z\" , "       \
    "\"x\" : [ 1 , { } , [ ] ] }"
    /* Tabs and newlines outside the record do not matter. */
    const char *t = " \t{ \"did\" : \"" DID "\" ,\n\"time_us\": 1732000000000036 , \"kind\" : "
                    "\"commit\" ,\r\n \"commit\" : { \"rev\" : \"" REV "\" , \"operation\" : "
                    "\"create\" , \"collection\" : \"io.atcr.tag\" , \"rkey\" : \"myapp_v1\" , "
                    "\"record\" :\t " SPACED " \n, \"cid\" : \"" CID "\" } }\n";
    CHECK(parse(JETSTREAM_V1, t) == EVENT_COMMIT);
    CHECK(span_is(t, SPACED));
#undef SPACED
}

/* A tag create whose record has %s where members may be added. */
#define TAG_EVENT_WITH                                                                             \
    V1_HEAD COMMIT("create", "io.atcr.tag",                                                        \
                   "myapp_latest") "\"record\":{\"$type\":\"io.atcr.tag\","                        \
                                   "%s\"repository\":\"myapp\",\"tag\":"                           \
                                   "\"latest\",\"manifestDigest\":\"" DIGEST "\",\"createdAt\":"   \
                                   "\"2025-01-12T23:20:50Z\"}" TAIL

/* Whitespace other than spaces inside the record: parsed and indexed, but without the span. */
static void control_whitespace_in_record(void)
{
    static const char *const ws[] = {"\n", "\t", "\r", "\"x\":[1,\n2],"};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
        char m[2048];
        snprintf(m, sizeof m, TAG_EVENT_WITH, ws[i]);
        CHECK(parse(JETSTREAM_V1, m) == EVENT_COMMIT);
        CHECK(ev.record != NULL);
        CHECK(ev.record_json == NULL && ev.record_json_len == 0);
    }
}

/* jansson accepts a member name spelled with escapes; the span is then given up, not guessed. */
static void escaped_member_name(void)
{
    const char *m =
        V1_HEAD COMMIT("create", "io.atcr.tag", "myapp_latest") "\"rec\\u006frd\":" TAG TAIL;
    CHECK(parse(JETSTREAM_V1, m) == EVENT_COMMIT);
    CHECK(ev.record != NULL);
    CHECK(ev.record_json == NULL);
}

/* The record with n arrays nested in it. */
static event_kind parse_nested(int n, char *m, size_t size)
{
    char member[256] = "\"x\":";
    size_t len = strlen(member);
    for (int i = 0; i < n; i++)
        member[len++] = '[';
    for (int i = 0; i < n; i++)
        member[len++] = ']';
    member[len++] = ',';
    member[len] = 0;
    snprintf(m, size, TAG_EVENT_WITH, member);
    return parse(JETSTREAM_V1, m);
}

/* Up to 64 levels counting the record itself; deeper, the span is given up. */
static void deep_record(void)
{
    char m[2048];
    CHECK(parse_nested(63, m, sizeof m) == EVENT_COMMIT);
    CHECK(ev.record_json != NULL && ev.record_json[ev.record_json_len - 1] == '}');
    CHECK(parse_nested(64, m, sizeof m) == EVENT_COMMIT);
    CHECK(ev.record != NULL && ev.record_json == NULL);
    CHECK(parse_nested(100, m, sizeof m) == EVENT_COMMIT);
    CHECK(ev.record_json == NULL);
}

/* What the scan and the parse made of a frame, as a user of event_parse sees it. */
typedef struct {
    event_kind kind;
    uint64_t time_us, seq;
    char summary[512];
} outcome;

static outcome outcome_of(const char *msg)
{
    outcome o = {.kind = parse(JETSTREAM_V1, msg), .time_us = ev.time_us, .seq = ev.seq};
    snprintf(o.summary, sizeof o.summary, "%s|%s|%s|%s|%s|%d|%.*s", ev.reason ? ev.reason : "",
             ev.did ? ev.did : "", ev.collection ? ev.collection : "", ev.rkey ? ev.rkey : "",
             ev.key ? ev.key : "", ev.is_delete, (int)ev.record_json_len,
             ev.record_json ? ev.record_json : "");
    return o;
}

/* Jetstream's layout is read where its keys are; a frame laid out any other way is searched.
 * Each frame below in that layout must come out exactly as with one space added at a place the
 * layout pins (after the opening brace, the kind, the rev or the operation), for records of
 * ours and others, deletes, other kinds, and a DID whose escaped quote is followed by text
 * that looks like the next keys. */
static void own_layout_matches_search(void)
{
    static const char *const frames[] = {
        V1_HEAD COMMIT("create", "io.atcr.manifest", HEX) "\"record\":" MANIFEST TAIL,
        V1_HEAD COMMIT("update", "io.atcr.tag", "myapp_latest") "\"record\":" TAG TAIL,
        V1_HEAD COMMIT("delete", "io.atcr.tag", "myapp_latest") "\"x\":1}}",
        V1_HEAD COMMIT("create", "app.bsky.feed.like", REV) "\"record\":{\"$type\":"
                                                            "\"app.bsky.feed.like\"}" TAIL,
        V1_HEAD COMMIT("create", "io.atcr.tag", "bad rkey") "\"record\":" TAG TAIL,
        "{\"did\":\"" DID "\",\"time_us\":1732000000000037,\"kind\":\"identity\",\"identity\":{"
        "\"did\":\"" DID "\",\"handle\":\"a.example.com\",\"seq\":1}}",
        "{\"did\":\"did:plc:x\\\",\"time_us\":5,\"kind\":\"commit\",\"commit\":{\"rev\":\"r\","
        "\"oper"
        "ation\":\"o\",\"collection\":\"app.x\"}\",\"time_us\":1732000000000038,\"kind\":"
        "\"commit\"," COMMIT("create", "io.atcr.manifest", HEX) "\"record\":" MANIFEST TAIL,
    };
    static const char *const places[] = {"{", "\"commit\",", "\"rev\":\"" REV "\",",
                                         "\"operation\":\"create\","};
    int differ = 0, compared = 0;
    char moved[4096];
    for (size_t f = 0; f < sizeof frames / sizeof *frames; f++) {
        outcome own = outcome_of(frames[f]);
        for (size_t p = 0; p < sizeof places / sizeof *places; p++) {
            const char *at = strstr(frames[f], places[p]);
            if (!at) continue;
            size_t head = (size_t)(at - frames[f]) + strlen(places[p]);
            snprintf(moved, sizeof moved, "%.*s %s", (int)head, frames[f], frames[f] + head);
            outcome searched = outcome_of(moved);
            compared++;
            if (own.kind != searched.kind || own.time_us != searched.time_us ||
                own.seq != searched.seq || strcmp(own.summary, searched.summary) != 0) {
                fprintf(stderr,
                        "frame %zu, space after %s: kind %d/%d time_us %llu/%llu\n  %s\n  %s\n", f,
                        places[p], own.kind, searched.kind, (unsigned long long)own.time_us,
                        (unsigned long long)searched.time_us, own.summary, searched.summary);
                differ++;
            }
        }
    }
    CHECK(differ == 0);
    CHECK(compared >= 20);
    /* and they are what they should be */
    CHECK(outcome_of(frames[0]).kind == EVENT_COMMIT && ev.time_us == 1732000000000036);
    CHECK(outcome_of(frames[3]).kind == EVENT_SKIP && ev.time_us == 1732000000000036);
    CHECK(outcome_of(frames[4]).kind == EVENT_INVALID && !strcmp(ev.reason, "bad_rkey"));
    CHECK(outcome_of(frames[5]).kind == EVENT_IDENTITY && ev.time_us == 1732000000000037);
    CHECK(outcome_of(frames[6]).kind == EVENT_SKIP && ev.time_us == 5);
}

static void unset_without_a_record(void)
{
    const char *del = V1_HEAD COMMIT("delete", "io.atcr.manifest", HEX) "\"x\":1}}";
    CHECK(parse(JETSTREAM_V1, del) == EVENT_COMMIT);
    CHECK(ev.is_delete && ev.record == NULL && ev.record_json == NULL);

    const char *other =
        V1_HEAD COMMIT("create", "app.bsky.feed.like", REV) "\"record\":{\"$type\":"
                                                            "\"app.bsky.feed.like\"}" TAIL;
    CHECK(parse(JETSTREAM_V1, other) == EVENT_SKIP);
    CHECK(ev.record_json == NULL);

    const char *bad = V1_HEAD COMMIT("create", "io.atcr.tag", "myapp_latest") "\"record\":{\"$ty";
    CHECK(parse(JETSTREAM_V1, bad) == EVENT_INVALID);
    CHECK(!strcmp(ev.reason, "bad_json"));
    CHECK(ev.record_json == NULL);

    const char *dup = V1_HEAD COMMIT("create", "io.atcr.tag",
                                     "myapp_latest") "\"record\":" TAG ",\"record\":" TAG TAIL;
    CHECK(parse(JETSTREAM_V1, dup) == EVENT_INVALID);
    CHECK(ev.record_json == NULL);

    const char *invalid = V1_HEAD COMMIT("create", "io.atcr.tag",
                                         "myapp_latest") "\"record\":{\"$type\":\"io.atcr.tag\","
                                                         "\"repository\":7}" TAIL;
    CHECK(parse(JETSTREAM_V1, invalid) == EVENT_INVALID);
    CHECK(!strcmp(ev.reason, "invalid_record"));
    CHECK(ev.record_json == NULL);

    json_error_t err;
    json_t *rec = json_loads(TAG, 0, &err);
    CHECK(rec != NULL);
    event from;
    CHECK(event_from_record(&from, DID, "io.atcr.tag", "myapp_latest", REV, CID, rec, lex) ==
          EVENT_COMMIT);
    CHECK(from.record_json == NULL && from.record_json_len == 0);
    event_clear(&from);
    json_decref(rec);
}

/* time_us of every length from 1 to 20 digits, read as strtoull reads its first 19 digits,
 * whatever ends it: what JSON puts after a number, and '/' and ':', the bytes just below '0'
 * and just above '9' (where a test of eight bytes at once would go wrong first). */
static void time_us_of_every_length(void)
{
    static const char digits[] = "98765432109876543210";
    static const char *const after[] = {",", " ,", "}", "/", ":"};
    for (size_t n = 1; n <= 20; n++) {
        for (size_t a = 0; a < sizeof after / sizeof *after; a++) {
            char number[24], msg[512];
            snprintf(number, sizeof number, "%.*s", (int)n, digits);
            snprintf(msg, sizeof msg,
                     "{\"did\":\"" DID "\",\"time_us\":%s%s\"kind\":\"identity\","
                     "\"identity\":{\"did\":\"" DID "\",\"seq\":1,\"time\":"
                     "\"2024-11-19T07:06:40.000Z\"}}",
                     number, after[a]);
            number[n < 19 ? n : 19] = 0;
            parse(JETSTREAM_V1, msg);
            CHECK(ev.time_us == strtoull(number, NULL, 10));
        }
    }
}

/* Every 13th day from 1600 to 2400 (all leap-year rules, both sides of 1970), at a time with
 * a fraction and an offset, and the cases with neither. */
static void datetime_ms_as_timegm(void)
{
    for (int64_t day = -135000; day < 157000; day += 13) {
        time_t t = (time_t)(day * 86400 + 45296); /* 12:34:56 */
        struct tm tm;
        gmtime_r(&t, &tm);
        char text[64];
        strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
        size_t n = strlen(text);
        snprintf(text + n, sizeof text - n, ".789Z");
        CHECK(event_datetime_ms(text) == (int64_t)t * 1000 + 789);
        snprintf(text + n, sizeof text - n, "+05:30");
        CHECK(event_datetime_ms(text) == ((int64_t)t - 19800) * 1000);
        snprintf(text + n, sizeof text - n, ".5-01:15");
        CHECK(event_datetime_ms(text) == ((int64_t)t + 4500) * 1000 + 500);
    }
    CHECK(event_datetime_ms("1970-01-01T00:00:00Z") == 0);
    CHECK(event_datetime_ms("2024-02-29T23:59:59.999Z") == 1709251199999);
    CHECK(event_datetime_ms("2023-02-29T00:00:00Z") == -1);
    CHECK(event_datetime_ms("2024-11-19 07:06:40Z") == -1);
    CHECK(event_datetime_ms(NULL) == -1);
}

int main(void)
{
    char err[256];
    lex = lexicon_load_dir("lexicons", err, sizeof err);
    if (!lex) {
        fprintf(stderr, "lexicons: %s\n", err);
        return 1;
    }
    RUN(v1_manifest_and_tag);
    RUN(v2_manifest_and_tag);
    RUN(lookalikes_inside_strings);
    RUN(spaces_between_tokens);
    RUN(control_whitespace_in_record);
    RUN(escaped_member_name);
    RUN(deep_record);
    RUN(unset_without_a_record);
    RUN(own_layout_matches_search);
    RUN(datetime_ms_as_timegm);
    RUN(time_us_of_every_length);
    event_clear(&ev);
    free(copy);
    lexicon_free(lex);
    CHECK_EXIT();
}
