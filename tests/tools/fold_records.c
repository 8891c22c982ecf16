/* Folds records into a Valkey index the way the appview's loader does (appview/cas.h: the
 * fold's rules of appview/plan.h, as one compare-and-set), so tests seed an index through the
 * production write path rather than a copy of its rules. One JSON object a line on stdin:
 *   {"did", "collection", "rkey", "rev", "cid", "record"}   a create or update
 *   {"did", "collection", "rkey", "rev", "delete": true}    a delete
 * Each is validated against the lexicons (an invalid one fails the run) and folded in order.
 *   fold_records VALKEY_URL [LEXICON_DIR] [PREFIX]
 * VALKEY_URL may also be a Valkey Cluster's seed nodes, host:port,... (no "://").
 * Prints "folded N written M" and exits 0, or names the line that failed and exits 1. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "appview/cas.h"
#include "appview/event.h"
#include "appview/fold.h"
#include "atproto/lexicon.h"
#include "atproto/metrics.h"
#include "cache/client.h"

typedef struct {
    uv_loop_t *loop;
    cache_client *v;
    cas *c;
    lexicon_set *lex;
    json_t **lines;
    size_t n, next, written;
    int failed, started;
    uv_timer_t done; /* frees the connection outside its own callbacks */
} run;

static void fold_next(run *r);

static void on_done(uv_timer_t *t)
{
    run *r = t->data;
    cache_free(r->v);
    r->v = NULL;
    uv_close((uv_handle_t *)t, NULL);
}

static void finish(run *r, int failed)
{
    r->failed |= failed;
    uv_timer_start(&r->done, on_done, 0, 0);
}

static void on_folded(void *ud, int ok, size_t written)
{
    run *r = ud;
    if (!ok) {
        fprintf(stderr, "fold_records: line %zu could not be written\n", r->next);
        finish(r, 1);
        return;
    }
    r->written += written;
    fold_next(r);
}

static const char *str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void fold_next(run *r)
{
    if (r->next == r->n) {
        printf("folded %zu written %zu\n", r->n, r->written);
        finish(r, 0);
        return;
    }
    json_t *o = r->lines[r->next++];
    event ev = {.kind = EVENT_COMMIT,
                .did = str(o, "did"),
                .collection = str(o, "collection"),
                .rkey = str(o, "rkey"),
                .rev = str(o, "rev"),
                .is_delete = 1};
    if (!json_is_true(json_object_get(o, "delete")) &&
        event_from_record(&ev, ev.did, ev.collection, ev.rkey, ev.rev, str(o, "cid"),
                          json_object_get(o, "record"), r->lex) != EVENT_COMMIT) {
        fprintf(stderr, "fold_records: line %zu is not a valid record: %s\n", r->next, ev.reason);
        finish(r, 1);
        return;
    }
    if (!ev.did || !ev.collection || !ev.rkey || !ev.rev ||
        cas_fold(r->c, &ev, 1, on_folded, r) != 0) {
        fprintf(stderr, "fold_records: line %zu could not be sent\n", r->next);
        finish(r, 1);
    }
}

static void on_state(int up, void *ud)
{
    run *r = ud;
    if (up && !r->started) {
        r->started = 1;
        fold_next(r);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fold_records VALKEY_URL [LEXICON_DIR] [PREFIX]\n");
        return 2;
    }
    run r = {.loop = uv_default_loop()};
    char err[256];
    r.lex = lexicon_load_dir(argc > 2 ? argv[2] : "lexicons", err, sizeof err);
    if (!r.lex) {
        fprintf(stderr, "fold_records: lexicons: %s\n", err);
        return 2;
    }
    char line[1 << 20];
    size_t cap = 0;
    while (fgets(line, sizeof line, stdin)) {
        if (line[strspn(line, " \t\r\n")] == 0) continue;
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        if (!json_is_object(o)) {
            fprintf(stderr, "fold_records: line %zu: %s\n", r.n + 1, jerr.text);
            return 2;
        }
        if (r.n == cap) {
            cap = cap ? 2 * cap : 64;
            json_t **lines = realloc(r.lines, cap * sizeof *lines);
            if (!lines) return 2;
            r.lines = lines;
        }
        r.lines[r.n++] = o;
    }
    int seeds = !strstr(argv[1], "://");
    r.v = cache_new(r.loop, &(cache_options){.url = seeds ? NULL : argv[1],
                                             .cluster = seeds ? argv[1] : NULL,
                                             .on_state = on_state,
                                             .state_ud = &r});
    const char *prefix = argc > 3 ? argv[3] : "atcr:";
    /* The fold names P recent and its DIDs, as in the appview. */
    fold *f = r.v ? fold_new(r.v, &(fold_options){.prefix = prefix}) : NULL;
    r.c = f ? cas_new(r.v, &(cas_options){.prefix = prefix,
                                          .recent = fold_recent_key(f),
                                          .recent_index = fold_recent_index_key(f),
                                          .record_ttl = 3600})
            : NULL;
    if (!r.c) return 2;
    uv_timer_init(r.loop, &r.done);
    r.done.data = &r;
    cache_start(r.v);
    uv_run(r.loop, UV_RUN_DEFAULT);
    cas_free(r.c);
    fold_free(f);
    for (size_t i = 0; i < r.n; i++)
        json_decref(r.lines[i]);
    free(r.lines);
    lexicon_free(r.lex);
    metrics_free_all();
    uv_loop_close(r.loop);
    return r.failed;
}
