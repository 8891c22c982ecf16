/* libFuzzer harnesses for the parsers of untrusted bytes. Each fuzz_*.c defines
 * LLVMFuzzerTestOneInput; `make fuzz` links it with libFuzzer (clang, ASan, UBSan) and runs it
 * for FUZZ_SECONDS over tests/fuzz/corpus/<name>/, and `make test` links it with replay.c (any
 * compiler) to run every saved input once, so an input that once crashed stays fixed.
 * A harness aborts (FUZZ_ASSERT) when a property of its parser does not hold, so the fuzzer
 * reports wrong answers as well as memory errors. */
#ifndef TESTS_FUZZ_FUZZ_H
#define TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FUZZ_ASSERT(%s) failed\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
