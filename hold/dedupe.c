#include "hold/dedupe.h"

#include <stdlib.h>
#include <string.h>

#include "atproto/strmap.h"

/* Key -> when its window ends (a double, copied in and out: strmap values are not aligned). */
struct dedupe {
    double window;
    strmap *until;
    size_t sweep_at;
};

dedupe *dedupe_new(double window_seconds)
{
    dedupe *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->window = window_seconds;
    d->sweep_at = 1024;
    d->until = strmap_new();
    if (!d->until) {
        free(d);
        return NULL;
    }
    return d;
}

void dedupe_free(dedupe *d)
{
    if (!d) return;
    strmap_free(d->until);
    free(d);
}

static int expired(const char *key, size_t keylen, const void *val, size_t vlen, void *ud)
{
    double until, now = *(const double *)ud;
    if (vlen != sizeof until) return 1;
    memcpy(&until, val, sizeof until);
    return until <= now;
}

int dedupe_first(dedupe *d, const char *key, double now)
{
    if (d->window <= 0) return 1;
    size_t n, keylen = strlen(key);
    const void *v = strmap_get(d->until, key, keylen, &n);
    double until;
    if (v && n == sizeof until) {
        memcpy(&until, v, sizeof until);
        if (until > now) return 0;
    } else if (strmap_count(d->until) >= d->sweep_at) {
        /* Run when the table doubled since the last sweep, so the cost is amortised over
         * insertions and memory stays proportional to keys live in one window. */
        strmap_sweep(d->until, expired, &now);
        size_t live = strmap_count(d->until);
        d->sweep_at = live * 2 > 1024 ? live * 2 : 1024;
    }
    until = now + d->window;
    strmap_put(d->until, key, keylen, &until, sizeof until); /* out of memory: counted anyway */
    return 1;
}

size_t dedupe_size(const dedupe *d)
{
    return strmap_count(d->until);
}
