/* The CID of a flat record (string and non-negative integer fields), as a PDS computes it:
 * DAG-CBOR encoding (map keys sorted by length, then bytes), SHA-256, CIDv1 dag-cbor,
 * multibase base32 ("bafyrei..."). */
#ifndef HOLD_CID_H
#define HOLD_CID_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *key;
    const char *str; /* the value when not NULL, else num */
    uint64_t num;
} cid_field;

#define CID_STR_LEN 59

/* Writes CID_STR_LEN chars and a NUL. Returns 0, or -1 when memory runs out. */
int cid_of_record(const cid_field *fields, size_t n, char out[CID_STR_LEN + 1]);

#endif
