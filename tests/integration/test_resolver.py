"""appview/resolver against a real PDS + PLC directory (@atproto/dev-env, tests/lib/devnet.py)
and against hostile local servers, through the tests/tools/resolve CLI."""
import json
import os
import statistics
import subprocess
import time
import urllib.error
import urllib.request

import devnet
from harness import SANITIZER_MARKS
from upstream import Server, reply

FAKE_DID = "did:plc:" + "a" * 24


def available():
    return devnet.available()


def resolve(h, *args, timeout=30):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
    p = subprocess.run([h.binary("tools/resolve"), *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    assert not any(m in p.stderr for m in SANITIZER_MARKS), p.stderr[-4000:]
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-2000:]}"
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    summary = lines.pop() if lines and lines[-1].get("summary") else None
    return {r["actor"]: r for r in lines}, lines, summary


def proxy_to(upstream, overrides=None):
    """A counting reverse proxy to upstream; overrides maps a path to a canned JSON body."""
    def handler(hd, path):
        if overrides and path in overrides:
            reply(hd, 200, json.dumps(overrides[path]))
            return
        try:
            with urllib.request.urlopen(upstream + path, timeout=10) as r:
                reply(hd, r.status, r.read())
        except urllib.error.HTTPError as e:
            reply(hd, e.code, e.read())
    return handler


def test_resolution_against_real_pds_and_plc(h):
    net = devnet.start(h)
    alice, bob = net.account("alice.test"), net.account("bob.test")
    local = ["--plc", net.plc, "--handle-resolver", net.pds, "--allow-private"]
    by, _, _ = resolve(h, *local, "alice.test", "ALICE.test", bob["did"], "nobody.test",
                       "did:plc:" + "b" * 24, "not_a_handle!", "did:key:z6Mk", "did:web:")
    a = by["alice.test"]
    assert (a["status"], a["did"], a["handle"], a["pds"]) == \
        ("OK", alice["did"], "alice.test", net.pds), a
    assert by["ALICE.test"]["handle"] == "alice.test" and by["ALICE.test"]["did"] == alice["did"]
    b = by[bob["did"]]
    assert (b["status"], b["handle"], b["handle_state"], b["pds"]) == \
        ("OK", "bob.test", "verified", net.pds), b
    assert by["nobody.test"]["status"] == "NOT_FOUND", by["nobody.test"]
    assert by["did:plc:" + "b" * 24]["status"] == "NOT_FOUND"
    for bad in ("not_a_handle!", "did:key:z6Mk", "did:web:"):
        assert by[bad]["status"] == "INVALID", by[bad]

    # With the guard on, the PLC (configured, trusted) is still reachable, but the PDS
    # endpoint the document names (http://localhost:...) is refused.
    by, _, _ = resolve(h, "--plc", net.plc, "--handle-resolver", net.pds, "alice.test")
    a = by["alice.test"]
    assert a["status"] == "INVALID" and a["pds"] is None and "not https" in a["error"], a

    # A handle change on the PDS shows up in the next resolution.
    net.command("updateHandle", repo=alice["did"], handle="alice2.test")
    by, _, _ = resolve(h, *local, "alice2.test", alice["did"], "alice.test")
    assert by["alice2.test"]["handle"] == "alice2.test"
    assert by[alice["did"]]["handle"] == "alice2.test"
    assert by["alice.test"]["status"] == "NOT_FOUND", by["alice.test"]

    # Cold latency against the local PLC + PDS (one process per sample, nothing cached).
    samples = {"handle": [], "did": []}
    for _ in range(8):
        by, _, _ = resolve(h, *local, "bob.test")
        samples["handle"].append(by["bob.test"]["elapsed_ms"])
        by, _, _ = resolve(h, *local, bob["did"])
        samples["did"].append(by[bob["did"]]["elapsed_ms"])
    print("    resolver cold latency ms: handle p50 %.1f max %.1f, did p50 %.1f max %.1f" % (
        statistics.median(samples["handle"]), max(samples["handle"]),
        statistics.median(samples["did"]), max(samples["did"])))


def test_single_flight_and_bidirectional_check(h):
    net = devnet.start(h)
    alice = net.account("alice.test")
    resolve_path = "/xrpc/com.atproto.identity.resolveHandle?handle="
    # mallory.test claims alice's DID, but alice's document does not list mallory.test.
    with Server(proxy_to(net.plc)) as plc, \
            Server(proxy_to(net.pds, {resolve_path + "mallory.test": {"did": alice["did"]}})) \
            as pds:
        args = ["--plc", plc.url, "--handle-resolver", pds.url, "--allow-private"]
        by, lines, summary = resolve(h, *args, "--repeat", "300", "alice.test")
        assert len(lines) == 300 and all(r["did"] == alice["did"] for r in lines), lines[:3]
        assert all(r["handle"] == "alice.test" for r in lines)
        assert pds.count(resolve_path) == 1, pds.hits
        assert plc.count("/did:") == 1, plc.hits
        assert summary["fetches"] == 2 and summary["coalesced"] == 598, summary

        by, _, _ = resolve(h, *args, "mallory.test")
        m = by["mallory.test"]
        assert (m["status"], m["did"], m["handle"], m["handle_state"]) == \
            ("OK", alice["did"], None, "invalid"), m

        # Many different actors at once, each asked several times: one fetch per key.
        net.command("createAccount", handle="carol.test")
        before, before_h = plc.count("/did:"), pds.count(resolve_path)
        _, lines, summary = resolve(h, *args, "--repeat", "20", "alice.test", "bob.test",
                                    "carol.test")
        assert len(lines) == 60 and all(r["handle_state"] == "verified" for r in lines), lines
        assert plc.count("/did:") - before == 3, plc.hits
        assert pds.count(resolve_path) - before_h == 3, pds.hits


