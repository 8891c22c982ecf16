/* Tails Jetstream with the appview's client (appview/jetstream.c), for tests and benchmarks.
 *
 *   jetstream_tail --url U [--url U2 ...] [--collection C ...] [--cursor N] [--count N]
 *                  [--stall S] [--max-message B] [--out FILE] [--quiet] [--no-compress]
 *                  [--pause-after N --pause-ms MS]
 *
 * Prints each message (decompressed), one per line, on stdout (or FILE); --quiet only counts.
 * Resumes every reconnect just after the last message seen, read with the appview's own
 * event reader (appview/event.h, lexicons from ./lexicons): its seq + 1 when it has one (the
 * server replays inclusively), else its time_us + 1; before the first message from --cursor.
 * A cursor refused as too old resumes from the floor the server names. v2 streams are
 * dict-zstd compressed unless --no-compress. stderr gets "connected URL" and "disconnected"
 * lines, and at exit one line:
 *   messages=N bytes=B decompressed=D seconds=S events_per_s=R reconnects=N stalls=N
 *   oversize=N binary=N zstd_errors=N too_old=N
 * timed from the first message to the last. --pause-after N pauses reading for MS ms after N
 * messages (exercises jetstream_pause). Exits after --count messages or on SIGTERM/SIGINT. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "appview/event.h"
#include "appview/jetstream.h"
#include "atproto/http_client.h"
#include "atproto/log.h"
#include "atproto/metrics.h"

#define MAX_LIST 16

static struct {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t unpause;
    jetstream *js;
    lexicon_set *lexicons;
    json_doc doc;
    FILE *out;
    int quiet;
    uint64_t count, seen, pause_after, pause_ms, too_old;
    uint64_t cursor;
    uint64_t first_ns, last_ns;
} t;

static void on_unpause(uv_timer_t *timer)
{
    (void)timer;
    fprintf(stderr, "resumed\n");
    jetstream_pause(t.js, 0);
}

static void on_message(void *ud, jetstream_flavor flavor, const char *data, size_t len)
{
    (void)ud;
    if (t.count && t.seen >= t.count) return;
    event ev;
    if (event_parse(&ev, &t.doc, flavor, data, len, t.lexicons) == EVENT_ERROR) {
        fprintf(stderr, "error frame: %s\n", ev.name);
        jetstream_retry_later(t.js, ev.name);
        event_clear(&ev);
        return;
    }
    if (ev.seq || ev.time_us) t.cursor = ev.seq ? ev.seq + 1 : ev.time_us + 1;
    event_clear(&ev);
    if (!t.quiet) {
        fwrite(data, 1, len, t.out);
        fputc('\n', t.out);
    }
    t.last_ns = uv_hrtime();
    if (t.seen++ == 0) t.first_ns = t.last_ns;
    if (t.pause_after && t.seen == t.pause_after) {
        fprintf(stderr, "paused\n");
        jetstream_pause(t.js, 1);
        if (uv_timer_start(&t.unpause, on_unpause, t.pause_ms, 0)) jetstream_pause(t.js, 0);
    }
    if (t.count && t.seen == t.count) uv_stop(&t.loop);
}

static uint64_t cursor(void *ud, const char *url, jetstream_flavor flavor)
{
    (void)ud;
    (void)url;
    (void)flavor;
    return t.cursor;
}

static void on_too_old(void *ud, const char *url, uint64_t floor)
{
    (void)ud;
    t.too_old++;
    t.cursor = floor;
    fprintf(stderr, "too old at %s: floor %llu\n", url, (unsigned long long)floor);
}

static void on_state(void *ud, int connected)
{
    (void)ud;
    if (connected)
        fprintf(stderr, "connected %s\n", jetstream_url(t.js));
    else
        fprintf(stderr, "disconnected\n");
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    uv_stop(&t.loop);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    close_handle(h);
}

static int usage(void)
{
    fprintf(stderr, "usage: jetstream_tail --url U [--url U2 ...] [--collection C ...] "
                    "[--cursor N] [--count N]\n"
                    "         [--stall S] [--max-message B] [--out FILE] [--quiet] "
                    "[--no-compress] [--pause-after N --pause-ms MS]\n");
    return 2;
}

static uint64_t counter(const char *name)
{
    return *metrics_counter(name, "");
}

int main(int argc, char **argv)
{
    const char *urls[MAX_LIST], *colls[MAX_LIST], *out_path = NULL;
    jetstream_options opt = {.urls = urls, .collections = colls};
    uint64_t start_cursor = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quiet")) {
            t.quiet = 1;
            continue;
        }
        if (!strcmp(a, "--no-compress")) {
            opt.no_compression = 1;
            continue;
        }
        if (!v) return usage();
        i++;
        if (!strcmp(a, "--url") && opt.nurls < MAX_LIST)
            urls[opt.nurls++] = v;
        else if (!strcmp(a, "--collection") && opt.ncollections < MAX_LIST)
            colls[opt.ncollections++] = v;
        else if (!strcmp(a, "--cursor"))
            start_cursor = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--count"))
            t.count = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--stall"))
            opt.stall_seconds = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--max-message"))
            opt.max_message = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--out"))
            out_path = v;
        else if (!strcmp(a, "--pause-after"))
            t.pause_after = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--pause-ms"))
            t.pause_ms = strtoull(v, NULL, 10);
        else
            return usage();
    }
    if (!opt.nurls) return usage();
    t.cursor = start_cursor;
    t.out = stdout;
    if (out_path && !(t.out = fopen(out_path, "w"))) {
        perror(out_path);
        return 1;
    }
    log_init_from_env();
    char err[256];
    t.lexicons = lexicon_load_dir("lexicons", err, sizeof err);
    if (!t.lexicons) {
        fprintf(stderr, "jetstream_tail: lexicons: %s\n", err);
        return 1;
    }
    opt.on_message = on_message;
    opt.cursor = cursor;
    opt.on_state = on_state;
    opt.on_too_old = on_too_old;

    if (uv_loop_init(&t.loop)) return 1;
    if (uv_signal_init(&t.loop, &t.sigterm) || uv_signal_init(&t.loop, &t.sigint) ||
        uv_timer_init(&t.loop, &t.unpause) || uv_signal_start(&t.sigterm, on_signal, SIGTERM) ||
        uv_signal_start(&t.sigint, on_signal, SIGINT)) {
        fprintf(stderr, "jetstream_tail: cannot set up the loop\n");
        return 1;
    }
    int rc = 1;
    /* the dictionary lives on the Jetstream host the operator named: loopback too */
    http_client_options ho = {.allow_private = true, .allow_http = true};
    http_client *http = http_client_new(&t.loop, &ho);
    opt.http = http;
    t.js = http ? jetstream_new(&t.loop, &opt) : NULL;
    if (t.js) {
        jetstream_start(t.js);
        uv_run(&t.loop, UV_RUN_DEFAULT);
        jetstream_free(t.js);
        rc = t.count && t.seen < t.count;
    }
    if (http) http_client_free(http);
    uv_walk(&t.loop, walk_close, NULL);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(&t.loop);

    double secs = t.seen > 1 ? (double)(t.last_ns - t.first_ns) / 1e9 : 0;
    fprintf(
        stderr,
        "messages=%" PRIu64 " bytes=%" PRIu64 " decompressed=%" PRIu64
        " seconds=%.3f events_per_s=%.0f reconnects=%" PRIu64 " stalls=%" PRIu64
        " oversize=%" PRIu64 " binary=%" PRIu64 " zstd_errors=%" PRIu64 " too_old=%" PRIu64 "\n",
        t.seen, counter("appview_jetstream_bytes_total"),
        counter("appview_jetstream_decompressed_bytes_total"), secs,
        secs > 0 ? (double)(t.seen - 1) / secs : 0.0, counter("appview_jetstream_reconnects_total"),
        counter("appview_jetstream_stalls_total"), counter("appview_jetstream_oversize_total"),
        counter("appview_jetstream_binary_total"), counter("appview_jetstream_zstd_errors_total"),
        t.too_old);
    metrics_free_all();
    lexicon_free(t.lexicons);
    json_doc_free(&t.doc);
    if (fclose(t.out) || closed) {
        fprintf(stderr, "jetstream_tail: %s\n", closed ? "handles left open" : "write failed");
        rc = 1;
    }
    return rc;
}
