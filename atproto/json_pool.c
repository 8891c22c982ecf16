#include "atproto/json_pool.h"

#include "atproto/asan.h"
#include "atproto/buf.h"

#include <stdlib.h>

#define CLASS_BYTES 16
#define CLASSES 16 /* blocks of 16, 32, ... 256 bytes */
#define CHUNK_BYTES (64 * 1024)
/* Before each block: its class, or LARGE. Sixteen bytes keep blocks aligned as malloc's. */
#define HEADER 16
#define LARGE 0xff

typedef struct free_block {
    struct free_block *next;
} free_block;

/* Chunks are never given back (their blocks are reused): each starts with a pointer to the one
 * cut before it, so every chunk stays reachable from pool.chunks. Without that, a leak checker
 * that follows only pointers to an allocation's start (LeakSanitizer) reports an older chunk as
 * leaked once its blocks are all free or all taken. */
static _Thread_local struct {
    free_block *free[CLASSES];
    unsigned char *chunk; /* where the next new block is cut */
    size_t left;
    void *chunks; /* the newest chunk */
} pool;

static size_t class_bytes(unsigned c)
{
    return (c + 1) * CLASS_BYTES;
}

static void *pool_malloc(size_t size)
{
    if (size > CLASSES * CLASS_BYTES) {
        unsigned char *p = malloc(HEADER + size);
        if (!p) return NULL;
        p[0] = LARGE;
        return p + HEADER;
    }
    unsigned c = size ? (unsigned)((size - 1) / CLASS_BYTES) : 0;
    free_block *b = pool.free[c];
    if (b) {
        UNPOISON(b, class_bytes(c));
        pool.free[c] = b->next;
        return b;
    }
    size_t need = HEADER + class_bytes(c);
    if (pool.left < need) {
        /* The old chunk's tail, under 272 bytes, is left unused. */
        unsigned char *chunk = malloc(CHUNK_BYTES);
        if (!chunk) return NULL;
        *(void **)chunk = pool.chunks;
        pool.chunks = chunk;
        pool.chunk = chunk + HEADER;
        pool.left = CHUNK_BYTES - HEADER;
    }
    unsigned char *p = pool.chunk;
    pool.chunk += need;
    pool.left -= need;
    p[0] = (unsigned char)c;
    return p + HEADER;
}

static void pool_free(void *ptr)
{
    if (!ptr) return;
    unsigned char *p = (unsigned char *)ptr - HEADER;
    if (p[0] == LARGE) {
        free(p);
        return;
    }
    free_block *b = ptr;
    b->next = pool.free[p[0]];
    pool.free[p[0]] = b;
    POISON(b, class_bytes(p[0]));
}

void json_pool_install(void)
{
    json_set_alloc_funcs(pool_malloc, pool_free);
}

static int append_dumped(const char *s, size_t n, void *b)
{
    return buf_append(b, s, n);
}

/* One pass into a buf (malloc'd): json_dumpb would serialize once to learn the size and again
 * to write. */
char *json_pool_dump(const json_t *v, size_t *len)
{
    buf b = {0};
    if (json_dump_callback(v, append_dumped, &b, JSON_COMPACT) != 0 || !b.data) {
        buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.data;
}
