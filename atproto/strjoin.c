#include "atproto/strjoin.h"

#include <string.h>

int strjoin(char *out, size_t cap, const char *const *parts)
{
    size_t n = 0;
    for (; *parts; parts++) {
        const char *s = *parts;
        /* Half the parts of a key are one-byte separators: put in place, without a strlen
         * and a memcpy call each. */
        if (s[0] && !s[1] && n + 1 < cap) {
            out[n++] = s[0];
            continue;
        }
        size_t k = strlen(s);
        if (n + k >= cap) {
            if (cap) out[0] = 0;
            return -1;
        }
        memcpy(out + n, s, k);
        n += k;
    }
    if (cap) out[n] = 0;
    return cap ? (int)n : -1;
}

int strput(char *out, size_t cap, const char *s, size_t n)
{
    if (n >= cap) {
        if (cap) out[0] = 0;
        return -1;
    }
    memcpy(out, s, n);
    out[n] = 0;
    return (int)n;
}
