/* event_parse's framing (appview/event.c) on Jetstream as it runs today: v2 message frames in
 * the server's own layout and any other, the position taken from the payload's seq and time
 * and never from the upstream event an #identity, #account or #sync wraps, #info and error
 * frames, kinds and types this appview does not know; v1 events with and without "cursor".
 * Frames are built as bluesky-social/jetstream's encoder writes them (members sorted). */
#include "appview/event.h"
#include "tests/unit/check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lexicon_set *lex;
static event ev;
static char *copy;

#define DID "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
#define CID "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
#define REV "3lbbuqg2k36wa"
#define HEX "6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"
#define MSG                                                                                        \
    "{\"$type\":\"message\",\"payload\":{\"$type\":\"network.bsky.jetstream.subscribeEvents#"
#define TIME "\"time\":\"2024-11-19T07:06:40.000036Z\"}}"
#define T_US 1732000000000036ull

static json_doc doc;

static event_kind parse(jetstream_flavor flavor, const char *msg)
{
    event_clear(&ev);
    free(copy);
    size_t len = strlen(msg);
    copy = malloc(len);
    if (!copy) abort();
    memcpy(copy, msg, len);
    doc.nvalues = 0; /* so that a test sees whether the message was read into it */
    return event_parse(&ev, &doc, flavor, copy, len, lex);
}

/* A like whose record carries keys named like the payload's: the position is still the
 * payload's, by the byte scan (own layout) as by the parse (one space more). */
static void other_collections_skip_with_their_position(void)
{
    const char *like = MSG "commit\",\"cid\":\"" CID "\",\"collection\":\"app.bsky.feed.like\","
                           "\"did\":\"" DID "\",\"operation\":\"create\",\"record\":{\"seq\":99,"
                           "\"time\":\"2030-01-01T00:00:00Z\",\"x\":{\"seq\":98}},\"rev\":\"" REV
                           "\",\"rkey\":\"" REV "\",\"seq\":4711," TIME;
    CHECK(parse(JETSTREAM_V2, like) == EVENT_SKIP);
    CHECK(ev.seq == 4711 && ev.time_us == T_US && !ev.unknown && doc.nvalues == 0);
    const char *spaced = MSG "commit\", \"cid\":\"" CID "\",\"collection\":\"app.bsky.feed.like\","
                             "\"did\":\"" DID "\",\"operation\":\"create\",\"record\":{\"seq\":99},"
                             "\"rev\":\"" REV "\",\"rkey\":\"" REV "\",\"seq\":4711," TIME;
    CHECK(parse(JETSTREAM_V2, spaced) == EVENT_SKIP);
    CHECK(ev.seq == 4711 && ev.time_us == T_US && doc.nvalues > 0);
    const char *del = MSG "commit\",\"collection\":\"app.bsky.graph.follow\",\"did\":\"" DID
                          "\",\"operation\":\"delete\",\"rev\":\"" REV "\",\"rkey\":\"" REV
                          "\",\"seq\":4712," TIME;
    CHECK(parse(JETSTREAM_V2, del) == EVENT_SKIP && ev.seq == 4712 && doc.nvalues == 0);
    const char *ours = MSG "commit\",\"collection\":\"io.atcr.tag\",\"did\":\"" DID
                           "\",\"operation\":\"delete\",\"rev\":\"" REV "\",\"rkey\":\"x_latest\","
                           "\"seq\":4713," TIME;
    CHECK(parse(JETSTREAM_V2, ours) == EVENT_COMMIT && ev.is_delete && ev.seq == 4713);
    CHECK(!strcmp(ev.did, DID) && !strcmp(ev.rkey, "x_latest") && ev.time_us == T_US);
}

