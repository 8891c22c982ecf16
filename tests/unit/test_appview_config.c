/* appview/config: defaults from DESIGN.md, environment and flag overrides, invalid values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "appview/config.h"
#include "tests/unit/capture.h"
#include "tests/unit/check.h"

static const char *const ENV[] = {
    "APPVIEW_LISTEN",
    "APPVIEW_VALKEY_URL",
    "APPVIEW_JETSTREAM_URLS",
    "APPVIEW_PLC_URL",
    "APPVIEW_HANDLE_RESOLVER_URL",
    "APPVIEW_DATA_DIR",
    "APPVIEW_DOCKERHUB_URL",
    "APPVIEW_DOCKERHUB_MAP",
    "APPVIEW_DOCKERHUB_RATE",
    "APPVIEW_DOCKERHUB_RATE_WINDOW",
    "APPVIEW_DOCKERHUB_REFRESH_HOURS",
    "APPVIEW_HOLDS",
    "APPVIEW_STATS_CONCURRENCY",
    "APPVIEW_ALLOW_PRIVATE_NETWORKS",
    "APPVIEW_RECORD_TTL",
    "APPVIEW_IDENTITY_TTL",
    "APPVIEW_STATS_TTL",
    "APPVIEW_NEGATIVE_TTL",
    "APPVIEW_KEY_PREFIX",
    "APPVIEW_LEXICON_DIR",
    "APPVIEW_JETSTREAM_STALL_SECONDS",
    "APPVIEW_CURSOR_REWIND_SECONDS",
    "APPVIEW_INGEST",
    "APPVIEW_UPSTREAM_TIMEOUT_MS",
    "APPVIEW_VALKEY_CLUSTER",
    "APPVIEW_VALKEY_WAIT_REPLICAS",
    "APPVIEW_VALKEY_WAIT_TIMEOUT_MS",
    "LOG_LEVEL",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof ENV / sizeof *ENV; i++)
        unsetenv(ENV[i]);
}

static int streq(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

/* Loads with stdout and stderr sent to /dev/null (errors and --help are expected here). */
static int load_quietly(appview_config *c, int argc, char **argv)
{
    fflush(stdout);
    fflush(stderr);
    int out = dup(1), err = dup(2);
    FILE *null = fopen("/dev/null", "w");
    CHECK(null && out >= 0 && err >= 0);
    if (!null) return -2;
    CHECK(dup2(fileno(null), 1) == 1 && dup2(fileno(null), 2) == 2);
    int rc = appview_config_load(c, argc, argv);
    fflush(stdout);
    fflush(stderr);
    CHECK(dup2(out, 1) == 1 && dup2(err, 2) == 2);
    close(out);
    close(err);
    fclose(null);
    return rc;
}

static void test_defaults(void)
{
    clear_env();
    appview_config c;
    char *argv[] = {"appview", NULL};
    CHECK(appview_config_load(&c, 1, argv) == 0);
    CHECK(streq(c.listen, "0.0.0.0:8080"));
    CHECK(streq(c.valkey_url, "redis://127.0.0.1:6379/0"));
    CHECK(c.njetstream_urls == 4);
    if (c.njetstream_urls == 4) {
        CHECK(streq(c.jetstream_urls[0], "wss://jetstream1.us-east.bsky.network/subscribe"));
        CHECK(streq(c.jetstream_urls[1], "wss://jetstream2.us-east.bsky.network/subscribe"));
        CHECK(streq(c.jetstream_urls[2], "wss://jetstream1.us-west.bsky.network/subscribe"));
        CHECK(streq(c.jetstream_urls[3], "wss://jetstream2.us-west.bsky.network/subscribe"));
    }
    CHECK(streq(c.plc_url, "https://plc.directory"));
    CHECK(c.handle_resolver_url == NULL);
    CHECK(streq(c.data_dir, "./var/appview"));
    CHECK(streq(c.dockerhub_url, "https://hub.docker.com"));
    CHECK(c.dockerhub_map == NULL);
    CHECK(c.dockerhub_rate == 180 && c.dockerhub_rate_window == 60);
    CHECK(c.dockerhub_refresh_hours == 24);
    CHECK(c.nholds == 0 && c.holds == NULL);
    CHECK(c.stats_concurrency == 8);
    CHECK(!c.allow_private_networks);
    CHECK(c.record_ttl == 3600 && c.identity_ttl == 3600);
    CHECK(c.stats_ttl == 300 && c.negative_ttl == 60);
    CHECK(streq(c.key_prefix, "atcr:"));
    CHECK(streq(c.lexicon_dir, "./lexicons"));
    CHECK(c.jetstream_stall_seconds == 30 && c.cursor_rewind_seconds == 5);
    CHECK(c.ingest);
    CHECK(c.upstream_timeout_ms == 10000);
    appview_config_free(&c);
    CHECK(c.listen == NULL && c.jetstream_urls == NULL);
}

