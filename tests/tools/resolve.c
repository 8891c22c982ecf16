/* Resolves identities with appview/resolver on one loop and prints one JSON line per result:
 *   {"actor","status","did","handle","handle_state","pds","service","error","elapsed_ms"}
 * then {"summary":true,"fetches":N,"coalesced":N}. Every ACTOR is resolved --repeat times,
 * all at once (single-flight checks).
 *   resolve [--plc URL] [--handle-resolver URL] [--allow-private] [--no-dns] [--no-well-known]
 *           [--timeout-ms N] [--repeat N] [--service ID] [--cancel-after-ms N] ACTOR... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "appview/resolver.h"
#include "atproto/buf.h"
#include "atproto/metrics.h"

#define MAX_ACTORS 32

struct ask {
    const char *actor;
    uint64_t start;
};

static const char *service_id;
static int outstanding;

static const char *handle_state_name(enum resolver_handle_state s)
{
    return s == RESOLVER_HANDLE_VERIFIED  ? "verified"
           : s == RESOLVER_HANDLE_INVALID ? "invalid"
                                          : "unchecked";
}

static int json_field(buf *b, const char *name, const char *v)
{
    int bad = buf_printf(b, ",\"%s\":", name);
    if (v)
        bad |= buf_json_string(b, v, strlen(v));
    else
        bad |= buf_puts(b, "null");
    return bad;
}

static void on_identity(const resolver_identity *id, void *ud)
{
    struct ask *a = ud;
    buf out = {0};
    int bad = buf_puts(&out, "{\"actor\":");
    bad |= buf_json_string(&out, a->actor, strlen(a->actor));
    bad |= json_field(&out, "status", resolver_status_name(id->status));
    bad |= json_field(&out, "did", id->did);
    bad |= json_field(&out, "handle", id->handle);
    bad |= json_field(&out, "handle_state", handle_state_name(id->handle_state));
    bad |= json_field(&out, "pds", id->pds);
    bad |= json_field(&out, "service",
                      service_id && id->doc ? did_doc_service(id->doc, service_id, NULL) : NULL);
    bad |= json_field(&out, "error", id->error);
    bad |= buf_printf(&out, ",\"elapsed_ms\":%.2f}\n", (double)(uv_hrtime() - a->start) / 1e6);
    if (bad) {
        fprintf(stderr, "resolve: out of memory\n");
        exit(2);
    }
    fwrite(out.data, 1, out.len, stdout);
    buf_free(&out);
    free(a);
    outstanding--;
}

struct shutdown {
    resolver *r;
    http_client *http;
};

static void on_cancel(uv_timer_t *t)
{
    struct shutdown *s = t->data;
    resolver_free(s->r);
    http_client_free(s->http);
    s->r = NULL;
}

int main(int argc, char **argv)
{
    resolver_options ro = {0};
    http_client_options ho = {0};
    const char *actors[MAX_ACTORS];
    int n_actors = 0, repeat = 1;
    long cancel_after = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_v = i + 1 < argc;
        if (!strcmp(a, "--allow-private")) {
            ro.allow_private = ho.allow_private = ho.allow_http = true;
        } else if (!strcmp(a, "--no-dns")) {
            ro.no_dns = true;
        } else if (!strcmp(a, "--no-well-known")) {
            ro.no_well_known = true;
        } else if (has_v && !strcmp(a, "--plc")) {
            ro.plc_url = argv[++i];
        } else if (has_v && !strcmp(a, "--handle-resolver")) {
            ro.handle_resolver_url = argv[++i];
        } else if (has_v && !strcmp(a, "--timeout-ms")) {
            ho.timeout_ms = atol(argv[++i]);
        } else if (has_v && !strcmp(a, "--repeat")) {
            repeat = atoi(argv[++i]);
        } else if (has_v && !strcmp(a, "--service")) {
            service_id = argv[++i];
        } else if (has_v && !strcmp(a, "--cancel-after-ms")) {
            cancel_after = atol(argv[++i]);
        } else if (a[0] != '-' && n_actors < MAX_ACTORS) {
            actors[n_actors++] = a;
        } else {
            fprintf(stderr, "usage: resolve [options] ACTOR...\n");
            return 2;
        }
    }
    ho.retry_base_ms = 50;
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) return 1;
    http_client *http = http_client_new(&loop, &ho);
    resolver *r = http ? resolver_new(&loop, http, &ro) : NULL;
    if (!r) return 1;
    for (int i = 0; i < n_actors; i++) {
        for (int k = 0; k < repeat; k++) {
            struct ask *a = calloc(1, sizeof *a);
            if (!a) return 1;
            a->actor = actors[i];
            a->start = uv_hrtime();
            if (resolver_resolve(r, actors[i], on_identity, a) != 0) {
                fprintf(stderr, "resolve: request refused\n");
                return 1;
            }
            outstanding++;
        }
    }
    struct shutdown s = {r, http};
    uv_timer_t cancel;
    uv_timer_init(&loop, &cancel);
    cancel.data = &s;
    if (cancel_after >= 0) uv_timer_start(&cancel, on_cancel, (uint64_t)cancel_after, 0);
    uv_unref((uv_handle_t *)&cancel);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (s.r) {
        printf("{\"summary\":true,\"fetches\":%lu,\"coalesced\":%lu}\n",
               resolver_upstream_fetches(r), resolver_coalesced(r));
        resolver_free(r);
        http_client_free(http);
    }
    uv_close((uv_handle_t *)&cancel, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop);
    metrics_free_all();
    if (rc != 0 || outstanding != 0) {
        fprintf(stderr, "resolve: loop_close=%d outstanding=%d\n", rc, outstanding);
        return 1;
    }
    return 0;
}
