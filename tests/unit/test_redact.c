/* atproto/redact: URL passwords masked, everything else kept. */
#include <string.h>

#include "atproto/redact.h"
#include "tests/unit/check.h"

static int shows(const char *url, const char *want)
{
    char out[256];
    redact_url(url, out, sizeof out);
    if (strcmp(out, want)) fprintf(stderr, "    %s -> %s, want %s\n", url, out, want);
    return !strcmp(out, want);
}

static void test_passwords_masked(void)
{
    CHECK(shows("redis://:s3cretpass@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"));
    CHECK(shows("redis://default:s3cret@valkey:6379/2", "redis://default:***@valkey:6379/2"));
    CHECK(shows("redis://s3cret@valkey", "redis://***@valkey"));
    CHECK(shows("redis://:p@ss@word@h:1/0", "redis://:***@h:1/0"));
    CHECK(shows("https://user:pw@example.com/x?q=a@b", "https://user:***@example.com/x?q=a@b"));
}

static void test_other_text_kept(void)
{
    CHECK(shows("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"));
    CHECK(shows("unix:///run/valkey.sock?db=1", "unix:///run/valkey.sock?db=1"));
    CHECK(shows("wss://h/subscribe?x=a@b", "wss://h/subscribe?x=a@b"));
    CHECK(shows("not a url", "not a url"));
    CHECK(shows("", ""));
    char small[12];
    redact_url("redis://:secret@h", small, sizeof small);
    CHECK(strlen(small) == sizeof small - 1 && !strstr(small, "secret"));
}

int main(void)
{
    RUN(test_passwords_masked);
    RUN(test_other_text_kept);
    CHECK_EXIT();
}
