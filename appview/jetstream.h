/* The Jetstream WebSocket client: connects (libwebsockets on the caller's libuv loop) to the
 * first reachable URL of a list, asks for the wanted collections, resumes from a cursor the
 * caller provides, reassembles messages and hands each complete one to the caller.
 *
 * Which protocol a URL speaks follows from its path: `/subscribe` is v1 (wantedCollections,
 * cursor = time_us), `/xrpc/network.bsky.jetstream.subscribeEvents` is v2 (collections,
 * kinds, cursor = seq, frames wrapped with "$type"). On failure the next URL is tried, with
 * exponential backoff and jitter once the whole list failed; a socket that sends no frame for
 * `stall_seconds` is dropped and replaced. */
#ifndef APPVIEW_JETSTREAM_H
#define APPVIEW_JETSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct jetstream jetstream;

typedef enum { JETSTREAM_V1 = 1, JETSTREAM_V2 = 2 } jetstream_flavor;

/* One complete text message; not NUL-terminated, valid only during the call. */
typedef void (*jetstream_message_cb)(void *ud, jetstream_flavor flavor, const char *data,
                                     size_t len);
/* Asked at every (re)connect: the cursor to resume from for that flavor, 0 for the live tail. */
typedef uint64_t (*jetstream_cursor_cb)(void *ud, jetstream_flavor flavor);
/* Connection up (1) or down (0). */
typedef void (*jetstream_state_cb)(void *ud, int connected);

typedef struct {
    const char *const *urls; /* ws:// or wss:// (system CAs) */
    size_t nurls;
    const char *const *collections; /* NSIDs, or prefixes like "io.atcr.*" */
    size_t ncollections;
    unsigned stall_seconds; /* 0 means 30 */
    size_t max_message;     /* larger messages are dropped and counted; 0 means 4 MiB */
    jetstream_message_cb on_message;
    jetstream_cursor_cb cursor;
    jetstream_state_cb on_state; /* may be NULL */
    void *ud;
} jetstream_options;

jetstream *jetstream_new(uv_loop_t *loop, const jetstream_options *opt);
void jetstream_start(jetstream *js);
/* Stop or resume reading from the socket (backpressure while Valkey is slow or down). */
void jetstream_pause(jetstream *js, int paused);
/* Drop the connection and connect again (the cursor callback is asked again). */
void jetstream_reconnect(jetstream *js);
int jetstream_connected(const jetstream *js);
const char *jetstream_url(const jetstream *js); /* the URL in use or last tried */
/* "URL: why" of the last failed attempt or lost connection ("... Connection refused", "cannot
 * resolve HOST: ..."), "" while connected or before the first attempt. */
const char *jetstream_last_error(const jetstream *js);
/* Closes the socket and the lws context; the loop must run afterwards so handles close. */
void jetstream_free(jetstream *js);

#endif
