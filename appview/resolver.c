#include "appview/resolver.h"

#include <arpa/nameser.h>
#include <ctype.h>
#include <jansson.h>
#include <netdb.h>
#include <resolv.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "atproto/json_read.h"
#include "atproto/log.h"
#include "atproto/metrics.h"
#include "atproto/netguard.h"
#include "atproto/syntax.h"
#include "atproto/url.h"

#define BUCKETS 256
#define MAX_DID 2048
#define MAX_HANDLE 253
#define HANDLE_BODY_MAX 4096

enum flight_kind { FLIGHT_HANDLE, FLIGHT_DOC };
enum handle_step { STEP_DNS, STEP_WELL_KNOWN, STEP_XRPC, STEP_DONE };
enum dns_outcome { DNS_FOUND, DNS_NONE, DNS_FAILED };

struct waiter {
    struct waiter *next;
    resolver_did_cb did_cb;
    resolver_doc_cb doc_cb;
    void *ud;
};

/* One upstream lookup of one handle or DID, shared by every caller asking meanwhile. */
struct flight {
    struct flight *next;      /* hash chain */
    struct flight *next_kick; /* completions waiting for the kick timer */
    resolver *r;
    enum flight_kind kind;
    char *key;
    unsigned hash;
    struct waiter *waiters, **wtail;
    int step;
    bool busy;      /* an HTTP request or DNS job is outstanding */
    bool cancelled; /* resolver freed: drop the outcome when the fetch comes back */
    bool upstream_failed, timed_out;
    char failure[160]; /* the first upstream failure, for the answer's message */
    /* outcome, for completions delivered by the kick timer */
    enum resolver_status status;
    char error[256];
    /* DNS job */
    uv_work_t work;
    bool dns_answered; /* the TXT step got a real answer: a name DNS denies does not exist */
    enum dns_outcome dns_outcome;
    char dns_did[MAX_DID + 1];
};

struct resolver {
    uv_loop_t *loop;
    http_client *http;
    resolver_options opt;
    char *plc_url, *handle_resolver_url;
    struct flight *table[BUCKETS];
    struct flight *kick_list;
    uv_timer_t kick;
    unsigned live; /* flights allocated, plus the kick timer until it is closed */
    bool closing;
    unsigned long fetches, coalesced;
    uint64_t plc_parked_until; /* uv_now: the PLC directory's 429 asked to wait until then */
    uint64_t *m_plc_parks;
    uint64_t *m_fetch_plc, *m_fetch_web, *m_fetch_wk, *m_fetch_xrpc, *m_fetch_dns, *m_coalesced;
};

static void handle_step(struct flight *f);
static void doc_start(struct flight *f);

const char *resolver_status_name(enum resolver_status s)
{
    switch (s) {
    case RESOLVER_OK:
        return "OK";
    case RESOLVER_NOT_FOUND:
        return "NOT_FOUND";
    case RESOLVER_INVALID:
        return "INVALID";
    case RESOLVER_UPSTREAM_FAILURE:
        return "UPSTREAM_FAILURE";
    case RESOLVER_UPSTREAM_TIMEOUT:
        return "UPSTREAM_TIMEOUT";
    case RESOLVER_RATE_LIMITED:
        return "RATE_LIMITED";
    case RESOLVER_CANCELLED:
        break;
    }
    return "CANCELLED";
}

long resolver_plc_wait_ms(const resolver *r)
{
    uint64_t now = uv_now(r->loop);
    return r->plc_parked_until > now ? (long)(r->plc_parked_until - now) : 0;
}

/* ---- resolver lifetime ---- */

static void resolver_release(resolver *r)
{
    if (--r->live > 0 || !r->closing) return;
    free(r->plc_url);
    free(r->handle_resolver_url);
    free(r);
}

static void kick_closed(uv_handle_t *h)
{
    resolver_release(h->data);
}

/* ---- the flight table ---- */

