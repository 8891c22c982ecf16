/* Scanning text eight bytes at a time, for the bytes JSON strings care about. Most strings
 * (DIDs, digests, tags, record keys) hold none of them, so a scan is a few instructions per
 * eight bytes instead of several per byte. */
#ifndef ATPROTO_BYTESCAN_H
#define ATPROTO_BYTESCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bytescan.h assumes a little-endian machine"
#endif

/* The high bit of each byte of w that is below 0x20, '"' or '\\', and maybe of bytes above
 * the first such one (the "has a byte less than n" and "has a zero byte" tests of Bit
 * Twiddling Hacks: a borrow only runs upwards, so the lowest bit set is exact). */
static inline uint64_t bytescan_escape_mask(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
    return (((w - ones * 0x20) & ~w) | ((quote - ones) & ~quote) |
            ((backslash - ones) & ~backslash)) &
           highs;
}

/* How many bytes at s (at most len) a JSON string holds as they are: no byte below 0x20, no
 * '"' or '\\', and with ascii_only none from 0x80 either (a reader must check those as UTF-8).
 * Bytes are numbered from the low end of a word, so this holds on little-endian machines only. */
static inline size_t bytescan_plain_run(const unsigned char *s, size_t len, int ascii_only)
{
    const uint64_t highs = ascii_only ? 0x8080808080808080ull : 0;
    size_t i = 0;
#if defined(__SSE2__)
    /* Sixteen bytes at a time where the machine can (every x86-64): a third of the work. */
    const __m128i space = _mm_set1_epi8(0x20), below = _mm_set1_epi8(0x1f);
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    for (; i + 16 <= len; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        /* signed, bytes from 0x80 are negative: below 0x20 too */
        __m128i low =
            ascii_only ? _mm_cmplt_epi8(x, space) : _mm_cmpeq_epi8(_mm_max_epu8(x, below), below);
        __m128i hit =
            _mm_or_si128(low, _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);
        if (mask) return i + (size_t)__builtin_ctz(mask);
    }
#endif
    uint64_t w;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, s + i, 8);
        uint64_t m = (w & highs) | bytescan_escape_mask(w);
        if (m) return i + ((size_t)__builtin_ctzll(m) >> 3);
    }
    while (i < len && s[i] >= 0x20 && s[i] != '"' && s[i] != '\\' && !(ascii_only && s[i] >= 0x80))
        i++;
    return i;
}

#endif
