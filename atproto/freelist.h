/* A free list of blocks of one size, for what a hot path allocates and frees by the thousand
 * (a command in flight). glibc's per-thread cache keeps seven blocks of a size; past them a
 * malloc and a free go through its bins, sorting and coalescing, which was a fifth of the
 * ingester's time. Here a free block is pushed on a list and the next allocation pops it.
 *
 * Blocks stay allocated until freelist_clear (at most max of them wait on the list; more are
 * given back to free). Not thread-safe: one list per owner, on one loop. Under AddressSanitizer a
 * block on the list is poisoned, so a use after freelist_put is still reported. */
#ifndef ATPROTO_FREELIST_H
#define ATPROTO_FREELIST_H

#include <stddef.h>

typedef struct {
    void *head;
    size_t size;  /* of every block, at least a pointer's */
    size_t count; /* blocks on the list */
    size_t max;   /* the most it keeps */
} freelist;

#define FREELIST_INIT(block_size, keep)                                                            \
    {                                                                                              \
        NULL, (block_size), 0, (keep)                                                              \
    }

/* A block of f->size bytes, uninitialized; NULL when out of memory. */
void *freelist_get(freelist *f);
/* p (from freelist_get on f, or NULL) is free again. */
void freelist_put(freelist *f, void *p);
/* Frees every block on the list. */
void freelist_clear(freelist *f);

#endif
