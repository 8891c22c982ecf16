#include "atproto/listener.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int listener_split(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon) return -1;
    const char *h = addr;
    size_t n = (size_t)(colon - addr);
    if (n && addr[0] == '[') {
        if (n < 3 || addr[n - 1] != ']') return -1;
        h++;
        n -= 2;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (isspace(c) || iscntrl(c) || c == '/' || c == '[' || c == ']') return -1;
        /* a bare IPv6 address is ambiguous with the port: it needs its brackets */
        if (c == ':' && h == addr) return -1;
    }
    const char *p = colon + 1;
    size_t digits = strspn(p, "0123456789");
    if (!digits || p[digits] || digits > 5 || atol(p) > 65535) return -1;
    if (n >= hostlen) return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    if (h != addr) { /* brackets hold an IPv6 address, optionally with a %scope */
        struct in6_addr a6;
        char bare[INET6_ADDRSTRLEN];
        size_t blen = strcspn(host, "%");
        if (blen >= sizeof bare) return -1;
        memcpy(bare, host, blen);
        bare[blen] = '\0';
        if (inet_pton(AF_INET6, bare, &a6) != 1) return -1;
    }
    *port = atoi(p);
    return 0;
}

const char *listener_advice(int err)
{
    switch (err) {
    case EADDRINUSE:
        return "another process listens on this port (ss -ltnp shows which): stop it or choose "
               "another port";
    case EADDRNOTAVAIL:
        return "no interface of this machine has that address (ip address lists them): use one "
               "of its addresses, or 0.0.0.0 for every IPv4 address";
    case EACCES:
    case EPERM:
        return "ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a port from 1024 up";
    case EAFNOSUPPORT:
        return "IPv6 is off on this machine: use an IPv4 address";
    default:
        return "";
    }
}

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char host[NI_MAXHOST];
    socklen_t len =
        ss->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (getnameinfo((const struct sockaddr *)ss, len, host, sizeof host, NULL, 0, NI_NUMERICHOST))
        snprintf(host, sizeof host, "?");
    snprintf(out, n, "%s", host);
}

/* A listening socket on one address; -1 with errno set. dual: an IPv6 socket that takes IPv4
 * connections too (the "every address" case), otherwise IPv6 sockets are IPv6 only. */
static int bind_one(const struct sockaddr_storage *ss, int dual)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1, v6only = !dual;
    socklen_t len =
        ss->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    /* SO_REUSEADDR: a restart binds despite connections of the previous process in TIME_WAIT
     * (on Linux it never lets two processes listen on one address). */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (ss->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0) ||
        bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, SOMAXCONN) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* The addresses host names, port filled in, duplicates dropped. 0, or -1 with err written. */
static int resolve(const char *host, int port, struct sockaddr_storage *addrs, size_t *n, int *dual,
                   char *err, size_t errlen)
{
    *n = 0;
    *dual = 0;
    if (!host[0] || !strcmp(host, "*")) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addrs[0];
        memset(&addrs[0], 0, sizeof addrs[0]);
        a6->sin6_family = AF_INET6;
        a6->sin6_addr = in6addr_any;
        a6->sin6_port = htons((uint16_t)port);
        *n = 1;
        *dual = 1;
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc) {
        snprintf(err, errlen,
                 "cannot resolve '%s': %s; use an IP address, or a name this machine resolves "
                 "(getent hosts NAME)",
                 host, rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        set_port(&ss, port);
        int seen = 0;
        for (size_t i = 0; i < *n && !seen; i++)
            seen = !memcmp(&addrs[i], &ss, sizeof ss);
        if (seen) continue;
        if (*n == LISTENER_MAX) {
            snprintf(err, errlen, "'%s' resolves to more than %d addresses; name one of them", host,
                     LISTENER_MAX);
            freeaddrinfo(res);
            return -1;
        }
        addrs[(*n)++] = ss;
    }
    freeaddrinfo(res);
    if (!*n) {
        snprintf(err, errlen, "'%s' has no IPv4 or IPv6 address", host);
        return -1;
    }
    return 0;
}

int listener_open(const char *addr, listener_set *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char host[NI_MAXHOST];
    int port;
    if (listener_split(addr, host, sizeof host, &port) < 0) {
        snprintf(err, errlen, "expected HOST:PORT, [IPv6]:PORT or :PORT with a port 0..65535");
        return -1;
    }
    struct sockaddr_storage addrs[LISTENER_MAX];
    size_t n;
    int dual;
    if (resolve(host, port, addrs, &n, &dual, err, errlen) < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        if (out->port) set_port(&addrs[i], out->port); /* port 0: the one picked first */
        int fd = bind_one(&addrs[i], dual);
        if (fd < 0 && dual && errno == EAFNOSUPPORT) {
            /* no IPv6 on this machine: "every address" is every IPv4 address */
            struct sockaddr_in *a4 = (struct sockaddr_in *)&addrs[i];
            memset(&addrs[i], 0, sizeof addrs[i]);
            a4->sin_family = AF_INET;
            a4->sin_addr.s_addr = htonl(INADDR_ANY);
            a4->sin_port = htons((uint16_t)(out->port ? out->port : port));
            fd = bind_one(&addrs[i], 0);
        }
        if (fd < 0) {
            int e = errno;
            char where[NI_MAXHOST + 16] = "";
            if (n > 1) {
                char text[NI_MAXHOST];
                addr_text(&addrs[i], text, sizeof text);
                snprintf(where, sizeof where, "address %s: ", text);
            }
            const char *advice = listener_advice(e);
            snprintf(err, errlen, "%s%s%s%s", where, strerror(e), *advice ? "; " : "", advice);
            listener_close(out);
            return -1;
        }
        out->fds[out->n++] = fd;
        if (!out->port) {
            struct sockaddr_storage bound;
            socklen_t len = sizeof bound;
            memset(&bound, 0, sizeof bound);
            if (getsockname(fd, (struct sockaddr *)&bound, &len) == 0)
                out->port =
                    ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                                     : ((struct sockaddr_in6 *)&bound)->sin6_port);
        }
    }
    return 0;
}

void listener_describe(const listener_set *s, char *out, size_t n)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->n && used < n; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        char text[NI_MAXHOST];
        memset(&ss, 0, sizeof ss);
        if (getsockname(s->fds[i], (struct sockaddr *)&ss, &len) < 0) continue;
        addr_text(&ss, text, sizeof text);
        int v6 = ss.ss_family == AF_INET6;
        int w = snprintf(out + used, n - used, "%s%s%s%s:%d", used ? ", " : "", v6 ? "[" : "", text,
                         v6 ? "]" : "", s->port);
        if (w < 0) break;
        used += (size_t)w;
    }
}

void listener_close(listener_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        close(s->fds[i]);
    s->n = 0;
}
