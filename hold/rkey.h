/* The record key of a (did, repository) stats record: the first 128 bits of
 * SHA-256(did || 0x00 || repository) in base32-sortable ("234567a-z", as TIDs use), 26 chars.
 * Deterministic, always a valid rkey, and the same on every hold, so a client can compute it. */
#ifndef HOLD_RKEY_H
#define HOLD_RKEY_H

#include <stddef.h>

#define HOLD_RKEY_LEN 26

/* Writes HOLD_RKEY_LEN chars and a NUL to out. */
void hold_rkey(const char *did, const char *repository, char out[HOLD_RKEY_LEN + 1]);

#endif
