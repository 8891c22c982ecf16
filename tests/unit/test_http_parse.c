/* atproto/http_parse: where heads end, what they say, how bodies are framed (RFC 9112), and
 * the refusals that keep two parsers from disagreeing about where a request ends. */
#include <stdlib.h>
#include <string.h>

#include "atproto/http_parse.h"
#include "check.h"

/* Parses a whole head; the refusal's status, or 0 when accepted. */
static int status_of(const char *req, http_head *h)
{
    size_t scanned = 0, len = 0;
    http_refusal why = {0};
    int rc = http_head_find(req, strlen(req), &scanned, &len, &why);
    if (rc < 0) return why.status;
    if (rc == 0) return -1; /* incomplete */
    return http_parse_head(req, len, h, &why) < 0 ? why.status : 0;
}

static const char *reason_of(const char *req)
{
    static http_refusal why;
    http_head h;
    size_t scanned = 0, len = 0;
    int rc = http_head_find(req, strlen(req), &scanned, &len, &why);
    if (rc <= 0) return rc < 0 ? why.reason : "incomplete";
    return http_parse_head(req, len, &h, &why) < 0 ? why.reason : "accepted";
}

static void test_simple_requests(void)
{
    http_head h;
    CHECK(status_of("GET /xrpc/x?a=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n", &h) == 0);
    CHECK(!strcmp(h.method, "GET") && h.minor == 1 && h.keep_alive && h.body == HTTP_BODY_NONE);
    CHECK(h.target_len == 11 && !memcmp(h.target, "/xrpc/x?a=1", 11));
    const http_field *f = http_head_field(&h, "USER-agent");
    CHECK(f && f->value_len == 1 && f->value[0] == 't');
    CHECK(http_head_field(&h, "cookie") == NULL);
    /* whitespace around a value is not part of it; bare LF line endings are read too */
    CHECK(status_of("GET / HTTP/1.1\nHost: a\nX-A: \t v w \t\n\n", &h) == 0);
    f = http_head_field(&h, "x-a");
    CHECK(f && f->value_len == 3 && !memcmp(f->value, "v w", 3));
    /* HTTP/1.0: no Host needed, closes unless asked to keep alive */
    CHECK(status_of("GET / HTTP/1.0\r\n\r\n", &h) == 0 && !h.keep_alive && h.minor == 0);
    CHECK(status_of("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h) == 0 && h.keep_alive);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: x, close\r\n\r\n", &h) == 0 &&
          !h.keep_alive);
    /* absolute-form routes by its path; asterisk-form only for OPTIONS */
    CHECK(status_of("GET http://h.example:80/p?q=1 HTTP/1.1\r\nHost: h\r\n\r\n", &h) == 0);
    CHECK(h.target_len == 6 && !memcmp(h.target, "/p?q=1", 6));
    CHECK(status_of("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &h) == 0);
    CHECK(status_of("GET * HTTP/1.1\r\nHost: h\r\n\r\n", &h) == 400);
    CHECK(status_of("GET http://h.example?x HTTP/1.1\r\nHost: h\r\n\r\n", &h) == 400);
    /* empty lines before a request are skipped */
    CHECK(status_of("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 0);
}

static void test_methods_and_versions(void)
{
    http_head h;
    CHECK(status_of("CONNECT a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 400);
    CHECK(!strcmp(reason_of("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), "connect"));
    CHECK(status_of("BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 501);
    CHECK(status_of("TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 0); /* known: routes say 405 */
    CHECK(status_of("GET /\r\n\r\n", &h) == 400);                     /* HTTP/0.9 */
    CHECK(!strcmp(reason_of("GET /\r\n\r\n"), "version"));
    CHECK(status_of("GET / HTTP/2.0\r\nHost: a\r\n\r\n", &h) == 505);
    CHECK(status_of("GET / HTTP/1.2\r\nHost: a\r\n\r\n", &h) == 505);
    CHECK(status_of("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", &h) == 400);
    CHECK(status_of("GET / http/1.1\r\nHost: a\r\n\r\n", &h) == 400);
    CHECK(status_of("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 400);
    CHECK(status_of("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 400);
    CHECK(status_of("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 400);
    CHECK(status_of("GET x HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 400);
    CHECK(status_of("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 400);
    CHECK(status_of("GARBAGE\r\n\r\n", &h) == 400);
    CHECK(status_of("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &h) == 505);
}

static void test_fields(void)
{
    http_head h;
    CHECK(status_of("GET / HTTP/1.1\r\n\r\n", &h) == 400); /* no Host */
    CHECK(!strcmp(reason_of("GET / HTTP/1.1\r\n\r\n"), "host"));
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &h) == 400);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: a\r\nauthorization: b\r\n\r\n",
                    &h) == 400);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n continued\r\n\r\n", &h) == 400);
    CHECK(status_of("GET / HTTP/1.1\r\nHost : a\r\n\r\n", &h) == 400);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", &h) == 400);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n", &h) == 400);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", &h) == 400);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01"
                    "b\r\n\r\n",
                    &h) == 400);
    const char nul[] = "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s\0x\r\n\r\n";
    size_t scanned = 0, len = 0;
    http_refusal why;
    CHECK(http_head_find(nul, sizeof nul - 1, &scanned, &len, &why) == 1);
    CHECK(http_parse_head(nul, len, &h, &why) < 0 && why.status == 400);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", &h) == 0 &&
          h.expect_continue);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n", &h) == 417);
    /* obs-text (bytes >= 0x80) is allowed in values */
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nX-A: \xc3\xa9\r\n\r\n", &h) == 0);
}

static void test_framing(void)
{
    http_head h;
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n", &h) == 0);
    CHECK(h.body == HTTP_BODY_LENGTH && h.content_length == 42);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &h) == 0 &&
          h.body == HTTP_BODY_NONE);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\n\r\n", &h) == 0 && h.body == HTTP_BODY_NONE);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &h) == 0);
    CHECK(h.body == HTTP_BODY_CHUNKED);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD \r\n\r\n", &h) == 0);
    /* a GET is framed like any request: its body is read, never taken for a request */
    CHECK(status_of("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &h) == 0);
    CHECK(h.body == HTTP_BODY_CHUNKED);
    /* smuggling shapes */
    CHECK(!strcmp(reason_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n"),
                  "te_and_cl"));
    CHECK(!strcmp(reason_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                            "Content-Length: 5\r\n\r\n"),
                  "te_and_cl"));
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                    &h) == 400);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &h) ==
          501);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n",
                    &h) == 400);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", &h) ==
          400);
    CHECK(status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", &h) == 400);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                    &h) == 400);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                    &h) == 0);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", &h) == 400);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", &h) == 400);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", &h) == 400);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", &h) == 400);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n",
                    &h) == 400);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", &h) == 400);
}

static void test_head_find(void)
{
    const char *two = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t scanned = 0, len = 0;
    http_refusal why;
    CHECK(http_head_find(two, strlen(two), &scanned, &len, &why) == 1 && len == 28);
    /* byte by byte finds the same end, scanning each byte about once */
    size_t found = 0;
    scanned = 0;
    for (size_t n = 1; n <= strlen(two) && !found; n++) {
        int rc = http_head_find(two, n, &scanned, &len, &why);
        CHECK(rc >= 0);
        if (rc == 1) found = n;
    }
    CHECK(found == 28 && len == 28);
    /* request line and head limits */
    char *big = malloc(HTTP_MAX_HEAD + 100);
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', HTTP_MAX_LINE + 10);
    scanned = 0;
    CHECK(http_head_find(big, HTTP_MAX_LINE + 15, &scanned, &len, &why) == -1 && why.status == 414);
    memcpy(big, "GET / HTTP/1.1\r\n", 16);
    memset(big + 16, 'v', HTTP_MAX_HEAD + 50);
    for (size_t i = 16; i + 40 < HTTP_MAX_HEAD + 66; i += 40)
        memcpy(big + i + 32, "\r\nX-H: ", 8);
    scanned = 0;
    CHECK(http_head_find(big, HTTP_MAX_HEAD + 66, &scanned, &len, &why) == -1 && why.status == 431);
    memset(big, '\n', HTTP_MAX_HEAD + 2);
    scanned = 0;
    CHECK(http_head_find(big, HTTP_MAX_HEAD + 2, &scanned, &len, &why) == -1 && why.status == 431);
    free(big);
    /* too many fields */
    char many[HTTP_MAX_HEAD];
    int n = snprintf(many, sizeof many, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < HTTP_MAX_FIELDS; i++)
        n += snprintf(many + n, sizeof many - (size_t)n, "X-%d: v\r\n", i);
    snprintf(many + n, sizeof many - (size_t)n, "\r\n");
    http_head h;
    CHECK(status_of(many, &h) == 431);
}

static void test_percent_decode(void)
{
    char s[64];
    strcpy(s, "a%20b+c%2Bd%e2%82%ac");
    long n = http_percent_decode(s, strlen(s), true);
    CHECK(n == 10 && !memcmp(s, "a b c+d\xe2\x82\xac", 10));
    strcpy(s, "a+b");
    CHECK(http_percent_decode(s, 3, false) == 3 && !memcmp(s, "a+b", 3));
    const char *bad[] = {"%zz", "%2", "%", "a%0", "%00", "x%G1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        strcpy(s, bad[i]);
        CHECK(http_percent_decode(s, strlen(s), true) == -1);
    }
}

/* Decodes body fed in pieces of step bytes; the result code, the data and what was left. */
static int dechunk(const char *in, size_t step, size_t max, buf *out, size_t *rest)
{
    http_chunked c = {0};
    size_t len = strlen(in), off = 0;
    int rc = HTTP_CHUNKED_MORE;
    while (off < len && rc == HTTP_CHUNKED_MORE) {
        size_t n = len - off < step ? len - off : step, used = 0;
        rc = http_chunked_feed(&c, in + off, n, &used, out, max);
        off += used;
    }
    *rest = len - off;
    return rc;
}

static void test_chunked(void)
{
    const char *body = "5\r\nhello\r\n6;ext=1;q=\"x\"\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    for (size_t step = 1; step <= strlen(body); step++) {
        buf out = {0};
        size_t rest;
        CHECK(dechunk(body, step, 100, &out, &rest) == HTTP_CHUNKED_DONE);
        CHECK(out.len == 11 && !memcmp(out.data, "hello world", 11) && rest == 4);
        buf_free(&out);
    }
    static const struct {
        const char *in;
        int rc;
    } cases[] = {
        {"0\r\n\r\n", HTTP_CHUNKED_DONE},
        {"A\r\n0123456789\r\n0\r\n\r\n", HTTP_CHUNKED_DONE},
        {"zz\r\nabc\r\n0\r\n\r\n", HTTP_CHUNKED_BAD},
        {"\r\n", HTTP_CHUNKED_BAD},
        {"5\r\nhelloX\r\n0\r\n\r\n", HTTP_CHUNKED_BAD},
        {"5\rhello\r\n", HTTP_CHUNKED_BAD},
        {"1000000000000000\r\n", HTTP_CHUNKED_BAD},
        {"0\r\nX: a\rb\r\n\r\n", HTTP_CHUNKED_BAD},
        {"5;\x01\r\nhello\r\n", HTTP_CHUNKED_BAD},
        {"ffff\r\n", HTTP_CHUNKED_MORE},
        {"65\r\n", HTTP_CHUNKED_MORE}, /* 101 bytes announced: fine until they pass max */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        buf out = {0};
        size_t rest;
        CHECK(dechunk(cases[i].in, 3, 100, &out, &rest) == cases[i].rc);
        buf_free(&out);
    }
    buf out = {0};
    size_t rest;
    CHECK(
        dechunk("65\r\n" /* 101 */ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n",
                7, 100, &out, &rest) == HTTP_CHUNKED_BIG);
    CHECK(out.len <= 100);
    buf_free(&out);
}

int main(void)
{
    RUN(test_simple_requests);
    RUN(test_methods_and_versions);
    RUN(test_fields);
    RUN(test_framing);
    RUN(test_head_find);
    RUN(test_percent_decode);
    RUN(test_chunked);
    CHECK_EXIT();
}
