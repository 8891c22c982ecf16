#include "atproto/options.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "atproto/listener.h"
#include "atproto/log.h"
#include "atproto/redact.h"
#include "atproto/syntax.h"

#define HELP_COLUMN 34

static const char *metavar(option_kind kind)
{
    switch (kind) {
    case OPTION_INT:
        return " N";
    case OPTION_BOOL:
        return "[=BOOL]";
    case OPTION_LIST:
        return " A,B,...";
    case OPTION_STRING:
        break;
    }
    return " VALUE";
}

static void usage(const char *prog, const char *summary, const option_spec *specs, size_t n)
{
    printf("usage: %s [options]\n%s\n", prog, summary);
    printf("Every option can also be set by the environment variable shown under it;\n"
           "a flag wins over the environment, which wins over the default.\n");
    for (size_t i = 0; i < n; i++) {
        const option_spec *s = &specs[i];
        int w = printf("  --%s%s", s->flag, metavar(s->kind));
        printf("%*s%s\n", w < HELP_COLUMN ? HELP_COLUMN - w : 1, "", s->help);
        printf("%*senv %s", HELP_COLUMN, "", s->env);
        if (s->kind == OPTION_INT) printf(", %ld..%ld", s->min, s->max);
        if (s->dflt && *s->dflt) printf(", default %s", s->dflt);
        putchar('\n');
    }
    printf("  --help%*sthis text\n", HELP_COLUMN - 8, "");
    printf("  --version%*sthe version\n", HELP_COLUMN - 11, "");
}

static int reject(const char *prog, const option_spec *s, const char *value, const char *why)
{
    char shown[512];
    redact_url(value, shown, sizeof shown);
    if (s->secret)
        fprintf(stderr, "%s: bad value for --%s (%s), not shown: %s\n", prog, s->flag, s->env, why);
    else
        fprintf(stderr, "%s: bad value '%s' for --%s (%s): %s\n", prog, shown, s->flag, s->env,
                why);
    return -1;
}

static int add_item(option_value *v, const char *item, size_t len)
{
    char **p = realloc(v->items, (v->nitems + 1) * sizeof *p);
    if (!p) return -1;
    v->items = p;
    if (!(p[v->nitems] = strndup(item, len))) return -1;
    v->nitems++;
    return 0;
}

static int split_list(const char *prog, const option_spec *s, const char *text, option_value *v)
{
    for (const char *p = text;;) {
        size_t len = strcspn(p, ",");
        const char *start = p, *end = p + len;
        while (start < end && isspace((unsigned char)*start))
            start++;
        while (end > start && isspace((unsigned char)end[-1]))
            end--;
        /* ",," or a comma at either end is a slip (an unset variable pasted in a list), not a
         * request for fewer items: say so rather than guess. */
        if (end == start)
            return reject(prog, s, text,
                          "an empty item (two commas in a row, or a comma at an end); remove it");
        if (add_item(v, start, (size_t)(end - start)) < 0) {
            fprintf(stderr, "%s: out of memory\n", prog);
            return -1;
        }
        const char *why = s->check ? s->check(v->items[v->nitems - 1]) : NULL;
        if (why) return reject(prog, s, v->items[v->nitems - 1], why);
        if (!p[len]) return 0;
        p += len + 1;
    }
}

static int parse_bool(const char *text, long *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (!strcasecmp(text, yes[i]) || !strcasecmp(text, no[i])) {
            *out = !strcasecmp(text, yes[i]);
            return 0;
        }
    }
    return -1;
}

