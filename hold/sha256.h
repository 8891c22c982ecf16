/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for record keys, record CIDs, token
 * comparison and signed blob URLs. No dependency on a crypto library: the hold needs a digest
 * and a MAC, never key generation or randomness. */
#ifndef HOLD_SHA256_H
#define HOLD_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t total;
    uint8_t block[64];
    size_t used;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
void sha256_final(sha256_ctx *c, uint8_t out[32]);
void sha256(const void *data, size_t len, uint8_t out[32]);
void hmac_sha256(const void *key, size_t keylen, const void *data, size_t len, uint8_t out[32]);
/* 1 when a and b (n bytes) are equal, in time that depends on n only. */
int bytes_equal_ct(const uint8_t *a, const uint8_t *b, size_t n);

#endif
