#include "hold/dedupe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    double expires;
    uint64_t hash;
    char key[];
} entry;

struct dedupe {
    double window;
    entry **slots;
    size_t nslots, size, sweep_at;
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

dedupe *dedupe_new(double window_seconds)
{
    dedupe *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->window = window_seconds;
    d->nslots = 1024;
    d->sweep_at = 1024;
    d->slots = calloc(d->nslots, sizeof *d->slots);
    if (!d->slots) {
        free(d);
        return NULL;
    }
    return d;
}

void dedupe_free(dedupe *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->nslots; i++) {
        for (entry *e = d->slots[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    }
    free(d->slots);
    free(d);
}

/* Drops expired entries; run when the table doubled since the last sweep, so the cost is
 * amortised over insertions and memory stays proportional to keys live in one window. */
static void sweep(dedupe *d, double now)
{
    for (size_t i = 0; i < d->nslots; i++) {
        entry **pp = &d->slots[i];
        while (*pp) {
            entry *e = *pp;
            if (e->expires <= now) {
                *pp = e->next;
                free(e);
                d->size--;
            } else {
                pp = &e->next;
            }
        }
    }
    d->sweep_at = d->size * 2 > 1024 ? d->size * 2 : 1024;
}

static void grow(dedupe *d)
{
    size_t n = d->nslots * 2;
    entry **slots = calloc(n, sizeof *slots);
    if (!slots) return; /* longer chains, still correct */
    for (size_t i = 0; i < d->nslots; i++) {
        for (entry *e = d->slots[i], *next; e; e = next) {
            next = e->next;
            e->next = slots[e->hash & (n - 1)];
            slots[e->hash & (n - 1)] = e;
        }
    }
    free(d->slots);
    d->slots = slots;
    d->nslots = n;
}

int dedupe_first(dedupe *d, const char *key, double now)
{
    if (d->window <= 0) return 1;
    uint64_t h = fnv1a(key);
    for (entry *e = d->slots[h & (d->nslots - 1)]; e; e = e->next) {
        if (e->hash == h && !strcmp(e->key, key)) {
            if (e->expires > now) return 0;
            e->expires = now + d->window;
            return 1;
        }
    }
    if (d->size >= d->sweep_at) sweep(d, now);
    if (d->size >= d->nslots) grow(d);
    size_t len = strlen(key) + 1;
    entry *e = malloc(sizeof *e + len);
    if (!e) return 1;
    memcpy(e->key, key, len);
    e->hash = h;
    e->expires = now + d->window;
    e->next = d->slots[h & (d->nslots - 1)];
    d->slots[h & (d->nslots - 1)] = e;
    d->size++;
    return 1;
}

size_t dedupe_size(const dedupe *d)
{
    return d->size;
}