/* #identity, #account and #sync wrap the relay's event, with the relay's own seq and time. */
static void wrapped_upstream_events_keep_jetstream_s_position(void)
{
    const char *id = MSG "identity\",\"did\":\"" DID "\",\"identity\":{\"did\":\"" DID "\","
                         "\"handle\":\"alice.test\",\"seq\":88000001,\"time\":"
                         "\"2024-11-19T07:06:41.000Z\"},\"seq\":52," TIME;
    CHECK(parse(JETSTREAM_V2, id) == EVENT_IDENTITY && ev.seq == 52 && ev.time_us == T_US);
    CHECK(!strcmp(ev.did, DID));
    const char *acct = MSG "account\",\"account\":{\"active\":false,\"did\":\"" DID "\","
                           "\"seq\":88000002,\"status\":\"takendown\",\"time\":"
                           "\"2024-11-19T07:06:41.000Z\"},\"did\":\"" DID "\",\"seq\":53," TIME;
    CHECK(parse(JETSTREAM_V2, acct) == EVENT_ACCOUNT && ev.purge && ev.seq == 53);
    const char *sync = MSG "sync\",\"did\":\"" DID "\",\"seq\":54,\"sync\":{\"blocks\":{\"$bytes\":"
                           "\"OqJlcm9vdHOB\"},\"did\":\"" DID "\",\"rev\":\"" REV "\",\"seq\":"
                           "88000003,\"time\":\"2024-11-19T07:06:41.000Z\"}," TIME;
    CHECK(parse(JETSTREAM_V2, sync) == EVENT_SYNC && ev.seq == 54 && ev.time_us == T_US);
    CHECK(!strcmp(ev.did, DID));
}

static void info_error_and_unknown_frames(void)
{
    const char *info = MSG "info\",\"message\":\"requested timestamp cursor below retention floor; "
                           "starting at seq 7\",\"name\":\"OutdatedCursor\"}}";
    CHECK(parse(JETSTREAM_V2, info) == EVENT_INFO);
    CHECK(!strcmp(ev.name, "OutdatedCursor") && strstr(ev.message, "seq 7"));
    CHECK(ev.seq == 0 && ev.time_us == 0);
    const char *err = "{\"$type\":\"error\",\"error\":\"ConsumerTooSlow\",\"message\":\"reading "
                      "below the floor rate\"}";
    CHECK(parse(JETSTREAM_V2, err) == EVENT_ERROR && !strcmp(ev.name, "ConsumerTooSlow"));
    CHECK(parse(JETSTREAM_V2, "{\"$type\":\"error\",\"error\":\"X\"}") == EVENT_ERROR &&
          ev.message == NULL);
    const char *future = MSG "label\",\"did\":\"" DID "\",\"seq\":60," TIME;
    CHECK(parse(JETSTREAM_V2, future) == EVENT_SKIP && ev.unknown && ev.seq == 60);
    CHECK(parse(JETSTREAM_V2, "{\"$type\":\"heartbeat\",\"t\":1}") == EVENT_SKIP && ev.unknown &&
          ev.seq == 0);
    CHECK(parse(JETSTREAM_V2, "{\"$type\":\"message\",\"payload\":{\"$type\":\"app.x#y\"}}") ==
              EVENT_SKIP &&
          ev.unknown);
}

