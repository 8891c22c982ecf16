#include "hold/blob_sig.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "atproto/base64url.h"
#include "atproto/buf.h"
#include "hold/sha256.h"

/* The MAC of the fields; 0, or -1 when out of memory. */
static int mac(const char *secret, size_t secret_len, const blob_sig_fields *f, const char *exp,
               uint8_t out[32])
{
    buf m = {0};
    int rc = buf_printf(&m, "io.atcr.hold.getBlob\n%s\n%s\n%s\n", f->did, f->cid, f->repo);
    for (const char *p = f->method ? f->method : "GET"; rc == 0 && *p; p++) {
        char c = *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        rc = buf_append(&m, &c, 1);
    }
    if (rc == 0) rc = buf_printf(&m, "\n%s", exp);
    if (rc == 0) hmac_sha256(secret, secret_len, m.data, m.len, out);
    buf_free(&m);
    return rc;
}

/* base64url of 32 bytes: exactly 43 characters, the unused low bits of the last one zero. */
static int decode(const char *s, uint8_t out[32])
{
    return strlen(s) == BLOB_SIG_LEN && b64url_decode(s, BLOB_SIG_LEN, out, 32) == 32 ? 0 : -1;
}

void blob_sig_sign(const char *secret, size_t secret_len, const blob_sig_fields *f, long long exp,
                   char out[BLOB_SIG_LEN + 1])
{
    char e[24];
    snprintf(e, sizeof e, "%lld", exp);
    uint8_t d[32];
    if (mac(secret, secret_len, f, e, d) < 0) memset(d, 0, sizeof d);
    b64url_encode(d, sizeof d, out);
}

blob_sig_verdict blob_sig_check(char *const *secrets, size_t nsecrets, const blob_sig_fields *f,
                                const char *exp, const char *sig, time_t now)
{
    uint8_t want[32];
    size_t elen = exp ? strlen(exp) : 0;
    if (!sig || !elen || elen > 12 || strspn(exp, "0123456789") != elen || exp[0] == '0' ||
        !f->repo || decode(sig, want) < 0)
        return BLOB_SIG_MALFORMED;
    long long e = 0;
    for (size_t i = 0; i < elen; i++)
        e = e * 10 + (exp[i] - '0');
    unsigned match = 0;
    for (size_t i = 0; i < nsecrets; i++) {
        uint8_t d[32];
        if (mac(secrets[i], strlen(secrets[i]), f, exp, d) < 0) continue;
        match |= (unsigned)bytes_equal_ct(d, want, sizeof d);
    }
    if (!match) return BLOB_SIG_WRONG;
    return (long long)now > e ? BLOB_SIG_EXPIRED : BLOB_SIG_VALID;
}
