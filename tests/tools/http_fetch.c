/* Drives atproto/http_client from the tests: fetches each URL (each --repeat times, all at
 * once) on one loop and prints one JSON line per result, in completion order:
 *   {"url","error","status","attempts","elapsed_ms","retry_after","len","error_text",
 *    "headers":{...--show-header names...},"body"}   (body only when --body)
 * Options: --allow-private --allow-http --timeout-ms N --connect-timeout-ms N --max-body N
 *          --max-per-host N --retry-base-ms N --attempts N --header "Name: v" --post DATA
 *          --repeat N --show-header NAME --body --cancel-after-ms N --trusted
 *          --urls FILE (more URLs, one a line, fetched like those given as arguments) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "atproto/buf.h"
#include "atproto/http_client.h"

#define MAX_LIST 16

static const char *show_headers[MAX_LIST];
static int n_show;
static int print_body;
static int outstanding;

static void on_done(const http_result *r, void *ud)
{
    buf out = {0};
    int bad = buf_puts(&out, "{\"url\":");
    bad |= buf_json_string(&out, r->url, strlen(r->url));
    bad |= buf_printf(&out,
                      ",\"error\":\"%s\",\"status\":%ld,\"attempts\":%d,\"elapsed_ms\":%.1f,"
                      "\"retry_after\":%ld,\"len\":%zu,\"error_text\":",
                      http_error_name(r->error), r->status, r->attempts, r->elapsed_ms,
                      r->retry_after, r->len);
    bad |= buf_json_string(&out, r->error_text, strlen(r->error_text));
    bad |= buf_puts(&out, ",\"headers\":{");
    int first = 1;
    for (int i = 0; i < n_show; i++) {
        const char *v = http_result_header(r, show_headers[i]);
        if (!v) continue;
        bad |= buf_puts(&out, first ? "" : ",");
        bad |= buf_json_string(&out, show_headers[i], strlen(show_headers[i]));
        bad |= buf_puts(&out, ":");
        bad |= buf_json_string(&out, v, strlen(v));
        first = 0;
    }
    bad |= buf_puts(&out, "}");
    if (print_body) {
        bad |= buf_puts(&out, ",\"body\":");
        bad |= buf_json_string(&out, r->body, r->len);
    }
    bad |= buf_puts(&out, "}\n");
    if (bad) {
        fprintf(stderr, "http_fetch: out of memory\n");
        exit(2);
    }
    fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    buf_free(&out);
    outstanding--;
}

static void on_cancel(uv_timer_t *t)
{
    http_client_free(t->data);
    t->data = NULL;
}

/* Appends a copy of url; -1 when out of memory. */
static int add_url(char ***urls, int *n, const char *url, size_t len)
{
    char **more = realloc(*urls, (size_t)(*n + 1) * sizeof *more);
    if (!more) return -1;
    *urls = more;
    return (more[*n] = strndup(url, len)) ? (*n)++, 0 : -1;
}

static int add_urls_of(char ***urls, int *n, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    if (!f) return -1;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        if (len) rc = add_url(urls, n, line, len);
    }
    fclose(f);
    return rc;
}

int main(int argc, char **argv)
{
    http_client_options opt = {0};
    http_request_options ropt = {0};
    const char *headers[MAX_LIST + 1] = {0};
    char **urls = NULL;
    int n_headers = 0, n_urls = 0, repeat = 1;
    const char *post = NULL;
    long cancel_after = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--allow-private")) {
            opt.allow_private = true;
        } else if (!strcmp(a, "--allow-http")) {
            opt.allow_http = true;
        } else if (!strcmp(a, "--body")) {
            print_body = 1;
        } else if (!strcmp(a, "--trusted")) {
            ropt.trusted = true;
        } else if (v && !strcmp(a, "--timeout-ms")) {
            opt.timeout_ms = atol(argv[++i]);
        } else if (v && !strcmp(a, "--connect-timeout-ms")) {
            opt.connect_timeout_ms = atol(argv[++i]);
        } else if (v && !strcmp(a, "--max-body")) {
            opt.max_body_bytes = strtoul(argv[++i], NULL, 10);
        } else if (v && !strcmp(a, "--max-per-host")) {
            opt.max_per_host = atoi(argv[++i]);
        } else if (v && !strcmp(a, "--retry-base-ms")) {
            opt.retry_base_ms = atol(argv[++i]);
        } else if (v && !strcmp(a, "--attempts")) {
            opt.max_attempts = atoi(argv[++i]);
        } else if (v && !strcmp(a, "--repeat")) {
            repeat = atoi(argv[++i]);
        } else if (v && !strcmp(a, "--post")) {
            post = argv[++i];
        } else if (v && !strcmp(a, "--cancel-after-ms")) {
            cancel_after = atol(argv[++i]);
        } else if (v && !strcmp(a, "--header") && n_headers < MAX_LIST) {
            headers[n_headers++] = argv[++i];
        } else if (v && !strcmp(a, "--show-header") && n_show < MAX_LIST) {
            show_headers[n_show++] = argv[++i];
        } else if (v && !strcmp(a, "--urls")) {
            if (add_urls_of(&urls, &n_urls, argv[++i]) < 0) {
                fprintf(stderr, "http_fetch: cannot read %s\n", argv[i]);
                return 2;
            }
        } else if (a[0] != '-') {
            if (add_url(&urls, &n_urls, a, strlen(a)) < 0) return 1;
        } else {
            fprintf(stderr, "usage: http_fetch [options] URL...\n");
            return 2;
        }
    }
    if (n_headers) ropt.headers = headers;
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) return 1;
    http_client *c = http_client_new(&loop, &opt);
    if (!c) return 1;
    for (int i = 0; i < n_urls; i++) {
        for (int k = 0; k < repeat; k++) {
            int rc = post ? http_post(c, urls[i], "application/json", post, strlen(post), &ropt,
                                      on_done, NULL)
                          : http_get(c, urls[i], &ropt, on_done, NULL);
            if (rc != 0) {
                fprintf(stderr, "http_fetch: request refused\n");
                return 1;
            }
            outstanding++;
        }
    }
    uv_timer_t cancel;
    uv_timer_init(&loop, &cancel);
    cancel.data = c;
    if (cancel_after >= 0) uv_timer_start(&cancel, on_cancel, (uint64_t)cancel_after, 0);
    uv_unref((uv_handle_t *)&cancel);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (cancel.data) http_client_free(c);
    uv_close((uv_handle_t *)&cancel, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < n_urls; i++)
        free(urls[i]);
    free(urls);
    int rc = uv_loop_close(&loop);
    if (rc != 0 || outstanding != 0) {
        fprintf(stderr, "http_fetch: loop_close=%d outstanding=%d\n", rc, outstanding);
        return 1;
    }
    return 0;
}
