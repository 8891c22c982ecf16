/* atproto/path: the directory part of a path, and what does not fit. */
#include <string.h>

#include "atproto/path.h"
#include "tests/unit/check.h"

static int dir_is(const char *path, const char *want)
{
    char out[32];
    int ok = path_dir(path, out, sizeof out) == 0 && !strcmp(out, want);
    if (!ok) fprintf(stderr, "    %s -> %s, want %s\n", path, out, want);
    return ok;
}

static void test_dir(void)
{
    CHECK(dir_is("/var/lib/hold/hold.db", "/var/lib/hold"));
    CHECK(dir_is("/hold.db", "/"));
    CHECK(dir_is("hold.db", "."));
    CHECK(dir_is("data/hold.db", "data"));
    CHECK(dir_is("/var/lib/hold/", "/var/lib/hold"));
}

static void test_too_long(void)
{
    char out[8];
    CHECK(path_dir("/a/bcdefghij/x", out, sizeof out) == -1);
    CHECK(path_dir("/a/bcdef/x", out, sizeof out) == -1); /* 8 bytes and its NUL */
    CHECK(path_dir("/a/bcde/x", out, sizeof out) == 0 && !strcmp(out, "/a/bcde"));
    CHECK(path_dir("x", out, 1) == -1);
}

int main(void)
{
    RUN(test_dir);
    RUN(test_too_long);
    CHECK_EXIT();
}
