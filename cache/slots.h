/* Valkey Cluster's addressing, as pure functions (data in, decisions out; unit-tested without a
 * socket): which of the 16384 slots a key lives on, the slot map a node describes
 * (CLUSTER SLOTS), what an error reply asks a client to do (MOVED, ASK, TRYAGAIN,
 * CLUSTERDOWN), the seed list an operator configures, and when a WAIT went far enough.
 * The cluster specification: a key's slot is CRC16 (XMODEM) of its hash tag modulo 16384, the
 * hash tag being what lies between the first '{' and the first '}' after it when that is not
 * empty, else the whole key. */
#ifndef CACHE_SLOTS_H
#define CACHE_SLOTS_H

#include <stddef.h>
#include <stdint.h>

#include "cache/reply.h"

#define SLOT_COUNT 16384
#define SLOT_NONE 0xffff
/* A host name or address as nodes announce it (an IPv6 literal without brackets). */
#define SLOT_HOST_MAX 256

uint16_t slot_crc16(const char *data, size_t len);
unsigned slot_of_key(const char *key, size_t len);

typedef struct {
    char host[SLOT_HOST_MAX];
    int port;
} node_addr;

/* Which primary serves each slot: owner[slot] indexes primaries, SLOT_NONE when no node
 * serves it. */
typedef struct {
    node_addr *primaries;
    size_t nprimaries;
    uint16_t owner[SLOT_COUNT];
} slot_map;

/* Reads a CLUSTER SLOTS reply (ranges of [first, last, primary, replicas...], each node
 * [host, port, id, ...]). A node announcing no host (nil, "" or "?") is at asked_host, the
 * node that answered. 0 with *out filled (slot_map_free it), or -1 with the reason in why. */
int slot_map_parse(const reply *r, const char *asked_host, slot_map *out, char *why, size_t whylen);
/* 1 when every slot has a primary. */
int slot_map_complete(const slot_map *m);
void slot_map_free(slot_map *m);

typedef enum {
    REDIRECT_NONE,        /* an answer (or an error of the command's own) */
    REDIRECT_MOVED,       /* the slot lives on `to` now: update the map, send there */
    REDIRECT_ASK,         /* this once, ASKING then the command on `to` (a slot migrating) */
    REDIRECT_TRYAGAIN,    /* the keys are split by a migration: send again after a pause */
    REDIRECT_CLUSTERDOWN, /* slots without a primary (a failover): again after a pause */
} redirect_kind;

typedef struct {
    redirect_kind kind;
    unsigned slot;
    node_addr to;
} redirect;

/* What an error reply asks for; "MOVED 3999 127.0.0.1:6381" (an empty host is the node that
 * answered: asked_host). A malformed MOVED or ASK is REDIRECT_NONE: the error goes to the
 * caller. */
redirect_kind redirect_parse(const char *error, const char *asked_host, redirect *out);

/* The seed nodes of APPVIEW_VALKEY_CLUSTER: "host:port,..." where each item may also be written
 * redis://[[user]:password@]host:port (credentials as in APPVIEW_VALKEY_URL; the first given
 * are used for every node). 0 with *out filled (cluster_seeds_free it), -1 with why. */
typedef struct {
    node_addr *addrs;
    size_t n;
    char *user, *password; /* NULL when none */
} cluster_seeds;
int cluster_seeds_parse(const char *list, cluster_seeds *out, char *why, size_t whylen);
void cluster_seeds_free(cluster_seeds *s);

/* Whether a WAIT that reached `acked` replicas makes a write safe from a failover, when
 * `wanted` were asked for and the primary had `connected` replicas (ROLE): every replica that
 * could be promoted must hold it, up to wanted. */
int slot_wait_enough(long long acked, unsigned wanted, long long connected);

#endif
