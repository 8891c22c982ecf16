#include "cache/client.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/buf.h"
#include "atproto/freelist.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "cache/slots.h"
#include "cache/valkey.h"

#define MAX_SCRIPTS 16
/* How often waiting commands are looked at (deadlines, pauses) and retired nodes freed. */
#define TICK_MS 50
/* A map without a reachable primary for every slot is asked for again this often. */
#define REFRESH_RETRY_MS 200
/* A TRYAGAIN (keys split by a migration) or CLUSTERDOWN (a failover) is sent again after this. */
#define RETRY_PAUSE_MS 50
/* More redirections than this for one command means the cluster cannot agree: it fails. */
#define MAX_REDIRECTS 16
/* Calls kept for reuse (one server): a round of the ingester has thousands in flight. */
#define SPARE_CALLS 16384
#define SCAN_COUNT "1000"

typedef struct node node;
typedef struct call call;
typedef struct barrier barrier;

/* A server: the one of a URL, or a primary of the cluster's map (a seed until the map is
 * known). */
struct node {
    node *next;
    cache_client *c;
    node_addr addr;
    valkey *v;
    int ready;
    int in_map;  /* a primary the current map names */
    int retired; /* out of the map: freed by the tick once nothing refers to it */
    int refs;    /* commands sent to it and not answered, barriers and walks that use it */
    int dirty;   /* answered a command since its last WAIT */
    /* WAITs sent, and the newest one that confirmed, or fell short */
    unsigned wait_gen, wait_ok_gen, wait_fail_gen;
    unsigned wait_target; /* replicas its next WAIT asks for */
    int wait_wanted;      /* a WAIT to send at the end of this loop iteration */
};

/* A command of the caller's, from issue to answer. In cluster mode it keeps a copy of its
 * arguments, to be sent again. */
struct call {
    call *prev, *next;   /* c->head: every command in flight, in issue order */
    call *sprev, *snext; /* cluster: its slot's commands in flight, in issue order */
    call *wnext;         /* its slot's commands waiting to be sent, in issue order */
    cache_client *c;
    cache_reply_cb cb;
    void *ud;
    uint64_t seq;
    uint64_t deadline_ns, not_before_ns;
    unsigned slot;
    node *sent; /* where it is, while on the wire */
    node *ask;  /* an ASK's target, for the next send */
    int redirects;
    int waiting;
    int script; /* -1: a plain command */
    int nkeys, argc;
    const char **argv;
    size_t *lens;
};

/* What cache_sync and cache_order wait for: every command up to seq answered, then the WAITs of
 * the nodes it depends on. */
typedef struct {
    node *n;
    unsigned gen;
} wait_dep;

struct barrier {
    barrier *next; /* in its list: its first slot's holds, the syncs, or those confirming */
    uint64_t seq;
    int failed;
    wait_dep *deps;
    size_t ndeps;
    node *only; /* cache_order: the node whose writes must reach its replicas */
    int hold;   /* cache_order: holds slot until first_slot's commands up to seq are answered */
    unsigned slot, first_slot;
    cache_done_cb cb;
    void *ud;
};

typedef struct {
    char *name;
    char *source;
} lua_script;

struct cache_client {
    uv_loop_t *loop;
    freelist spare_calls; /* one server: calls are all of one size, and kept for reuse */
    int cluster;
    char *url;
    cluster_seeds seeds;
    size_t next_seed;
    unsigned wait_replicas, wait_timeout_ms;
    double command_timeout;
    uint64_t timeout_ns;
    cache_state_cb on_state;
    void *state_ud;
    const char *setting;
    char problem[400]; /* cache_problem's answer */
    int state_up;
    int freeing;

    lua_script scripts[MAX_SCRIPTS];
    int nscripts;
    char *client_name; /* cache_fence's: every connection carries it */

    node *nodes;
    node *owner[SLOT_COUNT]; /* cluster: each slot's primary; single: owner[0] */
    int map_known;
    int refreshing, refresh_again;
    unsigned sent_count[SLOT_COUNT]; /* commands on the wire per slot */
    unsigned char draining[SLOT_COUNT];
    unsigned hold_count[SLOT_COUNT];

    call head; /* sentinel of the in-flight list */
    size_t ninflight;
    uint64_t seq;
    /* cluster: each slot's commands in flight, and those waiting to be sent (held behind a
     * cache_order, a MOVED being drained, a node not ready, a pause), in issue order */
    call **slot_first, **slot_last, **wait_first, **wait_last;
    uint64_t waiting_bits[SLOT_COUNT / 64];
    size_t nwaiting;
    /* cache_order's holds, by the slot whose commands they wait for, in issue order; the
     * slots with new ones; cache_sync's, in issue order; and those waiting on WAITs */
    barrier **hold_first, **hold_last;
    uint64_t hold_check_bits[SLOT_COUNT / 64];
    barrier *syncs, *syncs_last, *confirming;

    uv_timer_t tick, refresh_timer;
    uv_idle_t barrier_idle; /* new barriers are looked at from the loop */
    uv_check_t wait_flush;  /* the WAITs wanted in a loop iteration, sent at its end */
    int open_handles;

    uint64_t *moved_total, *ask_total, *retries_total, *refreshes_total, *waits_total,
        *waits_short_total, *orders_total;
    metrics_histogram *latency;
};

static void pump(cache_client *c);
static void pump_slot(cache_client *c, unsigned s);
static void check_holds(cache_client *c, unsigned slot);
static void check_syncs(cache_client *c);
static void check_confirming(cache_client *c);
static void schedule_refresh(cache_client *c, uint64_t delay_ms);
static void update_state(cache_client *c);
static void send_client_name(node *n);

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

/* ---- replies, as the program sees them ---- */

static size_t count_replies(const redisReply *r)
{
    size_t n = 1;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++)
            n += count_replies(r->element[i]);
    return n;
}

typedef struct {
    reply *nodes;
    const reply **ptrs;
} reply_arena;

static void convert(const redisReply *in, reply *out, reply_arena *a)
{
    *out = (reply){.integer = in->integer, .str = in->str, .len = in->len};
    switch (in->type) {
    case REDIS_REPLY_STRING:
        out->type = REPLY_STRING;
        break;
    case REDIS_REPLY_STATUS:
        out->type = REPLY_STATUS;
        break;
    case REDIS_REPLY_ERROR:
        out->type = REPLY_ERROR;
        break;
    case REDIS_REPLY_INTEGER:
        out->type = REPLY_INTEGER;
        break;
    case REDIS_REPLY_ARRAY:
        out->type = REPLY_ARRAY;
        out->elements = in->elements;
        const reply **elements = a->ptrs;
        a->ptrs += in->elements;
        out->element = elements;
        for (size_t i = 0; i < in->elements; i++) {
            reply *e = a->nodes++;
            elements[i] = e;
            convert(in->element[i], e, a);
        }
        break;
    default:
        out->type = REPLY_NIL;
        out->str = NULL;
        out->len = 0;
    }
}

