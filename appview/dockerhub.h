/* Docker Hub's public repository API: GET {base}/v2/repositories/{namespace}/{name}/ for
 * pull_count, star_count and last_updated.
 *
 * Every call goes through one sliding-window limiter: at most `rate` requests in any `window_s`
 * seconds (Hub's budget is per IP). A 429,
 * or X-RateLimit-Remaining: 0, parks every call until X-RateLimit-Reset / Retry-After: no
 * request is sent while parked, and the wait does not use up a request's attempts. 500, 502,
 * 503, 504 and connection failures are tried at most 3 times with backoff. 404 is remembered
 * as "no such image" for a day; 401/403 are reported (log, metric), never remembered.
 * Concurrent calls for one image share one request; answers are reused for ok_ttl. */
#ifndef APPVIEW_DOCKERHUB_H
#define APPVIEW_DOCKERHUB_H

#include <stdbool.h>
#include <uv.h>

typedef struct dockerhub dockerhub;

typedef struct {
    const char *base_url; /* APPVIEW_DOCKERHUB_URL */
    int rate, window_s;   /* APPVIEW_DOCKERHUB_RATE per APPVIEW_DOCKERHUB_RATE_WINDOW */
    long timeout_ms;      /* per attempt */
    unsigned ok_ttl;      /* seconds an answer is reused */
} dockerhub_options;

enum dockerhub_status {
    HUB_OK,
    HUB_MISSING, /* 404: no such image */
    HUB_DENIED,  /* 401/403 */
    HUB_FAILED,  /* 5xx after the retries, network, malformed answer */
    HUB_CANCELLED,
};

typedef struct {
    enum dockerhub_status status;
    const char *image;
    long long pull_count, star_count;
    const char *last_updated; /* "" when absent */
    const char *error;        /* "" when OK */
} dockerhub_result;

typedef void (*dockerhub_cb)(const dockerhub_result *res, void *ud);

dockerhub *dockerhub_new(uv_loop_t *loop, const dockerhub_options *opt);
/* image is "namespace/name" (dockerhub_valid_image). fresh: skip a remembered OK answer (the
 * daily refresh). 0: cb is called exactly once, later. -1: bad image, out of memory or
 * shutting down (cb not called). */
int dockerhub_get(dockerhub *d, const char *image, bool fresh, dockerhub_cb cb, void *ud);
bool dockerhub_valid_image(const char *image);
/* Pending callbacks get HUB_CANCELLED, synchronously from here. */
void dockerhub_free(dockerhub *d);

#endif
