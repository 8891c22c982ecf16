/* The hold's incrementStats body (hold/increments.c): any accepted body gives 1..1000
 * increments whose DIDs, repositories and counts are valid, and whose counts add up. */
#include <string.h>

#include "atproto/syntax.h"
#include "hold/increments.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    if (!in) return 0;
    memcpy(in, data, size);
    increment_batch b;
    char why[128];
    increments_rc rc = increments_parse(in, size, &b, why, sizeof why);
    free(in); /* the increments point into the parsed value, not into the input */
    if (rc != INCREMENTS_OK) {
        FUZZ_ASSERT(why[0] && !b.root && !b.incs);
        return 0;
    }
    FUZZ_ASSERT(b.n >= 1 && b.n <= HOLD_MAX_BATCH);
    int64_t total = 0;
    for (size_t i = 0; i < b.n; i++) {
        const store_incr *inc = &b.incs[i];
        FUZZ_ASSERT(atp_is_did(inc->did, strlen(inc->did)));
        FUZZ_ASSERT(oci_is_repository(inc->repository, strlen(inc->repository)));
        FUZZ_ASSERT(inc->count >= 1 && inc->count <= HOLD_MAX_COUNT);
        FUZZ_ASSERT(inc->event == STORE_PULL || inc->event == STORE_PUSH);
        total += inc->count;
    }
    FUZZ_ASSERT(total == b.total);
    increments_clear(&b);
    return 0;
}
