"""The Jetstream replay server (tests/tools/jetstream_replay.c) and the fixtures it serves.

The end-to-end ingest tests trust this server to honour cursors, filters and fault injection,
so those are checked here against the fixture files themselves.
"""
import json
import os
import re
import socket
import subprocess
import time
import urllib.parse

import wsclient
from harness import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
BASIC = os.path.join(FIXTURES, "basic.jsonl")
V2 = "/xrpc/network.bsky.jetstream.subscribeEvents"
INDEXED = ("io.atcr.manifest", "io.atcr.tag")
B32SORT = "234567abcdefghijklmnopqrstuvwxyz"


def lines(path=BASIC):
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def start(h, *args, events=BASIC):
    port = free_port()
    p = h.spawn("replay", [h.binary("tools/jetstream_replay"), "--listen", f"127.0.0.1:{port}",
                           "--events", events, "--stats", *args])
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
             what="replay server listening")
    p.base = f"ws://127.0.0.1:{port}"
    p.port = port
    return p


def collect(url, n, timeout=5.0):
    """Up to n frames from url; stops early if the server closes."""
    out = []
    with wsclient.connect(url) as ws:
        while len(out) < n:
            m = ws.recv(timeout)
            if m is None:
                break
            out.append(m)
    return out


def assert_idle(ws, seconds=0.3):
    try:
        m = ws.recv(seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected an idle open stream, got {m!r}")


def test_v1_sends_the_file_then_stays_open(h):
    p = start(h)
    want = lines()
    with wsclient.connect(p.base + "/subscribe") as ws:
        got = [ws.recv(5) for _ in want]
        assert got == want, "v1 frames must be the file's lines, byte for byte"
        assert_idle(ws)
        ws.ping(b"hi")
        assert_idle(ws, 0.1)


def test_v1_cursor_is_time_us(h):
    p = start(h)
    want = lines()
    t10 = json.loads(want[9])["time_us"]
    assert collect(f"{p.base}/subscribe?cursor={t10}", 1) == [want[9]]
    got = collect(f"{p.base}/subscribe?cursor={t10 - 1}", len(want) - 9)
    assert got == want[9:], "a cursor between events starts at the next one"
    with wsclient.connect(f"{p.base}/subscribe?cursor={t10 * 2}") as ws:
        assert_idle(ws)


def test_v1_wanted_collections(h):
    p = start(h)
    evs = [json.loads(line) for line in lines()]
    q = urllib.parse.urlencode([("wantedCollections", c) for c in INDEXED])
    want = [e for e in evs if e["kind"] != "commit" or e["commit"]["collection"] in INDEXED]
    got = [json.loads(m) for m in collect(f"{p.base}/subscribe?{q}", len(want))]
    assert got == want
    assert any(e["kind"] == "identity" for e in got) and any(e["kind"] == "account" for e in got)
    # A prefix wildcard takes the whole namespace, including collections the appview ignores.
    want = [e for e in evs if e["kind"] != "commit" or e["commit"]["collection"].startswith("io.atcr.")]
    got = [json.loads(m) for m in collect(f"{p.base}/subscribe?wantedCollections=io.atcr.*", len(want))]
    assert got == want and any(e["kind"] == "commit" and e["commit"]["collection"] ==
                               "io.atcr.sailor.profile" for e in got)


def test_v2_wraps_frames_with_type_and_seq(h):
    p = start(h)
    evs = [json.loads(line) for line in lines()]
    got = collect(p.base + V2, len(evs))
    assert len(got) == len(evs)
    for i, (raw, orig) in enumerate(zip(got, evs)):
        kind = orig["kind"]
        assert raw.startswith('{"$type":"network.bsky.jetstream.subscribeEvents#' + kind + '"'), raw
        f = json.loads(raw)
        assert f.pop("$type") == "network.bsky.jetstream.subscribeEvents#" + kind
        assert f.pop("seq") == i + 1
        assert f == orig


def test_v2_cursor_kinds_and_collections(h):
    p = start(h)
    evs = [json.loads(line) for line in lines()]
    got = [json.loads(m) for m in collect(p.base + V2 + "?cursor=12", len(evs) - 12)]
    assert [f["seq"] for f in got] == list(range(13, len(evs) + 1)), "cursor resumes after seq"
    want = [i + 1 for i, e in enumerate(evs) if e["kind"] in ("identity", "account")]
    got = [json.loads(m) for m in collect(p.base + V2 + "?kinds=identity,account", len(want))]
    assert [f["seq"] for f in got] == want
    with wsclient.connect(p.base + V2 + "?kinds=identity,account&cursor=%d" % want[-1]) as ws:
        assert_idle(ws)
    want = [i + 1 for i, e in enumerate(evs)
            if e["kind"] == "commit" and e["commit"]["collection"] == "io.atcr.tag"]
    q = "?kinds=commit&collections=io.atcr.tag"
    got = [json.loads(m) for m in collect(p.base + V2 + q, len(want))]
    assert [f["seq"] for f in got] == want


def test_drop_after_and_resume_with_cursor(h):
    p = start(h, "--drop-after", "7")
    want = lines()
    got, cursor, connections = [], None, 0
    while len(got) < len(want):
        url = p.base + "/subscribe" + (f"?cursor={cursor + 1}" if cursor else "")
        batch = collect(url, len(want) - len(got))  # or fewer, when the server drops it
        connections += 1
        assert 0 < len(batch) <= 7, f"connection {connections} sent {len(batch)} events"
        got += batch
        cursor = json.loads(batch[-1])["time_us"]
    assert got == want and connections == 6
    _, stats = h.get_json(p.base.replace("ws://", "http://") + "/_stats")
    assert stats["drops"] == 5 and stats["eventsSent"] == len(want)
    assert any(r.startswith("/subscribe?cursor=") for r in stats["requests"])


def test_malformed_frames_are_interleaved(h):
    p = start(h, "--malformed", "5")
    want = lines()
    n = len(want) + len(want) // 5
    with wsclient.connect(p.base + "/subscribe") as ws:
        frames = [ws.recv_bytes(5) for _ in range(n)]
        assert_idle(ws)
    good = [f.decode() for i, f in enumerate(frames) if (i + 1) % 6]
    bad = [f for i, f in enumerate(frames) if (i + 1) % 6 == 0]
    assert good == want
    assert len(bad) == len(want) // 5
    kinds = set()
    for f in bad:
        try:
            obj = json.loads(f.decode("utf-8"))
        except UnicodeDecodeError:
            kinds.add("utf8")
            continue
        except ValueError:
            kinds.add("truncated")
            continue
        kinds.add("types" if not isinstance(obj["did"], str) else "record")
    assert kinds == {"utf8", "truncated", "types", "record"}


def test_loop_shifts_time_and_seq(h):
    p = start(h, "--loop", "3")
    n = len(lines())
    got = [json.loads(m) for m in collect(p.base + V2, 3 * n)]
    assert [f["seq"] for f in got] == list(range(1, 3 * n + 1))
    times = [f["time_us"] for f in got]
    assert all(a < b for a, b in zip(times, times[1:])), "time_us increases across passes"
    assert {k: v for k, v in got[n].items() if k not in ("seq", "time_us")} == \
        {k: v for k, v in got[0].items() if k not in ("seq", "time_us")}
    v1 = collect(f"{p.base}/subscribe?cursor={times[2 * n]}", n)
    assert [json.loads(m)["time_us"] for m in v1] == times[2 * n:]


def test_rate_paces_each_connection(h):
    p = start(h, "--rate", "100")
    t0 = time.time()
    assert len(collect(p.base + "/subscribe", 30)) == 30
    assert 0.2 < time.time() - t0 < 3, "30 events at 100/s take about 0.3 s"


def test_ws_discard_counts_what_the_server_sends(h):
    p = start(h, "--loop", "50")
    out = subprocess.run([h.binary("tools/ws_discard"), p.base + "/subscribe", "--count", "2000"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    fields = dict(kv.split("=") for kv in out.stdout.split())
    assert int(fields["frames"]) == 2000 and float(fields["events_per_s"]) > 0
    out = subprocess.run([h.binary("tools/ws_discard"), p.base + "/subscribe", "--count", "2000",
                          "--lws"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert dict(kv.split("=") for kv in out.stdout.split())["frames"] == "2000"


def test_gen_events_writes_valid_jetstream(h):
    path = os.path.join(h.tmp, "gen.jsonl")
    out = subprocess.run([h.binary("tools/gen_events"), "-n", "5000", "--seed", "7", "-o", path],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    evs = [json.loads(line) for line in lines(path)]
    assert len(evs) == 5000
    times = [e["time_us"] for e in evs]
    assert all(a < b for a, b in zip(times, times[1:]))
    last_rev, atcr, manifests = {}, 0, set()
    for e in evs:
        assert e["did"].startswith("did:plc:") and len(e["did"]) == 32
        assert e["kind"] in ("commit", "identity", "account")
        if e["kind"] != "commit":
            continue
        c = e["commit"]
        rev = c["rev"]
        assert len(rev) == 13 and all(ch in B32SORT for ch in rev) and rev[0] in B32SORT[:16]
        assert rev > last_rev.get(e["did"], ""), "revs increase per DID"
        last_rev[e["did"]] = rev
        if c["collection"].startswith("io.atcr."):
            atcr += 1
            if c["operation"] != "delete":
                r = c["record"]
                assert r["$type"] == c["collection"] and r["repository"]
                if c["collection"] == "io.atcr.manifest":
                    # TID record keys, as the lexicon says; the digest is in the record only.
                    assert len(c["rkey"]) == 13 and all(ch in B32SORT for ch in c["rkey"])
                    assert re.fullmatch(r"sha256:[0-9a-f]{64}", r["digest"])
                    assert r["schemaVersion"] == 2
                    assert r["holdDid"].startswith("did:web:") and r["layers"]
                    manifests.add((e["did"], c["rkey"]))
                else:
                    prefix = f"at://{e['did']}/io.atcr.manifest/"
                    assert r["manifest"].startswith(prefix)
                    assert (e["did"], r["manifest"][len(prefix):]) in manifests, \
                        "a tag names a manifest record of its DID made before it"
    assert 350 < atcr < 650, f"about 10% io.atcr commits, got {atcr}"


def fold(events):
    """The reference fold of a Jetstream stream into the index the appview must hold."""
    recs, handles, purged = {}, {}, set()
    for e in events:
        did = e["did"]
        if e["kind"] == "identity":
            handles[did] = e["identity"].get("handle")
        elif e["kind"] == "account":
            if e["account"]["status"] in ("deleted", "takendown"):
                recs = {k: v for k, v in recs.items() if k[0] != did}
                handles.pop(did, None)
                purged.add(did)
        elif e["commit"]["collection"] in INDEXED:
            c = e["commit"]
            key = (did, c["collection"], c["rkey"])
            if key in recs and recs[key][0] >= c["rev"]:
                continue  # a replay of an older event: never resurrect or overwrite
            recs[key] = (c["rev"], None if c["operation"] == "delete" else c["record"])
    dids, recent = {}, []
    for (did, coll, _), (_, rec) in sorted(recs.items()):
        if rec is None:
            continue
        repo = dids.setdefault(did, {"handle": handles.get(did), "repositories": {}})[
            "repositories"].setdefault(rec["repository"], {"manifests": {}, "tags": {}})
        if coll == "io.atcr.manifest":
            repo["manifests"][rec["digest"]] = {"holdDid": rec["holdDid"],
                                                "createdAt": rec["createdAt"]}
            recent.append({"did": did, "repository": rec["repository"], "digest": rec["digest"],
                           "createdAt": rec["createdAt"]})
        else:
            repo["tags"][rec["tag"]] = "sha256:" + rec["manifest"].rsplit("/", 1)[1]
    recent.sort(key=lambda m: m["createdAt"], reverse=True)
    return {"dids": dids, "purged": sorted(purged), "recent": recent}


def test_basic_fixture_expected_fold(h):
    evs = [json.loads(line) for line in lines()]
    with open(os.path.join(FIXTURES, "basic.expected.json")) as f:
        expected = json.load(f)
    assert fold(evs) == expected
    kinds = {e["kind"] for e in evs}
    ops = {e["commit"]["operation"] for e in evs if e["kind"] == "commit"}
    assert kinds == {"commit", "identity", "account"} and ops == {"create", "update", "delete"}
    assert any(e["kind"] == "commit" and e["commit"]["collection"].startswith("app.bsky.")
               for e in evs)


def test_malformed_fixture_is_served_verbatim(h):
    path = os.path.join(FIXTURES, "malformed.jsonl")
    with open(path, "rb") as f:
        want = [line for line in f.read().split(b"\n") if line]
    with open(os.path.join(FIXTURES, "malformed.expected.json")) as f:
        assert json.load(f)["malformedLines"] == len(want) - 2
    p = start(h, events=path)
    with wsclient.connect(p.base + "/subscribe") as ws:
        got = [ws.recv_bytes(5) for _ in want]
        assert_idle(ws)
    assert got == want, "v1 sends every line as it is, unparseable ones included"
    assert max(len(b) for b in got) > 2 * 1024 * 1024
