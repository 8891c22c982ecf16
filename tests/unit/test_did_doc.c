/* DID document parsing against well-formed, odd and hostile inputs, and did:web URLs. */
#include <stdlib.h>
#include <string.h>

#include "atproto/did_doc.h"
#include "check.h"

#define DID "did:plc:ewvi7nxzyoun6zhxrhs64oiz"

static did_doc *parse(const char *json, const char *did, char *err, size_t errlen)
{
    return did_doc_parse(json, strlen(json), did, err, errlen);
}

static void test_plc_document(void)
{
    const char *json =
        "{\"@context\":[\"https://www.w3.org/ns/did/v1\"],\"id\":\"" DID "\","
        "\"alsoKnownAs\":[\"https://example.com\",\"at://Alice.Test\",\"at://bob.test\"],"
        "\"verificationMethod\":[{\"id\":\"" DID "#atproto\",\"type\":\"Multikey\"}],"
        "\"service\":[{\"id\":\"#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
        "\"serviceEndpoint\":\"https://pds.example.com/\"},"
        "{\"id\":\"" DID "#atcr_hold\",\"type\":\"AtcrHold\","
        "\"serviceEndpoint\":\"http://127.0.0.1:8081\"}]}";
    char err[128] = "";
    did_doc *d = parse(json, DID, err, sizeof err);
    CHECK(d != NULL);
    if (!d) return;
    CHECK(strcmp(did_doc_id(d), DID) == 0);
    CHECK(did_doc_aka_count(d) == 3);
    CHECK(strcmp(did_doc_aka(d, 0), "https://example.com") == 0);
    CHECK(did_doc_aka(d, 3) == NULL);
    CHECK(strcmp(did_doc_handle(d), "alice.test") == 0);
    CHECK(did_doc_claims_handle(d, "alice.test"));
    CHECK(did_doc_claims_handle(d, "ALICE.test"));
    CHECK(did_doc_claims_handle(d, "bob.test"));
    CHECK(!did_doc_claims_handle(d, "carol.test"));
    CHECK(!did_doc_claims_handle(d, "example.com"));
    CHECK(strcmp(did_doc_pds(d), "https://pds.example.com") == 0);
    CHECK(strcmp(did_doc_service(d, "#atcr_hold", NULL), "http://127.0.0.1:8081") == 0);
    CHECK(strcmp(did_doc_service(d, DID "#atcr_hold", "AtcrHold"), "http://127.0.0.1:8081") == 0);
    CHECK(did_doc_service(d, "#atcr_hold", "Other") == NULL);
    CHECK(did_doc_service(d, "did:plc:other#atcr_hold", NULL) == NULL);
    CHECK(did_doc_service(d, "atcr_hold", NULL) == NULL);
    CHECK(did_doc_service(d, "#missing", NULL) == NULL);
    did_doc_free(d);
}

static void test_minimal_document(void)
{
    char err[128] = "";
    did_doc *d = parse("{\"id\":\"did:web:example.com\"}", "did:web:example.com", err, sizeof err);
    CHECK(d != NULL);
    if (!d) return;
    CHECK(did_doc_handle(d) == NULL);
    CHECK(did_doc_pds(d) == NULL);
    CHECK(did_doc_aka_count(d) == 0);
    did_doc_free(d);
}

static void expect_reject(const char *json, size_t len, const char *want_in_err)
{
    char err[160] = "";
    did_doc *d = did_doc_parse(json, len, DID, err, sizeof err);
    CHECK(d == NULL);
    CHECK(strstr(err, want_in_err) != NULL);
    if (!strstr(err, want_in_err)) fprintf(stderr, "    error was: %s\n", err);
    did_doc_free(d);
}

