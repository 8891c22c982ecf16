#!/bin/sh
# HTTP layer benchmark: requests/s and p99 of atproto/httpd (tests/tools/httpd_probe answering
# GET /xrpc/echo?a=1 synchronously) next to a one-worker nginx serving a static JSON file of the
# same size, in the same run, with the same wrk settings (default -t1 -c50, as the design asks).
# Run from the repository root after `make build/bin/tools/httpd_probe`.
set -eu
. "$(dirname "$0")/lib.sh"
BIN=${BIN:-build/bin/tools/httpd_probe}
DUR=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNS:-50}
DIR=$(pwd)/var/bench/httpd
rm -rf "$DIR" && mkdir -p "$DIR/www"
command -v wrk >/dev/null || { echo "httpd bench: wrk is not installed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "httpd bench: $BIN is not built" >&2; exit 1; }

NPORT=$(free_port)
PPORT=$(free_port)
while [ "$PPORT" = "$NPORT" ]; do PPORT=$(free_port); done

# The probe's answer to /xrpc/echo?a=1, byte for byte, is what nginx serves.
printf '{"a":{"count":1,"first":"1"}}' >"$DIR/www/echo.json"
start_nginx "$DIR" "$NPORT"
LOG_LEVEL=warn "$BIN" "127.0.0.1:$PPORT" >"$DIR/probe.log" 2>&1 &
PROBE_PID=$!
trap 'kill $NGINX_PID $PROBE_PID 2>/dev/null || true' EXIT

fetch() {
    python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}
for url in "http://127.0.0.1:$NPORT/echo.json" "http://127.0.0.1:$PPORT/xrpc/echo?a=1"; do
    i=0
    until fetch "$url" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -gt 100 ] && { echo "httpd bench: $url did not answer" >&2; cat "$DIR"/*.log >&2; exit 1; }
        sleep 0.1
    done
done
[ "$(fetch "http://127.0.0.1:$PPORT/xrpc/echo?a=1")" = "$(cat "$DIR/www/echo.json")" ] ||
    { echo "httpd bench: probe and nginx bodies differ" >&2; exit 1; }

# wrk's latency lines are like "99%  1.23ms": normalise to milliseconds.
ms() { awk -v p="$1" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.2f", v }' "$2"; }
run() {
    wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$2" >"$DIR/$1.out" 2>&1
    errs=$(awk '/Non-2xx|Socket errors/ {print}' "$DIR/$1.out")
    [ -z "$errs" ] || echo "httpd bench: $1: $errs" >&2
    awk '/^Requests\/sec:/ {print $2}' "$DIR/$1.out" >"$DIR/$1.rps"
    ms 50% "$DIR/$1.out" >"$DIR/$1.p50"
    ms 99% "$DIR/$1.out" >"$DIR/$1.p99"
}
run nginx "http://127.0.0.1:$NPORT/echo.json"
run httpd "http://127.0.0.1:$PPORT/xrpc/echo?a=1"

printf '%-24s %12s %9s %9s\n' "server (wrk -t1 -c$CONNS)" requests/s "p50 ms" "p99 ms"
for s in httpd nginx; do
    printf '%-24s %12.0f %9s %9s\n' $s "$(cat "$DIR/$s.rps")" "$(cat "$DIR/$s.p50")" "$(cat "$DIR/$s.p99")"
done
printf 'httpd / nginx requests/s: %.2f\n' "$(echo "$(cat "$DIR/httpd.rps") $(cat "$DIR/nginx.rps")" |
    awk '{print $1 / $2}')"

kill -TERM $PROBE_PID
wait $PROBE_PID || { echo "httpd_probe exited with an error" >&2; exit 1; }
kill -TERM $NGINX_PID
wait $NGINX_PID 2>/dev/null || true
trap - EXIT
