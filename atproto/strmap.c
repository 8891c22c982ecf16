#include "atproto/strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Separate chaining: an entry is one allocation holding its key, then its value. */
typedef struct entry {
    struct entry *next;
    uint64_t hash;
    size_t keylen, vlen;
    char bytes[];
} entry;

struct strmap {
    entry **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
};

#define MIN_BUCKETS 64

/* Eight bytes at a time, each word folded in with a multiply, then MurmurHash3's finalizer
 * (the bucket index is taken from the low bits). Keys are DIDs and paths of 30 to 100 bytes,
 * and a byte-at-a-time hash was a tenth of the ingester's lookups. */
static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n, k;
    for (; n >= 8; s += 8, n -= 8) {
        memcpy(&k, s, 8);
        h = (h ^ k) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    k = 0;
    memcpy(&k, s, n);
    h = (h ^ k) * 0x94d049bb133111ebull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

strmap *strmap_new(void)
{
    strmap *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->buckets = calloc(MIN_BUCKETS, sizeof *m->buckets);
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    m->nbuckets = MIN_BUCKETS;
    return m;
}

static entry **find(const strmap *m, const char *key, size_t keylen, uint64_t h)
{
    entry **at = &m->buckets[h & (m->nbuckets - 1)];
    while (*at &&
           ((*at)->hash != h || (*at)->keylen != keylen || memcmp((*at)->bytes, key, keylen) != 0))
        at = &(*at)->next;
    return at;
}

void *strmap_get(const strmap *m, const char *key, size_t keylen, size_t *vlen)
{
    entry *e = *find(m, key, keylen, hash(key, keylen));
    if (!e) return NULL;
    if (vlen) *vlen = e->vlen;
    return e->bytes + keylen;
}

/* Doubles the bucket array; on failure the map keeps working with longer chains. */
static void grow(strmap *m)
{
    size_t n = m->nbuckets * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

int strmap_put(strmap *m, const char *key, size_t keylen, const void *val, size_t vlen)
{
    uint64_t h = hash(key, keylen);
    entry **at = find(m, key, keylen, h);
    entry *old = *at;
    if (old && old->vlen == vlen) {
        memcpy(old->bytes + keylen, val, vlen);
        return 0;
    }
    entry *e = malloc(sizeof *e + keylen + vlen);
    if (!e) {
        strmap_del(m, key, keylen);
        return -1;
    }
    e->hash = h;
    e->keylen = keylen;
    e->vlen = vlen;
    memcpy(e->bytes, key, keylen);
    memcpy(e->bytes + keylen, val, vlen);
    if (old) {
        e->next = old->next;
        *at = e;
        free(old);
        return 0;
    }
    e->next = NULL;
    *at = e;
    if (++m->count > m->nbuckets) grow(m);
    return 0;
}

void strmap_del(strmap *m, const char *key, size_t keylen)
{
    entry **at = find(m, key, keylen, hash(key, keylen));
    entry *e = *at;
    if (!e) return;
    *at = e->next;
    free(e);
    m->count--;
}

void strmap_sweep(strmap *m,
                  int (*drop)(const char *key, size_t keylen, const void *val, size_t vlen,
                              void *ud),
                  void *ud)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        entry **at = &m->buckets[i];
        while (*at) {
            entry *e = *at;
            if (drop(e->bytes, e->keylen, e->bytes + e->keylen, e->vlen, ud)) {
                *at = e->next;
                free(e);
                m->count--;
            } else {
                at = &e->next;
            }
        }
    }
}

size_t strmap_count(const strmap *m)
{
    return m->count;
}

void strmap_clear(strmap *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
        m->buckets[i] = NULL;
    }
    m->count = 0;
}

void strmap_free(strmap *m)
{
    if (!m) return;
    strmap_clear(m);
    free(m->buckets);
    free(m);
}
