/* hold: pull dedupe window, did:web derivation and config, record CIDs, HMAC and signed blob
 * URLs, incrementStats bodies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hold/cid.h"
#include "atproto/did_doc.h"
#include "hold/blob_sig.h"
#include "hold/config.h"
#include "hold/dedupe.h"
#include "hold/increments.h"
#include "hold/sha256.h"
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
    CHECK(!c.count_anonymous && c.nblob_url_secrets == 0);
    CHECK(c.http.request_timeout == 30 && c.http.idle_timeout == 30 &&
          c.http.max_connections_per_ip == 1024 && c.http.max_body_buffer == 64u << 20);
    hold_config_free(&c);
    setenv("HOLD_PULL_DEDUPE_SECONDS", "1x", 1);
    char *argv2[] = {"hold", NULL};
    CHECK(hold_config_load(&c, 1, argv2) == -1);
    unsetenv("HOLD_PULL_DEDUPE_SECONDS");
    /* Tokens and secrets are visible ASCII; a signing secret is not short. */
    setenv("HOLD_SERVICE_TOKENS", "a b", 1);
    CHECK(hold_config_load(&c, 1, argv2) == -1);
    setenv("HOLD_SERVICE_TOKENS", "tok\x01", 1);
    CHECK(hold_config_load(&c, 1, argv2) == -1);
    unsetenv("HOLD_SERVICE_TOKENS");
    setenv("HOLD_BLOB_URL_SECRETS", "short", 1);
    CHECK(hold_config_load(&c, 1, argv2) == -1);
    setenv("HOLD_BLOB_URL_SECRETS", "long-enough-secret-1,long-enough-secret-2", 1);
    setenv("HOLD_COUNT_ANONYMOUS", "on", 1);
    setenv("HOLD_HTTP_IDLE_TIMEOUT", "7", 1);
    CHECK(hold_config_load(&c, 1, argv2) == 0);
    CHECK(c.nblob_url_secrets == 2 && c.count_anonymous && c.http.idle_timeout == 7);
    hold_config_free(&c);
    unsetenv("HOLD_BLOB_URL_SECRETS");
    unsetenv("HOLD_COUNT_ANONYMOUS");
    unsetenv("HOLD_HTTP_IDLE_TIMEOUT");
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

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* RFC 4231 test cases 1, 2 and 6 (a key longer than the block). */
static void test_hmac_sha256_vectors(void)
{
    uint8_t key[131], d[32];
    char h[65];
    memset(key, 0x0b, 20);
    hmac_sha256(key, 20, "Hi There", 8, d);
    hex(d, 32, h);
    CHECK(!strcmp(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
    hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, d);
    hex(d, 32, h);
    CHECK(!strcmp(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
    memset(key, 0xaa, sizeof key);
    const char *msg = "Test Using Larger Than Block-Size Key - Hash Key First";
    hmac_sha256(key, sizeof key, msg, strlen(msg), d);
    hex(d, 32, h);
    CHECK(!strcmp(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"));
    uint8_t a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5};
    CHECK(bytes_equal_ct(a, a, 4) && !bytes_equal_ct(a, b, 4) && bytes_equal_ct(a, b, 3));
}

static void test_blob_signatures(void)
{
    char *secrets[] = {"old-secret-0123456789", "new-secret-0123456789"};
    blob_sig_fields f = {"did:plc:alice", "bafkreiabc", "alice/app", NULL};
    char sig[BLOB_SIG_LEN + 1];
    blob_sig_sign(secrets[1], strlen(secrets[1]), &f, 2000000000, sig);
    CHECK(strlen(sig) == BLOB_SIG_LEN && strspn(sig, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"
                                                     "rstuvwxyz0123456789-_") == BLOB_SIG_LEN);
    CHECK(blob_sig_check(secrets, 2, &f, "2000000000", sig, 1999999999) == BLOB_SIG_VALID);
    CHECK(blob_sig_check(secrets, 2, &f, "2000000000", sig, 2000000000) == BLOB_SIG_VALID);
    CHECK(blob_sig_check(secrets, 2, &f, "2000000000", sig, 2000000001) == BLOB_SIG_EXPIRED);
    CHECK(blob_sig_check(secrets, 1, &f, "2000000000", sig, 0) == BLOB_SIG_WRONG);
    CHECK(blob_sig_check(secrets, 2, &f, "2000000001", sig, 0) == BLOB_SIG_WRONG);
    /* the method is part of what is signed, in upper case, GET when absent */
    blob_sig_fields get = f, put = f;
    get.method = "get";
    put.method = "PUT";
    CHECK(blob_sig_check(secrets, 2, &get, "2000000000", sig, 0) == BLOB_SIG_VALID);
    CHECK(blob_sig_check(secrets, 2, &put, "2000000000", sig, 0) == BLOB_SIG_WRONG);
    blob_sig_fields other = f;
    other.repo = "alice/other";
    CHECK(blob_sig_check(secrets, 2, &other, "2000000000", sig, 0) == BLOB_SIG_WRONG);
    other = f;
    other.did = "did:plc:bob";
    CHECK(blob_sig_check(secrets, 2, &other, "2000000000", sig, 0) == BLOB_SIG_WRONG);
    other = f;
    other.repo = NULL;
    CHECK(blob_sig_check(secrets, 2, &other, "2000000000", sig, 0) == BLOB_SIG_MALFORMED);
    /* malformed: missing parts, leading zero, not digits, wrong length, padding, spare bits */
    CHECK(blob_sig_check(secrets, 2, &f, NULL, sig, 0) == BLOB_SIG_MALFORMED);
    CHECK(blob_sig_check(secrets, 2, &f, "2000000000", NULL, 0) == BLOB_SIG_MALFORMED);
    CHECK(blob_sig_check(secrets, 2, &f, "02000000000", sig, 0) == BLOB_SIG_MALFORMED);
    CHECK(blob_sig_check(secrets, 2, &f, "2e9", sig, 0) == BLOB_SIG_MALFORMED);
    CHECK(blob_sig_check(secrets, 2, &f, "", sig, 0) == BLOB_SIG_MALFORMED);
    char bad[BLOB_SIG_LEN + 2];
    snprintf(bad, sizeof bad, "%s=", sig);
    CHECK(blob_sig_check(secrets, 2, &f, "2000000000", bad, 0) == BLOB_SIG_MALFORMED);
    snprintf(bad, sizeof bad, "%.*s", BLOB_SIG_LEN - 1, sig);
    CHECK(blob_sig_check(secrets, 2, &f, "2000000000", bad, 0) == BLOB_SIG_MALFORMED);
    snprintf(bad, sizeof bad, "%s", sig);
    bad[5] = '+';
    CHECK(blob_sig_check(secrets, 2, &f, "2000000000", bad, 0) == BLOB_SIG_MALFORMED);
    /* the last character carries 2 spare bits, which must be zero */
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    snprintf(bad, sizeof bad, "%s", sig);
    bad[BLOB_SIG_LEN - 1] = alphabet[(strchr(alphabet, sig[BLOB_SIG_LEN - 1]) - alphabet) | 1];
    CHECK(blob_sig_check(secrets, 2, &f, "2000000000", bad, 0) == BLOB_SIG_MALFORMED);
    /* a known answer, so another implementation can check itself against this one */
    blob_sig_fields kat = {"did:plc:alice234567abcdefghijklm",
                           "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
                           "alice/app", "GET"};
    blob_sig_sign("blob-url-secret-0123456789abcdef", 32, &kat, 1700000000, sig);
    CHECK(!strcmp(sig, "1730oSJXHniiqVWlCjlzHq44uEQ-_FkLF3yfiyqD7ag")); /* Python hmac */
}

static void test_increment_bodies(void)
{
    increment_batch b;
    char why[128];
    const char *one =
        "{\"did\":\"did:plc:a\",\"repository\":\"a/b\",\"event\":\"push\",\"count\":3}";
    CHECK(increments_parse(one, strlen(one), &b, why, sizeof why) == INCREMENTS_OK);
    CHECK(b.n == 1 && b.total == 3 && b.incs[0].event == STORE_PUSH &&
          !strcmp(b.incs[0].repository, "a/b"));
    increments_clear(&b);
    const char *batch = "{\"events\":[{\"did\":\"did:plc:a\",\"repository\":\"a\",\"event\":"
                        "\"pull\"},{\"did\":\"did:web:b.example\",\"repository\":\"b/c\","
                        "\"event\":\"pull\",\"count\":null}]}";
    CHECK(increments_parse(batch, strlen(batch), &b, why, sizeof why) == INCREMENTS_OK);
    CHECK(b.n == 2 && b.total == 2);
    increments_clear(&b);
    /* one JSON rule: nothing after the value, not even a NUL after a number (which jansson's
     * json_loadb would take) */
    const char nul[] = "{\"did\":\"did:plc:a\",\"repository\":\"a\",\"event\":\"pull\","
                       "\"count\":2\0}";
    CHECK(increments_parse(nul, sizeof nul - 1, &b, why, sizeof why) == INCREMENTS_BAD_JSON);
    const char *bad_json[] = {"", "[]", "{\"a\":1}x", "{\"a\":1,\"a\":2}", "\"s\""};
    for (size_t i = 0; i < sizeof bad_json / sizeof *bad_json; i++)
        CHECK(increments_parse(bad_json[i], strlen(bad_json[i]), &b, why, sizeof why) ==
              INCREMENTS_BAD_JSON);
    const char *invalid[] = {
        "{}",
        "{\"events\":[]}",
        "{\"did\":\"x\",\"repository\":\"a\",\"event\":\"pull\"}",
        "{\"did\":\"did:plc:a\",\"repository\":\"A\",\"event\":\"pull\"}",
        "{\"did\":\"did:plc:a\",\"repository\":\"a\",\"event\":\"fetch\"}",
        "{\"did\":\"did:plc:a\",\"repository\":\"a\",\"event\":\"pull\",\"count\":0}",
        "{\"did\":\"did:plc:a\",\"repository\":\"a\",\"event\":\"pull\",\"count\":1.0}",
        "{\"events\":[{\"did\":\"did:plc:a\",\"repository\":\"a\",\"event\":\"pull\"},1]}",
    };
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++)
        CHECK(increments_parse(invalid[i], strlen(invalid[i]), &b, why, sizeof why) ==
              INCREMENTS_INVALID);
    CHECK(increments_parse(invalid[7], strlen(invalid[7]), &b, why, sizeof why) ==
              INCREMENTS_INVALID &&
          !strncmp(why, "events[1]:", 10));
}

int main(void)
{
    RUN(test_dedupe_window);
    RUN(test_dedupe_expiry_bounds_memory);
    RUN(test_did_web_from_url);
    RUN(test_config_flags_env_defaults);
    RUN(test_record_cid);
    RUN(test_hmac_sha256_vectors);
    RUN(test_blob_signatures);
    RUN(test_increment_bodies);
    CHECK_EXIT();
}
