/* atproto/buf: JSON string escaping (runs copied whole, escapes at any offset) and integers;
 * atproto/bytescan: where a JSON string's plain run ends, at any offset in a word;
 * atproto/strjoin: names built in fixed buffers, never cut short. */
#include <stdio.h>
#include <string.h>

#include "atproto/buf.h"
#include "atproto/bytescan.h"
#include "atproto/strjoin.h"
#include "check.h"

/* The escaping one byte at a time, as the specification reads. */
static void reference(char *out, const char *s, size_t n)
{
    *out++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            out += sprintf(out, "\\%c", c);
        else if (c < 0x20)
            out += sprintf(out, "\\u%04x", c);
        else
            *out++ = (char)c;
    }
    *out++ = '"';
    *out = 0;
}

static void test_json_string(void)
{
    static const char specials[] = {'"', '\\', '\n', '\0', 0x1f, 0x7f, (char)0xc3, 'a'};
    char s[40], want[300];
    int wrong = 0;
    for (size_t len = 0; len <= 33; len++) {
        for (size_t at = 0; at < len || (len == 0 && at == 0); at++) {
            for (size_t k = 0; k < sizeof specials; k++) {
                memset(s, 'x', len);
                if (len) s[at] = specials[k];
                buf b = {0};
                CHECK(buf_json_string(&b, s, len) == 0);
                reference(want, s, len);
                wrong += b.len != strlen(want) || memcmp(b.data, want, b.len) != 0;
                buf_free(&b);
            }
            if (len == 0) break;
        }
    }
    CHECK(wrong == 0);
}

/* Every number of digits, on both sides of each power of ten. */
static void test_format_ull(void)
{
    unsigned long long p = 1;
    for (int digits = 1; digits <= 20; digits++) {
        unsigned long long near[] = {p - 1, p, p + 1, p * 9 + (p - 1)};
        for (size_t i = 0; i < sizeof near / sizeof *near; i++) {
            if (digits == 20 && i == 3) near[i] = ~0ull;
            char want[32], out[21];
            snprintf(want, sizeof want, "%llu", near[i]);
            char *end = buf_format_ull(out, near[i]);
            CHECK((size_t)(end - out) == strlen(want) && !memcmp(out, want, strlen(want)));
        }
        if (digits < 20) p *= 10;
    }
}

static void test_append_ll(void)
{
    static const long long values[] = {
        0, 7, -7, 1732000000000LL, -9223372036854775807LL - 1, 9223372036854775807LL};
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        buf b = {0};
        char want[32];
        snprintf(want, sizeof want, "%lld", values[i]);
        CHECK(buf_append_ll(&b, values[i]) == 0 && !strcmp(b.data, want));
        char out[21];
        CHECK((size_t)(buf_format_ll(out, values[i]) - out) == strlen(want) &&
              !memcmp(out, want, strlen(want)));
        buf_free(&b);
    }
}

/* The first byte that ends a plain run is found wherever it sits in a 16-byte block or an
 * 8-byte word, and whatever follows it (a borrow in the word-at-a-time test only runs towards
 * later bytes). */
static void test_plain_ascii(void)
{
    static const unsigned char stops[] = {'"', '\\', 0, 0x1f, 0x80, 0xc3, 0xff};
    static const unsigned char after[] = {'a', 0, '"', 0xff};
    unsigned char s[48];
    for (size_t len = 0; len <= 40; len++) {
        memset(s, 'a', sizeof s);
        CHECK(bytescan_plain_run(s, len, 1) == len);
        for (size_t at = 0; at < len; at++)
            for (size_t i = 0; i < sizeof stops; i++)
                for (size_t j = 0; j < sizeof after; j++) {
                    memset(s, 'a' + (int)(at % 26), sizeof s);
                    s[at] = stops[i];
                    memset(s + at + 1, after[j], sizeof s - at - 1);
                    CHECK(bytescan_plain_run(s, len, 1) == at);
                    /* Without ascii_only, bytes from 0x80 are plain. */
                    int plain_after = after[j] == 'a' || after[j] >= 0x80;
                    size_t want = stops[i] < 0x80 ? at : plain_after ? len : at + 1;
                    CHECK(bytescan_plain_run(s, len, 0) == want);
                }
    }
}

static void test_strjoin(void)
{
    char out[12];
    CHECK(STRJOIN(out, "atcr:", "{", "d", "}/") == 9 && !strcmp(out, "atcr:{d}/"));
    CHECK(STRJOIN(out, "0123456789", "a") == 11 && !strcmp(out, "0123456789a")); /* exactly fits */
    CHECK(STRJOIN(out, "0123456789", "ab") == -1 && out[0] == 0);                /* one too many */
    CHECK(STRJOIN(out, "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a") == 11 &&
          !strcmp(out, "0123456789a"));
    CHECK(STRJOIN(out, "0123456789", "a", "b") == -1 && out[0] == 0);
    CHECK(STRJOIN(out, "") == 0 && out[0] == 0);
    CHECK(strjoin(out, 0, (const char *const[]){"x", NULL}) == -1);
    /* strput: only the n bytes given, whatever follows them; -1 and "" when they do not fit. */
    CHECK(strput(out, sizeof out, "repo tag", 4) == 4 && !strcmp(out, "repo"));
    CHECK(strput(out, sizeof out, "0123456789a", 11) == 11 && !strcmp(out, "0123456789a"));
    CHECK(strput(out, sizeof out, "0123456789ab", 12) == -1 && out[0] == 0);
    CHECK(strput(out, 0, "", 0) == -1);
}

int main(void)
{
    RUN(test_plain_ascii);
    RUN(test_json_string);
    RUN(test_format_ull);
    RUN(test_append_ll);
    RUN(test_strjoin);
    CHECK_EXIT();
}
