#include "cache/slots.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atproto/url.h"

/* ---- keys ---- */

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection; the cluster
 * specification's check value is crc16("123456789") = 0x31c3. */
uint16_t slot_crc16(const char *data, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)data[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned slot_of_key(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        const char *start = open + 1;
        const char *close = memchr(start, '}', len - (size_t)(start - key));
        if (close && close > start) {
            key = start;
            len = (size_t)(close - start);
        }
    }
    return slot_crc16(key, len) & (SLOT_COUNT - 1);
}

/* ---- the slot map ---- */

static int fail(char *why, size_t whylen, const char *what)
{
    snprintf(why, whylen, "%s", what);
    return -1;
}

/* One node of a range, [host, port, id, ...], into *out. */
static int parse_node(const reply *n, const char *asked_host, node_addr *out)
{
    if (n->type != REPLY_ARRAY || n->elements < 2) return -1;
    const reply *host = n->element[0], *port = n->element[1];
    if (port->type != REPLY_INTEGER || port->integer < 1 || port->integer > 65535) return -1;
    const char *h = asked_host;
    if (host->type == REPLY_STRING && host->len && strcmp(host->str, "?"))
        h = host->str;
    else if (host->type != REPLY_NIL && host->type != REPLY_STRING)
        return -1;
    if (strlen(h) >= sizeof out->host) return -1;
    snprintf(out->host, sizeof out->host, "%s", h);
    out->port = (int)port->integer;
    return 0;
}

static int same_addr(const node_addr *a, const node_addr *b)
{
    return a->port == b->port && !strcmp(a->host, b->host);
}

/* The index of a primary in m, added when new; -1 out of memory. */
static int primary_index(slot_map *m, const node_addr *a)
{
    for (size_t i = 0; i < m->nprimaries; i++)
        if (same_addr(&m->primaries[i], a)) return (int)i;
    node_addr *grown = realloc(m->primaries, (m->nprimaries + 1) * sizeof *grown);
    if (!grown) return -1;
    m->primaries = grown;
    m->primaries[m->nprimaries] = *a;
    return (int)m->nprimaries++;
}

int slot_map_parse(const reply *r, const char *asked_host, slot_map *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    memset(out->owner, 0xff, sizeof out->owner);
    if (!r || r->type != REPLY_ARRAY) return fail(why, whylen, "not an array");
    for (size_t i = 0; i < r->elements; i++) {
        const reply *range = r->element[i];
        node_addr primary;
        if (range->type != REPLY_ARRAY || range->elements < 3 ||
            range->element[0]->type != REPLY_INTEGER || range->element[1]->type != REPLY_INTEGER ||
            parse_node(range->element[2], asked_host, &primary) < 0) {
            slot_map_free(out);
            return fail(why, whylen, "a malformed slot range");
        }
        long long first = range->element[0]->integer, last = range->element[1]->integer;
        if (first < 0 || last < first || last >= SLOT_COUNT) {
            slot_map_free(out);
            return fail(why, whylen, "a slot range out of bounds");
        }
        int ix = primary_index(out, &primary);
        if (ix < 0) {
            slot_map_free(out);
            return fail(why, whylen, "out of memory");
        }
        for (long long s = first; s <= last; s++)
            out->owner[s] = (uint16_t)ix;
    }
    return 0;
}

int slot_map_complete(const slot_map *m)
{
    for (unsigned s = 0; s < SLOT_COUNT; s++)
        if (m->owner[s] == SLOT_NONE) return 0;
    return 1;
}

void slot_map_free(slot_map *m)
{
    free(m->primaries);
    m->primaries = NULL;
    m->nprimaries = 0;
}

/* ---- redirections ---- */

/* "host:port" (the port after the last ':', so an IPv6 literal may stand before it; an empty
 * host is asked_host). */
static int parse_addr(const char *s, const char *asked_host, node_addr *out)
{
    const char *colon = strrchr(s, ':');
    if (!colon || !colon[1]) return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return -1;
    size_t hlen = (size_t)(colon - s);
    const char *host = hlen ? s : asked_host;
    if (!hlen) hlen = strlen(asked_host);
    if (hlen >= sizeof out->host) return -1;
    memcpy(out->host, host, hlen);
    out->host[hlen] = 0;
    out->port = (int)port;
    return 0;
}