/* Hands r to cb as the program's reply type: scalars on the stack, an array's elements in one
 * allocation. NULL when r is NULL, or when memory runs out (as if the command failed). */
static void hand_over(const redisReply *r, cache_reply_cb cb, void *ud)
{
    if (!r) {
        cb(NULL, ud);
        return;
    }
    reply top;
    if (r->type != REDIS_REPLY_ARRAY) {
        reply_arena none = {0};
        convert(r, &top, &none);
        cb(&top, ud);
        return;
    }
    size_t n = count_replies(r) - 1;
    void *mem = malloc((n ? n : 1) * (sizeof(reply) + sizeof(reply *)));
    if (!mem) {
        cb(NULL, ud);
        return;
    }
    reply_arena a = {mem, (const reply **)((reply *)mem + n)};
    convert(r, &top, &a);
    cb(&top, ud);
    free(mem);
}

/* ---- nodes ---- */

static void on_node_state(int up, void *ud);

/* redis://[user:password@]host:port for a node of the cluster. */
static char *node_url(const cache_client *c, const node_addr *a)
{
    buf u = {0};
    int err = buf_puts(&u, "redis://");
    if (c->seeds.password) {
        if (c->seeds.user) err |= buf_url_encode(&u, c->seeds.user);
        err |= buf_puts(&u, ":") | buf_url_encode(&u, c->seeds.password) | buf_puts(&u, "@");
    }
    err |= strchr(a->host, ':') ? buf_printf(&u, "[%s]:%d", a->host, a->port)
                                : buf_printf(&u, "%s:%d", a->host, a->port);
    if (err) {
        buf_free(&u);
        return NULL;
    }
    return u.data;
}

static double gauge_pending(void *ud)
{
    return (double)((cache_client *)ud)->ninflight;
}

static double gauge_up(void *ud)
{
    return ((cache_client *)ud)->state_up;
}

static double gauge_primaries(void *ud)
{
    size_t n = 0;
    for (const node *x = ((cache_client *)ud)->nodes; x; x = x->next)
        n += x->in_map;
    return (double)n;
}

static double gauge_refused(void *ud)
{
    for (const node *n = ((cache_client *)ud)->nodes; n; n = n->next)
        if (valkey_setup_refused(n->v)) return 1;
    return 0;
}

/* The client's gauges describe every connection: a node's would outlive it once the map
 * dropped it. */
static void own_gauges(cache_client *c)
{
    metrics_gauge("valkey_pending_commands", "Commands awaiting a reply", gauge_pending, c);
    metrics_gauge("valkey_up", "1 when every slot's server is connected", gauge_up, c);
    metrics_gauge("valkey_setup_refused",
                  "1 while a server refuses the connection setup (password, DB index, ACL)",
                  gauge_refused, c);
    if (c->cluster)
        metrics_gauge("valkey_cluster_primaries", "Primaries of the cluster's slot map",
                      gauge_primaries, c);
}

/* A new node at url (a: its address on a cluster): its connection made and the scripts
 * registered. NULL out of memory, or on a bad URL (logged). */
static node *node_new(cache_client *c, const node_addr *a, const char *url)
{
    node *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->c = c;
    n->wait_target = c->wait_replicas;
    if (a) n->addr = *a;
    valkey_options vo = {.url = url,
                         .command_timeout = c->command_timeout,
                         .on_state = on_node_state,
                         .state_ud = n,
                         .setting = c->setting};
    n->v = valkey_new(c->loop, &vo);
    int ok = n->v != NULL;
    for (int i = 0; ok && i < c->nscripts; i++)
        ok = valkey_register_script(n->v, c->scripts[i].name, c->scripts[i].source) == i;
    if (!ok) {
        if (n->v) valkey_free(n->v);
        free(n);
        return NULL;
    }
    n->next = c->nodes;
    c->nodes = n;
    return n;
}

static node *node_find(cache_client *c, const node_addr *a)
{
    for (node *n = c->nodes; n; n = n->next)
        if (n->addr.port == a->port && !strcmp(n->addr.host, a->host)) return n;
    return NULL;
}

/* The node at a, connected to when new; NULL out of memory. */
static node *node_at(cache_client *c, const node_addr *a)
{
    node *n = node_find(c, a);
    if (n) {
        n->retired = 0;
        return n;
    }
    char *url = node_url(c, a);
    n = url ? node_new(c, a, url) : NULL;
    free(url);
    if (!n) return NULL;
    log_info("valkey", "connecting to %s:%d", a->host, a->port);
    valkey_start(n->v);
    return n;
}

/* Frees retired nodes nothing refers to; from the tick, never inside a connection's callback. */
static void sweep_nodes(cache_client *c)
{
    for (node **pp = &c->nodes; *pp;) {
        node *n = *pp;
        if (!n->retired || n->refs) {
            pp = &n->next;
            continue;
        }
        *pp = n->next;
        log_info("valkey", "%s:%d is no longer a primary: disconnecting", n->addr.host,
                 n->addr.port);
        valkey_free(n->v);
        free(n);
    }
}

static node *owner_of(const cache_client *c, unsigned slot)
{
    return c->owner[c->cluster ? slot : 0];
}

static void on_node_state(int up, void *ud)
{
    node *n = ud;
    cache_client *c = n->c;
    n->ready = up;
    if (c->freeing) return;
    if (c->cluster)
        log_info("valkey", "%s:%d %s", n->addr.host, n->addr.port, up ? "ready" : "lost");
    if (up) {
        send_client_name(n);
        if (c->cluster && (!c->map_known || c->refresh_again)) schedule_refresh(c, 0);
        pump(c);
    } else if (c->cluster && n->in_map) {
        /* A primary went away: its replica may be promoted; the map says when. */
        schedule_refresh(c, 0);
    }
    update_state(c);
}

/* Up when every slot has a ready primary. */
static void update_state(cache_client *c)
{
    int up = 1;
    if (c->cluster) {
        up = c->map_known;
        for (const node *n = c->nodes; up && n; n = n->next)
            if (n->in_map && !n->ready) up = 0;
    } else {
        up = c->owner[0] && c->owner[0]->ready;
    }
    if (up == c->state_up) return;
    c->state_up = up;
    if (c->on_state && !c->freeing) c->on_state(up, c->state_ud);
}

/* ---- the slot map ---- */

