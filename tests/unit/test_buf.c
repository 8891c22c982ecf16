/* atproto/buf: JSON string escaping (runs copied whole, escapes at any offset) and integers. */
#include <stdio.h>
#include <string.h>

#include "atproto/buf.h"
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

static void test_append_ll(void)
{
    static const long long values[] = {
        0, 7, -7, 1732000000000LL, -9223372036854775807LL - 1, 9223372036854775807LL};
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        buf b = {0};
        char want[32];
        snprintf(want, sizeof want, "%lld", values[i]);
        CHECK(buf_append_ll(&b, values[i]) == 0 && !strcmp(b.data, want));
        buf_free(&b);
    }
}

int main(void)
{
    RUN(test_json_string);
    RUN(test_append_ll);
    CHECK_EXIT();
}
