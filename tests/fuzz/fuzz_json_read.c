/* atproto/json_read against jansson: whatever json_read accepts, json_loadb accepts too and
 * builds an equal value; whatever json_loadb accepts, json_read accepts too unless the input
 * holds a NUL byte (json_loadb's one laxness, json_read.h). json_read_span's span, when found,
 * lies inside the input and parses on its own. */
#include <jansson.h>
#include <string.h>

#include "atproto/json_read.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    if (!in) return 0;
    memcpy(in, data, size);
    static const char *const path[] = {"commit", "record", NULL};
    json_span span;
    json_t *got = json_read_span(in, size, path, &span);
    json_error_t err;
    json_t *want = json_loadb(in, size, JSON_REJECT_DUPLICATES, &err);
    /* json_read only returns objects and arrays */
    if (want && !json_is_object(want) && !json_is_array(want)) {
        json_decref(want);
        want = NULL;
    }
    if (got) FUZZ_ASSERT(want && json_equal(got, want));
    if (want && !got) FUZZ_ASSERT(memchr(in, 0, size) != NULL);
    if (got && span.start) {
        FUZZ_ASSERT(span.start >= in && span.start + span.len <= in + size);
        json_t *record = json_object_get(json_object_get(got, "commit"), "record");
        FUZZ_ASSERT(record);
        if (json_is_object(record) || json_is_array(record)) {
            json_t *alone = json_read(span.start, span.len);
            FUZZ_ASSERT(alone && json_equal(alone, record));
            json_decref(alone);
        }
    }
    json_decref(got);
    json_decref(want);
    free(in);
    return 0;
}
