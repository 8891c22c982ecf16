#include "hold/rkey.h"

#include <string.h>

#include "hold/sha256.h"

void hold_rkey(const char *did, const char *repository, char out[HOLD_RKEY_LEN + 1])
{
    static const char alphabet[] = "234567abcdefghijklmnopqrstuvwxyz";
    uint8_t d[32];
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, did, strlen(did));
    sha256_update(&c, "", 1);
    sha256_update(&c, repository, strlen(repository));
    sha256_final(&c, d);
    /* 26 groups of 5 bits cover 130 bits: the 128 digest bits then two zero bits. */
    for (int i = 0; i < HOLD_RKEY_LEN; i++) {
        unsigned v = 0;
        for (int b = 0; b < 5; b++) {
            int bit = i * 5 + b;
            unsigned x = bit < 128 ? (d[bit / 8] >> (7 - bit % 8)) & 1u : 0u;
            v = v << 1 | x;
        }
        out[i] = alphabet[v];
    }
    out[HOLD_RKEY_LEN] = '\0';
}
