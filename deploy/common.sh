# Shared by deploy/run-local.sh and deploy/demo.sh (sourced, not run): process supervision.
# Only POSIX sh, redis-tools and python3 are assumed (what `make run` and `make demo` install); HTTP goes
# through deploy/xrpc.py because curl may be absent on a fresh Debian 12.

# Every script works from the repository root, so relative paths (lexicons/, var/) resolve.
cd "$(dirname "$0")/.." || exit 1
BIN_DIR=${BIN_DIR:-build/bin}
HTTP="python3 deploy/xrpc.py"

CHILDREN=""

die() {
    echo "$SCRIPT: $*" >&2
    exit 1
}

need_bin() {
    [ -x "$1" ] || die "$1 is missing; build it first (make)"
}

# start COMMAND...: runs COMMAND in the background; its pid is left in STARTED.
# setsid keeps it out of the terminal's process group: Ctrl-C reaches only this script, whose
# trap then stops the children one at a time in order, each with a single signal (a second
# one during a drain would cut the drain short). The child is not a process group leader, so
# setsid execs in place and $! stays its pid.
start() {
    setsid "$@" &
    STARTED=$!
    CHILDREN="$STARTED $CHILDREN"
}

# stop_all: SIGTERM each child in reverse start order and wait for it, so the appview drains
# its writes into Valkey before Valkey goes away. Returns non-zero when a child exited badly.
stop_all() {
    status=0
    for pid in $CHILDREN; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid"
        rc=$?
        # 143: ended by our SIGTERM before it installed a handler (still a clean stop).
        if [ "$rc" != 0 ] && [ "$rc" != 143 ]; then
            echo "$SCRIPT: process $pid exited with status $rc" >&2
            status=1
        fi
    done
    CHILDREN=""
    return $status
}

alive() {
    kill -0 "$1" 2>/dev/null
}

# wait_valkey PORT PID: until redis-server answers PING (10 s).
wait_valkey() {
    i=0
    until [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; do
        alive "$2" || die "redis-server exited during start-up (see its log)"
        i=$((i + 1))
        [ $i -lt 200 ] || die "redis-server on port $1 did not answer PING"
        sleep 0.05
    done
}

# wait_http URL PID: until URL answers 2xx (20 s).
wait_http() {
    $HTTP wait "$1" "$2" 20 || die "$1 did not come up"
}

# new_token: 32 random bytes, hex.
new_token() {
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}
