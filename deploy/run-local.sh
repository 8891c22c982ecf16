#!/bin/sh
# `make run`: a local redis-server (Valkey-compatible, AOF on, under ./var/valkey), a hold and
# the appview following the public Jetstream, in the foreground with their logs on stderr.
# Ctrl-C or SIGTERM stops all three, the appview first so its last writes reach Valkey.
# A second run reuses ./var: the index, the cursor, the hold's counters and its token.
#
# Settings (environment): BIN_DIR (build/bin), RUN_DIR (var), VALKEY_PORT (6390),
# RUN_HOLD (1; 0 = no local hold), and any APPVIEW_* / HOLD_* variable of
# `bin/appview --help` / `bin/hold --help`, which wins over what this script would set.
SCRIPT=run-local
# shellcheck source=deploy/common.sh
. "$(dirname "$0")/common.sh"

RUN_DIR=${RUN_DIR:-var}
VALKEY_PORT=${VALKEY_PORT:-6390}
RUN_HOLD=${RUN_HOLD:-1}
export APPVIEW_LISTEN="${APPVIEW_LISTEN:-127.0.0.1:8080}"
export HOLD_LISTEN="${HOLD_LISTEN:-127.0.0.1:8081}"

need_bin "$BIN_DIR/appview"
[ "$RUN_HOLD" != 1 ] || need_bin "$BIN_DIR/hold"
command -v redis-server >/dev/null || die "redis-server is missing (make run or make demo installs it)"

# URLs to print and to probe: a wildcard listen address is reached on loopback.
url_of() {
    host=${1%:*}
    case "$host" in "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
    echo "http://$host:${1##*:}"
}
APPVIEW_URL=$(url_of "$APPVIEW_LISTEN")
HOLD_URL=$(url_of "$HOLD_LISTEN")

PORTS="$VALKEY_PORT ${APPVIEW_LISTEN##*:}"
[ "$RUN_HOLD" != 1 ] || PORTS="$PORTS ${HOLD_LISTEN##*:}"
# shellcheck disable=SC2086 # one argument per port
BUSY=$($HTTP busy $PORTS) || die "cannot check ports"
[ -z "$BUSY" ] || die "port(s) $BUSY already in use (another make run?); stop it or change the port"

mkdir -p "$RUN_DIR/valkey" "$RUN_DIR/hold" "$RUN_DIR/appview" || die "cannot create $RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)

# shellcheck disable=SC2317 # called by the traps below
shutdown() {
    trap - EXIT HUP INT TERM
    echo "$SCRIPT: stopping" >&2
    stop_all || RC=1
    exit "$RC"
}
trap 'RC=$?; shutdown' EXIT
trap 'RC=0; shutdown' HUP INT TERM

# appendfsync everysec: a crash loses at most a second of index writes, which the cursor
# (persisted after them) makes the appview read again from Jetstream.
start redis-server --port "$VALKEY_PORT" --bind 127.0.0.1 --protected-mode no \
    --dir "$RUN_DIR/valkey" --appendonly yes --appendfsync everysec --save "" \
    --logfile "$RUN_DIR/valkey/valkey.log"
VALKEY_PID=$STARTED
wait_valkey "$VALKEY_PORT" "$VALKEY_PID"
export APPVIEW_VALKEY_URL="${APPVIEW_VALKEY_URL:-redis://127.0.0.1:$VALKEY_PORT/0}"
export APPVIEW_DATA_DIR="${APPVIEW_DATA_DIR:-$RUN_DIR/appview}"

if [ "$RUN_HOLD" = 1 ]; then
    if [ ! -s "$RUN_DIR/hold/token" ]; then
        (umask 077 && new_token >"$RUN_DIR/hold/token") || die "cannot write $RUN_DIR/hold/token"
    fi
    TOKEN=$(cat "$RUN_DIR/hold/token")
    export HOLD_DB="${HOLD_DB:-$RUN_DIR/hold/hold.db}"
    export HOLD_PUBLIC_URL="${HOLD_PUBLIC_URL:-$HOLD_URL}"
    export HOLD_SERVICE_TOKENS="${HOLD_SERVICE_TOKENS:-$TOKEN}"
    start "$BIN_DIR/hold"
    HOLD_PID=$STARTED
    wait_http "$HOLD_URL/.well-known/did.json" "$HOLD_PID"
    HOLD_DID=$($HTTP did "$HOLD_URL/.well-known/did.json") || die "the hold has no DID document"
    # A did:web with a port holds "%3A", itself escaped inside a query string.
    HOLD_DID_Q=$(echo "$HOLD_DID" | sed 's/%/%25/g')
    export APPVIEW_HOLDS="${APPVIEW_HOLDS:-$HOLD_DID}"
    # The local hold's did:web names 127.0.0.1, a loopback address the appview refuses to
    # contact unless private networks are allowed. That also lets DID documents from the
    # public network point the appview at private addresses, so it is set only here, for a
    # local hold, and never by the production units in deploy/.
    export APPVIEW_ALLOW_PRIVATE_NETWORKS="${APPVIEW_ALLOW_PRIVATE_NETWORKS:-1}"
fi

start "$BIN_DIR/appview"
APPVIEW_PID=$STARTED
wait_http "$APPVIEW_URL/xrpc/_health" "$APPVIEW_PID"

cat >&2 <<EOF

$SCRIPT: Valkey on 127.0.0.1:$VALKEY_PORT (data in $RUN_DIR/valkey), appview on $APPVIEW_URL
$SCRIPT: following ${APPVIEW_JETSTREAM_URLS:-the public Jetstream (default URLs)}
EOF
if [ "$RUN_HOLD" = 1 ]; then
    cat >&2 <<EOF
$SCRIPT: hold $HOLD_DID on $HOLD_URL (database $HOLD_DB)
$SCRIPT: hold service token (in $RUN_DIR/hold/token): $TOKEN
EOF
fi
cat >&2 <<EOF

Try:
  curl -s $APPVIEW_URL/xrpc/_health
  curl -s '$APPVIEW_URL/xrpc/io.atcr.repo.listRecent?limit=10'
  curl -s '$APPVIEW_URL/xrpc/io.atcr.repo.listRepositories?actor=DID_OR_HANDLE'
  curl -s '$APPVIEW_URL/xrpc/io.atcr.repo.listTags?actor=DID_OR_HANDLE&repository=NAME'
  curl -s $APPVIEW_URL/metrics
  redis-cli -p $VALKEY_PORT --scan --pattern 'atcr:*' | head
EOF
if [ "$RUN_HOLD" = 1 ]; then
    cat >&2 <<EOF
  curl -s -H 'Authorization: Bearer $TOKEN' -H 'Content-Type: application/json' \\
       -d '{"did":"did:plc:example234567abcdefghijk","repository":"demo","event":"pull"}' \\
       $HOLD_URL/xrpc/io.atcr.hold.incrementStats
  curl -s '$HOLD_URL/xrpc/io.atcr.hold.getStats?did=did:plc:example234567abcdefghijk&repository=demo'
  curl -s '$HOLD_URL/xrpc/com.atproto.repo.listRecords?repo=$HOLD_DID_Q&collection=io.atcr.hold.stats'
EOF
fi
echo "Ctrl-C stops everything." >&2
echo >&2

# Runs until a signal (trap above) or until one of the services dies on its own.
while alive "$APPVIEW_PID" && alive "$VALKEY_PID" && { [ "$RUN_HOLD" != 1 ] || alive "$HOLD_PID"; }; do
    sleep 1
done
echo "$SCRIPT: a service exited on its own; stopping the others" >&2
exit 1
