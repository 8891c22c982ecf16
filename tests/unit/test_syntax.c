/* The atproto interop examples (interop-test-files/syntax in bluesky-social/atproto, the
 * *_valid.txt and *_invalid.txt files) and the OCI distribution grammar, checked against
 * atproto/syntax.c. Very long examples are built at run time from the generator each file names. */
#include "atproto/syntax.h"
#include "tests/unit/check.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef bool (*checker)(const char *, size_t);

#define N(a) (sizeof(a) / sizeof((a)[0]))

static int expect_all(checker fn, const char *const *list, size_t n, bool want)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (fn(list[i], strlen(list[i])) != want) {
            fprintf(stderr, "    expected %s: \"%s\"\n", want ? "valid" : "invalid", list[i]);
            bad++;
        }
    }
    return bad;
}

/* prefix + ch * n + suffix, in a static buffer big enough for every generated example. */
static const char *repeat(const char *prefix, char ch, size_t n, const char *suffix)
{
    static char buf[9000];
    size_t p = strlen(prefix), s = strlen(suffix);
    memcpy(buf, prefix, p);
    memset(buf + p, ch, n);
    memcpy(buf + p + n, suffix, s + 1);
    return buf;
}

static bool gen_ok(checker fn, const char *prefix, char ch, size_t n, const char *suffix)
{
    const char *s = repeat(prefix, ch, n, suffix);
    return fn(s, strlen(s));
}

static void did_examples(void)
{
    static const char *const valid[] = {
        "did:method:val",
        "did:method:VAL",
        "did:method:val123",
        "did:method:123",
        "did:method:val-two",
        "did:method:val_two",
        "did:method:val.two",
        "did:method:val:two",
        "did:method:val%BB",
        "did:m:v",
        "did:method::::val",
        "did:method:-",
        "did:method:-:_:.:%ab",
        "did:method:.",
        "did:method:_",
        "did:method::.",
        "did:onion:2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid",
        "did:example:123456789abcdefghi",
        "did:plc:7iza6de2dwap2sbkpav7c6c6",
        "did:web:example.com",
        "did:web:localhost%3A1234",
        "did:key:zQ3shZc2QzApp2oymGvQbzP8eKheVshBHbU4ZYjeXqwSKEn6N",
        "did:ethr:0xb9c5714089478a327f09197987f16f9e5d936e8a"};
    static const char *const invalid[] = {"did",
                                          "didmethodval",
                                          "method:did:val",
                                          "did:method:",
                                          "didmethod:val",
                                          "did:methodval)",
                                          ":did:method:val",
                                          "did.method.val",
                                          "did:method:val:",
                                          "did:method:val%",
                                          "DID:method:val",
                                          "did:METHOD:val",
                                          "did:m123:val",
                                          "did:method:val/two",
                                          "did:method:val?two",
                                          "did:method:val#two",
                                          "did:method:val%zz",
                                          "did:method:val%b",
                                          "",
                                          "did:web:ex ample.com"};
    CHECK(expect_all(atp_is_did, valid, N(valid), true) == 0);
    CHECK(expect_all(atp_is_did, invalid, N(invalid), false) == 0);
    CHECK(gen_ok(atp_is_did, "did:method:", 'v', 2048 - 11, ""));
    CHECK(!gen_ok(atp_is_did, "did:method:", 'v', 2048 - 10, ""));
}

