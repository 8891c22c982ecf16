#include "atproto/http_parse.h"

#include <string.h>
#include <strings.h>

static int refuse(http_refusal *why, int status, const char *error, const char *message,
                  const char *reason)
{
    why->status = status;
    why->error = error;
    why->message = message;
    why->reason = reason;
    return -1;
}

#define BAD(why, msg, reason) refuse(why, 400, "InvalidRequest", msg, reason)

/* RFC 9110 5.6.2 tchar */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* field-vchar, SP and HTAB (RFC 9110 5.5); obs-text is allowed, controls are not */
static bool is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* ---- finding the head ---- */

static size_t skip_empty_lines(const char *data, size_t len)
{
    size_t i = 0;
    while (i < len && (data[i] == '\r' || data[i] == '\n'))
        i++;
    return i;
}

int http_head_find(const char *data, size_t len, size_t *scanned, size_t *head_len,
                   http_refusal *why)
{
    size_t start = skip_empty_lines(data, len);
    if (start == len) {
        if (len > HTTP_MAX_HEAD)
            return refuse(why, 431, "InvalidRequest", "request head too large", "header_too_large");
        return 0;
    }
    /* A blank line ends the head: "\n\n" or "\n\r\n". Resume two bytes before where the last
     * search stopped, since a terminator may straddle the boundary. */
    size_t i = *scanned > start + 2 ? *scanned - 2 : start;
    for (; i < len; i++) {
        if (data[i] != '\n') continue;
        if (i + 1 < len && data[i + 1] == '\n') {
            *head_len = i + 2;
            break;
        }
        if (i + 2 < len && data[i + 1] == '\r' && data[i + 2] == '\n') {
            *head_len = i + 3;
            break;
        }
    }
    *scanned = i;
    const char *eol = memchr(data + start, '\n', (i < len ? i + 1 : len) - start);
    if ((eol ? (size_t)(eol - data) : len) - start > HTTP_MAX_LINE)
        return refuse(why, 414, "InvalidRequest", "request line too long", "uri_too_long");
    if (i < len ? *head_len > HTTP_MAX_HEAD : len > HTTP_MAX_HEAD)
        return refuse(why, 431, "InvalidRequest", "request head too large", "header_too_large");
    return i < len;
}

/* ---- reading the head ---- */

/* The next line of [*p, end): its bytes without the line ending. -1 on a bare CR. */
static int next_line(const char **p, const char *end, const char **line, size_t *n)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (!nl) nl = end;
    size_t len = (size_t)(nl - *p);
    if (len && (*p)[len - 1] == '\r') len--;
    if (memchr(*p, '\r', len)) return -1;
    *line = *p;
    *n = len;
    *p = nl < end ? nl + 1 : end;
    return 0;
}

static bool ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && !strncasecmp(s, lit, n);
}

/* Known methods; any other token is answered 501, CONNECT 400 (nothing here tunnels). */
static int check_method(const char *m, size_t n, http_refusal *why)
{
    static const char *const known[] = {"GET",    "HEAD",    "POST",  "PUT",
                                        "DELETE", "OPTIONS", "PATCH", "TRACE"};
    if (n == 7 && !memcmp(m, "CONNECT", 7)) return BAD(why, "CONNECT is not supported", "connect");
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i]) == n && !memcmp(m, known[i], n)) return 0;
    return refuse(why, 501, "MethodNotImplemented", "unknown method", "method");
}

