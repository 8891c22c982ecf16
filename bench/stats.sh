#!/bin/sh
# io.atcr.repo.getStats benchmark (issue 5), two parts in one run:
#  (a) warm cache: requests/s, p50 and p99 of bin/appview answering getStats from its cached
#      aggregate in Valkey, next to a one-worker nginx serving the same body as a static file,
#      same wrk settings (-t1 -c50).
#  (b) cold: one client, the cached aggregate deleted from Valkey before every sample (the
#      `P{D}/repo/<R>/stats` key of cache/SCHEMA.md), so each sample is a full fan-out to 1, 4
#      or 16 real bin/hold processes; next to one hold's own io.atcr.hold.getStats latency from
#      the same client, and the 16 holds asked one after another by that client (what a
#      sequential fan-out would cost). With a parallel fan-out 16 holds should cost close to
#      one. Hold endpoints (their did.json) are resolved once and stay cached, as in production.
# Run from the repository root after `make` (BIN=, HOLD_BIN= to use another build).
set -eu
. "$(dirname "$0")/lib.sh"
BIN=${BIN:-build/bin/appview}
HOLD_BIN=${HOLD_BIN:-build/bin/hold}
DUR=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNS:-50}
SAMPLES=${BENCH_STATS_SAMPLES:-200}
FANOUT=${BENCH_STATS_CONCURRENCY:-8}
NHOLDS=16
DIR=$(pwd)/var/bench/stats
rm -rf "$DIR" && mkdir -p "$DIR/www" "$DIR/redis" "$DIR/tmp" "$DIR/holds" "$DIR/data"
for c in wrk redis-server redis-cli; do
    command -v $c >/dev/null || { echo "stats bench: $c is not installed" >&2; exit 1; }
done
for b in "$BIN" "$HOLD_BIN"; do
    [ -x "$b" ] || { echo "stats bench: $b is not built" >&2; exit 1; }
done

DID=did:plc:benchstatsbenchstatsbenc
TOKEN=bench-stats-$$
PIDS=""
trap 'kill $PIDS 2>/dev/null || true' EXIT

RPORT=$(free_port)
NPORT=$(free_port)
APORT=$(free_port)
# All hold ports at once, each still bound while the next is chosen, so no two are the same.
HPORTS=$(python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' $NHOLDS)

redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$DIR/redis" --save '' --appendonly no \
    >"$DIR/redis.log" 2>&1 &
PIDS="$PIDS $!"
i=0
for p in $HPORTS; do
    i=$((i + 1))
    HOLD_LISTEN=127.0.0.1:$p HOLD_DB=$DIR/holds/$i.db HOLD_SERVICE_TOKENS=$TOKEN \
        HOLD_PUBLIC_URL=http://127.0.0.1:$p LOG_LEVEL=warn "$HOLD_BIN" >"$DIR/holds/$i.log" 2>&1 &
    PIDS="$PIDS $!"
done
i=0
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -gt 100 ] && { echo "stats bench: redis-server did not start" >&2; exit 1; }
    sleep 0.1
done

