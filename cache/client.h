/* The program's Valkey: one server (a URL) or a Valkey Cluster (seed nodes), behind one
 * interface, on a libuv loop. Callers name keys; where a key lives is this module's business.
 *
 * On a cluster it holds the slot map (CLUSTER SLOTS) and one connection per primary
 * (cache/valkey.h: pipelined, reconnecting), routes each command by its key's slot
 * (cache/slots.h), follows MOVED (the map is refreshed and the command sent again) and ASK
 * (ASKING and the command, once), and when a node goes away sends again, once the map names its
 * successor, every command it had not answered. So every command may run twice: the program
 * sends only idempotent ones (plain writes, and scripts that check before they write).
 *
 * Order: commands on one key run in the order they were issued, whatever the redirections.
 * Commands on keys of different slots may run in any order, unless cache_order says otherwise.
 * A script or a multi-key command must name keys of one slot (a DID's keys share its {did}).
 *
 * Every callback runs exactly once: with the reply, or with NULL when the command could not be
 * answered within the command timeout (a server or node down, a connection lost) or the client
 * is being freed. Scripts registered before cache_start are loaded on every connection. */
#ifndef CACHE_CLIENT_H
#define CACHE_CLIENT_H

#include <stddef.h>
#include <uv.h>

#include "cache/reply.h"

typedef struct cache_client cache_client;

/* r is NULL on failure; it lives until the callback returns. */
typedef void (*cache_reply_cb)(const reply *r, void *ud);
/* up=1 when every slot has a reachable primary with the scripts loaded; 0 when one is lost. */
typedef void (*cache_state_cb)(int up, void *ud);
/* ok=0 when what was asked could not be confirmed (see each call). */
typedef void (*cache_done_cb)(int ok, void *ud);

typedef struct {
    const char *url;     /* one server: redis://[[user]:password@]host:port/db or unix:///path */
    const char *cluster; /* a cluster instead: seed nodes, "host:port,..." (cache/slots.h) */
    /* Replicas a write must reach before cache_sync or cache_order report it (WAIT): 0 none.
     * Fewer are asked of a primary that has fewer connected (ROLE): those are all that a
     * failover could promote. */
    unsigned wait_replicas;
    unsigned wait_timeout_ms; /* how long a WAIT may take; 0 means 1000 */
    double command_timeout;   /* seconds; 0 means 5 */
    cache_state_cb on_state;  /* may be NULL */
    void *state_ud;
    const char *setting; /* where url or cluster came from, for errors */
} cache_options;

/* NULL (logged) on a bad URL or seed list. */
cache_client *cache_new(uv_loop_t *loop, const cache_options *opt);
/* Registers a script; returns its id for cache_eval, or -1. Before cache_start only. */
int cache_register_script(cache_client *c, const char *name, const char *source);
/* Starts connecting (and keeps reconnecting while servers are away). */
void cache_start(cache_client *c);
int cache_ready(const cache_client *c);
/* Why it is not ready, in words ("cannot connect: Connection refused", "connection setup
 * refused: WRONGPASS ..."; on a cluster, which node), "" when it is or no reason is known yet.
 * No secret appears in it. Valid until the next call. */
const char *cache_problem(cache_client *c);
/* Commands issued and not yet answered. */
size_t cache_pending(const cache_client *c);

/* argv[1] is the key the command is routed by (every command of the program names a key
 * first). 0 when queued; -1 when the key's server is not connected or out of memory (cb is then
 * NOT called). argvlen may be NULL for NUL-terminated arguments. */
int cache_command(cache_client *c, cache_reply_cb cb, void *ud, int argc, const char **argv,
                  const size_t *argvlen);
/* EVALSHA of a registered script, routed by its first key; argv holds the nkeys keys, then the
 * arguments. Returns as cache_command. */
int cache_eval(cache_client *c, int script, cache_reply_cb cb, void *ud, int nkeys, int argc,
               const char **argv, const size_t *argvlen);

/* 1 when one script call may touch both keys (one server; on a cluster, one slot). */
int cache_keys_together(const cache_client *c, const char *a, const char *b);
/* Commands on then's slot issued from now on run only after every command issued so far on
 * first's slot was answered and (wait_replicas) reached the replicas of first's node: a write
 * to `first` that a write to `then` must not overtake, even across a crash or a failover.
 * Nothing to do when the two keys are ordered anyway (cache_keys_together). When first's
 * commands fail or its replicas cannot confirm, the held commands fail (callbacks with NULL).
 * 0, or -1 out of memory (nothing held: the caller must not send what depended on it). */
int cache_order(cache_client *c, const char *first, const char *then);
/* cb(1) once every command issued so far was answered and, with wait_replicas, every node that
 * answered one since its last WAIT confirmed its replicas hold it; cb(0) when a connection was
 * lost meanwhile or a WAIT fell short. 0 when started, -1 out of memory (cb not called). */
int cache_sync(cache_client *c, cache_done_cb cb, void *ud);

/* Walks every key matching pattern on every primary (SCAN), a page at a time: cb(keys, 0) with
 * an array of key names (possibly empty) per page, then cb(NULL, 1) at the end, or cb(NULL, -1)
 * when a node failed midway. A nonzero return from cb stops the walk (no further call). 0 when
 * started; -1 when not connected (cb not called). */
typedef int (*cache_scan_cb)(const reply *keys, int end, void *ud);
int cache_scan(cache_client *c, const char *pattern, cache_scan_cb cb, void *ud);

/* Names every connection of this client `name` (CLIENT SETNAME, also on connections made
 * later) and kills every other connection of that name on every primary: commands a crashed
 * predecessor of that name left in a server's input buffer never run after this. cb(ok,
 * killed) once done; ok=0 when a node did not answer. 0 when started, -1 when not connected. */
typedef void (*cache_fence_cb)(int ok, unsigned killed, void *ud);
int cache_fence(cache_client *c, const char *name, cache_fence_cb cb, void *ud);

/* 1 when an error reply says the server cannot take the command now but may later (out of
 * memory, a read-only replica, ...), so the same write is worth sending again. */
int cache_error_transient(const char *error);
/* Round-trip latency of recent commands, for /metrics and /xrpc/_health. */
double cache_latency_p99(const cache_client *c);

/* Fails pending commands (callbacks with NULL), closes every connection and frees. The loop
 * must run afterwards so the handles close. */
void cache_free(cache_client *c);

#endif
