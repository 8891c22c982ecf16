#include "atproto/drain.h"

#include <signal.h>
#include <stdlib.h>

#include "atproto/log.h"

typedef struct {
    uv_loop_t *loop;
    drain_options opt;
    uv_signal_t sigterm, sigint;
    uv_timer_t tick;
    uint64_t started;
    int stopping, open_handles;
} drain;

static void on_closed(uv_handle_t *h)
{
    drain *d = h->data;
    if (--d->open_handles == 0) free(d);
}

static void close_all(drain *d)
{
    uv_close((uv_handle_t *)&d->tick, on_closed);
    uv_close((uv_handle_t *)&d->sigterm, on_closed);
    uv_close((uv_handle_t *)&d->sigint, on_closed);
}

static void on_tick(uv_timer_t *t)
{
    drain *d = t->data;
    int idle = d->opt.idle(d->opt.ud);
    if (!idle && (!d->opt.timeout_ms || uv_now(d->loop) - d->started < d->opt.timeout_ms)) return;
    if (!idle) log_warn(d->opt.component, "drain timed out; stopping anyway");
    uv_timer_stop(t);
    close_all(d);
    /* Closing the watchers gave the signals their default action back, a kill: a repeated
     * SIGTERM would turn this clean exit into exit status 143. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    uv_stop(d->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
    drain *d = s->data;
    if (d->stopping) return;
    d->stopping = 1;
    d->opt.begin(d->opt.ud, signum);
    d->started = uv_now(d->loop);
    uv_timer_start(&d->tick, on_tick, 0, d->opt.tick_ms ? d->opt.tick_ms : 10);
}

int drain_watch(uv_loop_t *loop, const drain_options *opt)
{
    drain *d = calloc(1, sizeof *d);
    if (!d) return -1;
    d->loop = loop;
    d->opt = *opt;
    uv_signal_init(loop, &d->sigterm);
    uv_signal_init(loop, &d->sigint);
    uv_timer_init(loop, &d->tick);
    d->sigterm.data = d->sigint.data = d->tick.data = d;
    d->open_handles = 3;
    if (uv_signal_start(&d->sigterm, on_signal, SIGTERM) != 0 ||
        uv_signal_start(&d->sigint, on_signal, SIGINT) != 0) {
        close_all(d);
        return -1;
    }
    return 0;
}
