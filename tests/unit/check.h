/* Minimal unit-test support: CHECK records a failure and goes on; each test function is run
 * by RUN and prints "ok - name" or "not ok - name", which tests/run.py counts. */
#ifndef TESTS_CHECK_H
#define TESTS_CHECK_H

#include <stdio.h>

static int check_failures_in_test;
static int check_tests_failed;
static int check_tests_passed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);           \
            check_failures_in_test++;                                                              \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        check_failures_in_test = 0;                                                                \
        fn();                                                                                      \
        if (check_failures_in_test) {                                                              \
            check_tests_failed++;                                                                  \
            printf("not ok - %s\n", #fn);                                                          \
        } else {                                                                                   \
            check_tests_passed++;                                                                  \
            printf("ok - %s\n", #fn);                                                              \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

#define CHECK_EXIT() return check_tests_failed ? 1 : 0

#endif