/* Turns the chosen text (flag, environment or default) into out's value for spec s. */
static int convert(const char *prog, const option_spec *s, const char *text, option_value *v)
{
    if (!text) return 0;
    const char *why = NULL;
    char *end;
    switch (s->kind) {
    case OPTION_STRING:
        if (s->check && (why = s->check(text))) return reject(prog, s, text, why);
        if (!(v->str = strdup(text))) {
            fprintf(stderr, "%s: out of memory\n", prog);
            return -1;
        }
        return 0;
    case OPTION_INT: {
        errno = 0;
        v->num = strtol(text, &end, 10);
        if (errno || end == text || *end || v->num < s->min || v->num > s->max) {
            char range[80];
            snprintf(range, sizeof range, "expected an integer in %ld..%ld", s->min, s->max);
            return reject(prog, s, text, range);
        }
        return 0;
    }
    case OPTION_BOOL:
        if (parse_bool(text, &v->num) < 0)
            return reject(prog, s, text, "expected 1/0, true/false, yes/no or on/off");
        return 0;
    case OPTION_LIST:
        return split_list(prog, s, text, v);
    }
    return -1;
}

/* Records in given[] the text of each flag on the command line; the last occurrence wins.
 * Returns 1 for --help, 2 for --version, 0 to go on, -1 after a message. */
static int scan_argv(const char *prog, const option_spec *specs, size_t n, const char **given,
                     int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return 1;
        if (!strcmp(arg, "--version")) return 2;
        if (strncmp(arg, "--", 2) || !arg[2]) {
            fprintf(stderr, "%s: unexpected argument '%s' (try --help)\n", prog, arg);
            return -1;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        size_t k = 0;
        while (k < n && (strlen(specs[k].flag) != len || strncmp(specs[k].flag, name, len)))
            k++;
        if (k == n) {
            fprintf(stderr, "%s: unknown option '%s' (try --help)\n", prog, arg);
            return -1;
        }
        if (eq) {
            given[k] = eq + 1;
        } else if (specs[k].kind == OPTION_BOOL) {
            given[k] = "true";
        } else if (i + 1 < argc) {
            given[k] = argv[++i];
        } else {
            fprintf(stderr, "%s: --%s needs a value (try --help)\n", prog, specs[k].flag);
            return -1;
        }
    }
    return 0;
}

int options_parse(const char *prog, const char *version, const char *summary,
                  const option_spec *specs, size_t n, option_value *out, int argc, char **argv)
{
    memset(out, 0, n * sizeof *out);
    const char **given = calloc(n ? n : 1, sizeof *given);
    if (!given) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return -1;
    }
    int rc = scan_argv(prog, specs, n, given, argc, argv);
    if (rc == 1) usage(prog, summary, specs, n);
    if (rc == 2) {
        printf("%s %s\n", prog, version);
        rc = 1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *env = getenv(specs[i].env);
        if (!given[i] && env && !*env && specs[i].dflt) {
            /* Set but empty: the operator meant something, and it may not be the default. */
            fprintf(stderr,
                    "%s: %s is set but empty (--%s): unset it to use the default '%s', or give "
                    "a value\n",
                    prog, specs[i].env, specs[i].flag, specs[i].dflt);
            rc = -1;
            break;
        }
        const char *text = given[i] ? given[i] : (env && *env) ? env : specs[i].dflt;
        rc = convert(prog, &specs[i], text, &out[i]);
    }
    free(given);
    if (rc != 0) options_free(out, n);
    return rc;
}

void options_free(option_value *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(out[i].str);
        for (size_t j = 0; j < out[i].nitems; j++)
            free(out[i].items[j]);
        free(out[i].items);
    }
    memset(out, 0, n * sizeof *out);
}

char *option_take_str(option_value *v)
{
    char *s = v->str;
    v->str = NULL;
    return s;
}

char **option_take_list(option_value *v, size_t *n)
{
    char **items = v->items;
    *n = v->nitems;
    v->items = NULL;
    v->nitems = 0;
    return items;
}

const char *options_check_host_port(const char *value)
{
    char host[1025];
    int port;
    return listener_split(value, host, sizeof host, &port) < 0
               ? "expected HOST:PORT, [IPv6]:PORT or :PORT with a port 0..65535"
               : NULL;
}

const char *options_check_log_level(const char *value)
{
    enum log_level level;
    return log_level_from_name(value, &level) < 0 ? "expected debug, info, warn or error" : NULL;
}

const char *options_check_did(const char *value)
{
    return atp_is_did(value, strlen(value)) ? NULL : "not a valid DID";
}
