/* atproto/json_read against jansson's json_loadb(JSON_REJECT_DUPLICATES), the parser it
 * replaces: both must accept and reject the same inputs and build equal values, except where
 * json_loadb is laxer than RFC 8259 (a NUL right after a number or literal). Inputs: tricky
 * cases by hand, the firehose fixtures, and byte mutations of them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/json_read.h"
#include "check.h"

static int mismatches;

/* Whether the doc read from data finds each member of want's objects by name (and each element
 * of its arrays), with the values jansson has; and whether a doc made from want gives want back. */
static int doc_holds(const json_t *want, const char *data, size_t len)
{
    json_doc d = {0}, from = {0};
    int ok =
        json_doc_read(&d, data, len, NULL, NULL) == 0 && json_doc_from_jansson(&from, want) == 0;
    json_t *back = ok ? json_doc_to_jansson(&from, 0) : NULL;
    ok = ok && json_equal(back, want) &&
         json_doc_size(&d, 0) == json_object_size(want) + json_array_size(want);
    json_ref m = json_doc_first(0);
    for (size_t i = 0; ok && i < json_doc_size(&d, 0); i++, m = json_doc_after(&d, m)) {
        size_t n;
        const char *name = json_is_object(want) ? json_doc_name(&d, m, &n) : NULL;
        json_t *v = json_doc_to_jansson(&d, m);
        ok = json_equal(v, name ? json_object_get(want, name) : json_array_get(want, i)) &&
             (!name || json_doc_get(&d, 0, name) == m);
        json_decref(v);
    }
    json_decref(back);
    json_doc_free(&d);
    json_doc_free(&from);
    return ok;
}

/* 1 when both parsers agree on data (and the values are equal when both accept). */
static int agrees(const char *data, size_t len)
{
    json_error_t err;
    json_t *want = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
    json_t *got = json_read(data, len);
    int same =
        (!want && !got) || (want && got && json_equal(want, got) && doc_holds(want, data, len));
    if (!same && mismatches++ < 5)
        fprintf(stderr, "  disagree on %.*s: jansson %s, json_read %s\n",
                (int)(len > 200 ? 200 : len), data, want ? "accepts" : err.text,
                got ? "accepts" : "rejects");
    json_decref(want);
    json_decref(got);
    return same;
}

