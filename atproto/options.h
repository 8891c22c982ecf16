/* Command-line and environment configuration from one table of option specs, shared by both
 * services so flags, environment variables, --help and error messages behave the same.
 *
 * Each option is `--flag VALUE` or `--flag=VALUE`, or the environment variable `env`, or the
 * textual default; the first one present wins. An empty environment variable counts as unset
 * for an option without a default, and is an error for one with a default (the operator
 * meant something, maybe not the default). Booleans accept 1/0/true/false/yes/no/on/off, and a
 * bare `--flag` means true. Lists are comma-separated with whitespace trimmed; an empty item
 * (",,", a comma at an end) is an error. Values shown in errors have URL passwords masked. */
#ifndef ATPROTO_OPTIONS_H
#define ATPROTO_OPTIONS_H

#include <stddef.h>

typedef enum { OPTION_STRING, OPTION_INT, OPTION_BOOL, OPTION_LIST } option_kind;

/* Returns NULL when value is acceptable, else a short reason ("expected HOST:PORT"). For lists
 * it is called on each item. */
typedef const char *(*option_check)(const char *value);

typedef struct {
    const char *flag; /* long flag without the dashes: "listen" */
    const char *env;  /* "HOLD_LISTEN" */
    const char *dflt; /* parsed like a given value; NULL: unset */
    const char *help;
    option_kind kind;
    long min, max;      /* OPTION_INT range, inclusive */
    option_check check; /* may be NULL; applies to strings and list items */
    int secret;         /* never shown: errors name the option, not the value */
} option_spec;

/* Table rows without the fields a kind does not use. */
#define OPT_STR(flag, env, dflt, help, check)                                                      \
    {                                                                                              \
        flag, env, dflt, help, OPTION_STRING, 0, 0, check, 0                                       \
    }
#define OPT_INT(flag, env, dflt, help, min, max)                                                   \
    {                                                                                              \
        flag, env, dflt, help, OPTION_INT, min, max, NULL, 0                                       \
    }
#define OPT_BOOL(flag, env, dflt, help)                                                            \
    {                                                                                              \
        flag, env, dflt, help, OPTION_BOOL, 0, 0, NULL, 0                                          \
    }
#define OPT_LIST(flag, env, dflt, help, check)                                                     \
    {                                                                                              \
        flag, env, dflt, help, OPTION_LIST, 0, 0, check, 0                                         \
    }
#define OPT_SECRET_LIST(flag, env, help, check)                                                    \
    {                                                                                              \
        flag, env, NULL, help, OPTION_LIST, 0, 0, check, 1                                         \
    }

typedef struct {
    char *str;    /* OPTION_STRING; NULL when unset */
    long num;     /* OPTION_INT, and OPTION_BOOL as 0/1 */
    char **items; /* OPTION_LIST */
    size_t nitems;
} option_value;

/* Fills out[0..n) (one per spec) and returns 0; returns 1 after printing the usage on stdout for
 * --help or -h, or "PROG VERSION" for --version; returns -1 after one message on stderr naming
 * the flag, the variable and the bad value. On 1 and -1 out holds nothing to free. Otherwise
 * the caller owns out's strings (it may take any of them and leave NULL behind) and releases
 * the rest with options_free. */
int options_parse(const char *prog, const char *version, const char *summary,
                  const option_spec *specs, size_t n, option_value *out, int argc, char **argv);
void options_free(option_value *out, size_t n);

/* Move a string or a list out of v, leaving v empty, for configs that keep their own fields. */
char *option_take_str(option_value *v);
char **option_take_list(option_value *v, size_t *n);

/* A checker for listen addresses (atproto/listener.h): "HOST:PORT", "[IPv6]:PORT" or ":PORT". */
const char *options_check_host_port(const char *value);

/* A checker for LOG_LEVEL values (log_level_from_name). */
const char *options_check_log_level(const char *value);

/* A checker for DIDs (atp_is_did). */
const char *options_check_did(const char *value);

#endif
