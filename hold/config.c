#include "hold/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atproto/buf.h"
#include "atproto/did_doc.h"
#include "atproto/options.h"
#include "atproto/path.h"
#include "atproto/url.h"

static const char *check_http_url(const char *v)
{
    return strncmp(v, "http://", 7) && strncmp(v, "https://", 8) ? "expected an http(s) URL" : NULL;
}

static const char *check_path(const char *v)
{
    return *v ? NULL : "expected a file path";
}

/* Tokens are compared as the bytes an Authorization header carries: visible ASCII. */
static const char *check_token(const char *v)
{
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "only visible ASCII characters (no spaces or control characters)";
    return NULL;
}

/* A signing key: guessable ones would let anyone count. */
static const char *check_secret(const char *v)
{
    return strlen(v) < 16 ? "at least 16 characters" : check_token(v);
}

enum {
    O_LISTEN,
    O_DB,
    O_DID,
    O_PUBLIC_URL,
    O_TOKENS,
    O_BLOB_URL,
    O_BLOB_SECRETS,
    O_COUNT_ANONYMOUS,
    O_DEDUPE,
    O_LOG_LEVEL,
    O_HTTP,
    O_COUNT = O_HTTP + HTTPD_OPTION_COUNT
};

static const option_spec SPECS[O_COUNT] = {
    [O_LISTEN] = OPT_STR("listen", "HOLD_LISTEN", "0.0.0.0:8081", "address to serve XRPC on",
                         options_check_host_port),
    [O_DB] = OPT_STR("db", "HOLD_DB", "./var/hold.db",
                     "SQLite database file, created if missing; its directory must exist "
                     "(relative: from the working directory)",
                     check_path),
    [O_DID] = OPT_STR("did", "HOLD_DID", NULL,
                      "this hold's DID (default: did:web of the public URL)", options_check_did),
    [O_PUBLIC_URL] =
        OPT_STR("public-url", "HOLD_PUBLIC_URL", NULL,
                "URL the hold is reached at (default http://localhost:PORT)", check_http_url),
    [O_TOKENS] = OPT_SECRET_LIST("service-tokens", "HOLD_SERVICE_TOKENS",
                                 "bearer tokens of the registry (incrementStats, counted getBlob)",
                                 check_token),
    [O_BLOB_URL] = OPT_STR("blob-url-template", "HOLD_BLOB_URL_TEMPLATE", NULL,
                           "getBlob redirect target; {did} and {cid} are filled in", NULL),
    [O_BLOB_SECRETS] =
        OPT_SECRET_LIST("blob-url-secrets", "HOLD_BLOB_URL_SECRETS",
                        "secrets the registry signs getBlob URLs with (HMAC-SHA256)", check_secret),
    [O_COUNT_ANONYMOUS] = OPT_BOOL("count-anonymous", "HOLD_COUNT_ANONYMOUS", "off",
                                   "count getBlob fetches that carry no token or signature"),
    [O_DEDUPE] =
        OPT_INT("pull-dedupe-seconds", "HOLD_PULL_DEDUPE_SECONDS", "60",
                "pulls of one digest by one client within this window count once", 0, 86400),
    [O_LOG_LEVEL] = OPT_STR("log-level", "LOG_LEVEL", "info",
                            "least important log lines shown: debug, info, warn or error",
                            options_check_log_level),
    [O_HTTP] = HTTPD_OPTIONS("HOLD"),
};

static int port_of(const char *listen)
{
    return atoi(strrchr(listen, ':') + 1);
}

int hold_config_load(hold_config *c, int argc, char **argv)
{
    option_value v[O_COUNT];
    memset(c, 0, sizeof *c);
    int rc = options_parse("hold", HOLD_VERSION,
                           "Counts pulls and pushes per (DID, repository) durably and serves them "
                           "over XRPC.",
                           SPECS, O_COUNT, v, argc, argv);
    if (rc != 0) return rc;
    c->listen = option_take_str(&v[O_LISTEN]);
    c->db = option_take_str(&v[O_DB]);
    c->did = option_take_str(&v[O_DID]);
    c->public_url = option_take_str(&v[O_PUBLIC_URL]);
    c->blob_url_template = option_take_str(&v[O_BLOB_URL]);
    c->tokens = option_take_list(&v[O_TOKENS], &c->ntokens);
    c->blob_url_secrets = option_take_list(&v[O_BLOB_SECRETS], &c->nblob_url_secrets);
    c->count_anonymous = v[O_COUNT_ANONYMOUS].num != 0;
    c->pull_dedupe_seconds = (int)v[O_DEDUPE].num;
    log_level_from_name(v[O_LOG_LEVEL].str, &c->log_level);
    httpd_limits_from_options(&c->http, &v[O_HTTP]);
    options_free(v, O_COUNT);
    if (!c->public_url) {
        char url[64];
        snprintf(url, sizeof url, "http://localhost:%d", port_of(c->listen));
        rc = (c->public_url = strdup(url)) ? 0 : -1;
    }
    if (rc == 0) url_trim_slashes(c->public_url);
    if (rc == 0 && !c->did && !(c->did = did_web_from_url(c->public_url))) {
        fprintf(stderr, "hold: cannot derive a did:web from HOLD_PUBLIC_URL %s\n", c->public_url);
        rc = -1;
    }
    if (rc < 0) hold_config_free(c);
    return rc;
}

int hold_config_prepare_paths(hold_config *c)
{
    char *db = path_absolute(c->db);
    if (!db) {
        fprintf(stderr, "hold: cannot tell the working directory: %s\n", strerror(errno));
        return -1;
    }
    struct stat st;
    const char *cause = NULL, *remedy = NULL;
    char dir[4096], why[4200];
    int dir_err = path_dir(db, dir, sizeof dir) < 0 ? ENAMETOOLONG
                  : stat(dir, &st) < 0              ? errno
                  : S_ISDIR(st.st_mode)             ? 0
                                                    : ENOTDIR;
    if (stat(db, &st) == 0 && S_ISDIR(st.st_mode)) {
        cause = "a directory";
        remedy = "name a file in it, e.g. hold.db";
    } else if (dir_err) {
        snprintf(why, sizeof why, "its directory %s: %s", dir, strerror(dir_err));
        cause = why;
        remedy = "create the directory (mkdir -p), or choose a path in an existing one";
    }
    if (cause) {
        fprintf(stderr, "hold: --db (HOLD_DB) '%s' is %s: %s; %s\n", c->db, db, cause, remedy);
        free(db);
        return -1;
    }
    free(c->db);
    c->db = db;
    return 0;
}

void hold_config_free(hold_config *c)
{
    free(c->listen);
    free(c->db);
    free(c->did);
    free(c->public_url);
    free(c->blob_url_template);
    for (size_t i = 0; i < c->ntokens; i++)
        free(c->tokens[i]);
    free(c->tokens);
    for (size_t i = 0; i < c->nblob_url_secrets; i++)
        free(c->blob_url_secrets[i]);
    free(c->blob_url_secrets);
    memset(c, 0, sizeof *c);
}
