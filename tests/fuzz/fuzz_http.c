/* atproto/http_parse on a request as bytes arrive: the head found whole and found byte by
 * byte end at the same place, a parsed head points inside itself, its framing is consistent,
 * the target percent-decodes to no more bytes than it had, and a chunked body decodes from
 * what follows the head without reading past it. */
#include <string.h>

#include "atproto/buf.h"
#include "atproto/http_parse.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    if (!in) return 0;
    memcpy(in, data, size);
    size_t scanned = 0, head_len = 0;
    http_refusal why = {0};
    int rc = http_head_find(in, size, &scanned, &head_len, &why);
    if (size <= 512) { /* the same answer when the bytes come one at a time */
        size_t s2 = 0, h2 = 0;
        int rc2 = 0;
        http_refusal w2 = {0};
        for (size_t n = 1; n <= size && rc2 == 0; n++)
            rc2 = http_head_find(in, n, &s2, &h2, &w2);
        FUZZ_ASSERT(rc2 == rc);
        if (rc == 1) FUZZ_ASSERT(h2 == head_len);
        if (rc == -1) FUZZ_ASSERT(w2.status == why.status);
    }
    if (rc < 0) FUZZ_ASSERT(why.status >= 400 && why.reason && why.message && why.error);
    if (rc != 1) {
        free(in);
        return 0;
    }
    FUZZ_ASSERT(head_len <= size && head_len <= HTTP_MAX_HEAD);
    http_head h;
    if (http_parse_head(in, head_len, &h, &why) < 0) {
        FUZZ_ASSERT(why.status >= 400 && why.status < 600);
        free(in);
        return 0;
    }
    FUZZ_ASSERT(h.minor == 0 || h.minor == 1);
    FUZZ_ASSERT(h.target >= in && h.target + h.target_len <= in + head_len);
    FUZZ_ASSERT(h.nfields <= HTTP_MAX_FIELDS);
    for (size_t i = 0; i < h.nfields; i++) {
        const http_field *f = &h.fields[i];
        FUZZ_ASSERT(f->name >= in && f->value + f->value_len <= in + head_len);
        for (size_t k = 0; k < f->value_len; k++)
            FUZZ_ASSERT((unsigned char)f->value[k] >= 0x20 || f->value[k] == '\t');
    }
    if (h.body == HTTP_BODY_LENGTH) FUZZ_ASSERT(h.content_length > 0);
    char *t = malloc(h.target_len + 1);
    if (t) {
        memcpy(t, h.target, h.target_len);
        long n = http_percent_decode(t, h.target_len, true);
        FUZZ_ASSERT(n <= (long)h.target_len);
        if (n >= 0) FUZZ_ASSERT(!memchr(t, 0, (size_t)n));
        free(t);
    }
    if (h.body == HTTP_BODY_CHUNKED) {
        http_chunked c = {0};
        buf body = {0};
        size_t used = 0;
        int crc = http_chunked_feed(&c, in + head_len, size - head_len, &used, &body, 1 << 16);
        FUZZ_ASSERT(used <= size - head_len && body.len <= 1 << 16);
        if (crc == HTTP_CHUNKED_MORE) FUZZ_ASSERT(used == size - head_len);
        buf_free(&body);
    }
    free(in);
    return 0;
}
