/* Process-wide Prometheus metrics: counters, gauges read by callback, latency histograms.
 * Single-threaded (the event loop's thread). Names may carry labels: `x_total{reason="y"}`;
 * HELP/TYPE lines are written once per name before its first label set. */
#ifndef ATPROTO_METRICS_H
#define ATPROTO_METRICS_H

#include <stdint.h>

#include "atproto/buf.h"

/* Returns the counter's cell, registered on first use, so the hot path is a plain ++. */
uint64_t *metrics_counter(const char *name, const char *help);

typedef double (*metrics_gauge_fn)(void *ud);
void metrics_gauge(const char *name, const char *help, metrics_gauge_fn fn, void *ud);

typedef struct metrics_histogram metrics_histogram;
/* Buckets in seconds from 100 us to 10 s. */
metrics_histogram *metrics_histogram_get(const char *name, const char *help);
void metrics_observe(metrics_histogram *h, double seconds);
/* Approximate quantile (0..1) in seconds from the buckets, for logs and health. */
double metrics_quantile(const metrics_histogram *h, double q);

/* Appends the Prometheus text exposition of every metric. */
void metrics_render(buf *out);
/* Frees the registry (at exit, so leak checkers stay quiet). */
void metrics_free_all(void);

#endif
