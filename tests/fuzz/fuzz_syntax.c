/* atproto/syntax's validators on any bytes, with the relations the specs imply: a TID is a
 * valid record key, an at-uri, DID, handle, NSID or CID is valid UTF-8, a valid string has no
 * NUL, and a string is never valid both as a DID and as a handle. */
#include <string.h>

#include "atproto/syntax.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    bool utf8 = atp_is_utf8(s, size), has_nul = memchr(s, 0, size) != NULL;
    bool did = atp_is_did(s, size), handle = atp_is_handle(s, size);
    bool nsid = atp_is_nsid(s, size), rkey = atp_is_rkey(s, size), tid = atp_is_tid(s, size);
    bool uri = atp_is_at_uri(s, size), dt = atp_is_datetime(s, size), cid = atp_is_cid(s, size);
    bool repo = oci_is_repository(s, size), tag = oci_is_tag(s, size);
    bool digest = oci_is_digest(s, size);
    if (tid) FUZZ_ASSERT(rkey);
    if (did || handle || nsid || rkey || uri || dt || cid || repo || tag || digest)
        FUZZ_ASSERT(utf8 && !has_nul);
    FUZZ_ASSERT(!(did && handle));
    for (size_t i = 0; i < size;) {
        size_t n = atp_utf8_sequence((const unsigned char *)s + i, size - i);
        if (!n) {
            FUZZ_ASSERT(!utf8);
            break;
        }
        FUZZ_ASSERT(n <= 4 && i + n <= size);
        i += n;
    }
    free(s);
    return 0;
}
