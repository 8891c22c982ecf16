#include "atproto/url.h"

#include "atproto/http_parse.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(url_parts *u, char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(url_parts *u, char *why, size_t whylen, const char *fmt, ...)
{
    url_parts_free(u);
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Copies [s, s+n) to *out, percent-decoding it when decode is set; -1 on a bad escape. */
static int put(char **out, const char *s, size_t n, int decode)
{
    char *o = *out;
    memcpy(o, s, n);
    long len = decode ? http_percent_decode(o, n, false) : (long)n;
    if (len < 0) return -1;
    o[len] = '\0';
    *out = o + len + 1;
    return 0;
}

/* 80 for http and ws, 443 for https and wss, 6379 for redis; 0 for any other scheme. */
static int url_default_port(const char *scheme)
{
    static const struct {
        const char *scheme;
        int port;
    } known[] = {{"http", 80}, {"ws", 80}, {"https", 443}, {"wss", 443}, {"redis", 6379}};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(scheme, known[i].scheme)) return known[i].port;
    return 0;
}

int url_parse(const char *s, url_parts *u, char *why, size_t whylen)
{
    memset(u, 0, sizeof *u);
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '\\')
            return fail(u, why, whylen, "a space, control, non-ASCII byte or backslash at %zu", i);
    }
    const char *p = s;
    while (is_alpha(*p) || (p > s && (is_digit(*p) || *p == '+' || *p == '-' || *p == '.')))
        p++;
    if (p == s || strncmp(p, "://", 3)) return fail(u, why, whylen, "no scheme:// at the start");
    size_t slen = (size_t)(p - s);
    const char *auth = p + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    /* The last '@' ends the user information, as browsers read it: a password may hold an '@'
     * that its writer did not percent-encode. */
    const char *at = NULL;
    for (const char *q = auth; q < auth + alen; q++)
        if (*q == '@') at = q;
    const char *host = at ? at + 1 : auth, *hend, *after;
    size_t hostport = (size_t)(auth + alen - host);
    if (*host == '[') {
        hend = memchr(host, ']', hostport);
        if (!hend) return fail(u, why, whylen, "an IPv6 literal without its ']'");
        for (const char *q = host + 1; q < hend; q++)
            if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
                return fail(u, why, whylen, "a bad character in the IPv6 literal");
        if (hend == host + 1) return fail(u, why, whylen, "an empty IPv6 literal");
        after = hend + 1;
        host++;
    } else {
        hend = memchr(host, ':', hostport);
        if (!hend) hend = host + hostport;
        for (const char *q = host; q < hend; q++)
            if (!is_alpha(*q) && !is_digit(*q) && !strchr("-._~", *q))
                return fail(u, why, whylen, "a bad character '%c' in the host", *q);
        after = hend;
    }
    int port = 0;
    if (after < auth + alen) {
        static const char bad_port[] = "the port must be a number 1..65535";
        if (*after != ':' || after + 1 == auth + alen) return fail(u, why, whylen, "%s", bad_port);
        for (const char *q = after + 1; q < auth + alen; q++) {
            if (!is_digit(*q) || port > 65535) return fail(u, why, whylen, "%s", bad_port);
            port = port * 10 + (*q - '0');
        }
        if (port < 1 || port > 65535) return fail(u, why, whylen, "%s", bad_port);
    }
    const char *query = NULL, *frag = strchr(rest, '#');
    size_t plen = strcspn(rest, "?#");
    if (rest[plen] == '?') query = rest + plen + 1;
    if (frag && strchr(frag + 1, '#')) return fail(u, why, whylen, "more than one '#'");

    /* every part is at most as long as the text it comes from */
    u->mem = malloc(2 * len + 16);
    if (!u->mem) return fail(u, why, whylen, "out of memory");
    char *o = u->mem;
    u->scheme = o;
    for (size_t i = 0; i < slen; i++)
        *o++ = (char)(s[i] | (is_alpha(s[i]) ? 0x20 : 0));
    *o++ = '\0';
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        const char *uend = colon ? colon : at;
        u->user = o;
        if (put(&o, auth, (size_t)(uend - auth), 1) < 0)
            return fail(u, why, whylen, "a bad escape in the user name");
        if (colon) {
            u->password = o;
            if (put(&o, colon + 1, (size_t)(at - colon - 1), 1) < 0)
                return fail(u, why, whylen, "a bad escape in the password");
        }
    }
    u->host = o;
    put(&o, host, (size_t)(hend - host), 0);
    u->authority = o;
    put(&o, at ? at + 1 : auth, (size_t)(auth + alen - (at ? at + 1 : auth)), 0);
    u->path = o;
    put(&o, rest, plen, 0);
    if (query) {
        u->query = o;
        put(&o, query, frag ? (size_t)(frag - query) : strlen(query), 0);
    }
    if (frag) {
        u->fragment = o;
        put(&o, frag + 1, strlen(frag + 1), 0);
    }
    u->port = port ? port : url_default_port(u->scheme);
    return 0;
}

void url_parts_free(url_parts *u)
{
    free(u->mem);
    memset(u, 0, sizeof *u);
}

void url_trim_slashes(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
}

char *url_dup_base(const char *url)
{
    char *s = strdup(url);
    if (s) url_trim_slashes(s);
    return s;
}
