/* A graceful stop on SIGTERM or SIGINT, the same for every service here: the first signal
 * calls begin (stop taking work, say so in the log), then idle is polled until it returns 1 or
 * timeout_ms has passed, and the loop is stopped. Signals after the first are ignored, also
 * once the watch has closed its handles: the process is on its way out.
 *
 * The signals stay blocked in every thread and are read from a signalfd, so no thread ever
 * takes their default action (a kill): a handler that libuv removes while closing would leave
 * a moment in which one could, and a repeated SIGTERM then turned a clean exit into 143.
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

/* Blocks SIGTERM and SIGINT in the calling thread; threads it starts later inherit the block.
 * Call it first in main(), before any thread exists. Until drain_watch runs, a signal waits. */
void drain_block_signals(void);
/* Starts watching SIGTERM and SIGINT; 0, or -1 when out of memory or the system refused. */
int drain_watch(uv_loop_t *loop, const drain_options *opt);

#endif
