/* The Jetstream WebSocket client: connects (on the caller's libuv loop, TLS by OpenSSL for
 * wss://) to the first reachable URL of a list, asks for the wanted collections, resumes from
 * the cursor the caller names, reassembles messages and hands each complete one to the caller.
 *
 * Which protocol a URL speaks follows from its path (appview/jetstream_wire.h): `/subscribe`
 * is v1, `/xrpc/network.bsky.jetstream.subscribeEvents` is v2. On v2 the frames are dict-zstd
 * compressed when the server serves a dictionary (network.bsky.jetstream.getZstdDictionary),
 * unless turned off; a dictionary that cannot be had or is refused degrades the stream to
 * uncompressed frames, never to no stream. Before the upgrade a v2 server may refuse: a cursor
 * below its retention floor goes to the caller (on_too_old), an unknown dictionary is fetched
 * again, an invalid request is logged as the configuration error it is.
 *
 * On failure the next URL is tried, with exponential backoff and jitter once the whole list
 * failed; a connection that delivered messages is retried at once on the same URL (a seq
 * cursor is only good there). A socket that sends no frame for `stall_seconds` is dropped and
 * replaced. */
#ifndef APPVIEW_JETSTREAM_H
#define APPVIEW_JETSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "atproto/http_client.h"

typedef struct jetstream jetstream;

typedef enum { JETSTREAM_V1 = 1, JETSTREAM_V2 = 2 } jetstream_flavor;

/* The v2 payload types' common prefix: "...#commit", "...#identity" and so on. */
#define JETSTREAM_V2_TYPE "network.bsky.jetstream.subscribeEvents#"
/* Cursors below this are seqs, from here on time_us (the server splits them so). */
#define JETSTREAM_SEQ_LIMIT 1000000000000000ull

/* One complete message, decompressed: the JSON text. Not NUL-terminated, valid only during
 * the call. */
typedef void (*jetstream_message_cb)(void *ud, jetstream_flavor flavor, const char *data,
                                     size_t len);
/* Asked at every (re)connect: the cursor to send to url, 0 for none (the live tip). */
typedef uint64_t (*jetstream_cursor_cb)(void *ud, const char *url, jetstream_flavor flavor);
/* Connection up (1) or down (0). */
typedef void (*jetstream_state_cb)(void *ud, int connected);
/* url refused the cursor as older than its retention (v2 CursorTooOld): what came between it
 * and floor (the oldest seq it still has; 0 when it named none) cannot be read from the
 * stream. The client reconnects at once and asks the cursor callback again. */
typedef void (*jetstream_too_old_cb)(void *ud, const char *url, uint64_t floor);

typedef struct {
    const char *const *urls; /* ws:// or wss:// (system CAs, or SSL_CERT_FILE) */
    size_t nurls;
    const char *const *collections; /* NSIDs, or prefixes like "io.atcr.*" */
    size_t ncollections;
    unsigned stall_seconds; /* 0 means 30 */
    size_t max_message;     /* larger messages (decompressed) are dropped and counted; 0: 4 MiB */
    int no_compression;     /* v2: ask for uncompressed frames even where zstd is served */
    http_client *http;      /* fetches the v2 dictionary; NULL: no compression */
    jetstream_message_cb on_message;
    jetstream_cursor_cb cursor;
    jetstream_state_cb on_state;     /* may be NULL */
    jetstream_too_old_cb on_too_old; /* may be NULL: then the live tip */
    void *ud;
} jetstream_options;

jetstream *jetstream_new(uv_loop_t *loop, const jetstream_options *opt);
void jetstream_start(jetstream *js);
/* Stop or resume reading from the socket (backpressure while Valkey is slow or down). */
void jetstream_pause(jetstream *js, int paused);
/* Drop the connection and connect again at once (the cursor callback is asked again). */
void jetstream_reconnect(jetstream *js);
/* The server ended the stream with an error (a v2 error frame, e.g. ConsumerTooSlow): drop
 * the connection and connect again to the same URL after a backoff. */
void jetstream_retry_later(jetstream *js, const char *why);
int jetstream_connected(const jetstream *js);
int jetstream_compressed(const jetstream *js);  /* the open connection is dict-zstd */
const char *jetstream_url(const jetstream *js); /* the URL in use or last tried */
/* "URL: why" of the last failed attempt or lost connection ("... Connection refused", "cannot
 * resolve HOST: ..."), "" while connected or before the first attempt. */
const char *jetstream_last_error(const jetstream *js);
/* Closes the connection and its timers; the memory is released from their close callbacks,
 * so the loop must run afterwards. Callbacks are never called again. Safe from any callback. */
void jetstream_free(jetstream *js);

#endif