static void malformed_frames_are_invalid(void)
{
    static const struct {
        const char *frame, *reason;
    } bad[] = {
        {MSG "commit\",\"cid\":\"bafyrei", "bad_json"},
        {MSG "identity\",\"did\":\"" DID "\",\"identity\":{}," TIME, "no_cursor"},
        {MSG "identity\",\"did\":\"" DID "\",\"identity\":{},\"seq\":\"5\"," TIME, "no_cursor"},
        {MSG "identity\",\"did\":\"" DID "\",\"identity\":{},\"seq\":5,\"time\":\"yesterday\"}}",
         "bad_time"},
        {MSG "identity\",\"did\":\"nope\",\"identity\":{},\"seq\":5," TIME, "bad_did"},
        {MSG "account\",\"account\":{\"active\":\"no\"},\"did\":\"" DID "\",\"seq\":5," TIME,
         "bad_account"},
        {MSG "info\",\"message\":\"no name\"}}", "bad_info"},
        {"{\"$type\":\"error\",\"message\":\"no name\"}", "bad_error"},
        {"[1,2]", "bad_json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        event_kind k = parse(JETSTREAM_V2, bad[i].frame);
        if (k != EVENT_INVALID || strcmp(ev.reason, bad[i].reason))
            fprintf(stderr, "    frame %zu: kind %d reason %s, want %s\n", i, k,
                    ev.reason ? ev.reason : "-", bad[i].reason);
        CHECK(k == EVENT_INVALID && !strcmp(ev.reason, bad[i].reason));
    }
}

/* Current v1 servers put their seq in "cursor", after time_us. */
static void v1_cursor_is_the_seq(void)
{
#define V1(cursor, coll)                                                                           \
    "{\"did\":\"" DID "\",\"time_us\":1732000000000036" cursor ",\"kind\":\"commit\",\"commit\":{" \
    "\"rev\":\"" REV "\",\"operation\":\"create\",\"collection\":\"" coll "\",\"rkey\":\"" REV     \
    "\",\"record\":{\"cursor\":7,\"$type\":\"" coll "\"},\"cid\":\"" CID "\"}}"
    CHECK(parse(JETSTREAM_V1, V1(",\"cursor\":4711", "app.bsky.feed.like")) == EVENT_SKIP);
    CHECK(ev.seq == 4711 && ev.time_us == T_US);
    CHECK(parse(JETSTREAM_V1, V1("", "app.bsky.feed.like")) == EVENT_SKIP);
    CHECK(ev.seq == 0 && ev.time_us == T_US);
    /* a value in the time_us namespace is no seq */
    CHECK(parse(JETSTREAM_V1, V1(",\"cursor\":1732000000000036", "app.bsky.feed.like")) ==
          EVENT_SKIP);
    CHECK(ev.seq == 0);
    CHECK(parse(JETSTREAM_V1, V1(",\"cursor\":4712", "io.atcr.hold.stats")) == EVENT_INVALID);
    CHECK(ev.seq == 4712 && !strcmp(ev.reason, "invalid_record"));
    /* laid out otherwise: a "cursor" inside the record is not the event's */
    const char *moved = "{\"kind\":\"commit\",\"did\":\"" DID "\",\"time_us\":1732000000000037,"
                        "\"commit\":{\"rev\":\"" REV "\",\"operation\":\"create\",\"collection\":"
                        "\"app.bsky.feed.post\",\"rkey\":\"" REV "\",\"record\":{\"cursor\":9}}}";
    CHECK(parse(JETSTREAM_V1, moved) == EVENT_SKIP && ev.seq == 0);
    const char *id = "{\"did\":\"" DID "\",\"time_us\":1732000000000038,\"cursor\":4713,\"kind\":"
                     "\"identity\",\"identity\":{\"did\":\"" DID "\",\"handle\":\"a.test\","
                     "\"seq\":88000001,\"time\":\"2024-11-19T07:06:41.000Z\"}}";
    CHECK(parse(JETSTREAM_V1, id) == EVENT_IDENTITY && ev.seq == 4713);
    const char *sync = "{\"did\":\"" DID "\",\"time_us\":1732000000000039,\"kind\":\"sync\","
                       "\"sync\":{}}";
    CHECK(parse(JETSTREAM_V1, sync) == EVENT_INVALID && !strcmp(ev.reason, "bad_kind"));
#undef V1
}

int main(void)
{
    char err[256];
    lex = lexicon_load_dir("lexicons", err, sizeof err);
    if (!lex) {
        fprintf(stderr, "lexicons: %s\n", err);
        return 1;
    }
    RUN(other_collections_skip_with_their_position);
    RUN(wrapped_upstream_events_keep_jetstream_s_position);
    RUN(info_error_and_unknown_frames);
    RUN(malformed_frames_are_invalid);
    RUN(v1_cursor_is_the_seq);
    event_clear(&ev);
    free(copy);
    lexicon_free(lex);
    CHECK_EXIT();
}
