#!/bin/sh
# Warm-path XRPC read benchmark: requests/s and p99 of bin/appview answering
# io.atcr.repo.listTags from Valkey (a complete index of one repository with BENCH_TAGS tags,
# seeded through cache/apply.lua as the fold writes it) next to a one-worker nginx serving the
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

# The seeding code of the integration test: the same keys the fold writes.
python3 - "$RPORT" "$DID" "$TAGS" <<'EOF'
import sys
sys.path[:0] = ["tests/lib", "tests/integration"]
import test_reads as t
port, did, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = t.Seeder(port)
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

fetch() {
    python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}
URL="http://127.0.0.1:$APORT/xrpc/io.atcr.repo.listTags?actor=$DID&repository=app"
i=0
until fetch "$URL" >"$DIR/www/tags.json" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 100 ] && { echo "reads bench: appview did not answer" >&2; cat "$DIR"/*.log >&2; exit 1; }
    sleep 0.1
done
grep -q "\"tag\":\"v1.$((TAGS - 1)).0\"" "$DIR/www/tags.json" ||
    { echo "reads bench: unexpected listTags answer: $(cat "$DIR/www/tags.json")" >&2; exit 1; }
i=0
until fetch "http://127.0.0.1:$NPORT/tags.json" >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -gt 100 ] && { echo "reads bench: nginx did not answer" >&2; cat "$DIR"/nginx.* >&2; exit 1; }
    sleep 0.1
done

# wrk's latency lines are like "99%  1.23ms": normalise to milliseconds.
ms() { awk -v p="$1" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.2f", v }' "$2"; }
run() {
    wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$2" >"$DIR/$1.out" 2>&1
    errs=$(awk '/Non-2xx|Socket errors/ {print}' "$DIR/$1.out")
    [ -z "$errs" ] || echo "reads bench: $1: $errs" >&2
    awk '/^Requests\/sec:/ {print $2}' "$DIR/$1.out" >"$DIR/$1.rps"
    ms 50% "$DIR/$1.out" >"$DIR/$1.p50"
    ms 99% "$DIR/$1.out" >"$DIR/$1.p99"
}
run nginx "http://127.0.0.1:$NPORT/tags.json"
run appview "$URL"

printf 'listTags, %d tags, %d-byte body, warm cache\n' "$TAGS" "$(wc -c <"$DIR/www/tags.json")"
printf '%-24s %12s %9s %9s\n' "server (wrk -t1 -c$CONNS)" requests/s "p50 ms" "p99 ms"
for s in appview nginx; do
    printf '%-24s %12.0f %9s %9s\n' $s "$(cat "$DIR/$s.rps")" "$(cat "$DIR/$s.p50")" "$(cat "$DIR/$s.p99")"
done
printf 'appview / nginx requests/s: %.2f (target >= 0.5), appview p99 %s ms (target < 5)\n' \
    "$(echo "$(cat "$DIR/appview.rps") $(cat "$DIR/nginx.rps")" | awk '{print $1 / $2}')" \
    "$(cat "$DIR/appview.p99")"

kill -TERM $APPVIEW_PID
wait $APPVIEW_PID || { echo "appview exited with an error" >&2; exit 1; }
kill -TERM $NGINX_PID $REDIS_PID
wait $NGINX_PID 2>/dev/null || true
wait $REDIS_PID 2>/dev/null || true
trap - EXIT
