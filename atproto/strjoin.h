/* Key and field names built in fixed buffers, as the index's hot paths do: a dozen strings an
 * event, where printf would cost more than the rest of the work. */
#ifndef ATPROTO_STRJOIN_H
#define ATPROTO_STRJOIN_H

#include <stddef.h>

/* Concatenates parts (NULL-terminated) into out, which has room for cap bytes with the NUL.
 * Returns the length, or -1 when it does not fit: nothing is ever cut short (out then holds
 * no string). */
int strjoin(char *out, size_t cap, const char *const *parts);

/* The n bytes at s as a string in out (cap bytes with the NUL): n, or -1 when they do not fit
 * (out then holds ""). The copy strjoin makes of one part whose length is known. */
int strput(char *out, size_t cap, const char *s, size_t n);

/* STRJOIN(array, "a", b, "c"): strjoin into a char array, sized by the array. */
#define STRJOIN(out, ...) strjoin((out), sizeof(out), (const char *const[]){__VA_ARGS__, NULL})

#endif
