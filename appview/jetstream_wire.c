#include "appview/jetstream_wire.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "atproto/json_read.h"
#include "atproto/url.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define DICT_MAGIC 0xEC30A437u

/* buf_url_encode, except that '*' stays literal: Jetstream reads "io.atcr.*" as a prefix
 * wildcard, and not every server decodes %2A there. */
static int query_escape(buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || c == '*';
        char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
        if (plain ? buf_append(b, s, 1) : buf_append(b, esc, 3)) return -1;
    }
    return 0;
}

void jetstream_endpoint_clear(jetstream_endpoint *e)
{
    free(e->url);
    free(e->host);
    free(e->authority);
    free(e->target);
    free(e->dict_url);
    memset(e, 0, sizeof *e);
}

int jetstream_endpoint_parse(jetstream_endpoint *e, const char *url, const char *const *collections,
                             size_t ncollections, char *why, size_t whylen)
{
    memset(e, 0, sizeof *e);
    url_parts u;
    char reason[96];
    if (url_parse(url, &u, reason, sizeof reason) < 0) {
        snprintf(why, whylen, "bad URL '%s': %s", url, reason);
        return -1;
    }
    int rc = -1;
    if (strcmp(u.scheme, "ws") && strcmp(u.scheme, "wss")) {
        snprintf(why, whylen, "bad URL '%s': want ws:// or wss://", url);
    } else if (!*u.host || u.user || u.fragment) {
        snprintf(why, whylen, "bad URL '%s': no host, or credentials or a fragment", url);
    } else {
        e->tls = !strcmp(u.scheme, "wss");
        e->port = u.port;
        size_t plen = strlen(u.path), mlen = strlen(JETSTREAM_V2_METHOD);
        /* The v2 endpoint is an XRPC method; anything else speaks the v1 protocol. */
        e->flavor = plen >= mlen && !strcmp(u.path + plen - mlen, JETSTREAM_V2_METHOD)
                        ? JETSTREAM_V2
                        : JETSTREAM_V1;
        buf t = {0}, d = {0};
        int bad = buf_puts(&t, plen ? u.path : "/");
        char sep = '?';
        if (u.query && *u.query) {
            bad |= buf_printf(&t, "?%s", u.query);
            sep = '&';
        }
        const char *cname = e->flavor == JETSTREAM_V2 ? "collections" : "wantedCollections";
        for (size_t i = 0; i < ncollections; i++) {
            bad |= buf_printf(&t, "%c%s=", sep, cname);
            bad |= query_escape(&t, collections[i]);
            sep = '&';
        }
        if (e->flavor == JETSTREAM_V2) {
            /* #sync too: with collections set the other kinds still come, and every one of
             * them changes the index */
            bad |= buf_printf(&t, "%ckinds=commit&kinds=identity&kinds=account&kinds=sync", sep);
            bad |= buf_printf(&d, "%s://%s/xrpc/" JETSTREAM_DICT_METHOD, e->tls ? "https" : "http",
                              u.authority);
        }
        e->url = strdup(url);
        e->host = strdup(u.host);
        e->authority = strdup(u.authority);
        e->target = t.data;
        e->dict_url = d.data;
        if (bad || !e->url || !e->host || !e->authority || !e->target) {
            buf_free(&t);
            buf_free(&d);
            e->target = e->dict_url = NULL;
            jetstream_endpoint_clear(e);
            snprintf(why, whylen, "out of memory parsing '%s'", url);
        } else {
            rc = 0;
        }
    }
    url_parts_free(&u);
    return rc;
}

int jetstream_upgrade_request(const jetstream_endpoint *e, uint64_t cursor, unsigned dict_id,
                              const char *key, buf *out)
{
    char sep = strchr(e->target, '?') ? '&' : '?';
    int rc = buf_printf(out, "GET %s", e->target);
    if (cursor) {
        rc |= buf_printf(out, "%ccursor=%llu", sep, (unsigned long long)cursor);
        sep = '&';
    }
    if (dict_id && e->flavor == JETSTREAM_V2)
        rc |= buf_printf(out, "%czstdDictionary=%u", sep, dict_id);
    rc |= buf_printf(
        out,
        " HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s"
        "User-Agent: atcr-appview\r\n\r\n",
        e->authority, key,
        e->flavor == JETSTREAM_V2 ? "Sec-WebSocket-Protocol: " JETSTREAM_SUBPROTOCOL "\r\n" : "");
    return rc ? -1 : 0;
}

