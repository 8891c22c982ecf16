/* The lexicon validator against the project's own lexicons/ (tests run from the repo root):
 * good records of each type, each kind of defect, schema load errors, and its cost. */
#include "atproto/lexicon.h"
#include "tests/unit/check.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static lexicon_set *lex;

#define DIGEST "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"
#define DID "did:plc:7iza6de2dwap2sbkpav7c6c6"
#define CID "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"

static const char *const good_manifest =
    "{\"$type\":\"io.atcr.manifest\",\"repository\":\"tools/cli\",\"digest\":\"" DIGEST "\","
    "\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"schemaVersion\":2,"
    "\"holdDid\":\"did:web:hold.example.com\",\"createdAt\":\"2025-01-12T23:20:50.123Z\","
    "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"size\":1470,"
    "\"digest\":\"" DIGEST "\"},"
    "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"size\":3208,"
    "\"digest\":\"" DIGEST "\"},{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
    "\"size\":99,\"digest\":\"" DIGEST "\",\"urls\":[\"https://example.com/l\"]}],"
    "\"annotations\":{\"org.opencontainers.image.source\":\"https://github.com/o/r\"},"
    "\"manifestBlob\":{\"$type\":\"blob\",\"ref\":{\"$link\":\"" CID "\"},"
    "\"mimeType\":\"application/vnd.oci.image.manifest.v1+json\",\"size\":1234}}";

static const char *const good_index =
    "{\"$type\":\"io.atcr.manifest\",\"repository\":\"myapp\",\"digest\":\"" DIGEST "\","
    "\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"schemaVersion\":2,"
    "\"createdAt\":\"2025-01-12T23:20:50Z\",\"manifests\":[{\"mediaType\":"
    "\"application/vnd.oci.image.manifest.v1+json\",\"size\":500,\"digest\":\"" DIGEST "\","
    "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}}]}";

static const char *const good_tag =
    "{\"$type\":\"io.atcr.tag\",\"repository\":\"myapp\",\"tag\":\"v1.2.3\","
    "\"manifest\":\"at://" DID "/io.atcr.manifest/6c3c624b58dbbcd3c0dd82b4c53f\","
    "\"createdAt\":\"2025-01-12T23:20:50.123+01:00\"}";

static const char *const good_stats =
    "{\"$type\":\"io.atcr.hold.stats\",\"did\":\"" DID "\",\"repository\":\"myapp\","
    "\"pullCount\":12,\"pushCount\":3,\"lastPull\":\"2025-01-12T23:20:50Z\","
    "\"createdAt\":\"2025-01-01T00:00:00Z\",\"updatedAt\":\"2025-01-12T23:20:50Z\"}";

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j) fprintf(stderr, "    bad test JSON: %s\n", e.text);
    return j;
}

/* Validates text; returns 0/-1 and copies the reason into why. */
static int validate(const char *nsid, const json_t *rec, char *why, size_t n)
{
    why[0] = '\0';
    return lexicon_validate_record(lex, nsid, rec, why, n);
}

static bool valid_text(const char *nsid, const char *text)
{
    json_t *j = parse(text);
    char why[256];
    int rc = j ? validate(nsid, j, why, sizeof why) : -1;
    if (rc) fprintf(stderr, "    unexpectedly invalid: %s\n", why);
    json_decref(j);
    return rc == 0;
}

/* Applies one change to a copy of the base record (set field at a dotted path to the JSON
 * value, or delete it when value is NULL) and returns the validator's reason ("" if valid). */
static const char *mutate(const char *nsid, const char *base, const char *path, const char *value)
{
    static char why[256];
    json_t *rec = parse(base);
    if (!rec) return "bad base";
    json_t *parent = rec;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    char *key = buf, *dot;
    while ((dot = strchr(key, '.'))) {
        *dot = '\0';
        char *end;
        long idx = strtol(key, &end, 10);
        parent = *end == '\0' ? json_array_get(parent, (size_t)idx) : json_object_get(parent, key);
        key = dot + 1;
    }
    if (value) {
        json_t *v = parse(value);
        if (json_is_array(parent))
            json_array_set_new(parent, (size_t)strtol(key, NULL, 10), v);
        else
            json_object_set_new(parent, key, v);
    } else {
        json_object_del(parent, key);
    }
    if (validate(nsid, rec, why, sizeof why) == 0) why[0] = '\0';
    json_decref(rec);
    return why;
}

static bool says(const char *why, const char *want)
{
    if (strcmp(why, want) == 0) return true;
    fprintf(stderr, "    reason \"%s\", wanted \"%s\"\n", why, want);
    return false;
}

