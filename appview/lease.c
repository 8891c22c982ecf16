#include "appview/lease.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atproto/log.h"
#include "atproto/metrics.h"
#include "cache/scripts.h"

struct lease {
    uv_loop_t *loop;
    cache_client *v;
    char *key;
    char role[16];
    char id[128];
    char ttl[16];
    unsigned ttl_ms;
    int script;
    lease_cb cb;
    void *ud;
    int held, inflight, running, releasing;
    /* Loop time at which the last confirmed renewal runs out, counted from when it was sent:
     * Valkey started the key's TTL later than that, so it expires no earlier. */
    uint64_t held_until, sent_at;
    uv_timer_t timer;
    uint64_t *changes_total;
};

static double gauge_held(void *ud)
{
    return ((lease *)ud)->held;
}

/* hostname:pid:random, so a restarted process on the same host is another holder. */
static void make_id(lease *l)
{
    char host[64] = "localhost";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    uint64_t rnd = uv_hrtime();
    if (uv_random(NULL, NULL, &rnd, sizeof rnd, 0, NULL) != 0) rnd ^= (uint64_t)getpid() << 32;
    snprintf(l->id, sizeof l->id, "%s:%ld:%012llx", host, (long)getpid(),
             (unsigned long long)(rnd & 0xffffffffffffull));
}

lease *lease_new(uv_loop_t *loop, cache_client *v, const char *key, unsigned ttl_ms, lease_cb cb,
                 void *ud)
{
    return lease_new_for(loop, v, "ingest", key, ttl_ms, cb, ud);
}

lease *lease_new_for(uv_loop_t *loop, cache_client *v, const char *role, const char *key,
                     unsigned ttl_ms, lease_cb cb, void *ud)
{
    if (ttl_ms < 300 || strlen(role) >= sizeof((lease *)0)->role) return NULL;
    lease *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->loop = loop;
    l->v = v;
    l->cb = cb;
    l->ud = ud;
    l->ttl_ms = ttl_ms;
    snprintf(l->role, sizeof l->role, "%s", role);
    snprintf(l->ttl, sizeof l->ttl, "%u", ttl_ms);
    make_id(l);
    l->key = strdup(key);
    l->script = cache_register_script(v, "lease", lua_lease);
    if (!l->key || l->script < 0) {
        free(l->key);
        free(l);
        return NULL;
    }
    char name[64], help[96];
    snprintf(name, sizeof name, "appview_%s_lease_changes_total", role);
    snprintf(help, sizeof help, "Times this replica took or lost the %s lease", role);
    l->changes_total = metrics_counter(name, help);
    snprintf(name, sizeof name, "appview_%s_lease_held", role);
    snprintf(help, sizeof help, "1 while this replica holds the %s lease", role);
    metrics_gauge(name, help, gauge_held, l);
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    return l;
}

static void set_held(lease *l, int held)
{
    if (l->held == held) return;
    l->held = held;
    (*l->changes_total)++;
    log_info("lease", "%s the %s lease (%s)", held ? "took" : "lost", l->role, l->id);
    l->cb(held, l->ud);
}

static void on_hold_reply(const reply *r, void *ud)
{
    lease *l = ud;
    l->inflight = 0;
    if (!l->running || !r || r->type != REPLY_INTEGER) return; /* the timer decides */
    if (r->integer != 1) {
        set_held(l, 0);
        return;
    }
    l->held_until = l->sent_at + l->ttl_ms;
    /* A renewal answered only after most of the TTL (Valkey stalled) would take the lease back
     * for a moment: the next tick would find it run out and give it up again, and the stream
     * would be dropped and started twice. The next tick's renewal takes it instead. */
    if (!l->held && l->held_until < uv_now(l->loop) + l->ttl_ms / 3) return;
    set_held(l, 1);
}

static void on_tick(uv_timer_t *t)
{
    lease *l = t->data;
    if (l->held && uv_now(l->loop) >= l->held_until) {
        log_warn("lease", "no renewal confirmed within %u ms: giving the %s lease up", l->ttl_ms,
                 l->role);
        set_held(l, 0);
    }
    if (l->inflight || !l->running) return;
    l->sent_at = uv_now(l->loop);
    if (cache_eval(l->v, l->script, on_hold_reply, l, 1, 4,
                   (const char *[]){l->key, l->id, l->ttl, "hold"}, NULL) == 0)
        l->inflight = 1;
}

void lease_start(lease *l)
{
    if (l->running) return;
    l->running = 1;
    uv_timer_start(&l->timer, on_tick, 0, l->ttl_ms / 3);
}

int lease_held(const lease *l)
{
    return l->held;
}

static void on_released(const reply *r, void *ud)
{
    (void)r; /* not given back (Valkey gone): the key expires with its TTL */
    ((lease *)ud)->releasing = 0;
}

void lease_release(lease *l)
{
    if (!l->running) return;
    l->running = 0;
    uv_timer_stop(&l->timer);
    if (l->held && cache_eval(l->v, l->script, on_released, l, 1, 4,
                              (const char *[]){l->key, l->id, l->ttl, "release"}, NULL) == 0) {
        l->releasing = 1;
        log_info("lease", "giving the %s lease back (%s)", l->role, l->id);
    }
    set_held(l, 0);
}

int lease_releasing(const lease *l)
{
    return l->releasing;
}

static void free_when_closed(uv_handle_t *h)
{
    lease *l = h->data;
    free(l->key);
    free(l);
}

void lease_free(lease *l)
{
    if (!l) return;
    uv_close((uv_handle_t *)&l->timer, free_when_closed);
}
