#include "atproto/json_read.h"

#include "atproto/buf.h"
#include "atproto/bytescan.h"
#include "atproto/syntax.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* As jansson: at most this many nested arrays and objects. */
#define MAX_DEPTH 2048
/* Longer numbers are rare; they go through a heap copy for strtod. */
#define NUMBER_STACK 64

typedef struct {
    const unsigned char *begin, *p, *end;
    buf scratch; /* decoded strings with escapes */
    /* json_read_span: the path, how much of it the objects being read match, and the span */
    const char *const *path;
    int matched;
    int capture_depth; /* the depth the captured value starts at; 0: not capturing */
    json_span *span;
} reader;

static json_t *read_value(reader *r, int depth);

static void skip_space(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) {
        if (*r->p != ' ' && r->capture_depth) r->span->raw_whitespace = 1;
        r->p++;
    }
}

static int hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i];
        if (c >= '0' && c <= '9')
            c -= '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            c = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | c;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the escape at *at (after the backslash) into out; returns the bytes written, or 0. */
static size_t read_escape(reader *r, const unsigned char **at, char *out)
{
    const unsigned char *p = *at;
    if (p >= r->end) return 0;
    static const char simple[][2] = {{'"', '"'},  {'\\', '\\'}, {'/', '/'},  {'b', '\b'},
                                     {'f', '\f'}, {'n', '\n'},  {'r', '\r'}, {'t', '\t'}};
    for (size_t i = 0; i < sizeof simple / sizeof *simple; i++) {
        if (*p == (unsigned char)simple[i][0]) {
            *out = simple[i][1];
            *at = p + 1;
            return 1;
        }
    }
    unsigned cp, low;
    if (*p != 'u' || r->end - p < 5 || hex4(p + 1, &cp) < 0) return 0;
    p += 5;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return 0; /* a low surrogate alone */
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (r->end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &low) < 0 ||
            low < 0xDC00 || low > 0xDFFF)
            return 0;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        p += 6;
    }
    if (cp == 0) return 0; /* jansson refuses \u0000 unless asked */
    *at = p;
    return put_utf8(out, cp);
}

/* The string at r->p (after its opening quote): its bytes in *s and *n (pointing into the
 * input when it has no escapes, else into r->scratch). 0, or -1. No NUL can come out: a raw
 * one is a control character, and \u0000 is refused. */
static int read_string(reader *r, const char **s, size_t *n)
{
    const unsigned char *start = r->p;
    const unsigned char *p = start + bytescan_plain_run(start, (size_t)(r->end - start), 1);
    if (p < r->end && *p == '"') {
        *s = (const char *)start;
        *n = (size_t)(p - start);
        r->p = p + 1;
        return 0;
    }
    /* Escapes or non-ASCII: decode into scratch (never longer than the input). */
    if (buf_reserve(&r->scratch, (size_t)(r->end - start) + 4) < 0) return -1;
    char *out = r->scratch.data;
    size_t len = (size_t)(p - start);
    memcpy(out, start, len);
    while (p < r->end && *p != '"') {
        if (*p < 0x20) return -1;
        if (*p == '\\') {
            p++;
            size_t k = read_escape(r, &p, out + len);
            if (!k) return -1;
            len += k;
        } else {
            size_t k = atp_utf8_sequence(p, (size_t)(r->end - p));
            if (!k) return -1;
            memcpy(out + len, p, k);
            len += k;
            p += k;
        }
    }
    if (p >= r->end) return -1;
    *s = out;
    *n = len;
    r->p = p + 1;
    return 0;
}

