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

/* Cluster seeds: every item's password masked, not only the first one's. */
static void test_url_lists(void)
{
    char out[256];
    redact_url_list("redis://:pw1@a:7000,redis://u:pw2@b:7001,c:7002", out, sizeof out);
    CHECK(!strcmp(out, "redis://:***@a:7000,redis://u:***@b:7001,c:7002"));
    redact_url_list("a:1,b:2", out, sizeof out);
    CHECK(!strcmp(out, "a:1,b:2"));
    redact_url_list("redis://:longsecret@a:1,redis://:longsecret@b:2", out, 30);
    CHECK(strlen(out) < 30 && !strstr(out, "longsecret"));
}

int main(void)
{
    RUN(test_passwords_masked);
    RUN(test_other_text_kept);
    RUN(test_url_lists);
    CHECK_EXIT();
}
