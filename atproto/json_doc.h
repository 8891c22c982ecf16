/* A JSON text read once into a flat array of values, for code that only looks at what it
 * holds: a firehose event, a record being checked against its lexicon. Building a jansson tree
 * for that (a hash table per object, an allocation per value, all freed again) was 40% of the
 * ingester's instructions; a doc is two growing arrays, reused from one text to the next.
 *
 * json_doc_read is the project's one parser of JSON from outside (json_read builds its jansson
 * values from a doc), with the rules json_read.h states. A value is named by a json_ref, its
 * index; ref 0 is the root. An object's members follow it in order, each a value with its name;
 * a member's lookup walks them (the objects of records hold a dozen at most). Keys and strings
 * are NUL-terminated copies (no NUL can be inside: \u0000 is refused). */
#ifndef ATPROTO_JSON_DOC_H
#define ATPROTO_JSON_DOC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef uint32_t json_ref;
#define JSON_DOC_NONE UINT32_MAX

typedef enum {
    JSON_DOC_OBJECT,
    JSON_DOC_ARRAY,
    JSON_DOC_STRING,
    JSON_DOC_INTEGER,
    JSON_DOC_REAL,
    JSON_DOC_TRUE,
    JSON_DOC_FALSE,
    JSON_DOC_NULL,
} json_doc_type;

typedef struct {
    uint8_t type;  /* a json_doc_type */
    uint32_t end;  /* the ref after this value and all it holds: its next sibling's */
    uint32_t name; /* a member's: its name's offset in text */
    uint32_t namelen;
    uint32_t len; /* a string's bytes, an array's elements, an object's members */
    union {
        uint32_t text; /* a string's offset in text */
        long long integer;
        double real;
    } as;
} json_doc_value;

/* Zero-initialise; json_doc_free frees. The arrays are kept from one read to the next (up to
 * 1 MiB each: a larger one, left by a huge message, is freed when the next read or copy
 * starts). */
typedef struct {
    json_doc_value *values;
    size_t nvalues, values_cap;
    char *text;
    size_t ntext, text_cap;
} json_doc;

/* Where a member's value sits in the input, as json_doc_read found it while parsing. */
typedef struct {
    const char *start; /* NULL: no such member (or a name on the way written with escapes) */
    size_t len;
    int depth;          /* how deep arrays and objects nest inside it (a scalar: 0) */
    int raw_whitespace; /* a tab, newline or carriage return appears between its tokens */
} json_span;

/* Reads the JSON object or array in data (len bytes) into d, replacing what d held. 0, or -1
 * when it is not valid JSON, not an object or an array, or memory ran out (d then holds no
 * value). With path (member names of nested objects from the top, NULL-terminated, matched as
 * written), span says where that member's value sits in data. */
int json_doc_read(json_doc *d, const char *data, size_t len, const char *const *path,
                  json_span *span);

/* d made from the jansson value v (an object or array), replacing what d held: for values that
 * came another way. Strings point into d, not v. 0, or -1 (out of memory). */
int json_doc_from_jansson(json_doc *d, const json_t *v);

/* A new jansson value equal to v (NULL when out of memory). */
json_t *json_doc_to_jansson(const json_doc *d, json_ref v);

void json_doc_free(json_doc *d);

/* Accessors. Each takes JSON_DOC_NONE (and answers "absent") so that lookups can chain. */
static inline int json_doc_is(const json_doc *d, json_ref v, json_doc_type t)
{
    return v != JSON_DOC_NONE && d->values[v].type == t;
}

/* The value of member name of object obj, or JSON_DOC_NONE. */
json_ref json_doc_get(const json_doc *d, json_ref obj, const char *name);

/* The same for a name of len bytes. */
json_ref json_doc_getn(const json_doc *d, json_ref obj, const char *name, size_t len);

/* A string's bytes (NUL-terminated) and length in *len (may be NULL); NULL if not a string. */
static inline const char *json_doc_string(const json_doc *d, json_ref v, size_t *len)
{
    if (!json_doc_is(d, v, JSON_DOC_STRING)) return NULL;
    if (len) *len = d->values[v].len;
    return d->text + d->values[v].as.text;
}

/* An integer's value; 0 for anything else (a real too: check the type where that matters). */
static inline long long json_doc_integer(const json_doc *d, json_ref v)
{
    return json_doc_is(d, v, JSON_DOC_INTEGER) ? d->values[v].as.integer : 0;
}

/* A real's value; 0 for anything else. */
static inline double json_doc_real(const json_doc *d, json_ref v)
{
    return json_doc_is(d, v, JSON_DOC_REAL) ? d->values[v].as.real : 0;
}

/* An array's elements or an object's members; 0 for anything else. */
static inline size_t json_doc_size(const json_doc *d, json_ref v)
{
    return json_doc_is(d, v, JSON_DOC_ARRAY) || json_doc_is(d, v, JSON_DOC_OBJECT)
               ? d->values[v].len
               : 0;
}

/* The first element or member of a non-empty array or object, and the one after member m:
 * iterate json_doc_size times. */
static inline json_ref json_doc_first(json_ref v)
{
    return v + 1;
}
static inline json_ref json_doc_after(const json_doc *d, json_ref m)
{
    return d->values[m].end;
}

/* A member's name (NUL-terminated), with its length in *len. */
static inline const char *json_doc_name(const json_doc *d, json_ref m, size_t *len)
{
    *len = d->values[m].namelen;
    return d->text + d->values[m].name;
}

#endif