static void apply_map(cache_client *c, const slot_map *m)
{
    node **nodes = calloc(m->nprimaries ? m->nprimaries : 1, sizeof *nodes);
    if (!nodes) return;
    for (size_t i = 0; i < m->nprimaries; i++)
        if (!(nodes[i] = node_at(c, &m->primaries[i]))) {
            free(nodes);
            return;
        }
    for (node *n = c->nodes; n; n = n->next)
        n->in_map = 0;
    for (size_t i = 0; i < m->nprimaries; i++)
        nodes[i]->in_map = 1;
    for (unsigned s = 0; s < SLOT_COUNT; s++) {
        node *o = m->owner[s] == SLOT_NONE ? NULL : nodes[m->owner[s]];
        /* Commands on their way to the old owner come back MOVED: later ones wait for them. */
        if (o != c->owner[s] && c->sent_count[s]) c->draining[s] = 1;
        c->owner[s] = o;
    }
    for (node *n = c->nodes; n; n = n->next)
        n->retired = !n->in_map;
    free(nodes);
    c->map_known = 1;
}

typedef struct {
    const char *asked_host;
    slot_map m;
    int ok;
    char why[96];
} slots_answer;

static void parse_slots(const reply *r, void *ud)
{
    slots_answer *a = ud;
    if (r)
        a->ok = slot_map_parse(r, a->asked_host, &a->m, a->why, sizeof a->why) == 0;
    else
        snprintf(a->why, sizeof a->why, "no answer");
}

static void on_slots(redisReply *r, void *ud)
{
    node *n = ud;
    cache_client *c = n->c;
    n->refs--;
    c->refreshing = 0;
    if (c->freeing) return;
    (*c->refreshes_total)++;
    slots_answer a = {.asked_host = n->addr.host};
    hand_over(r, parse_slots, &a);
    if (!a.ok) {
        log_warn("valkey", "CLUSTER SLOTS from %s:%d: %s", n->addr.host, n->addr.port, a.why);
        schedule_refresh(c, REFRESH_RETRY_MS);
        return;
    }
    int complete = slot_map_complete(&a.m);
    apply_map(c, &a.m);
    slot_map_free(&a.m);
    int all_ready = complete;
    for (const node *x = c->nodes; all_ready && x; x = x->next)
        if (x->in_map && !x->ready) all_ready = 0;
    if (!all_ready || c->refresh_again) {
        c->refresh_again = 0;
        schedule_refresh(c, REFRESH_RETRY_MS);
    }
    update_state(c);
    pump(c);
}

/* Asks a ready node for the map; when none is, connects to the next seed and asks once it is
 * ready. */
static void refresh(cache_client *c)
{
    if (c->refreshing || c->freeing) return;
    node *from = NULL;
    for (node *n = c->nodes; n; n = n->next)
        if (n->ready && (!from || (n->in_map && !from->in_map))) from = n;
    if (!from) {
        const node_addr *seed = &c->seeds.addrs[c->next_seed++ % c->seeds.n];
        node_at(c, seed); /* asked once it is ready (on_node_state) */
        c->refresh_again = 1;
        schedule_refresh(c, REFRESH_RETRY_MS);
        return;
    }
    if (valkey_command(from->v, on_slots, from, 2, (const char *[]){"CLUSTER", "SLOTS"}, NULL) <
        0) {
        schedule_refresh(c, REFRESH_RETRY_MS);
        return;
    }
    from->refs++;
    c->refreshing = 1;
}

static void on_refresh_timer(uv_timer_t *t)
{
    refresh(t->data);
}

/* Coalesced: the earliest asked for wins. */
static void schedule_refresh(cache_client *c, uint64_t delay_ms)
{
    if (!c->cluster || c->freeing) return;
    if (c->refreshing) {
        c->refresh_again = 1;
        return;
    }
    if (uv_is_active((uv_handle_t *)&c->refresh_timer) &&
        uv_timer_get_due_in(&c->refresh_timer) <= delay_ms)
        return;
    uv_timer_start(&c->refresh_timer, on_refresh_timer, delay_ms, 0);
}

/* ---- commands ---- */

static void on_call_reply(redisReply *r, void *ud);

static void inflight_add(cache_client *c, call *k)
{
    k->prev = c->head.prev;
    k->next = &c->head;
    c->head.prev->next = k;
    c->head.prev = k;
    c->ninflight++;
    if (!c->cluster) return;
    k->sprev = c->slot_last[k->slot];
    k->snext = NULL;
    if (k->sprev)
        k->sprev->snext = k;
    else
        c->slot_first[k->slot] = k;
    c->slot_last[k->slot] = k;
}

static void inflight_remove(cache_client *c, call *k)
{
    k->prev->next = k->next;
    k->next->prev = k->prev;
    c->ninflight--;
    if (!c->cluster) return;
    if (k->sprev)
        k->sprev->snext = k->snext;
    else
        c->slot_first[k->slot] = k->snext;
    if (k->snext)
        k->snext->sprev = k->sprev;
    else
        c->slot_last[k->slot] = k->sprev;
}

static void bit_set(uint64_t *bits, unsigned i)
{
    bits[i >> 6] |= 1ull << (i & 63);
}

static void bit_clear(uint64_t *bits, unsigned i)
{
    bits[i >> 6] &= ~(1ull << (i & 63));
}

/* Into its slot's waiting list, in issue order: a command sent again keeps its place. */
static void wait_insert(cache_client *c, call *k)
{
    unsigned s = k->slot;
    call **pp = &c->wait_first[s];
    if (c->wait_last[s] && c->wait_last[s]->seq < k->seq) pp = &c->wait_last[s]->wnext;
    while (*pp && (*pp)->seq < k->seq)
        pp = &(*pp)->wnext;
    k->wnext = *pp;
    *pp = k;
    if (!k->wnext) c->wait_last[s] = k;
    k->waiting = 1;
    c->nwaiting++;
    bit_set(c->waiting_bits, s);
}

static call *wait_pop(cache_client *c, unsigned s)
{
    call *k = c->wait_first[s];
    c->wait_first[s] = k->wnext;
    if (!k->wnext) {
        c->wait_last[s] = NULL;
        bit_clear(c->waiting_bits, s);
    }
    k->wnext = NULL;
    k->waiting = 0;
    c->nwaiting--;
    return k;
}

/* A call with its arguments; on a cluster they are copied (it may be sent again later). */
static call *call_new(cache_client *c, cache_reply_cb cb, void *ud, int script, int nkeys, int argc,
                      const char **argv, const size_t *argvlen)
{
    size_t extra = 0;
    if (c->cluster) {
        extra = (size_t)argc * (sizeof(size_t) + sizeof(char *));
        for (int i = 0; i < argc; i++)
            extra += (argvlen ? argvlen[i] : strlen(argv[i])) + 1;
    }
    call *k = c->cluster ? malloc(sizeof *k + extra) : freelist_get(&c->spare_calls);
    if (!k) return NULL;
    *k = (call){.c = c, .cb = cb, .ud = ud, .script = script, .nkeys = nkeys, .argc = argc};
    if (!c->cluster) {
        k->argv = argv; /* sent before cache_command returns, never again */
        k->lens = (size_t *)argvlen;
        return k;
    }
    size_t *lens = (size_t *)(k + 1);
    const char **args = (const char **)(lens + argc);
    char *text = (char *)(args + argc);
    for (int i = 0; i < argc; i++) {
        lens[i] = argvlen ? argvlen[i] : strlen(argv[i]);
        memcpy(text, argv[i], lens[i]);
        text[lens[i]] = 0;
        args[i] = text;
        text += lens[i] + 1;
    }
    k->argv = args;
    k->lens = lens;
    return k;
}

