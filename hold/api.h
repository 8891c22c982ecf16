/* The hold's XRPC surface: io.atcr.hold.* methods, com.atproto.sync.getBlob, health, metrics.
 * The record view (records.h) and did.json share this context. */
#ifndef HOLD_API_H
#define HOLD_API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "atproto/httpd.h"
#include "hold/config.h"
#include "hold/dedupe.h"
#include "hold/store.h"

/* Big enough for a full batch of events with long DIDs; larger bodies get 413. */
#define HOLD_MAX_BODY (4u << 20)

typedef struct {
    const hold_config *cfg;
    store *st;
    dedupe *pulls;
    uint8_t (*token_digests)[32];
    size_t ntokens;
} hold_api;

/* Returns 0, or -1 when memory runs out. */
int hold_api_init(hold_api *a, const hold_config *cfg, store *st);
int hold_api_routes(hold_api *a, httpd *h);
void hold_api_free(hold_api *a);
/* store_commit_fn feeding the commit metrics. */
void hold_api_on_commit(void *ud, double seconds, size_t submissions, size_t increments);

/* Helpers shared with the record view: reply with a JSON value (takes the reference). */
void hold_reply_json(httpd_req *r, json_t *v);
/* 400 InvalidRequest with what as the message, counted and logged. */
void hold_bad_request(httpd_req *r, const char *what);
/* Parses an integer parameter in [lo, hi]; absent gives dflt. -1 (and a 400 sent) when bad. */
int hold_int_param(httpd_req *r, const char *name, long lo, long hi, long dflt, long *out);

#endif
