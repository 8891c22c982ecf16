#include "atproto/did_doc.h"

#include "atproto/buf.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "atproto/json_read.h"
#include "atproto/netguard.h"
#include "atproto/syntax.h"
#include "atproto/url.h"

#define MAX_AKA 32
#define MAX_SERVICES 32
#define MAX_ENDPOINT 512
#define MAX_ID 256

struct service {
    char *id; /* the fragment, "#atproto_pds" */
    char *type;
    char *endpoint;
};

struct did_doc {
    int refs;
    char *id;
    char *aka[MAX_AKA];
    size_t n_aka;
    char *handle;
    struct service services[MAX_SERVICES];
    size_t n_services;
};

__attribute__((format(printf, 3, 4))) static void fail(char *err, size_t errlen, const char *fmt,
                                                       ...)
{
    if (!errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

did_doc *did_doc_ref(const did_doc *d)
{
    did_doc *m = (did_doc *)d; /* the count is the only mutable part of a shared document */
    m->refs++;
    return m;
}

void did_doc_free(did_doc *d)
{
    if (!d || --d->refs > 0) return;
    free(d->id);
    for (size_t i = 0; i < d->n_aka; i++)
        free(d->aka[i]);
    free(d->handle);
    for (size_t i = 0; i < d->n_services; i++) {
        free(d->services[i].id);
        free(d->services[i].type);
        free(d->services[i].endpoint);
    }
    free(d);
}

static bool printable_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f) return false;
    return true;
}

/* An absolute http(s) URL with a host, no credentials, no fragment, no spaces. */
static bool valid_endpoint(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_ENDPOINT || !printable_ascii(s)) return false;
    const char *host;
    if (strncasecmp(s, "https://", 8) == 0)
        host = s + 8;
    else if (strncasecmp(s, "http://", 7) == 0)
        host = s + 7;
    else
        return false;
    size_t host_len = strcspn(host, "/?#");
    if (host_len == 0 || memchr(host, '@', host_len) || strchr(s, '#')) return false;
    return true;
}

