/* The Jetstream wire without a socket: which protocol a URL speaks, the subscribe request, the
 * check of the server's upgrade answer, and what a refusal before the upgrade asks for. Pure
 * functions (data in, decisions out), unit-tested in tests/unit/test_jetstream_wire.c;
 * appview/jetstream.c does the I/O.
 *
 * The wire is Jetstream's as it runs today (bluesky-social/jetstream, docs/README.md section
 * 5, lexicon network.bsky.jetstream.subscribeEvents): `/subscribe` is v1 (wantedCollections,
 * cursor a seq below 1e15 or a time_us); `/xrpc/network.bsky.jetstream.subscribeEvents` is v2
 * (repeated collections and kinds, inclusive seq cursor, subprotocol xrpc.v1.json,
 * zstdDictionary=<id>). */
#ifndef APPVIEW_JETSTREAM_WIRE_H
#define APPVIEW_JETSTREAM_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "appview/jetstream.h"
#include "atproto/buf.h"

#define JETSTREAM_V2_METHOD "network.bsky.jetstream.subscribeEvents"
#define JETSTREAM_DICT_METHOD "network.bsky.jetstream.getZstdDictionary"
#define JETSTREAM_SUBPROTOCOL "xrpc.v1.json"

/* One configured URL, ready to connect to. Strings are owned (jetstream_endpoint_clear). */
typedef struct {
    char *url;       /* as configured, for logs and cursors */
    char *host;      /* to connect to (an IPv6 literal without brackets) */
    char *authority; /* the Host header: host[:port] as written */
    char *target;    /* path, the configured query, then the filters; no cursor */
    char *dict_url;  /* v2: http(s)://authority/xrpc/network.bsky.jetstream.getZstdDictionary */
    int port;
    int tls;
    jetstream_flavor flavor;
} jetstream_endpoint;

/* Parses url (ws:// or wss://) and builds its request for the wanted collections (NSIDs or
 * prefixes like "io.atcr.*"): v1 wantedCollections, v2 collections and every kind. 0, or -1
 * with the reason in why. */
int jetstream_endpoint_parse(jetstream_endpoint *e, const char *url, const char *const *collections,
                             size_t ncollections, char *why, size_t whylen);
void jetstream_endpoint_clear(jetstream_endpoint *e);

/* The HTTP upgrade request for e, resuming from cursor (0: none, the live tip) and, on v2,
 * asking for dict-zstd frames with dictionary dict_id (0: uncompressed). key is the
 * Sec-WebSocket-Key. Appends to out; 0, or -1 when out of memory. */
int jetstream_upgrade_request(const jetstream_endpoint *e, uint64_t cursor, unsigned dict_id,
                              const char *key, buf *out);

/* The Sec-WebSocket-Accept a server must answer to key (RFC 6455); out has 32 bytes. */
int jetstream_accept_for(const char *key, char out[32]);

/* Checks a complete response head (NUL-terminated, "\r\n\r\n" included) that answered with
 * status 101: its Sec-WebSocket-Accept, that it imposes no extension, and its subprotocol (v2
 * offers xrpc.v1.json: its echo or none; v1 offers none). NULL when fine, else why not. */
const char *jetstream_check_upgrade(const char *head, const char *accept, jetstream_flavor flavor);

/* The status code of a response head ("HTTP/1.1 400 ..."), or -1. */
int jetstream_response_status(const char *head);

/* A header's value in a response head, by lower-case name with its colon; NULL when absent. */
const char *jetstream_header(const char *head, const char *name, size_t *len);

typedef enum {
    JETSTREAM_REFUSED,                /* anything else: try the next URL */
    JETSTREAM_REFUSED_INVALID,        /* 400 InvalidRequest: a configuration error */
    JETSTREAM_REFUSED_CURSOR_TOO_OLD, /* 400 CursorTooOld: the gap is gone from the socket */
    JETSTREAM_REFUSED_DICTIONARY,     /* 400 UnknownZstdDictionary: refetch it */
} jetstream_refusal_kind;

typedef struct {
    jetstream_refusal_kind kind;
    int status;
    uint64_t floor;   /* CursorTooOld: the oldest seq the message names; 0 when none */
    unsigned dict_id; /* UnknownZstdDictionary: the current id the message names; 0 when none */
    char error[64];   /* the XRPC error name, "" when the body was not an envelope */
    char message[256];
} jetstream_refusal;

/* Reads a refusal: its status and body (the XRPC envelope {"error","message"} on v2). */
void jetstream_parse_refusal(int status, const char *body, size_t len, jetstream_refusal *r);

/* The id in a structured zstd dictionary's header (RFC 8878 section 5), 0 when it is not one. */
unsigned jetstream_dictionary_id(const void *dict, size_t len);

#endif