static const char *const cases[] = {
    "{}",
    "[]",
    " { } ",
    "{\"a\":1}",
    "[1,2,3]",
    "{\"a\":[{\"b\":null}],\"c\":true,\"d\":false}",
    /* numbers */
    "[0]",
    "[-0]",
    "[01]",
    "[1.]",
    "[.5]",
    "[+1]",
    "[1e5]",
    "[1E+5]",
    "[1e-5]",
    "[1e]",
    "[-]",
    "[0, -0, 7, -7]",
    "[999999999999999999, -999999999999999999]",
    "[1000000000000000000, -1000000000000000000]",
    "[9223372036854775807]",
    "[9223372036854775808]",
    "[-9223372036854775808]",
    "[-9223372036854775809]",
    "[1e400]",
    "[-1e400]",
    "[1e-400]",
    "[0.1234567890123456789]",
    "[12345678901234567890123456789012345678901234567890123456789012345678901234567890.5]",
    "[1a]",
    "[1 2]",
    "[0x10]",
    "[NaN]",
    "[Infinity]",
    /* strings and escapes */
    "[\"\"]",
    "[\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"]",
    "[\"\\u0041\\u00e9\\u20ac\"]",
    "[\"\\ud83d\\ude00\"]",
    "[\"\\ud83d\"]",
    "[\"\\ude00\"]",
    "[\"\\ud83dx\"]",
    "[\"\\ud83d\\u0041\"]",
    "[\"\\u0000\"]",
    "[\"\\u00\"]",
    "[\"\\x41\"]",
    "[\"\\uZZZZ\"]",
    "[\"tab\there\"]",
    "[\"\xc3\xa9\"]",
    "[\"\xe2\x82\xac\"]",
    "[\"\xf0\x9f\x98\x80\"]",
    "[\"\xc0\xaf\"]",
    "[\"\xe0\x80\xaf\"]",
    "[\"\xed\xa0\x80\"]",
    "[\"\xf4\x90\x80\x80\"]",
    "[\"\xff\"]",
    "[\"\xc3\"]",
    "[\"unterminated]",
    "{\"k\\u00e9y\":1}",
    "{\"a\":1,\"a\":2}",
    "{\"axb\":1,\"ayb\":2,\"\":3}",
    "{\"axb\":1,\"ayb\":2,\"axb\":3}",
    "{\"\":1,\"a\":2,\"\":3}",
    "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":10,\"k\":11,"
    "\"l\":12,\"m\":13,\"n\":14,\"o\":15,\"p\":16,\"q\":17,\"r\":18,\"ab\":19,\"ba\":20}",
    "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":10,\"k\":11,"
    "\"l\":12,\"m\":13,\"n\":14,\"o\":15,\"p\":16,\"q\":17,\"r\":18,\"ab\":19,\"ab\":20}",
    "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":10,\"k\":11,"
    "\"l\":12,\"m\":13,\"n\":14,\"o\":15,\"p\":16,\"q\":17,\"a\":18}",
    "{\"x\":{\"a\":1,\"b\":{\"a\":2}},\"y\":[{\"a\":1},{\"a\":1}],\"a\":[]}",
    "{\"a\":1,\"\\u0061\":2}",
    "{\"x\":{\"a\":[1],\"a\":{\"b\":2}},\"y\":0}",
    "{\"\\u0000\":1}",
    /* structure */
    "{\"a\"}",
    "{\"a\":}",
    "{\"a\":1,}",
    "[1,]",
    "[,1]",
    "{1:2}",
    "[\"a\":1]",
    "{\"a\":1}x",
    "{\"a\":1} ",
    "\xef\xbb\xbf{}",
    "",
    "   ",
    "1",
    "\"s\"",
    "null",
    "[true]",
    "[truex]",
    "[tru]",
    "[nul]",
    "[null,false,true]",
    "{\"a\":{\"b\":{\"c\":[[[]]]}}}",
    "[1]\n",
    "[1]\x01",
};

static void test_cases(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        CHECK(agrees(cases[i], strlen(cases[i])));
    /* Embedded NUL bytes: in a string, and after the value. */
    CHECK(agrees("[\"a\0b\"]", 7));
    CHECK(agrees("[1]\0", 4));
}

/* The one difference, on purpose: json_loadb ends a number or literal at a NUL and then takes
 * the NUL as the end of the input; json_read refuses what follows the value. */
static void test_nul_after_a_literal_is_refused(void)
{
    static const struct {
        const char *s;
        size_t len;
    } nul_cases[] = {{"{\"count\":2\0}", 12}, {"[true\0]", 7}, {"[1,null\0]", 9}, {"[1\0", 3}};
    for (size_t i = 0; i < sizeof nul_cases / sizeof *nul_cases; i++) {
        json_t *v = json_read(nul_cases[i].s, nul_cases[i].len);
        CHECK(v == NULL);
        json_decref(v);
    }
}

static char *nested(int depth, size_t *len)
{
    char *s = malloc((size_t)depth * 2 + 1);
    for (int i = 0; i < depth; i++) {
        s[i] = '[';
        s[depth * 2 - 1 - i] = ']';
    }
    s[depth * 2] = 0;
    *len = (size_t)depth * 2;
    return s;
}

static void test_depth_limit(void)
{
    int depths[] = {2047, 2048, 2049, 100000};
    for (size_t i = 0; i < sizeof depths / sizeof *depths; i++) {
        size_t len;
        char *s = nested(depths[i], &len);
        CHECK(agrees(s, len));
        free(s);
    }
}

