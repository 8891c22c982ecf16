#include "atproto/strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* An entry is one allocation holding its key, then its value. */
typedef struct entry {
    size_t keylen, vlen;
    char bytes[];
} entry;

/* Open addressing with linear probing. A slot keeps its entry's hash next to the pointer, so a
 * probe compares hashes within the slot array and touches an entry only when they match: one
 * cache miss for a key that is absent, two for one that is there. (Chained buckets cost a miss
 * per entry on the chain; the ingester makes several lookups per record in maps of a hundred
 * thousand entries.) */
typedef struct {
    uint64_t hash;
    entry *e; /* NULL: empty; &tombstone: deleted, probes go on past it */
} slot;

struct strmap {
    slot *slots;
    size_t cap;   /* a power of two */
    size_t count; /* entries */
    size_t used;  /* entries and tombstones: slots a probe cannot stop at */
};

static entry tombstone;

#define MIN_SLOTS 64

/* Eight bytes at a time, each word folded in with a multiply, then MurmurHash3's finalizer
 * (the slot index is taken from the low bits). Keys are DIDs and paths of 30 to 100 bytes,
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
    m->slots = calloc(MIN_SLOTS, sizeof *m->slots);
    if (!m->slots) {
        free(m);
        return NULL;
    }
    m->cap = MIN_SLOTS;
    return m;
}

/* The slot holding key, or NULL. When free_slot is not NULL it gets, for a key that is absent,
 * where to put it: the first tombstone on the probe, else the empty slot that ended it. */
static slot *find(const strmap *m, const char *key, size_t keylen, uint64_t h, slot **free_slot)
{
    size_t mask = m->cap - 1;
    slot *reuse = NULL;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        slot *s = &m->slots[i];
        if (!s->e) {
            if (free_slot) *free_slot = reuse ? reuse : s;
            return NULL;
        }
        if (s->e == &tombstone) {
            if (!reuse) reuse = s;
        } else if (s->hash == h && s->e->keylen == keylen &&
                   memcmp(s->e->bytes, key, keylen) == 0) {
            return s;
        }
    }
}

void *strmap_get(const strmap *m, const char *key, size_t keylen, size_t *vlen)
{
    const slot *s = find(m, key, keylen, hash(key, keylen), NULL);
    if (!s) return NULL;
    if (vlen) *vlen = s->e->vlen;
    return s->e->bytes + keylen;
}

/* The first empty slot on h's probe: where an entry goes in slots without tombstones. */
static slot *probe_empty(slot *slots, size_t cap, uint64_t h)
{
    size_t i = h & (cap - 1);
    while (slots[i].e)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

/* Moves the entries into a new slot array, dropping the tombstones, and doubles it when the
 * entries alone fill half of it. -1 when out of memory: the map keeps its slots. */
static int rehash(strmap *m)
{
    size_t cap = m->cap;
    while (m->count * 2 >= cap)
        cap *= 2;
    slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        const slot *s = &m->slots[i];
        if (s->e && s->e != &tombstone) *probe_empty(slots, cap, s->hash) = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->count;
    return 0;
}

static entry *entry_new(const char *key, size_t keylen, const void *val, size_t vlen)
{
    entry *e = malloc(sizeof *e + keylen + vlen);
    if (!e) return NULL;
    e->keylen = keylen;
    e->vlen = vlen;
    memcpy(e->bytes, key, keylen);
    memcpy(e->bytes + keylen, val, vlen);
    return e;
}

int strmap_put(strmap *m, const char *key, size_t keylen, const void *val, size_t vlen)
{
    uint64_t h = hash(key, keylen);
    slot *free_slot = NULL;
    slot *s = find(m, key, keylen, h, &free_slot);
    if (s && s->e->vlen == vlen) {
        memcpy(s->e->bytes + keylen, val, vlen);
        return 0;
    }
    entry *e = entry_new(key, keylen, val, vlen);
    if (!e) {
        strmap_del(m, key, keylen);
        return -1;
    }
    if (s) {
        free(s->e);
        s->e = e;
        return 0;
    }
    /* A probe stops only at an empty slot: keep a quarter of them empty. */
    if ((m->used + 1) * 4 > m->cap * 3) {
        if (rehash(m) == 0)
            free_slot = probe_empty(m->slots, m->cap, h);
        else if (m->used + 1 >= m->cap) {
            free(e);
            return -1;
        }
    }
    if (free_slot->e != &tombstone) m->used++;
    *free_slot = (slot){h, e};
    m->count++;
    return 0;
}

static void remove_at(strmap *m, slot *s)
{
    free(s->e);
    s->e = &tombstone;
    m->count--;
}

void strmap_del(strmap *m, const char *key, size_t keylen)
{
    slot *s = find(m, key, keylen, hash(key, keylen), NULL);
    if (s) remove_at(m, s);
}

void strmap_sweep(strmap *m,
                  int (*drop)(const char *key, size_t keylen, const void *val, size_t vlen,
                              void *ud),
                  void *ud)
{
    for (size_t i = 0; i < m->cap; i++) {
        slot *s = &m->slots[i];
        if (!s->e || s->e == &tombstone) continue;
        if (drop(s->e->bytes, s->e->keylen, s->e->bytes + s->e->keylen, s->e->vlen, ud))
            remove_at(m, s);
    }
}

size_t strmap_count(const strmap *m)
{
    return m->count;
}

void strmap_clear(strmap *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].e != &tombstone) free(m->slots[i].e);
        m->slots[i] = (slot){0, NULL};
    }
    m->count = m->used = 0;
}

void strmap_free(strmap *m)
{
    if (!m) return;
    strmap_clear(m);
    free(m->slots);
    free(m);
}
