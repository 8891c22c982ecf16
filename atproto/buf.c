#include "atproto/buf.h"

#include "atproto/bytescan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int buf_reserve(buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(buf *b, const void *data, size_t len)
{
    if (buf_reserve(b, len) < 0) return -1;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int buf_puts(buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) < 0) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

char *buf_dup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

int buf_url_encode(buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int unreserved = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                         (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' ||
                         *p == '~';
        char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
        if (unreserved ? buf_append(b, p, 1) : buf_append(b, e, 3)) return -1;
    }
    return 0;
}

int buf_json_string(buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (buf_reserve(b, len + 2) < 0 || buf_append(b, "\"", 1) < 0) return -1;
    for (size_t i = 0; i < len;) {
        size_t run = bytescan_plain_run((const unsigned char *)s + i, len - i, 0);
        if (run && buf_append(b, s + i, run) < 0) return -1;
        i += run;
        if (i == len) break;
        unsigned char c = (unsigned char)s[i++];
        char esc[6] = {'\\', (char)c};
        size_t n = 2;
        if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        if (buf_append(b, esc, n) < 0) return -1;
    }
    return buf_append(b, "\"", 1);
}

char *buf_format_ull(char *out, unsigned long long v)
{
    /* Counted first and written in place from the end: every RESP argument's length goes
     * through here, and a copy from a scratch array was a memcpy call for one or two digits. */
    size_t n = 1;
    for (unsigned long long x = v; x >= 10; x /= 10)
        n++;
    char *end = out + n, *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

char *buf_format_ll(char *out, long long v)
{
    if (v < 0) *out++ = '-';
    /* The magnitude as unsigned, so LLONG_MIN has one too. */
    return buf_format_ull(out, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v);
}

int buf_append_ll(buf *b, long long v)
{
    char t[24];
    return buf_append(b, t, (size_t)(buf_format_ll(t, v) - t));
}

void buf_reset(buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void buf_free(buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
