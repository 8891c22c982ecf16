/* Identity resolution over the network, on the loop: handle -> DID (DNS TXT _atproto.<handle>
 * in the libuv thread pool, then https://<handle>/.well-known/atproto-did, then an optional
 * com.atproto.identity.resolveHandle service), DID -> document (did:plc from the PLC
 * directory, did:web from /.well-known/did.json), and the bidirectional handle check.
 *
 * The resolver only does network: a cache goes in front of it (look up Valkey first, call
 * here on a miss, store what comes back; NOT_FOUND is the cacheable negative answer, the
 * UPSTREAM_* ones are not). Concurrent lookups of the same handle or DID share one upstream
 * fetch (single flight, within this process).
 *
 * Every accepted call (return 0) gets its callback exactly once, always from the loop, never
 * from inside the call. Pointers in results are valid during the callback only (take a
 * did_doc_ref to keep the document). */
#ifndef APPVIEW_RESOLVER_H
#define APPVIEW_RESOLVER_H

#include <stdbool.h>
#include <uv.h>

#include "atproto/did_doc.h"
#include "atproto/http_client.h"

typedef struct resolver resolver;

typedef struct {
    const char *plc_url;             /* APPVIEW_PLC_URL; default "https://plc.directory" */
    const char *handle_resolver_url; /* APPVIEW_HANDLE_RESOLVER_URL (XRPC service); NULL: none */
    bool no_dns;                     /* skip the DNS TXT method */
    bool no_well_known;              /* skip the https://<handle>/.well-known method */
    /* APPVIEW_ALLOW_PRIVATE_NETWORKS: PDS endpoints on loopback/private hosts and over http
     * are accepted, and did:web on local hosts is fetched over http. The http client must be
     * created with the same allow_private/allow_http for fetches to those hosts to work. */
    bool allow_private;
} resolver_options;

enum resolver_status {
    RESOLVER_OK,
    RESOLVER_NOT_FOUND,        /* no such handle/DID: cacheable negative */
    RESOLVER_INVALID,          /* bad input, or an unusable/hostile document or endpoint */
    RESOLVER_UPSTREAM_FAILURE, /* network or server error: retry later, do not cache */
    RESOLVER_UPSTREAM_TIMEOUT,
    RESOLVER_RATE_LIMITED, /* the PLC directory answered 429: see resolver_plc_wait_ms */
    RESOLVER_CANCELLED,    /* the resolver was freed */
};

const char *resolver_status_name(enum resolver_status s);

enum resolver_handle_state {
    RESOLVER_HANDLE_VERIFIED, /* handle -> DID and DID document -> handle agree */
    RESOLVER_HANDLE_INVALID,  /* they disagree, or the document names no handle */
    RESOLVER_HANDLE_UNCHECKED /* the check hit an upstream failure: do not cache as invalid */
};

typedef struct {
    enum resolver_status status;
    const char *did;    /* set when status is OK (and when the DID is known otherwise) */
    const char *handle; /* the verified handle, or NULL: report "handle.invalid" */
    enum resolver_handle_state handle_state;
    const char *pds;    /* #atproto_pds endpoint without trailing slash; NULL when absent */
    const did_doc *doc; /* NULL unless status is OK; other services (e.g. #atcr_hold) */
    const char *error;  /* one line, "" when OK */
} resolver_identity;

typedef void (*resolver_identity_cb)(const resolver_identity *id, void *ud);
typedef void (*resolver_did_cb)(enum resolver_status st, const char *did, const char *error,
                                void *ud);
typedef void (*resolver_doc_cb)(enum resolver_status st, const did_doc *doc, const char *error,
                                void *ud);

/* http is the caller's and must outlive the resolver. NULL when out of memory. */
resolver *resolver_new(uv_loop_t *loop, http_client *http, const resolver_options *opt);

/* actor: a handle or a DID. The full resolution with the bidirectional check. */
int resolver_resolve(resolver *r, const char *actor, resolver_identity_cb cb, void *ud);
/* The two steps alone, for callers that cache them separately. */
int resolver_handle_to_did(resolver *r, const char *handle, resolver_did_cb cb, void *ud);
int resolver_did_to_doc(resolver *r, const char *did, resolver_doc_cb cb, void *ud);

/* A 429 from the PLC directory parks it for the wait it named (RESOLVER_PLC_PARK_DEFAULT_MS
 * when none, at most RESOLVER_PLC_PARK_MAX_MS): until then did:plc lookups answer
 * RESOLVER_RATE_LIMITED without asking it, whoever asks. The ms left, 0 when not parked. */
#define RESOLVER_PLC_PARK_DEFAULT_MS 10000
#define RESOLVER_PLC_PARK_MAX_MS 600000
long resolver_plc_wait_ms(const resolver *r);

/* Upstream fetches started (all methods) and lookups that joined one already in flight. */
unsigned long resolver_upstream_fetches(const resolver *r);
unsigned long resolver_coalesced(const resolver *r);

/* Every pending callback is invoked from here with RESOLVER_CANCELLED. Free the resolver
 * before its http client, then run the loop until its handles and thread-pool jobs finish
 * (memory is released once the last outstanding fetch has come back). */
void resolver_free(resolver *r);

#endif
