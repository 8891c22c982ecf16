/* appview/jetstream_wire: which protocol a URL speaks and what it asks for, the check of the
 * server's upgrade answer (subprotocol, accept, extensions), what a refusal before the upgrade
 * asks for, a dictionary's id; and where a stream resumes (ingest_resume_cursor). */
#include <stdlib.h>
#include <string.h>

#include "appview/ingest.h"
#include "appview/jetstream_wire.h"
#include "check.h"

static const char *const colls[] = {"io.atcr.manifest", "io.atcr.*"};

static void test_endpoints(void)
{
    jetstream_endpoint e;
    char why[256];
    CHECK(jetstream_endpoint_parse(&e, "wss://jetstream1.us-east.bsky.network/subscribe", colls, 2,
                                   why, sizeof why) == 0);
    CHECK(e.flavor == JETSTREAM_V1 && e.tls && e.port == 443);
    CHECK(!strcmp(e.host, "jetstream1.us-east.bsky.network"));
    CHECK(!strcmp(e.target,
                  "/subscribe?wantedCollections=io.atcr.manifest&wantedCollections=io.atcr.*"));
    CHECK(e.dict_url == NULL);
    jetstream_endpoint_clear(&e);

    CHECK(jetstream_endpoint_parse(&e,
                                   "ws://[::1]:6008/xrpc/network.bsky.jetstream.subscribeEvents"
                                   "?maxMessageSizeBytes=2000000",
                                   colls, 1, why, sizeof why) == 0);
    CHECK(e.flavor == JETSTREAM_V2 && !e.tls && e.port == 6008 && !strcmp(e.host, "::1"));
    CHECK(!strcmp(e.authority, "[::1]:6008"));
    CHECK(!strcmp(e.target, "/xrpc/network.bsky.jetstream.subscribeEvents?maxMessageSizeBytes="
                            "2000000&collections=io.atcr.manifest&kinds=commit&kinds=identity"
                            "&kinds=account&kinds=sync"));
    CHECK(!strcmp(e.dict_url, "http://[::1]:6008/xrpc/network.bsky.jetstream.getZstdDictionary"));
    jetstream_endpoint_clear(&e);

    static const char *const bad[] = {"http://h/subscribe", "wss:///subscribe",
                                      "ws://u:p@h/subscribe", "ws://h/s#f", "ws://h:0/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why[0] = 0;
        CHECK(jetstream_endpoint_parse(&e, bad[i], colls, 2, why, sizeof why) < 0 && why[0]);
    }
}

static void test_request(void)
{
    jetstream_endpoint v1, v2;
    char why[256];
    CHECK(jetstream_endpoint_parse(&v1, "ws://h:1/subscribe", NULL, 0, why, sizeof why) == 0);
    CHECK(jetstream_endpoint_parse(&v2, "wss://h/xrpc/network.bsky.jetstream.subscribeEvents",
                                   colls, 1, why, sizeof why) == 0);
    buf b = {0};
    CHECK(jetstream_upgrade_request(&v1, 1755000000000000ull, 77, "a2V5", &b) == 0);
    const char *start = "GET /subscribe?cursor=1755000000000000 HTTP/1.1\r\nHost: h:1\r\n";
    CHECK(!strncmp(b.data, start, strlen(start)));
    CHECK(!strstr(b.data, "zstdDictionary") && !strstr(b.data, "Sec-WebSocket-Protocol"));
    CHECK(strstr(b.data, "Sec-WebSocket-Key: a2V5\r\n") != NULL);
    buf_reset(&b);
    CHECK(jetstream_upgrade_request(&v2, 42, 77, "a2V5", &b) == 0);
    CHECK(strstr(b.data, "&kinds=sync&cursor=42&zstdDictionary=77 HTTP/1.1\r\n") != NULL);
    CHECK(strstr(b.data, "\r\nSec-WebSocket-Protocol: xrpc.v1.json\r\n") != NULL);
    buf_reset(&b);
    CHECK(jetstream_upgrade_request(&v2, 0, 0, "a2V5", &b) == 0);
    CHECK(strstr(b.data, "&kinds=sync HTTP/1.1\r\n") != NULL);
    buf_free(&b);
    jetstream_endpoint_clear(&v1);
    jetstream_endpoint_clear(&v2);
}

