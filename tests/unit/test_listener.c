/* atproto/listener: listen address syntax, exact binding, and errors that say what to do. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "atproto/listener.h"
#include "tests/unit/check.h"

static void test_split(void)
{
    char host[64];
    int port = -1;
    CHECK(listener_split("127.0.0.1:8080", host, sizeof host, &port) == 0);
    CHECK(!strcmp(host, "127.0.0.1") && port == 8080);
    CHECK(listener_split("[::1]:0", host, sizeof host, &port) == 0);
    CHECK(!strcmp(host, "::1") && port == 0);
    CHECK(listener_split("[fe80::1%lo]:80", host, sizeof host, &port) == 0);
    CHECK(!strcmp(host, "fe80::1%lo"));
    CHECK(listener_split(":9", host, sizeof host, &port) == 0 && !host[0] && port == 9);
    CHECK(listener_split("*:9", host, sizeof host, &port) == 0 && !strcmp(host, "*"));
    CHECK(listener_split("localhost:65535", host, sizeof host, &port) == 0 && port == 65535);
    const char *bad[] = {"8080",     "host:",        "host:65536",     "host:12a", "::1:80",
                         "[::1:80",  "[]:80",        "a b:80",         "h/x:80",   "host:-1",
                         "[foo]:80", "[1.2.3.4]:80", "host:000000080", "h\tx:1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int ok = listener_split(bad[i], host, sizeof host, &port) < 0;
        if (!ok) fprintf(stderr, "    accepted '%s'\n", bad[i]);
        CHECK(ok);
    }
    char tiny[4];
    CHECK(listener_split("example.com:1", tiny, sizeof tiny, &port) < 0);
}

/* 0 when a TCP connection to addr:port (family af) is accepted by the kernel. */
static int try_connect(int af, const char *addr, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (af == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, addr, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, addr, &a->sin6_addr);
        len = sizeof *a;
    }
    int fd = socket(af, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int rc = connect(fd, (struct sockaddr *)&ss, len);
    close(fd);
    return rc;
}

static void test_binds_exactly_the_address(void)
{
    listener_set s;
    char err[512], text[256];
    CHECK(listener_open("127.0.0.1:0", &s, err, sizeof err) == 0);
    CHECK(s.n == 1 && s.port > 0);
    listener_describe(&s, text, sizeof text);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", s.port);
    CHECK(!strcmp(text, want));
    CHECK(try_connect(AF_INET, "127.0.0.1", s.port) == 0);
    /* another loopback address is another address: nothing listens there */
    CHECK(try_connect(AF_INET, "127.0.0.2", s.port) < 0);

    /* the same address and port again: busy, with the cause and the advice */
    listener_set again;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    CHECK(listener_open(addr, &again, err, sizeof err) < 0 && again.n == 0);
    CHECK(strstr(err, strerror(EADDRINUSE)) && strstr(err, "choose another port"));
    /* every address includes that one: busy too */
    snprintf(addr, sizeof addr, ":%d", s.port);
    CHECK(listener_open(addr, &again, err, sizeof err) < 0);
    CHECK(strstr(err, strerror(EADDRINUSE)) != NULL);
    /* a different address on the same port is free */
    snprintf(addr, sizeof addr, "127.0.0.2:%d", s.port);
    CHECK(listener_open(addr, &again, err, sizeof err) == 0 && again.n == 1);
    listener_close(&again);
    listener_close(&s);
    CHECK(s.n == 0);
}

static void test_ipv6_is_ipv6_only(void)
{
    listener_set s;
    char err[512];
    if (listener_open("[::1]:0", &s, err, sizeof err) < 0) {
        /* a machine without IPv6 says so */
        CHECK(strstr(err, "IPv6") || strstr(err, strerror(EADDRNOTAVAIL)));
        return;
    }
    CHECK(s.n == 1 && try_connect(AF_INET6, "::1", s.port) == 0);
    CHECK(try_connect(AF_INET, "127.0.0.1", s.port) < 0);
    listener_close(&s);
}

static void test_errors_name_the_cause(void)
{
    listener_set s;
    char err[512];
    CHECK(listener_open("203.0.113.7:0", &s, err, sizeof err) < 0);
    CHECK(strstr(err, strerror(EADDRNOTAVAIL)) && strstr(err, "ip address"));
    CHECK(listener_open("not an address", &s, err, sizeof err) < 0);
    CHECK(strstr(err, "expected HOST:PORT") != NULL);
    CHECK(strstr(listener_advice(EACCES), "1024") != NULL);
    CHECK(!strcmp(listener_advice(EIO), ""));
}

int main(void)
{
    RUN(test_split);
    RUN(test_binds_exactly_the_address);
    RUN(test_ipv6_is_ipv6_only);
    RUN(test_errors_name_the_cause);
    CHECK_EXIT();
}
