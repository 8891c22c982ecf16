/* jansson's allocations from per-size free lists.
 *
 * Parsing one firehose event makes and frees some sixty small jansson values, and glibc's
 * malloc and free cost more than the parse itself: its per-thread cache keeps seven blocks of
 * a size, and one record frees many more than that. Blocks of up to 256 bytes come from
 * free lists of their size, carved from 64 KiB chunks; larger ones from malloc. Chunks are
 * never given back: the pool keeps what its busiest moment needed. Free lists are per thread.
 *
 * json_pool_install must run before the first jansson value is made, since a value made by
 * one allocator cannot be freed by the other. After it, a string that jansson hands over to
 * be freed (json_dumps) must not go to free(): use json_pool_dump. */
#ifndef ATPROTO_JSON_POOL_H
#define ATPROTO_JSON_POOL_H

#include <jansson.h>
#include <stddef.h>

void json_pool_install(void);

/* v as compact JSON, NUL-terminated, its length in *len; malloc'd (the caller frees it with
 * free()), whichever allocator jansson has. NULL when memory runs out. */
char *json_pool_dump(const json_t *v, size_t *len);

#endif
