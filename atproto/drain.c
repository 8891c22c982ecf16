#include "atproto/drain.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/log.h"

typedef struct {
    uv_loop_t *loop;
    drain_options opt;
    uv_async_t wake; /* the first signal, handed from the handler to the loop */
    uv_timer_t tick;
    uint64_t started;
    int begun, open_handles;
} drain;

/* The handler is this file's own and stays installed until the process ends. libuv's signal
 * watchers put the default action (a kill) back when they are closed, and under a repeated
 * SIGTERM a signal landing between that and any later SIG_IGN turned a clean exit into exit
 * status 143. Only the first signal reaches the loop; the handler ignores the others. */
static drain *watching;
static atomic_int fired;
static volatile sig_atomic_t first_signum;

static void on_signal(int signum)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&fired, &expected, 1)) return;
    first_signum = signum;
    uv_async_send(&watching->wake); /* async-signal-safe */
}

static void on_closed(uv_handle_t *h)
{
    drain *d = h->data;
    if (--d->open_handles == 0) free(d);
}

static void close_all(drain *d)
{
    uv_close((uv_handle_t *)&d->tick, on_closed);
    uv_close((uv_handle_t *)&d->wake, on_closed);
}

static void on_tick(uv_timer_t *t)
{
    drain *d = t->data;
    int idle = d->opt.idle(d->opt.ud);
    if (!idle && (!d->opt.timeout_ms || uv_now(d->loop) - d->started < d->opt.timeout_ms)) return;
    if (!idle) log_warn(d->opt.component, "drain timed out; stopping anyway");
    uv_timer_stop(t);
    close_all(d);
    uv_stop(d->loop);
}

static void on_wake(uv_async_t *a)
{
    drain *d = a->data;
    if (d->begun) return;
    d->begun = 1;
    d->opt.begin(d->opt.ud, first_signum);
    d->started = uv_now(d->loop);
    uv_timer_start(&d->tick, on_tick, 0, d->opt.tick_ms ? d->opt.tick_ms : 10);
}

int drain_watch(uv_loop_t *loop, const drain_options *opt)
{
    drain *d = calloc(1, sizeof *d);
    if (!d) return -1;
    d->loop = loop;
    d->opt = *opt;
    if (uv_timer_init(loop, &d->tick) != 0) {
        free(d);
        return -1;
    }
    d->tick.data = d->wake.data = d;
    d->open_handles = 1;
    if (uv_async_init(loop, &d->wake, on_wake) != 0) {
        uv_close((uv_handle_t *)&d->tick, on_closed);
        return -1;
    }
    d->open_handles = 2;
    watching = d;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        close_all(d);
        return -1;
    }
    return 0;
}
