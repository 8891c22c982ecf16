/* atproto/options: precedence flag > env > default, ints, bools, lists, --help, errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atproto/options.h"
#include "tests/unit/capture.h"
#include "tests/unit/check.h"

static const char *no_x(const char *v)
{
    return strchr(v, 'x') ? "no x allowed" : NULL;
}

enum { NAME, PORT, DEBUG, TAGS, PLAIN, KEYS, COUNT };

static const option_spec SPECS[COUNT] = {
    [NAME] = OPT_STR("name", "TOPT_NAME", "dflt", "a name", no_x),
    [PORT] = OPT_INT("port", "TOPT_PORT", "80", "a port", 1, 65535),
    [DEBUG] = OPT_BOOL("debug", "TOPT_DEBUG", "off", "chatty"),
    [TAGS] = OPT_LIST("tags", "TOPT_TAGS", "a,b", "some tags", no_x),
    [PLAIN] = OPT_STR("plain", "TOPT_PLAIN", NULL, "unset unless given", NULL),
    [KEYS] = OPT_SECRET_LIST("keys", "TOPT_KEYS", "secret keys", no_x),
};

static void clear_env(void)
{
    for (size_t i = 0; i < COUNT; i++)
        unsetenv(SPECS[i].env);
}

/* Runs options_parse with stream (stdout or stderr) redirected into text. */
static int parse_capturing(FILE *stream, char *text, size_t cap, option_value *out, int argc,
                           char **argv)
{
    capture c;
    if (capture_start(&c, stream) < 0) return -2;
    int rc = options_parse("prog", "1.2.3", "Does things.", SPECS, COUNT, out, argc, argv);
    capture_end(&c, text, cap);
    return rc;
}

static int parse(option_value *out, int argc, char **argv)
{
    char err[1024];
    return parse_capturing(stderr, err, sizeof err, out, argc, argv);
}

static void test_defaults(void)
{
    clear_env();
    option_value v[COUNT];
    char *argv[] = {"prog", NULL};
    CHECK(parse(v, 1, argv) == 0);
    CHECK(v[NAME].str && !strcmp(v[NAME].str, "dflt"));
    CHECK(v[PORT].num == 80);
    CHECK(v[DEBUG].num == 0);
    CHECK(v[TAGS].nitems == 2 && !strcmp(v[TAGS].items[0], "a") && !strcmp(v[TAGS].items[1], "b"));
    CHECK(v[PLAIN].str == NULL);
    options_free(v, COUNT);
}

static void test_precedence_flag_env_default(void)
{
    clear_env();
    setenv("TOPT_NAME", "fromenv", 1);
    setenv("TOPT_PORT", "8080", 1);
    setenv("TOPT_PLAIN", "", 1); /* empty counts as unset for an option without a default */
    option_value v[COUNT];
    char *argv[] = {"prog", "--port", "9000", "--port=9001", NULL};
    CHECK(parse(v, 4, argv) == 0);
    CHECK(v[NAME].str && !strcmp(v[NAME].str, "fromenv"));
    CHECK(v[PORT].num == 9001); /* the last flag wins over earlier ones and the environment */
    CHECK(v[PLAIN].str == NULL);
    CHECK(v[TAGS].nitems == 2);
    options_free(v, COUNT);
    char *plain[] = {"prog", "--plain=a=b", NULL};
    CHECK(parse(v, 2, plain) == 0 && v[PLAIN].str && !strcmp(v[PLAIN].str, "a=b"));
    options_free(v, COUNT);

    /* Empty for an option with a default: the operator meant something, maybe not the
     * default. */
    setenv("TOPT_TAGS", "", 1);
    char err[1024];
    char *none[] = {"prog", NULL};
    CHECK(parse_capturing(stderr, err, sizeof err, v, 1, none) == -1);
    CHECK(strstr(err, "TOPT_TAGS is set but empty (--tags): unset it to use the default 'a,b'"));
    unsetenv("TOPT_TAGS");
    CHECK(v[NAME].str == NULL && v[TAGS].items == NULL);

    char *argv2[] = {"prog", "--name", "", NULL};
    CHECK(parse(v, 3, argv2) == 0);
    CHECK(v[NAME].str && !strcmp(v[NAME].str, "")); /* an explicit empty flag is a value */
    options_free(v, COUNT);
    clear_env();
}

