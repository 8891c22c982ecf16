# Shared by the bench/*.sh scripts: sourced, not run.

# After kill_started_on_exit, the processes in PIDS (add each with PIDS="$PIDS $!") are killed
# and reaped when the script exits or is interrupted.
PIDS=""
# shellcheck disable=SC2317 # called by the trap
kill_started() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $PIDS; do wait "$p" 2>/dev/null || true; done
}
kill_started_on_exit() {
    trap kill_started EXIT
    trap 'exit 130' INT TERM
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_nginx DIR PORT: a one-worker nginx serving DIR/www on 127.0.0.1:PORT, the yardstick the
# HTTP benchmarks compare against. Sets NGINX_PID.
start_nginx() {
    _dir=$1
    _port=$2
    _nginx=nginx
    command -v nginx >/dev/null || _nginx=/usr/sbin/nginx
    mkdir -p "$_dir/tmp" "$_dir/www"
    cat >"$_dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $_dir/nginx.pid;
error_log $_dir/nginx.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 100000;
    client_body_temp_path $_dir/tmp;
    proxy_temp_path $_dir/tmp;
    fastcgi_temp_path $_dir/tmp;
    uwsgi_temp_path $_dir/tmp;
    scgi_temp_path $_dir/tmp;
    server {
        listen 127.0.0.1:$_port;
        location / { root $_dir/www; }
    }
}
CONF
    "$_nginx" -c "$_dir/nginx.conf" -p "$_dir" >"$_dir/nginx.log" 2>&1 &
    NGINX_PID=$!
}

fetch() {
    python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}

# await_url WHAT URL [OUT]: waits up to 10 s for URL to answer 2xx (body into OUT if given).
await_url() {
    _i=0
    until fetch "$2" >"${3:-/dev/null}" 2>/dev/null; do
        _i=$((_i + 1))
        [ $_i -gt 100 ] && { echo "bench: $1 did not answer at $2" >&2; return 1; }
        sleep 0.1
    done
}

# wrk's latency lines are like "99%  1.23ms": normalise to milliseconds.
_wrk_ms() {
    awk -v p="$1" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        if (u == "us") v /= 1000; else if (u == "s") v *= 1000; printf "%.2f", v }' "$2"
}

# wrk_vs_nginx DIR NAME URL NGINX_URL CONNS SECONDS: wrk -t1 against our server and against
# nginx serving the same body, one after the other in the same run; prints the table and sets
# VS_RATIO (ours / nginx requests/s) and VS_P99 (our p99 in ms).
wrk_vs_nginx() {
    for _s in nginx "$2"; do
        _url=$3
        [ "$_s" = nginx ] && _url=$4
        wrk -t1 -c"$5" -d"$6s" --latency "$_url" >"$1/$_s.out" 2>&1
        _errs=$(awk '/Non-2xx|Socket errors/ {print}' "$1/$_s.out")
        [ -z "$_errs" ] || echo "bench: $_s: $_errs" >&2
    done
    printf '%-24s %12s %9s %9s\n' "server (wrk -t1 -c$5)" requests/s "p50 ms" "p99 ms"
    for _s in "$2" nginx; do
        printf '%-24s %12.0f %9s %9s\n' "$_s" "$(awk '/^Requests\/sec:/ {print $2}' "$1/$_s.out")" \
            "$(_wrk_ms 50% "$1/$_s.out")" "$(_wrk_ms 99% "$1/$_s.out")"
    done
    VS_RATIO=$(awk '/^Requests\/sec:/ {print $2}' "$1/$2.out" "$1/nginx.out" |
        awk 'NR == 1 {a = $1} NR == 2 {printf "%.2f", a / $1}')
    VS_P99=$(_wrk_ms 99% "$1/$2.out")
    printf '%s / nginx requests/s: %s\n' "$2" "$VS_RATIO"
}
