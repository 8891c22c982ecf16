#include "atproto/drain.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "atproto/log.h"

typedef struct {
    uv_loop_t *loop;
    drain_options opt;
    int fd; /* signalfd of SIGTERM and SIGINT */
    uv_poll_t signals;
    uv_timer_t tick;
    uint64_t started;
    int stopping, open_handles;
} drain;

static void signal_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
}

void drain_block_signals(void)
{
    sigset_t set;
    signal_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void on_closed(uv_handle_t *h)
{
    drain *d = h->data;
    if (--d->open_handles) return;
    close(d->fd);
    free(d);
}

/* The signals stay blocked after this: later ones wait, unread, until the process exits. */
static void close_all(drain *d)
{
    uv_close((uv_handle_t *)&d->tick, on_closed);
    uv_close((uv_handle_t *)&d->signals, on_closed);
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

static void on_signal(uv_poll_t *p, int status, int events)
{
    drain *d = p->data;
    struct signalfd_siginfo si;
    int signum = 0;
    while (read(d->fd, &si, sizeof si) == (ssize_t)sizeof si)
        if (!signum) signum = (int)si.ssi_signo;
    if (!signum || d->stopping) return;
    d->stopping = 1;
    d->opt.begin(d->opt.ud, signum);
    d->started = uv_now(d->loop);
    uv_timer_start(&d->tick, on_tick, 0, d->opt.tick_ms ? d->opt.tick_ms : 10);
}

int drain_watch(uv_loop_t *loop, const drain_options *opt)
{
    drain_block_signals(); /* in case main did not: this thread at least */
    drain *d = calloc(1, sizeof *d);
    if (!d) return -1;
    sigset_t set;
    signal_set(&set);
    d->fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (d->fd < 0) {
        log_error(opt->component, "signalfd: %s", strerror(errno));
        free(d);
        return -1;
    }
    d->loop = loop;
    d->opt = *opt;
    if (uv_timer_init(loop, &d->tick) != 0) {
        close(d->fd);
        free(d);
        return -1;
    }
    d->tick.data = d;
    d->open_handles = 1;
    if (uv_poll_init(loop, &d->signals, d->fd) != 0) {
        uv_close((uv_handle_t *)&d->tick, on_closed);
        return -1;
    }
    d->signals.data = d;
    d->open_handles = 2;
    if (uv_poll_start(&d->signals, UV_READABLE, on_signal) != 0) {
        close_all(d);
        return -1;
    }
    return 0;
}
