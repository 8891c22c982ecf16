/* The body of io.atcr.hold.incrementStats, read and checked: one event {did, repository, event,
 * count?} or a batch {events: [...]}. Pure (bytes in, increments or a reason out), so it is
 * unit-tested and fuzzed without a server. JSON is read by atproto/json_read, the project's
 * one acceptance rule for JSON from the network (RFC 8259, nothing after the value). */
#ifndef HOLD_INCREMENTS_H
#define HOLD_INCREMENTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "hold/store.h"

#define HOLD_MAX_BATCH 1000
#define HOLD_MAX_COUNT 1000000

typedef struct {
    json_t *root;     /* the parsed body; the strings in incs point into it */
    store_incr *incs; /* n of them */
    size_t n;
    int64_t total; /* sum of the counts */
} increment_batch;

typedef enum {
    INCREMENTS_OK,
    INCREMENTS_BAD_JSON,
    INCREMENTS_INVALID,
    INCREMENTS_NOMEM
} increments_rc;

/* Reads body (len bytes) into out. On anything but OK, why holds a one-line reason (for the
 * client) and out holds nothing to clear. */
increments_rc increments_parse(const char *body, size_t len, increment_batch *out, char *why,
                               size_t whylen);
void increments_clear(increment_batch *inc);

#endif