static void call_free(cache_client *c, call *k)
{
    if (c->cluster)
        free(k);
    else
        freelist_put(&c->spare_calls, k);
}

static void on_asking(redisReply *r, void *ud)
{
    (void)r;
    (void)ud;
}

static void set_ask(call *k, node *to)
{
    if (k->ask) k->ask->refs--;
    k->ask = to;
    if (to) to->refs++;
}

static int send_to(call *k, node *n)
{
    cache_client *c = k->c;
    if (k->ask && valkey_command(n->v, on_asking, NULL, 1, (const char *[]){"ASKING"}, NULL) < 0)
        return -1;
    int rc = k->script >= 0 ? valkey_eval(n->v, k->script, on_call_reply, k, k->nkeys, k->argc,
                                          k->argv, k->lens)
                            : valkey_command(n->v, on_call_reply, k, k->argc, k->argv, k->lens);
    if (rc < 0) return -1;
    set_ask(k, NULL);
    k->sent = n;
    n->refs++;
    c->sent_count[k->slot]++;
    return 0;
}

/* Which barriers a failed command spoils: those that wait for it. */
static void note_failure(cache_client *c, const call *k)
{
    for (barrier *b = c->syncs; b; b = b->next)
        if (b->seq >= k->seq) b->failed = 1;
    if (!c->cluster) return;
    for (barrier *b = c->hold_first[k->slot]; b; b = b->next)
        if (b->seq >= k->seq) b->failed = 1;
}

/* The command's end: the caller gets the reply (NULL: it failed). */
static void finish(call *k, const redisReply *r, node *from)
{
    cache_client *c = k->c;
    if (r && from) from->dirty = 1;
    if (!r) note_failure(c, k);
    set_ask(k, NULL);
    inflight_remove(c, k);
    unsigned slot = k->slot;
    hand_over(r, k->cb, k->ud);
    call_free(c, k);
    if (c->freeing) return;
    if (c->cluster) check_holds(c, slot);
    check_syncs(c);
}

/* A command a cluster answered with a redirection, or that a lost node never answered: sent
 * again, in its turn. 0 when it cannot be (past its deadline, or redirected too often). */
static int retry(call *k, node *n, const redisReply *r)
{
    cache_client *c = k->c;
    uint64_t now = now_ns();
    if (now >= k->deadline_ns) return 0;
    if (!r) {
        /* Lost with its node: sent again once the map names a ready primary for its slot. */
        (*c->retries_total)++;
        wait_insert(c, k);
        schedule_refresh(c, 0);
        return 1;
    }
    if (r->type != REDIS_REPLY_ERROR) return 0;
    redirect rd;
    switch (redirect_parse(r->str, n->addr.host, &rd)) {
    case REDIRECT_NONE:
        return 0;
    case REDIRECT_MOVED:
    case REDIRECT_ASK: {
        node *to = ++k->redirects <= MAX_REDIRECTS ? node_at(c, &rd.to) : NULL;
        if (!to) return 0;
        if (rd.kind == REDIRECT_ASK) {
            (*c->ask_total)++;
            set_ask(k, to);
        } else {
            (*c->moved_total)++;
            if (rd.slot < SLOT_COUNT && c->owner[rd.slot] != to) {
                /* Commands of the slot still on their way to the old owner come back MOVED
                 * too: every one waits until they have, so they keep their order. */
                if (c->sent_count[rd.slot]) c->draining[rd.slot] = 1;
                c->owner[rd.slot] = to;
            }
            schedule_refresh(c, 0);
        }
        wait_insert(c, k);
        return 1;
    }
    case REDIRECT_TRYAGAIN:
    case REDIRECT_CLUSTERDOWN:
        if (now + RETRY_PAUSE_MS * 1000000ull >= k->deadline_ns) return 0;
        (*c->retries_total)++;
        k->not_before_ns = now + RETRY_PAUSE_MS * 1000000ull;
        if (rd.kind == REDIRECT_CLUSTERDOWN) schedule_refresh(c, 0);
        wait_insert(c, k);
        return 1;
    }
    return 0;
}

static void on_call_reply(redisReply *r, void *ud)
{
    call *k = ud;
    cache_client *c = k->c;
    node *n = k->sent;
    unsigned s = k->slot;
    k->sent = NULL;
    n->refs--;
    if (--c->sent_count[s] == 0) c->draining[s] = 0;
    if (!c->freeing && c->cluster && retry(k, n, r)) {
        pump_slot(c, s);
        return;
    }
    finish(k, r, n);
    if (!c->freeing && c->cluster && c->wait_first[s]) pump_slot(c, s);
}

/* Sends what waits on slot s and may go now, in issue order: the first that may not (a hold,
 * a MOVED being drained, its node not ready, a pause) keeps the rest behind it. What is past
 * its deadline fails. */
static void pump_slot(cache_client *c, unsigned s)
{
    if (c->freeing) return;
    uint64_t now = now_ns();
    call *expired = NULL, **tail = &expired;
    while (c->wait_first[s]) {
        call *k = c->wait_first[s];
        if (now >= k->deadline_ns) {
            *tail = wait_pop(c, s);
            tail = &k->wnext;
            continue;
        }
        node *to = k->ask ? k->ask : owner_of(c, s);
        if (c->hold_count[s] || c->draining[s] || now < k->not_before_ns || !to || !to->ready)
            break;
        wait_pop(c, s);
        if (send_to(k, to) < 0) {
            wait_insert(c, k); /* not taken after all: back in its place */
            break;
        }
    }
    while (expired) {
        call *k = expired;
        expired = k->wnext;
        k->wnext = NULL;
        finish(k, NULL, NULL);
    }
}

