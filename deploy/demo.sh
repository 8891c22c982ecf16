#!/bin/sh
# `make demo`: the whole system, fully offline. A local Jetstream replay server plays
# tests/fixtures/basic.jsonl to the appview, which folds it into a fresh redis-server; a hold
# counts a few pulls and pushes; `appview backfill` then loads a synthetic network that the
# firehose never mentioned (tests/tools/net_standin: a relay, a PLC directory and PDS hosts
# served from memory). The script prints real answers of the services, then stops everything.
# Nothing here contacts the network: the appview's PLC directory is a closed local port.
#
# Settings (environment): BIN_DIR (build/bin; e.g. build-asan/bin), DEMO_DIR (var/demo, wiped
# at start), DEMO_EVENTS (tests/fixtures/basic.jsonl).
SCRIPT=demo
# shellcheck source=deploy/common.sh
. "$(dirname "$0")/common.sh"

DEMO_DIR=${DEMO_DIR:-var/demo}
DEMO_EVENTS=${DEMO_EVENTS:-tests/fixtures/basic.jsonl}
ALICE=did:plc:aliceaaaaaaaaaaaaaaaaaaa
BOB=did:plc:bobbbbbbbbbbbbbbbbbbbbbb

need_bin "$BIN_DIR/appview"
need_bin "$BIN_DIR/hold"
need_bin "$BIN_DIR/tools/jetstream_replay"
need_bin "$BIN_DIR/tools/net_standin"
command -v redis-server >/dev/null || die "redis-server is missing (make run or make demo installs it)"
[ -r "$DEMO_EVENTS" ] || die "cannot read $DEMO_EVENTS"

{ rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR/valkey" "$DEMO_DIR/appview"; } || die "cannot create $DEMO_DIR"
DEMO_DIR=$(cd "$DEMO_DIR" && pwd)
# Fresh ports each run, so the demo never collides with `make run` or a test.
PORTS=$($HTTP ports 6) || die "no free ports"
# shellcheck disable=SC2086 # six words, one per port
set -- $PORTS
VALKEY_PORT=$1 REPLAY_PORT=$2 HOLD_PORT=$3 APPVIEW_PORT=$4 PLC_PORT=$5 NET_PORT=$6
REPLAY=http://127.0.0.1:$REPLAY_PORT
HOLD=http://127.0.0.1:$HOLD_PORT
APPVIEW=http://127.0.0.1:$APPVIEW_PORT
XRPC=$APPVIEW/xrpc/io.atcr.repo
TOKEN=$(new_token)

# shellcheck disable=SC2317 # called by the traps below
shutdown() {
    trap - EXIT HUP INT TERM
    stop_all || RC=1
    exit "$RC"
}
trap 'RC=$?; shutdown' EXIT
trap 'RC=1; shutdown' HUP INT TERM

# The services' logs go to files; the terminal gets the query results.
start redis-server --port "$VALKEY_PORT" --bind 127.0.0.1 --protected-mode no \
    --dir "$DEMO_DIR/valkey" --appendonly no --save "" --logfile "$DEMO_DIR/valkey.log"
VALKEY_PID=$STARTED
# --recent: the fixture's events are from 2024; shifted to end now, the lag _health shows is
# what it would be on a live stream.
start "$BIN_DIR/tools/jetstream_replay" --listen "127.0.0.1:$REPLAY_PORT" \
    --events "$DEMO_EVENTS" --recent 2>"$DEMO_DIR/replay.log"
start env HOLD_LISTEN="127.0.0.1:$HOLD_PORT" HOLD_PUBLIC_URL="$HOLD" \
    HOLD_DB="$DEMO_DIR/hold.db" HOLD_SERVICE_TOKENS="$TOKEN" "$BIN_DIR/hold" 2>"$DEMO_DIR/hold.log"
HOLD_PID=$STARTED
wait_valkey "$VALKEY_PORT" "$VALKEY_PID"
wait_http "$HOLD/.well-known/did.json" "$HOLD_PID"
HOLD_DID=$($HTTP did "$HOLD/.well-known/did.json") || die "the hold has no DID document"
# A did:web with a port holds "%3A", itself escaped inside a query string.
HOLD_DID_Q=$(echo "$HOLD_DID" | sed 's/%/%25/g')

# The fixture's DIDs exist nowhere: a list built from firehose events alone is partial, so a
# read asks the loader to list the repo from its PDS, which starts at the PLC directory. A
# closed local port makes that fail at once, and the appview serves the partial list marked
# "stale" (the design's answer when the network fails), instead of waiting on plc.directory.
# Private networks are allowed for the loopback hold and PLC port, both ours.
start env APPVIEW_LISTEN="127.0.0.1:$APPVIEW_PORT" \
    APPVIEW_VALKEY_URL="redis://127.0.0.1:$VALKEY_PORT/0" \
    APPVIEW_JETSTREAM_URLS="ws://127.0.0.1:$REPLAY_PORT/subscribe" \
    APPVIEW_PLC_URL="http://127.0.0.1:$PLC_PORT" APPVIEW_DOCKERHUB_URL="http://127.0.0.1:$PLC_PORT" \
    APPVIEW_ALLOW_PRIVATE_NETWORKS=1 APPVIEW_UPSTREAM_TIMEOUT_MS=2000 \
    APPVIEW_DATA_DIR="$DEMO_DIR/appview" APPVIEW_HOLDS="$HOLD_DID" \
    "$BIN_DIR/appview" 2>"$DEMO_DIR/appview.log"
APPVIEW_PID=$STARTED
wait_http "$APPVIEW/xrpc/_health" "$APPVIEW_PID"
$HTTP fold "$REPLAY" "$APPVIEW" 20 || die "the fixture was not folded (see $DEMO_DIR/appview.log)"

NEVENTS=$(grep -c . "$DEMO_EVENTS")
cat <<EOF
ATCR demo, offline. Services (logs in $DEMO_DIR):
  redis-server (Valkey-compatible)  127.0.0.1:$VALKEY_PORT
  Jetstream replay                  $REPLAY, playing $DEMO_EVENTS ($NEVENTS events)
  hold $HOLD_DID  $HOLD
  appview                           $APPVIEW
The appview subscribed to io.atcr.* only, so the replay server sent it the io.atcr.* commits,
identity and account events; it folded them (creates, updates, deletes, a replayed delete that
must not resurrect, and an account deletion that purges carol) into Valkey.

Reads of alice's and bob's lists answer with "stale": true: those lists come from the firehose
alone, and the loader that would complete them from each user's PDS cannot reach the (here
deliberately closed) PLC directory, so the appview serves what it has and says so.
EOF

TAB=$(printf '\t')
{
    echo "health${TAB}GET${TAB}$APPVIEW/xrpc/_health"
    echo "most recent manifests${TAB}GET${TAB}$XRPC.listRecent?limit=10"
    echo "alice's repositories${TAB}GET${TAB}$XRPC.listRepositories?actor=$ALICE"
    echo "bob's repositories${TAB}GET${TAB}$XRPC.listRepositories?actor=$BOB"
    echo "tags of alice/webapp${TAB}GET${TAB}$XRPC.listTags?actor=$ALICE&repository=webapp"
    echo "tags of bob/api${TAB}GET${TAB}$XRPC.listTags?actor=$BOB&repository=api"
    echo "manifest alice/webapp:latest${TAB}GET${TAB}$XRPC.getManifest?actor=$ALICE&repository=webapp&reference=latest"
} | $HTTP show || RC=1

cat <<EOF