static void test_rejects_garbage(void)
{
    expect_reject("", 0, "not JSON");
    expect_reject("<html>hi</html>", 15, "not JSON");
    expect_reject("{\"id\":", 6, "not JSON");
    expect_reject("[1,2,3]", 7, "not an object");
    expect_reject("\"" DID "\"", strlen(DID) + 2, "not JSON");
    expect_reject("null", 4, "not JSON");
    const char nul[] = "{\"id\":\"did:plc:ewvi7nxzyoun6zhxrhs64oiz\"}\0garbage";
    expect_reject(nul, sizeof nul - 1, "not JSON");
    /* the one JSON rule (atproto/json_read.h): a NUL after a literal ends nothing */
    const char lit[] = "{\"id\":\"" DID "\",\"alsoKnownAs\":null\0}";
    expect_reject(lit, sizeof lit - 1, "not JSON");
}

static void test_rejects_wrong_id(void)
{
    expect_reject("{}", 2, "id does not match");
    expect_reject("{\"id\":42}", 9, "id does not match");
    expect_reject("{\"id\":\"did:plc:someoneelse000000000000\"}", 40, "id does not match");
    const char *upper = "{\"id\":\"DID:PLC:EWVI7NXZYOUN6ZHXRHS64OIZ\"}";
    expect_reject(upper, strlen(upper), "id does not match");
    /* Duplicate keys: a second "id" must not smuggle another identity past the check. */
    const char *dup = "{\"id\":\"" DID "\",\"id\":\"did:plc:evil\"}";
    expect_reject(dup, strlen(dup), "not JSON");
    const char *nul = "{\"id\":\"" DID "\\u0000x\"}";
    expect_reject(nul, strlen(nul), "not JSON");
}

static void test_rejects_huge_and_deep(void)
{
    size_t n = DID_DOC_MAX_BYTES + 10;
    char *big = malloc(n + 1);
    CHECK(big != NULL);
    if (!big) return;
    memset(big, ' ', n);
    memcpy(big, "{\"id\":\"" DID "\"", strlen("{\"id\":\"" DID "\""));
    big[n - 1] = '}';
    big[n] = '\0';
    expect_reject(big, n, "over");
    free(big);

    size_t depth = 40000;
    char *deep = malloc(depth * 2 + 1);
    CHECK(deep != NULL);
    if (!deep) return;
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    expect_reject(deep, 8000, "not JSON"); /* truncated: within the size cap */
    expect_reject(deep, depth * 2, "over");
    free(deep);
}

static void test_rejects_bad_types(void)
{
    const char *aka = "{\"id\":\"" DID "\",\"alsoKnownAs\":\"at://alice.test\"}";
    expect_reject(aka, strlen(aka), "alsoKnownAs");
    const char *svc = "{\"id\":\"" DID "\",\"service\":{\"id\":\"#atproto_pds\"}}";
    expect_reject(svc, strlen(svc), "service");
}

static void test_skips_hostile_entries(void)
{
    const char *json =
        "{\"id\":\"" DID "\",\"alsoKnownAs\":[1,null,{},\"at://not a handle\",\"at://x\","
        "\"at://carol.test\"],"
        "\"service\":[42,{\"id\":\"#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
        "\"serviceEndpoint\":{\"uri\":\"https://map.example\"}},"
        "{\"id\":\"did:plc:other#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
        "\"serviceEndpoint\":\"https://other.example\"},"
        "{\"id\":\"#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
        "\"serviceEndpoint\":\"javascript:alert(1)\"},"
        "{\"id\":\"#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
        "\"serviceEndpoint\":\"https://user:pw@evil.example\"},"
        "{\"id\":\"#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
        "\"serviceEndpoint\":\"https://sp ace.example\"},"
        "{\"id\":\"#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
        "\"serviceEndpoint\":\"https://\"},"
        "{\"id\":\"#atproto_pds\",\"type\":\"AtprotoPersonalDataServer\","
        "\"serviceEndpoint\":\"https://good.example/\"}]}";
    char err[128] = "";
    did_doc *d = parse(json, DID, err, sizeof err);
    CHECK(d != NULL);
    if (!d) return;
    CHECK(strcmp(did_doc_handle(d), "carol.test") == 0);
    CHECK(strcmp(did_doc_pds(d), "https://good.example") == 0);
    did_doc_free(d);
}