/* Every slot with commands waiting. */
static void pump(cache_client *c)
{
    if (c->freeing || !c->nwaiting) return;
    for (unsigned w = 0; w < SLOT_COUNT / 64; w++) {
        uint64_t bits = c->waiting_bits[w];
        while (bits) {
            unsigned s = w * 64 + (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            pump_slot(c, s);
        }
    }
}

static unsigned slot_of_arg(const char *s, const size_t *lens, int i)
{
    return slot_of_key(s, lens ? lens[i] : strlen(s));
}

static int issue(cache_client *c, int script, int nkeys, cache_reply_cb cb, void *ud, int argc,
                 const char **argv, const size_t *argvlen)
{
    if (c->freeing || argc < 1) return -1;
    unsigned slot = 0;
    if (c->cluster) {
        int key = script >= 0 ? 0 : 1;
        if (argc <= key || (script >= 0 && nkeys < 1)) return -1;
        slot = slot_of_arg(argv[key], argvlen, key);
    }
    node *to = owner_of(c, slot);
    if (!to || !to->ready) return -1;
    call *k = call_new(c, cb, ud, script, nkeys, argc, argv, argvlen);
    if (!k) return -1;
    uint64_t now = now_ns();
    k->slot = slot;
    k->seq = ++c->seq;
    k->deadline_ns = now + c->timeout_ns;
    inflight_add(c, k);
    /* Behind what of its slot waits, so it keeps its order. */
    if (c->cluster && (c->wait_first[slot] || c->hold_count[slot] || c->draining[slot])) {
        wait_insert(c, k);
        return 0;
    }
    if (send_to(k, to) < 0) {
        inflight_remove(c, k);
        call_free(c, k);
        return -1;
    }
    return 0;
}

int cache_command(cache_client *c, cache_reply_cb cb, void *ud, int argc, const char **argv,
                  const size_t *argvlen)
{
    return issue(c, -1, 0, cb, ud, argc, argv, argvlen);
}

int cache_eval(cache_client *c, int script, cache_reply_cb cb, void *ud, int nkeys, int argc,
               const char **argv, const size_t *argvlen)
{
    if (script < 0 || script >= c->nscripts || nkeys < 0 || nkeys > argc) return -1;
    return issue(c, script, nkeys, cb, ud, argc, argv, argvlen);
}

/* ---- replication: WAIT ---- */

/* One WAIT, and the ROLE after it that says how many replicas the primary has. */
typedef struct {
    node *n;
    unsigned gen;
    long long acked;
} wait_req;

/* Replicas a primary had at its last ROLE: what its next WAIT asks for (never more than
 * configured), so a primary whose replica is gone is not waited on until the timeout each
 * time. Starts at what is configured. */
static unsigned wait_target(const cache_client *c, long long connected)
{
    return connected >= 0 && (unsigned long long)connected < c->wait_replicas ? (unsigned)connected
                                                                              : c->wait_replicas;
}

static void on_wait(redisReply *r, void *ud)
{
    wait_req *w = ud;
    w->acked = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
}

/* ROLE on a primary: ["master", offset, [[host, port, offset], ...]]. -1 when unreadable. */
static long long replicas_of(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "master") ||
        r->element[2]->type != REDIS_REPLY_ARRAY)
        return -1;
    return (long long)r->element[2]->elements;
}

static void on_role(redisReply *r, void *ud)
{
    wait_req *w = ud;
    node *n = w->n;
    cache_client *c = n->c;
    long long connected = replicas_of(r);
    n->refs--;
    if (!c->freeing) {
        long long known = connected >= 0 ? connected : c->wait_replicas;
        if (w->acked >= 0 && slot_wait_enough(w->acked, c->wait_replicas, known)) {
            if (w->gen > n->wait_ok_gen) n->wait_ok_gen = w->gen;
        } else {
            /* one line when a node starts failing, not one per WAIT in flight */
            if (n->wait_fail_gen <= n->wait_ok_gen) {
                if (w->acked < 0)
                    log_warn("valkey", "%s:%d: WAIT not answered (connection lost)", n->addr.host,
                             n->addr.port);
                else
                    log_warn("valkey",
                             "%s:%d: %lld of %lld replicas confirmed the writes within %u ms",
                             n->addr.host, n->addr.port, w->acked, known, c->wait_timeout_ms);
            }
            n->wait_fail_gen = w->gen;
            n->dirty = 1;
            (*c->waits_short_total)++;
        }
        n->wait_target = wait_target(c, connected);
    }
    free(w);
    if (!c->freeing) check_confirming(c);
}

/* Sends WAIT (and ROLE) on n; its generation is what barriers wait for. */
static int send_wait(node *n)
{
    cache_client *c = n->c;
    wait_req *w = calloc(1, sizeof *w);
    if (!w || !n->ready) {
        free(w);
        return -1;
    }
    char want[16], ms[16];
    snprintf(want, sizeof want, "%u", n->wait_target);
    snprintf(ms, sizeof ms, "%u", c->wait_timeout_ms);
    w->n = n;
    w->gen = n->wait_gen + 1;
    if (valkey_command(n->v, on_wait, w, 3, (const char *[]){"WAIT", want, ms}, NULL) < 0) {
        free(w);
        return -1;
    }
    /* Both are queued on one connection: the ROLE cannot fail to be sent after the WAIT was. */
    valkey_command(n->v, on_role, w, 1, (const char *[]){"ROLE"}, NULL);
    n->refs++;
    n->wait_gen = w->gen;
    n->dirty = 0;
    (*c->waits_total)++;
    return 0;
}

/* ---- barriers: cache_sync and cache_order ---- */

static void add_dep(barrier *b, node *n, unsigned gen)
{
    wait_dep *d = realloc(b->deps, (b->ndeps + 1) * sizeof *d);
    if (!d) {
        b->failed = 1;
        return;
    }
    b->deps = d;
    d[b->ndeps++] = (wait_dep){n, gen};
    n->refs++;
}

static void on_wait_flush(uv_check_t *h)
{
    cache_client *c = h->data;
    uv_check_stop(h);
    for (node *n = c->nodes; n; n = n->next) {
        if (!n->wait_wanted) continue;
        n->wait_wanted = 0;
        if (send_wait(n) < 0) { /* what depends on it fails */
            n->wait_fail_gen = ++n->wait_gen;
            n->dirty = 1;
        }
    }
    check_confirming(c);
}

/* b needs n's writes so far on its replicas: the WAIT this loop iteration sends (one per node
 * however many barriers want it), or the one already on its way when nothing was answered on
 * n since it left. */
static void want_wait(cache_client *c, barrier *b, node *n)
{
    if (n->dirty || n->wait_wanted) {
        if (!n->ready) {
            b->failed = 1; /* writes it acknowledged may die with it */
            return;
        }
        if (!n->wait_wanted) {
            n->wait_wanted = 1;
            uv_check_start(&c->wait_flush, on_wait_flush);
        }
        add_dep(b, n, n->wait_gen + 1);
    } else if (n->wait_gen > n->wait_ok_gen && n->wait_gen > n->wait_fail_gen) {
        add_dep(b, n, n->wait_gen);
    }
}

/* 1 done, 0 pending; failed set when a WAIT fell short. */
static int deps_done(barrier *b)
{
    for (size_t i = 0; i < b->ndeps; i++) {
        const node *n = b->deps[i].n;
        unsigned gen = b->deps[i].gen;
        if (n->wait_ok_gen >= gen) continue;
        if (n->wait_fail_gen >= gen) {
            b->failed = 1;
            continue;
        }
        return 0;
    }
    return 1;
}

static void barrier_free(barrier *b)
{
    for (size_t i = 0; i < b->ndeps; i++)
        b->deps[i].n->refs--;
    if (b->only) b->only->refs--;
    free(b->deps);
    free(b);
}