static void loads_project_lexicons(void)
{
    CHECK(lex != NULL);
    CHECK(lexicon_doc_count(lex) >= 9);
    CHECK(lexicon_is_record_type(lex, "io.atcr.manifest"));
    CHECK(lexicon_is_record_type(lex, "io.atcr.tag"));
    CHECK(lexicon_is_record_type(lex, "io.atcr.hold.stats"));
    CHECK(!lexicon_is_record_type(lex, "io.atcr.repo.getStats"));
    CHECK(!lexicon_is_record_type(lex, "io.atcr.manifest#blobReference"));
    CHECK(!lexicon_is_record_type(lex, "app.bsky.feed.post"));
}

static void good_records(void)
{
    CHECK(valid_text("io.atcr.manifest", good_manifest));
    CHECK(valid_text("io.atcr.manifest", good_index));
    CHECK(valid_text("io.atcr.tag", good_tag));
    CHECK(valid_text("io.atcr.hold.stats", good_stats));
    /* Fields a lexicon does not name are allowed; so is the explicit "#main" $type. */
    CHECK(says(mutate("io.atcr.tag", good_tag, "futureField", "{\"x\":[1,2]}"), ""));
    CHECK(says(mutate("io.atcr.tag", good_tag, "$type", "\"io.atcr.tag#main\""), ""));
    /* Deprecated fields still validate. */
    CHECK(says(mutate("io.atcr.tag", good_tag, "manifestDigest", "\"" DIGEST "\""), ""));
    CHECK(says(
        mutate("io.atcr.manifest", good_manifest, "holdEndpoint", "\"https://hold.example.com\""),
        ""));
    /* JSON cannot tell 2.0 from 2, and neither can the reference validator. */
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "schemaVersion", "2.0"), ""));
}

static void missing_required(void)
{
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "digest", NULL),
               "digest: required field missing"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "layers.1.digest", NULL),
               "layers[1].digest: required field missing"));
    CHECK(says(mutate("io.atcr.tag", good_tag, "createdAt", NULL),
               "createdAt: required field missing"));
    CHECK(says(mutate("io.atcr.hold.stats", good_stats, "pullCount", NULL),
               "pullCount: required field missing"));
    CHECK(says(mutate("io.atcr.manifest", good_index, "manifests.0.platform.os", NULL),
               "manifests[0].platform.os: required field missing"));
    CHECK(says(mutate("io.atcr.tag", good_tag, "$type", NULL), "record: $type must be a string"));
}

static void wrong_types(void)
{
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "layers.1.digest", "42"),
               "layers[1].digest: must be a string"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "schemaVersion", "\"2\""),
               "schemaVersion: must be an integer"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "schemaVersion", "2.5"),
               "schemaVersion: must be an integer"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "layers", "{}"),
               "layers: must be an array"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "config", "[]"),
               "config: must be an object"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "annotations", "\"x\""),
               "annotations: must be an object"));
    CHECK(says(mutate("io.atcr.hold.stats", good_stats, "pushCount", "null"),
               "pushCount: must be an integer"));
    CHECK(says(mutate("io.atcr.hold.stats", good_stats, "pushCount", "-1"),
               "pushCount: must be at least 0"));
    /* ATCR's published lexicon bounds no schemaVersion: any integer is a valid record. */
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "schemaVersion", "3"), ""));
    CHECK(says(mutate("io.atcr.tag", good_tag, "$type", "\"io.atcr.manifest\""),
               "record: $type must be io.atcr.tag"));
    char why[128];
    json_t *arr = parse("[]");
    CHECK(validate("io.atcr.tag", arr, why, sizeof why) == -1 &&
          says(why, "record: must be an object"));
    CHECK(validate("io.atcr.nope", arr, why, sizeof why) == -1 &&
          says(why, "io.atcr.nope: not a known record type"));
    json_decref(arr);
}

static void too_long(void)
{
    char big[400];
    memset(big, 'a', sizeof big);
    snprintf(big, sizeof big, "\"%0256d\"", 0);
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "repository", big),
               "repository: must not be longer than 255 bytes"));
    snprintf(big, sizeof big, "\"%0255d\"", 0);
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "repository", big), ""));
    snprintf(big, sizeof big, "\"%0129d\"", 0);
    CHECK(says(mutate("io.atcr.tag", good_tag, "tag", big),
               "tag: must not be longer than 128 bytes"));
    /* maxLength counts UTF-8 bytes: 128 two-byte characters are 256 bytes. */
    char utf[600] = "\"";
    for (int i = 0; i < 128; i++)
        strcat(utf, "\xc3\xa9");
    strcat(utf, "\"");
    CHECK(says(mutate("io.atcr.tag", good_tag, "tag", utf),
               "tag: must not be longer than 128 bytes"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "config",
                      "{\"mediaType\":\"a/b\",\"size\":1,\"digest\":\"sha256:\"}"),
               "config.digest: must not be shorter than 8 bytes"));
}

