/* cache/valkey's pure parts: which URLs it takes, and which refusals retrying cannot cure. */
#include <string.h>

#include "cache/valkey.h"
#include "tests/unit/check.h"

static void test_urls(void)
{
    const char *good[] = {"redis://127.0.0.1:6379/0", "redis://valkey", "redis://:pw@h:1/15",
                          "redis://user:p@ss@h/2",    "redis://pw@h",   "unix:///run/v.sock",
                          "unix:///run/v.sock?db=3"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        const char *why = valkey_check_url(good[i]);
        if (why) fprintf(stderr, "    %s: %s\n", good[i], why);
        CHECK(why == NULL);
    }
    static const char *const bad[][2] = {
        {"http://h:6379", "expected redis://"},
        {"redis://", "no host"},
        {"redis://:pw@/0", "no host"},
        {"redis://h:0/0", "the port must be a number 1..65535"},
        {"redis://h:99999/0", "the port must be a number 1..65535"},
        {"redis://h:/0", "the port must be a number 1..65535"},
        {"redis://h/x", "the DB index must be a number 0..1000"},
        {"redis://h/-1", "the DB index must be a number 0..1000"},
        {"unix://relative.sock", "no socket path"},
        {"unix:///s?database=1", "only ?db=N may follow the socket path"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *why = valkey_check_url(bad[i][0]);
        int ok = why && strstr(why, bad[i][1]);
        if (!ok) fprintf(stderr, "    %s: %s\n", bad[i][0], why ? why : "accepted");
        CHECK(ok);
    }
}

static void test_refusals(void)
{
    const char *permanent[] = {"WRONGPASS invalid username-password pair or user is disabled.",
                               "NOAUTH Authentication required.",
                               "ERR DB index is out of range",
                               "ERR invalid password",
                               "NOPERM this user has no permissions to run the 'evalsha' command",
                               "ERR AUTH <password> called without any password configured for "
                               "the default user. Are you sure your configuration is correct?"};
    for (size_t i = 0; i < sizeof permanent / sizeof *permanent; i++)
        CHECK(valkey_refusal_is_permanent(permanent[i]));
    const char *transient[] = {"LOADING Redis is loading the dataset in memory",
                               "BUSY Redis is busy running a script",
                               "MASTERDOWN Link with MASTER is down", "ERR unknown command"};
    for (size_t i = 0; i < sizeof transient / sizeof *transient; i++)
        CHECK(!valkey_refusal_is_permanent(transient[i]));
}

int main(void)
{
    RUN(test_urls);
    RUN(test_refusals);
    CHECK_EXIT();
}
