/* The SSRF address classifier: every special range, its edges, and the IPv6 forms that
 * embed an IPv4 address. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "atproto/netguard.h"
#include "check.h"

static enum netguard_class cls(const char *text)
{
    enum netguard_class c;
    if (netguard_classify_text(text, &c) != 0) return NETGUARD_UNKNOWN_FAMILY;
    return c;
}

static void test_ipv4_public(void)
{
    CHECK(cls("8.8.8.8") == NETGUARD_PUBLIC);
    CHECK(cls("1.1.1.1") == NETGUARD_PUBLIC);
    CHECK(cls("9.255.255.255") == NETGUARD_PUBLIC);
    CHECK(cls("11.0.0.0") == NETGUARD_PUBLIC);
    CHECK(cls("172.15.255.255") == NETGUARD_PUBLIC);
    CHECK(cls("172.32.0.0") == NETGUARD_PUBLIC);
    CHECK(cls("192.167.255.255") == NETGUARD_PUBLIC);
    CHECK(cls("192.169.0.0") == NETGUARD_PUBLIC);
    CHECK(cls("100.63.255.255") == NETGUARD_PUBLIC);
    CHECK(cls("100.128.0.0") == NETGUARD_PUBLIC);
    CHECK(cls("169.253.255.255") == NETGUARD_PUBLIC);
    CHECK(cls("169.255.0.0") == NETGUARD_PUBLIC);
    CHECK(cls("223.255.255.255") == NETGUARD_PUBLIC);
    CHECK(cls("126.255.255.255") == NETGUARD_PUBLIC);
    CHECK(cls("128.0.0.0") == NETGUARD_PUBLIC);
    CHECK(cls("1.0.0.0") == NETGUARD_PUBLIC);
}

static void test_ipv4_special(void)
{
    CHECK(cls("0.0.0.0") == NETGUARD_UNSPECIFIED);
    CHECK(cls("0.255.255.255") == NETGUARD_UNSPECIFIED);
    CHECK(cls("127.0.0.1") == NETGUARD_LOOPBACK);
    CHECK(cls("127.255.255.254") == NETGUARD_LOOPBACK);
    CHECK(cls("10.0.0.0") == NETGUARD_PRIVATE);
    CHECK(cls("10.255.255.255") == NETGUARD_PRIVATE);
    CHECK(cls("172.16.0.0") == NETGUARD_PRIVATE);
    CHECK(cls("172.31.255.255") == NETGUARD_PRIVATE);
    CHECK(cls("192.168.0.1") == NETGUARD_PRIVATE);
    CHECK(cls("192.168.255.255") == NETGUARD_PRIVATE);
    CHECK(cls("100.64.0.0") == NETGUARD_CGNAT);
    CHECK(cls("100.127.255.255") == NETGUARD_CGNAT);
    CHECK(cls("169.254.169.254") == NETGUARD_LINK_LOCAL);
    CHECK(cls("169.254.0.0") == NETGUARD_LINK_LOCAL);
    CHECK(cls("224.0.0.1") == NETGUARD_MULTICAST);
    CHECK(cls("239.255.255.255") == NETGUARD_MULTICAST);
    CHECK(cls("255.255.255.255") == NETGUARD_BROADCAST);
    CHECK(cls("240.0.0.1") == NETGUARD_RESERVED);
    CHECK(cls("255.255.255.254") == NETGUARD_RESERVED);
    CHECK(cls("192.0.2.1") == NETGUARD_RESERVED);
    CHECK(cls("198.51.100.7") == NETGUARD_RESERVED);
    CHECK(cls("203.0.113.9") == NETGUARD_RESERVED);
    CHECK(cls("198.18.0.1") == NETGUARD_RESERVED);
    CHECK(cls("198.19.255.255") == NETGUARD_RESERVED);
    CHECK(cls("198.20.0.0") == NETGUARD_PUBLIC);
    CHECK(cls("192.0.0.8") == NETGUARD_RESERVED);
}

static void test_ipv6(void)
{
    CHECK(cls("::") == NETGUARD_UNSPECIFIED);
    CHECK(cls("::1") == NETGUARD_LOOPBACK);
    CHECK(cls("[::1]") == NETGUARD_LOOPBACK);
    CHECK(!netguard_allowed(cls("::2"), false));
    CHECK(cls("fe80::1") == NETGUARD_LINK_LOCAL);
    CHECK(cls("febf:ffff::1") == NETGUARD_LINK_LOCAL);
    CHECK(cls("fec0::1") == NETGUARD_PRIVATE);
    CHECK(cls("fc00::1") == NETGUARD_PRIVATE);
    CHECK(cls("fdff:ffff::1") == NETGUARD_PRIVATE);
    CHECK(cls("fe00::1") == NETGUARD_PUBLIC);
    CHECK(cls("ff02::1") == NETGUARD_MULTICAST);
    CHECK(cls("ff05::2") == NETGUARD_MULTICAST);
    CHECK(cls("2001:db8::1") == NETGUARD_RESERVED);
    CHECK(cls("100::1") == NETGUARD_RESERVED);
    CHECK(cls("2606:4700:4700::1111") == NETGUARD_PUBLIC);
    CHECK(cls("2a01:4f8::1") == NETGUARD_PUBLIC);
    CHECK(cls("2001:4860:4860::8888") == NETGUARD_PUBLIC);
}

static void test_ipv6_embedding_ipv4(void)
{
    CHECK(cls("::ffff:127.0.0.1") == NETGUARD_LOOPBACK);
    CHECK(cls("::ffff:7f00:1") == NETGUARD_LOOPBACK);
    CHECK(cls("::ffff:10.1.2.3") == NETGUARD_PRIVATE);
    CHECK(cls("::ffff:169.254.169.254") == NETGUARD_LINK_LOCAL);
    CHECK(cls("::ffff:0.0.0.0") == NETGUARD_UNSPECIFIED);
    CHECK(cls("::ffff:8.8.8.8") == NETGUARD_PUBLIC);
    CHECK(cls("::127.0.0.1") == NETGUARD_LOOPBACK);
    CHECK(cls("::8.8.8.8") == NETGUARD_RESERVED);
    CHECK(cls("64:ff9b::a9fe:a9fe") == NETGUARD_LINK_LOCAL);
    CHECK(cls("64:ff9b::808:808") == NETGUARD_PUBLIC);
    CHECK(cls("2002:7f00:1::") == NETGUARD_LOOPBACK);
    CHECK(cls("2002:c0a8:101::1") == NETGUARD_PRIVATE);
    CHECK(cls("2002:808:808::1") == NETGUARD_PUBLIC);
}

static void test_not_literals(void)
{
    enum netguard_class c = NETGUARD_PUBLIC;
    CHECK(netguard_classify_text("example.com", &c) == -1);
    CHECK(netguard_classify_text("", &c) == -1);
    CHECK(netguard_classify_text("[]", &c) == -1);
    CHECK(netguard_classify_text("127.1", &c) == -1); /* shorthand: left to DNS + connect check */
    CHECK(netguard_classify_text("1.2.3.4.5", &c) == -1);
    CHECK(netguard_classify_text("::1%lo", &c) == -1);
    CHECK(netguard_classify_text("[::1", &c) == -1);
    CHECK(netguard_classify_text("0000000000000000000000000000000000000000000000001", &c) == -1);
}