static int parse_request_line(const char *line, size_t n, http_head *out, http_refusal *why)
{
    const char *end = line + n, *sp1 = memchr(line, ' ', n);
    if (!sp1 || sp1 == line) return BAD(why, "malformed request line", "request_line");
    for (const char *p = line; p < sp1; p++)
        if (!is_tchar((unsigned char)*p)) return BAD(why, "malformed method", "request_line");
    size_t mlen = (size_t)(sp1 - line);
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(end - target));
    if (!sp2) return BAD(why, "HTTP/0.9 is not supported", "version");
    const char *version = sp2 + 1;
    size_t vlen = (size_t)(end - version);
    if (vlen != 8 || memcmp(version, "HTTP/", 5) || version[5] < '0' || version[5] > '9' ||
        version[6] != '.' || version[7] < '0' || version[7] > '9')
        return BAD(why, "malformed HTTP version", "version");
    if (version[5] != '1' || version[7] > '1')
        return refuse(why, 505, "InvalidRequest", "only HTTP/1.0 and HTTP/1.1 are supported",
                      "version");
    out->minor = version[7] - '0';
    if (mlen > HTTP_MAX_METHOD)
        return refuse(why, 501, "MethodNotImplemented", "unknown method", "method");
    if (check_method(line, mlen, why) < 0) return -1;
    memcpy(out->method, line, mlen);
    out->method[mlen] = '\0';

    size_t tlen = (size_t)(sp2 - target);
    if (!tlen) return BAD(why, "malformed request line", "request_line");
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c <= 0x20 || c >= 0x7f) return BAD(why, "malformed request target", "target");
    }
    /* absolute-form (RFC 9112 3.2.2): a server must accept it; the path is what routes */
    if (tlen > 7 && (!strncasecmp(target, "http://", 7) || !strncasecmp(target, "https://", 8))) {
        const char *auth = (const char *)memchr(target, '/', tlen) + 2;
        const char *path = memchr(auth, '/', (size_t)(target + tlen - auth));
        const char *query = memchr(auth, '?', (size_t)(target + tlen - auth));
        if (!path || (query && query < path))
            return BAD(why, "absolute-form target without a path", "target");
        tlen -= (size_t)(path - target);
        target = path;
    } else if (tlen == 1 && target[0] == '*') {
        if (strcmp(out->method, "OPTIONS"))
            return BAD(why, "asterisk-form is only for OPTIONS", "target");
    } else if (target[0] != '/') {
        return BAD(why, "malformed request target", "target");
    }
    out->target = target;
    out->target_len = tlen;
    return 0;
}

static int parse_field(const char *line, size_t n, http_head *out, http_refusal *why)
{
    if (is_ows((unsigned char)line[0]))
        return BAD(why, "obsolete line folding in the header", "header");
    const char *colon = memchr(line, ':', n);
    if (!colon || colon == line) return BAD(why, "malformed header line", "header");
    for (const char *p = line; p < colon; p++)
        if (!is_tchar((unsigned char)*p)) return BAD(why, "malformed header name", "header");
    const char *v = colon + 1, *end = line + n;
    while (v < end && is_ows((unsigned char)*v))
        v++;
    while (end > v && is_ows((unsigned char)end[-1]))
        end--;
    for (const char *p = v; p < end; p++)
        if (!is_value_char((unsigned char)*p))
            return BAD(why, "control character in a header value", "header");
    if (out->nfields == HTTP_MAX_FIELDS)
        return refuse(why, 431, "InvalidRequest", "too many header fields", "header_too_large");
    http_field *f = &out->fields[out->nfields++];
    f->name = line;
    f->name_len = (size_t)(colon - line);
    f->value = v;
    f->value_len = (size_t)(end - v);
    return 0;
}

/* Calls fn on each element of a comma-separated list value (RFC 9110 5.6.1), trimmed; empty
 * elements are skipped. Stops at the first non-zero return. */
static int each_element(const char *v, size_t n, int (*fn)(const char *, size_t, void *), void *ud)
{
    const char *end = v + n;
    while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        const char *e = comma ? comma : end, *s = v;
        while (s < e && is_ows((unsigned char)*s))
            s++;
        const char *t = e;
        while (t > s && is_ows((unsigned char)t[-1]))
            t--;
        if (t > s) {
            int rc = fn(s, (size_t)(t - s), ud);
            if (rc) return rc;
        }
        v = comma ? comma + 1 : end;
    }
    return 0;
}

typedef struct {
    int codings;     /* how many transfer codings are listed */
    int chunked_pos; /* 1-based position of the last "chunked", 0: none */
    int chunked_n;
} te_state;

static int te_element(const char *s, size_t n, void *ud)
{
    te_state *t = ud;
    t->codings++;
    if (ieq(s, n, "chunked")) {
        t->chunked_pos = t->codings;
        t->chunked_n++;
    }
    return 0;
}