/* A hold ends: what it held goes, or, when the write it followed did not make it, fails (its
 * caller folds it again). */
static void release_hold(cache_client *c, barrier *b)
{
    unsigned s = b->slot;
    c->hold_count[s]--;
    if (b->failed) {
        call *failed = NULL, **tail = &failed;
        call **pp = &c->wait_first[s];
        while (*pp && (*pp)->seq <= b->seq)
            pp = &(*pp)->wnext;
        while (*pp) {
            call *k = *pp;
            *pp = k->wnext;
            c->nwaiting--;
            k->waiting = 0;
            k->wnext = NULL;
            *tail = k;
            tail = &k->wnext;
        }
        c->wait_last[s] = NULL;
        for (call *k = c->wait_first[s]; k; k = k->wnext)
            c->wait_last[s] = k;
        if (!c->wait_first[s]) bit_clear(c->waiting_bits, s);
        while (failed) {
            call *k = failed;
            failed = k->wnext;
            finish(k, NULL, NULL);
        }
    }
    pump_slot(c, s);
}

static void barrier_done(cache_client *c, barrier *b)
{
    if (b->hold)
        release_hold(c, b);
    else
        b->cb(!b->failed, b->ud);
    barrier_free(b);
}

/* Every command b waits for was answered: the WAITs it needs, then it is done. */
static void answered(cache_client *c, barrier *b)
{
    if (c->wait_replicas) {
        if (b->only)
            want_wait(c, b, b->only);
        else
            for (node *n = c->nodes; n; n = n->next)
                want_wait(c, b, n);
    }
    if (deps_done(b)) {
        barrier_done(c, b);
        return;
    }
    b->next = c->confirming;
    c->confirming = b;
}

/* Holds waiting on slot's commands: those issued before its oldest in flight are answered. */
static void check_holds(cache_client *c, unsigned slot)
{
    const call *oldest = c->slot_first[slot];
    barrier *b;
    while ((b = c->hold_first[slot]) && (!oldest || oldest->seq > b->seq)) {
        c->hold_first[slot] = b->next;
        if (!b->next) c->hold_last[slot] = NULL;
        b->next = NULL;
        answered(c, b);
        oldest = c->slot_first[slot];
    }
}

static void check_syncs(cache_client *c)
{
    barrier *b;
    while ((b = c->syncs) && (c->head.next == &c->head || c->head.next->seq > b->seq)) {
        c->syncs = b->next;
        if (!c->syncs) c->syncs_last = NULL;
        b->next = NULL;
        answered(c, b);
    }
}

static void check_confirming(cache_client *c)
{
    barrier *done = NULL;
    for (barrier **pp = &c->confirming; *pp;) {
        barrier *b = *pp;
        if (!deps_done(b)) {
            pp = &b->next;
            continue;
        }
        *pp = b->next;
        b->next = done;
        done = b;
    }
    while (done) {
        barrier *b = done;
        done = b->next;
        barrier_done(c, b);
    }
}

/* New barriers are looked at from the loop, never inside the caller's call (an idle handle: a
 * zero timer started again from its own callback would never let the loop leave its timers). */