static void test_bad_ints(void)
{
    clear_env();
    const char *bad[] = {"", "12x", "0", "65536", "-1", " 5x", "99999999999999999999999", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("TOPT_PORT", bad[i], 1);
        option_value v[COUNT];
        char *argv[] = {"prog", "--port", (char *)bad[i], NULL};
        char err[1024];
        CHECK(parse_capturing(stderr, err, sizeof err, v, 3, argv) == -1);
        CHECK(strstr(err, "--port") && strstr(err, "TOPT_PORT") && strstr(err, "1..65535"));
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        CHECK(strstr(err, quoted) != NULL);
        CHECK(v[NAME].str == NULL); /* nothing left to free on error */
        if (bad[i][0]) {
            char *argv2[] = {"prog", NULL};
            CHECK(parse(v, 1, argv2) == -1); /* the same value from the environment */
        }
    }
    setenv("TOPT_PORT", "65535", 1);
    option_value v[COUNT];
    char *argv[] = {"prog", NULL};
    CHECK(parse(v, 1, argv) == 0 && v[PORT].num == 65535);
    options_free(v, COUNT);
    clear_env();
}

static void test_bools(void)
{
    clear_env();
    const char *yes[] = {"1", "true", "yes", "on", "TRUE", "On"};
    const char *no[] = {"0", "false", "no", "off", "NO"};
    option_value v[COUNT];
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        setenv("TOPT_DEBUG", yes[i], 1);
        char *argv[] = {"prog", NULL};
        CHECK(parse(v, 1, argv) == 0 && v[DEBUG].num == 1);
        options_free(v, COUNT);
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        setenv("TOPT_DEBUG", "on", 1);
        char flag[32];
        snprintf(flag, sizeof flag, "--debug=%s", no[i]);
        char *argv[] = {"prog", flag, NULL};
        CHECK(parse(v, 2, argv) == 0 && v[DEBUG].num == 0);
        options_free(v, COUNT);
    }
    unsetenv("TOPT_DEBUG");
    char *bare[] = {"prog", "--debug", NULL};
    CHECK(parse(v, 2, bare) == 0 && v[DEBUG].num == 1);
    options_free(v, COUNT);
    /* A bare bool does not swallow the next word: it is then an unexpected argument. */
    char *spaced[] = {"prog", "--debug", "off", NULL};
    CHECK(parse(v, 3, spaced) == -1);
    setenv("TOPT_DEBUG", "maybe", 1);
    char err[1024];
    char *argv[] = {"prog", NULL};
    CHECK(parse_capturing(stderr, err, sizeof err, v, 1, argv) == -1);
    CHECK(strstr(err, "'maybe'") && strstr(err, "TOPT_DEBUG") && strstr(err, "--debug"));
    clear_env();
}

static void test_lists(void)
{
    clear_env();
    option_value v[COUNT];
    setenv("TOPT_TAGS", " one ,\ttwo, three ", 1);
    char *argv[] = {"prog", NULL};
    CHECK(parse(v, 1, argv) == 0);
    CHECK(v[TAGS].nitems == 3);
    if (v[TAGS].nitems == 3) {
        CHECK(!strcmp(v[TAGS].items[0], "one"));
        CHECK(!strcmp(v[TAGS].items[1], "two"));
        CHECK(!strcmp(v[TAGS].items[2], "three"));
    }
    size_t n = 0;
    char **items = option_take_list(&v[TAGS], &n);
    CHECK(n == 3 && v[TAGS].items == NULL && v[TAGS].nitems == 0);
    char *name = option_take_str(&v[NAME]);
    CHECK(name && !strcmp(name, "dflt") && v[NAME].str == NULL);
    options_free(v, COUNT);
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
    free(name);

    /* An empty item is a slip (an unset variable pasted into the list): an error. */
    char err[1024];
    const char *slips[] = {" , ", "a,,b", "a,", ",a", "a, ,b", ""};
    for (size_t i = 0; i < sizeof slips / sizeof *slips; i++) {
        char *empty[] = {"prog", "--tags", (char *)slips[i], NULL};
        CHECK(parse_capturing(stderr, err, sizeof err, v, 3, empty) == -1);
        CHECK(strstr(err, "an empty item") && strstr(err, "TOPT_TAGS"));
        CHECK(v[TAGS].items == NULL);
    }

    char *bad[] = {"prog", "--tags", "ok, box ,fine", NULL};
    CHECK(parse_capturing(stderr, err, sizeof err, v, 3, bad) == -1);
    CHECK(strstr(err, "'box'") && strstr(err, "no x allowed") && strstr(err, "TOPT_TAGS"));
    char *badstr[] = {"prog", "--name=xx", NULL};
    CHECK(parse(v, 2, badstr) == -1);
    clear_env();
}

