#!/bin/sh
# Backfill benchmark (issue 18): `bin/appview backfill` of a synthetic network served from memory
# by tests/tools/net_standin (a relay's listReposByCollection, a PLC directory, PDS hosts), into a
# fresh redis-server: DIDs/s, records/s and the upstream requests/s the appview made, next to the
# yardstick measured in the same run: the stand-in's own listRecords rate under wrk at the same
# concurrency (what the upstream could give; the appview's work per DID is a PLC document, a
# getLatestCommit and a listRecords per collection, then Valkey), and a second one: the same
# upstream requests the appview made, fetched by a bare client on the appview's own HTTP stack
# (tests/tools/http_fetch, atproto/http_client) with the same per-host limit, so the gap between
# the two is what loading costs beyond the HTTP. Then the same network four times larger, for
# the peak RSS: it should not grow with the DID count.
# Run from the repository root after `make` (make bench does both).
#   BENCH_DIDS=N (default 2000), BENCH_MANIFESTS=M and BENCH_TAGS=T per DID (10, 5),
#   BENCH_HOSTS=H PDS hosts (4), BENCH_CONCURRENCY=C (16), BENCH_PER_HOST (C / H)
set -eu
. "$(dirname "$0")/lib.sh"
BIN=${BIN_DIR:-build/bin}
N=${BENCH_DIDS:-2000}
M=${BENCH_MANIFESTS:-10}
T=${BENCH_TAGS:-5}
H=${BENCH_HOSTS:-4}
C=${BENCH_CONCURRENCY:-16}
PER_HOST=${BENCH_PER_HOST:-$(((C + H - 1) / H))}
DIR=$(pwd)/var/bench/backfill
rm -rf "$DIR" && mkdir -p "$DIR"
[ -x "$BIN/appview" ] || { echo "backfill bench: $BIN/appview not built (make)" >&2; exit 1; }
for t in net_standin http_fetch; do
    [ -x "$BIN/tools/$t" ] || make -s "$BIN/tools/$t" >/dev/null
done
command -v redis-server >/dev/null || { echo "backfill bench: redis-server needed" >&2; exit 1; }
command -v wrk >/dev/null || { echo "backfill bench: wrk needed" >&2; exit 1; }

BIN="$BIN" DIR="$DIR" N="$N" M="$M" T="$T" H="$H" C="$C" PER_HOST="$PER_HOST" python3 - <<'EOF'
import json, os, subprocess, sys, time, urllib.request
sys.path.insert(0, "bench")
from valkey_alone import free_port, measure
BIN, DIR = os.environ["BIN"], os.environ["DIR"]
N, M, T, H, C, PER_HOST = (int(os.environ[k]) for k in ("N", "M", "T", "H", "C", "PER_HOST"))
procs = []


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def standin(dids):
    p = subprocess.Popen([f"{BIN}/tools/net_standin", "--dids", str(dids), "--manifests", str(M),
                          "--tags", str(T), "--hosts", str(H)], stdout=subprocess.PIPE,
                         stderr=open(f"{DIR}/standin.log", "ab"))
    procs.append(p)
    return p, json.loads(p.stdout.readline())


def redis():
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save",
                          "", "--appendonly", "no", "--dir", DIR], stdout=subprocess.DEVNULL)
    procs.append(p)
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                          text=True).stdout.strip() == "PONG":
            return p, port
        time.sleep(0.05)
    raise SystemExit("backfill bench: redis-server did not start")


def backfill(net, port, name):
    """Runs the command; returns (seconds, peak RSS in KiB, its summary line)."""
    env = dict(os.environ, APPVIEW_VALKEY_URL=f"redis://127.0.0.1:{port}/0",
               APPVIEW_PLC_URL=net["plc"], APPVIEW_ALLOW_PRIVATE_NETWORKS="1",
               APPVIEW_LEXICON_DIR="lexicons", APPVIEW_BACKFILL_CONCURRENCY=str(C),
               APPVIEW_BACKFILL_PER_HOST=str(PER_HOST), LOG_LEVEL="warn")
    log = open(f"{DIR}/{name}.log", "wb")
    t0 = time.monotonic()
    p = subprocess.Popen([f"{BIN}/appview", "backfill", "--relay", net["relay"]], env=env,
                         stdout=log, stderr=log)
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"backfill bench: {name} exited {p.returncode}: see {DIR}/{name}.log")
    return secs, peak


def wrk_list_records(net, conns, seconds=5):
    """The stand-in's own listRecords rate (requests/s), DIDs taken in turn, one page each."""
    script = f"{DIR}/list.lua"
    with open(script, "w") as f:
        f.write(f"""
local b32 = "abcdefghijklmnopqrstuvwxyz234567"
local i = 0
request = function()
  i = (i + 1) % {N}
  local n, s = i, ""
  for _ = 1, 8 do
    local k = n % 32
    s = string.sub(b32, k + 1, k + 1) .. s
    n = math.floor(n / 32)
  end
  return wrk.format("GET", "/xrpc/com.atproto.repo.listRecords?repo=did:plc:backfillstandina"
    .. s .. "&collection=io.atcr.manifest&limit=100")
end
""")
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", script,
                          net["pds"][0]], capture_output=True, text=True).stdout
    rate = next(float(l.split()[1]) for l in out.splitlines() if l.startswith("Requests/sec:"))
    if "Non-2xx" in out:
        raise SystemExit("backfill bench: the stand-in answered errors under wrk:\n" + out)
    return rate


