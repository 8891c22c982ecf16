#include "atproto/backoff.h"

#include <unistd.h>
#include <uv.h>

uint64_t backoff_delay_with(uint64_t base_ms, uint64_t cap_ms, unsigned attempt, uint64_t random)
{
    uint64_t d = base_ms;
    for (unsigned i = 0; i < attempt && d < cap_ms; i++)
        d *= 2;
    if (d > cap_ms) d = cap_ms;
    return d - d / 2 + random % (d / 2 + 1);
}

uint64_t backoff_delay_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt)
{
    /* xorshift64*: jitter needs spread, not secrecy; one state per thread */
    static _Thread_local uint64_t state;
    if (!state) state = (uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)&state) | 1;
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return backoff_delay_with(base_ms, cap_ms, attempt, state * 2685821657736338717ull);
}
