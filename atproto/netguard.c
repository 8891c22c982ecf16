#include "atproto/netguard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

struct v4_range {
    uint32_t net;
    int prefix;
    enum netguard_class cls;
};

/* Host byte order; the most specific ranges come first where ranges nest. */
static const struct v4_range v4_ranges[] = {
    {0x00000000u, 8, NETGUARD_UNSPECIFIED}, /* "this network" */
    {0x7f000000u, 8, NETGUARD_LOOPBACK},    {0x0a000000u, 8, NETGUARD_PRIVATE},
    {0xac100000u, 12, NETGUARD_PRIVATE},    {0xc0a80000u, 16, NETGUARD_PRIVATE},
    {0x64400000u, 10, NETGUARD_CGNAT},      {0xa9fe0000u, 16, NETGUARD_LINK_LOCAL},
    {0xe0000000u, 4, NETGUARD_MULTICAST},   {0xffffffffu, 32, NETGUARD_BROADCAST},
    {0xf0000000u, 4, NETGUARD_RESERVED},  /* class E */
    {0xc0000000u, 24, NETGUARD_RESERVED}, /* IETF protocol assignments */
    {0xc0000200u, 24, NETGUARD_RESERVED}, /* TEST-NET-1 */
    {0xc6336400u, 24, NETGUARD_RESERVED}, /* TEST-NET-2 */
    {0xcb007100u, 24, NETGUARD_RESERVED}, /* TEST-NET-3 */
    {0xc6120000u, 15, NETGUARD_RESERVED}, /* benchmarking */
    {0xc0586300u, 24, NETGUARD_RESERVED}, /* deprecated 6to4 relay anycast */
};

enum netguard_class netguard_classify_v4(uint32_t ip4_be)
{
    uint32_t ip = ntohl(ip4_be);
    for (size_t i = 0; i < sizeof v4_ranges / sizeof v4_ranges[0]; i++) {
        const struct v4_range *r = &v4_ranges[i];
        uint32_t mask = r->prefix == 0 ? 0 : 0xffffffffu << (32 - r->prefix);
        if ((ip & mask) == r->net) return r->cls;
    }
    return NETGUARD_PUBLIC;
}

static bool zero_bytes(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

static enum netguard_class embedded_v4(const uint8_t *p)
{
    uint32_t be;
    memcpy(&be, p, 4);
    return netguard_classify_v4(be);
}

enum netguard_class netguard_classify_v6(const uint8_t a[16])
{
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    if (zero_bytes(a, 16)) return NETGUARD_UNSPECIFIED;
    if (zero_bytes(a, 15) && a[15] == 1) return NETGUARD_LOOPBACK;
    if (zero_bytes(a, 10) && a[10] == 0xff && a[11] == 0xff)
        return embedded_v4(a + 12); /* ::ffff:a.b.c.d */
    if (zero_bytes(a, 12)) {
        /* Deprecated IPv4-compatible ::a.b.c.d: never a legitimate destination. */
        enum netguard_class c = embedded_v4(a + 12);
        return c == NETGUARD_PUBLIC ? NETGUARD_RESERVED : c;
    }
    if (memcmp(a, nat64, 12) == 0) return embedded_v4(a + 12);
    if (a[0] == 0x20 && a[1] == 0x02) return embedded_v4(a + 2); /* 6to4 */
    if (a[0] == 0xff) return NETGUARD_MULTICAST;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return NETGUARD_LINK_LOCAL;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) return NETGUARD_PRIVATE; /* deprecated site-local */
    if ((a[0] & 0xfe) == 0xfc) return NETGUARD_PRIVATE;                 /* unique local */
    if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
        return NETGUARD_RESERVED;                                       /* documentation */
    if (a[0] == 0x01 && zero_bytes(a + 1, 7)) return NETGUARD_RESERVED; /* discard-only 100::/64 */
    return NETGUARD_PUBLIC;
}

enum netguard_class netguard_classify_sockaddr(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return netguard_classify_v4(in->sin_addr.s_addr);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        return netguard_classify_v6(in6->sin6_addr.s6_addr);
    }
    return NETGUARD_UNKNOWN_FAMILY;
}

int netguard_classify_text(const char *text, enum netguard_class *out)
{
    char tmp[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(text);
    if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
        text++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, text, n);
    tmp[n] = '\0';
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, tmp, &a4) == 1) {
        *out = netguard_classify_v4(a4.s_addr);
        return 0;
    }
    if (inet_pton(AF_INET6, tmp, &a6) == 1) {
        *out = netguard_classify_v6(a6.s6_addr);
        return 0;
    }
    return -1;
}

const char *netguard_class_name(enum netguard_class c)
{
    switch (c) {
    case NETGUARD_PUBLIC:
        return "public";
    case NETGUARD_UNSPECIFIED:
        return "unspecified";
    case NETGUARD_LOOPBACK:
        return "loopback";
    case NETGUARD_PRIVATE:
        return "private";
    case NETGUARD_CGNAT:
        return "cgnat";
    case NETGUARD_LINK_LOCAL:
        return "link-local";
    case NETGUARD_MULTICAST:
        return "multicast";
    case NETGUARD_BROADCAST:
        return "broadcast";
    case NETGUARD_RESERVED:
        return "reserved";
    case NETGUARD_UNKNOWN_FAMILY:
        break;
    }
    return "unknown-family";
}
