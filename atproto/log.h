/* One line per event on stderr: "2026-11-22T11:50:00.123Z LEVEL component: message". */
#ifndef ATPROTO_LOG_H
#define ATPROTO_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Messages below this level are not printed; default LOG_INFO, or LOG_LEVEL=debug|info|warn|error.
 */
void log_set_level(enum log_level level);
/* Returns 1 when LOG_LEVEL named a level (the operator chose one), else 0. */
int log_init_from_env(void);
/* Called before each line is written, e.g. to clear a progress bar drawn on the same terminal;
 * NULL for none. */
void log_set_before_line(void (*fn)(void));

__attribute__((format(printf, 3, 4))) void log_msg(enum log_level level, const char *component,
                                                   const char *fmt, ...);

/* Sends libwebsockets' errors and warnings to log_msg as component "lws" (its trailing line
 * break dropped); every user of libwebsockets calls this before creating a context. */
void log_capture_lws(void);

#define log_debug(c, ...) log_msg(LOG_DEBUG, c, __VA_ARGS__)
#define log_info(c, ...) log_msg(LOG_INFO, c, __VA_ARGS__)
#define log_warn(c, ...) log_msg(LOG_WARN, c, __VA_ARGS__)
#define log_error(c, ...) log_msg(LOG_ERROR, c, __VA_ARGS__)

#endif
