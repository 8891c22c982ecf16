/* base64url without padding (RFC 4648, section 5): the form cursors and signatures take in
 * URLs. One encoding, one decoder that takes only the canonical form. */
#ifndef ATPROTO_BASE64URL_H
#define ATPROTO_BASE64URL_H

#include <stddef.h>
#include <stdint.h>

/* The characters b64url_encode writes for n bytes (without the NUL). */
size_t b64url_encoded_len(size_t n);
/* Writes b64url_encoded_len(n) characters and a NUL into out. */
void b64url_encode(const uint8_t *in, size_t n, char *out);
/* Decodes the len characters of s into out (cap bytes): the number of bytes, or -1 when s is
 * not canonical unpadded base64url (a character outside the alphabet, a length that no byte
 * count encodes to, unused low bits that are not zero) or does not fit. */
long b64url_decode(const char *s, size_t len, uint8_t *out, size_t cap);

#endif
