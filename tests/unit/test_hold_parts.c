/* hold: pull dedupe window, did:web derivation and config, record CIDs. */
#include <stdlib.h>
#include <string.h>

#include "hold/cid.h"
#include "atproto/did_doc.h"
#include "hold/config.h"
#include "hold/dedupe.h"
#include "tests/unit/check.h"

static void test_dedupe_window(void)
{
    dedupe *d = dedupe_new(60);
    CHECK(d != NULL);
    if (!d) return;
    CHECK(dedupe_first(d, "a", 100.0) == 1);
    CHECK(dedupe_first(d, "a", 100.5) == 0);
    CHECK(dedupe_first(d, "b", 100.5) == 1);
    CHECK(dedupe_first(d, "a", 159.9) == 0);
    /* The window runs from the counted fetch, not the latest one. */
    CHECK(dedupe_first(d, "a", 160.1) == 1);
    CHECK(dedupe_first(d, "a", 170.0) == 0);
    dedupe_free(d);
}

static void test_dedupe_expiry_bounds_memory(void)
{
    dedupe *d = dedupe_new(1);
    CHECK(d != NULL);
    if (!d) return;
    char key[32];
    /* 100k distinct keys over 100 s with a 1 s window: expired ones are swept as it grows. */
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK(dedupe_first(d, key, i / 1000.0) == 1);
    }
    CHECK(dedupe_size(d) < 5000);
    CHECK(dedupe_first(d, "k99999", 99.9995) == 0);
    dedupe_free(d);
    dedupe *off = dedupe_new(0);
    CHECK(off && dedupe_first(off, "x", 1) == 1 && dedupe_first(off, "x", 1) == 1);
    dedupe_free(off);
}

static void test_did_web_from_url(void)
{
    struct {
        const char *url, *did;
    } cases[] = {
        {"https://hold.example.com", "did:web:hold.example.com"},
        {"https://hold.example.com/", "did:web:hold.example.com"},
        {"http://127.0.0.1:8081", "did:web:127.0.0.1%3A8081"},
        {"https://example.com/holds/one", "did:web:example.com:holds:one"},
        {"ftp://example.com", NULL},
        {"https://", NULL},
        {"example.com", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = did_web_from_url(cases[i].url);
        if (cases[i].did)
            CHECK(got && !strcmp(got, cases[i].did));
        else
            CHECK(got == NULL);
        free(got);
    }
}

static void test_config_flags_env_defaults(void)
{
    unsetenv("HOLD_LISTEN");
    unsetenv("HOLD_DID");
    unsetenv("HOLD_PUBLIC_URL");
    unsetenv("HOLD_PULL_DEDUPE_SECONDS");
    setenv("HOLD_SERVICE_TOKENS", " a, b , c", 1);
    setenv("HOLD_DB", "/tmp/env.db", 1);
    char *argv[] = {"hold", "--db", "/tmp/flag.db", "--listen", "127.0.0.1:9999", NULL};
    hold_config c;
    CHECK(hold_config_load(&c, 5, argv) == 0);
    CHECK(!strcmp(c.db, "/tmp/flag.db"));
    CHECK(!strcmp(c.listen, "127.0.0.1:9999"));
    CHECK(!strcmp(c.public_url, "http://localhost:9999"));
    CHECK(!strcmp(c.did, "did:web:localhost%3A9999"));
    CHECK(c.ntokens == 3 && !strcmp(c.tokens[0], "a") && !strcmp(c.tokens[1], "b") &&
          !strcmp(c.tokens[2], "c"));
    CHECK(c.pull_dedupe_seconds == 60 && c.blob_url_template == NULL);
    hold_config_free(&c);
    setenv("HOLD_PULL_DEDUPE_SECONDS", "1x", 1);
    char *argv2[] = {"hold", NULL};
    CHECK(hold_config_load(&c, 1, argv2) == -1);
    unsetenv("HOLD_PULL_DEDUPE_SECONDS");
    unsetenv("HOLD_SERVICE_TOKENS");
    unsetenv("HOLD_DB");
}

static void test_record_cid(void)
{
    /* Expected value computed independently in Python (DAG-CBOR by hand, hashlib, base32). */
    cid_field f[] = {
        {"repository", "a/b", 0}, {"pullCount", NULL, 300},   {"$type", "io.atcr.hold.stats", 0},
        {"did", "did:plc:x", 0},  {"pushCount", NULL, 70000},
    };
    char cid[CID_STR_LEN + 1];
    CHECK(cid_of_record(f, 5, cid) == 0);
    CHECK(!strcmp(cid, "bafyreigyogkitfuxkvatth7ive3ut6ht3gswrb5ie5hbtmexwd5u5mx6fi"));
    CHECK(strlen(cid) == CID_STR_LEN);
}

int main(void)
{
    RUN(test_dedupe_window);
    RUN(test_dedupe_expiry_bounds_memory);
    RUN(test_did_web_from_url);
    RUN(test_config_flags_env_defaults);
    RUN(test_record_cid);
    CHECK_EXIT();
}