static void handle_examples(void)
{
    static const char *const valid[] = {"A.ISI.EDU",
                                        "XX.LCS.MIT.EDU",
                                        "SRI-NIC.ARPA",
                                        "john.test",
                                        "jan.test",
                                        "a234567890123456789.test",
                                        "john2.test",
                                        "john-john.test",
                                        "john.bsky.app",
                                        "jo.hn",
                                        "a.co",
                                        "a.org",
                                        "joh.n",
                                        "j0.h0",
                                        "jaymome-johnber123456.test",
                                        "jay.mome-johnber123456.test",
                                        "john.test.bsky.app",
                                        "john.t",
                                        "laptop.local",
                                        "blah.arpa",
                                        "xn--ls8h.test",
                                        "xn--bcher-kva.tld",
                                        "expyuzz4wqqyqhjn.onion",
                                        "friend.expyuzz4wqqyqhjn.onion",
                                        "12345.test",
                                        "8.cn",
                                        "4chan.org",
                                        "4chan.net",
                                        "blah.4chan.org",
                                        "thing.a01",
                                        "120.0.0.1.com",
                                        "0john.testt",
                                        "9sta--ck.com",
                                        "99stack.com",
                                        "0ohn.test",
                                        "john.t--t",
                                        "thing.0aa.thing",
                                        "stack.com",
                                        "sta-ck.com",
                                        "sta---ck.com",
                                        "sta--ck9.com",
                                        "stack99.com",
                                        "sta99ck.com",
                                        "google.com.uk",
                                        "google.co.in",
                                        "google.com",
                                        "maselkowski.pl",
                                        "m.maselkowski.pl",
                                        "xn--masekowski-d0b.pl",
                                        "xn--fiqa61au8b7zsevnm8ak20mc4a87e.xn--fiqs8s",
                                        "xn--stackoverflow.com",
                                        "stackoverflow.xn--com",
                                        "stackoverflow.co.uk"};
    static const char *const invalid[] = {"did:thing.test",
                                          "did:thing",
                                          "john-.test",
                                          "john.0",
                                          "john.-",
                                          "xn--bcher-.tld",
                                          "john..test",
                                          "jo_hn.test",
                                          "-john.test",
                                          ".john.test",
                                          "jo!hn.test",
                                          "jo%hn.test",
                                          "jo&hn.test",
                                          "jo@hn.test",
                                          "jo*hn.test",
                                          "jo|hn.test",
                                          "jo:hn.test",
                                          "jo/hn.test",
                                          "john\xf0\x9f\x92\xa9.test",
                                          "b\xc3\xbc"
                                          "cher.test",
                                          "john .test",
                                          "john.test.",
                                          "john",
                                          "john.",
                                          ".john",
                                          " john.test",
                                          "john.test ",
                                          "joh-.test",
                                          "john.-est",
                                          "john.tes-",
                                          "org",
                                          "ai",
                                          "gg",
                                          "io",
                                          "cn.8",
                                          "thing.0aa",
                                          "127.0.0.1",
                                          "192.168.0.142",
                                          "fe80::7325:8a97:c100:94b",
                                          "2600:3c03::f03c:9100:feb0:af1f",
                                          "-notvalid.at-all",
                                          "-thing.com",
                                          "www.mase\xc5\x82kowski.pl.com",
                                          ""};
    CHECK(expect_all(atp_is_handle, valid, N(valid), true) == 0);
    CHECK(expect_all(atp_is_handle, invalid, N(invalid), false) == 0);
    CHECK(gen_ok(atp_is_handle, "short.", 'o', 63, ".test"));
    CHECK(!gen_ok(atp_is_handle, "short.", 'o', 64, ".test"));
    /* 253 characters in all is the limit: 3 labels of 63 + 1 of 61 + 3 dots. */
    char h[260];
    memset(h, 'a', sizeof h);
    h[63] = h[127] = h[191] = '.';
    CHECK(atp_is_handle(h, 253));
    h[253] = '.', h[254] = 'b';
    CHECK(!atp_is_handle(h, 255));
}