static unsigned hash_key(enum flight_kind kind, const char *key)
{
    unsigned h = 2166136261u ^ (unsigned)kind;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static void table_remove(struct flight *f)
{
    for (struct flight **p = &f->r->table[f->hash % BUCKETS]; *p; p = &(*p)->next) {
        if (*p == f) {
            *p = f->next;
            return;
        }
    }
}

static void flight_free(struct flight *f)
{
    resolver *r = f->r;
    free(f->key);
    free(f);
    resolver_release(r);
}

/* Finds the flight for key or starts one; adds the waiter. -1 when out of memory. */
static int join(resolver *r, enum flight_kind kind, const char *key, resolver_did_cb did_cb,
                resolver_doc_cb doc_cb, void *ud, struct flight **started)
{
    *started = NULL;
    struct waiter *w = calloc(1, sizeof *w);
    if (!w) return -1;
    w->did_cb = did_cb;
    w->doc_cb = doc_cb;
    w->ud = ud;
    unsigned h = hash_key(kind, key);
    struct flight *f;
    for (f = r->table[h % BUCKETS]; f; f = f->next)
        if (f->kind == kind && f->hash == h && strcmp(f->key, key) == 0) break;
    if (f) {
        r->coalesced++;
        (*r->m_coalesced)++;
    } else {
        f = calloc(1, sizeof *f);
        if (!f || !(f->key = strdup(key))) {
            free(f);
            free(w);
            return -1;
        }
        f->r = r;
        f->kind = kind;
        f->hash = h;
        f->wtail = &f->waiters;
        f->next = r->table[h % BUCKETS];
        r->table[h % BUCKETS] = f;
        r->live++;
        *started = f;
    }
    *f->wtail = w;
    f->wtail = &w->next;
    return 0;
}

/* Delivers the outcome to every waiter and frees the flight. */
static void complete(struct flight *f, enum resolver_status st, const char *did, const did_doc *doc,
                     const char *error)
{
    table_remove(f);
    struct waiter *w = f->waiters;
    f->waiters = NULL;
    while (w) {
        struct waiter *next = w->next;
        if (w->did_cb)
            w->did_cb(st, did, error, w->ud);
        else
            w->doc_cb(st, doc, error, w->ud);
        free(w);
        w = next;
    }
    flight_free(f);
}

static void on_kick(uv_timer_t *t)
{
    resolver *r = t->data;
    struct flight *list = r->kick_list;
    r->kick_list = NULL;
    while (list) {
        struct flight *f = list;
        list = f->next_kick;
        complete(f, f->status, NULL, NULL, f->error);
    }
}

/* Completes from the loop rather than inside the caller's call. */
__attribute__((format(printf, 3, 4))) static void
complete_later(struct flight *f, enum resolver_status st, const char *fmt, ...)
{
    f->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->error, sizeof f->error, fmt, ap);
    va_end(ap);
    f->next_kick = f->r->kick_list;
    f->r->kick_list = f;
    uv_timer_start(&f->r->kick, on_kick, 0, 0);
}

static enum resolver_status http_failure_status(const http_result *res)
{
    return res->error == HTTP_E_TIMEOUT ? RESOLVER_UPSTREAM_TIMEOUT : RESOLVER_UPSTREAM_FAILURE;
}

/* Common entry of every HTTP/DNS completion: false when the flight was cancelled meanwhile. */
static bool flight_resume(struct flight *f)
{
    f->busy = false;
    if (!f->cancelled) return true;
    flight_free(f);
    return false;
}

static int fetch(struct flight *f, const char *url, bool trusted, http_done_cb cb)
{
    http_request_options ro = {.trusted = trusted};
    if (http_get(f->r->http, url, &ro, cb, f) != 0) return -1;
    f->busy = true;
    f->r->fetches++;
    return 0;
}

/* ---- handle -> DID ---- */

/* Special-use names (RFC 6761 and friends) are never in public DNS or on the web. */
static bool special_use(const char *handle)
{
    static const char *const tlds[] = {".test",  ".example",  ".invalid", ".localhost",
                                       ".local", ".internal", ".arpa",    ".onion"};
    size_t n = strlen(handle);
    for (size_t i = 0; i < sizeof tlds / sizeof tlds[0]; i++) {
        size_t k = strlen(tlds[i]);
        if (n > k && strcmp(handle + n - k, tlds[i]) == 0) return true;
    }
    return false;
}

static void handle_found(struct flight *f, const char *did)
{
    complete(f, RESOLVER_OK, did, NULL, "");
}

static void handle_next(struct flight *f)
{
    f->step++;
    handle_step(f);
}

