/* One line per event on stderr: "2026-11-22T11:50:00.123Z LEVEL component: message". */
#ifndef ATPROTO_LOG_H
#define ATPROTO_LOG_H

#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Messages below this level are not printed; default LOG_INFO, or LOG_LEVEL=debug|info|warn|error.
 */
void log_set_level(enum log_level level);
/* "debug", "info", "warn" or "error" into *level: 0, or -1 for any other name. */
int log_level_from_name(const char *name, enum log_level *level);
/* LOG_LEVEL, for tools without options (the services take it as an option, which checks it). */
void log_init_from_env(void);
/* Called before each line is written, e.g. to clear a progress bar drawn on the same terminal;
 * NULL for none. */
void log_set_before_line(void (*fn)(void));

__attribute__((format(printf, 3, 4))) void log_msg(enum log_level level, const char *component,
                                                   const char *fmt, ...);

/* For an event strangers can repeat at will (a refused request): at most one line every
 * LOG_LIMIT_MS per log_limit, which the caller keeps zeroed per kind of event; the next line
 * says how many were left out. An attack must not flood the log. */
#define LOG_LIMIT_MS 10000
typedef struct {
    uint64_t said_ms; /* monotonic ms of the last line; 0: never */
    unsigned skipped;
} log_limit;
__attribute__((format(printf, 4, 5))) void log_limited(log_limit *l, enum log_level level,
                                                       const char *component, const char *fmt, ...);

/* Sends libwebsockets' errors and warnings to log_msg as component "lws" (its trailing line
 * break dropped); every user of libwebsockets calls this before creating a context. */
void log_capture_lws(void);

#define log_debug(c, ...) log_msg(LOG_DEBUG, c, __VA_ARGS__)
#define log_info(c, ...) log_msg(LOG_INFO, c, __VA_ARGS__)
#define log_warn(c, ...) log_msg(LOG_WARN, c, __VA_ARGS__)
#define log_error(c, ...) log_msg(LOG_ERROR, c, __VA_ARGS__)

#endif