static void test_env_and_flag_overrides(void)
{
    clear_env();
    setenv("APPVIEW_LISTEN", "127.0.0.1:9999", 1);
    setenv("APPVIEW_VALKEY_URL", "unix:///run/valkey.sock", 1);
    setenv("APPVIEW_JETSTREAM_URLS",
           "ws://127.0.0.1:6008/subscribe, "
           "ws://127.0.0.1:6009/xrpc/network.bsky.jetstream.subscribeEvents",
           1);
    setenv("APPVIEW_HOLDS", "did:web:hold.example.com,did:plc:abc234567", 1);
    setenv("APPVIEW_ALLOW_PRIVATE_NETWORKS", "yes", 1);
    setenv("APPVIEW_INGEST", "off", 1);
    setenv("APPVIEW_RECORD_TTL", "10", 1);
    setenv("APPVIEW_KEY_PREFIX", "test:", 1);
    setenv("APPVIEW_HANDLE_RESOLVER_URL", "http://127.0.0.1:2583", 1);
    setenv("APPVIEW_DOCKERHUB_MAP", "/etc/atcr/hub.map", 1);
    char *argv[] = {"appview",
                    "--listen",
                    ":0",
                    "--record-ttl=20",
                    "--stats-concurrency",
                    "2",
                    "--ingest",
                    "--upstream-timeout-ms",
                    "500",
                    NULL};
    appview_config c;
    CHECK(appview_config_load(&c, 9, argv) == 0);
    CHECK(streq(c.listen, ":0"));
    CHECK(streq(c.valkey_url, "unix:///run/valkey.sock"));
    CHECK(c.njetstream_urls == 2);
    if (c.njetstream_urls == 2)
        CHECK(streq(c.jetstream_urls[1],
                    "ws://127.0.0.1:6009/xrpc/network.bsky.jetstream.subscribeEvents"));
    CHECK(c.nholds == 2);
    if (c.nholds == 2)
        CHECK(streq(c.holds[0], "did:web:hold.example.com") &&
              streq(c.holds[1], "did:plc:abc234567"));
    CHECK(c.allow_private_networks);
    CHECK(c.ingest); /* the bare flag beats APPVIEW_INGEST=off */
    CHECK(c.record_ttl == 20 && c.stats_concurrency == 2 && c.upstream_timeout_ms == 500);
    CHECK(streq(c.key_prefix, "test:"));
    CHECK(streq(c.handle_resolver_url, "http://127.0.0.1:2583"));
    CHECK(streq(c.dockerhub_map, "/etc/atcr/hub.map"));
    appview_config_free(&c);
    clear_env();
}

