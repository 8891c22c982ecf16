/* A strict JSON parser that builds jansson values, several times faster than json_loadb: it
 * reads the text into a json_doc (atproto/json_doc.h), which scans strings and numbers in
 * place instead of a character at a time through a stream, and builds the values from that.
 *
 * It is the project's one acceptance rule for JSON that comes from outside: request bodies,
 * DID documents, PDS, hold and Docker Hub answers, firehose events, and what Valkey gives back.
 * (jansson still builds and prints values, and reads the lexicon files at start-up.) It accepts
 * RFC 8259 JSON: UTF-8 only, no lone surrogates, no \u0000, no duplicate keys, integers that
 * fit json_int_t, nothing but whitespace after the value, with json_loadb's depth limit, and
 * builds the value json_loadb(data, len, JSON_REJECT_DUPLICATES) would. It differs from
 * json_loadb in one way, on purpose: json_loadb takes a NUL byte right after a number or a
 * literal as the end of the input ({"count":2<NUL>}), json_read refuses it. It only reports
 * that the input is not JSON, not where. */
#ifndef ATPROTO_JSON_READ_H
#define ATPROTO_JSON_READ_H

#include <jansson.h>
#include <stddef.h>

#include "atproto/json_doc.h"

/* The JSON object or array in data (len bytes), owned by the caller; NULL when it is not
 * valid JSON, or valid but not an object or an array. */
json_t *json_read(const char *data, size_t len);

/* json_read, and the bytes of the value at path: the member names of nested objects from the
 * top, NULL-terminated (e.g. {"commit", "record", NULL}). Names are matched as written. */
json_t *json_read_span(const char *data, size_t len, const char *const *path, json_span *span);

#endif
