"""The operator's run paths: `make demo` (deploy/demo.sh) and `make run` (deploy/run-local.sh),
run as an operator would, against the binaries under test.

run-local.sh is pointed at a local replay server instead of the public Jetstream (the only
setting changed), so a restart can show that ./var keeps the index, the cursor and the hold's
token and counters.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time

from harness import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALICE = "did:plc:aliceaaaaaaaaaaaaaaaaaaa"
BOB = "did:plc:bobbbbbbbbbbbbbbbbbbbbbb"
CAROL = "did:plc:carolccccccccccccccccccc"


def available():
    if not shutil.which("redis-server"):
        return "redis-server not installed"
    return None


def script_env(h, **extra):
    env = dict(os.environ)
    log = os.path.join(h.tmp, "script.asan")  # <tmp>/script.asan.PID, scanned by the harness
    env.update({"BIN_DIR": h.bindir,
                "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:log_path=" + log,
                "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:log_path=" + log})
    env.update(extra)
    return env


def leftovers(marker):
    """Processes whose command line mentions marker (the script's private directory)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def sections(out):
    """The demo's '== title' blocks: {title: (status, parsed JSON)}."""
    result = {}
    for block in out.split("\n== ")[1:]:
        lines = block.split("\n")
        status_at = next(i for i, l in enumerate(lines) if l.startswith("HTTP "))
        body = []
        for line in lines[status_at + 1:]:
            if not line.strip():
                break
            body.append(line)
        result[lines[0]] = (int(lines[status_at].split()[1]), json.loads("\n".join(body)))
    return result


def test_demo_prints_the_fold_and_the_hold_counts(h):
    demo_dir = os.path.join(h.tmp, "demo")
    t0 = time.time()
    proc = subprocess.run(["sh", "deploy/demo.sh"], cwd=ROOT, capture_output=True, text=True,
                          env=script_env(h, DEMO_DIR=demo_dir), timeout=60,
                          start_new_session=True)
    took = time.time() - t0
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert took < 30, f"demo took {took:.1f}s"
    assert not leftovers(demo_dir), leftovers(demo_dir)
    s = sections(proc.stdout)
    assert all(status == 200 for status, _ in s.values()), {t: st for t, (st, _) in s.items()}

    health = s["health"][1]
    assert health["status"] == "ok" and health["jetstream"]["connected"] is True, health
    # the fixture dates from 2024; replayed as recent, the lag is that of a live stream
    assert 0 <= health["jetstream"]["lagSeconds"] < 60, health

    recent = s["most recent manifests"][1]["manifests"]
    assert [(m["did"], m["repository"]) for m in recent] == [
        (ALICE, "tools"), (BOB, "worker"), (ALICE, "webapp"), (BOB, "api"), (ALICE, "tools")]
    alice = s["alice's repositories"][1]
    assert {r["name"]: (r["tagCount"], r["manifestCount"]) for r in alice["repositories"]} == {
        "tools": (2, 2), "webapp": (1, 1)}
    assert alice["stale"] is True  # firehose-only lists, loader offline: explained in the output
    bob = s["bob's repositories"][1]
    assert sorted(r["name"] for r in bob["repositories"]) == ["api", "worker"]
    assert [t["tag"] for t in s["tags of alice/webapp"][1]["tags"]] == ["latest"]
    assert sorted(t["tag"] for t in s["tags of bob/api"][1]["tags"]) == ["latest", "v1"]
    manifest = s["manifest alice/webapp:latest"][1]
    assert manifest["digest"] == ("sha256:29c1b289e7522195b362e44f54e05470b69ad20540ab60a18a05e5bf6951f13d")
    assert manifest["holdDid"] == "did:web:hold02.atcr.io"  # the update, not the create
    assert CAROL not in proc.stdout  # her account was deleted: purged

    assert s["count pulls and a push"][1] == {"applied": 6}
    webapp = s["stats of alice/webapp"][1]
    assert (webapp["pullCount"], webapp["pushCount"]) == (3, 1)
    api = s["stats of bob/api"][1]
    assert (api["pullCount"], api["pushCount"]) == (2, 0)
    records = s["the same as ATProto records"][1]["records"]
    assert sorted((r["value"]["repository"], r["value"]["pullCount"]) for r in records) == [
        ("api", 2), ("webapp", 3)]
    # The backfill of the synthetic network (1,500 DIDs, every tenth without records).
    backfill = s["health after the backfill"][1]["backfill"]
    assert backfill["state"] == "finished" and backfill["dids"]["done"] == 1350, backfill
    assert backfill["records"] == 1350 * 8 and backfill["dids"]["failed"] == 0, backfill
    recent = s["most recent manifests, backfilled"][1]["manifests"]
    assert len(recent) == 3 and all(m["did"].startswith("did:plc:backfillstandin") for m in recent)
    repos = s["a backfilled user's repositories"][1]["repositories"]
    assert sorted(r["manifestCount"] for r in repos) == [2, 2, 2], repos
    assert "backfill complete: 1350 DIDs, 10800 records" in proc.stdout
    for name in ("appview", "hold"):
        with open(os.path.join(demo_dir, name + ".log")) as f:
            assert "stopped" in f.read(), f"{name} did not drain and stop"


def start_run_local(h, run_dir, ports, replay_url, name):
    log = open(os.path.join(h.tmp, name + ".log"), "ab")
    env = script_env(h, RUN_DIR=run_dir, VALKEY_PORT=str(ports["valkey"]),
                     APPVIEW_LISTEN=f"127.0.0.1:{ports['appview']}",
                     HOLD_LISTEN=f"127.0.0.1:{ports['hold']}",
                     APPVIEW_JETSTREAM_URLS=replay_url, APPVIEW_PLC_URL="http://127.0.0.1:9")
    # A session of its own, so a SIGINT to its process group is what Ctrl-C in a terminal does;
    # SIGINT and SIGQUIT at their defaults, as a terminal gives them: a test runner started in
    # the background of a shell inherits them ignored, and a shell cannot trap a signal it was
    # started with ignored (POSIX), so run-local.sh would never see the Ctrl-C.
    p = subprocess.Popen(["sh", "deploy/run-local.sh"], cwd=ROOT, env=env, stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, preexec_fn=terminal_signals)
    log.close()
    return p


def terminal_signals():
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def ctrl_c(p, log):
    """Ctrl-C to the whole process group, as a terminal does; on a hang, says who is left."""
    os.killpg(p.pid, signal.SIGINT)
    try:
        return p.wait(30)
    except subprocess.TimeoutExpired:
        left = subprocess.run(["ps", "-o", "pid,stat,etime,args", "-g", str(p.pid)],
                              capture_output=True, text=True).stdout
        os.killpg(p.pid, signal.SIGKILL)
        raise AssertionError(f"run-local did not stop within 30 s; still running:\n{left}\n"
                             f"log tail:\n{open(log).read()[-3000:]}")


def test_run_local_restarts_on_its_own_state(h):
    run_dir = os.path.join(h.tmp, "var")
    ports = {"valkey": free_port(), "appview": free_port(), "hold": free_port()}
    replay_port = free_port()
    h.spawn("replay", [h.binary("tools/jetstream_replay"), "--listen",
                       f"127.0.0.1:{replay_port}", "--events", "tests/fixtures/basic.jsonl"])
    wait_for(lambda: h.http("GET", f"http://127.0.0.1:{replay_port}/_stats")[0] == 200,
             what="replay server")
    replay_url = f"ws://127.0.0.1:{replay_port}/subscribe"
    appview = f"http://127.0.0.1:{ports['appview']}"
    hold = f"http://127.0.0.1:{ports['hold']}"
    log1 = os.path.join(h.tmp, "run1.log")

    p = start_run_local(h, run_dir, ports, replay_url, "run1")
    try:
        wait_for(lambda: "Ctrl-C stops everything" in open(log1).read(), timeout=25,
                 what="run-local banner")
        wait_for(lambda: len(h.get_json(appview + "/xrpc/io.atcr.repo.listRecent")[1]
                             .get("manifests", [])) == 5, timeout=10, what="fixture folded")
        with open(os.path.join(run_dir, "hold", "token")) as f:
            token = f.read().strip()
        assert len(token) == 64 and token in open(log1).read()
        assert oct(os.stat(os.path.join(run_dir, "hold", "token")).st_mode & 0o777) == "0o600"
        status, body = h.post_json(hold + "/xrpc/io.atcr.hold.incrementStats",
                                   {"did": ALICE, "repository": "webapp", "event": "pull"},
                                   headers={"Authorization": "Bearer " + token})
        assert (status, body) == (200, {"applied": 1})
        status, health = h.get_json(appview + "/xrpc/_health")
        cursor = health["jetstream"]["cursor"]
        assert status == 200 and cursor > 0
    finally:
        rc = ctrl_c(p, log1)
    assert rc == 0, open(log1).read()[-3000:]
    assert not leftovers(run_dir), leftovers(run_dir)

    # The replay server goes away: whatever the second run serves comes from ./var.
    h.procs[0].stop()
    p = start_run_local(h, run_dir, ports, replay_url, "run2")
    log2 = os.path.join(h.tmp, "run2.log")
    try:
        wait_for(lambda: "Ctrl-C stops everything" in open(log2).read(), timeout=25,
                 what="second run-local banner")
        assert token in open(log2).read()  # the same token, not a new one
        status, recent = h.get_json(appview + "/xrpc/io.atcr.repo.listRecent")
        assert status == 200 and len(recent["manifests"]) == 5
        status, health = h.get_json(appview + "/xrpc/_health")
        assert health["jetstream"]["cursor"] == cursor
        status, stats = h.get_json(f"{hold}/xrpc/io.atcr.hold.getStats?did={ALICE}&repository=webapp")
        assert status == 200 and stats["pullCount"] == 1
    finally:
        rc = ctrl_c(p, log2)
    assert rc == 0, open(log2).read()[-3000:]
    assert not leftovers(run_dir), leftovers(run_dir)


def test_run_local_refuses_a_busy_port(h):
    ports = {"valkey": free_port(), "appview": free_port(), "hold": free_port()}
    blocker = h.start_redis(port=ports["valkey"])
    p = start_run_local(h, os.path.join(h.tmp, "var"), ports, "ws://127.0.0.1:9/subscribe", "busy")
    assert p.wait(20) == 1
    assert f"port(s) {blocker.port} already in use" in open(os.path.join(h.tmp, "busy.log")).read()


def test_deploy_files_name_real_settings(h):
    """Every APPVIEW_* / HOLD_* the compose file, the Dockerfile and the units set is one the
    binaries know (a typo there is silently ignored at run time); the compose file is YAML
    with the three services (parsed when PyYAML is installed, which `make test` does not
    require)."""
    known = set()
    for name in ("appview", "hold"):
        out = subprocess.run([h.binary(name), "--help"], capture_output=True, text=True,
                             timeout=10, env=script_env(h))
        assert out.returncode == 0, out.stderr
        known |= set(re.findall(r"\b(?:APPVIEW|HOLD)_[A-Z_]+\b", out.stdout))
    assert "APPVIEW_VALKEY_URL" in known and "HOLD_SERVICE_TOKENS" in known
    for f in ("docker-compose.yml", "Dockerfile", "appview.service", "hold.service"):
        with open(os.path.join(ROOT, "deploy", f)) as fh:
            text = fh.read()
        # Settings assigned (KEY=..., KEY: ...), not mentions in comments.
        code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
        used = set(re.findall(r"\b((?:APPVIEW|HOLD)_[A-Z_]+)\s*[:=]", code))
        assert used, f
        assert used <= known, f"{f}: unknown settings {sorted(used - known)}"
    try:
        import yaml
    except ImportError:
        return
    with open(os.path.join(ROOT, "deploy", "docker-compose.yml")) as fh:
        compose = yaml.safe_load(fh)
    services = compose["services"]
    assert set(services) == {"valkey", "appview", "hold"}
    assert services["valkey"]["image"].startswith("valkey/valkey:7.2")
    assert "valkey:6379" in services["appview"]["environment"]["APPVIEW_VALKEY_URL"]
    for name in ("appview", "hold"):
        for vol in services[name]["volumes"]:
            assert vol.split(":")[0] in compose["volumes"], vol