static void nsid_examples(void)
{
    static const char *const valid[] = {
        "com.example.fooBar",
        "com.example.fooBarV2",
        "net.users.bob.ping",
        "a.b.c",
        "m.xn--masekowski-d0b.pl",
        "one.two.three",
        "one.two.three.four-and.FiVe",
        "one.2.three",
        "a-0.b-1.c",
        "a0.b1.cc",
        "cn.8.lex.stuff",
        "test.12345.record",
        "a01.thing.record",
        "a.0.c",
        "xn--fiqs8s.xn--fiqa61au8b7zsevnm8ak20mc4a87e.record.two",
        "a0.b1.c3",
        "com.example.f00",
        "onion.expyuzz4wqqyqhjn.spec.getThing",
        "onion.g2zyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.lex.deleteThing",
        "org.4chan.lex.getThing",
        "io.atcr.manifest",
        "io.atcr.hold.stats"};
    static const char *const invalid[] = {"com.example.foo.*",
                                          "com.example.foo.blah*",
                                          "com.example.foo.*blah",
                                          "com.exa\xf0\x9f\x92\xa9ple.thing",
                                          "a-0.b-1.c-3",
                                          "a-0.b-1.c-o",
                                          "1.0.0.127.record",
                                          "0two.example.foo",
                                          "example.com",
                                          "com.example",
                                          "a.",
                                          ".one.two.three",
                                          "one.two.three ",
                                          "one.two..three",
                                          "one .two.three",
                                          " one.two.three",
                                          "com.atproto.feed.p@st",
                                          "com.atproto.feed.p_st",
                                          "com.atproto.feed.p*st",
                                          "com.atproto.feed.po#t",
                                          "com.atproto.feed.p!ot",
                                          "com.example-.foo",
                                          "com.example.fooBar.2",
                                          ""};
    CHECK(expect_all(atp_is_nsid, valid, N(valid), true) == 0);
    CHECK(expect_all(atp_is_nsid, invalid, N(invalid), false) == 0);
    CHECK(gen_ok(atp_is_nsid, "com.", 'o', 63, ".foo"));
    CHECK(gen_ok(atp_is_nsid, "com.example.", 'o', 63, ""));
    CHECK(!gen_ok(atp_is_nsid, "com.", 'o', 64, ".foo"));
    CHECK(!gen_ok(atp_is_nsid, "com.example.", 'o', 64, ""));
    char mid[400] = "com.";
    for (int i = 0; i < 40; i++)
        strcat(mid, "middle.");
    strcat(mid, "foo");
    CHECK(atp_is_nsid(mid, strlen(mid)));
    for (int i = 0; i < 10; i++)
        strcat(mid, ".middle");
    CHECK(!atp_is_nsid(mid, strlen(mid)));
}

static void rkey_examples(void)
{
    /* "pre:fix" and "literal:self" were invalid in old versions of the file; the current record
     * key spec allows ':' so they are valid here. */
    static const char *const valid[] = {"self",   "example.com",   "~1.2-3_",
                                        "dHJ1ZQ", "pre:fix",       "literal:self",
                                        "_",      "3jzfcijpj2z2a", "a"};
    static const char *const invalid[] = {"alpha/beta", ".",         "..",        "#extra",
                                          "@handle",    "any space", "any+space", "number[3]",
                                          "number(3)",  "\"quote\"", "dHJ1ZQ==",  ""};
    CHECK(expect_all(atp_is_rkey, valid, N(valid), true) == 0);
    CHECK(expect_all(atp_is_rkey, invalid, N(invalid), false) == 0);
    CHECK(gen_ok(atp_is_rkey, "", 'o', 512, ""));
    CHECK(!gen_ok(atp_is_rkey, "", 'o', 513, ""));
}

static void tid_examples(void)
{
    static const char *const valid[] = {"3jzfcijpj2z2a", "7777777777777", "3zzzzzzzzzzzz",
                                        "a222222222222", "j222222222222", "azzzzzzzzzzzz"};
    static const char *const invalid[] = {
        "3jzfcijpj2z21", "0000000000000",    "3JZFCIJPJ2Z2A", "3jzfcijpj2z2aa", "3jzfcijpj2z2",
        "222",           "3jzf-cij-pj2z-2a", "zzzzzzzzzzzzz", "kjzfcijpj2z2a",  ""};
    CHECK(expect_all(atp_is_tid, valid, N(valid), true) == 0);
    CHECK(expect_all(atp_is_tid, invalid, N(invalid), false) == 0);
}