static void note_failure(struct flight *f, const char *method, const http_result *res)
{
    if (res->error == HTTP_E_TIMEOUT)
        f->timed_out = true;
    else
        f->upstream_failed = true;
    if (!f->failure[0])
        snprintf(f->failure, sizeof f->failure, "%s: %s %s", method, http_error_name(res->error),
                 res->error_text);
    log_info("resolver", "%s for %s failed: %s %ld %s", method, f->key, http_error_name(res->error),
             res->status, res->error_text);
}

/* The TXT lookup runs in the libuv thread pool: res_nquery blocks. */
static void dns_work(uv_work_t *w)
{
    struct flight *f = w->data;
    char name[MAX_HANDLE + 16];
    snprintf(name, sizeof name, "_atproto.%s", f->key);
    f->dns_outcome = DNS_FAILED;
    struct __res_state st;
    memset(&st, 0, sizeof st);
    if (res_ninit(&st) != 0) return;
    st.retrans = 2;
    st.retry = 2;
    unsigned char answer[4096];
    int n = res_nquery(&st, name, ns_c_in, ns_t_txt, answer, sizeof answer);
    if (n < 0) {
        f->dns_outcome =
            st.res_h_errno == HOST_NOT_FOUND || st.res_h_errno == NO_DATA ? DNS_NONE : DNS_FAILED;
        /* "No such name" is an answer only from a resolver that sees the DNS at all: one that
         * cannot name the root's servers either is offline or filtering, and its "no" says
         * nothing about the handle. */
        if (f->dns_outcome == DNS_NONE &&
            res_nquery(&st, ".", ns_c_in, ns_t_ns, answer, sizeof answer) < 0)
            f->dns_outcome = DNS_FAILED;
        res_nclose(&st);
        return;
    }
    res_nclose(&st);
    ns_msg msg;
    if (ns_initparse(answer, n, &msg) != 0) return;
    int found = 0;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        ns_rr rr;
        if (ns_parserr(&msg, ns_s_an, i, &rr) != 0 || ns_rr_type(rr) != ns_t_txt) continue;
        /* One TXT record is a sequence of <length><bytes> strings: join them. */
        char txt[MAX_DID + 8];
        size_t tl = 0;
        const unsigned char *p = ns_rr_rdata(rr), *end = p + ns_rr_rdlen(rr);
        bool fits = true;
        while (p < end && fits) {
            size_t len = *p++;
            if (len > (size_t)(end - p) || tl + len >= sizeof txt) {
                fits = false;
                break;
            }
            memcpy(txt + tl, p, len);
            tl += len;
            p += len;
        }
        txt[tl] = '\0';
        if (!fits || tl <= 4 || strncmp(txt, "did=", 4) != 0 || !atp_is_did(txt + 4, tl - 4))
            continue;
        if (found && strcmp(f->dns_did, txt + 4) != 0) {
            found = -1; /* conflicting records: the handle is not resolvable this way */
            break;
        }
        memcpy(f->dns_did, txt + 4, tl - 4 + 1);
        found = 1;
    }
    f->dns_outcome = found == 1 ? DNS_FOUND : DNS_NONE;
}

static void dns_done(uv_work_t *w, int status)
{
    struct flight *f = w->data;
    if (!flight_resume(f)) return;
    if (status == 0 && f->dns_outcome == DNS_FOUND) {
        handle_found(f, f->dns_did);
        return;
    }
    f->dns_answered = status == 0 && f->dns_outcome == DNS_NONE;
    if (status != 0 || f->dns_outcome == DNS_FAILED) {
        f->upstream_failed = true;
        if (!f->failure[0])
            snprintf(f->failure, sizeof f->failure,
                     "DNS does not answer (offline, or the resolver filters)");
        log_info("resolver", "DNS TXT lookup for _atproto.%s failed", f->key);
    }
    handle_next(f);
}

static void on_well_known(const http_result *res, void *ud)
{
    struct flight *f = ud;
    if (!flight_resume(f)) return;
    if (res->error == HTTP_OK && res->status == 200 && res->len <= HANDLE_BODY_MAX) {
        char did[HANDLE_BODY_MAX + 1];
        const char *b = res->body, *e = res->body + res->len;
        while (b < e && isspace((unsigned char)*b))
            b++;
        while (e > b && isspace((unsigned char)e[-1]))
            e--;
        if (atp_is_did(b, (size_t)(e - b)) && (size_t)(e - b) <= MAX_DID) {
            memcpy(did, b, (size_t)(e - b));
            did[e - b] = '\0';
            handle_found(f, did);
            return;
        }
    } else if (res->error == HTTP_E_TIMEOUT || res->error == HTTP_E_CONNECT ||
               (res->error == HTTP_E_RESOLVE && !f->dns_answered) ||
               (res->error == HTTP_OK && res->status >= 500)) {
        /* A host that could not answer (down, refusing, broken TLS, failing), or a name
         * that did not resolve while DNS was not seen working: unknown, not absent. A 404,
         * or a name a working DNS denies, mean not this way. */
        note_failure(f, "well-known", res);
    }
    handle_next(f);
}

