#!/bin/sh
# Hold benchmark: acknowledged (durable) increments per second through incrementStats,
# single-event and batched requests at 1, 16 and 64 connections, with p50/p99 latency,
# next to the same machine's sqlite3 CLI doing one-row-per-transaction inserts with fsync
# (WAL, synchronous=FULL): the per-request cost the group commit avoids.
# Run from the repository root after `make` (make bench does both).
set -eu
. "$(dirname "$0")/lib.sh"
BIN=${BIN:-build/bin/hold}
DUR=${BENCH_SECONDS:-5}
BATCHES=${BENCH_BATCHES:-100 1000}
DIR=var/bench/hold
PORT=${BENCH_PORT:-18181}
TOKEN=bench-$$
rm -rf "$DIR" && mkdir -p "$DIR"
command -v wrk >/dev/null || { echo "hold bench: wrk is not installed" >&2; exit 1; }

HOLD_LISTEN=127.0.0.1:$PORT HOLD_DB=$DIR/hold.db HOLD_SERVICE_TOKENS=$TOKEN LOG_LEVEL=warn \
    "$BIN" >"$DIR/hold.log" 2>&1 &
HOLD_PID=$!
trap 'kill $HOLD_PID 2>/dev/null || true' EXIT
BASE=http://127.0.0.1:$PORT
await_url hold "$BASE/xrpc/_health" || { cat "$DIR/hold.log" >&2; exit 1; }

applied() { fetch "$BASE/metrics" | awk '$1 == "hold_increments_applied_total" {print $2}'; }
commits() { fetch "$BASE/metrics" | awk '$1 == "hold_commits_total" {print $2}'; }


printf '%-9s %5s %14s %12s %10s %10s %9s %8s\n' mode conns "increments/s" "requests/s" "p50 ms" \
    "p99 ms" "per-fsync" errors
for n in 1 $BATCHES; do
    mode=single; [ "$n" -gt 1 ] && mode=batch$n
    for c in 1 16 64; do
        t=1; [ $c -gt 1 ] && t=2
        a0=$(applied); k0=$(commits)
        HOLD_BENCH_TOKEN=$TOKEN wrk -t$t -c$c -d${DUR}s --latency -s bench/hold_incr.lua "$BASE" -- $n \
            >"$DIR/wrk.out" 2>&1
        a1=$(applied); k1=$(commits)
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$DIR/wrk.out")
        errs=$(awk '/Non-2xx/ {print $NF}' "$DIR/wrk.out")
        secs=$(awk '/requests in/ {v=$(NF-2); sub(/,$/, "", v); u=v; sub(/[0-9.]+/, "", u);
            sub(/[a-z]+$/, "", v); if (u == "m") v *= 60; print v}' "$DIR/wrk.out")
        printf '%-9s %5d %14.0f %12.0f %10s %10s %9.1f %8s\n' $mode $c \
            "$(echo "$a1 $a0 $secs" | awk '{print ($1 - $2) / $3}')" "$rps" \
            "$(_wrk_ms 50% "$DIR/wrk.out")" "$(_wrk_ms 99% "$DIR/wrk.out")" \
            "$(echo "$a1 $a0 $k1 $k0" | awk '{d = $3 - $4; print d ? ($1 - $2) / d : 0}')" \
            "${errs:-0}"
    done
done

# Ceiling of the HTTP layer in the same run: a GET answered synchronously (did.json).
wrk -t2 -c64 -d${DUR}s --latency "$BASE/.well-known/did.json" >"$DIR/wrk.out" 2>&1
printf 'http ceiling: GET did.json (no store) at 64 connections: %.0f requests/s, p50 %s ms, p99 %s ms\n' \
    "$(awk '/^Requests\/sec:/ {print $2}' "$DIR/wrk.out")" "$(_wrk_ms 50% "$DIR/wrk.out")" \
    "$(_wrk_ms 99% "$DIR/wrk.out")"

# Yardstick: the same durability paid per row, by the sqlite3 CLI.
Y=$DIR/yardstick.db
rows=${YARDSTICK_ROWS:-2000}
sqlite3 "$Y" "PRAGMA journal_mode=WAL;" "CREATE TABLE t(k TEXT, v INTEGER);" >/dev/null
awk -v n="$rows" 'BEGIN { print "PRAGMA synchronous=FULL;";
    for (i = 0; i < n; i++) printf "BEGIN; INSERT INTO t VALUES(%c%d%c, 1); COMMIT;\n", 39, i, 39 }' \
    >"$DIR/yardstick.sql"
t0=$(date +%s.%N)
sqlite3 "$Y" <"$DIR/yardstick.sql" >/dev/null
t1=$(date +%s.%N)
printf 'yardstick: sqlite3 CLI, WAL + synchronous=FULL, one row per transaction: %.0f rows/s (%d rows in %.2fs)\n' \
    "$(echo "$rows $t0 $t1" | awk '{print $1 / ($3 - $2)}')" "$rows" \
    "$(echo "$t0 $t1" | awk '{print $2 - $1}')"
kill -TERM $HOLD_PID
wait $HOLD_PID || { echo "hold exited with an error" >&2; exit 1; }
trap - EXIT