int jetstream_accept_for(const char *key, char out[32])
{
    char concat[128];
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    int n = snprintf(concat, sizeof concat, "%s%s", key, WS_GUID);
    if (n < 0 || (size_t)n >= sizeof concat ||
        !EVP_Digest(concat, (size_t)n, digest, &dlen, EVP_sha1(), NULL) || dlen != 20)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, digest, 20); /* 28 characters and a NUL */
    return 0;
}

const char *jetstream_header(const char *head, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nlen)) continue;
        const char *v = line + nlen;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t l = strcspn(v, "\r\n");
        while (l && (v[l - 1] == ' ' || v[l - 1] == '\t'))
            l--;
        *len = l;
        return v;
    }
    return NULL;
}

int jetstream_response_status(const char *head)
{
    int status;
    if (strncmp(head, "HTTP/1.", 7) || sscanf(head + 8, " %3d", &status) != 1) return -1;
    return status;
}

const char *jetstream_check_upgrade(const char *head, const char *accept, jetstream_flavor flavor)
{
    size_t len;
    const char *v = jetstream_header(head, "sec-websocket-accept:", &len);
    if (!v || len != strlen(accept) || memcmp(v, accept, len))
        return "bad or missing Sec-WebSocket-Accept";
    v = jetstream_header(head, "sec-websocket-extensions:", &len);
    if (v && len) return "server imposed extensions we did not ask for";
    v = jetstream_header(head, "sec-websocket-protocol:", &len);
    /* RFC 6455 4.1: a subprotocol the client did not offer fails the connection; none is
     * the lexicon's default, the same framing */
    if (v && len &&
        (flavor != JETSTREAM_V2 || len != strlen(JETSTREAM_SUBPROTOCOL) ||
         memcmp(v, JETSTREAM_SUBPROTOCOL, len)))
        return "server chose a subprotocol we did not offer";
    return NULL;
}

/* The number after the first occurrence of word in s, or 0. */
static uint64_t number_after(const char *s, const char *word)
{
    const char *p = strstr(s, word);
    if (!p) return 0;
    p += strlen(word);
    while (*p == ' ')
        p++;
    uint64_t v = 0;
    for (int n = 0; *p >= '0' && *p <= '9' && n < 19; n++)
        v = v * 10 + (uint64_t)(*p++ - '0');
    return v;
}

void jetstream_parse_refusal(int status, const char *body, size_t len, jetstream_refusal *r)
{
    memset(r, 0, sizeof *r);
    r->status = status;
    json_t *root = len ? json_read(body, len) : NULL;
    const char *name = json_string_value(json_object_get(root, "error"));
    const char *msg = json_string_value(json_object_get(root, "message"));
    if (name) snprintf(r->error, sizeof r->error, "%s", name);
    if (msg)
        snprintf(r->message, sizeof r->message, "%s", msg);
    else if (!root && len)
        snprintf(r->message, sizeof r->message, "%.*s", (int)strcspn(body, "\r\n"), body);
    json_decref(root);
    if (status != 400) return;
    if (!strcmp(r->error, "InvalidRequest")) {
        r->kind = JETSTREAM_REFUSED_INVALID;
    } else if (!strcmp(r->error, "CursorTooOld")) {
        r->kind = JETSTREAM_REFUSED_CURSOR_TOO_OLD;
        r->floor = number_after(r->message, "floor");
    } else if (!strcmp(r->error, "UnknownZstdDictionary")) {
        r->kind = JETSTREAM_REFUSED_DICTIONARY;
        uint64_t id = number_after(r->message, "current dictionary id is");
        r->dict_id = id <= 0xffffffffu ? (unsigned)id : 0;
    }
}

unsigned jetstream_dictionary_id(const void *dict, size_t len)
{
    const unsigned char *d = dict;
    if (len < 8) return 0;
    uint32_t magic =
        (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
    if (magic != DICT_MAGIC) return 0;
    return (unsigned)d[4] | (unsigned)d[5] << 8 | (unsigned)d[6] << 16 | (unsigned)d[7] << 24;
}
