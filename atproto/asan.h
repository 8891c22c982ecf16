/* Marks memory a pool keeps but nobody may touch (POISON) and gives it back (UNPOISON), so
 * AddressSanitizer reports a use after a block went back to its pool as it would after free.
 * Nothing in builds without it. */
#ifndef ATPROTO_ASAN_H
#define ATPROTO_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#endif