static void on_barrier_idle(uv_idle_t *h)
{
    cache_client *c = h->data;
    uv_idle_stop(h);
    check_syncs(c);
    for (unsigned w = 0; c->cluster && w < SLOT_COUNT / 64; w++) {
        uint64_t bits = c->hold_check_bits[w];
        c->hold_check_bits[w] = 0;
        while (bits) {
            unsigned s = w * 64 + (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            check_holds(c, s);
        }
    }
}

static barrier *barrier_new(cache_client *c)
{
    barrier *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->seq = c->seq;
    uv_idle_start(&c->barrier_idle, on_barrier_idle);
    return b;
}

int cache_sync(cache_client *c, cache_done_cb cb, void *ud)
{
    if (c->freeing) return -1;
    barrier *b = barrier_new(c);
    if (!b) return -1;
    b->cb = cb;
    b->ud = ud;
    if (c->syncs_last)
        c->syncs_last->next = b;
    else
        c->syncs = b;
    c->syncs_last = b;
    return 0;
}

int cache_keys_together(const cache_client *c, const char *a, const char *b)
{
    return !c->cluster || slot_of_key(a, strlen(a)) == slot_of_key(b, strlen(b));
}

int cache_order(cache_client *c, const char *first, const char *then)
{
    if (cache_keys_together(c, first, then)) return 0;
    if (c->freeing) return -1;
    barrier *b = barrier_new(c);
    if (!b) return -1;
    (*c->orders_total)++;
    b->hold = 1;
    b->slot = slot_of_key(then, strlen(then));
    b->first_slot = slot_of_key(first, strlen(first));
    b->only = owner_of(c, b->first_slot);
    if (b->only)
        b->only->refs++;
    else
        b->failed = 1;
    c->hold_count[b->slot]++;
    unsigned f = b->first_slot;
    if (c->hold_last[f])
        c->hold_last[f]->next = b;
    else
        c->hold_first[f] = b;
    c->hold_last[f] = b;
    bit_set(c->hold_check_bits, f);
    return 0;
}

/* ---- walking the keys: SCAN on every primary ---- */

typedef struct {
    cache_client *c;
    cache_scan_cb cb;
    void *ud;
    char *pattern;
    node_addr *addrs; /* cluster: the primaries when the walk started */
    size_t naddrs, ix;
    char cursor[32];
    node *n;
} scan_walk;

static void scan_free(scan_walk *w)
{
    free(w->pattern);
    free(w->addrs);
    free(w);
}

static int scan_step(scan_walk *w);

typedef struct {
    scan_walk *w;
    int stop;
} scan_page;

static void on_scan_keys(const reply *r, void *ud)
{
    scan_page *p = ud;
    p->stop = !r ? -1 : p->w->cb(r->element[1], 0, p->w->ud) ? 1 : 0;
}

static void on_scan(redisReply *r, void *ud)
{
    scan_walk *w = ud;
    cache_client *c = w->c;
    w->n->refs--;
    int ok = !c->freeing && r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len < sizeof w->cursor &&
             r->element[1]->type == REDIS_REPLY_ARRAY;
    scan_page p = {w, 0};
    if (ok) hand_over(r, on_scan_keys, &p);
    if (!ok || p.stop < 0) {
        w->cb(NULL, -1, w->ud);
        scan_free(w);
        return;
    }
    if (p.stop) {
        scan_free(w);
        return;
    }
    memcpy(w->cursor, r->element[0]->str, r->element[0]->len + 1);
    if (!strcmp(w->cursor, "0")) {
        w->ix++;
        if (w->ix == w->naddrs) {
            w->cb(NULL, 1, w->ud);
            scan_free(w);
            return;
        }
    }
    if (scan_step(w) < 0) {
        w->cb(NULL, -1, w->ud);
        scan_free(w);
    }
}

static int scan_step(scan_walk *w)
{
    cache_client *c = w->c;
    node *n = c->cluster ? node_find(c, &w->addrs[w->ix]) : c->owner[0];
    if (!n || !n->ready) return -1;
    if (valkey_command(
            n->v, on_scan, w, 6,
            (const char *[]){"SCAN", w->cursor, "MATCH", w->pattern, "COUNT", SCAN_COUNT},
            NULL) < 0)
        return -1;
    w->n = n;
    n->refs++;
    return 0;
}

int cache_scan(cache_client *c, const char *pattern, cache_scan_cb cb, void *ud)
{
    if (c->freeing || !c->state_up) return -1;
    scan_walk *w = calloc(1, sizeof *w);
    if (!w) return -1;
    *w = (scan_walk){.c = c, .cb = cb, .ud = ud, .pattern = strdup(pattern), .naddrs = 1};
    strcpy(w->cursor, "0");
    if (c->cluster) {
        w->naddrs = 0;
        for (const node *n = c->nodes; n; n = n->next)
            w->naddrs += n->in_map;
        w->addrs = calloc(w->naddrs ? w->naddrs : 1, sizeof *w->addrs);
        size_t i = 0;
        for (const node *n = c->nodes; w->addrs && n; n = n->next)
            if (n->in_map) w->addrs[i++] = n->addr;
    }
    if (!w->pattern || (c->cluster && (!w->addrs || !w->naddrs)) || scan_step(w) < 0) {
        scan_free(w);
        return -1;
    }
    return 0;
}

/* ---- fencing: CLIENT SETNAME, LIST and KILL on every primary ---- */

typedef struct {
    cache_client *c;
    cache_fence_cb cb;
    void *ud;
    int pending, ok;
    unsigned killed;
} fence;

typedef struct {
    fence *f;
    node *n;
    long long own_id;
    int expect; /* replies still to come (CLIENT ID, CLIENT LIST) */
} fence_node;

static void fence_done(fence *f)
{
    if (--f->pending) return;
    f->cb(f->ok && !f->c->freeing, f->killed, f->ud);
    free(f);
}

static void fence_node_done(fence_node *fn)
{
    if (--fn->expect) return;
    fn->n->refs--;
    fence_done(fn->f);
    free(fn);
}

static void on_named(redisReply *r, void *ud)
{
    node *n = ud;
    if (r && r->type == REDIS_REPLY_ERROR)
        log_warn("valkey", "CLIENT SETNAME refused by %s: %s",
                 n->c->cluster ? n->addr.host : "Valkey", r->str);
}

static void send_client_name(node *n)
{
    cache_client *c = n->c;
    if (c->client_name)
        valkey_command(n->v, on_named, n, 3, (const char *[]){"CLIENT", "SETNAME", c->client_name},
                       NULL);
}

static void on_own_id(redisReply *r, void *ud)
{
    fence_node *fn = ud;
    fn->own_id = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    fence_node_done(fn);
}

static void on_killed(redisReply *r, void *ud)
{
    (void)r; /* a client that left meanwhile makes KILL fail: it is gone either way */
    fence_done(ud);
}

/* CLIENT LIST lines look like "id=7 addr=... name=atcr:ingest ...". */
static void on_client_list(redisReply *r, void *ud)
{
    fence_node *fn = ud;
    fence *f = fn->f;
    cache_client *c = f->c;
    if (!r || r->type != REDIS_REPLY_STRING || fn->own_id < 0 || c->freeing) {
        f->ok = 0;
        fence_node_done(fn);
        return;
    }
    char name[160];
    for (const char *line = r->str; line && *line; line = strchr(line, '\n'), line += !!line) {
        long long id;
        const char *at = strstr(line, " name=");
        const char *eol = strchr(line, '\n');
        if (sscanf(line, "id=%lld", &id) != 1 || !at || (eol && at > eol)) continue;
        if (sscanf(at, " name=%159s", name) != 1 || strcmp(name, c->client_name) ||
            id == fn->own_id)
            continue;
        char idbuf[24];
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        if (valkey_command(fn->n->v, on_killed, f, 4,
                           (const char *[]){"CLIENT", "KILL", "ID", idbuf}, NULL) == 0) {
            f->pending++;
            f->killed++;
            log_info("valkey", "fencing off an earlier connection named %s (client %s%s%s)",
                     c->client_name, idbuf, c->cluster ? " of " : "",
                     c->cluster ? fn->n->addr.host : "");
        }
    }
    fence_node_done(fn);
}

int cache_fence(cache_client *c, const char *name, cache_fence_cb cb, void *ud)
{
    if (c->freeing || !c->state_up) return -1;
    char *copy = strdup(name);
    fence *f = calloc(1, sizeof *f);
    if (!copy || !f) {
        free(copy);
        free(f);
        return -1;
    }
    free(c->client_name);
    c->client_name = copy;
    *f = (fence){.c = c, .cb = cb, .ud = ud, .pending = 1, .ok = 1};
    for (node *n = c->nodes; n; n = n->next) {
        if (c->cluster && !n->in_map) continue;
        fence_node *fn = calloc(1, sizeof *fn);
        if (!fn) {
            f->ok = 0;
            continue;
        }
        *fn = (fence_node){.f = f, .n = n, .own_id = -1, .expect = 1};
        send_client_name(n);
        if (valkey_command(n->v, on_own_id, fn, 2, (const char *[]){"CLIENT", "ID"}, NULL) < 0) {
            free(fn);
            f->ok = 0;
            continue;
        }
        n->refs++;
        f->pending++;
        if (valkey_command(n->v, on_client_list, fn, 4,
                           (const char *[]){"CLIENT", "LIST", "TYPE", "normal"}, NULL) == 0)
            fn->expect++;
        else
            f->ok = 0; /* the ID's reply ends this node's part */
    }
    fence_done(f); /* the hold of the loop: done now if nothing was sent */
    return 0;
}

/* ---- life cycle ---- */

static void on_tick(uv_timer_t *t)
{
    cache_client *c = t->data;
    pump(c);
    sweep_nodes(c);
}

static void free_slot_lists(cache_client *c)
{
    cluster_seeds_free(&c->seeds);
    free(c->slot_first);
    free(c->slot_last);
    free(c->wait_first);
    free(c->wait_last);
    free(c->hold_first);
    free(c->hold_last);
}

static double gauge_cluster(void *ud)
{
    return ((cache_client *)ud)->cluster;
}

cache_client *cache_new(uv_loop_t *loop, const cache_options *opt)
{
    cache_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = loop;
    c->spare_calls = (freelist)FREELIST_INIT(sizeof(call), SPARE_CALLS);
    c->head.next = c->head.prev = &c->head;
    c->cluster = opt->cluster && *opt->cluster;
    c->wait_replicas = opt->wait_replicas;
    c->wait_timeout_ms = opt->wait_timeout_ms ? opt->wait_timeout_ms : 1000;
    c->command_timeout = opt->command_timeout > 0 ? opt->command_timeout : 5;
    c->timeout_ns = (uint64_t)(c->command_timeout * 1e9);
    c->on_state = opt->on_state;
    c->state_ud = opt->state_ud;
    c->setting = opt->setting;
    int ok;
    if (c->cluster) {
        char why[160];
        ok = cluster_seeds_parse(opt->cluster, &c->seeds, why, sizeof why) == 0;
        if (!ok) log_error("valkey", "bad cluster seed list: %s", why);
        c->slot_first = ok ? calloc(SLOT_COUNT, sizeof *c->slot_first) : NULL;
        c->slot_last = ok ? calloc(SLOT_COUNT, sizeof *c->slot_last) : NULL;
        c->wait_first = ok ? calloc(SLOT_COUNT, sizeof *c->wait_first) : NULL;
        c->wait_last = ok ? calloc(SLOT_COUNT, sizeof *c->wait_last) : NULL;
        c->hold_first = ok ? calloc(SLOT_COUNT, sizeof *c->hold_first) : NULL;
        c->hold_last = ok ? calloc(SLOT_COUNT, sizeof *c->hold_last) : NULL;
        ok = ok && c->slot_first && c->slot_last && c->wait_first && c->wait_last &&
             c->hold_first && c->hold_last;
    } else {
        /* valkey_new checks and logs the URL */
        ok = opt->url && (c->url = strdup(opt->url)) && (c->owner[0] = node_new(c, NULL, c->url));
    }
    if (!ok) {
        free_slot_lists(c);
        free(c->url);
        free(c);
        return NULL;
    }
    c->moved_total = metrics_counter("valkey_cluster_redirects_total{kind=\"moved\"}",
                                     "Commands a cluster node redirected, by kind");
    c->ask_total = metrics_counter("valkey_cluster_redirects_total{kind=\"ask\"}",
                                   "Commands a cluster node redirected, by kind");
    c->retries_total =
        metrics_counter("valkey_cluster_retries_total",
                        "Commands sent again after a lost node, TRYAGAIN or CLUSTERDOWN");
    c->refreshes_total =
        metrics_counter("valkey_cluster_map_refreshes_total", "CLUSTER SLOTS asked");
    c->waits_total =
        metrics_counter("valkey_waits_total", "WAITs for replicas before a cursor moved");
    c->waits_short_total = metrics_counter("valkey_waits_short_total",
                                           "WAITs whose replicas did not all confirm in time");
    c->orders_total = metrics_counter(
        "valkey_orders_total",
        "Writes held until those on another slot before them were answered (cache_order)");
    c->latency = metrics_histogram_get("valkey_command_seconds", "Valkey round-trip time");
    metrics_gauge("valkey_cluster", "1 when the appview runs on a Valkey Cluster", gauge_cluster,
                  c);
    own_gauges(c);
    uv_timer_init(loop, &c->tick);
    uv_timer_init(loop, &c->refresh_timer);
    uv_idle_init(loop, &c->barrier_idle);
    uv_check_init(loop, &c->wait_flush);
    c->tick.data = c->refresh_timer.data = c->barrier_idle.data = c->wait_flush.data = c;
    c->open_handles = 4;
    return c;
}

int cache_register_script(cache_client *c, const char *name, const char *source)
{
    if (c->nscripts == MAX_SCRIPTS) return -1;
    lua_script *s = &c->scripts[c->nscripts];
    s->name = strdup(name);
    s->source = strdup(source);
    int ok = s->name && s->source;
    /* every connection holds the scripts under the same ids */
    for (node *n = c->nodes; ok && n; n = n->next)
        ok = valkey_register_script(n->v, name, source) == c->nscripts;
    if (!ok) {
        free(s->name);
        free(s->source);
        return -1;
    }
    return c->nscripts++;
}

void cache_start(cache_client *c)
{
    uv_timer_start(&c->tick, on_tick, TICK_MS, TICK_MS);
    if (!c->cluster) {
        valkey_start(c->owner[0]->v);
        return;
    }
    for (size_t i = 0; i < c->seeds.n; i++)
        node_at(c, &c->seeds.addrs[i]);
}

int cache_ready(const cache_client *c)
{
    return c->state_up;
}

const char *cache_problem(cache_client *c)
{
    c->problem[0] = '\0';
    if (c->state_up) return c->problem;
    if (!c->cluster) return valkey_problem(c->owner[0]->v);
    /* The first server the map needs (every seed, before there is a map) that says why. */
    for (const node *n = c->nodes; n; n = n->next) {
        const char *why = valkey_problem(n->v);
        if ((n->in_map || !c->map_known) && *why) {
            snprintf(c->problem, sizeof c->problem, "%s:%d: %s", n->addr.host, n->addr.port, why);
            return c->problem;
        }
    }
    if (!c->map_known) snprintf(c->problem, sizeof c->problem, "no slot map yet (CLUSTER SLOTS)");
    return c->problem;
}

size_t cache_pending(const cache_client *c)
{
    return c->ninflight;
}

int cache_error_transient(const char *error)
{
    return valkey_error_transient(error);
}

double cache_latency_p99(const cache_client *c)
{
    return metrics_quantile(c->latency, 0.99);
}

static void release(cache_client *c)
{
    for (int i = 0; i < c->nscripts; i++) {
        free(c->scripts[i].name);
        free(c->scripts[i].source);
    }
    free_slot_lists(c);
    free(c->url);
    free(c->client_name);
    freelist_clear(&c->spare_calls);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    cache_client *c = h->data;
    if (--c->open_handles == 0) release(c);
}

/* At the end, nodes gone: syncs are told they failed, holds just go. */
static void free_barriers(barrier *b)
{
    while (b) {
        barrier *next = b->next;
        if (!b->hold) b->cb(0, b->ud);
        free(b->deps);
        free(b);
        b = next;
    }
}

void cache_free(cache_client *c)
{
    if (!c) return;
    c->freeing = 1;
    /* Each connection fails what it has on the wire (callbacks with NULL). */
    for (node *n = c->nodes; n; n = n->next)
        valkey_free(n->v);
    while (c->nodes) {
        node *n = c->nodes;
        c->nodes = n->next;
        free(n);
    }
    for (unsigned s = 0; c->cluster && s < SLOT_COUNT; s++) {
        while (c->wait_first[s]) {
            call *k = wait_pop(c, s);
            k->ask = NULL; /* its node is gone */
            finish(k, NULL, NULL);
        }
        free_barriers(c->hold_first[s]);
        c->hold_first[s] = NULL;
    }
    free_barriers(c->syncs);
    free_barriers(c->confirming);
    c->syncs = c->confirming = NULL;
    uv_close((uv_handle_t *)&c->tick, on_handle_closed);
    uv_close((uv_handle_t *)&c->refresh_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->barrier_idle, on_handle_closed);
    uv_close((uv_handle_t *)&c->wait_flush, on_handle_closed);
}
