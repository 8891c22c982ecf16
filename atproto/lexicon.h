/* Record validation against lexicon documents. The JSON files are read once (lexicon_load_dir)
 * and compiled into a tree of C structs, so validating a record walks only that tree and the
 * record: no schema JSON is looked at, nothing is allocated.
 *
 * Checked: required fields, nullable, types (boolean, integer, string, bytes, cid-link, blob,
 * array, object, ref, union, unknown), string formats (did, handle, nsid, at-uri, datetime, cid,
 * uri, at-identifier, record-key, tid, language), minLength/maxLength (UTF-8 bytes),
 * minGraphemes/maxGraphemes, integer minimum/maximum, enum and const, array lengths, local and
 * cross-document refs. Fields a schema does not name are allowed (lexicons evolve by adding
 * optional fields). Like @atproto/lexicon, a blob's accept and maxSize are not checked: the
 * record only claims them; the PDS enforces them on upload.
 *
 * Graphemes are approximated: code points, not counting combining marks, variation selectors,
 * zero-width joiners and the code point after them, emoji skin-tone modifiers and tag characters,
 * and counting a pair of regional indicators as one. That is exact for the text lexicons here
 * (names, tags, digests) and close for others. */
#ifndef ATPROTO_LEXICON_H
#define ATPROTO_LEXICON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "atproto/json_doc.h"

typedef struct lexicon_set lexicon_set;

/* Loads every *.json below dir (recursively). NULL on any unreadable or invalid document or
 * unresolved ref, with the file and reason in err. */
lexicon_set *lexicon_load_dir(const char *dir, char *err, size_t errlen);
void lexicon_free(lexicon_set *set);

/* Number of lexicon documents loaded. */
size_t lexicon_doc_count(const lexicon_set *set);

/* True when nsid names a loaded document whose main def is a record. */
bool lexicon_is_record_type(const lexicon_set *set, const char *nsid);

/* 0 when record is a valid nsid record (its "$type" must be nsid, as in a repository);
 * -1 otherwise with a path-qualified reason in err, e.g. "layers[2].digest: must be a string". */
int lexicon_validate_record(const lexicon_set *set, const char *nsid, const json_t *record,
                            char *err, size_t errlen);

/* The same for the value record of doc d: what the ingester checks, with no jansson tree. */
int lexicon_validate_value(const lexicon_set *set, const char *nsid, const json_doc *d,
                           json_ref record, char *err, size_t errlen);

#endif
