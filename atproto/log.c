#include <uv.h> /* before libwebsockets.h, so lws sees libuv's types */

#include "atproto/log.h"

#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum log_level min_level = LOG_INFO;
static void (*before_line)(void);

void log_set_before_line(void (*fn)(void))
{
    before_line = fn;
}

void log_set_level(enum log_level level)
{
    min_level = level;
}

int log_level_from_name(const char *name, enum log_level *level)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
        if (!strcmp(name, names[i])) {
            *level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_init_from_env(void)
{
    const char *v = getenv("LOG_LEVEL");
    if (v) log_level_from_name(v, &min_level);
}

/* One line; with skipped, how many like it were left out before it. */
__attribute__((format(printf, 4, 0))) static void
log_line(enum log_level level, const char *component, unsigned skipped, const char *fmt, va_list ap)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    /* Build the whole line first so concurrent writers never interleave inside a line. */
    char line[2048];
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[level], component);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    /* A message from the network may carry newlines: keep it one line. */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    if (skipped) {
        m = snprintf(line + len, sizeof line - len - 1, " (and %u more like it)", skipped);
        len += m < 0 ? 0 : (size_t)m;
        if (len > sizeof line - 2) len = sizeof line - 2;
    }
    line[len++] = '\n';
    if (before_line) before_line();
    fwrite(line, 1, len, stderr);
}

void log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
    if (level < min_level) return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, component, 0, fmt, ap);
    va_end(ap);
}

void log_limited(log_limit *l, enum log_level level, const char *component, const char *fmt, ...)
{
    if (level < min_level) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (l->said_ms && now - l->said_ms < LOG_LIMIT_MS) {
        l->skipped++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    log_line(level, component, l->skipped, fmt, ap);
    va_end(ap);
    l->said_ms = now;
    l->skipped = 0;
}

static void lws_log_to_ours(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    log_msg(level == LLL_ERR ? LOG_ERROR : LOG_WARN, "lws", "%.*s", (int)n, line);
}

void log_capture_lws(void)
{
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_ours);
}
