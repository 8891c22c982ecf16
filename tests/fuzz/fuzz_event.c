/* appview/event.c's event_parse on a Jetstream message, with lexicon validation of records.
 * The first byte picks the protocol (even: v1, odd: v2); the rest is the message. Only the
 * public event_parse API is called, so the harness follows changes of the framing. */
#include <string.h>

#include "appview/event.h"
#include "atproto/lexicon.h"
#include "tests/fuzz/fuzz.h"

static const lexicon_set *lexicons(void)
{
    static lexicon_set *set;
    if (!set) {
        char err[256];
        set = lexicon_load_dir("lexicons", err, sizeof err);
        if (!set) {
            fprintf(stderr, "fuzz_event: %s (run from the repository root)\n", err);
            abort();
        }
    }
    return set;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    jetstream_flavor flavor = data[0] & 1 ? JETSTREAM_V2 : JETSTREAM_V1;
    /* a copy of exactly the message's size, so reading past it is caught */
    char *msg = malloc(size - 1 ? size - 1 : 1);
    if (!msg) return 0;
    memcpy(msg, data + 1, size - 1);
    event ev;
    static json_doc doc; /* reused, as the ingester's is */
    event_kind k = event_parse(&ev, &doc, flavor, msg, size - 1, lexicons());
    FUZZ_ASSERT(k == ev.kind);
    if (k == EVENT_INVALID) FUZZ_ASSERT(ev.reason && *ev.reason);
    if (k == EVENT_COMMIT) {
        FUZZ_ASSERT(ev.did && ev.collection && ev.rkey);
        FUZZ_ASSERT(ev.is_delete || json_doc_is(&doc, ev.value, JSON_DOC_OBJECT));
        FUZZ_ASSERT(ev.is_delete || ev.record_json || ev.record);
        /* the record's bytes, when given, lie inside the message */
        if (ev.record_json)
            FUZZ_ASSERT(ev.record_json >= msg &&
                        ev.record_json + ev.record_json_len <= msg + size - 1);
    }
    event_clear(&ev);
    free(msg);
    return 0;
}
