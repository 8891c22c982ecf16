/* SSRF guard: classifies IP addresses so outbound requests to hosts named by untrusted
 * documents (DID documents, PDS and hold endpoints) never reach loopback, private, link-local,
 * multicast or otherwise special networks unless the operator allows private networks.
 * The HTTP client applies it to every address it is about to connect to, after DNS
 * resolution and on every redirect hop. */
#ifndef ATPROTO_NETGUARD_H
#define ATPROTO_NETGUARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

enum netguard_class {
    NETGUARD_PUBLIC,
    NETGUARD_UNSPECIFIED, /* 0.0.0.0/8, :: */
    NETGUARD_LOOPBACK,    /* 127/8, ::1 */
    NETGUARD_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10 */
    NETGUARD_CGNAT,       /* 100.64/10 */
    NETGUARD_LINK_LOCAL,  /* 169.254/16, fe80::/10 */
    NETGUARD_MULTICAST,   /* 224/4, ff00::/8 */
    NETGUARD_BROADCAST,   /* 255.255.255.255 */
    NETGUARD_RESERVED,    /* documentation, benchmarking, 240/4, IETF assignments, discard */
    NETGUARD_UNKNOWN_FAMILY,
};

/* ip4 in network byte order as in struct in_addr. */
enum netguard_class netguard_classify_v4(uint32_t ip4_be);
/* IPv4-mapped, IPv4-compatible, NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are
 * classified by the IPv4 address they embed. */
enum netguard_class netguard_classify_v6(const uint8_t ip6[16]);
enum netguard_class netguard_classify_sockaddr(const struct sockaddr *sa);
/* Parses an IP literal (IPv4 dotted quad or IPv6, brackets allowed). Returns 0 and sets *out,
 * or -1 when text is not an IP literal. */
int netguard_classify_text(const char *text, enum netguard_class *out);

const char *netguard_class_name(enum netguard_class c);

/* true when a connection to an address of this class may be made. */
static inline bool netguard_allowed(enum netguard_class c, bool allow_private)
{
    return c == NETGUARD_PUBLIC || (allow_private && c != NETGUARD_UNKNOWN_FAMILY);
}

#endif