static void at_uri_examples(void)
{
    static const char *const valid[] = {"at://did:plc:asdf123",
                                        "at://user.bsky.social",
                                        "at://did:plc:asdf123/com.atproto.feed.post",
                                        "at://did:plc:asdf123/com.atproto.feed.post/record",
                                        "at://did:plc:asdf123/com.atproto.feed.post/asdf123",
                                        "at://did:plc:asdf123/com.atproto.feed.post/a",
                                        "at://did:plc:asdf123/com.atproto.feed.post/asdf-123",
                                        "at://did:abc:123",
                                        "at://did:abc:123/io.nsid.someFunc/record-key",
                                        "at://did:abc:123/io.nsid.someFunc/self.",
                                        "at://did:abc:123/io.nsid.someFunc/lang:",
                                        "at://did:abc:123/io.nsid.someFunc/:",
                                        "at://did:abc:123/io.nsid.someFunc/-",
                                        "at://did:abc:123/io.nsid.someFunc/_",
                                        "at://did:abc:123/io.nsid.someFunc/~",
                                        "at://did:abc:123/io.nsid.someFunc/...",
                                        "at://did:plc:asdf123/com.atproto.feed.postV2"};
    static const char *const invalid[] = {
        "a://did:plc:asdf123",
        "at//did:plc:asdf123",
        "at:/a/did:plc:asdf123",
        "at:/did:plc:asdf123",
        "AT://did:plc:asdf123",
        "http://did:plc:asdf123",
        "://did:plc:asdf123",
        "at:did:plc:asdf123",
        "at:///did:plc:asdf123",
        "at://:/did:plc:asdf123",
        "at:/ /did:plc:asdf123",
        "at://did:plc:asdf123 ",
        "at://did:plc:asdf123/ ",
        " at://did:plc:asdf123",
        "at://did:plc:asdf123/com.atproto.feed.post ",
        "at://did:plc:asdf123/com.atproto.feed.post# ",
        "at://did:plc:asdf123/com.atproto.feed.post#/ ",
        "at://did:plc:asdf123/com.atproto.feed.post#/frag",
        "at://did:plc:asdf123/com.atproto.feed.post#fr ag",
        "//did:plc:asdf123",
        "at://name",
        "at://name.0",
        "at://diD:plc:asdf123",
        "at://did:plc:asdf123/com.atproto.feed.p@st",
        "at://did:plc:asdf123/com.atproto.feed.p$st",
        "at://did:plc:asdf123/com.atproto.feed.p%st",
        "at://did:plc:asdf123/com.atproto.feed.p&st",
        "at://did:plc:asdf123/com.atproto.feed.p()t",
        "at://did:plc:asdf123/com.atproto.feed_post",
        "at://did:plc:asdf123/-com.atproto.feed.post",
        "at://did:plc:asdf@123/com.atproto.feed.post",
        "at://DID:plc:asdf123",
        "at://user.bsky.123",
        "at://bsky",
        "at://did:plc:",
        "at://frag",
        "at://user.bsky.social//",
        "at://user.bsky.social//com.atproto.feed.post",
        "at://user.bsky.social/com.atproto.feed.post//",
        "at://did:plc:asdf123/com.atproto.feed.post/asdf123/more/more',",
        "at://did:plc:asdf123/short/stuff",
        "at://did:plc:asdf123/12345",
        "at://did:plc:asdf123/",
        "at://user.bsky.social/",
        "at://did:plc:asdf123/com.atproto.feed.post/",
        "at://did:plc:asdf123/com.atproto.feed.post/record/",
        "at://did:plc:asdf123/com.atproto.feed.post/record/#/frag",
        "at://did:plc:asdf123/com.atproto.feed.post/asdf123/asdf",
        "at://did:plc:asdf123#",
        "at://did:plc:asdf123##",
        "#at://did:plc:asdf123",
        "at://did:plc:asdf123#/asdf#/asdf",
        "at://did:plc:asdf123/com.atproto.feed.post/%23",
        "at://did:plc:asdf123/com.atproto.feed.post/$@!*)(:,;~.sdf123",
        "at://did:plc:asdf123/com.atproto.feed.post/~'sdf123\")",
        "at://did:plc:asdf123/com.atproto.feed.post/$",
        "at://did:plc:asdf123/com.atproto.feed.post/@",
        "at://did:plc:asdf123/com.atproto.feed.post/!",
        "at://did:plc:asdf123/com.atproto.feed.post/*",
        "at://did:plc:asdf123/com.atproto.feed.post/(",
        "at://did:plc:asdf123/com.atproto.feed.post/,",
        "at://did:plc:asdf123/com.atproto.feed.post/;",
        "at://did:plc:asdf123/com.atproto.feed.post/abc%30123",
        "at://did:plc:asdf123/com.atproto.feed.post/%30",
        "at://did:plc:asdf123/com.atproto.feed.post/%3",
        "at://did:plc:asdf123/com.atproto.feed.post/%",
        "at://did:plc:asdf123/com.atproto.feed.post/%zz",
        "at://did:plc:asdf123/com.atproto.feed.post/%%%",
        "at://did:plc:asdf123/com.atproto.feed.post/.",
        "at://did:plc:asdf123/com.atproto.feed.post/..",
        ""};
    CHECK(expect_all(atp_is_at_uri, valid, N(valid), true) == 0);
    CHECK(expect_all(atp_is_at_uri, invalid, N(invalid), false) == 0);
    CHECK(gen_ok(atp_is_at_uri, "at://did:plc:asdf123/com.atproto.feed.post/", 'o', 512, ""));
    CHECK(!gen_ok(atp_is_at_uri, "at://did:plc:asdf123/com.atproto.feed.post/", 'o', 8200, ""));
}

