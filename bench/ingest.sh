#!/bin/sh
# Ingest benchmark: bin/appview consuming 1,000,000 synthetic Jetstream events (90% other
# collections, 10% io.atcr.* commits) from the local replay server into a fresh redis-server,
# first with no server-side filtering (the appview must discard the 90% itself), then with the
# replay server filtering to what the appview asked for. Yardsticks measured in the same run:
# redis-benchmark -P 64 SET on the same redis-server, and the replay server's send rate to
# ws_discard, a client that reads and discards every frame.
# Then the wire, on the unfiltered stream: v1 over ws:// and wss:// (a test certificate), v2
# uncompressed and dict-zstd, each next to the replay server's own send rate over the same
# wire, with the bytes the server wrote per event; and this appview next to the one built
# from BENCH_BASELINE_REF (default main; empty: skipped) on the v1 wire as it was before seqs,
# on the same stream with manifests keyed by digest (which both index whole).
# Run from the repository root after `make` (make bench does both).
#   BENCH_EVENTS=N (default 1000000), BENCH_TIMEOUT=seconds per appview run (default 120),
#   BENCH_RUNS=N appview runs per mode, the median reported (default 5)
set -eu
. "$(dirname "$0")/lib.sh"
N=${BENCH_EVENTS:-1000000}
TIMEOUT=${BENCH_TIMEOUT:-120}
BIN=${BIN_DIR:-build/bin}
TOOLS=$BIN/tools
DIR=var/bench/ingest
# The cached file is named for the generator's source, so a changed generator makes a new one.
EVENTS=var/bench/events-$N-$(cksum <tests/tools/gen_events.c | cut -d' ' -f1).jsonl
mkdir -p var/bench && rm -rf "$DIR" && mkdir -p "$DIR"

for t in gen_events jetstream_replay ws_discard; do
    [ -x "$TOOLS/$t" ] || make -s "$TOOLS/$t" >/dev/null
done
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "ingest bench: redis-server and redis-benchmark are needed (make bench installs them)" >&2
    exit 1
fi

kill_started_on_exit

wait_port() { # port seconds
    python3 - "$1" "$2" <<'EOF'
import socket, sys, time
deadline = time.time() + float(sys.argv[2])
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}
# A redis-server for the bench on port $1, logging to $2; sets REDIS_PID. Fails if it does not
# listen within 10 s.
start_redis() {
    redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR/redis" \
        --protected-mode no >"$2" 2>&1 &
    REDIS_PID=$!
    PIDS="$PIDS $REDIS_PID"
    wait_port "$1" 10
}
field() { # key, from "k=v k=v" on stdin
    tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }

# ---- events (cached: the same seed gives the same file) ----
if [ ! -s "$EVENTS" ] || [ ! -s "$EVENTS.summary" ]; then
    echo "generating $N events into $EVENTS ..." >&2
    "$TOOLS/gen_events" -n "$N" -o "$EVENTS.tmp" 2>"$EVENTS.summary.tmp"
    mv "$EVENTS.tmp" "$EVENTS" && mv "$EVENTS.summary.tmp" "$EVENTS.summary"
fi
# The same stream with manifests keyed by their digest's hex, the one layout every appview since
# schema 1 indexes whole: the baseline comparison runs on it, so both binaries do the same work
# (an appview before schema 4 drops most tags of the TID-keyed stream, and so does less).
EVENTS_DIGEST=${EVENTS%.jsonl}-digest-rkeys.jsonl
if [ -n "${BENCH_BASELINE_REF-main}" ] && [ ! -s "$EVENTS_DIGEST" ]; then
    echo "generating the same $N events, manifests keyed by digest, into $EVENTS_DIGEST ..." >&2
    "$TOOLS/gen_events" -n "$N" --rkeys digest -o "$EVENTS_DIGEST.tmp" 2>/dev/null
    mv "$EVENTS_DIGEST.tmp" "$EVENTS_DIGEST"
fi
ATCR=$(field atcr <"$EVENTS.summary")
MB=$(($(stat -c %s "$EVENTS") / 1000000))

