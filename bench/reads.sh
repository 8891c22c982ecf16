#!/bin/sh
# Warm-path XRPC read benchmark: requests/s and p99 of bin/appview answering
# io.atcr.repo.listTags from Valkey (a complete index of one repository with BENCH_TAGS tags,
# seeded through the loader's write path, tests/tools/fold_records) next to a one-worker nginx serving the
# same response body as a static file, in the same run, with the same wrk settings (-t1 -c50).
# Target (issue 2): appview >= 0.5 x nginx requests/s, p99 < 5 ms.
# Run from the repository root after `make build/bin/appview` (BIN= to use another build).
set -eu
. "$(dirname "$0")/lib.sh"
BIN=${BIN:-build/bin/appview}
DUR=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNS:-50}
TAGS=${BENCH_TAGS:-10}
DIR=$(pwd)/var/bench/reads
rm -rf "$DIR" && mkdir -p "$DIR/www" "$DIR/redis" "$DIR/tmp"
command -v wrk >/dev/null || { echo "reads bench: wrk is not installed" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "reads bench: redis-server is not installed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "reads bench: $BIN is not built" >&2; exit 1; }

RPORT=$(free_port)
NPORT=$(free_port)
APORT=$(free_port)
DID=did:plc:benchbenchbenchbenchbenc

redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$DIR/redis" --save '' --appendonly no \
    >"$DIR/redis.log" 2>&1 &
REDIS_PID=$!
trap 'kill $REDIS_PID 2>/dev/null || true' EXIT
i=0
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -gt 100 ] && { echo "reads bench: redis-server did not start" >&2; exit 1; }
    sleep 0.1
done

# The seeding code of the integration test: records folded as the loader folds them.
python3 - "$RPORT" "$DID" "$TAGS" "$(dirname "$BIN")" <<'EOF'
import sys
sys.path[:0] = ["tests/lib", "tests/integration"]
import records
import test_reads as t
port, did, n, bindir = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]

class Redis:
    url = f"redis://127.0.0.1:{port}/0"
    port = int(sys.argv[1])

class Harness:  # what records.Seeder asks of the test harness
    root = "."
    def binary(self, name):
        return f"{bindir}/{name}"
    def redis(self, r, *args):
        import subprocess
        subprocess.run(["redis-cli", "-p", str(r.port), *map(str, args)], check=True,
                       capture_output=True)

s = records.Seeder(Harness(), Redis(), "atcr:")
for i in range(n):
    s.manifest(did, "app", t.digest(i), t.T0 + i * 1000)
    s.tag(did, "app", "v1.%d.0" % i, t.digest(i), t.T0 + i * 1000 + 500)
s.complete(did)
EOF

APPVIEW_VALKEY_URL="redis://127.0.0.1:$RPORT/0" APPVIEW_LISTEN="127.0.0.1:$APORT" \
    APPVIEW_INGEST=off LOG_LEVEL=warn "$BIN" >"$DIR/appview.log" 2>&1 &
APPVIEW_PID=$!
start_nginx "$DIR" "$NPORT"
trap 'kill $NGINX_PID $APPVIEW_PID $REDIS_PID 2>/dev/null || true' EXIT

URL="http://127.0.0.1:$APORT/xrpc/io.atcr.repo.listTags?actor=$DID&repository=app"
await_url appview "$URL" "$DIR/www/tags.json" || { cat "$DIR"/*.log >&2; exit 1; }
grep -q "\"tag\":\"v1.$((TAGS - 1)).0\"" "$DIR/www/tags.json" ||
    { echo "reads bench: unexpected listTags answer: $(cat "$DIR/www/tags.json")" >&2; exit 1; }
await_url nginx "http://127.0.0.1:$NPORT/tags.json" || exit 1

# CPU time (user + system, in clock ticks) of a process so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

printf 'listTags, %d tags, %d-byte body, warm cache\n' "$TAGS" "$(wc -c <"$DIR/www/tags.json")"
A0=$(cpu_ticks $APPVIEW_PID)
R0=$(cpu_ticks $REDIS_PID)
wrk_vs_nginx "$DIR" appview "$URL" "http://127.0.0.1:$NPORT/tags.json" "$CONNS" "$DUR"
A1=$(cpu_ticks $APPVIEW_PID)
R1=$(cpu_ticks $REDIS_PID)
# The appview is one thread: its CPU per request bounds its requests/s, and Valkey's competes
# for the same cores. (Both idle while nginx is measured.)
awk -v a=$((A1 - A0)) -v r=$((R1 - R0)) -v hz="$(getconf CLK_TCK)" \
    '/requests in/ { if ($1 > 0) printf "CPU per request: appview %.1f us, valkey %.1f us\n",
                         a * 1e6 / hz / $1, r * 1e6 / hz / $1 }' "$DIR/appview.out"
printf 'targets: appview / nginx >= 0.5 (%s), appview p99 < 5 ms (%s ms)\n' "$VS_RATIO" "$VS_P99"

kill -TERM $APPVIEW_PID
wait $APPVIEW_PID || { echo "appview exited with an error" >&2; exit 1; }
kill -TERM $NGINX_PID $REDIS_PID
wait $NGINX_PID 2>/dev/null || true
wait $REDIS_PID 2>/dev/null || true
trap - EXIT