static int parse_aka(did_doc *d, json_t *aka, char *err, size_t errlen)
{
    if (!aka) return 0;
    if (!json_is_array(aka)) {
        fail(err, errlen, "alsoKnownAs is not an array");
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(aka, i, v)
    {
        /* Unusable entries are skipped rather than failing the whole identity. */
        if (!json_is_string(v) || json_string_length(v) > MAX_ENDPOINT || d->n_aka == MAX_AKA)
            continue;
        const char *s = json_string_value(v);
        char *copy = strdup(s);
        if (!copy) {
            fail(err, errlen, "out of memory");
            return -1;
        }
        d->aka[d->n_aka++] = copy;
        if (!d->handle && strncmp(s, "at://", 5) == 0 && atp_is_handle(s + 5, strlen(s + 5))) {
            d->handle = strdup(s + 5);
            if (!d->handle) {
                fail(err, errlen, "out of memory");
                return -1;
            }
            for (char *p = d->handle; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        }
    }
    return 0;
}

static int parse_services(did_doc *d, json_t *services, char *err, size_t errlen)
{
    if (!services) return 0;
    if (!json_is_array(services)) {
        fail(err, errlen, "service is not an array");
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(services, i, v)
    {
        if (d->n_services == MAX_SERVICES) break;
        json_t *id = json_object_get(v, "id"), *type = json_object_get(v, "type"),
               *ep = json_object_get(v, "serviceEndpoint");
        /* Entries with map/array endpoints (legal DID Core, not AT Protocol) are skipped. */
        if (!json_is_string(id) || !json_is_string(type) || !json_is_string(ep)) continue;
        const char *ids = json_string_value(id);
        const char *hash = strchr(ids, '#');
        if (!hash || strlen(hash) > MAX_ID || !printable_ascii(ids)) continue;
        /* An absolute id must name this DID: another DID's service is not ours to use. */
        if (hash != ids && (strncmp(ids, d->id, (size_t)(hash - ids)) != 0 ||
                            strlen(d->id) != (size_t)(hash - ids)))
            continue;
        if (json_string_length(type) > MAX_ID || !printable_ascii(json_string_value(type)) ||
            !valid_endpoint(json_string_value(ep)))
            continue;
        struct service *s = &d->services[d->n_services];
        s->id = strdup(hash);
        s->type = strdup(json_string_value(type));
        s->endpoint = url_dup_base(json_string_value(ep));
        d->n_services++;
        if (!s->id || !s->type || !s->endpoint) {
            fail(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

did_doc *did_doc_parse(const char *json, size_t len, const char *expected_did, char *err,
                       size_t errlen)
{
    if (len > DID_DOC_MAX_BYTES) {
        fail(err, errlen, "DID document over %d bytes", DID_DOC_MAX_BYTES);
        return NULL;
    }
    json_t *root = json_read(json, len);
    if (!json_is_object(root)) {
        json_decref(root);
        fail(err, errlen, "DID document is not JSON, or not an object");
        return NULL;
    }
    did_doc *d = NULL;
    json_t *id = json_object_get(root, "id");
    if (!json_is_string(id) || strcmp(json_string_value(id), expected_did) != 0 ||
        !atp_is_did(json_string_value(id), json_string_length(id))) {
        fail(err, errlen, "DID document id does not match the requested DID");
        goto out;
    }
    d = calloc(1, sizeof *d);
    if (d) d->refs = 1;
    if (!d || !(d->id = strdup(expected_did))) {
        fail(err, errlen, "out of memory");
        goto bad;
    }
    if (parse_aka(d, json_object_get(root, "alsoKnownAs"), err, errlen) != 0 ||
        parse_services(d, json_object_get(root, "service"), err, errlen) != 0)
        goto bad;
    goto out;
bad:
    did_doc_free(d);
    d = NULL;
out:
    json_decref(root);
    return d;
}

const char *did_doc_id(const did_doc *d)
{
    return d->id;
}

size_t did_doc_aka_count(const did_doc *d)
{
    return d->n_aka;
}

const char *did_doc_aka(const did_doc *d, size_t i)
{
    return i < d->n_aka ? d->aka[i] : NULL;
}

const char *did_doc_handle(const did_doc *d)
{
    return d->handle;
}

bool did_doc_claims_handle(const did_doc *d, const char *handle)
{
    for (size_t i = 0; i < d->n_aka; i++)
        if (strncmp(d->aka[i], "at://", 5) == 0 && strcasecmp(d->aka[i] + 5, handle) == 0)
            return true;
    return false;
}

const char *did_doc_service(const did_doc *d, const char *id, const char *type)
{
    const char *hash = strchr(id, '#');
    if (!hash) return NULL;
    if (hash != id &&
        (strlen(d->id) != (size_t)(hash - id) || strncmp(id, d->id, (size_t)(hash - id)) != 0))
        return NULL;
    for (size_t i = 0; i < d->n_services; i++) {
        const struct service *s = &d->services[i];
        if (strcmp(s->id, hash) == 0 && (!type || strcmp(s->type, type) == 0)) return s->endpoint;
    }
    return NULL;
}

const char *did_doc_pds(const did_doc *d)
{
    return did_doc_service(d, "#atproto_pds", "AtprotoPersonalDataServer");
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* Hosts of a local test network: loopback/private IP literals and special-use names. */
static bool local_host(const char *host_port)
{
    char name[256];
    size_t n = strcspn(host_port, ":");
    memcpy(name, host_port, n);
    name[n] = '\0';
    enum netguard_class cls;
    if (netguard_classify_text(name, &cls) == 0) return cls != NETGUARD_PUBLIC;
    return strcmp(name, "localhost") == 0 || ends_with(name, n, ".localhost") ||
           ends_with(name, n, ".test") || ends_with(name, n, ".local") ||
           ends_with(name, n, ".internal");
}

int did_web_url(const char *did, bool allow_http, char *out, size_t outlen)
{
    if (strncmp(did, "did:web:", 8) != 0 || !atp_is_did(did, strlen(did))) return -1;
    const char *rest = did + 8;
    if (strchr(rest, ':')) return -1; /* path-based did:web */
    char host[256];
    size_t n = 0;
    for (const char *p = rest; *p; p++) {
        char ch = *p;
        if (ch == '%') {
            if (strncasecmp(p, "%3A", 3) != 0) return -1;
            ch = ':';
            p += 2;
        } else if (!(isalnum((unsigned char)ch) || ch == '.' || ch == '-')) {
            return -1;
        }
        if (n + 1 >= sizeof host) return -1;
        host[n++] = (char)tolower((unsigned char)ch);
    }
    host[n] = '\0';
    const char *colon = strchr(host, ':');
    if (n == 0 || host[0] == ':' || host[0] == '.' || (colon && strchr(colon + 1, ':'))) return -1;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || port < 1 || port > 65535) return -1;
    }
    int w = snprintf(out, outlen, "%s://%s/.well-known/did.json",
                     allow_http && local_host(host) ? "http" : "https", host);
    return w < 0 || (size_t)w >= outlen ? -1 : 0;
}

char *did_web_from_url(const char *url)
{
    const char *p;
    if (!strncmp(url, "https://", 8))
        p = url + 8;
    else if (!strncmp(url, "http://", 7))
        p = url + 7;
    else
        return NULL;
    size_t hostlen = strcspn(p, "/?#");
    if (!hostlen) return NULL;
    buf b = {0};
    int rc = buf_puts(&b, "did:web:");
    for (size_t i = 0; rc == 0 && i < hostlen; i++)
        rc = p[i] == ':' ? buf_puts(&b, "%3A") : buf_append(&b, &p[i], 1);
    /* Path segments become ':'-separated parts, as the did:web method defines. */
    const char *path = p + hostlen;
    size_t pathlen = strcspn(path, "?#");
    for (size_t i = 0; rc == 0 && i < pathlen; i++) {
        if (path[i] == '/') {
            if (i + 1 < pathlen && path[i + 1] != '/') rc = buf_puts(&b, ":");
        } else {
            rc = buf_append(&b, &path[i], 1);
        }
    }
    if (rc != 0 || !atp_is_did(b.data, b.len)) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}