static void test_help_mentions_env_and_defaults(void)
{
    clear_env();
    option_value v[COUNT];
    char out[4096];
    char *argv[] = {"prog", "--port", "1", "--help", "--bogus", NULL};
    CHECK(parse_capturing(stdout, out, sizeof out, v, 5, argv) == 1);
    CHECK(strstr(out, "usage: prog") && strstr(out, "Does things."));
    for (size_t i = 0; i < COUNT; i++) {
        char flag[32];
        snprintf(flag, sizeof flag, "--%s", SPECS[i].flag);
        CHECK(strstr(out, flag) && strstr(out, SPECS[i].env) && strstr(out, SPECS[i].help));
    }
    CHECK(strstr(out, "default 80") && strstr(out, "1..65535") && strstr(out, "default a,b"));
    CHECK(v[NAME].str == NULL);
    char *shorth[] = {"prog", "-h", NULL};
    CHECK(parse_capturing(stdout, out, sizeof out, v, 2, shorth) == 1);
    CHECK(strstr(out, "--version") != NULL);
}

static void test_version(void)
{
    clear_env();
    setenv("TOPT_PORT", "not a port", 1); /* --version answers before values are checked */
    option_value v[COUNT];
    char out[256];
    char *argv[] = {"prog", "--version", NULL};
    CHECK(parse_capturing(stdout, out, sizeof out, v, 2, argv) == 1);
    CHECK(!strcmp(out, "prog 1.2.3\n"));
    CHECK(v[NAME].str == NULL);
    clear_env();
}

static void test_secrets_masked_in_errors(void)
{
    clear_env();
    option_value v[COUNT];
    char err[1024];
    char *argv[] = {"prog", "--name", "redis://:hunter2x@host:1/0", NULL};
    CHECK(parse_capturing(stderr, err, sizeof err, v, 3, argv) == -1);
    CHECK(strstr(err, "'redis://:***@host:1/0'") && !strstr(err, "hunter2"));
    char *keys[] = {"prog", "--keys", "k3y-one,,k3y-two", NULL};
    CHECK(parse_capturing(stderr, err, sizeof err, v, 3, keys) == -1);
    CHECK(strstr(err, "--keys (TOPT_KEYS), not shown: an empty item") && !strstr(err, "k3y"));
    char *keyx[] = {"prog", "--keys", "k3y-one,k3y-x", NULL};
    CHECK(parse_capturing(stderr, err, sizeof err, v, 3, keyx) == -1);
    CHECK(strstr(err, "no x allowed") && !strstr(err, "k3y"));
}

static void test_check_log_level(void)
{
    const char *good[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CHECK(options_check_log_level(good[i]) == NULL);
    const char *bad[] = {"verbose", "INFO", "", "warning", "2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(options_check_log_level(bad[i]) != NULL);
}

static void test_unknown_and_malformed_arguments(void)
{
    clear_env();
    option_value v[COUNT];
    char err[1024];
    char *unknown[] = {"prog", "--nam", "x", NULL};
    CHECK(parse_capturing(stderr, err, sizeof err, v, 3, unknown) == -1);
    CHECK(strstr(err, "unknown option '--nam'") != NULL);
    char *missing[] = {"prog", "--port", NULL};
    CHECK(parse_capturing(stderr, err, sizeof err, v, 2, missing) == -1);
    CHECK(strstr(err, "--port needs a value") != NULL);
    char *positional[] = {"prog", "stray", NULL};
    CHECK(parse_capturing(stderr, err, sizeof err, v, 2, positional) == -1);
    CHECK(strstr(err, "'stray'") != NULL);
    char *dashes[] = {"prog", "--", NULL};
    CHECK(parse(v, 2, dashes) == -1);
    char *single[] = {"prog", "-port", "1", NULL};
    CHECK(parse(v, 3, single) == -1);
}

static void test_check_host_port(void)
{
    const char *good[] = {"0.0.0.0:8080", "127.0.0.1:0", ":9",
                          "[::1]:65535",  "localhost:1", "[::]:80"};
    const char *bad[] = {"8080",  "host:",  "host:65536", "host:12a", "::1:80",        "[::1:80",
                         "[]:80", "a b:80", "h/x:80",     "host:-1",  "host:000000080"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CHECK(options_check_host_port(good[i]) == NULL);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(options_check_host_port(bad[i]) != NULL);
}

static void test_check_did(void)
{
    CHECK(options_check_did("did:plc:abcdefghijklmnopqrstuvwx") == NULL);
    CHECK(options_check_did("did:web:hold.example.com") == NULL);
    CHECK(options_check_did("did:") != NULL);
    CHECK(options_check_did("plc:abc") != NULL);
    CHECK(options_check_did("") != NULL);
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_precedence_flag_env_default);
    RUN(test_bad_ints);
    RUN(test_bools);
    RUN(test_lists);
    RUN(test_help_mentions_env_and_defaults);
    RUN(test_unknown_and_malformed_arguments);
    RUN(test_check_host_port);
    RUN(test_version);
    RUN(test_secrets_masked_in_errors);
    RUN(test_check_log_level);
    RUN(test_check_did);
    CHECK_EXIT();
}
