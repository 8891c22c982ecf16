/* atproto/metrics: the Prometheus text exposition, line by line as a scraper reads it. */
#include <string.h>

#include "atproto/metrics.h"
#include "check.h"

static double answer(void *ud)
{
    return *(const double *)ud;
}

static void test_exposition(void)
{
    static double gauge_value = 0.1;
    uint64_t *bad = metrics_counter("t_dropped_total{reason=\"bad\"}", "Events dropped.");
    uint64_t *big = metrics_counter("t_dropped_total{reason=\"big\"}", "Events dropped.");
    *bad = 18446744073709551615ull;
    *big = 0;
    metrics_gauge("t_lag_seconds", "Lag.", answer, &gauge_value);
    metrics_histogram *h = metrics_histogram_get("t_write_seconds", "Write latency.");
    metrics_observe(h, 0.0003); /* in the 0.0005 bucket */
    metrics_observe(h, 0.2);    /* in the 1 bucket */
    metrics_observe(h, 99);     /* past the last bound: +Inf only */

    buf out = {0};
    metrics_render(&out);
    const char *want = "# HELP t_dropped_total Events dropped.\n"
                       "# TYPE t_dropped_total counter\n"
                       "t_dropped_total{reason=\"bad\"} 18446744073709551615\n"
                       "t_dropped_total{reason=\"big\"} 0\n"
                       "# HELP t_lag_seconds Lag.\n"
                       "# TYPE t_lag_seconds gauge\n"
                       "t_lag_seconds 0.10000000000000001\n"
                       "# HELP t_write_seconds Write latency.\n"
                       "# TYPE t_write_seconds histogram\n"
                       "t_write_seconds_bucket{le=\"0.0001\"} 0\n"
                       "t_write_seconds_bucket{le=\"0.00025\"} 0\n"
                       "t_write_seconds_bucket{le=\"0.0005\"} 1\n"
                       "t_write_seconds_bucket{le=\"0.001\"} 1\n"
                       "t_write_seconds_bucket{le=\"0.0025\"} 1\n"
                       "t_write_seconds_bucket{le=\"0.005\"} 1\n"
                       "t_write_seconds_bucket{le=\"0.01\"} 1\n"
                       "t_write_seconds_bucket{le=\"0.025\"} 1\n"
                       "t_write_seconds_bucket{le=\"0.05\"} 1\n"
                       "t_write_seconds_bucket{le=\"0.1\"} 1\n"
                       "t_write_seconds_bucket{le=\"1\"} 2\n"
                       "t_write_seconds_bucket{le=\"10\"} 2\n"
                       "t_write_seconds_bucket{le=\"+Inf\"} 3\n"
                       "t_write_seconds_sum 99.200300\n"
                       "t_write_seconds_count 3\n";
    CHECK(out.data && !strcmp(out.data, want));
    if (out.data && strcmp(out.data, want)) fprintf(stderr, "%s", out.data);
    buf_free(&out);
    metrics_free_all();
}

int main(void)
{
    RUN(test_exposition);
    CHECK_EXIT();
}