static void test_sockaddr(void)
{
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(0x7f000001u);
    CHECK(netguard_classify_sockaddr((struct sockaddr *)&in) == NETGUARD_LOOPBACK);
    in.sin_addr.s_addr = htonl(0x08080808u);
    CHECK(netguard_classify_sockaddr((struct sockaddr *)&in) == NETGUARD_PUBLIC);

    struct sockaddr_in6 in6;
    memset(&in6, 0, sizeof in6);
    in6.sin6_family = AF_INET6;
    in6.sin6_addr = in6addr_loopback;
    CHECK(netguard_classify_sockaddr((struct sockaddr *)&in6) == NETGUARD_LOOPBACK);

    struct sockaddr un;
    memset(&un, 0, sizeof un);
    un.sa_family = AF_UNIX;
    CHECK(netguard_classify_sockaddr(&un) == NETGUARD_UNKNOWN_FAMILY);
}

static void test_policy(void)
{
    CHECK(netguard_allowed(NETGUARD_PUBLIC, false));
    CHECK(!netguard_allowed(NETGUARD_LOOPBACK, false));
    CHECK(!netguard_allowed(NETGUARD_LINK_LOCAL, false));
    CHECK(!netguard_allowed(NETGUARD_RESERVED, false));
    CHECK(netguard_allowed(NETGUARD_LOOPBACK, true));
    CHECK(netguard_allowed(NETGUARD_PRIVATE, true));
    CHECK(!netguard_allowed(NETGUARD_UNKNOWN_FAMILY, true));
    CHECK(strcmp(netguard_class_name(NETGUARD_LINK_LOCAL), "link-local") == 0);
    CHECK(strcmp(netguard_class_name(NETGUARD_CGNAT), "cgnat") == 0);
}

int main(void)
{
    RUN(test_ipv4_public);
    RUN(test_ipv4_special);
    RUN(test_ipv6);
    RUN(test_ipv6_embedding_ipv4);
    RUN(test_not_literals);
    RUN(test_sockaddr);
    RUN(test_policy);
    CHECK_EXIT();
}
