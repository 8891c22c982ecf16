#include "hold/increments.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/json_read.h"
#include "atproto/syntax.h"

/* Fills inc from one event object; returns NULL or what is wrong with it. */
static const char *read_event(json_t *ev, store_incr *inc)
{
    if (!json_is_object(ev)) return "an event must be an object";
    json_t *did = json_object_get(ev, "did"), *repo = json_object_get(ev, "repository");
    json_t *event = json_object_get(ev, "event"), *count = json_object_get(ev, "count");
    if (!json_is_string(did) || !atp_is_did(json_string_value(did), json_string_length(did)))
        return "did must be a valid DID";
    if (!json_is_string(repo) ||
        !oci_is_repository(json_string_value(repo), json_string_length(repo)))
        return "repository must be a valid OCI repository name";
    if (!json_is_string(event)) return "event must be \"pull\" or \"push\"";
    if (!strcmp(json_string_value(event), "pull"))
        inc->event = STORE_PULL;
    else if (!strcmp(json_string_value(event), "push"))
        inc->event = STORE_PUSH;
    else
        return "event must be \"pull\" or \"push\"";
    if (count && !json_is_null(count)) {
        if (!json_is_integer(count) || json_integer_value(count) < 1 ||
            json_integer_value(count) > HOLD_MAX_COUNT)
            return "count must be an integer in 1..1000000";
        inc->count = json_integer_value(count);
    } else {
        inc->count = 1;
    }
    inc->did = json_string_value(did);
    inc->repository = json_string_value(repo);
    return NULL;
}

increments_rc increments_parse(const char *body, size_t len, increment_batch *out, char *why,
                               size_t whylen)
{
    memset(out, 0, sizeof *out);
    json_t *root = json_read(body, len);
    if (!json_is_object(root)) {
        json_decref(root);
        snprintf(why, whylen, "the body must be a JSON object");
        return INCREMENTS_BAD_JSON;
    }
    json_t *events = json_object_get(root, "events");
    size_t n = 1;
    if (events) {
        if (!json_is_array(events) || json_array_size(events) < 1 ||
            json_array_size(events) > HOLD_MAX_BATCH) {
            json_decref(root);
            snprintf(why, whylen, "events must be an array of 1..%d events", HOLD_MAX_BATCH);
            return INCREMENTS_INVALID;
        }
        n = json_array_size(events);
    }
    out->root = root;
    out->n = n;
    out->incs = calloc(n, sizeof *out->incs);
    if (!out->incs) {
        increments_clear(out);
        snprintf(why, whylen, "out of memory");
        return INCREMENTS_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *bad = read_event(events ? json_array_get(events, i) : root, &out->incs[i]);
        if (bad) {
            if (events)
                snprintf(why, whylen, "events[%zu]: %s", i, bad);
            else
                snprintf(why, whylen, "%s", bad);
            increments_clear(out);
            return INCREMENTS_INVALID;
        }
        out->total += out->incs[i].count;
    }
    return INCREMENTS_OK;
}

void increments_clear(increment_batch *inc)
{
    free(inc->incs);
    json_decref(inc->root);
    memset(inc, 0, sizeof *inc);
}
