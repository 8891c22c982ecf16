/* atproto/url: the URL parser every component uses, and trailing-slash trimming of base
 * URLs. */
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

static int eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Every part of what the services are configured with: the public Jetstream instances, local
 * replays with queries, IPv6 literals, Valkey with credentials (escaped) and a socket path. */
static void test_parse_parts(void)
{
    static const struct {
        const char *url, *scheme, *user, *password, *host, *authority, *path, *query, *fragment;
        int port;
    } ok[] = {
        {"wss://jetstream1.us-east.bsky.network/subscribe", "wss", NULL, NULL,
         "jetstream1.us-east.bsky.network", "jetstream1.us-east.bsky.network", "/subscribe", NULL,
         NULL, 443},
        {"ws://127.0.0.1:6008/xrpc/network.bsky.jetstream.subscribeEvents?compress=false&c=io.*",
         "ws", NULL, NULL, "127.0.0.1", "127.0.0.1:6008",
         "/xrpc/network.bsky.jetstream.subscribeEvents", "compress=false&c=io.*", NULL, 6008},
        {"WS://[::1]:9/", "ws", NULL, NULL, "::1", "[::1]:9", "/", NULL, NULL, 9},
        {"ws://[2001:db8::7]", "ws", NULL, NULL, "2001:db8::7", "[2001:db8::7]", "", NULL, NULL,
         80},
        {"redis://:s3cret@cache.internal:6380/2", "redis", "", "s3cret", "cache.internal",
         "cache.internal:6380", "/2", NULL, NULL, 6380},
        {"redis://app:p%40ss%3Aw@h/0", "redis", "app", "p@ss:w", "h", "h", "/0", NULL, NULL, 6379},
        {"redis://tok@h", "redis", "tok", NULL, "h", "h", "", NULL, NULL, 6379},
        /* the last '@' ends the user information, as browsers read it */
        {"redis://user:p@ss@h:7/2", "redis", "user", "p@ss", "h", "h:7", "/2", NULL, NULL, 7},
        {"unix:///run/valkey.sock?db=3", "unix", NULL, NULL, "", "", "/run/valkey.sock", "db=3",
         NULL, 0},
        {"https://hub.docker.com", "https", NULL, NULL, "hub.docker.com", "hub.docker.com", "",
         NULL, NULL, 443},
        {"http://h/p?q#f", "http", NULL, NULL, "h", "h", "/p", "q", "f", 80},
        {"http://h?", "http", NULL, NULL, "h", "h", "", "", NULL, 80},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        url_parts u;
        char why[128] = "";
        if (url_parse(ok[i].url, &u, why, sizeof why) < 0) {
            fprintf(stderr, "    %s: %s\n", ok[i].url, why);
            CHECK(0);
            continue;
        }
        int same = eq(u.scheme, ok[i].scheme) && eq(u.user, ok[i].user) &&
                   eq(u.password, ok[i].password) && eq(u.host, ok[i].host) &&
                   eq(u.authority, ok[i].authority) && eq(u.path, ok[i].path) &&
                   eq(u.query, ok[i].query) && eq(u.fragment, ok[i].fragment) &&
                   u.port == ok[i].port;
        if (!same)
            fprintf(stderr, "    %s -> %s|%s|%s|%s|%s|%s|%s|%s|%d\n", ok[i].url, u.scheme,
                    u.user ? u.user : "-", u.password ? u.password : "-", u.host, u.authority,
                    u.path, u.query ? u.query : "-", u.fragment ? u.fragment : "-", u.port);
        CHECK(same);
        url_parts_free(&u);
    }
}

/* What a lenient parser could read differently from libcurl or a server is refused, with a
 * reason. */
static void test_parse_refuses(void)
{
    static const char *const bad[] = {
        "",
        "example.com/x",
        "http:/h",
        "://h",
        "1http://h",
        "http://h:/",
        "http://h:0/",
        "http://h:65536/",
        "http://h:8o/",
        "http://h:99999999999999999999/",
        "http://[::1/",
        "http://[]/",
        "http://[::g]/",
        "http://h h/",
        "http://h/\x01",
        "http://h\\@evil/",
        "http://h%2e/",
        "http://ex\xc3\xa9.com/",
        "redis://u:%zz@h",
        "redis://u:%00@h",
        "http://h/#a#b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        url_parts u;
        char why[128] = "";
        int rc = url_parse(bad[i], &u, why, sizeof why);
        if (rc == 0) fprintf(stderr, "    accepted %s\n", bad[i]);
        CHECK(rc < 0 && why[0] && u.mem == NULL);
        url_parts_free(&u);
    }
}

int main(void)
{
    RUN(test_trim);
    RUN(test_dup_base);
    RUN(test_parse_parts);
    RUN(test_parse_refuses);
    CHECK_EXIT();
}
