/* atproto/base64url: RFC 4648's test vectors, round trips, and what the decoder refuses. */
#include <string.h>

#include "atproto/base64url.h"
#include "tests/unit/check.h"

static int encodes(const char *in, const char *want)
{
    char out[64];
    size_t n = strlen(in);
    b64url_encode((const uint8_t *)in, n, out);
    int ok = !strcmp(out, want) && b64url_encoded_len(n) == strlen(want);
    if (!ok) fprintf(stderr, "    \"%s\" -> %s, want %s\n", in, out, want);
    return ok;
}

/* RFC 4648, section 10, without the padding. */
static void test_rfc_vectors(void)
{
    CHECK(encodes("", ""));
    CHECK(encodes("f", "Zg"));
    CHECK(encodes("fo", "Zm8"));
    CHECK(encodes("foo", "Zm9v"));
    CHECK(encodes("foob", "Zm9vYg"));
    CHECK(encodes("fooba", "Zm9vYmE"));
    CHECK(encodes("foobar", "Zm9vYmFy"));
}

/* Every byte value, at every length up to 40: decode(encode(x)) is x; the URL-safe letters. */
static void test_round_trips(void)
{
    uint8_t in[40], back[40];
    char text[64];
    for (size_t n = 0; n <= sizeof in; n++) {
        for (size_t i = 0; i < n; i++)
            in[i] = (uint8_t)(i * 37 + n * 11 + 0xf8);
        b64url_encode(in, n, text);
        CHECK(strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
              strlen(text));
        CHECK(b64url_decode(text, strlen(text), back, sizeof back) == (long)n);
        CHECK(!memcmp(in, back, n));
    }
    const uint8_t ff[] = {0xfb, 0xff, 0xbf};
    b64url_encode(ff, sizeof ff, text);
    CHECK(!strcmp(text, "-_-_"));
}

static void test_refusals(void)
{
    uint8_t out[16];
    CHECK(b64url_decode("Zm9v=", 5, out, sizeof out) == -1);    /* padding */
    CHECK(b64url_decode("Zm+v", 4, out, sizeof out) == -1);     /* the other alphabet */
    CHECK(b64url_decode("Zm9 v", 5, out, sizeof out) == -1);    /* a space */
    CHECK(b64url_decode("Zm9vY", 5, out, sizeof out) == -1);    /* a length nothing encodes to */
    CHECK(b64url_decode("Zh", 2, out, sizeof out) == -1);       /* unused bits not zero */
    CHECK(b64url_decode("Zm9vYmFy", 8, out, 5) == -1);          /* does not fit */
    CHECK(b64url_decode("Zm9v\0Yg", 7, out, sizeof out) == -1); /* a NUL inside */
    CHECK(b64url_decode("Zg", 2, out, sizeof out) == 1 && out[0] == 'f');
}

int main(void)
{
    RUN(test_rfc_vectors);
    RUN(test_round_trips);
    RUN(test_refusals);
    CHECK_EXIT();
}