def fake_plc(docs):
    """PLC directory serving docs[did] = (status, body) or a callable(hd)."""
    def handler(hd, path):
        entry = docs.get(path.lstrip("/"))
        if entry is None:
            reply(hd, 404, '{"message":"DID not registered"}')
        elif callable(entry):
            entry(hd)
        else:
            reply(hd, *entry)
    return handler


def did_doc(did, pds, handle="x.test"):
    return json.dumps({"id": did, "alsoKnownAs": [f"at://{handle}"], "service": [
        {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds},
        {"id": "#atcr_hold", "type": "AtcrHoldService", "serviceEndpoint": "https://hold.example"}]})


def test_hostile_documents_and_upstream_faults(h):
    dids = {k: "did:plc:" + c * 24 for k, c in
            [("meta", "c"), ("priv", "d"), ("garbage", "e"), ("wrongid", "f"), ("flaky", "g"),
             ("gone", "h"), ("hang", "i"), ("huge", "j"), ("down", "k"), ("good", "l")]}
    flaky = {"n": 0}

    def flaky_doc(hd):
        flaky["n"] += 1
        if flaky["n"] == 1:
            reply(hd, 502, "bad gateway")
        else:
            reply(hd, 200, did_doc(dids["flaky"], "https://pds.example.com"))

    docs = {
        dids["meta"]: (200, did_doc(dids["meta"], "https://169.254.169.254")),
        dids["priv"]: (200, did_doc(dids["priv"], "https://10.1.2.3:443/")),
        dids["garbage"]: (200, "<html>not json"),
        dids["wrongid"]: (200, did_doc(dids["good"], "https://pds.example.com")),
        dids["flaky"]: flaky_doc,
        dids["gone"]: (410, '{"message":"DID not available"}'),
        dids["hang"]: lambda hd: time.sleep(3),
        dids["huge"]: (200, '{"id":"%s","x":"%s"}' % (dids["huge"], "y" * (200 << 10))),
        dids["down"]: (500, "oops"),
        dids["good"]: (200, did_doc(dids["good"], "https://pds.example.com/")),
    }
    with Server(fake_plc(docs)) as plc:
        t0 = time.time()
        by, _, _ = resolve(h, "--plc", plc.url, "--timeout-ms", "700", "--service", "#atcr_hold",
                           *dids.values())
        took = time.time() - t0
        st = {k: by[d]["status"] for k, d in dids.items()}
        assert st == {"meta": "INVALID", "priv": "INVALID", "garbage": "INVALID",
                      "wrongid": "INVALID", "flaky": "OK", "gone": "NOT_FOUND",
                      "hang": "UPSTREAM_TIMEOUT", "huge": "INVALID", "down": "UPSTREAM_FAILURE",
                      "good": "OK"}, st
        assert "link-local" in by[dids["meta"]]["error"], by[dids["meta"]]
        assert "private" in by[dids["priv"]]["error"], by[dids["priv"]]
        assert by[dids["good"]]["pds"] == "https://pds.example.com"
        assert by[dids["good"]]["service"] == "https://hold.example"
        assert by[dids["good"]]["handle_state"] == "invalid"  # x.test resolves nowhere
        assert plc.hits["/" + dids["flaky"]] == 2 and plc.hits["/" + dids["down"]] == 3
        assert took < 5, took

        # Shutting down mid-flight: every caller hears CANCELLED, nothing leaks.
        _, lines, _ = resolve(h, "--plc", plc.url, "--repeat", "5", "--cancel-after-ms", "200",
                              dids["hang"])
        assert [r["status"] for r in lines] == ["CANCELLED"] * 5, lines


def test_did_web(h):
    def handler(hd, path):
        if path == "/.well-known/did.json":
            port = hd.server.server_address[1]
            did = f"did:web:localhost%3A{port}"
            reply(hd, 200, did_doc(did, "http://127.0.0.1:9", "nohandle.test"))
        else:
            reply(hd, 404, "{}")

    with Server(handler) as web:
        did = "did:web:localhost%3A" + web.url.rsplit(":", 1)[1]
        by, _, _ = resolve(h, "--allow-private", did)
        r = by[did]
        assert (r["status"], r["pds"], r["handle_state"]) == \
            ("OK", "http://127.0.0.1:9", "invalid"), r
        # Guard on: did:web hosts are untrusted, so a loopback one is never fetched.
        before = web.count("/")
        by, _, _ = resolve(h, did)
        assert by[did]["status"] == "INVALID", by[did]
        assert web.count("/") == before
