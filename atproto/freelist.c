#include "atproto/freelist.h"

#include "atproto/asan.h"

#include <stdlib.h>

/* The link sits in the block's first bytes; the whole block is poisoned while on the list. */
typedef struct block {
    struct block *next;
} block;

static size_t block_size(const freelist *f)
{
    return f->size < sizeof(block) ? sizeof(block) : f->size;
}

void *freelist_get(freelist *f)
{
    block *b = f->head;
    if (!b) return malloc(block_size(f));
    UNPOISON(b, block_size(f));
    f->head = b->next;
    f->count--;
    return b;
}

void freelist_put(freelist *f, void *p)
{
    if (!p) return;
    if (f->count >= f->max) {
        free(p);
        return;
    }
    block *b = p;
    b->next = f->head;
    f->head = b;
    f->count++;
    POISON(b, block_size(f));
}

void freelist_clear(freelist *f)
{
    while (f->head) {
        block *b = f->head;
        UNPOISON(b, block_size(f));
        f->head = b->next;
        free(b);
    }
    f->count = 0;
}
