#!/bin/sh
# Valkey Cluster benchmark: bin/appview ingesting one synthetic stream (the replay server
# filtering to what the appview asks for) into one redis-server, then into a cluster of 3
# primaries and 3 replicas on this machine (redis-cli --cluster create), with the WAIT on the
# replicas that cluster mode does by default and without it; then listTags answered warm from
# each. Per run: records/s, Valkey commands per record (every primary's
# total_commands_processed), what a writer round waited on (round trips), writes held behind
# another slot's (cache_order) and WAITs per round, and the CPU per record of the appview and
# of each primary. From the per-primary cost it works out what N primaries on N machines would
# sustain. The one-server runs are the yardstick; on 2 shared cores the six cluster processes
# compete with the appview, so a ratio well below 1 is expected here.
# Run from the repository root after `make` (make bench does both).
#   BENCH_CLUSTER_EVENTS=N (default 300000), BENCH_TIMEOUT=seconds per run (default 180),
#   BENCH_SECONDS=wrk seconds (default 5)
set -eu
. "$(dirname "$0")/lib.sh"
N=${BENCH_CLUSTER_EVENTS:-300000}
TIMEOUT=${BENCH_TIMEOUT:-180}
DUR=${BENCH_SECONDS:-5}
BIN=${BIN_DIR:-build/bin}
TOOLS=$BIN/tools
DIR=$(pwd)/var/bench/cluster
EVENTS=var/bench/events-$N-$(cksum <tests/tools/gen_events.c | cut -d' ' -f1).jsonl
rm -rf "$DIR" && mkdir -p "$DIR"
for t in gen_events jetstream_replay fold_records; do
    [ -x "$TOOLS/$t" ] || make -s "$TOOLS/$t" >/dev/null
done
[ -x "$BIN/appview" ] || { echo "cluster bench: $BIN/appview is not built" >&2; exit 1; }
command -v wrk >/dev/null || { echo "cluster bench: wrk is not installed" >&2; exit 1; }

kill_started_on_exit

# A port for a cluster node: its bus listens 10000 above, which must be free and below 65536.
node_port() {
    python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p > 55535: continue
    t = socket.socket()
    try: t.bind(("127.0.0.1", p + 10000))
    except OSError: continue
    finally: t.close()
    print(p); break'
}
redis_node() { # port dir [cluster flags...]
    port=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
        --protected-mode no "$@" >"$dir/log" 2>&1 &
    PIDS="$PIDS $!"
    i=0
    until redis-cli -p "$port" ping >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -gt 100 ] && { echo "cluster bench: redis-server on $port did not start" >&2; exit 1; }
        sleep 0.1
    done
}

if [ ! -s "$EVENTS" ] || [ ! -s "$EVENTS.summary" ]; then
    echo "generating $N events into $EVENTS ..." >&2
    "$TOOLS/gen_events" -n "$N" -o "$EVENTS.tmp" 2>"$EVENTS.summary.tmp"
    mv "$EVENTS.tmp" "$EVENTS" && mv "$EVENTS.summary.tmp" "$EVENTS.summary"
fi

echo "starting one redis-server and a cluster of 3 primaries + 3 replicas ..." >&2
SINGLE=$(free_port)
redis_node "$SINGLE" "$DIR/single"
NODES=""
for i in 1 2 3 4 5 6; do
    p=$(node_port)
    redis_node "$p" "$DIR/node-$i" --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 5000 --repl-diskless-sync-delay 0
    NODES="$NODES 127.0.0.1:$p"
done
# shellcheck disable=SC2086 # the node list, split on purpose
redis-cli --cluster create $NODES --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 ||
    { echo "cluster bench: redis-cli --cluster create failed" >&2; cat "$DIR/create.log" >&2; exit 1; }
SEEDS=$(echo "$NODES" | sed 's/^ //; s/ /,/g')

RPORT=$(free_port)
"$TOOLS/jetstream_replay" --listen "127.0.0.1:$RPORT" --events "$EVENTS" >"$DIR/replay.log" 2>&1 &
PIDS="$PIDS $!"
await_url "replay server" "http://127.0.0.1:$RPORT/_stats" || exit 1

