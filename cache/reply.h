/* A Valkey reply as the rest of the program sees it: the protocol library's own types stay
 * inside cache/. A reply is read only, and lives until the callback it was handed to returns:
 * copy what outlives it. */
#ifndef CACHE_REPLY_H
#define CACHE_REPLY_H

#include <stddef.h>

typedef enum {
    REPLY_NIL,
    REPLY_INTEGER,
    REPLY_STRING, /* a bulk string */
    REPLY_STATUS, /* a simple string ("OK") */
    REPLY_ERROR,  /* str is the error line ("WRONGTYPE ...") */
    REPLY_ARRAY,
} reply_type;

typedef struct reply {
    reply_type type;
    long long integer; /* REPLY_INTEGER */
    const char *str;   /* STRING, STATUS, ERROR: len bytes and a NUL */
    size_t len;
    size_t elements;                    /* REPLY_ARRAY */
    const struct reply *const *element; /* REPLY_ARRAY: elements replies */
} reply;

/* 1 when r is a bulk string (the common "is it there" check). */
static inline int reply_is_string(const reply *r)
{
    return r && r->type == REPLY_STRING;
}

#endif
