/* atproto/backoff: the delay doubles per attempt up to its cap, and always lies in [d/2, d]. */
#include <stdint.h>

#include "atproto/backoff.h"
#include "check.h"

static void test_bounds_per_attempt(void)
{
    static const struct {
        unsigned attempt;
        uint64_t ceiling;
    } steps[] = {{0, 250}, {1, 500}, {2, 1000}, {6, 16000}, {7, 30000}, {40, 30000}, {1000, 30000}};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        uint64_t d = steps[i].ceiling, lo = d, hi = 0;
        for (int n = 0; n < 2000; n++) {
            uint64_t v = backoff_delay_ms(250, 30000, steps[i].attempt);
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        CHECK(lo >= d - d / 2 && hi <= d);
        CHECK(hi - lo > d / 4); /* jittered, not a constant */
    }
}

static void test_extremes_of_the_random_value(void)
{
    CHECK(backoff_delay_with(100, 5000, 0, 0) == 50);
    CHECK(backoff_delay_with(100, 5000, 0, 50) == 100);
    CHECK(backoff_delay_with(100, 5000, 3, 400) == 800);
    CHECK(backoff_delay_with(100, 5000, 3, 401) == 400);
    CHECK(backoff_delay_with(100, 5000, 9, UINT64_MAX) <= 5000);
    CHECK(backoff_delay_with(0, 5000, 9, 123) == 0);
    CHECK(backoff_delay_with(1, 1, 0, 7) == 1);
}

int main(void)
{
    RUN(test_bounds_per_attempt);
    RUN(test_extremes_of_the_random_value);
    CHECK_EXIT();
}
