/* AT Protocol and OCI string syntax checks, as the specs define them.
 * Each takes a pointer and a length (no NUL needed) and answers true when valid. */
#ifndef ATPROTO_SYNTAX_H
#define ATPROTO_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>

bool atp_is_did(const char *s, size_t len);
bool atp_is_handle(const char *s, size_t len);
bool atp_is_nsid(const char *s, size_t len);
bool atp_is_rkey(const char *s, size_t len);
bool atp_is_tid(const char *s, size_t len);
bool atp_is_at_uri(const char *s, size_t len);
/* RFC 3339 as the atproto spec restricts it (uppercase T, required timezone, ...). */
bool atp_is_datetime(const char *s, size_t len);
/* CID as a string: base32 "b..." CIDv1 or "Qm..." v0, loosely (charset and length). */
bool atp_is_cid(const char *s, size_t len);
bool atp_is_utf8(const char *s, size_t len);
/* The length of the valid UTF-8 sequence at s (n >= 1 bytes there), or 0: no overlong forms,
 * no surrogates, nothing above U+10FFFF. */
size_t atp_utf8_sequence(const unsigned char *s, size_t n);
/* OCI distribution: repository name (path components of [a-z0-9]+ joined by separators, at most
 * 255), tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}) and digest (algorithm:hex). */
bool oci_is_repository(const char *s, size_t len);
bool oci_is_tag(const char *s, size_t len);
bool oci_is_digest(const char *s, size_t len);

#endif