static void datetime_examples(void)
{
    static const char *const valid[] = {"1985-04-12T23:20:50.123Z",
                                        "1985-04-12T23:20:50.000Z",
                                        "2000-01-01T00:00:00.000Z",
                                        "1985-04-12T23:20:50.123456Z",
                                        "1985-04-12T23:20:50.120Z",
                                        "1985-04-12T23:20:50.120000Z",
                                        "1985-04-12T23:20:50.1235678912345Z",
                                        "1985-04-12T23:20:50.100Z",
                                        "1985-04-12T23:20:50Z",
                                        "1985-04-12T23:20:50.0Z",
                                        "1985-04-12T23:20:50.123+00:00",
                                        "1985-04-12T23:20:50.123-07:00",
                                        "1985-04-12T23:20:50.123+07:00",
                                        "1985-04-12T23:20:50.123+01:45",
                                        "0985-04-12T23:20:50.123-07:00",
                                        "0123-01-01T00:00:00.000Z",
                                        "1985-04-12T23:20:50.1Z",
                                        "1985-04-12T23:20:50.12Z",
                                        "1985-04-12T23:20:50.1234Z",
                                        "1985-04-12T23:20:50.12345Z",
                                        "1985-04-12T23:20:50.1234567Z",
                                        "1985-04-12T23:20:50.12345678Z",
                                        "1985-04-12T23:20:50.123456789Z",
                                        "1985-04-12T23:20:50.1234567890Z",
                                        "1985-04-12T23:20:50.12345678901Z",
                                        "1985-04-12T23:20:50.123456789012Z",
                                        "2024-02-29T12:00:00Z",
                                        "2000-02-29T12:00:00Z"};
    static const char *const invalid[] = {"1985-04-12T23:20:50.123z",
                                          "01985-04-12T23:20:50.123Z",
                                          "985-04-12T23:20:50.123Z",
                                          "1985-04-12T23:20:50.Z",
                                          "1985-04-32T23;20:50.123Z",
                                          "1985\xe2\x80\x94"
                                          "04-32T23;20:50.123Z",
                                          " 1985-04-12T23:20:50.123Z",
                                          "1985-04-12T23:20:50.123Z ",
                                          "1985-04-12T 23:20:50.123Z",
                                          "1985-4-12T23:20:50.123Z",
                                          "1985-04-2T23:20:50.123Z",
                                          "1985-04-12T3:20:50.123Z",
                                          "1985-04-12T23:0:50.123Z",
                                          "1985-04-12T23:20:5.123Z",
                                          "1985-004-12T23:20:50.123Z",
                                          "1985-04-012T23:20:50.123Z",
                                          "1985-04-12T023:20:50.123Z",
                                          "1985-04-12T23:020:50.123Z",
                                          "1985-04-12T23:20:050.123Z",
                                          "1985-04-12t23:20:50.123Z",
                                          "1985-04-12T23:20:50.123-00:00",
                                          "1985-04-12_23:20:50.123Z",
                                          "1985-04-12 23:20:50.123Z",
                                          "1985-04-274T23:20:50.123Z",
                                          "1985-04-12T23:20:50.123",
                                          "1985-04-12T23:20:50",
                                          "1985-04-12",
                                          "1985-04-12T23:20Z",
                                          "1985-04-12T23:20:5Z",
                                          "+001985-04-12T23:20:50.123Z",
                                          "23:20:50.123Z",
                                          "1985-04-12T23:20:50.123+00",
                                          "1985-04-12T23:20:50.123+00:0",
                                          "1985-04-12T23:20:50.123+0:00",
                                          "1985-04-12T23:20:50.123+0000",
                                          "1985-04-12T23:20:50.123+",
                                          "1985-04-12T23:20:50.123-",
                                          "-000001-12-31T23:00:00.000Z",
                                          "1985-13-12T23:20:50Z",
                                          "1985-02-29T23:20:50Z",
                                          "1900-02-29T00:00:00Z",
                                          "1985-04-31T00:00:00Z",
                                          "1985-04-12T24:00:00Z",
                                          "1985-04-12T23:60:00Z",
                                          ""};
    CHECK(expect_all(atp_is_datetime, valid, N(valid), true) == 0);
    CHECK(expect_all(atp_is_datetime, invalid, N(invalid), false) == 0);
}

