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

await_url nginx "http://127.0.0.1:$NPORT/echo.json" || exit 1
await_url httpd_probe "http://127.0.0.1:$PPORT/xrpc/echo?a=1" || { cat "$DIR"/*.log >&2; exit 1; }
[ "$(fetch "http://127.0.0.1:$PPORT/xrpc/echo?a=1")" = "$(cat "$DIR/www/echo.json")" ] ||
    { echo "httpd bench: probe and nginx bodies differ" >&2; exit 1; }

wrk_vs_nginx "$DIR" httpd "http://127.0.0.1:$PPORT/xrpc/echo?a=1" "http://127.0.0.1:$NPORT/echo.json" \
    "$CONNS" "$DUR"

kill -TERM $PROBE_PID
wait $PROBE_PID || { echo "httpd_probe exited with an error" >&2; exit 1; }
kill -TERM $NGINX_PID
wait $NGINX_PID 2>/dev/null || true
trap - EXIT