static void test_invalid_values_rejected(void)
{
    static const char *const bad[][2] = {
        {"APPVIEW_LISTEN", "8080"},
        {"APPVIEW_LISTEN", "host:99999"},
        {"APPVIEW_VALKEY_URL", "http://127.0.0.1:6379"},
        {"APPVIEW_VALKEY_URL", "redis://"},
        {"APPVIEW_VALKEY_URL", "unix://relative.sock"},
        {"APPVIEW_JETSTREAM_URLS", "wss://ok.example/subscribe,https://jetstream.example"},
        {"APPVIEW_JETSTREAM_URLS", ","},
        {"APPVIEW_JETSTREAM_URLS", "ws://127.0.0.1:6008/subscribe,"},
        {"APPVIEW_JETSTREAM_URLS", "ws://a.example/subscribe,,ws://b.example/subscribe"},
        {"APPVIEW_JETSTREAM_URLS", "ws://127.0.0.1:99999/subscribe"},
        {"APPVIEW_JETSTREAM_URLS", "ws://127.0.0.1:0/subscribe"},
        {"APPVIEW_JETSTREAM_URLS", "ws://127.0.0.1:80x/subscribe"},
        {"APPVIEW_JETSTREAM_URLS", "ws://:80/subscribe"},
        {"APPVIEW_JETSTREAM_URLS", "ws://[::1/subscribe"},
        {"APPVIEW_JETSTREAM_URLS", "wss://jetstream.example/subscrib"},
        {"APPVIEW_JETSTREAM_URLS", "wss://jetstream.example/"},
        {"APPVIEW_JETSTREAM_URLS", "wss://jetstream.example"},
        {"APPVIEW_JETSTREAM_URLS", "wss://jetstream.example/subscribe#x"},
        {"APPVIEW_VALKEY_URL", "redis://127.0.0.1:99999/0"},
        {"APPVIEW_VALKEY_URL", "redis://127.0.0.1:6379/zero"},
        {"APPVIEW_VALKEY_URL", "redis://:pw@/0"},
        {"APPVIEW_PLC_URL", "https://plc.directory:0"},
        {"LOG_LEVEL", "verbose"},
        {"APPVIEW_PLC_URL", "plc.directory"},
        {"APPVIEW_DOCKERHUB_URL", "ftp://hub"},
        {"APPVIEW_HANDLE_RESOLVER_URL", "https://has space"},
        {"APPVIEW_HOLDS", "did:web:ok.example,not-a-did"},
        {"APPVIEW_ALLOW_PRIVATE_NETWORKS", "sometimes"},
        {"APPVIEW_INGEST", "2"},
        {"APPVIEW_RECORD_TTL", "0"},
        {"APPVIEW_STATS_TTL", "5m"},
        {"APPVIEW_NEGATIVE_TTL", "-1"},
        {"APPVIEW_STATS_CONCURRENCY", "0"},
        {"APPVIEW_DOCKERHUB_RATE", "abc"},
        {"APPVIEW_DOCKERHUB_RATE_WINDOW", "0"},
        {"APPVIEW_DOCKERHUB_REFRESH_HOURS", "0"},
        {"APPVIEW_KEY_PREFIX", "atcr:{x}:"},
        {"APPVIEW_KEY_PREFIX", "a b"},
        {"APPVIEW_JETSTREAM_STALL_SECONDS", "0"},
        {"APPVIEW_CURSOR_REWIND_SECONDS", "-5"},
        {"APPVIEW_UPSTREAM_TIMEOUT_MS", "10"},
    };
    char *argv[] = {"appview", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        clear_env();
        setenv(bad[i][0], bad[i][1], 1);
        appview_config c;
        int rc = load_quietly(&c, 1, argv);
        if (rc != -1) fprintf(stderr, "    accepted %s=%s\n", bad[i][0], bad[i][1]);
        CHECK(rc == -1);
        CHECK(c.listen == NULL); /* nothing to free after an error */
    }
    /* Set but empty where there is a default: a slip, not a request for the default. */
    clear_env();
    setenv("APPVIEW_VALKEY_URL", "", 1);
    appview_config c;
    CHECK(load_quietly(&c, 1, argv) == -1);
    /* The forms that work. */
    static const char *const good[][2] = {
        {"APPVIEW_JETSTREAM_URLS", "wss://jetstream.example/jetstream/subscribe?compress=false"},
        {"APPVIEW_JETSTREAM_URLS", "ws://[::1]:6008/subscribe"},
        {"APPVIEW_VALKEY_URL", "redis://user:p@ss@valkey.internal:6380/3"},
        {"APPVIEW_VALKEY_URL", "unix:///run/valkey/valkey.sock?db=2"},
        {"LOG_LEVEL", "debug"},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        clear_env();
        setenv(good[i][0], good[i][1], 1);
        int rc = load_quietly(&c, 1, argv);
        if (rc != 0) fprintf(stderr, "    refused %s=%s\n", good[i][0], good[i][1]);
        CHECK(rc == 0);
        if (rc == 0) appview_config_free(&c);
    }
    clear_env();
}

/* Runs appview_config_prepare_paths with stderr captured into err. */
static int prepare_capturing(appview_config *c, char *err, size_t cap)
{
    capture cap_err;
    if (capture_start(&cap_err, stderr) < 0) return -2;
    int rc = appview_config_prepare_paths(c);
    capture_end(&cap_err, err, cap);
    return rc;
}