static void cid_examples(void)
{
    /* The interop file also lists base58btc ("z..."), base16 and other multibase forms; the
     * header narrows CIDs to base32 v1 and base58 v0, which is what PDSs and Jetstream emit. */
    static const char *const valid[] = {
        "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
        "bafybeie5gq4jxvzmsym6hjlwxej4rwdoxt7wadqvmmwbqi7r27fclha2va",
        "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
        "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"};
    static const char *const invalid[] = {
        "example.com",
        "https://example.com",
        "cid:bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
        ".",
        "12345",
        " bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
        "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi ",
        "bafybe igdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
        "noop",
        "BAFYBEIGDYRZT5SFP7UDM7HU76UH7Y26NF3EFUYLQABF3OCLGTQY55FBZDI",
        "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMn0",
        "bafy",
        ""};
    CHECK(expect_all(atp_is_cid, valid, N(valid), true) == 0);
    CHECK(expect_all(atp_is_cid, invalid, N(invalid), false) == 0);
}

/* Every byte, in the middle of an otherwise valid string, against each syntax's alphabet as
 * its spec writes it: the scanners' byte classes hold no more and no fewer characters. */
static void every_byte(void)
{
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static const struct {
        checker fn;
        const char *prefix, *suffix, *extra; /* allowed: alnum minus what is not, plus extra */
        const char *not_allowed;
    } cases[] = {
        {atp_is_rkey, "ab", "cd", ".-_:~", ""},
        {atp_is_did, "did:plc:ab", "zz", "._:-", ""}, /* "%zz" is no escape */
        /* base32 lowercase: a-z and 2-7 */
        {atp_is_cid, "bafyrei", "aaaaaaaa", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZ01890"},
        /* a TID's characters after the first: a-z and 2-7 */
        {atp_is_tid, "3jzfcij", "j2z2a", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZ01890"},
        /* base58btc: alphanumerics but 0 O I l */
        {atp_is_cid, "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGs", "nR", "", "0OIl"},
        /* sha256's lowercase hex */
        {oci_is_digest, "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b",
         "b", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZghijklmnopqrstuvwxyz"},
    };
    for (size_t k = 0; k < N(cases); k++) {
        for (int b = 1; b < 256; b++) {
            char s[128];
            size_t pn = strlen(cases[k].prefix), sn = strlen(cases[k].suffix);
            memcpy(s, cases[k].prefix, pn);
            s[pn] = (char)b;
            memcpy(s + pn + 1, cases[k].suffix, sn);
            bool want =
                (strchr(alnum, b) && !strchr(cases[k].not_allowed, b)) || strchr(cases[k].extra, b);
            if (cases[k].fn(s, pn + 1 + sn) != want) {
                fprintf(stderr, "    case %zu, byte %d: %s\n", k, b, want ? "refused" : "taken");
                CHECK(0);
            }
        }
    }
}

static void utf8_cases(void)
{
    static const char *const valid[] = {"",
                                        "plain ascii",
                                        "b\xc3\xbc"
                                        "cher",
                                        "\xe2\x82\xac",
                                        "\xf0\x9f\x92\xa9",
                                        "\xf4\x8f\xbf\xbf",
                                        "\xed\x9f\xbf",
                                        "\xee\x80\x80"};
    static const char *const invalid[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong 3-byte */
        "\xf0\x80\x80\xaf", /* overlong 4-byte */
        "\xed\xa0\x80",     /* U+D800 surrogate */
        "\xed\xbf\xbf",     /* U+DFFF surrogate */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80", "\xff", "\x80", "abc\xc3", "\xe2\x82", "\xe2\x28\xa1", "\xf0\x9f\x92"};
    CHECK(expect_all(atp_is_utf8, valid, N(valid), true) == 0);
    CHECK(expect_all(atp_is_utf8, invalid, N(invalid), false) == 0);
    CHECK(atp_is_utf8("a\0b", 3)); /* NUL is a valid code point; JSON strings may carry it */
}

static void oci_names(void)
{
    static const char *const valid_repo[] = {
        "myapp",    "library/ubuntu", "a",         "a/b/c", "foo.bar",          "foo_bar",
        "foo__bar", "foo-bar",        "foo---bar", "0",     "my-org/my.app_v2", "a1b2/c3"};
    static const char *const invalid_repo[] = {
        "",     "MyApp", "foo/", "/foo", "foo//bar", "foo___bar", "foo._bar", "-foo",
        "foo-", "foo.",  ".foo", "_foo", "foo bar",  "foo:bar",   "foo/-bar", "f\xc3\xbc"};
    CHECK(expect_all(oci_is_repository, valid_repo, N(valid_repo), true) == 0);
    CHECK(expect_all(oci_is_repository, invalid_repo, N(invalid_repo), false) == 0);
    CHECK(gen_ok(oci_is_repository, "", 'a', 255, ""));
    CHECK(!gen_ok(oci_is_repository, "", 'a', 256, ""));

    static const char *const valid_tag[] = {"latest", "v1.2.3", "_", "1.0-rc_1", "A", "a.-_"};
    static const char *const invalid_tag[] = {"",    ".hidden", "-x",        "v1:2",
                                              "a/b", "v 1",     "t\xc3\xa4g"};
    CHECK(expect_all(oci_is_tag, valid_tag, N(valid_tag), true) == 0);
    CHECK(expect_all(oci_is_tag, invalid_tag, N(invalid_tag), false) == 0);
    CHECK(gen_ok(oci_is_tag, "", 'a', 128, ""));
    CHECK(!gen_ok(oci_is_tag, "", 'a', 129, ""));

    static const char *const valid_digest[] = {
        "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b",
        "sha512:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
        "sha3-256:abc=", "blake3:ABCdef_-"};
    static const char *const invalid_digest[] = {
        "",
        "sha256",
        "sha256:",
        ":abc",
        "sha256:6C3C624B58DBBCD3C0DD82B4C53F04194D1247C6EEBDAAB7C610CF7D66709B3B",
        "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3",
        "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3bb",
        "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3g",
        "SHA256:abc",
        "sha256+:abc",
        "+sha:abc",
        "sha:ab/c",
        "sha:ab c"};
    CHECK(expect_all(oci_is_digest, valid_digest, N(valid_digest), true) == 0);
    CHECK(expect_all(oci_is_digest, invalid_digest, N(invalid_digest), false) == 0);
}

/* Not a pass/fail gate on speed (shared CI machines vary), but catches accidental quadratic or
 * allocating paths: a million typical checks must take well under a second each. */
static void speed(void)
{
    const char *did = "did:plc:7iza6de2dwap2sbkpav7c6c6";
    const char *dt = "2025-01-12T23:20:50.123Z";
    const char *dg = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int ok = 0;
    for (int i = 0; i < 1000000; i++)
        ok += atp_is_did(did, strlen(did)) + atp_is_datetime(dt, strlen(dt)) +
              oci_is_digest(dg, strlen(dg));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 3e6;
    fprintf(stderr, "    syntax: %.1f ns per check (did, datetime, digest)\n", ns);
    CHECK(ok == 3000000);
    CHECK(ns < 1000);
}

int main(void)
{
    RUN(did_examples);
    RUN(handle_examples);
    RUN(nsid_examples);
    RUN(rkey_examples);
    RUN(tid_examples);
    RUN(at_uri_examples);
    RUN(datetime_examples);
    RUN(cid_examples);
    RUN(every_byte);
    RUN(utf8_cases);
    RUN(oci_names);
    RUN(speed);
    CHECK_EXIT();
}
