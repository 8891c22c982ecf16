/* URLs: the one parser every component uses for the URLs it is configured with or builds
 * (Jetstream, Valkey, HTTP upstreams), and small string helpers. */
#ifndef ATPROTO_URL_H
#define ATPROTO_URL_H

#include <stddef.h>

/* scheme://[user[:password]@]host[:port][/path][?query][#fragment], split (RFC 3986). Strict
 * where a lenient reading could differ from another parser's: no whitespace, control or
 * non-ASCII bytes, no backslash, at most one '@', a port of 1-65535 in digits only, a host of
 * letters, digits and "-._~" (or an IPv6 literal in brackets). Every part is a NUL-terminated
 * string inside one allocation that url_parts_free releases. */
typedef struct {
    char *scheme;    /* lower case */
    char *user;      /* percent-decoded; NULL when there is no userinfo */
    char *password;  /* percent-decoded; NULL when the userinfo has no ':' */
    char *host;      /* as written, an IPv6 literal without its brackets; "" for "unix:///p" */
    char *authority; /* host[:port] exactly as written, for a Host header */
    int port;   /* as written, else the scheme's default (80 for http and ws, 443 for https and wss,
                   6379 for redis), else 0 */
    char *path; /* as written, "" when absent */
    char *query;    /* after '?', as written; NULL when absent */
    char *fragment; /* after '#'; NULL when absent */
    char *mem;
} url_parts;

/* 0 with u filled (url_parts_free it), or -1 with u zeroed and the reason in why. */
int url_parse(const char *s, url_parts *u, char *why, size_t whylen);
void url_parts_free(url_parts *u);

/* Removes every trailing '/' from s in place ("https://h/x//" -> "https://h/x"), so a path can
 * be appended with one '/'. */
void url_trim_slashes(char *s);

/* A malloc'd copy of url with its trailing slashes removed (url_trim_slashes); NULL when out
 * of memory. */
char *url_dup_base(const char *url);

#endif