# ---- redis-server and its yardstick ----
RPORT=$(free_port)
mkdir -p "$DIR/redis"
start_redis "$RPORT" "$DIR/redis.log" ||
    { echo "redis-server did not start" >&2; cat "$DIR/redis.log" >&2; exit 1; }
echo "measuring redis-benchmark -P 64 -t set -n 2000000 ..." >&2
REDIS_SET=$(redis-benchmark -p "$RPORT" -P 64 -t set -n 2000000 -q 2>/dev/null | tr '\r' '\n' |
    awk '/^SET: .*requests per second/ {v = $2} END {printf "%.0f", v}')
redis-cli -p "$RPORT" FLUSHALL >/dev/null
RECORD=$(grep -m1 '"operation":"create","collection":"io.atcr.manifest"' "$EVENTS" | python3 -c '
import json, sys; print(json.dumps(json.loads(sys.stdin.read())["commit"]["record"], separators=(",", ":")))')
# What storing the records costs Valkey at all, whatever the key layout: one SET per record,
# the same real manifest record each time, into a new key each time. Copying a kilobyte into
# memory Valkey has not touched yet is what a new record costs it; no index, no TTL. The
# Valkey CPU per SET says how much of one of the two cores a record rate takes before any index.
valkey_cpu_s() { # port -> the server's CPU seconds so far
    redis-cli -p "$1" INFO cpu | tr -d '\r' |
        awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.3f", s}'
}
echo "measuring redis-benchmark -P 64 SET of a record into new keys ..." >&2
CPU0=$(valkey_cpu_s "$RPORT")
REDIS_SET_RECORD=$(redis-benchmark -p "$RPORT" -P 64 -n 500000 -r 1000000000 -q SET 'r:__rand_int__' \
    "$RECORD" 2>/dev/null | tr '\r' '\n' | grep -o '[0-9.]* requests per second' |
    awk '{v = $1} END {printf "%.0f", v}')
SET_RECORD_US=$(awk -v a="$CPU0" -v b="$(valkey_cpu_s "$RPORT")" 'BEGIN {printf "%.1f", (b - a) * 1e6 / 500000}')
redis-cli -p "$RPORT" FLUSHALL >/dev/null

# ---- replay servers: one sending everything, one honouring wantedCollections ----
start_replay() { # port, extra flags (a later --events replaces the stream)
    port=$1; shift
    "$TOOLS/jetstream_replay" --listen "127.0.0.1:$port" --events "$EVENTS" "$@" \
        >>"$DIR/replay-$port.log" 2>&1 &
    PIDS="$PIDS $!"
    wait_port "$port" 60 || { echo "replay server did not start" >&2; cat "$DIR/replay-$port.log" >&2; exit 1; }
}
PORT_ALL=$(free_port)
PORT_FILTER=$(free_port)
PORT_TLS=$(free_port)
PORT_ZSTD=$(free_port)
PORT_LEGACY=$(free_port)
mkdir -p "$DIR/tls"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DIR/tls/key.pem" -out "$DIR/tls/cert.pem" \
    -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1
CERT=$DIR/tls/cert.pem
export SSL_CERT_FILE=$CERT # trusted by ws_discard, the appview and the scripts' https
echo "starting replay servers (indexing $MB MB; one compresses every frame once) ..." >&2
start_replay "$PORT_ALL" --no-filter
start_replay "$PORT_FILTER"
start_replay "$PORT_TLS" --no-filter --tls-cert "$CERT" --tls-key "$DIR/tls/key.pem"
start_replay "$PORT_ZSTD" --no-filter --precompress
[ -s "$EVENTS_DIGEST" ] && start_replay "$PORT_LEGACY" --no-filter --legacy-v1 --events "$EVENTS_DIGEST"
# the dictionary the zstd server serves, for ws_discard's request
DICT_ID=$(python3 -c 'import struct, sys, urllib.request
d = urllib.request.urlopen(sys.argv[1], timeout=60).read(8)
print(struct.unpack("<II", d)[1])' "http://127.0.0.1:$PORT_ZSTD/xrpc/network.bsky.jetstream.getZstdDictionary")
V2=/xrpc/network.bsky.jetstream.subscribeEvents

# Best of three: the machine is shared, and the yardstick should be what the server can do.
best_discard() { # url count [--lws]
    best=""
    for _ in 1 2 3; do
        # shellcheck disable=SC2086 # $3 is an optional flag: absent means no argument
        out=$("$TOOLS/ws_discard" "$1" --count "$2" --seconds 60 ${3:-} || true)
        r=$(echo "$out" | field events_per_s)
        [ -n "$r" ] || continue
        if [ -z "$best" ] || [ "$r" -gt "$(echo "$best" | field events_per_s)" ]; then best=$out; fi
    done
    echo "$best"
}
echo "measuring replay -> ws_discard ..." >&2
D_ALL=$(best_discard "ws://127.0.0.1:$PORT_ALL/subscribe" "$N")
D_LWS=$(best_discard "ws://127.0.0.1:$PORT_ALL/subscribe" "$N" --lws)
WANTED="wantedCollections=io.atcr.manifest&wantedCollections=io.atcr.tag&wantedCollections=io.atcr.hold.stats"
FILTERED=$(grep -c -E '"collection":"io\.atcr\.(manifest|tag|hold\.stats)"|"kind":"(identity|account)"' "$EVENTS")
D_FILTER=$(best_discard "ws://127.0.0.1:$PORT_FILTER/subscribe?$WANTED" "$FILTERED")
D_WSS=$(best_discard "wss://localhost:$PORT_TLS/subscribe" "$N")
D_V2=$(best_discard "ws://127.0.0.1:$PORT_ALL$V2" "$N")
D_ZSTD=$(best_discard "ws://127.0.0.1:$PORT_ZSTD$V2?zstdDictionary=$DICT_ID" "$N")

# ---- the appview ----
# Polls the appview's /metrics and the replay server's /_stats until every event the server
# sent was consumed and the server has nothing more to send; prints the figures as k=v.
# The replay server's and redis' counters are read before the appview starts (the yardstick
# runs went through the same replay server): only the deltas count.
# A replay server's /_stats (https for the TLS one, trusting SSL_CERT_FILE).
stats_url() { # replay_port -> URL
    if [ "$1" = "$PORT_TLS" ]; then echo "https://localhost:$1/_stats"; else echo "http://127.0.0.1:$1/_stats"; fi
}
counters() { # replay_port -> "events_sent redis_commands streams bytes_sent"
    python3 - "$(stats_url "$1")" "$RPORT" <<'EOF'
import json, subprocess, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    stats = json.load(r)
out = subprocess.run(["redis-cli", "-p", sys.argv[2], "INFO", "stats"], capture_output=True, text=True).stdout
print(stats["eventsSent"], next(l.split(":")[1].strip() for l in out.splitlines() if l.startswith("total_commands_processed:")),
      stats["streamsTotal"], stats["bytesSent"])
EOF
}
measure() { # appview_pid http_port stats_url events_sent0 redis_commands0 streams0 bytes_sent0
    python3 - "$@" "$RPORT" "$TIMEOUT" <<'EOF'
import json, os, subprocess, sys, time, urllib.request
pid, hport, stats_url, sent0, cmds0, streams0, bytes0, redis_port, timeout = sys.argv[1:10]
sent0, cmds0, streams0, bytes0, timeout = int(sent0), int(cmds0), int(streams0), int(bytes0), float(timeout)

def metric(text, name):
    total = None
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total = (total or 0) + float(line.rsplit(" ", 1)[1])
    return total or 0

def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()

def redis_commands():
    out = subprocess.run(["redis-cli", "-p", redis_port, "INFO", "stats"], capture_output=True, text=True).stdout
    return int(next(l.split(":")[1] for l in out.splitlines() if l.startswith("total_commands_processed:")))

def alive():
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except OSError:
        return False

def replay_stats():
    return json.loads(get(stats_url))

t0 = time.time()
deadline = t0 + timeout
done_at = None
last_sent, stable_since = -1, time.time()
events = records = 0
while True:
    now = time.time()
    if now > deadline:
        sys.exit(f"timed out after {timeout:.0f}s: {events:.0f} events consumed")
    if not alive():
        sys.exit("the appview exited during the run")
    try:
        m = get(f"http://127.0.0.1:{hport}/metrics")
    except OSError:
        time.sleep(0.05)
        continue
    sent = replay_stats()["eventsSent"] - sent0
    events = metric(m, "appview_jetstream_events_total")
    records = metric(m, "appview_records_indexed_total")
    if sent != last_sent:
        last_sent, stable_since = sent, now
    if sent > 0 and events >= sent:
        done_at = done_at or now
        if now - stable_since > 0.5 and now - done_at > 0.3:
            break
    else:
        done_at = None
    time.sleep(0.02)
# Records trail events while writes are in flight: wait for that counter to settle too, and
# time records from the first event to the last record indexed.
rec_done, last_records = done_at, metric(m, "appview_records_indexed_total")
settled = time.time()
while time.time() - settled < 0.5 and time.time() < deadline:
    time.sleep(0.02)
    records = metric(get(f"http://127.0.0.1:{hport}/metrics"), "appview_records_indexed_total")
    if records != last_records:
        last_records, settled = records, time.time()
        rec_done = settled
cmds = redis_commands() - cmds0
# The run starts when the replay server began the appview's stream. This script starts after
# the appview does, on a machine the run keeps busy: its first poll came up to 1.4 s into the
# stream, and timing from there (as this bench did until session 6) overstated the rates.
stats = replay_stats()
if stats["streamsTotal"] != streams0 + 1:
    sys.exit(f"the appview connected {stats['streamsTotal'] - streams0} times during the run")
first = stats["lastStreamStartedAt"]
with open(f"/proc/{pid}/status") as f:
    rss = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
# The appview's CPU over the run (run_appview adds Valkey's): on two cores they share with the
# replay server, wall time follows the sum, so the two say whose work a difference is.
with open(f"/proc/{pid}/stat") as f:
    ticks = f.read().rsplit(")", 1)[1].split()
appview_cpu = (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")
# Events are timed to the last record indexed too: the appview reads ahead of its writes (up
# to 20,000 items pending), so the moment it has read every event says how fast it reads,
# not how fast it ingests. Over TLS that read-ahead made wss:// look twice as fast as ws://.
el = max(rec_done - first, 1e-3)
wire = (stats["bytesSent"] - bytes0) / max(stats["eventsSent"] - sent0, 1)
print(f"events={events:.0f} records={last_records:.0f} seconds={el:.3f} events_per_s={events / el:.0f} "
      f"records_per_s={last_records / el:.0f} commands={cmds} "
      f"commands_per_s={cmds / el:.0f} rss_kb={rss} wire_bytes_per_event={wire:.0f} "
      f"appview_cpu={appview_cpu:.2f}")
EOF
}

# What run_appview runs and how, set by the caller (POSIX sh has no per-call environment for
# functions): RUN_COMPRESS is APPVIEW_JETSTREAM_COMPRESS, RUN_APPVIEW the binary.
RUN_COMPRESS=on
RUN_APPVIEW=$BIN/appview
run_appview() { # replay_port path label -> prints k=v figures or "error=..."
    HPORT=$(free_port)
    redis-cli -p "$RPORT" FLUSHALL >/dev/null
    c0=$(counters "$1")
    vcpu0=$(valkey_cpu_s "$RPORT")
    mkdir -p "$DIR/appview-$3"
    url=ws://127.0.0.1:$1$2
    [ "$1" = "$PORT_TLS" ] && url=wss://localhost:$1$2
    APPVIEW_ALLOW_PRIVATE_NETWORKS=1 \
    APPVIEW_VALKEY_URL=redis://127.0.0.1:$RPORT/0 \
    APPVIEW_JETSTREAM_URLS=$url \
    APPVIEW_JETSTREAM_COMPRESS=$RUN_COMPRESS \
    APPVIEW_LISTEN=127.0.0.1:$HPORT \
    APPVIEW_DATA_DIR=$DIR/appview-$3 \
    LOG_LEVEL=${LOG_LEVEL:-warn} \
        "$RUN_APPVIEW" >"$DIR/appview-$3.log" 2>&1 &
    apid=$!
    PIDS="$PIDS $apid"
    # shellcheck disable=SC2086 # c0 is the counters' four numbers, split on purpose
    if ! wait_port "$HPORT" 20; then
        echo "error=the appview did not listen on $HPORT (see $DIR/appview-$3.log)"
    elif ! figures=$(measure "$apid" "$HPORT" "$(stats_url "$1")" $c0 2>"$DIR/measure-$3.err"); then
        echo "error=$(tail -1 "$DIR/measure-$3.err") (see $DIR/appview-$3.log)"
    else
        echo "$figures valkey_cpu=$(awk -v a="$vcpu0" -v b="$(valkey_cpu_s "$RPORT")" \
            'BEGIN {printf "%.2f", b - a}')"
    fi
    kill "$apid" 2>/dev/null || true
    wait "$apid" 2>/dev/null || true
}

# RUNS runs (BENCH_RUNS, default 5); the one with the median records/s is reported, with every
# run's figures: on this shared machine one run can be a third off the next.
RUNS=${BENCH_RUNS:-5}
# The CPU seconds are each the median of their own: one run's are as noisy as its rate.
middle() { # lines led by a number -> the median line
    sort -n | sed -n "$(((RUNS + 1) / 2))p"
}
median_of() { # runs (a line of k=v figures each) -> the median run's, plus runs_*=a/b/c and CPU
    median=$(printf '%s' "$1" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^records_per_s=/) {
        split($i, kv, "="); print kv[2], $0 } }' | middle | cut -d' ' -f2-)
    each() { printf '%s' "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { printf "%s%s", s, $2; s = "/" }'; }
    mid() { printf '%s' "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }' | middle; }
    echo "$median runs_events=$(each events_per_s "$1") runs_records=$(each records_per_s "$1")" \
        "median_appview_cpu=$(mid appview_cpu "$1") median_valkey_cpu=$(mid valkey_cpu "$1")"
}
run_median() { # replay_port path label -> the median run's k=v figures, plus runs_*=a/b/c
    runs=""
    for i in $(seq "$RUNS"); do
        out=$(run_appview "$1" "$2" "$3-$i")
        case "$out" in error=*) echo "$out"; return ;; esac
        runs="$runs$out
"
    done
    median_of "$runs"
}
# Two set-ups in turn, RUNS times each, so that a drift of the machine during the comparison
# weighs on both alike (run one after the other, five and five, the ratio of the same two
# binaries came out 1.06 in one bench and 0.77 in the next; wss:// against ws:// 1.36 in one and
# 0.73 in the next). Which of the two goes first alternates from pair to pair, so neither
# always runs on the machine the other left. A set-up is a binary, a replay port, a path and a
# label. Sets PAIR_A and PAIR_B (each set-up's median run), and PAIRS_EVENTS and PAIRS_RECORDS:
# each pair's A/B.
run_pairs() { # binary_a port_a path_a label_a binary_b port_b path_b label_b
    a_runs="" b_runs="" PAIRS_EVENTS="" PAIRS_RECORDS=""
    for i in $(seq "$RUNS"); do
        for who in $(if [ $((i % 2)) = 1 ]; then echo a b; else echo b a; fi); do
            if [ "$who" = a ]; then
                RUN_APPVIEW=$1
                out=$(run_appview "$2" "$3" "$4-$i")
                a_out=$out
            else
                RUN_APPVIEW=$5
                out=$(run_appview "$6" "$7" "$8-$i")
                b_out=$out
            fi
            RUN_APPVIEW=$BIN/appview
            case "$out" in error=*) PAIR_A=$out PAIR_B=$out; return ;; esac
        done
        a_runs="$a_runs$a_out
"
        b_runs="$b_runs$b_out
"
        PAIRS_EVENTS="$PAIRS_EVENTS $(ratio "$(echo "$a_out" | field events_per_s)" \
            "$(echo "$b_out" | field events_per_s)")"
        PAIRS_RECORDS="$PAIRS_RECORDS $(ratio "$(echo "$a_out" | field records_per_s)" \
            "$(echo "$b_out" | field records_per_s)")"
    done
    PAIR_A=$(median_of "$a_runs")
    PAIR_B=$(median_of "$b_runs")
}
# The median of a list of ratios and the list: "0.97 (0.95/0.97/1.02)".
pairs_summary() {
    m=$(printf '%s\n' $1 | middle)
    echo "$m ($(printf '%s' "$1" | sed 's/^ //' | tr ' ' '/'))"
}

# The appview built from BENCH_BASELINE_REF, from its tree exported under var/bench (kept for
# the next run; nothing is registered in the repository).
baseline_appview() { # -> path of the binary, or nothing
    ref=${BENCH_BASELINE_REF-main}
    [ -n "$ref" ] || return 0
    commit=$(git rev-parse --verify -q "$ref^{commit}") || { echo "bench: no baseline $ref" >&2; return 0; }
    src=var/bench/baseline-$commit
    if [ ! -x "$src/build/bin/appview" ]; then
        echo "building the baseline appview ($ref, $commit) ..." >&2
        rm -rf "$src" && mkdir -p "$src"
        { git archive "$commit" | tar -x -C "$src" &&
            make -s -C "$src" -j2 build/bin/appview >"$DIR/baseline-build.log" 2>&1; } ||
            { echo "bench: the baseline did not build (see $DIR/baseline-build.log)" >&2; return 0; }
    fi
    echo "$src/build/bin/appview"
}

if [ -x "$BIN/appview" ]; then
    echo "running the appview over wss:// and ws:// in turn, no server-side filter ..." >&2
    run_pairs "$BIN/appview" "$PORT_TLS" /subscribe wss "$BIN/appview" "$PORT_ALL" /subscribe all
    A_WSS=$PAIR_A A_ALL=$PAIR_B PAIRS_WSS=$PAIRS_EVENTS
    echo "running the appview, server-side filter ..." >&2
    A_FILTER=$(run_median "$PORT_FILTER" /subscribe filter)
    echo "running the appview on v2, uncompressed and dict-zstd ..." >&2
    RUN_COMPRESS=off
    A_V2=$(run_median "$PORT_ALL" "$V2" v2)
    RUN_COMPRESS=on
    A_ZSTD=$(run_median "$PORT_ZSTD" "$V2" zstd)
    BASE_BIN=$(baseline_appview)
    if [ -n "$BASE_BIN" ]; then
        echo "running this appview and the baseline in turn on the v1 wire before seqs ..." >&2
        run_pairs "$BIN/appview" "$PORT_LEGACY" /subscribe legacy \
            "$BASE_BIN" "$PORT_LEGACY" /subscribe baseline
        A_LEGACY=$PAIR_A A_BASE=$PAIR_B
    fi
else
    A_ALL="error=$BIN/appview is not built"
    A_FILTER=$A_ALL
fi

# ---- Valkey alone, fed the appview's own commands ----
# One more filtered run, on a server of its own whose MONITOR records every command the
# appview sends; bench/valkey_alone.py pipes them into a fresh redis-server, five times (the
# median). Valkey's rate on exactly the appview's work bounds what the appview can reach.
valkey_alone() { # -> "records_per_s=... valkey_cpu=... runs=a/b/c" or "error=..."
    cport=$(free_port)
    start_redis "$cport" "$DIR/capture-redis.log" ||
        { kill "$REDIS_PID"; echo "error=the capture's redis-server did not start"; return; }
    cpid=$REDIS_PID
    redis-cli -p "$cport" MONITOR >"$DIR/monitor.txt" 2>/dev/null &
    mpid=$!
    PIDS="$PIDS $mpid"
    saved_rport=$RPORT
    RPORT=$cport
    captured=$(run_appview "$PORT_FILTER" /subscribe capture)
    RPORT=$saved_rport
    kill "$mpid" "$cpid" 2>/dev/null || true
    wait "$mpid" "$cpid" 2>/dev/null || true
    case "$captured" in error=*) echo "$captured"; return ;; esac
    records=$(echo "$captured" | field records)
    python3 bench/valkey_alone.py "$DIR/monitor.txt" "$records" "$DIR"
    rm -f "$DIR/monitor.txt"
}
if [ -x "$BIN/appview" ]; then
    echo "replaying the appview's own commands into Valkey alone ..." >&2
    ALONE=$(valkey_alone)
else
    ALONE="error=$BIN/appview is not built"
fi

# ---- report ----
num() { awk -v a="$1" 'BEGIN { if (a == "") print "-"; else printf "%.0f", a }'; }
row() { printf '  %-58s %10s  %s\n' "$1" "$2" "$3"; }

DA_R=$(echo "$D_ALL" | field events_per_s)
DA_MB=$(echo "$D_ALL" | field mb_per_s)
DF_R=$(echo "$D_FILTER" | field events_per_s)
echo
echo "Ingest benchmark: $N events ($ATCR io.atcr.* commits, $FILTERED after server-side filtering), $MB MB"
echo "yardsticks"
row "redis-benchmark -P 64 -t set (SET/s)" "$(num "$REDIS_SET")" ""
row "redis-benchmark -P 64 SET of a $(printf %s "$RECORD" | wc -c)-byte record, new keys (SET/s)" \
    "$(num "$REDIS_SET_RECORD")" "Valkey CPU $SET_RECORD_US us per record: storing records alone, at most $(awk -v u="$SET_RECORD_US" 'BEGIN { if (u > 0) printf "%.0f", 1e6 / u; else print "-" }')/s per core"
row "replay -> ws_discard, everything (events/s)" "$(num "$DA_R")" "$DA_MB MB/s"
row "replay -> ws_discard, io.atcr filter (events/s)" "$(num "$DF_R")" ""
row "replay -> libwebsockets' own WebSocket client, no-op (events/s)" "$(num "$(echo "$D_LWS" | field events_per_s)")" \
    "$(echo "$D_LWS" | field mb_per_s) MB/s: lws parsing frames; the appview parses its own over an lws raw socket"
ALONE_ERR=$(echo "$ALONE" | sed -n 's/^error=//p')
ALONE_R=""
if [ -n "$ALONE_ERR" ]; then
    row "Valkey alone, the appview's commands (records/s)" "-" "not measured: $ALONE_ERR"
else
    ALONE_R=$(echo "$ALONE" | field records_per_s)
    row "Valkey alone, the appview's commands (records/s)" "$(num "$ALONE_R")" \
        "filtered run's commands, captured, piped by redis-cli into a fresh server; runs $(echo "$ALONE" | field runs), Valkey CPU s $(echo "$ALONE" | field valkey_cpu)"
fi
status=0
report() { # label figures yardstick_rate
    echo "appview, $1"
    err=$(echo "$2" | sed -n 's/^error=//p')
    if [ -n "$err" ]; then
        echo "  not measured: $err"
        status=1
        return
    fi
    ev=$(echo "$2" | field events_per_s)
    rec=$(echo "$2" | field records_per_s)
    cmd=$(echo "$2" | field commands_per_s)
    rss=$(echo "$2" | field rss_kb)
    row "events/s, read and indexed (median of $RUNS)" "$(num "$ev")" "$(ratio "$ev" "$3") of the replay send rate; target 500000; runs $(echo "$2" | field runs_events)"
    row "io.atcr records/s indexed (median of $RUNS)" "$(num "$rec")" "$(ratio "$rec" "$ALONE_R") of Valkey alone; target 100000; runs $(echo "$2" | field runs_records)"
    row "Valkey commands/s" "$(num "$cmd")" "$(ratio "$cmd" "$REDIS_SET") of redis-benchmark SET/s"
    row "peak RSS (MB)" "$((rss / 1024))" ""
}
report "no server-side filter" "$A_ALL" "$DA_R"
report "server-side filter (io.atcr.* only)" "$A_FILTER" "$DF_R"

# ---- the wire ----
# One row per wire: the appview's events/s (median), the replay server's own send rate over
# the same wire (ws_discard, best of three), and what the server wrote per event.
cpu_of() { # figures -> "CPU s appview a, Valkey v", each the median of the runs
    echo "CPU s appview $(echo "$1" | field median_appview_cpu), Valkey $(echo "$1" | field median_valkey_cpu)"
}
wire_row() { # label figures discard [target]
    err=$(echo "$2" | sed -n 's/^error=//p')
    if [ -n "$err" ]; then
        row "$1" "-" "not measured: $err"
        status=1
        return
    fi
    ev=$(echo "$2" | field events_per_s)
    sent=$(echo "$3" | field events_per_s)
    row "$1" "$(num "$ev")" "$(ratio "$ev" "$sent") of the replay's $(num "$sent")/s; $(echo "$2" | field wire_bytes_per_event) bytes/event; $(cpu_of "$2")${4:+; $4}; runs $(echo "$2" | field runs_events)"
}
if [ -n "${A_WSS:-}" ]; then
    echo "appview by wire, unfiltered stream (events/s, median of $RUNS)"
    WS_R=$(echo "$A_ALL" | field events_per_s)
    WSS_R=$(echo "$A_WSS" | field events_per_s)
    wire_row "v1 ws://" "$A_ALL" "$D_ALL"
    wire_row "v1 wss:// (OpenSSL under the same frame parser)" "$A_WSS" "$D_WSS" \
        "$(ratio "$WSS_R" "$WS_R") of ws://"
    row "    each pair's wss:// / ws://, their median (target 0.8)" "-" "$(pairs_summary "$PAIRS_WSS")"
    wire_row "v2 ws://, uncompressed" "$A_V2" "$D_V2"
    wire_row "v2 ws://, dict-zstd (frames precompressed by the replay)" "$A_ZSTD" "$D_ZSTD"
    if [ -n "${A_BASE:-}" ]; then
        L_R=$(echo "$A_LEGACY" | field events_per_s)
        B_R=$(echo "$A_BASE" | field events_per_s)
        echo "  the baseline comparison: the old wire (no seqs), the stream with manifests keyed by digest"
        row "v1 ws:// without seqs (the old wire), this appview" "$(num "$L_R")" \
            "$(cpu_of "$A_LEGACY"); runs $(echo "$A_LEGACY" | field runs_events)"
        row "v1 ws:// without seqs, ${BENCH_BASELINE_REF-main}'s appview" "$(num "$B_R")" \
            "this/baseline $(ratio "$L_R" "$B_R"), target 1.0; $(cpu_of "$A_BASE"); runs $(echo "$A_BASE" | field runs_events)"
        row "    each pair's this/baseline, their median" "-" "$(pairs_summary "$PAIRS_EVENTS")"
        LREC=$(echo "$A_LEGACY" | field records_per_s)
        BREC=$(echo "$A_BASE" | field records_per_s)
        row "  io.atcr records/s there: this appview" "$(num "$LREC")" \
            "runs $(echo "$A_LEGACY" | field runs_records)"
        row "  io.atcr records/s there: ${BENCH_BASELINE_REF-main}'s appview" "$(num "$BREC")" \
            "this/baseline $(ratio "$LREC" "$BREC"), target 1.0; runs $(echo "$A_BASE" | field runs_records)"
        row "    each pair's this/baseline, their median" "-" "$(pairs_summary "$PAIRS_RECORDS")"
    else
        row "baseline appview" "-" "not measured (BENCH_BASELINE_REF empty or not buildable)"
    fi
fi
exit $status