static void on_xrpc_handle(const http_result *res, void *ud)
{
    struct flight *f = ud;
    if (!flight_resume(f)) return;
    if (res->error == HTTP_OK && res->status == 200) {
        json_t *root = json_read(res->body, res->len);
        json_t *did = json_object_get(root, "did");
        if (json_is_string(did) && json_string_length(did) <= MAX_DID &&
            atp_is_did(json_string_value(did), json_string_length(did))) {
            char copy[MAX_DID + 1];
            memcpy(copy, json_string_value(did), json_string_length(did) + 1);
            json_decref(root);
            handle_found(f, copy);
            return;
        }
        json_decref(root);
        f->upstream_failed = true;
        if (!f->failure[0])
            snprintf(f->failure, sizeof f->failure, "resolveHandle answered without a valid did");
        log_info("resolver", "resolveHandle for %s answered without a valid did", f->key);
    } else if (!(res->error == HTTP_OK && (res->status == 400 || res->status == 404))) {
        note_failure(f, "resolveHandle", res);
    }
    handle_next(f);
}

static void handle_step(struct flight *f)
{
    resolver *r = f->r;
    char url[1024];
    for (;; f->step++) {
        bool web = !special_use(f->key);
        switch (f->step) {
        case STEP_DNS:
            if (r->opt.no_dns || !web || r->closing) continue;
            f->work.data = f;
            if (uv_queue_work(r->loop, &f->work, dns_work, dns_done) != 0) continue;
            f->busy = true;
            r->fetches++;
            (*r->m_fetch_dns)++;
            return;
        case STEP_WELL_KNOWN:
            if (r->opt.no_well_known || !web) continue;
            snprintf(url, sizeof url, "https://%s/.well-known/atproto-did", f->key);
            if (fetch(f, url, false, on_well_known) != 0) continue;
            (*r->m_fetch_wk)++;
            return;
        case STEP_XRPC:
            if (!r->handle_resolver_url) continue;
            snprintf(url, sizeof url, "%s/xrpc/com.atproto.identity.resolveHandle?handle=%s",
                     r->handle_resolver_url, f->key);
            if (fetch(f, url, true, on_xrpc_handle) != 0) continue;
            (*r->m_fetch_xrpc)++;
            return;
        default:
            if (f->timed_out || f->upstream_failed) {
                char why[256];
                snprintf(why, sizeof why, "handle resolution %s: %s",
                         f->timed_out ? "timed out" : "failed upstream", f->failure);
                complete(f, f->timed_out ? RESOLVER_UPSTREAM_TIMEOUT : RESOLVER_UPSTREAM_FAILURE,
                         NULL, NULL, why);
            } else
                complete(f, RESOLVER_NOT_FOUND, NULL, NULL, "handle not found");
            return;
        }
    }
}

int resolver_handle_to_did(resolver *r, const char *handle, resolver_did_cb cb, void *ud)
{
    if (r->closing) return -1;
    char key[MAX_HANDLE + 1] = "";
    size_t n = strlen(handle);
    bool valid = n <= MAX_HANDLE && atp_is_handle(handle, n);
    if (valid)
        for (size_t i = 0; i <= n; i++)
            key[i] = (char)tolower((unsigned char)handle[i]);
    struct flight *f;
    if (join(r, FLIGHT_HANDLE, valid ? key : "", cb, NULL, ud, &f) != 0) return -1;
    if (!f) return 0;
    if (!valid)
        complete_later(f, RESOLVER_INVALID, "not a valid handle");
    else
        handle_step(f);
    return 0;
}

/* ---- DID -> document ---- */

