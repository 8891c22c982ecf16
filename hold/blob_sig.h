/* Signed getBlob URLs: how a getBlob request proves, without the service token, that the
 * registry sent it, so its pull or push may be counted.
 *
 * The registry (ATCR's appview) hands a client
 *   <hold>/xrpc/com.atproto.sync.getBlob?did=D&cid=C&repo=R&method=M&exp=E&sig=S
 * where E is the Unix time (seconds, decimal, no leading zero) after which the URL no longer
 * counts, and S is base64url without padding (43 characters) of
 *   HMAC-SHA256(secret, "io.atcr.hold.getBlob\n" D "\n" C "\n" R "\n" M "\n" E)
 * with M the method parameter in upper case ("GET" when absent) and secret one the hold knows
 * (HOLD_BLOB_URL_SECRETS; several allow a rotation). The fields are joined as the URL decodes
 * them; none can hold a newline, since the hold checks their syntax first. Pure functions: the
 * caller passes the clock. */
#ifndef HOLD_BLOB_SIG_H
#define HOLD_BLOB_SIG_H

#include <stddef.h>
#include <time.h>

#define BLOB_SIG_LEN 43

typedef struct {
    const char *did, *cid, *repo;
    const char *method; /* as the URL has it (any case); NULL: GET */
} blob_sig_fields;

/* The signature of fields expiring at exp under secret: BLOB_SIG_LEN characters and a NUL. */
void blob_sig_sign(const char *secret, size_t secret_len, const blob_sig_fields *f, long long exp,
                   char out[BLOB_SIG_LEN + 1]);

typedef enum {
    BLOB_SIG_VALID,
    BLOB_SIG_MALFORMED, /* exp or sig missing or not in their form */
    BLOB_SIG_EXPIRED,   /* well formed, but now is past exp */
    BLOB_SIG_WRONG,     /* no secret signs these fields */
} blob_sig_verdict;

/* Checks exp and sig (the URL's parameters, NULL when absent) for fields against every secret,
 * in time that does not depend on where a match is. */
blob_sig_verdict blob_sig_check(char *const *secrets, size_t nsecrets, const blob_sig_fields *f,
                                const char *exp, const char *sig, time_t now);

#endif
