"""The measuring half of bench/cluster.sh (see there):

  cluster_measure.py prepare SINGLE_PORT SEEDS REPLAY_PORT STATE   empties every server, saves
                                                                   the counters before a run
  cluster_measure.py ingest STATE APPVIEW_PID HTTP_PORT TIMEOUT    waits for the run to end,
                                                                   prints its figures as k=v
  cluster_measure.py seed BIN_DIR SINGLE_PORT SEEDS                one repository of 10 tags
  cluster_measure.py report EVENTS SINGLE WAIT NOWAIT R_SINGLE R_CLUSTER   the table
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

PREFIX = "atcr:"


def cli(port, *args, cluster=False):
    out = subprocess.run(["redis-cli", *(["-c"] if cluster else []), "-p", str(port),
                          *map(str, args)], capture_output=True, text=True, timeout=30)
    return out.stdout


def info(port, section, key):
    for line in cli(port, "INFO", section).splitlines():
        if line.startswith(key + ":"):
            return float(line.split(":", 1)[1])
    return 0.0


def alive(pid):
    """The appview runs: its /proc entry stays while the shell has not reaped it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except OSError:
        return False


def primaries(seeds):
    """Ports of the cluster's primaries that serve slots, and which one holds P recent."""
    port = seeds.split(",")[0].rsplit(":", 1)[1]
    nodes = cli(port, "CLUSTER", "NODES").splitlines()
    ports = []
    for line in nodes:
        f = line.split()
        if len(f) > 8 and "master" in f[2]:
            ports.append(int(f[1].split("@")[0].rsplit(":", 1)[1]))
    slot = int(cli(port, "CLUSTER", "KEYSLOT", PREFIX + "recent").strip())
    recent = None
    for line in nodes:
        f = line.split()
        for r in f[8:]:
            if r[0].isdigit():
                a, _, b = r.partition("-")
                if int(a) <= slot <= int(b or a):
                    recent = int(f[1].split("@")[0].rsplit(":", 1)[1])
    return sorted(ports), recent


def counters(ports):
    return {p: {"cmds": info(p, "stats", "total_commands_processed"),
                "cpu": info(p, "cpu", "used_cpu_user") + info(p, "cpu", "used_cpu_sys")}
            for p in ports}


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def prepare(single, seeds, replay, path):
    cluster, recent = primaries(seeds)
    for p in [single] + cluster:
        cli(p, "FLUSHALL")
    stats = json.loads(get(f"http://127.0.0.1:{replay}/_stats"))
    with open(path, "w") as f:
        json.dump({"single": single, "cluster": cluster, "recent": recent, "replay": replay,
                   "sent0": stats["eventsSent"], "streams0": stats["streamsTotal"],
                   "before": counters([single] + cluster)}, f)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def ingest(path, pid, hport, timeout):
    st = json.load(open(path))
    stats_url = f"http://127.0.0.1:{st['replay']}/_stats"
    deadline = time.time() + float(timeout)
    done_at, last_sent, stable_since = None, -1, time.time()
    while True:
        now = time.time()
        if now > deadline:
            sys.exit("timed out")
        if not alive(pid):
            sys.exit("the appview exited during the run")
        try:
            m = get(f"http://127.0.0.1:{hport}/metrics")
        except OSError:
            time.sleep(0.05)
            continue
        sent = json.loads(get(stats_url))["eventsSent"] - st["sent0"]
        events = metric(m, "appview_jetstream_events_total")
        if sent != last_sent:
            last_sent, stable_since = sent, now
        if sent > 0 and events >= sent:
            done_at = done_at or now
            if now - stable_since > 0.5 and now - done_at > 0.3:
                break
        else:
            done_at = None
        time.sleep(0.02)
    rec_done, records = done_at, metric(m, "appview_records_indexed_total")
    settled = time.time()
    while time.time() - settled < 0.7 and time.time() < deadline:
        time.sleep(0.02)
        m = get(f"http://127.0.0.1:{hport}/metrics")
        r = metric(m, "appview_records_indexed_total")
        if r != records:
            records, settled = r, time.time()
            rec_done = settled
    stats = json.loads(get(stats_url))
    if stats["streamsTotal"] != st["streams0"] + 1:
        sys.exit("the appview connected more than once")
    el = max(rec_done - stats["lastStreamStartedAt"], 1e-3)
    after = counters([st["single"]] + st["cluster"])
    ticks = cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")
    delta = {p: {k: after[p][k] - st["before"][str(p)][k] for k in ("cmds", "cpu")}
             for p in after}
    on_cluster = delta[st["single"]]["cmds"] < sum(delta[p]["cmds"] for p in st["cluster"])
    ports = st["cluster"] if on_cluster else [st["single"]]
    cmds = sum(delta[p]["cmds"] for p in ports)
    rounds = metric(m, "appview_ingest_rounds_total") or 1
    rec = records or 1
    fig = {"records": f"{records:.0f}", "seconds": f"{el:.2f}",
           "records_per_s": f"{records / el:.0f}",
           "events_per_s": f"{metric(m, 'appview_jetstream_events_total') / el:.0f}",
           "cmds_per_record": f"{cmds / rec:.2f}",
           "rounds": f"{rounds:.0f}", "records_per_round": f"{records / rounds:.1f}",
           "waits_per_round": f"{metric(m, 'appview_ingest_round_waits_total') / rounds:.2f}",
           "orders_per_round": f"{metric(m, 'valkey_orders_total') / rounds:.2f}",
           "syncs_per_round": f"{metric(m, 'valkey_waits_total') / rounds:.2f}",
           "appview_us": f"{ticks * 1e6 / rec:.1f}",
           "valkey_us": f"{sum(delta[p]['cpu'] for p in ports) * 1e6 / rec:.1f}",
           "node_us": "/".join(f"{delta[p]['cpu'] * 1e6 / rec:.1f}" for p in ports),
           "node_cmds": "/".join(f"{delta[p]['cmds'] / rec:.2f}" for p in ports),
           "recent_node": str(ports.index(st["recent"]) if on_cluster else 0),
           "replays": f"{metric(m, 'appview_ingest_replays_total'):.0f}"}
    print(" ".join(f"{k}={v}" for k, v in fig.items()))


