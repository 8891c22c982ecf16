/* A graceful stop on SIGTERM or SIGINT, the same for every service here: the first signal
 * calls begin (stop taking work, say so in the log), then idle is polled until it returns 1 or
 * timeout_ms has passed, and the loop is stopped. Signals after the first are ignored, also
 * once the watch has closed its handles: the process is on its way out. One watch per
 * process: its signal handler is the process' own from then on.
 *
 * The watch owns itself: it lives until it stopped the loop, then closes its handles, which
 * the caller's next uv_run (or httpd_free) completes, and frees itself. */
#ifndef ATPROTO_DRAIN_H
#define ATPROTO_DRAIN_H

#include <uv.h>

typedef struct {
    const char *component;               /* for the timeout's log line */
    void (*begin)(void *ud, int signum); /* once, on the first signal */
    int (*idle)(void *ud);               /* 1 when nothing is left to finish */
    void *ud;
    unsigned tick_ms;    /* how often idle is asked */
    unsigned timeout_ms; /* stop anyway after this long; 0: wait for idle */
} drain_options;

/* Starts watching SIGTERM and SIGINT; 0, or -1 when out of memory or libuv refused. */
int drain_watch(uv_loop_t *loop, const drain_options *opt);

#endif