static void test_many_entries_bounded(void)
{
    char *json = malloc(DID_DOC_MAX_BYTES);
    CHECK(json != NULL);
    if (!json) return;
    size_t n = (size_t)sprintf(json, "{\"id\":\"%s\",\"alsoKnownAs\":[", DID);
    for (int i = 0; i < 500; i++)
        n += (size_t)sprintf(json + n, "%s\"at://h%d.test\"", i ? "," : "", i);
    n += (size_t)sprintf(json + n, "],\"service\":[");
    for (int i = 0; i < 200; i++)
        n += (size_t)sprintf(json + n,
                             "%s{\"id\":\"#s%d\",\"type\":\"T\",\"serviceEndpoint\":"
                             "\"https://s%d.example\"}",
                             i ? "," : "", i, i);
    n += (size_t)sprintf(json + n, "]}");
    char err[128] = "";
    did_doc *d = did_doc_parse(json, n, DID, err, sizeof err);
    CHECK(d != NULL);
    if (d) {
        CHECK(did_doc_aka_count(d) == 32);
        CHECK(strcmp(did_doc_handle(d), "h0.test") == 0);
        CHECK(did_doc_service(d, "#s0", "T") != NULL);
        CHECK(did_doc_service(d, "#s150", "T") == NULL);
    }
    did_doc_free(d);
    free(json);
}

static void test_did_web_url(void)
{
    char url[300];
    CHECK(did_web_url("did:web:example.com", false, url, sizeof url) == 0);
    CHECK(strcmp(url, "https://example.com/.well-known/did.json") == 0);
    CHECK(did_web_url("did:web:example.com", true, url, sizeof url) == 0);
    CHECK(strcmp(url, "https://example.com/.well-known/did.json") == 0);
    CHECK(did_web_url("did:web:localhost%3A8081", false, url, sizeof url) == 0);
    CHECK(strcmp(url, "https://localhost:8081/.well-known/did.json") == 0);
    CHECK(did_web_url("did:web:localhost%3a8081", true, url, sizeof url) == 0);
    CHECK(strcmp(url, "http://localhost:8081/.well-known/did.json") == 0);
    CHECK(did_web_url("did:web:127.0.0.1%3A9", true, url, sizeof url) == 0);
    CHECK(strcmp(url, "http://127.0.0.1:9/.well-known/did.json") == 0);
    CHECK(did_web_url("did:web:hold.test", true, url, sizeof url) == 0);
    CHECK(strcmp(url, "http://hold.test/.well-known/did.json") == 0);
    CHECK(did_web_url("did:web:Example.COM", false, url, sizeof url) == 0);
    CHECK(strcmp(url, "https://example.com/.well-known/did.json") == 0);
    CHECK(did_web_url("did:web:example.com:user:alice", false, url, sizeof url) == -1);
    CHECK(did_web_url("did:plc:ewvi7nxzyoun6zhxrhs64oiz", false, url, sizeof url) == -1);
    CHECK(did_web_url("did:web:", false, url, sizeof url) == -1);
    CHECK(did_web_url("did:web:%3A80", false, url, sizeof url) == -1);
    CHECK(did_web_url("did:web:host%3A99999", false, url, sizeof url) == -1);
    CHECK(did_web_url("did:web:host%3Aabc", false, url, sizeof url) == -1);
    CHECK(did_web_url("did:web:host%2F..%2Fadmin", false, url, sizeof url) == -1);
    CHECK(did_web_url("did:web:host%40evil.com", false, url, sizeof url) == -1);
    CHECK(did_web_url("did:web:example.com", false, url, 10) == -1);
}

int main(void)
{
    RUN(test_plc_document);
    RUN(test_minimal_document);
    RUN(test_rejects_garbage);
    RUN(test_rejects_wrong_id);
    RUN(test_rejects_huge_and_deep);
    RUN(test_rejects_bad_types);
    RUN(test_skips_hostile_entries);
    RUN(test_many_entries_bounded);
    RUN(test_did_web_url);
    CHECK_EXIT();
}
