/* Listening TCP sockets bound exactly where the operator said, or not at all.
 *
 * A listen address is "HOST:PORT", "[IPv6]:PORT" or ":PORT", port 0..65535 (0 picks a free
 * port, the same one on every address). What HOST binds:
 *   - an IPv4 address: that address only; 0.0.0.0 every IPv4 address;
 *   - an IPv6 address: that address only (IPV6_V6ONLY); [::] every IPv6 address;
 *   - empty or "*": every address of both families;
 *   - a host name: every address it resolves to (/etc/hosts, then DNS), e.g. localhost is
 *     127.0.0.1 and ::1.
 * Either every one of those addresses is bound and listening, or none is and the error says
 * which address failed, why (the errno text) and what an operator can do about it. Nothing
 * here touches an event loop: the caller watches the sockets. */
#ifndef ATPROTO_LISTENER_H
#define ATPROTO_LISTENER_H

#include <stddef.h>

#define LISTENER_MAX 8

typedef struct {
    int fds[LISTENER_MAX]; /* non-blocking, close-on-exec, listening */
    size_t n;
    int port; /* the port bound (the one picked when 0 was asked) */
} listener_set;

/* Splits a listen address into host (brackets removed) and port. 0, or -1 when it is not one
 * of the forms above or host does not fit in hostlen. */
int listener_split(const char *addr, char *host, size_t hostlen, int *port);

/* Binds and listens on every address addr names. 0 with out filled; -1 with nothing left open
 * and why in err, for the caller to put after the address it tried: "CAUSE; WHAT TO DO", with
 * "address A: " in front when addr named several addresses and A failed. */
int listener_open(const char *addr, listener_set *out, char *err, size_t errlen);

/* The bound addresses as text, for logs: "127.0.0.1:8080, [::1]:8080". */
void listener_describe(const listener_set *s, char *out, size_t n);

/* Closes every socket of s. */
void listener_close(listener_set *s);

/* What an operator does about errno err from bind or listen ("" when there is no advice). */
const char *listener_advice(int err);

#endif