static void test_paths(void)
{
    clear_env();
    char base[] = "/tmp/test_appview_config_XXXXXX";
    CHECK(mkdtemp(base) != NULL);
    char data[256], cwd[4096];
    snprintf(data, sizeof data, "%s/new/deeper", base);
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    setenv("APPVIEW_DATA_DIR", data, 1);
    char *argv[] = {"appview", NULL};
    appview_config c;
    char err[2048];
    /* relative paths are taken from the working directory, and shown absolute */
    CHECK(appview_config_load(&c, 1, argv) == 0);
    CHECK(prepare_capturing(&c, err, sizeof err) == 0);
    char want[8300];
    snprintf(want, sizeof want, "%s/lexicons", cwd);
    CHECK(streq(c.lexicon_dir, want) && streq(c.data_dir, data));
    CHECK(access(data, W_OK) == 0); /* created with its parents */
    appview_config_free(&c);

    setenv("APPVIEW_LEXICON_DIR", "no-such-lexicons", 1);
    CHECK(appview_config_load(&c, 1, argv) == 0);
    CHECK(prepare_capturing(&c, err, sizeof err) == -1);
    snprintf(want, sizeof want,
             "appview: --lexicon-dir (APPVIEW_LEXICON_DIR) 'no-such-lexicons' is "
             "%s/no-such-lexicons: No such file or directory; relative paths start from the "
             "working directory",
             cwd);
    CHECK(strstr(err, want) != NULL);
    appview_config_free(&c);

    unsetenv("APPVIEW_LEXICON_DIR");
    char file[300];
    snprintf(file, sizeof file, "%s/a-file", base);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    snprintf(data, sizeof data, "%s/a-file/sub", base);
    setenv("APPVIEW_DATA_DIR", data, 1);
    CHECK(appview_config_load(&c, 1, argv) == 0);
    CHECK(prepare_capturing(&c, err, sizeof err) == -1);
    snprintf(want, sizeof want, "cannot create %s/a-file: Not a directory", base);
    CHECK(strstr(err, "--data-dir (APPVIEW_DATA_DIR)") && strstr(err, want));
    appview_config_free(&c);
    unlink(file);
    snprintf(data, sizeof data, "rm -r '%s'", base);
    CHECK(system(data) == 0);
    clear_env();
}

static void test_help_and_unknown_flag(void)
{
    clear_env();
    appview_config c;
    char *help[] = {"appview", "--help", NULL};
    CHECK(load_quietly(&c, 2, help) == 1);
    char *unknown[] = {"appview", "--valkey", "redis://x", NULL};
    CHECK(load_quietly(&c, 3, unknown) == -1);
    char *version[] = {"appview", "--version", NULL};
    CHECK(load_quietly(&c, 2, version) == 1);
}

/* Cluster mode: seeds replace the URL, and the cursor waits for one replica by default. */
static void test_cluster_options(void)
{
    clear_env();
    appview_config c;
    char *plain[] = {"appview", NULL};
    CHECK(appview_config_load(&c, 1, plain) == 0);
    CHECK(c.valkey_cluster == NULL && c.valkey_wait_replicas == 0);
    CHECK(c.valkey_wait_timeout_ms == 1000);
    appview_config_free(&c);

    setenv("APPVIEW_VALKEY_CLUSTER", "10.0.0.1:7000,redis://:pw@10.0.0.2:7000", 1);
    CHECK(appview_config_load(&c, 1, plain) == 0);
    CHECK(streq(c.valkey_cluster, "10.0.0.1:7000,redis://:pw@10.0.0.2:7000"));
    CHECK(c.valkey_wait_replicas == 1);
    appview_config_free(&c);

    char *off[] = {"appview", "--valkey-wait-replicas", "0", "--valkey-cluster", "h:1", NULL};
    CHECK(appview_config_load(&c, 5, off) == 0);
    CHECK(streq(c.valkey_cluster, "h:1") && c.valkey_wait_replicas == 0);
    appview_config_free(&c);

    char *spaced[] = {"appview", "--valkey-cluster", "h:1, h:2", NULL};
    CHECK(load_quietly(&c, 3, spaced) == -1);
    char *many[] = {"appview", "--valkey-wait-replicas", "17", NULL};
    CHECK(load_quietly(&c, 3, many) == -1);
    char *slow[] = {"appview", "--valkey-wait-timeout-ms", "5000", NULL};
    CHECK(load_quietly(&c, 3, slow) == -1);
    clear_env();
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_env_and_flag_overrides);
    RUN(test_invalid_values_rejected);
    RUN(test_help_and_unknown_flag);
    RUN(test_cluster_options);
    RUN(test_paths);
    CHECK_EXIT();
}