static void test_upgrade_answer(void)
{
    char accept[32];
    /* RFC 6455's own example */
    CHECK(jetstream_accept_for("dGhlIHNhbXBsZSBub25jZQ==", accept) == 0);
    CHECK(!strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
#define HEAD(extra)                                                                                \
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"            \
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" extra "\r\n"
    CHECK(jetstream_check_upgrade(HEAD(""), accept, JETSTREAM_V2) == NULL);
    CHECK(jetstream_check_upgrade(HEAD("Sec-WebSocket-Protocol: xrpc.v1.json\r\n"), accept,
                                  JETSTREAM_V2) == NULL);
    CHECK(jetstream_check_upgrade(HEAD("sec-websocket-protocol:  xrpc.v1.json \r\n"), accept,
                                  JETSTREAM_V2) == NULL);
    CHECK(jetstream_check_upgrade(HEAD("Sec-WebSocket-Protocol: xrpc.v1.cbor\r\n"), accept,
                                  JETSTREAM_V2) != NULL);
    CHECK(jetstream_check_upgrade(HEAD("Sec-WebSocket-Protocol: xrpc.v1.json\r\n"), accept,
                                  JETSTREAM_V1) != NULL);
    CHECK(jetstream_check_upgrade(HEAD("Sec-WebSocket-Extensions: permessage-deflate\r\n"), accept,
                                  JETSTREAM_V1) != NULL);
    CHECK(jetstream_check_upgrade(HEAD(""), "other", JETSTREAM_V1) != NULL);
    CHECK(jetstream_response_status(HEAD("")) == 101);
    CHECK(jetstream_response_status("HTTP/1.1 400 Bad Request\r\n\r\n") == 400);
    CHECK(jetstream_response_status("SSH-2.0-OpenSSH\r\n\r\n") == -1);
#undef HEAD
}

/* The envelopes as bluesky-social/jetstream's handler writes them. */
static void test_refusals(void)
{
    jetstream_refusal r;
    const char *too_old = "{\"error\":\"CursorTooOld\",\"message\":\"subscribe: cursor too old: "
                          "cursor 12 below lookback floor 4521; re-backfill from your last seq\"}";
    jetstream_parse_refusal(400, too_old, strlen(too_old), &r);
    CHECK(r.kind == JETSTREAM_REFUSED_CURSOR_TOO_OLD && r.floor == 4521);
    const char *dict = "{\"error\":\"UnknownZstdDictionary\",\"message\":\"unknown zstd dictionary "
                       "id 7; current dictionary id is 20260811 (fetch it via getZstdDictionary "
                       "and reconnect)\"}";
    jetstream_parse_refusal(400, dict, strlen(dict), &r);
    CHECK(r.kind == JETSTREAM_REFUSED_DICTIONARY && r.dict_id == 20260811);
    const char *invalid =
        "{\"error\":\"InvalidRequest\",\"message\":\"subscribe: invalid options: "
        "wantedCollections is the legacy /subscribe parameter; use collections\"}";
    jetstream_parse_refusal(400, invalid, strlen(invalid), &r);
    CHECK(r.kind == JETSTREAM_REFUSED_INVALID && !strcmp(r.error, "InvalidRequest"));
    CHECK(strstr(r.message, "use collections") != NULL);
    const char *busy = "{\"error\":\"ServiceUnavailable\",\"message\":\"service not ready\"}";
    jetstream_parse_refusal(503, busy, strlen(busy), &r);
    CHECK(r.kind == JETSTREAM_REFUSED && r.status == 503);
    jetstream_parse_refusal(400, "plain text\nmore", 15, &r);
    CHECK(r.kind == JETSTREAM_REFUSED && !strcmp(r.message, "plain text") && !r.error[0]);
    const char *no_floor = "{\"error\":\"CursorTooOld\"}";
    jetstream_parse_refusal(400, no_floor, strlen(no_floor), &r);
    CHECK(r.kind == JETSTREAM_REFUSED_CURSOR_TOO_OLD && r.floor == 0);
}

static void test_dictionary_id(void)
{
    const unsigned char d[] = {0x37, 0xa4, 0x30, 0xec, 0x1b, 0x2c, 0x35, 0x01, 0xff};
    CHECK(jetstream_dictionary_id(d, sizeof d) == 20261915u);
    CHECK(jetstream_dictionary_id(d, 7) == 0);
    const unsigned char frame[] = {0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0};
    CHECK(jetstream_dictionary_id(frame, sizeof frame) == 0);
}

/* A seq resumes exactly on its own server only; elsewhere, a time rewound; nothing: the tip. */
static void test_resume_cursor(void)
{
    const char *a = "wss://jetstream1.us-east.bsky.network/subscribe";
    const char *b = "wss://jetstream2.us-east.bsky.network/subscribe";
    ingest_position at = {.seq = 4711, .seq_url = a, .time_us = 1755000000000000ull};
    CHECK(ingest_resume_cursor(&at, a, 5) == 4712);
    CHECK(ingest_resume_cursor(&at, b, 5) == 1754999995000000ull);
    CHECK(ingest_resume_cursor(&at, b, 0) == 1755000000000000ull);
    ingest_position legacy = {.time_us = 1755000000000000ull};
    CHECK(ingest_resume_cursor(&legacy, a, 5) == 1754999995000000ull);
    ingest_position none = {0};
    CHECK(ingest_resume_cursor(&none, a, 5) == 0);
    /* a rewind never turns a time into something a server would read as a seq */
    ingest_position early = {.time_us = 1000000000000500ull};
    CHECK(ingest_resume_cursor(&early, a, 5) == 1000000000000000ull);
    ingest_position floor_only = {.seq = 99, .seq_url = b};
    CHECK(ingest_resume_cursor(&floor_only, b, 5) == 100);
    CHECK(ingest_resume_cursor(&floor_only, a, 5) == 0);
}

int main(void)
{
    RUN(test_endpoints);
    RUN(test_request);
    RUN(test_upgrade_answer);
    RUN(test_refusals);
    RUN(test_dictionary_id);
    RUN(test_resume_cursor);
    CHECK_EXIT();
}
