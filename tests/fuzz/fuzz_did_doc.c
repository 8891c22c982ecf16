/* atproto/did_doc: DID documents as fetched from PLC or did:web hosts, for an expected DID,
 * and the did:web URL mapping. What is kept is copied out: every accessor's string is valid
 * after the input is gone. */
#include <string.h>

#include "atproto/did_doc.h"
#include "atproto/syntax.h"
#include "tests/fuzz/fuzz.h"

#define DID "did:plc:ewvi7nxzyoun6zhxrhs64oiz"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    if (!in) return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    char err[256];
    err[0] = '\0';
    did_doc *d = did_doc_parse(in, size, DID, err, sizeof err);
    if (!d) FUZZ_ASSERT(err[0]);
    /* strlen stops at a NUL: the same bytes as a DID, for the did:web mapping */
    char url[512];
    if (did_web_url(in, true, url, sizeof url) == 0) FUZZ_ASSERT(!strncmp(url, "http", 4));
    free(in);
    if (!d) return 0;
    FUZZ_ASSERT(!strcmp(did_doc_id(d), DID));
    for (size_t i = 0; i < did_doc_aka_count(d); i++)
        FUZZ_ASSERT(did_doc_aka(d, i) != NULL);
    const char *handle = did_doc_handle(d);
    if (handle) {
        FUZZ_ASSERT(atp_is_handle(handle, strlen(handle)));
        FUZZ_ASSERT(did_doc_claims_handle(d, handle));
    }
    const char *pds = did_doc_pds(d);
    if (pds) FUZZ_ASSERT(strlen(pds) > 0 && pds[strlen(pds) - 1] != '/');
    (void)did_doc_service(d, "#atcr_hold", NULL);
    did_doc *again = did_doc_ref(d);
    did_doc_free(d);
    FUZZ_ASSERT(!strcmp(did_doc_id(again), DID));
    did_doc_free(again);
    return 0;
}
