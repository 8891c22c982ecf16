/* Asking several holds the same XRPC query at once. A hold is named by its DID; its endpoint
 * is the #atcr_hold service of its DID document (appview/resolver.h), cached here. Queries run
 * concurrently, at most `concurrency` at a time, and the whole round ends by a deadline
 * (timeout_ms): a hold that has not answered by then counts as failed, so the answer time does
 * not grow with the number of holds. */
#ifndef APPVIEW_HOLDS_H
#define APPVIEW_HOLDS_H

#include <stddef.h>
#include <uv.h>

#include "appview/resolver.h"
#include "atproto/http_client.h"

typedef struct holds holds;

typedef struct {
    int concurrency;       /* APPVIEW_STATS_CONCURRENCY */
    long timeout_ms;       /* per round */
    unsigned endpoint_ttl; /* seconds a resolved endpoint is reused */
    /* The same guard as PDS calls: private addresses and http only on a local test network. */
    int allow_private;
} holds_options;

typedef struct {
    const char *did;
    int ok;           /* answered 200 */
    const char *body; /* the JSON answer when ok, else "" */
    size_t len;
    const char *error; /* why not ok */
} hold_answer;

/* answers[i] matches dids[i]; pointers valid during the call only. */
typedef void (*holds_done_cb)(const hold_answer *answers, size_t n, void *ud);

/* r is the caller's and must outlive this. NULL when out of memory. */
holds *holds_new(uv_loop_t *loop, resolver *r, const holds_options *opt);
/* GET {endpoint}{path_query} of every hold (e.g. "/xrpc/io.atcr.hold.getStats?did=..").
 * Returns 0 and calls cb exactly once later, or -1 (cb not called). */
int holds_ask(holds *h, const char *const *dids, size_t n, const char *path_query, holds_done_cb cb,
              void *ud);
/* Rounds in progress finish at once with what they have. Call before resolver_free. */
void holds_free(holds *h);

#endif