static int connection_element(const char *s, size_t n, void *ud)
{
    int *flags = ud;
    if (ieq(s, n, "close")) *flags |= 1;
    if (ieq(s, n, "keep-alive")) *flags |= 2;
    return 0;
}

/* Content-Length: 1*DIGIT, at most 18 of them (no overflow), the same in every field. */
static int parse_length(const http_field *f, http_head *out, bool seen, http_refusal *why)
{
    if (!f->value_len || f->value_len > 18)
        return BAD(why, "malformed Content-Length", "content_length");
    uint64_t v = 0;
    for (size_t i = 0; i < f->value_len; i++) {
        char c = f->value[i];
        if (c < '0' || c > '9') return BAD(why, "malformed Content-Length", "content_length");
        v = v * 10 + (uint64_t)(c - '0');
    }
    if (seen && v != out->content_length)
        return BAD(why, "conflicting Content-Length fields", "content_length");
    out->content_length = v;
    return 0;
}

static int parse_framing(http_head *out, http_refusal *why)
{
    bool has_length = false, has_te = false;
    int hosts = 0, auths = 0, conn = 0;
    te_state te = {0};
    for (size_t i = 0; i < out->nfields; i++) {
        const http_field *f = &out->fields[i];
        if (ieq(f->name, f->name_len, "content-length")) {
            if (parse_length(f, out, has_length, why) < 0) return -1;
            has_length = true;
        } else if (ieq(f->name, f->name_len, "transfer-encoding")) {
            has_te = true;
            each_element(f->value, f->value_len, te_element, &te);
        } else if (ieq(f->name, f->name_len, "connection")) {
            each_element(f->value, f->value_len, connection_element, &conn);
        } else if (ieq(f->name, f->name_len, "host")) {
            hosts++;
        } else if (ieq(f->name, f->name_len, "authorization")) {
            auths++;
        } else if (ieq(f->name, f->name_len, "expect")) {
            if (!ieq(f->value, f->value_len, "100-continue"))
                return refuse(why, 417, "InvalidRequest", "unsupported expectation", "expect");
            out->expect_continue = out->minor == 1;
        }
    }
    if (out->minor == 1 && hosts != 1)
        return BAD(why, "an HTTP/1.1 request needs exactly one Host", "host");
    if (hosts > 1) return BAD(why, "more than one Host", "host");
    if (auths > 1) return BAD(why, "more than one Authorization", "header");
    /* RFC 9112 6.1: with both, Transfer-Encoding would win; a proxy in front may have
     * believed the length, so the request is refused rather than guessed at. */
    if (has_te && has_length)
        return BAD(why, "both Transfer-Encoding and Content-Length", "te_and_cl");
    if (has_te) {
        if (out->minor == 0) return BAD(why, "Transfer-Encoding in HTTP/1.0", "transfer_encoding");
        if (te.chunked_pos != te.codings || te.chunked_n != 1)
            return BAD(why, "the last transfer coding must be chunked, once", "transfer_encoding");
        if (te.codings > 1)
            return refuse(why, 501, "InvalidRequest", "only the chunked transfer coding",
                          "transfer_encoding");
        out->body = HTTP_BODY_CHUNKED;
    } else if (has_length) {
        out->body = out->content_length ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
    } else {
        out->body = HTTP_BODY_NONE; /* RFC 9112 6.3: no framing means no body */
    }
    out->keep_alive = !(conn & 1) && (out->minor == 1 || (conn & 2));
    return 0;
}

int http_parse_head(const char *head, size_t len, http_head *out, http_refusal *why)
{
    memset(out, 0, sizeof *out);
    const char *p = head + skip_empty_lines(head, len), *end = head + len, *line;
    size_t n;
    if (next_line(&p, end, &line, &n) < 0) return BAD(why, "bare CR in the request", "header");
    if (parse_request_line(line, n, out, why) < 0) return -1;
    for (;;) {
        if (next_line(&p, end, &line, &n) < 0) return BAD(why, "bare CR in the request", "header");
        if (!n) break;
        if (parse_field(line, n, out, why) < 0) return -1;
    }
    return parse_framing(out, why);
}

