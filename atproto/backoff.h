/* Exponential backoff with jitter: the one rule every reconnect and retry here follows
 * (Jetstream, Valkey, outbound HTTP, Docker Hub). */
#ifndef ATPROTO_BACKOFF_H
#define ATPROTO_BACKOFF_H

#include <stdint.h>

/* The wait before retry number `attempt` (0 for the first): uniform in [d/2, d], where
 * d = min(cap_ms, base_ms * 2^attempt). Half of d is always waited, so a peer that keeps
 * failing is not hammered; the random half spreads the clients that lost the same peer at the
 * same moment, so they do not all come back in the same millisecond. */
uint64_t backoff_delay_ms(uint64_t base_ms, uint64_t cap_ms, unsigned attempt);

/* The same with the randomness given: `random` is any 64-bit value (tests). */
uint64_t backoff_delay_with(uint64_t base_ms, uint64_t cap_ms, unsigned attempt, uint64_t random);

#endif