The hold: three pulls and a push of alice/webapp, two pulls of bob/api, counted durably with
the service token, then read back as stats and as io.atcr.hold.stats records.
EOF
{
    echo "count pulls and a push${TAB}POST${TAB}$HOLD/xrpc/io.atcr.hold.incrementStats${TAB}{\"events\":[{\"did\":\"$ALICE\",\"repository\":\"webapp\",\"event\":\"pull\",\"count\":3},{\"did\":\"$ALICE\",\"repository\":\"webapp\",\"event\":\"push\"},{\"did\":\"$BOB\",\"repository\":\"api\",\"event\":\"pull\",\"count\":2}]}${TAB}$TOKEN"
    echo "stats of alice/webapp${TAB}GET${TAB}$HOLD/xrpc/io.atcr.hold.getStats?did=$ALICE&repository=webapp"
    echo "stats of bob/api${TAB}GET${TAB}$HOLD/xrpc/io.atcr.hold.getStats?did=$BOB&repository=api"
    echo "the same as ATProto records${TAB}GET${TAB}$HOLD/xrpc/com.atproto.repo.listRecords?repo=$HOLD_DID_Q&collection=io.atcr.hold.stats"
} | $HTTP show || RC=1
[ "${RC:-0}" = 0 ] || die "some requests failed (logs in $DEMO_DIR)"

NET=http://127.0.0.1:$NET_PORT
NET_DIDS=1500
start "$BIN_DIR/tools/net_standin" --listen "127.0.0.1:$NET_PORT" --dids "$NET_DIDS" \
    --manifests 6 --tags 2 --hosts 3 --empty-every 10 >"$DEMO_DIR/standin.json" \
    2>"$DEMO_DIR/standin.log"
wait_http "$NET/_stats" "$STARTED"
NET_DID=did:plc:backfillstandinaaaaaaaab
cat <<EOF

The backfill: a network the firehose never mentioned, $NET_DIDS DIDs on three PDS hosts, served
from memory by tests/tools/net_standin, which also answers as their relay
(com.atproto.sync.listReposByCollection) and their PLC directory. \`appview backfill\` lists the
DIDs with ATCR records from the relay and loads each through the loader, 8 at a time, at most 3
from one PDS, keeping its progress in Valkey:
\$ appview backfill --relay $NET
EOF
# A progress bar on a terminal; otherwise its progress lines (the rest is in backfill.log).
if [ -t 2 ]; then
    BACKFILL_ERR=/dev/stderr
else
    BACKFILL_ERR=$DEMO_DIR/backfill.log
fi
env APPVIEW_VALKEY_URL="redis://127.0.0.1:$VALKEY_PORT/0" APPVIEW_PLC_URL="$NET" \
    APPVIEW_ALLOW_PRIVATE_NETWORKS=1 APPVIEW_BACKFILL_CONCURRENCY=8 APPVIEW_BACKFILL_PER_HOST=3 \
    "$BIN_DIR/appview" backfill --relay "$NET" 2>"$BACKFILL_ERR" || die "the backfill failed"
[ -t 2 ] || grep -E "backfill: [0-9]|backfill complete|pass .* finished" "$BACKFILL_ERR"
cat <<EOF

The appview now serves those users from Valkey (its PLC directory is still a closed port), and
listRecent holds their history, newest createdAt first; _health shows the pass (every replica
reads it from Valkey, whether it runs passes or not).
EOF
$HTTP until "$APPVIEW/xrpc/_health" '"state":"finished"' "$APPVIEW_PID" 15 ||
    die "_health did not show the finished pass"
{
    echo "health after the backfill${TAB}GET${TAB}$APPVIEW/xrpc/_health"
    echo "most recent manifests, backfilled${TAB}GET${TAB}$XRPC.listRecent?limit=3"
    echo "a backfilled user's repositories${TAB}GET${TAB}$XRPC.listRepositories?actor=$NET_DID"
} | $HTTP show || RC=1
[ "${RC:-0}" = 0 ] || die "some requests failed (logs in $DEMO_DIR)"

echo
echo "demo: stopping the services"
