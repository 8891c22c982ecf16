/* One Jetstream message, read into what the fold needs.
 *
 * event_parse decides with a byte scan, before any JSON parse, whether a message can concern
 * the index: commits of collections other than io.atcr.* are only read for their position
 * (seq and time). The rest is read into a json_doc and checked: syntax of DID, NSID, rkey,
 * TID, CID, and the record against its lexicon. A message that fails gets EVENT_INVALID and a
 * short reason suitable as a metric label.
 *
 * The wire is Jetstream's as it runs today (bluesky-social/jetstream, docs/README.md section
 * 5). v1: {"did","time_us","cursor","kind","commit"|"identity"|"account"}, where "cursor" is
 * the server's seq (servers before it send none). v2, the lexicon
 * network.bsky.jetstream.subscribeEvents: {"$type":"message","payload":{"$type":
 * "network.bsky.jetstream.subscribeEvents#commit|#identity|#account|#sync|#info",...}} or
 * {"$type":"error","error","message"}. The position of a v2 event is its payload's seq and
 * time, never a seq found elsewhere: #identity, #account and #sync carry the upstream event,
 * whose own seq and time are the relay's. */
#ifndef APPVIEW_EVENT_H
#define APPVIEW_EVENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "appview/jetstream.h"
#include "atproto/json_doc.h"
#include "atproto/lexicon.h"

typedef enum {
    EVENT_SKIP,     /* valid enough to carry a position, not for us (unknown set: a $type or
                       kind this appview does not know) */
    EVENT_COMMIT,   /* an io.atcr.* record created, updated or deleted */
    EVENT_IDENTITY, /* a DID's handle or PDS changed */
    EVENT_ACCOUNT,  /* an account's status changed */
    EVENT_SYNC,     /* v2 #sync: the repo's history diverged upstream; its index must reload */
    EVENT_INFO,     /* v2 #info: an advisory (name, message); no position, moves nothing */
    EVENT_ERROR,    /* v2 error frame (name, message): the server ends the stream */
    EVENT_INVALID,  /* dropped: see reason */
} event_kind;

typedef enum { RECORD_MANIFEST = 'm', RECORD_TAG = 't', RECORD_HOLD_STATS = 's' } record_kind;

/* The collections the appview indexes, one per record kind: what the ingester asks Jetstream
 * for and what the backfill enumerates on a relay. */
#define EVENT_COLLECTION_HOLD_STATS "io.atcr.hold.stats"
#define EVENT_NCOLLECTIONS 3
extern const char *const event_collections[EVENT_NCOLLECTIONS];

typedef struct {
    event_kind kind;
    const char *reason;         /* EVENT_INVALID: static label, e.g. "bad_json", "invalid_record" */
    uint64_t seq;               /* the server's seq (v2 payload seq, v1 "cursor"); 0 when none */
    uint64_t time_us;           /* v1 time_us, v2 the payload's time; 0 when none */
    int unknown;                /* EVENT_SKIP: a $type or kind this appview does not know */
    const char *name, *message; /* EVENT_INFO and EVENT_ERROR (message may be NULL) */
    json_doc *doc; /* event_parse's: the caller's, which the strings below point into */
    const char *did;
    /* EVENT_COMMIT */
    int is_delete;
    int is_create; /* operation "create": the record did not exist before this commit */
    const char *collection, *rkey, *rev, *cid;
    json_ref value; /* the record in doc (JSON_DOC_NONE for a delete, or without a doc) */
    /* The record as jansson values: the caller's, given to event_from_record; from event_parse
     * (owned then) only for hold stats, which the fold reads from it, and for a record whose
     * bytes record_json cannot give. NULL otherwise. */
    json_t *record;
    int owns_record;
    /* Create and update from event_parse: the record exactly as the message wrote it (not
     * NUL-terminated), pointing into the data given to event_parse, so valid only while that
     * is. The bytes are valid JSON equal to the record read, but keep the writer's spacing and
     * string escapes. NULL (and 0) when they cannot be used as they are, and the fold then
     * serializes record itself: for a record from event_from_record, a record written with
     * whitespace other than spaces (a raw newline, tab or carriage return), a "commit" or "record"
     * member name spelled with escapes, or nesting deeper than 64 levels. */
    const char *record_json;
    size_t record_json_len;
    record_kind record_kind;
    const char *repository; /* manifest and tag: the OCI repository */
    const char *key;        /* manifest: its digest; tag: the tag name; hold stats: the user */
    /* Tag: the manifest it points at. target_rkey is the record key of its manifest at-uri (NULL
     * when it has only the deprecated manifestDigest); target_digest its manifestDigest ("" when
     * absent). The digest is found through the manifest's record, not the rkey's spelling. */
    const char *target_rkey;
    char target_digest[136];
    /* createdAt (hold stats: updatedAt) exactly as the record wrote it, served as written; NULL
     * when absent. created_ms is the same instant in Unix milliseconds, for ordering (the
     * event's time when absent). */
    const char *at;
    int64_t created_ms;
    /* EVENT_ACCOUNT */
    int purge; /* inactive with status deleted or takendown */
} event;

/* Fills ev from one message, read into doc (the caller's, reused from one message to the next):
 * ev's strings point into doc until its next read. Always returns ev->kind; call event_clear
 * afterwards. */
event_kind event_parse(event *ev, json_doc *doc, jetstream_flavor flavor, const char *data,
                       size_t len, const lexicon_set *lexicons);
void event_clear(event *ev);

/* The same checks for a record that did not come from the firehose (a PDS listing): fills ev
 * (time_us 0, doc NULL) pointing into the caller's strings and record, which must outlive it.
 * Returns EVENT_COMMIT or EVENT_INVALID with a reason. */
event_kind event_from_record(event *ev, const char *did, const char *collection, const char *rkey,
                             const char *rev, const char *cid, json_t *record,
                             const lexicon_set *lexicons);

/* RFC 3339 datetime to Unix milliseconds; -1 when it does not parse. */
int64_t event_datetime_ms(const char *s);

#endif