const http_field *http_head_field(const http_head *h, const char *name)
{
    for (size_t i = 0; i < h->nfields; i++)
        if (ieq(h->fields[i].name, h->fields[i].name_len, name)) return &h->fields[i];
    return NULL;
}

/* ---- percent-encoding ---- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long http_percent_decode(char *s, size_t len, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (len - i < 3) return -1;
            int a = hexval((unsigned char)s[i + 1]), b = hexval((unsigned char)s[i + 2]);
            if (a < 0 || b < 0 || (a | b) == 0) return -1;
            c = (char)(a * 16 + b);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        s[o++] = c;
    }
    return (long)o;
}

/* ---- chunked bodies ---- */

enum {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LF,
    CH_DONE
};

/* A size line (digits and extension) or a trailer line may not exceed these. */
#define CHUNK_LINE_MAX 4096

int http_chunked_feed(http_chunked *c, const char *in, size_t len, size_t *used, buf *out,
                      size_t max)
{
    size_t i = 0;
    int rc = HTTP_CHUNKED_MORE;
    while (i < len && c->state != CH_DONE) {
        unsigned char ch = (unsigned char)in[i];
        switch (c->state) {
        case CH_SIZE: {
            int d = hexval(ch);
            if (d >= 0) {
                if (++c->size_digits > 15) return HTTP_CHUNKED_BAD;
                c->left = c->left * 16 + (uint64_t)d;
            } else if (c->size_digits && (ch == ';' || is_ows(ch))) {
                c->state = CH_EXT;
            } else if (c->size_digits && ch == '\r') {
                c->state = CH_SIZE_LF;
            } else if (c->size_digits && ch == '\n') {
                c->state = c->left ? CH_DATA : CH_TRAILER;
                c->line_bytes = 0;
            } else {
                return HTTP_CHUNKED_BAD;
            }
            i++;
            break;
        }
        case CH_EXT:
            /* extensions are skipped, but they are still bytes of a line: no controls */
            if (ch == '\r')
                c->state = CH_SIZE_LF;
            else if (ch == '\n')
                c->state = c->left ? CH_DATA : CH_TRAILER;
            else if (!is_value_char(ch) || ++c->line_bytes > CHUNK_LINE_MAX)
                return HTTP_CHUNKED_BAD;
            if (c->state != CH_EXT) c->line_bytes = 0;
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n') return HTTP_CHUNKED_BAD;
            c->state = c->left ? CH_DATA : CH_TRAILER;
            c->line_bytes = 0;
            i++;
            break;
        case CH_DATA: {
            size_t n = len - i;
            if (n > c->left) n = (size_t)c->left;
            if (out->len + n > max) return HTTP_CHUNKED_BIG;
            if (buf_append(out, in + i, n) < 0) return HTTP_CHUNKED_NOMEM;
            c->left -= n;
            i += n;
            if (!c->left) c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch == '\r')
                c->state = CH_DATA_LF;
            else if (ch == '\n')
                c->state = CH_SIZE;
            else
                return HTTP_CHUNKED_BAD;
            if (c->state == CH_SIZE) c->size_digits = 0;
            i++;
            break;
        case CH_DATA_LF:
            if (ch != '\n') return HTTP_CHUNKED_BAD;
            c->state = CH_SIZE;
            c->size_digits = 0;
            i++;
            break;
        case CH_TRAILER:
        case CH_TRAILER_LF:
            /* trailer fields are read past, not kept; an empty line ends the body */
            if (ch == '\n') {
                c->state = c->line_bytes ? CH_TRAILER : CH_DONE;
                c->line_bytes = 0;
            } else if (c->state == CH_TRAILER && ch == '\r') {
                c->state = CH_TRAILER_LF;
            } else if (c->state == CH_TRAILER_LF || !is_value_char(ch) ||
                       ++c->line_bytes > CHUNK_LINE_MAX || ++c->trailer_bytes > HTTP_MAX_HEAD) {
                return HTTP_CHUNKED_BAD;
            }
            i++;
            break;
        }
    }
    if (c->state == CH_DONE) rc = HTTP_CHUNKED_DONE;
    *used = i;
    return rc;
}
