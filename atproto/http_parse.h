/* HTTP/1.1 requests as RFC 9112 frames them, decided from bytes alone (no socket, no clock),
 * so the rules are unit-tested and fuzzed in isolation and atproto/httpd only applies them.
 *
 * A request is read in three steps: http_head_find says where its head ends (or that it is
 * too long), http_parse_head reads that head into a method, a target, header fields and the
 * framing of its body, and http_chunked_feed decodes a chunked body. Every refusal carries the
 * status to answer, the XRPC error name, a message and a metric label; after any refusal the
 * connection must close, since where the next request starts is then unknown.
 *
 * The rules are strict where a lenient reading would let two parsers disagree on where a
 * request ends (request smuggling): Transfer-Encoding together with Content-Length, a coding
 * other than a final "chunked", differing Content-Length values, obs-fold lines, whitespace
 * before a colon, a bare CR, and control characters in a field value are all refused. */
#ifndef ATPROTO_HTTP_PARSE_H
#define ATPROTO_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atproto/buf.h"

#define HTTP_MAX_LINE 8192  /* the request line; longer: 414 */
#define HTTP_MAX_HEAD 16384 /* the whole head; longer: 431 */
#define HTTP_MAX_FIELDS 64  /* header fields; more: 431 */
#define HTTP_MAX_PARAMS 32  /* query parameters; more: 400 */
#define HTTP_MAX_METHOD 15

typedef struct {
    int status;          /* 400, 414, 431, 501, 505, ... */
    const char *error;   /* XRPC error name: "InvalidRequest", "MethodNotImplemented", ... */
    const char *message; /* one line for the client and the log */
    const char *reason;  /* metric label: "request_line", "te_and_cl", ... */
} http_refusal;

typedef struct {
    const char *name, *value; /* into the head; the value without surrounding whitespace */
    size_t name_len, value_len;
} http_field;

typedef enum { HTTP_BODY_NONE, HTTP_BODY_LENGTH, HTTP_BODY_CHUNKED } http_body_kind;

typedef struct {
    char method[HTTP_MAX_METHOD + 1];
    const char *target; /* origin-form ("/p?q"), the path of an absolute-form, or "*" */
    size_t target_len;
    int minor; /* HTTP/1.minor, 0 or 1 */
    http_field fields[HTTP_MAX_FIELDS];
    size_t nfields;
    http_body_kind body;
    uint64_t content_length; /* HTTP_BODY_LENGTH */
    bool keep_alive;         /* the connection may carry another request after this one */
    bool expect_continue;    /* "Expect: 100-continue" on HTTP/1.1 */
} http_head;

/* Where the head in data (len bytes, the start of a request, possibly with the empty lines
 * RFC 9112 2.2 lets a server skip) ends. *scanned carries the search over between calls as
 * bytes arrive (start it at 0; reset it for the next request), so a head sent byte by byte
 * costs linear time. 1 with *head_len (the empty lines, the head and its blank line), 0 when
 * more bytes are needed, -1 with why when the head or its first line is over its limit. */
int http_head_find(const char *data, size_t len, size_t *scanned, size_t *head_len,
                   http_refusal *why);

/* Reads the head found by http_head_find (len = *head_len). Strings in out point into head,
 * which must outlive them. 0, or -1 with why. */
int http_parse_head(const char *head, size_t len, http_head *out, http_refusal *why);

/* The first field named name (case-insensitive), or NULL. */
const http_field *http_head_field(const http_head *h, const char *name);

/* Percent-decodes s (len bytes) in place; with plus_is_space a '+' becomes a space (query
 * strings, as HTML forms encode them). The decoded length, or -1 on a malformed escape or one
 * that decodes to NUL. */
long http_percent_decode(char *s, size_t len, bool plus_is_space);

/* A chunked body's decoder (RFC 9112 7.1); zero it to start. */
typedef struct {
    int state;
    uint64_t left;     /* bytes left in the current chunk */
    size_t line_bytes; /* length of the size, extension or trailer line being read */
    size_t trailer_bytes;
    int size_digits;
} http_chunked;

enum {
    HTTP_CHUNKED_MORE = 0,
    HTTP_CHUNKED_DONE = 1,
    HTTP_CHUNKED_BAD = -1,
    HTTP_CHUNKED_BIG = -2,
    HTTP_CHUNKED_NOMEM = -3
};

/* Decodes in (len bytes) and appends the body's data to out, which may not grow past max
 * bytes. *used gets how many bytes of in belong to the body: the rest, after DONE, is the next
 * request. Returns HTTP_CHUNKED_DONE after the last chunk and trailers, MORE when in ran out,
 * BAD when it is not chunked encoding, BIG when the data would pass max, NOMEM when out could
 * not grow. After BAD, BIG or NOMEM the decoder is done with: the connection closes. */
int http_chunked_feed(http_chunked *c, const char *in, size_t len, size_t *used, buf *out,
                      size_t max);

#endif
