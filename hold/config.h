/* bin/hold configuration: flags override HOLD_* environment variables, which override defaults. */
#ifndef HOLD_CONFIG_H
#define HOLD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "atproto/httpd.h"
#include "atproto/log.h"

#define HOLD_VERSION "0.1.0"

typedef struct {
    char *listen;     /* HOLD_LISTEN, default 0.0.0.0:8081 */
    char *db;         /* HOLD_DB, default ./var/hold.db */
    char *did;        /* HOLD_DID, default did:web derived from public_url */
    char *public_url; /* HOLD_PUBLIC_URL, default http://localhost:<listen port> */
    char **tokens;    /* HOLD_SERVICE_TOKENS, comma-separated */
    size_t ntokens;
    char *blob_url_template; /* HOLD_BLOB_URL_TEMPLATE, {did} and {cid} filled; NULL: none */
    char **blob_url_secrets; /* HOLD_BLOB_URL_SECRETS: keys of signed getBlob URLs */
    size_t nblob_url_secrets;
    bool count_anonymous;    /* HOLD_COUNT_ANONYMOUS: getBlob counts without a proof, default off */
    int pull_dedupe_seconds; /* HOLD_PULL_DEDUPE_SECONDS, default 60 */
    enum log_level log_level; /* LOG_LEVEL, default info */
    httpd_limits http;        /* HOLD_HTTP_* */
} hold_config;

/* Returns 0 when ready, 1 when --help or --version was printed, -1 on a bad value (one line on
 * stderr naming the flag, the variable, the value and why). Touches no file. */
int hold_config_load(hold_config *c, int argc, char **argv);
/* Makes db absolute (against the working directory) and checks that it is not a directory and
 * that its directory exists. 0, or -1 after one line on stderr naming HOLD_DB, the path, the
 * cause and what to do (c stays the caller's to free). */
int hold_config_prepare_paths(hold_config *c);
void hold_config_free(hold_config *c);

#endif