static void on_doc(const http_result *res, void *ud)
{
    struct flight *f = ud;
    if (!flight_resume(f)) return;
    const char *did = f->key;
    if (res->error == HTTP_OK && res->status == 200) {
        char err[200];
        did_doc *doc = did_doc_parse(res->body, res->len, did, err, sizeof err);
        if (!doc) {
            log_warn("resolver", "DID document of %s rejected: %s", did, err);
            complete(f, RESOLVER_INVALID, NULL, NULL, err);
            return;
        }
        complete(f, RESOLVER_OK, NULL, doc, "");
        did_doc_free(doc);
        return;
    }
    char err[256];
    enum resolver_status st;
    if (res->error == HTTP_OK && res->status == 429 && !strncmp(did, "did:plc:", 8)) {
        resolver *r = f->r;
        long asked = http_result_wait_ms(res, NULL);
        uint64_t wait = asked < 0 ? RESOLVER_PLC_PARK_DEFAULT_MS : (uint64_t)asked;
        if (wait > RESOLVER_PLC_PARK_MAX_MS) wait = RESOLVER_PLC_PARK_MAX_MS;
        if (uv_now(r->loop) + wait > r->plc_parked_until)
            r->plc_parked_until = uv_now(r->loop) + wait;
        (*r->m_plc_parks)++;
        st = RESOLVER_RATE_LIMITED;
        snprintf(err, sizeof err, "the PLC directory answered 429: parked for %llu ms",
                 (unsigned long long)wait);
        log_warn("resolver", "%s: %s", did, err);
        complete(f, st, NULL, NULL, err);
        return;
    }
    if (res->error == HTTP_OK && (res->status == 404 || res->status == 410)) {
        st = RESOLVER_NOT_FOUND;
        snprintf(err, sizeof err, "DID not found (HTTP %ld)", res->status);
    } else if (res->error == HTTP_OK) {
        st = RESOLVER_UPSTREAM_FAILURE;
        snprintf(err, sizeof err, "DID document fetch answered HTTP %ld", res->status);
    } else if (res->error == HTTP_E_BLOCKED || res->error == HTTP_E_TOO_LARGE ||
               res->error == HTTP_E_INVALID) {
        st = RESOLVER_INVALID;
        snprintf(err, sizeof err, "DID document fetch refused: %s", res->error_text);
    } else {
        st = http_failure_status(res);
        snprintf(err, sizeof err, "DID document fetch failed: %s", res->error_text);
    }
    log_info("resolver", "%s: %s", did, err);
    complete(f, st, NULL, NULL, err);
}

static void doc_start(struct flight *f)
{
    resolver *r = f->r;
    char url[1024];
    if (strncmp(f->key, "did:plc:", 8) == 0) {
        long parked_ms = resolver_plc_wait_ms(r);
        snprintf(url, sizeof url, "%s/%s", r->plc_url, f->key);
        if (parked_ms > 0)
            complete_later(f, RESOLVER_RATE_LIMITED,
                           "the PLC directory asked to wait (429): %ld ms left", parked_ms);
        else if (fetch(f, url, true, on_doc) != 0)
            complete_later(f, RESOLVER_UPSTREAM_FAILURE, "out of memory");
        else
            (*r->m_fetch_plc)++;
    } else if (strncmp(f->key, "did:web:", 8) == 0) {
        if (did_web_url(f->key, r->opt.allow_private, url, sizeof url) != 0)
            complete_later(f, RESOLVER_INVALID, "unsupported did:web (paths or bad host)");
        else if (fetch(f, url, false, on_doc) != 0)
            complete_later(f, RESOLVER_UPSTREAM_FAILURE, "out of memory");
        else
            (*r->m_fetch_web)++;
    } else {
        complete_later(f, RESOLVER_INVALID, "unsupported DID method");
    }
}

int resolver_did_to_doc(resolver *r, const char *did, resolver_doc_cb cb, void *ud)
{
    if (r->closing) return -1;
    size_t n = strlen(did);
    bool valid = n <= MAX_DID && atp_is_did(did, n);
    struct flight *f;
    if (join(r, FLIGHT_DOC, valid ? did : "", NULL, cb, ud, &f) != 0) return -1;
    if (!f) return 0;
    if (!valid)
        complete_later(f, RESOLVER_INVALID, "not a valid DID");
    else
        doc_start(f);
    return 0;
}

/* ---- full identity ---- */