# Counts on the holds (hold k has k pulls and 1 push of each repository it serves) and the
# index the fold would have written: repository rN has N manifests, one per hold 1..N, and
# "warm" one manifest on hold 1.
python3 - "$RPORT" "$DID" "$TOKEN" $HPORTS <<'EOF' || { cat "$DIR"/holds/*.log >&2; exit 1; }
import json, sys, time, urllib.request
sys.path[:0] = ["tests/lib", "tests/integration"]
import test_reads as t
rport, did, token, ports = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
repos = {"warm": 1, "r1": 1, "r4": 4, "r16": 16}

def call(url, body=None):
    req = urllib.request.Request(url, data=body and json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=5).read()

for k, port in enumerate(ports, 1):
    base = "http://127.0.0.1:%s" % port
    for _ in range(100):
        try:
            call(base + "/xrpc/_health")
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit("hold on port %s did not start" % port)
    events = [{"did": did, "repository": r, "event": e, "count": c}
              for r, n in repos.items() if k <= n for e, c in (("pull", k), ("push", 1))]
    call(base + "/xrpc/io.atcr.hold.incrementStats", {"events": events})
s = t.Seeder(rport)
for salt, (repo, n) in zip("abcd", repos.items()):
    for k in range(n):
        s.manifest(did, repo, t.digest(k, salt), t.T0 + k,
                   hold="did:web:127.0.0.1%%3A%s" % ports[k])
s.complete(did)
EOF

APPVIEW_VALKEY_URL="redis://127.0.0.1:$RPORT/0" APPVIEW_LISTEN="127.0.0.1:$APORT" \
    APPVIEW_INGEST=off APPVIEW_PLC_URL=http://127.0.0.1:1 APPVIEW_ALLOW_PRIVATE_NETWORKS=on \
    APPVIEW_STATS_TTL=3600 APPVIEW_STATS_CONCURRENCY="$FANOUT" APPVIEW_DATA_DIR="$DIR/data" APPVIEW_DOCKERHUB_URL=http://127.0.0.1:1 \
    LOG_LEVEL=warn "$BIN" >"$DIR/appview.log" 2>&1 &
APPVIEW_PID=$!
PIDS="$PIDS $APPVIEW_PID"
start_nginx "$DIR" "$NPORT"
PIDS="$PIDS $NGINX_PID"

URL="http://127.0.0.1:$APORT/xrpc/io.atcr.repo.getStats?actor=$DID&repository=warm"
await_url appview "$URL" "$DIR/www/stats.json" || { cat "$DIR"/*.log >&2; exit 1; }
if ! grep -q '"status":"ok"' "$DIR/www/stats.json" || ! grep -q '"pullCount":1,' "$DIR/www/stats.json"; then
    echo "stats bench: unexpected getStats answer: $(cat "$DIR/www/stats.json")" >&2
    exit 1
fi
await_url nginx "http://127.0.0.1:$NPORT/stats.json" || exit 1

printf '(a) getStats, warm cache (1 hold), %d-byte body\n' "$(wc -c <"$DIR/www/stats.json")"
wrk_vs_nginx "$DIR" appview "$URL" "http://127.0.0.1:$NPORT/stats.json" "$CONNS" "$DUR"
echo

# (b) One client, one request at a time; every appview sample must be a real fan-out, which
# the appview's own hold request counter confirms.
python3 - "$APORT" "$RPORT" "$DID" "$SAMPLES" "$FANOUT" $HPORTS <<'EOF'
import http.client, json, sys, time, urllib.parse
sys.path[:0] = ["tests/lib", "tests/integration"]
import test_reads as t
aport, rport, did = sys.argv[1], int(sys.argv[2]), sys.argv[3]
samples, fanout, hports = int(sys.argv[4]), sys.argv[5], sys.argv[6:]
r = t.Resp(rport)

class Client:
    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path):
        t0 = time.perf_counter()
        self.conn.request("GET", path)
        res = self.conn.getresponse()
        body = res.read()
        took = (time.perf_counter() - t0) * 1000
        if res.status != 200:
            sys.exit("stats bench: %s -> %d %s" % (path, res.status, body[:200]))
        return took, body

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]

def hold_requests(app):
    _, body = app.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith("appview_hold_requests_total "):
            return float(line.split()[1])
    return 0.0

app, holds = Client(aport), [Client(p) for p in hports]
rows = []
q = "/xrpc/io.atcr.hold.getStats?" + urllib.parse.urlencode({"did": did, "repository": "r16"})
rows.append(("hold getStats, its own", [holds[0].get(q)[0] for _ in range(samples)]))
# What asking one after another would cost, from this client: the sequential yardstick.
rows.append(("16 holds, one after another", [sum(h.get(q)[0] for h in holds)
                                              for _ in range(samples)]))
for n in (1, 4, 16):
    repo = "r%d" % n
    path = "/xrpc/io.atcr.repo.getStats?" + urllib.parse.urlencode({"actor": did, "repository": repo})
    key = "atcr:{%s}/repo/%s/stats" % (did, repo)
    _, body = app.get(path)  # resolves the holds' endpoints, checks the sum
    b = json.loads(body)
    if b["pullCount"] != n * (n + 1) // 2 or [h["status"] for h in b["holds"]] != ["ok"] * n:
        sys.exit("stats bench: unexpected answer for %s: %s" % (repo, body[:300]))
    before = hold_requests(app)
    times = []
    uncached = 0
    for _ in range(samples):
        # The appview caches the aggregate just after answering: delete it once it is there,
        # so the next sample cannot find it. One that is never cached is reported.
        for _ in range(200 if uncached == 0 else 1):
            if r.cmd("DEL", key) == 1:
                break
            time.sleep(0.0005)
        else:
            uncached += 1
        times.append(app.get(path)[0])
    if uncached:
        print("stats bench: warning: the appview did not cache the aggregate of %d holds"
              " (%s/repo/%s/stats never written)" % (n, did, repo), file=sys.stderr)
    asked = hold_requests(app) - before
    if asked != n * samples:
        print("stats bench: warning: %d holds asked for %d samples of %d holds (cache hits?)"
              % (asked, samples, n), file=sys.stderr)
    rows.append(("appview getStats, %d hold%s" % (n, "s" if n > 1 else ""), times))

print("(b) getStats, cold aggregate (deleted before each sample), one client, %d samples each,"
      " APPVIEW_STATS_CONCURRENCY=%s" % (samples, fanout))
print("%-28s %9s %9s %9s" % ("request", "p50 ms", "p99 ms", "max ms"))
for name, v in rows:
    print("%-28s %9.2f %9.2f %9.2f" % (name, pct(v, 50), pct(v, 99), max(v)))
p50 = {name: pct(v, 50) for name, v in rows}
print("p50 ratios: 16 holds / 1 hold %.2f; 16 holds / one after another %.2f; 1 hold / the"
      " hold's own %.2f" % (p50["appview getStats, 16 holds"] / p50["appview getStats, 1 hold"],
                            p50["appview getStats, 16 holds"] / p50["16 holds, one after another"],
                            p50["appview getStats, 1 hold"] / p50["hold getStats, its own"]))
EOF

kill -TERM $APPVIEW_PID
wait $APPVIEW_PID || { echo "appview exited with an error" >&2; exit 1; }
kill -TERM $PIDS 2>/dev/null || true
wait 2>/dev/null || true
trap - EXIT
