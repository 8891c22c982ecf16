#include "atproto/json_doc.h"

#include "atproto/buf.h"
#include "atproto/bytescan.h"
#include "atproto/syntax.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* As jansson: at most this many nested arrays and objects. */
#define MAX_DEPTH 2048
/* Longer numbers are rare; they go through a heap copy for strtod. */
#define NUMBER_STACK 64
/* Offsets are 32 bits: a longer text is refused (the largest a peer may send is far less). */
#define MAX_TEXT (UINT32_MAX / 2)
/* Objects with more members than this have their names checked for duplicates through a hash
 * table, fewer by comparing each pair. */
#define PAIRWISE_MAX 16
/* A doc keeps its arrays from one read to the next, up to this size each: one huge message
 * must not pin its memory for good. */
#define KEEP_BYTES (1u << 20)

typedef struct {
    json_doc *d;
    const unsigned char *begin, *p, *end;
    buf scratch; /* decoded strings with escapes */
    /* the path, how much of it the objects being read match, and the span */
    const char *const *path;
    int matched;
    int capture_depth; /* the depth the captured value starts at; 0: not capturing */
    json_span *span;
} reader;

static int read_value(reader *r, int depth);

static void skip_space(reader *r)
{
    if (r->p == r->end || *r->p > ' ') return; /* most tokens follow each other directly */
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

/* A copy of s (n bytes) and a NUL in d's text: its offset, or -1. */
static long long put_text(json_doc *d, const char *s, size_t n)
{
    if (d->ntext + n + 1 > d->text_cap) {
        size_t cap = d->text_cap ? d->text_cap : 1024;
        while (cap < d->ntext + n + 1)
            cap *= 2;
        if (cap > MAX_TEXT) return -1;
        char *t = realloc(d->text, cap);
        if (!t) return -1;
        d->text = t;
        d->text_cap = cap;
    }
    size_t at = d->ntext;
    memcpy(d->text + at, s, n);
    d->text[at + n] = 0;
    d->ntext += n + 1;
    return (long long)at;
}

/* A new value of type t with no name: its ref, or JSON_DOC_NONE. Refs taken before stay
 * valid; pointers into values do not. */
static json_ref new_value(json_doc *d, json_doc_type t)
{
    if (d->nvalues == d->values_cap) {
        size_t cap = d->values_cap ? d->values_cap * 2 : 64;
        if (cap > MAX_TEXT) return JSON_DOC_NONE;
        json_doc_value *v = realloc(d->values, cap * sizeof *v);
        if (!v) return JSON_DOC_NONE;
        d->values = v;
        d->values_cap = cap;
    }
    json_ref ref = (json_ref)d->nvalues++;
    d->values[ref] = (json_doc_value){.type = (uint8_t)t, .end = ref + 1};
    return ref;
}

static json_ref new_string(json_doc *d, const char *s, size_t n)
{
    long long at = put_text(d, s, n);
    json_ref v = at < 0 ? JSON_DOC_NONE : new_value(d, JSON_DOC_STRING);
    if (v != JSON_DOC_NONE) {
        d->values[v].len = (uint32_t)n;
        d->values[v].as.text = (uint32_t)at;
    }
    return v;
}

/* RFC 8259 numbers; an integer (no fraction, no exponent) must fit a long long, a real must
 * be finite (an underflow is 0), as jansson has them. */
static int read_number(reader *r)
{
    const unsigned char *start = r->p, *p = start;
    int integer = 1;
    if (p < r->end && *p == '-') p++;
    if (p >= r->end || *p < '0' || *p > '9') return -1;
    if (*p == '0') {
        p++;
    } else {
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < r->end && *p == '.') {
        integer = 0;
        p++;
        if (p >= r->end || *p < '0' || *p > '9') return -1;
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        integer = 0;
        p++;
        if (p < r->end && (*p == '+' || *p == '-')) p++;
        if (p >= r->end || *p < '0' || *p > '9') return -1;
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    size_t n = (size_t)(p - start);
    size_t sign = *start == '-';
    json_ref v;
    if (integer && n - sign <= 18) {
        /* 18 digits cannot overflow a long long: summed here, with no copy for strtoll (most
         * numbers in records are sizes and times). */
        long long i = 0;
        for (const unsigned char *digit = start + sign; digit < p; digit++)
            i = i * 10 + (*digit - '0');
        if ((v = new_value(r->d, JSON_DOC_INTEGER)) == JSON_DOC_NONE) return -1;
        r->d->values[v].as.integer = sign ? -i : i;
        r->p = p;
        return 0;
    }
    char stack[NUMBER_STACK], *text = n < sizeof stack ? stack : malloc(n + 1);
    if (!text) return -1;
    memcpy(text, start, n);
    text[n] = 0;
    int rc = -1;
    errno = 0;
    if (integer) {
        long long i = strtoll(text, NULL, 10);
        if (errno == 0 && (v = new_value(r->d, JSON_DOC_INTEGER)) != JSON_DOC_NONE) {
            r->d->values[v].as.integer = i;
            rc = 0;
        }
    } else {
        double x = strtod(text, NULL);
        if ((errno == 0 || fabs(x) < 1) && !isinf(x) &&
            (v = new_value(r->d, JSON_DOC_REAL)) != JSON_DOC_NONE) {
            r->d->values[v].as.real = x;
            rc = 0;
        }
    }
    if (text != stack) free(text);
    r->p = p;
    return rc;
}

static int read_literal(reader *r, const char *word, json_doc_type t)
{
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return -1;
    r->p += n;
    return new_value(r->d, t) == JSON_DOC_NONE ? -1 : 0;
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
static int read_path_value(reader *r, int depth)
{
    r->matched++;
    int rc;
    if (r->path[r->matched]) {
        rc = read_value(r, depth);
    } else {
        skip_space(r);
        const unsigned char *start = r->p;
        *r->span = (json_span){0};
        r->capture_depth = depth;
        rc = read_value(r, depth);
        r->capture_depth = 0;
        r->span->start = (const char *)start;
        r->span->len = (size_t)(r->p - start);
    }
    r->matched--;
    return rc;
}

static int name_cmp(const json_doc *d, json_ref a, json_ref b)
{
    const json_doc_value *x = &d->values[a], *y = &d->values[b];
    if (x->namelen != y->namelen) return x->namelen < y->namelen ? -1 : 1;
    return memcmp(d->text + x->name, d->text + y->name, x->namelen);
}

/* Whether two members of object obj have one name (jansson's JSON_REJECT_DUPLICATES): each
 * pair compared when there are few, else through a hash table of the names. */
static int has_duplicate(const json_doc *d, json_ref obj)
{
    size_t n = d->values[obj].len;
    if (n < 2) return 0;
    json_ref m = json_doc_first(obj);
    if (n <= PAIRWISE_MAX) {
        for (size_t i = 0; i < n; i++, m = d->values[m].end)
            for (json_ref o = d->values[m].end, j = (json_ref)i + 1; j < n;
                 j++, o = d->values[o].end)
                if (!name_cmp(d, m, o)) return 1;
        return 0;
    }
    size_t cap = 32;
    while (cap < 2 * n)
        cap *= 2;
    json_ref *slots = malloc(cap * sizeof *slots);
    if (!slots) return 1;
    for (size_t i = 0; i < cap; i++)
        slots[i] = JSON_DOC_NONE;
    int dup = 0;
    for (size_t i = 0; i < n && !dup; i++, m = d->values[m].end) {
        const unsigned char *name = (const unsigned char *)d->text + d->values[m].name;
        uint64_t h = 1469598103934665603ull; /* FNV-1a */
        for (uint32_t k = 0; k < d->values[m].namelen; k++)
            h = (h ^ name[k]) * 1099511628211ull;
        size_t at = (size_t)h & (cap - 1);
        while (slots[at] != JSON_DOC_NONE && !(dup = !name_cmp(d, slots[at], m)))
            at = (at + 1) & (cap - 1);
        slots[at] = m;
    }
    free(slots);
    return dup;
}

/* Member is obj's next one, named by the len bytes at text offset name. */
static void add_member(json_doc *d, json_ref obj, json_ref member, long long name, size_t len)
{
    d->values[member].name = (uint32_t)name;
    d->values[member].namelen = (uint32_t)len;
    d->values[obj].len++;
}

static int read_object(reader *r, int depth)
{
    json_doc *d = r->d;
    json_ref obj = new_value(d, JSON_DOC_OBJECT);
    if (obj == JSON_DOC_NONE) return -1;
    skip_space(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return 0;
    }
    for (;;) {
        const char *key;
        size_t keylen;
        skip_space(r);
        if (r->p >= r->end || *r->p != '"') return -1;
        r->p++;
        if (read_string(r, &key, &keylen) < 0) return -1;
        /* On the path (the name as written, not decoded from escapes)? */
        int step = r->path && r->matched == depth - 1 && r->path[r->matched] &&
                   (const unsigned char *)key >= r->begin && (const unsigned char *)key < r->end &&
                   strlen(r->path[r->matched]) == keylen &&
                   !memcmp(r->path[r->matched], key, keylen);
        /* The value may reuse the scratch buffer: the name is copied first. */
        long long name = put_text(d, key, keylen);
        if (name < 0) return -1;
        skip_space(r);
        if (r->p >= r->end || *r->p != ':') return -1;
        r->p++;
        json_ref member = (json_ref)d->nvalues;
        if ((step ? read_path_value(r, depth) : read_value(r, depth)) < 0) return -1;
        add_member(d, obj, member, name, keylen);
        int more = after_item(r, '}');
        if (more < 0) return -1;
        if (more == 0) break;
    }
    d->values[obj].end = (uint32_t)d->nvalues;
    return has_duplicate(d, obj) ? -1 : 0;
}

static int read_array(reader *r, int depth)
{
    json_doc *d = r->d;
    json_ref arr = new_value(d, JSON_DOC_ARRAY);
    if (arr == JSON_DOC_NONE) return -1;
    skip_space(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return 0;
    }
    for (;;) {
        if (read_value(r, depth) < 0) return -1;
        d->values[arr].len++;
        int more = after_item(r, ']');
        if (more < 0) return -1;
        if (more == 0) break;
    }
    d->values[arr].end = (uint32_t)d->nvalues;
    return 0;
}

static int read_value(reader *r, int depth)
{
    skip_space(r);
    if (r->p >= r->end) return -1;
    switch (*r->p) {
    case '{':
    case '[':
        if (depth >= MAX_DEPTH) return -1;
        if (r->capture_depth && depth + 1 - r->capture_depth > r->span->depth)
            r->span->depth = depth + 1 - r->capture_depth;
        return *r->p++ == '{' ? read_object(r, depth + 1) : read_array(r, depth + 1);
    case '"': {
        const char *s;
        size_t n;
        r->p++;
        if (read_string(r, &s, &n) < 0) return -1;
        return new_string(r->d, s, n) == JSON_DOC_NONE ? -1 : 0;
    }
    case 't':
        return read_literal(r, "true", JSON_DOC_TRUE);
    case 'f':
        return read_literal(r, "false", JSON_DOC_FALSE);
    case 'n':
        return read_literal(r, "null", JSON_DOC_NULL);
    default:
        return read_number(r);
    }
}

/* Empties d for its next contents, keeping its arrays up to KEEP_BYTES each. */
static void restart(json_doc *d)
{
    if (d->values_cap * sizeof *d->values > KEEP_BYTES || d->text_cap > KEEP_BYTES)
        json_doc_free(d);
    d->nvalues = d->ntext = 0;
}

int json_doc_read(json_doc *d, const char *data, size_t len, const char *const *path,
                  json_span *span)
{
    reader r = {.d = d,
                .begin = (const unsigned char *)data,
                .p = (const unsigned char *)data,
                .end = (const unsigned char *)data + len,
                .path = path,
                .span = span};
    restart(d);
    if (span) *span = (json_span){0};
    int rc = -1;
    if (len <= MAX_TEXT) {
        skip_space(&r);
        if (r.p < r.end && (*r.p == '{' || *r.p == '[')) rc = read_value(&r, 0);
        skip_space(&r);
    }
    if (rc == 0 && r.p != r.end) rc = -1;
    buf_free(&r.scratch);
    if (rc < 0) {
        restart(d);
        if (span) *span = (json_span){0};
    }
    return rc;
}

json_ref json_doc_getn(const json_doc *d, json_ref obj, const char *name, size_t len)
{
    if (!json_doc_is(d, obj, JSON_DOC_OBJECT)) return JSON_DOC_NONE;
    json_ref m = json_doc_first(obj);
    for (size_t i = 0, n = d->values[obj].len; i < n; i++, m = d->values[m].end)
        if (d->values[m].namelen == len && !memcmp(d->text + d->values[m].name, name, len))
            return m;
    return JSON_DOC_NONE;
}

json_ref json_doc_get(const json_doc *d, json_ref obj, const char *name)
{
    return json_doc_getn(d, obj, name, strlen(name));
}

/* ---- jansson values, both ways ---- */

static json_ref copy_in(json_doc *d, const json_t *v, int depth)
{
    if (depth > MAX_DEPTH) return JSON_DOC_NONE;
    json_ref ref;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if ((ref = new_value(d, JSON_DOC_OBJECT)) == JSON_DOC_NONE) return ref;
        const char *key;
        const json_t *m;
        json_object_foreach((json_t *)v, key, m)
        {
            size_t keylen = strlen(key);
            long long name = put_text(d, key, keylen);
            json_ref member = (json_ref)d->nvalues;
            if (name < 0 || copy_in(d, m, depth + 1) == JSON_DOC_NONE) return JSON_DOC_NONE;
            add_member(d, ref, member, name, keylen);
        }
        break;
    }
    case JSON_ARRAY:
        if ((ref = new_value(d, JSON_DOC_ARRAY)) == JSON_DOC_NONE) return ref;
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (copy_in(d, json_array_get(v, i), depth + 1) == JSON_DOC_NONE) return JSON_DOC_NONE;
            d->values[ref].len++;
        }
        break;
    case JSON_STRING:
        return new_string(d, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        if ((ref = new_value(d, JSON_DOC_INTEGER)) != JSON_DOC_NONE)
            d->values[ref].as.integer = json_integer_value(v);
        return ref;
    case JSON_REAL:
        if ((ref = new_value(d, JSON_DOC_REAL)) != JSON_DOC_NONE)
            d->values[ref].as.real = json_real_value(v);
        return ref;
    case JSON_TRUE:
        return new_value(d, JSON_DOC_TRUE);
    case JSON_FALSE:
        return new_value(d, JSON_DOC_FALSE);
    default:
        return new_value(d, JSON_DOC_NULL);
    }
    d->values[ref].end = (uint32_t)d->nvalues;
    return ref;
}

int json_doc_from_jansson(json_doc *d, const json_t *v)
{
    restart(d);
    if (!json_is_object(v) && !json_is_array(v)) return -1;
    if (copy_in(d, v, 0) == JSON_DOC_NONE) {
        restart(d);
        return -1;
    }
    return 0;
}

json_t *json_doc_to_jansson(const json_doc *d, json_ref v)
{
    if (v == JSON_DOC_NONE) return NULL;
    const json_doc_value *val = &d->values[v];
    json_t *out = NULL;
    switch ((json_doc_type)val->type) {
    case JSON_DOC_OBJECT: {
        if (!(out = json_object())) return NULL;
        json_ref m = json_doc_first(v);
        for (size_t i = 0; i < val->len; i++, m = d->values[m].end) {
            json_t *member = json_doc_to_jansson(d, m);
            /* names are unique: json_doc_read refuses duplicates */
            if (!member || json_object_setn_new_nocheck(out, d->text + d->values[m].name,
                                                        d->values[m].namelen, member) < 0) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    case JSON_DOC_ARRAY: {
        if (!(out = json_array())) return NULL;
        json_ref m = json_doc_first(v);
        for (size_t i = 0; i < val->len; i++, m = d->values[m].end) {
            if (json_array_append_new(out, json_doc_to_jansson(d, m)) < 0) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    case JSON_DOC_STRING:
        return json_stringn_nocheck(d->text + val->as.text, val->len);
    case JSON_DOC_INTEGER:
        return json_integer((json_int_t)val->as.integer);
    case JSON_DOC_REAL:
        return json_real(val->as.real);
    case JSON_DOC_TRUE:
        return json_true();
    case JSON_DOC_FALSE:
        return json_false();
    case JSON_DOC_NULL:
        return json_null();
    }
    return NULL;
}

void json_doc_free(json_doc *d)
{
    free(d->values);
    free(d->text);
    *d = (json_doc){0};
}