struct ident {
    resolver *r;
    resolver_identity_cb cb;
    void *ud;
    char *handle; /* asked for, or claimed by the document */
    char *did;
    did_doc *doc;
    bool by_did;
};

static void ident_free(struct ident *id)
{
    did_doc_free(id->doc);
    free(id->handle);
    free(id->did);
    free(id);
}

/* The PDS comes from an untrusted document: refuse what the HTTP client would refuse. */
static bool endpoint_allowed(const resolver *r, const char *url, char *why, size_t whylen)
{
    bool https = strncasecmp(url, "https://", 8) == 0;
    if (!https && !r->opt.allow_private) {
        snprintf(why, whylen, "PDS endpoint %s is not https", url);
        return false;
    }
    const char *host = url + (https ? 8 : 7);
    char name[256];
    size_t n = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":/?");
    if (n >= sizeof name) n = sizeof name - 1;
    memcpy(name, host, n);
    name[n] = '\0';
    enum netguard_class cls = NETGUARD_PUBLIC;
    if (netguard_classify_text(name, &cls) != 0 &&
        (strcasecmp(name, "localhost") == 0 ||
         (n > 10 && strcasecmp(name + n - 10, ".localhost") == 0)))
        cls = NETGUARD_LOOPBACK;
    if (!netguard_allowed(cls, r->opt.allow_private)) {
        snprintf(why, whylen, "PDS endpoint %s is on a %s address", url, netguard_class_name(cls));
        return false;
    }
    return true;
}

static void ident_report(struct ident *id, enum resolver_status st, enum resolver_handle_state hs,
                         const char *error)
{
    char why[600];
    const char *pds = st == RESOLVER_OK && id->doc ? did_doc_pds(id->doc) : NULL;
    if (pds && !endpoint_allowed(id->r, pds, why, sizeof why)) {
        log_warn("resolver", "%s: %s", id->did, why);
        st = RESOLVER_INVALID;
        error = why;
        pds = NULL;
    }
    resolver_identity res = {
        .status = st,
        .did = id->did,
        .handle = st == RESOLVER_OK && hs == RESOLVER_HANDLE_VERIFIED ? id->handle : NULL,
        .handle_state = hs,
        .pds = pds,
        .doc = st == RESOLVER_OK ? id->doc : NULL,
        .error = error ? error : "",
    };
    id->cb(&res, id->ud);
    ident_free(id);
}

static void ident_on_back_check(enum resolver_status st, const char *did, const char *error,
                                void *ud)
{
    struct ident *id = ud;
    if (st == RESOLVER_CANCELLED) {
        ident_report(id, st, RESOLVER_HANDLE_UNCHECKED, error);
        return;
    }
    enum resolver_handle_state hs;
    if (st == RESOLVER_OK)
        hs = strcmp(did, id->did) == 0 ? RESOLVER_HANDLE_VERIFIED : RESOLVER_HANDLE_INVALID;
    else if (st == RESOLVER_NOT_FOUND || st == RESOLVER_INVALID)
        hs = RESOLVER_HANDLE_INVALID;
    else
        hs = RESOLVER_HANDLE_UNCHECKED;
    ident_report(id, RESOLVER_OK, hs, "");
}

static void ident_on_doc(enum resolver_status st, const did_doc *doc, const char *error, void *ud)
{
    struct ident *id = ud;
    if (st != RESOLVER_OK) {
        ident_report(id, st, RESOLVER_HANDLE_UNCHECKED, error);
        return;
    }
    id->doc = did_doc_ref(doc);
    if (!id->by_did) {
        bool ok = did_doc_claims_handle(doc, id->handle);
        ident_report(id, RESOLVER_OK, ok ? RESOLVER_HANDLE_VERIFIED : RESOLVER_HANDLE_INVALID, "");
        return;
    }
    const char *claimed = did_doc_handle(doc);
    if (!claimed) {
        ident_report(id, RESOLVER_OK, RESOLVER_HANDLE_INVALID, "");
        return;
    }
    id->handle = strdup(claimed);
    if (!id->handle || resolver_handle_to_did(id->r, claimed, ident_on_back_check, id) != 0)
        ident_report(id, RESOLVER_OK, RESOLVER_HANDLE_UNCHECKED, "");
}

