#!/bin/sh
# Cold-path benchmark (issue 3): latency of io.atcr.repo.listTags on bin/appview with an empty
# Valkey (FLUSHALL before every request, so each one resolves the DID at the PLC and lists the
# repository on the PDS), next to the yardsticks measured in the same run against the same
# local PDS + PLC (@atproto/dev-env): the PDS's own listRecords, the upstream sequence the
# loader needs (PLC document + getLatestCommit + listRecords x 2, made one after the other from
# Python), and the warm path (served from Valkey).
# Run from the repository root after `make` (make bench does both).
#   BENCH_SAMPLES=N (default 200), BENCH_TAGS=N tags and manifests in the repository (default 20)
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN_DIR:-build/bin}
[ -x "$BIN/appview" ] || { echo "coldpath bench: $BIN/appview not built (make)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "coldpath bench: redis-server needed (make bench installs it)" >&2; exit 1; }
sh tests/tools/install-node.sh >/dev/null 2>&1 || true
[ -d tests/interop/node_modules/@atproto/dev-env ] || {
    echo "coldpath bench: @atproto/dev-env missing (tests/tools/install-node.sh)" >&2; exit 1; }

BIN="$BIN" python3 - <<'EOF'
import json, os, shutil, statistics, subprocess, sys, time, urllib.parse, urllib.request
sys.path.insert(0, "tests/lib")
import devnet
from harness import free_port, wait_for

SAMPLES = int(os.environ.get("BENCH_SAMPLES", "200"))
TAGS = int(os.environ.get("BENCH_TAGS", "20"))
DIR = "var/bench/coldpath"
shutil.rmtree(DIR, ignore_errors=True)
os.makedirs(DIR)


class Holder:
    tmp, procs = DIR, []


def get(url):
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
        status = r.status
    return (time.perf_counter() - t0) * 1e3, status, body


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def line(name, xs):
    print(f"  {name:<52} p50 {pct(xs, .5):7.2f} ms   p99 {pct(xs, .99):7.2f} ms   (n={len(xs)})")


procs = []
try:
    net = devnet.start(Holder)
    procs.append(net)
    did = net.command("createAccount", handle="bench.test")["did"]
    for i in range(1, TAGS + 1):
        dg = "sha256:%064x" % i
        net.command("create", repo=did, collection="io.atcr.manifest", rkey=dg[7:], record={
            "$type": "io.atcr.manifest", "repository": "app", "digest": dg,
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
            "createdAt": "2025-03-01T00:00:%02dZ" % (i % 60)})
        net.command("create", repo=did, collection="io.atcr.tag", rkey=f"t{i}", record={
            "$type": "io.atcr.tag", "repository": "app", "tag": f"t{i}",
            "manifest": f"at://{did}/io.atcr.manifest/{dg[7:]}",
            "createdAt": "2025-03-01T00:00:%02dZ" % (i % 60)})

    rport, aport = free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", DIR],
                             stdout=subprocess.DEVNULL)
    procs.append(redis)
    env = dict(os.environ, APPVIEW_VALKEY_URL=f"redis://127.0.0.1:{rport}/0",
               APPVIEW_LISTEN=f"127.0.0.1:{aport}",
               APPVIEW_JETSTREAM_URLS=f"ws://127.0.0.1:{free_port()}/subscribe",
               APPVIEW_LEXICON_DIR="lexicons", APPVIEW_DATA_DIR=DIR, APPVIEW_PLC_URL=net.plc,
               APPVIEW_HANDLE_RESOLVER_URL=net.pds, APPVIEW_ALLOW_PRIVATE_NETWORKS="1",
               LOG_LEVEL="warn")
    log = open(os.path.join(DIR, "appview.log"), "wb")
    app = subprocess.Popen([os.path.join(os.environ["BIN"], "appview")], env=env, stdout=log,
                           stderr=log)
    procs.append(app)
    base = f"http://127.0.0.1:{aport}"
    wait_for(lambda: get(base + "/xrpc/_health")[1] == 200, timeout=20, what="appview")

    flush = ["redis-cli", "-p", str(rport), "FLUSHALL"]
    tags_url = base + "/xrpc/io.atcr.repo.listTags?" + urllib.parse.urlencode(
        {"actor": did, "repository": "app", "limit": 100})
    q = urllib.parse.quote(did)
    up = {"plc": f"{net.plc}/{q}",
          "latest": f"{net.pds}/xrpc/com.atproto.sync.getLatestCommit?did={q}",
          "list_m": f"{net.pds}/xrpc/com.atproto.repo.listRecords?repo={q}"
                    "&collection=io.atcr.manifest&limit=100",
          "list_t": f"{net.pds}/xrpc/com.atproto.repo.listRecords?repo={q}"
                    "&collection=io.atcr.tag&limit=100"}
    for _ in range(10):  # warm both sides' connections and JITs
        subprocess.run(flush, check=True, stdout=subprocess.DEVNULL)
        get(tags_url)
        for u in up.values():
            get(u)

    cold, warm, pds_list, seq = [], [], [], []
    for _ in range(SAMPLES):
        subprocess.run(flush, check=True, stdout=subprocess.DEVNULL)
        ms, status, body = get(tags_url)
        assert status == 200 and len(json.loads(body)["tags"]) == TAGS, body[:200]
        cold.append(ms)
        warm.append(get(tags_url)[0])
        pds_list.append(get(up["list_t"])[0])
        seq.append(sum(get(up[k])[0] for k in ("plc", "latest", "list_m", "list_t")))
    print(f"coldpath: listTags for a repository of {TAGS} tags + {TAGS} manifests, "
          f"{SAMPLES} samples, local PDS + PLC (dev-env)")
    line("appview listTags, cold (Valkey flushed)", cold)
    line("  yardstick: PDS listRecords (one call)", pds_list)
    line("  yardstick: PLC + getLatestCommit + 2 listRecords", seq)
    line("appview listTags, warm (from Valkey)", warm)
    print(f"  cold path overhead over the sequential upstream calls: "
          f"{pct(cold, .5) - pct(seq, .5):+.2f} ms at p50 (the loader lists both collections "
          f"in parallel)")
finally:
    for p in reversed(procs):
        try:
            p.terminate() if hasattr(p, "terminate") else p.stop()
        except Exception:
            pass
    for p in procs:
        try:
            p.wait(15)
        except Exception:
            pass
EOF