def bare_client(net):
    """The appview's upstream requests for every DID (PLC document, getLatestCommit, a
    listRecords per collection: one page each here), fetched by http_fetch; requests/s."""
    import urllib.parse
    b32 = "abcdefghijklmnopqrstuvwxyz234567"
    urls = []
    for i in range(N):
        did = "did:plc:backfillstandina" + "".join(b32[(i >> (5 * k)) & 31] for k in range(7, -1, -1))
        pds, q = net["pds"][i % H], urllib.parse.quote(did)
        urls += [f"{net['plc']}/{q}", f"{pds}/xrpc/com.atproto.sync.getLatestCommit?did={q}"]
        urls += [f"{pds}/xrpc/com.atproto.repo.listRecords?repo={q}&collection={c}&limit=100"
                 for c in ("io.atcr.manifest", "io.atcr.tag")]
    with open(f"{DIR}/urls", "w") as f:
        f.write("\n".join(urls) + "\n")
    t0 = time.monotonic()
    out = subprocess.run([f"{BIN}/tools/http_fetch", "--allow-private", "--allow-http",
                          "--max-per-host", str(2 * PER_HOST), "--urls", f"{DIR}/urls"],
                         capture_output=True, text=True)
    secs = time.monotonic() - t0
    bad = [l for l in out.stdout.splitlines() if '"status":200' not in l]
    if out.returncode or bad or len(out.stdout.splitlines()) != len(urls):
        raise SystemExit(f"backfill bench: http_fetch failed: {out.stderr[-500:]} {bad[:2]}")
    return len(urls) / secs


def valkey_alone(net, records):
    """Seconds Valkey alone takes for the backfill's own commands: one more backfill into a
    server whose MONITOR records them, replayed by bench/valkey_alone.py (the median of five
    replays into a fresh server). What the appview cannot beat however little it costs itself."""
    cp, cport = redis()
    with open(f"{DIR}/monitor.txt", "wb") as out:
        mon = subprocess.Popen(["redis-cli", "-p", str(cport), "MONITOR"], stdout=out,
                               stderr=subprocess.DEVNULL)
        procs.append(mon)
        time.sleep(0.2)
        backfill(net, cport, "capture")
        time.sleep(0.2)
        mon.terminate()
        mon.wait()
    cp.terminate()
    try:
        figures = measure(f"{DIR}/monitor.txt", records, DIR)
    except RuntimeError as e:
        raise SystemExit(f"backfill bench: Valkey alone: {e}")
    os.unlink(f"{DIR}/monitor.txt")
    return float(figures["seconds"])


try:
    sp, net = standin(N)
    rp, port = redis()
    before = get(net["plc"] + "/_stats")
    secs, peak = backfill(net, port, "appview")
    after = get(net["plc"] + "/_stats")
    requests = sum(after[k] - before[k] for k in after)
    lists = after["listRecords"] - before["listRecords"]
    state = dict(zip(*[iter(subprocess.run(["redis-cli", "-p", str(port), "--raw", "HGETALL",
                                            "atcr:backfill{bf}"], capture_output=True,
                                           text=True).stdout.split("\n"))] * 2))
    done, records = int(state["done"]), int(state["records"])
    assert done == net["listed"] and records == net["records"], (state, net)
    yard = wrk_list_records(net, C)
    bare = bare_client(net)
    alone = valkey_alone(net, records)
    print(f"backfill: {N} DIDs x ({M} manifests + {T} tags) on {H} PDS hosts, concurrency {C} "
          f"({PER_HOST} per host), net_standin serving from memory, into a fresh redis-server")
    print(f"  appview backfill      {secs:6.2f} s  {done / secs:8.0f} DIDs/s  "
          f"{records / secs:9.0f} records/s  {requests / secs:8.0f} upstream requests/s "
          f"({lists / secs:.0f} listRecords/s)  peak RSS {peak / 1024:.1f} MiB")
    print(f"  yardstick: stand-in listRecords under wrk -c{C}  {yard:8.0f} requests/s "
          f"= {yard * M:9.0f} records/s")
    print(f"  yardstick: the same {requests} requests by a bare http_client "
          f"(max {2 * PER_HOST} per host)  {bare:8.0f} requests/s")
    print(f"  appview / stand-in listRecords: records/s {records / secs / (yard * M):.2f}, "
          f"requests/s {requests / secs / yard:.2f};  appview / bare client requests/s "
          f"{requests / secs / bare:.2f}")
    print(f"  yardstick: Valkey alone, fed the backfill's own commands "
          f"(redis-cli --pipe, median of 5)  "
          f"{alone:.2f} s = {records / alone:9.0f} records/s")
    # HTTP and Valkey overlapped perfectly, with no work of the appview's own: the fastest
    # this backfill could be on this machine.
    floor = max(requests / bare, alone)
    print(f"  appview / Valkey alone records/s {alone / secs:.2f};  appview / the slower of the "
          f"bare client and Valkey alone {floor / secs:.2f}")
    rp.terminate()
    sp.terminate()
    sp, net = standin(N * 4)
    rp, port = redis()
    secs4, peak4 = backfill(net, port, "appview-x4")
    print(f"  {N * 4} DIDs: {secs4:.2f} s, {N * 4 / secs4:.0f} DIDs/s, peak RSS "
          f"{peak4 / 1024:.1f} MiB ({peak4 / max(peak, 1):.2f}x the {N}-DID run)")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except Exception:
            p.kill()
EOF