redirect_kind redirect_parse(const char *error, const char *asked_host, redirect *out)
{
    memset(out, 0, sizeof *out);
    if (!strncmp(error, "TRYAGAIN", 8)) return out->kind = REDIRECT_TRYAGAIN;
    if (!strncmp(error, "CLUSTERDOWN", 11)) return out->kind = REDIRECT_CLUSTERDOWN;
    redirect_kind kind = !strncmp(error, "MOVED ", 6) ? REDIRECT_MOVED
                         : !strncmp(error, "ASK ", 4) ? REDIRECT_ASK
                                                      : REDIRECT_NONE;
    if (kind == REDIRECT_NONE) return REDIRECT_NONE;
    const char *p = strchr(error, ' ') + 1;
    char *end;
    long slot = strtol(p, &end, 10);
    if (end == p || *end != ' ' || slot < 0 || slot >= SLOT_COUNT ||
        parse_addr(end + 1, asked_host, &out->to) < 0) {
        memset(out, 0, sizeof *out);
        return REDIRECT_NONE;
    }
    out->slot = (unsigned)slot;
    return out->kind = kind;
}

/* ---- seeds ---- */

void cluster_seeds_free(cluster_seeds *s)
{
    free(s->addrs);
    free(s->user);
    free(s->password);
    memset(s, 0, sizeof *s);
}

/* One item: host:port, or redis://[[user]:password@]host:port. */
static int parse_seed(cluster_seeds *s, const char *item, size_t n, char *why, size_t whylen)
{
    char text[600];
    int written = memmem(item, n, "://", 3)
                      ? snprintf(text, sizeof text, "%.*s", (int)n, item)
                      : snprintf(text, sizeof text, "redis://%.*s", (int)n, item);
    if (written < 0 || (size_t)written >= sizeof text) return fail(why, whylen, "a seed too long");
    url_parts u;
    char uwhy[96];
    if (url_parse(text, &u, uwhy, sizeof uwhy) < 0) {
        snprintf(why, whylen, "seed '%.*s': %s", (int)n, item, uwhy);
        return -1;
    }
    int rc = -1;
    if (strcmp(u.scheme, "redis") || !*u.host ||
        (*u.path && strcmp(u.path, "/") && strcmp(u.path, "/0")) || u.query || u.fragment) {
        snprintf(why, whylen,
                 "seed '%.*s': want host:port or redis://[:password@]host:port (a cluster has db 0 "
                 "only)",
                 (int)n, item);
    } else if (strlen(u.host) >= SLOT_HOST_MAX) {
        snprintf(why, whylen, "seed '%.*s': host too long", (int)n, item);
    } else {
        node_addr *grown = realloc(s->addrs, (s->n + 1) * sizeof *grown);
        if (grown) {
            s->addrs = grown;
            snprintf(grown[s->n].host, SLOT_HOST_MAX, "%s", u.host);
            grown[s->n++].port = u.port;
            rc = 0;
            const char *user = u.user && *u.user ? u.user : NULL, *password = u.password;
            if (user && !password) { /* "redis://secret@host": a password alone */
                password = user;
                user = NULL;
            }
            if (password && !s->password) {
                s->password = strdup(password);
                s->user = user ? strdup(user) : NULL;
                if (!s->password || (user && !s->user)) rc = fail(why, whylen, "out of memory");
            }
        } else {
            fail(why, whylen, "out of memory");
        }
    }
    url_parts_free(&u);
    return rc;
}

int cluster_seeds_parse(const char *list, cluster_seeds *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n && parse_seed(out, p, n, why, whylen) < 0) {
            cluster_seeds_free(out);
            return -1;
        }
        p += n + (p[n] == ',');
    }
    if (!out->n) {
        cluster_seeds_free(out);
        return fail(why, whylen, "no seed node (want host:port,host:port,...)");
    }
    return 0;
}

/* ---- replication ---- */

int slot_wait_enough(long long acked, unsigned wanted, long long connected)
{
    long long need = connected < (long long)wanted ? connected : (long long)wanted;
    return acked >= need;
}