static void ident_on_did(enum resolver_status st, const char *did, const char *error, void *ud)
{
    struct ident *id = ud;
    if (st != RESOLVER_OK) {
        ident_report(id, st, RESOLVER_HANDLE_UNCHECKED, error);
        return;
    }
    id->did = strdup(did);
    if (!id->did || resolver_did_to_doc(id->r, did, ident_on_doc, id) != 0)
        ident_report(id, id->r->closing ? RESOLVER_CANCELLED : RESOLVER_UPSTREAM_FAILURE,
                     RESOLVER_HANDLE_UNCHECKED, "could not start the DID document fetch");
}

int resolver_resolve(resolver *r, const char *actor, resolver_identity_cb cb, void *ud)
{
    if (r->closing) return -1;
    struct ident *id = calloc(1, sizeof *id);
    if (!id) return -1;
    id->r = r;
    id->cb = cb;
    id->ud = ud;
    id->by_did = strncmp(actor, "did:", 4) == 0;
    int rc;
    if (id->by_did) {
        id->did = strdup(actor);
        rc = id->did ? resolver_did_to_doc(r, actor, ident_on_doc, id) : -1;
    } else {
        id->handle = strdup(actor);
        if (id->handle)
            for (char *p = id->handle; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        rc = id->handle ? resolver_handle_to_did(r, actor, ident_on_did, id) : -1;
    }
    if (rc != 0) ident_free(id);
    return rc;
}

/* ---- lifetime ---- */

resolver *resolver_new(uv_loop_t *loop, http_client *http, const resolver_options *opt)
{
    resolver *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->loop = loop;
    r->http = http;
    if (opt) r->opt = *opt;
    r->plc_url = url_dup_base(r->opt.plc_url ? r->opt.plc_url : "https://plc.directory");
    r->handle_resolver_url =
        r->opt.handle_resolver_url ? url_dup_base(r->opt.handle_resolver_url) : NULL;
    r->opt.plc_url = r->opt.handle_resolver_url = NULL;
    if (!r->plc_url || (opt && opt->handle_resolver_url && !r->handle_resolver_url)) {
        free(r->plc_url);
        free(r->handle_resolver_url);
        free(r);
        return NULL;
    }
    const char *help = "Identity lookups sent upstream, by method";
    r->m_fetch_plc = metrics_counter("appview_resolver_fetches_total{method=\"plc\"}", help);
    r->m_fetch_web = metrics_counter("appview_resolver_fetches_total{method=\"did_web\"}", help);
    r->m_fetch_wk = metrics_counter("appview_resolver_fetches_total{method=\"well_known\"}", help);
    r->m_fetch_xrpc =
        metrics_counter("appview_resolver_fetches_total{method=\"resolve_handle\"}", help);
    r->m_fetch_dns = metrics_counter("appview_resolver_fetches_total{method=\"dns\"}", help);
    r->m_plc_parks = metrics_counter("appview_resolver_plc_parks_total",
                                     "429 answers of the PLC directory that parked it");
    r->m_coalesced = metrics_counter("appview_resolver_coalesced_total",
                                     "Identity lookups that joined one already in flight");
    uv_timer_init(loop, &r->kick);
    r->kick.data = r;
    r->live = 1;
    return r;
}

unsigned long resolver_upstream_fetches(const resolver *r)
{
    return r->fetches;
}

unsigned long resolver_coalesced(const resolver *r)
{
    return r->coalesced;
}

void resolver_free(resolver *r)
{
    if (!r || r->closing) return;
    r->closing = true;
    r->kick_list = NULL;
    for (size_t b = 0; b < BUCKETS; b++) {
        while (r->table[b]) {
            struct flight *f = r->table[b];
            r->table[b] = f->next;
            struct waiter *w = f->waiters;
            f->waiters = NULL;
            while (w) {
                struct waiter *next = w->next;
                if (w->did_cb)
                    w->did_cb(RESOLVER_CANCELLED, NULL, "resolver shut down", w->ud);
                else
                    w->doc_cb(RESOLVER_CANCELLED, NULL, "resolver shut down", w->ud);
                free(w);
                w = next;
            }
            if (f->busy) {
                f->cancelled = true; /* freed when its fetch comes back */
                if (f->step == STEP_DNS && f->kind == FLIGHT_HANDLE)
                    uv_cancel((uv_req_t *)&f->work);
            } else {
                flight_free(f);
            }
        }
    }
    uv_close((uv_handle_t *)&r->kick, kick_closed);
}
