/* A growable byte buffer, always NUL-terminated. The owner calls buf_free. */
#ifndef ATPROTO_BUF_H
#define ATPROTO_BUF_H

#include <stddef.h>

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} buf;

/* All return 0, or -1 when memory runs out (the buffer is then unchanged). */
int buf_reserve(buf *b, size_t extra);
int buf_append(buf *b, const void *data, size_t len);
int buf_puts(buf *b, const char *s);
__attribute__((format(printf, 2, 3))) int buf_printf(buf *b, const char *fmt, ...);
/* A malloc'd string, formatted as printf does; NULL when memory runs out. The caller frees it. */
__attribute__((format(printf, 1, 2))) char *buf_dup_printf(const char *fmt, ...);
/* Appends s percent-encoded for a URL query value: all but RFC 3986 unreserved characters. */
int buf_url_encode(buf *b, const char *s);
/* Appends s as a JSON string literal, quotes included; runs that need no escape are copied
 * whole. */
int buf_json_string(buf *b, const char *s, size_t len);
/* Appends v in decimal. */
int buf_append_ll(buf *b, long long v);
/* Writes v in decimal at out, which has room for 20 characters (21 for buf_format_ll);
 * returns the end (no NUL). */
char *buf_format_ull(char *out, unsigned long long v);
char *buf_format_ll(char *out, long long v);
void buf_reset(buf *b);
void buf_free(buf *b);

#endif