/* RFC 8259 numbers; an integer (no fraction, no exponent) must fit json_int_t. */
static json_t *read_number(reader *r)
{
    const unsigned char *start = r->p, *p = start;
    int integer = 1;
    if (p < r->end && *p == '-') p++;
    if (p >= r->end || *p < '0' || *p > '9') return NULL;
    if (*p == '0') {
        p++;
    } else {
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < r->end && *p == '.') {
        integer = 0;
        p++;
        if (p >= r->end || *p < '0' || *p > '9') return NULL;
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        integer = 0;
        p++;
        if (p < r->end && (*p == '+' || *p == '-')) p++;
        if (p >= r->end || *p < '0' || *p > '9') return NULL;
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    size_t n = (size_t)(p - start);
    size_t sign = *start == '-';
    if (integer && n - sign <= 18) {
        /* 18 digits cannot overflow a long long: summed here, with no copy for strtoll (most
         * numbers in records are sizes and times). */
        long long i = 0;
        for (const unsigned char *d = start + sign; d < p; d++)
            i = i * 10 + (*d - '0');
        r->p = p;
        return json_integer((json_int_t)(sign ? -i : i));
    }
    char stack[NUMBER_STACK], *text = n < sizeof stack ? stack : malloc(n + 1);
    if (!text) return NULL;
    memcpy(text, start, n);
    text[n] = 0;
    json_t *v = NULL;
    errno = 0;
    if (integer) {
        long long i = strtoll(text, NULL, 10);
        if (errno == 0) v = json_integer((json_int_t)i);
    } else {
        double d = strtod(text, NULL);
        if (errno == 0 || fabs(d) < 1) v = isinf(d) ? NULL : json_real(d); /* underflow is 0 */
    }
    if (text != stack) free(text);
    r->p = p;
    return v;
}

static json_t *read_literal(reader *r, const char *word, json_t *value)
{
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return NULL;
    r->p += n;
    return value;
}

/* After a member or an element: 1 when a comma announces another, 0 when close ends the
 * container (both consumed), -1 otherwise. */
static int after_item(reader *r, char close)
{
    skip_space(r);
    if (r->p < r->end && (*r->p == ',' || *r->p == (unsigned char)close)) return *r->p++ == ',';
    return -1;
}

/* The value of a member on the path: the next step, or the value to capture. */
static json_t *read_path_value(reader *r, int depth)
{
    r->matched++;
    json_t *v;
    if (r->path[r->matched]) {
        v = read_value(r, depth);
    } else {
        skip_space(r);
        const unsigned char *start = r->p;
        *r->span = (json_span){0};
        r->capture_depth = depth;
        v = read_value(r, depth);
        r->capture_depth = 0;
        r->span->start = (const char *)start;
        r->span->len = (size_t)(r->p - start);
    }
    r->matched--;
    return v;
}

static json_t *read_object(reader *r, int depth)
{
    json_t *obj = json_object();
    if (!obj) return NULL;
    skip_space(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return obj;
    }
    for (;;) {
        const char *key;
        size_t keylen;
        skip_space(r);
        if (r->p >= r->end || *r->p != '"') break;
        r->p++;
        if (read_string(r, &key, &keylen) < 0) break;
        /* The value may reuse the scratch buffer: the key must be kept apart. */
        char stack[128], *k = keylen < sizeof stack ? stack : malloc(keylen + 1);
        if (!k) break;
        memcpy(k, key, keylen);
        k[keylen] = 0;
        /* On the path (the name as written, not decoded from escapes)? */
        int step = r->path && r->matched == depth - 1 && r->path[r->matched] &&
                   (const unsigned char *)key >= r->begin && (const unsigned char *)key < r->end &&
                   strlen(r->path[r->matched]) == keylen && !memcmp(r->path[r->matched], k, keylen);
        skip_space(r);
        json_t *v = NULL;
        if (r->p < r->end && *r->p == ':') {
            r->p++;
            if (step)
                v = read_path_value(r, depth);
            else
                v = read_value(r, depth);
        }
        /* A duplicate name replaces the first value, and the object does not grow: refused
         * then, without a lookup before every member. */
        size_t members = json_object_size(obj);
        int ok = v && json_object_setn_new_nocheck(obj, k, keylen, v) == 0 &&
                 json_object_size(obj) > members;
        if (k != stack) free(k);
        if (!ok) break;
        int more = after_item(r, '}');
        if (more == 0) return obj;
        if (more < 0) break;
    }
    json_decref(obj);
    return NULL;
}

static json_t *read_array(reader *r, int depth)
{
    json_t *arr = json_array();
    if (!arr) return NULL;
    skip_space(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return arr;
    }
    for (;;) {
        json_t *v = read_value(r, depth);
        if (!v || json_array_append_new(arr, v) < 0) break;
        int more = after_item(r, ']');
        if (more == 0) return arr;
        if (more < 0) break;
    }
    json_decref(arr);
    return NULL;
}

static json_t *read_value(reader *r, int depth)
{
    skip_space(r);
    if (r->p >= r->end) return NULL;
    switch (*r->p) {
    case '{':
    case '[':
        if (depth >= MAX_DEPTH) return NULL;
        if (r->capture_depth && depth + 1 - r->capture_depth > r->span->depth)
            r->span->depth = depth + 1 - r->capture_depth;
        return *r->p++ == '{' ? read_object(r, depth + 1) : read_array(r, depth + 1);
    case '"': {
        const char *s;
        size_t n;
        r->p++;
        if (read_string(r, &s, &n) < 0) return NULL;
        return json_stringn_nocheck(s, n);
    }
    case 't':
        return read_literal(r, "true", json_true());
    case 'f':
        return read_literal(r, "false", json_false());
    case 'n':
        return read_literal(r, "null", json_null());
    default:
        return read_number(r);
    }
}

json_t *json_read_span(const char *data, size_t len, const char *const *path, json_span *span)
{
    reader r = {.begin = (const unsigned char *)data,
                .p = (const unsigned char *)data,
                .end = (const unsigned char *)data + len,
                .path = path,
                .span = span};
    if (span) *span = (json_span){0};
    skip_space(&r);
    json_t *v = NULL;
    if (r.p < r.end && (*r.p == '{' || *r.p == '[')) v = read_value(&r, 0);
    skip_space(&r);
    if (v && r.p != r.end) {
        json_decref(v);
        v = NULL;
    }
    buf_free(&r.scratch);
    if (!v && span) *span = (json_span){0};
    return v;
}

json_t *json_read(const char *data, size_t len)
{
    return json_read_span(data, len, NULL, NULL);
}
