/* atproto/url: trailing-slash trimming of base URLs. */
#include <stdlib.h>
#include <string.h>

#include "atproto/url.h"
#include "check.h"

static const char *const cases[][2] = {
    {"https://plc.directory/", "https://plc.directory"},
    {"http://h:1/x///", "http://h:1/x"},
    {"http://h", "http://h"},
    {"//", ""},
    {"", ""},
};

static void test_trim(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char s[64];
        snprintf(s, sizeof s, "%s", cases[i][0]);
        url_trim_slashes(s);
        CHECK(!strcmp(s, cases[i][1]));
    }
}

static void test_dup_base(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *s = url_dup_base(cases[i][0]);
        CHECK(s && !strcmp(s, cases[i][1]));
        free(s);
    }
}

int main(void)
{
    RUN(test_trim);
    RUN(test_dup_base);
    CHECK_EXIT();
}