static void bad_formats(void)
{
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "createdAt", "\"2025-01-12 23:20:50Z\""),
               "createdAt: must be a valid datetime"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "createdAt", "\"2025-01-12T23:20:50\""),
               "createdAt: must be a valid datetime"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "holdDid", "\"hold.example.com\""),
               "holdDid: must be a valid did"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "holdEndpoint", "\"not a uri\""),
               "holdEndpoint: must be a valid uri"));
    CHECK(says(mutate("io.atcr.manifest", good_manifest, "layers.1.urls.0", "\"//x\""),
               "layers[1].urls[0]: must be a valid uri"));
    CHECK(says(mutate("io.atcr.tag", good_tag, "manifest", "\"https://example.com/x\""),
               "manifest: must be a valid at-uri"));
    CHECK(says(mutate("io.atcr.tag", good_tag, "manifest", "\"at://" DID "/io.atcr.manifest/a/b\""),
               "manifest: must be a valid at-uri"));
    CHECK(says(mutate("io.atcr.hold.stats", good_stats, "did", "\"did:PLC:x\""),
               "did: must be a valid did"));
    CHECK(says(mutate("io.atcr.hold.stats", good_stats, "updatedAt", "\"2025-02-30T00:00:00Z\""),
               "updatedAt: must be a valid datetime"));
}