def seed(bindir, single, seeds):
    sys.path[:0] = ["tests/lib", "tests/integration"]
    import records
    import test_reads as t
    did = "did:plc:benchbenchbenchbenchbenc"
    for url, port, cluster in ((f"redis://127.0.0.1:{single}/0", single, False),
                               (seeds, int(seeds.split(",")[0].rsplit(":", 1)[1]), True)):
        class Target:
            pass
        target = Target()
        target.url, target.port = url, port

        class Harness:  # what records.Seeder asks of the test harness
            root = "."

            def binary(self, name):
                return f"{bindir}/{name}"

            def redis(self, r, *args):
                subprocess.run(["redis-cli", *(["-c"] if cluster else []), "-p", str(r.port),
                                *map(str, args)], check=True, capture_output=True)

        s = records.Seeder(Harness(), target, PREFIX)
        for i in range(10):
            s.manifest(did, "app", t.digest(i), t.T0 + i * 1000)
            s.tag(did, "app", "v1.%d.0" % i, t.digest(i), t.T0 + i * 1000 + 500)
        s.complete(did)


def kv(text):
    return dict(x.split("=", 1) for x in text.split() if "=" in x)


def report(n, single, wait, nowait, r_single, r_cluster):
    runs = [("one server", kv(single)), ("cluster, WAIT 1 replica", kv(wait)),
            ("cluster, no WAIT", kv(nowait))]
    print(f"\nValkey Cluster benchmark: {n} events (io.atcr.* and account/identity events after "
          "the server-side filter); 3 primaries + 3 replicas on this machine")
    cols = [("records/s", "records_per_s"), ("vs one", None), ("cmds/record", "cmds_per_record"),
            ("records/round", "records_per_round"), ("waits/round", "waits_per_round"),
            ("held/round", "orders_per_round"), ("WAITs/round", "syncs_per_round"),
            ("appview us/rec", "appview_us"), ("valkey us/rec", "valkey_us")]
    print(f"  {'ingest':<26}" + "".join(f"{c:>15}" for c, _ in cols))
    base = float(runs[0][1].get("records_per_s", 0) or 0)
    for name, f in runs:
        if "error" in f or "records_per_s" not in f:
            print(f"  {name:<26} error: {f.get('error', 'no figures')}")
            continue
        vals = [f.get(k, "-") if k else
                (f"{float(f['records_per_s']) / base:.2f}" if base else "-") for _, k in cols]
        print(f"  {name:<26}" + "".join(f"{v:>15}" for v in vals))
    for name, f in runs[1:]:
        if "node_us" in f:
            print(f"  {name}: per primary us/record {f['node_us']}, commands/record "
                  f"{f['node_cmds']} (P recent on primary {int(f['recent_node']) + 1}); "
                  f"replays {f['replays']}")
    print("  waits/round: round trips a writer round waited on (reads); held/round: writes "
          "held until a removal from P recent (another slot) was answered; WAITs/round: WAITs "
          "before the cursor moved")
    rs, rc = kv(r_single), kv(r_cluster)
    print(f"\n  {'listTags, warm, wrk -t1 -c50':<32}{'requests/s':>12}{'p99 ms':>9}")
    for name, f in (("one server", rs), ("cluster", rc)):
        print(f"  {name:<32}{f.get('requests_per_s', '-'):>12}{f.get('p99_ms', '-'):>9}")
    if rs.get("requests_per_s") and rc.get("requests_per_s"):
        print(f"  cluster / one server requests/s: "
              f"{float(rc['requests_per_s']) / float(rs['requests_per_s']):.2f}")
    # N primaries on N machines: a DID's writes go to its slot's primary, so they spread over
    # the N; P recent's stay on one. The primaries here not holding P recent carry DID work
    # only: their mean is a third of it, and what P recent's carries above that mean is the
    # recent list's. The busiest primary (P recent's) then takes D/N + R per record, and the
    # one appview process ingests at most 1e6 / its us per record.
    f = runs[2][1] if "node_us" in runs[2][1] else runs[1][1]
    if "node_us" in f:
        us = [float(x) for x in f["node_us"].split("/")]
        r = int(f["recent_node"])
        others = [u for i, u in enumerate(us) if i != r]
        mean = sum(others) / len(others)
        did_us, recent_us = mean * len(us), max(us[r] - mean, 0.0)
        app_cap = 1e6 / float(f["appview_us"])
        print(f"\n  N primaries on N machines (from the no-WAIT run: DID work {did_us:.1f} us "
              f"per record spread over the N, P recent's {recent_us:.1f} us on one; one "
              f"appview ingests at most {app_cap:.0f} records/s):")
        for k in (1, 3, 6, 12, 24):
            valkey_cap = 1e6 / (did_us / k + recent_us)
            print(f"    N={k:<3} Valkey {valkey_cap:>10.0f} records/s, "
                  f"with one ingesting appview {min(valkey_cap, app_cap):>10.0f}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "prepare":
        prepare(int(args[0]), args[1], int(args[2]), args[3])
    elif cmd == "ingest":
        ingest(args[0], int(args[1]), int(args[2]), args[3])
    elif cmd == "seed":
        seed(*args)
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