/* A doc keeps its arrays for the next read, but not the ones a huge text left behind. */
static void test_doc_memory_is_not_pinned(void)
{
    enum { N = 200000 };
    char *big = malloc(2 * N + 1);
    if (!big) abort();
    big[0] = '[';
    for (size_t i = 0; i < N; i++) {
        big[1 + 2 * i] = '1';
        big[2 + 2 * i] = i + 1 < N ? ',' : ']';
    }
    json_doc d = {0};
    CHECK(json_doc_read(&d, big, 2 * N + 1, NULL, NULL) == 0 && json_doc_size(&d, 0) == N);
    size_t big_cap = d.values_cap;
    CHECK(json_doc_read(&d, "[1]", 3, NULL, NULL) == 0 && json_doc_size(&d, 0) == 1);
    CHECK(big_cap > N && d.values_cap < 1024);
    const json_doc_value *kept = d.values;
    CHECK(json_doc_read(&d, "[2]", 3, NULL, NULL) == 0 && d.values == kept);
    json_doc_free(&d);
    free(big);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    *len = fread(s, 1, (size_t)n, f);
    fclose(f);
    return s;
}

/* Every line of the fixtures, whole and with one byte changed at many places. */
static void test_fixtures_and_mutations(void)
{
    static const char *const files[] = {"tests/fixtures/basic.jsonl",
                                        "tests/fixtures/malformed.jsonl"};
    unsigned seed = 12345, lines = 0;
    static const char bytes[] = "{}[]\",:\\0123456789eE.-+ \t\nuatfn\x80\xc3\xff\x01";
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        size_t len;
        char *text = slurp(files[f], &len);
        CHECK(text != NULL);
        if (!text) continue;
        for (char *line = text, *nl; line < text + len; line = nl + 1) {
            nl = memchr(line, '\n', (size_t)(text + len - line));
            if (!nl) nl = text + len;
            size_t n = (size_t)(nl - line);
            lines++;
            CHECK(agrees(line, n));
            char *m = malloc(n + 1);
            for (int k = 0; k < 200 && n; k++) {
                memcpy(m, line, n);
                seed = seed * 1103515245u + 12345u;
                m[(seed >> 8) % n] = bytes[(seed >> 20) % (sizeof bytes - 1)];
                CHECK(agrees(m, n));
                CHECK(agrees(m, (seed >> 4) % (n + 1))); /* cut short, too */
            }
            free(m);
        }
        free(text);
    }
    CHECK(lines > 20);
}

static int span_is(const char *data, const char *want)
{
    static const char *const path[] = {"commit", "record", NULL};
    json_span span;
    json_t *v = json_read_span(data, strlen(data), path, &span);
    int ok =
        v && (want ? span.start && span.len == strlen(want) && !memcmp(span.start, want, span.len)
                   : !span.start);
    json_decref(v);
    return ok;
}

/* The bytes of commit.record, as written; names matched only on the path, and only unescaped. */
static void test_span(void)
{
    CHECK(span_is("{\"commit\":{\"rev\":1,\"record\": {\"a\" : [1, {}]} ,\"x\":2}}",
                  "{\"a\" : [1, {}]}"));
    CHECK(span_is("{\"record\":{},\"commit\":{\"x\":{\"record\":1}}}", NULL));
    CHECK(span_is("{\"commit\":{\"rec\\u006frd\":{}}}", NULL));
    CHECK(span_is("{\"commit\":{\"record\":\"s\"}}", "\"s\""));
    CHECK(!span_is("{\"commit\":{\"record\":{}}}x", NULL)); /* not JSON: no value, no span */
    json_span span;
    const char *deep = "{\"commit\":{\"record\":{\"a\":[[\n1]]}}}";
    json_t *v =
        json_read_span(deep, strlen(deep), (const char *const[]){"commit", "record", NULL}, &span);
    CHECK(v && span.depth == 3 && span.raw_whitespace);
    json_decref(v);
}

int main(void)
{
    RUN(test_span);
    RUN(test_cases);
    RUN(test_nul_after_a_literal_is_refused);
    RUN(test_depth_limit);
    RUN(test_doc_memory_is_not_pinned);
    RUN(test_fixtures_and_mutations);
    CHECK_EXIT();
}
