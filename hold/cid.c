#include "hold/cid.h"

#include <stdlib.h>
#include <string.h>

#include "atproto/buf.h"
#include "hold/sha256.h"

static int cbor_head(buf *b, unsigned major, uint64_t v)
{
    uint8_t h[9];
    size_t n;
    if (v < 24) {
        h[0] = (uint8_t)(major << 5 | v);
        n = 1;
    } else if (v <= 0xff) {
        h[0] = (uint8_t)(major << 5 | 24);
        h[1] = (uint8_t)v;
        n = 2;
    } else if (v <= 0xffff) {
        h[0] = (uint8_t)(major << 5 | 25);
        h[1] = (uint8_t)(v >> 8);
        h[2] = (uint8_t)v;
        n = 3;
    } else if (v <= 0xffffffffu) {
        h[0] = (uint8_t)(major << 5 | 26);
        for (int i = 0; i < 4; i++)
            h[1 + i] = (uint8_t)(v >> (24 - 8 * i));
        n = 5;
    } else {
        h[0] = (uint8_t)(major << 5 | 27);
        for (int i = 0; i < 8; i++)
            h[1 + i] = (uint8_t)(v >> (56 - 8 * i));
        n = 9;
    }
    return buf_append(b, h, n);
}

static int cbor_text(buf *b, const char *s)
{
    size_t n = strlen(s);
    return cbor_head(b, 3, n) == 0 && buf_append(b, s, n) == 0 ? 0 : -1;
}

static int key_order(const void *a, const void *b)
{
    const char *x = (*(const cid_field *const *)a)->key, *y = (*(const cid_field *const *)b)->key;
    size_t lx = strlen(x), ly = strlen(y);
    if (lx != ly) return lx < ly ? -1 : 1;
    return memcmp(x, y, lx);
}

int cid_of_record(const cid_field *fields, size_t n, char out[CID_STR_LEN + 1])
{
    const cid_field **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted) return -1;
    for (size_t i = 0; i < n; i++)
        sorted[i] = &fields[i];
    qsort(sorted, n, sizeof *sorted, key_order);
    buf b = {0};
    int rc = cbor_head(&b, 5, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = cbor_text(&b, sorted[i]->key);
        if (rc == 0)
            rc = sorted[i]->str ? cbor_text(&b, sorted[i]->str) : cbor_head(&b, 0, sorted[i]->num);
    }
    free(sorted);
    if (rc != 0) {
        buf_free(&b);
        return -1;
    }
    uint8_t bytes[36] = {0x01, 0x71, 0x12, 0x20};
    sha256(b.data, b.len, bytes + 4);
    buf_free(&b);
    static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
    out[0] = 'b';
    size_t o = 1;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < sizeof bytes; i++) {
        acc = (acc << 8 | bytes[i]) & 0xffff;
        bits += 8;
        while (bits >= 5) {
            out[o++] = b32[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits) out[o++] = b32[(acc << (5 - bits)) & 31];
    out[o] = '\0';
    return 0;
}
