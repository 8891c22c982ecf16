/* DID documents as AT Protocol uses them: the DID, its claimed handles (alsoKnownAs
 * "at://handle") and its service endpoints (#atproto_pds, or any other id such as
 * #atcr_hold). Documents come from the network and are untrusted: parsing is strict about
 * size, types and the id, and everything kept is copied out. */
#ifndef ATPROTO_DID_DOC_H
#define ATPROTO_DID_DOC_H

#include <stdbool.h>
#include <stddef.h>

#define DID_DOC_MAX_BYTES (64 * 1024)

typedef struct did_doc did_doc;

/* Parses a document fetched for expected_did (its "id" must be exactly that DID).
 * Returns NULL with a one-line reason in err on garbage, oversize, wrong id or hostile
 * content; the caller frees a result with did_doc_free. */
did_doc *did_doc_parse(const char *json, size_t len, const char *expected_did, char *err,
                       size_t errlen);
/* Documents are reference counted: did_doc_ref adds an owner, did_doc_free drops one. */
did_doc *did_doc_ref(const did_doc *d);
void did_doc_free(did_doc *d);

const char *did_doc_id(const did_doc *d);
size_t did_doc_aka_count(const did_doc *d);
const char *did_doc_aka(const did_doc *d, size_t i);
/* The first "at://" alsoKnownAs entry that is a valid handle, lower-cased; NULL if none. */
const char *did_doc_handle(const did_doc *d);
/* true when alsoKnownAs lists at://handle (case-insensitive). */
bool did_doc_claims_handle(const did_doc *d, const char *handle);
/* Endpoint URL (no trailing slash) of the service with this id ("#atproto_pds", or the full
 * "did:...#atproto_pds"), of the given type unless type is NULL; NULL when absent. */
const char *did_doc_service(const did_doc *d, const char *id, const char *type);
/* did_doc_service(d, "#atproto_pds", "AtprotoPersonalDataServer"). */
const char *did_doc_pds(const did_doc *d);

/* did:web:host[%3Aport] -> https://host[:port]/.well-known/did.json. With allow_http, hosts of
 * a local network (loopback/private IP literals, localhost, *.localhost, *.test, *.local,
 * *.internal) use http:// instead. DIDs with path segments are refused, as AT Protocol does.
 * 0, or -1 when not a usable did:web or out does not fit. */
int did_web_url(const char *did, bool allow_http, char *out, size_t outlen);
/* The inverse: the did:web of a service URL ("https://h.example:8443/a/b" ->
 * "did:web:h.example%3A8443:a:b"). NULL when the URL is not http(s) with a host, or the result
 * is not a valid DID. The caller frees. */
char *did_web_from_url(const char *url);

#endif
