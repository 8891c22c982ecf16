/* A hash map from byte-string keys to small byte-string values, both copied in. Made for what a
 * process remembers for a while: lookups and updates, strmap_sweep to drop what is out of date,
 * strmap_clear to forget everything at once. */
#ifndef ATPROTO_STRMAP_H
#define ATPROTO_STRMAP_H

#include <stddef.h>

typedef struct strmap strmap;

strmap *strmap_new(void);
/* The value stored under key, or NULL; *vlen gets its length when vlen is not NULL. The
 * pointer is valid until the next change of the map, and the value may be changed through it
 * in place (its bytes are not aligned: copy values in and out). */
void *strmap_get(const strmap *m, const char *key, size_t keylen, size_t *vlen);
/* Stores a copy of val under key, replacing any value there. 0, or -1 when out of memory (the
 * key is then absent). */
int strmap_put(strmap *m, const char *key, size_t keylen, const void *val, size_t vlen);
void strmap_del(strmap *m, const char *key, size_t keylen);
size_t strmap_count(const strmap *m);
/* Removes the entries for which drop(key, keylen, value, vlen, ud) returns 1. */
void strmap_sweep(strmap *m,
                  int (*drop)(const char *key, size_t keylen, const void *val, size_t vlen,
                              void *ud),
                  void *ud);
void strmap_clear(strmap *m);
void strmap_free(strmap *m);

#endif