# One ingest run: the appview from the stream's start to its end; prints its figures as k=v.
ingest_run() { # label, then APPVIEW_* assignments
    label=$1
    shift
    hport=$(free_port)
    python3 bench/cluster_measure.py prepare "$SINGLE" "$SEEDS" "$RPORT" "$DIR/state-$label.json"
    env "$@" APPVIEW_JETSTREAM_URLS="ws://127.0.0.1:$RPORT/subscribe" \
        APPVIEW_LISTEN="127.0.0.1:$hport" APPVIEW_DATA_DIR="$DIR/appview-$label" \
        LOG_LEVEL=warn "$BIN/appview" >"$DIR/appview-$label.log" 2>&1 &
    apid=$!
    PIDS="$PIDS $apid"
    python3 bench/cluster_measure.py ingest "$DIR/state-$label.json" "$apid" "$hport" "$TIMEOUT" \
        2>"$DIR/measure-$label.err" || echo "error=$(tail -1 "$DIR/measure-$label.err") (see $DIR/appview-$label.log)"
    kill "$apid" 2>/dev/null || true
    wait "$apid" 2>/dev/null || true
}

echo "ingest into one redis-server ..." >&2
I_SINGLE=$(ingest_run single APPVIEW_VALKEY_URL="redis://127.0.0.1:$SINGLE/0")
echo "ingest into the cluster, WAIT for 1 replica (the default) ..." >&2
I_WAIT=$(ingest_run cluster-wait APPVIEW_VALKEY_CLUSTER="$SEEDS")
echo "ingest into the cluster, no WAIT ..." >&2
I_NOWAIT=$(ingest_run cluster-nowait APPVIEW_VALKEY_CLUSTER="$SEEDS" APPVIEW_VALKEY_WAIT_REPLICAS=0)

# ---- warm listTags, one server and the cluster, seeded through the loader's write path ----
echo "seeding a repository of 10 tags into both ..." >&2
python3 bench/cluster_measure.py seed "$BIN" "$SINGLE" "$SEEDS"
DID=did:plc:benchbenchbenchbenchbenc
reads_run() { # label, then APPVIEW_* assignments -> k=v
    label=$1
    shift
    aport=$(free_port)
    env "$@" APPVIEW_LISTEN="127.0.0.1:$aport" APPVIEW_INGEST=off \
        APPVIEW_DATA_DIR="$DIR/reads-$label" LOG_LEVEL=warn "$BIN/appview" >"$DIR/reads-$label.log" 2>&1 &
    apid=$!
    PIDS="$PIDS $apid"
    url="http://127.0.0.1:$aport/xrpc/io.atcr.repo.listTags?actor=$DID&repository=app"
    await_url "appview ($label)" "$url" "$DIR/tags-$label.json" >&2 || { echo "error=no answer"; return; }
    wrk -t1 -c50 -d"${DUR}s" --latency "$url" >"$DIR/wrk-$label.out" 2>&1
    printf 'requests_per_s=%s p99_ms=%s\n' "$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$DIR/wrk-$label.out")" \
        "$(_wrk_ms 99% "$DIR/wrk-$label.out")"
    kill "$apid" 2>/dev/null || true
    wait "$apid" 2>/dev/null || true
}
echo "listTags from one redis-server ..." >&2
R_SINGLE=$(reads_run single APPVIEW_VALKEY_URL="redis://127.0.0.1:$SINGLE/0")
echo "listTags from the cluster ..." >&2
R_CLUSTER=$(reads_run cluster APPVIEW_VALKEY_CLUSTER="$SEEDS")
cmp -s "$DIR/tags-single.json" "$DIR/tags-cluster.json" ||
    echo "cluster bench: the two listTags answers differ" >&2

python3 bench/cluster_measure.py report "$N" "$I_SINGLE" "$I_WAIT" "$I_NOWAIT" "$R_SINGLE" "$R_CLUSTER"
