/* An asynchronous Valkey connection on a libuv loop (hiredis), that reconnects by itself.
 *
 * Commands issued in one loop iteration leave in one write (pipelining). Every command's
 * callback runs exactly once: with the reply, or with NULL when the connection failed, the
 * command timed out (the connection is then dropped and reconnected: a stalled server must not
 * hold requests forever), or the client is being freed. Lua scripts registered before
 * valkey_start are loaded on every (re)connect, so EVALSHA works after a server restart. */
#ifndef CACHE_VALKEY_H
#define CACHE_VALKEY_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <uv.h>

typedef struct valkey valkey;

/* reply is NULL on failure; it is freed by hiredis after the callback returns. */
typedef void (*valkey_reply_cb)(redisReply *reply, void *ud);
/* Called when the connection becomes ready (up=1, scripts loaded) or is lost (up=0). */
typedef void (*valkey_state_cb)(int up, void *ud);

typedef struct {
    const char *url;          /* redis://host:port/db or unix:///path[?db=N] */
    double command_timeout;   /* seconds; 0 means 5 */
    valkey_state_cb on_state; /* may be NULL */
    void *state_ud;
    const char *setting; /* where url came from, for errors: "--valkey-url, APPVIEW_VALKEY_URL" */
} valkey_options;

/* NULL when url is one of the forms above, else why not ("the port must be a number
 * 1..65535"), for configuration checks. */
const char *valkey_check_url(const char *url);

/* Parses the URL; NULL (logged) when it is not one of the forms above. */
valkey *valkey_new(uv_loop_t *loop, const valkey_options *opt);
/* Registers a script; returns its id for valkey_eval, or -1. Before valkey_start only. */
int valkey_register_script(valkey *v, const char *name, const char *source);
/* Starts connecting, and keeps reconnecting while the server is away: with backoff up to 5 s,
 * or every 30 s after a refusal that retrying does not cure (valkey_refusal_is_permanent).
 * Each new reason for not being ready is logged once, with the URL (password masked). */
void valkey_start(valkey *v);
/* Why the connection is not ready ("cannot connect: Connection refused", "connection setup
 * refused: WRONGPASS ..."), "" when it is or was never tried. No secret appears in it. */
const char *valkey_problem(const valkey *v);
/* 1 while the server refuses the connection setup in a way retrying does not cure. */
int valkey_setup_refused(const valkey *v);
/* 1 when a setup error reply (to AUTH, SELECT, SCRIPT LOAD) means the server's configuration
 * or the URL must change (WRONGPASS, NOAUTH, NOPERM, DB index out of range), 0 when it passes
 * by itself (LOADING). */
int valkey_refusal_is_permanent(const char *error);

/* Returns 0 when queued; -1 when not connected or out of memory (cb is then NOT called). */
int valkey_command(valkey *v, valkey_reply_cb cb, void *ud, int argc, const char **argv,
                   const size_t *argvlen);
/* EVALSHA of a registered script with nkeys keys followed by the arguments. */
int valkey_eval(valkey *v, int script, valkey_reply_cb cb, void *ud, int nkeys, int argc,
                const char **argv, const size_t *argvlen);

/* 1 when an error reply says the server cannot take the command now but may later (out of
 * memory, a read-only replica, a failing disk, loading, a busy script, ...), so the same write
 * is worth sending again; 0 when it says the command itself is wrong (WRONGTYPE, ERR ...). */
int valkey_error_transient(const char *error);

/* Fails pending commands (callbacks with NULL), closes the connection and frees. The loop must
 * run afterwards so the connection's handles close. */
void valkey_free(valkey *v);

#endif