static void bad_blob(void)
{
    const char *const cases[][2] = {
        {"\"bafy\"", "manifestBlob: must be a blob object"},
        {"{\"$type\":\"blob\",\"ref\":\"" CID "\",\"mimeType\":\"a/b\",\"size\":1}",
         "manifestBlob: blob ref must be {\"$link\": cid}"},
        {"{\"$type\":\"blob\",\"ref\":{\"$link\":\"nope\"},\"mimeType\":\"a/b\",\"size\":1}",
         "manifestBlob: blob ref must be {\"$link\": cid}"},
        {"{\"$type\":\"blob\",\"ref\":{\"$link\":\"" CID "\"},\"size\":1}",
         "manifestBlob: blob mimeType must be a non-empty string"},
        {"{\"$type\":\"blob\",\"ref\":{\"$link\":\"" CID "\"},\"mimeType\":\"a/b\",\"size\":-5}",
         "manifestBlob: blob size must be a non-negative integer"},
        {"{\"$type\":\"image\",\"ref\":{\"$link\":\"" CID "\"},\"mimeType\":\"a/b\",\"size\":5}",
         "manifestBlob: blob $type must be \"blob\""},
        {"{\"cid\":\"" CID "\",\"mimeType\":\"a/b\"}", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(says(mutate("io.atcr.manifest", good_manifest, "manifestBlob", cases[i][0]),
                   cases[i][1]));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Schema errors are reported at load time with the file and place. */
static void load_errors(void)
{
    char dir[] = "/tmp/lexicon-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/a.json", dir);

    write_file(path,
               "{\"lexicon\":1,\"id\":\"com.example.a\",\"defs\":{\"main\":{\"type\":\"record\","
               "\"key\":\"tid\",\"record\":{\"type\":\"object\",\"properties\":{\"x\":"
               "{\"type\":\"ref\",\"ref\":\"#missing\"}}}}}}");
    CHECK(lexicon_load_dir(dir, err, sizeof err) == NULL);
    CHECK(strstr(err, "unresolved ref \"com.example.a#missing\"") != NULL);

    write_file(path,
               "{\"lexicon\":1,\"id\":\"com.example.a\",\"defs\":{\"main\":{\"type\":\"record\","
               "\"key\":\"tid\",\"record\":{\"type\":\"object\",\"properties\":{\"x\":"
               "{\"type\":\"strin\"}}}}}}");
    CHECK(lexicon_load_dir(dir, err, sizeof err) == NULL);
    CHECK(strstr(err, "defs.main.record.x: unknown type \"strin\"") != NULL);

    write_file(path, "{\"lexicon\":2,\"id\":\"com.example.a\",\"defs\":{}}");
    CHECK(lexicon_load_dir(dir, err, sizeof err) == NULL);
    CHECK(strstr(err, "lexicon: must be 1") != NULL);

    write_file(path,
               "{\"lexicon\":1,\"id\":\"com.example.a\",\"defs\":{\"main\":{\"type\":\"record\","
               "\"key\":\"tid\",\"record\":{\"type\":\"object\",\"required\":[\"y\"],"
               "\"properties\":{}}}}}");
    CHECK(lexicon_load_dir(dir, err, sizeof err) == NULL);
    CHECK(strstr(err, "required field 'y' is not a property") != NULL);

    /* A union across documents, nullable, enum, const and graphemes. */
    write_file(path,
               "{\"lexicon\":1,\"id\":\"com.example.a\",\"defs\":{\"main\":{\"type\":\"record\","
               "\"key\":\"tid\",\"record\":{\"type\":\"object\",\"nullable\":[\"n\"],"
               "\"required\":[\"u\"],\"properties\":{\"n\":{\"type\":\"string\"},"
               "\"u\":{\"type\":\"union\",\"refs\":[\"com.example.b#thing\"],\"closed\":true},"
               "\"e\":{\"type\":\"string\",\"enum\":[\"x\",\"y\"]},"
               "\"c\":{\"type\":\"boolean\",\"const\":true},"
               "\"g\":{\"type\":\"string\",\"maxGraphemes\":2},"
               "\"l\":{\"type\":\"string\",\"format\":\"language\"}}}}}}");
    snprintf(path, sizeof path, "%s/b.json", dir);
    write_file(path, "{\"lexicon\":1,\"id\":\"com.example.b\",\"defs\":{\"thing\":{\"type\":"
                     "\"object\",\"required\":[\"k\"],\"properties\":{\"k\":{\"type\":\"integer\","
                     "\"enum\":[1,2]}}}}}");
    lexicon_set *s = lexicon_load_dir(dir, err, sizeof err);
    CHECK(s != NULL);
    if (s) {
        lexicon_set *keep = lex;
        lex = s;
        const char *base = "{\"$type\":\"com.example.a\",\"n\":null,\"u\":{\"$type\":"
                           "\"com.example.b#thing\",\"k\":2},\"e\":\"y\",\"c\":true,"
                           "\"g\":\"e\xcc\x81\xf0\x9f\x87\xab\xf0\x9f\x87\xb7\",\"l\":\"pt-BR\"}";
        CHECK(says(mutate("com.example.a", base, "x", "1"), ""));
        CHECK(says(mutate("com.example.a", base, "u.k", "3"),
                   "u.k: must be one of the enumerated values"));
        CHECK(says(mutate("com.example.a", base, "u.$type", "\"com.example.b#other\""),
                   "u: $type must be one of the union's refs"));
        CHECK(says(mutate("com.example.a", base, "e", "\"z\""),
                   "e: must be one of the enumerated values"));
        CHECK(says(mutate("com.example.a", base, "c", "false"), "c: must be true"));
        CHECK(says(mutate("com.example.a", base, "g", "\"abc\""),
                   "g: must not be longer than 2 graphemes"));
        CHECK(
            says(mutate("com.example.a", base, "l", "\"english\""), "l: must be a valid language"));
        lex = keep;
        lexicon_free(s);
    }
    unlink(path);
    snprintf(path, sizeof path, "%s/a.json", dir);
    unlink(path);
    rmdir(dir);
}

/* The ingest path validates every record: measure one manifest with two layers. */
static void cost_per_record(void)
{
    json_t *rec = parse(good_manifest);
    char why[128];
    enum { ROUNDS = 1000000 };
    struct timespec a, b;
    int bad = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < ROUNDS; i++)
        bad += lexicon_validate_record(lex, "io.atcr.manifest", rec, why, sizeof why) != 0;
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / ROUNDS;
    fprintf(stderr, "    lexicon: %.0f ns per io.atcr.manifest record (%d rounds)\n", ns, ROUNDS);
    CHECK(bad == 0);
    CHECK(ns < 20000); /* loose: sanitizer builds are several times slower */
    json_decref(rec);
}

int main(void)
{
    char err[512];
    lex = lexicon_load_dir("lexicons", err, sizeof err);
    if (!lex) fprintf(stderr, "    loading lexicons: %s\n", err);
    RUN(loads_project_lexicons);
    if (lex) {
        RUN(good_records);
        RUN(missing_required);
        RUN(wrong_types);
        RUN(too_long);
        RUN(bad_formats);
        RUN(bad_blob);
        RUN(load_errors);
        RUN(cost_per_record);
    }
    lexicon_free(lex);
    CHECK_EXIT();
}
