"""The Jetstream replay server (tests/tools/jetstream_replay.c) and the fixtures it serves.

The end-to-end ingest tests trust this server to speak Jetstream as it runs today and to
honour cursors, filters and fault injection, so those are checked here against the fixture
files themselves, and its v2 frames and errors against the Jetstream lexicons with the
reference validator (@atproto/lexicon, tests/interop/validate-frames.js).
"""
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request

import jetwire
import wsclient
from harness import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
BASIC = os.path.join(FIXTURES, "basic.jsonl")
V2 = jetwire.V2_PATH
KINDS = os.path.join(FIXTURES, "kinds.jsonl")
INTEROP = os.path.join(ROOT, "tests", "interop")
INDEXED = ("io.atcr.manifest", "io.atcr.tag")
B32SORT = "234567abcdefghijklmnopqrstuvwxyz"


def lines(path=BASIC):
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def start(h, *args, events=BASIC, name="replay"):
    port = free_port()
    p = h.spawn(name, [h.binary("tools/jetstream_replay"), "--listen", f"127.0.0.1:{port}",
                       "--events", events, "--stats", *args])
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
             what="replay server listening")
    p.base = f"ws://127.0.0.1:{port}"
    p.http = f"http://127.0.0.1:{port}"
    p.port = port
    return p


def collect(url, n, timeout=5.0, **kw):
    """Up to n frames from url; stops early if the server closes."""
    out = []
    with wsclient.connect(url, **kw) as ws:
        while len(out) < n:
            m = ws.recv(timeout)
            if m is None:
                break
            out.append(m)
    return out


def collect_until_idle(url, idle=0.5, **kw):
    """Every frame from url until the server closes or sends nothing for `idle` seconds."""
    out = []
    with wsclient.connect(url, **kw) as ws:
        while True:
            try:
                m = ws.recv(idle)
            except TimeoutError:
                return out
            if m is None:
                return out
            out.append(m)


def v1_lines(path=BASIC):
    """The file's lines as current v1 servers send them: with their seq as "cursor"."""
    return [jetwire.v1_with_cursor(line, i + 1) for i, line in enumerate(lines(path))]


def refusal(url, **kw):
    """(status, XRPC envelope) of a refused upgrade."""
    try:
        wsclient.connect(url, **kw).close()
    except wsclient.HandshakeError as e:
        return e.status, json.loads(e.body) if e.body.startswith(b"{") else e.body.decode()
    raise AssertionError(f"{url} was accepted")


def assert_idle(ws, seconds=0.3):
    try:
        m = ws.recv(seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected an idle open stream, got {m!r}")


def test_v1_sends_the_file_with_cursor_fields_then_stays_open(h):
    p = start(h)
    want = v1_lines()
    assert want[0] != lines()[0] and json.loads(want[0])["cursor"] == 1
    with wsclient.connect(p.base + "/subscribe") as ws:
        got = [ws.recv(5) for _ in want]
        assert got == want, "v1 frames are the file's lines, with their seq after time_us"
        assert_idle(ws)
        ws.ping(b"hi")
        assert_idle(ws, 0.1)
    legacy = start(h, "--legacy-v1", name="legacy")
    assert collect(legacy.base + "/subscribe", len(want)) == lines(), \
        "--legacy-v1 sends the file byte for byte, as servers before seq cursors did"


def test_v1_cursor_is_a_seq_below_1e15_and_a_time_us_above(h):
    p = start(h, "--floor", "3")
    want = v1_lines()
    t10 = json.loads(want[9])["time_us"]
    assert collect(f"{p.base}/subscribe?cursor={t10}", 1) == [want[9]]
    got = collect(f"{p.base}/subscribe?cursor={t10 - 1}", len(want) - 9)
    assert got == want[9:], "a time cursor between events starts at the next one"
    assert collect(f"{p.base}/subscribe?cursor=10", len(want) - 9) == want[9:], \
        "a seq cursor is inclusive"
    assert collect(f"{p.base}/subscribe?cursor=1", 2) == want[2:4], \
        "v1 clamps a cursor below the floor silently"
    assert collect(f"{p.base}/subscribe", 1) == [want[2]], "no cursor: from the floor"
    with wsclient.connect(f"{p.base}/subscribe?cursor={t10 * 2}") as ws:
        assert_idle(ws)
    legacy = start(h, "--legacy-v1", name="legacy")
    assert collect(f"{legacy.base}/subscribe?cursor=10", 1) == [lines()[0]], \
        "an old server reads every cursor as a time_us"


def test_v1_wanted_collections(h):
    p = start(h)
    evs = [json.loads(line) for line in v1_lines()]
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


def test_v2_message_frames_as_the_lexicon_lays_them_out(h):
    p = start(h, events=KINDS)
    evs = [json.loads(line) for line in lines(KINDS)]
    with wsclient.connect(p.base + V2, headers={"Sec-WebSocket-Protocol": "xrpc.v1.json"}) as ws:
        assert ws.headers.get("sec-websocket-protocol") == jetwire.SUBPROTOCOL, \
            "the offered subprotocol is echoed"
        got = [ws.recv(5) for _ in evs]
    with wsclient.connect(p.base + V2) as ws:
        assert "sec-websocket-protocol" not in ws.headers, "nothing offered, nothing echoed"
    assert {e["kind"] for e in evs} == {"commit", "identity", "account", "sync"}
    for i, (raw, ev) in enumerate(zip(got, evs)):
        assert raw.startswith('{"$type":"message","payload":{"$type":"' + jetwire.V2_TYPE), raw
        frame = json.loads(raw)
        assert list(frame) == ["$type", "payload"]
        payload = frame["payload"]
        assert payload == jetwire.v2_payload(ev, i + 1)
        assert list(payload) == sorted(payload), "the real server writes members sorted"


def test_v2_cursor_kinds_and_collections(h):
    p = start(h)
    evs = [json.loads(line) for line in lines()]
    payloads = lambda msgs: [json.loads(m)["payload"] for m in msgs]
    got = payloads(collect(p.base + V2 + "?cursor=12", len(evs) - 11))
    assert [f["seq"] for f in got] == list(range(12, len(evs) + 1)), "a seq cursor is inclusive"
    want = [i + 1 for i, e in enumerate(evs) if e["kind"] in ("identity", "account")]
    got = payloads(collect(p.base + V2 + "?kinds=identity&kinds=account", len(want)))
    assert [f["seq"] for f in got] == want
    with wsclient.connect(p.base + V2 + "?kinds=identity&kinds=account&cursor=%d" %
                          (want[-1] + 1)) as ws:
        assert_idle(ws)
    want = [i + 1 for i, e in enumerate(evs)
            if e["kind"] == "commit" and e["commit"]["collection"] == "io.atcr.tag"]
    q = "?kinds=commit&collections=io.atcr.tag"
    got = payloads(collect(p.base + V2 + q, len(want)))
    assert [f["seq"] for f in got] == want
    # collections constrain commits only: account and identity events still come
    want = [i + 1 for i, e in enumerate(evs)
            if e["kind"] != "commit" or e["commit"]["collection"] == "io.atcr.tag"]
    got = payloads(collect(p.base + V2 + "?collections=io.atcr.tag", len(want)))
    assert [f["seq"] for f in got] == want
    alice = "did:plc:aliceaaaaaaaaaaaaaaaaaaa"
    want = [i + 1 for i, e in enumerate(evs) if e["did"] == alice]
    got = payloads(collect(p.base + V2 + "?dids=" + alice, len(want)))
    assert [f["seq"] for f in got] == want


def test_v2_refusals_before_the_upgrade(h):
    p = start(h, "--floor", "5")
    for q, why in (("?wantedCollections=io.atcr.tag", "wantedCollections"),
                   ("?wantedDids=did:plc:x", "wantedDids"), ("?kinds=commits", "kinds"),
                   ("?kinds=identity&collections=io.atcr.tag", "could never apply"),
                   ("?compress=true", "zstdDictionary"), ("?cursor=-3", "cursor"),
                   ("?zstdDictionary=0", "zstdDictionary")):
        status, body = refusal(p.base + V2 + q)
        assert status == 400 and body["error"] == "InvalidRequest" and why in body["message"], \
            (q, body)
    status, body = refusal(p.base + V2 + "?cursor=4")
    assert status == 400 and body["error"] == "CursorTooOld"
    assert "below lookback floor 5" in body["message"], body
    status, body = refusal(p.base + V2 + "?zstdDictionary=12345")
    current = jetwire.dict_id(urllib.request.urlopen(p.http + jetwire.DICT_PATH).read())
    assert status == 400 and body["error"] == "UnknownZstdDictionary"
    assert f"current dictionary id is {current}" in body["message"]
    # at the floor is fine; v1 clamps the same cursor silently
    assert json.loads(collect(p.base + V2 + "?cursor=5", 1)[0])["payload"]["seq"] == 5
    assert json.loads(collect(p.base + "/subscribe?cursor=4", 1)[0])["cursor"] == 5
    assert json.loads(urllib.request.urlopen(p.http + "/_stats").read())["refused"] == 9


def test_v2_time_cursor_below_the_floor_starts_with_outdated_cursor_info(h):
    p = start(h, "--floor", "7")
    t2 = json.loads(lines()[1])["time_us"]
    got = [json.loads(m)["payload"] for m in collect(p.base + V2 + f"?cursor={t2}", 3)]
    assert got[0] == {"$type": jetwire.V2_TYPE + "info", "name": "OutdatedCursor",
                      "message": "requested timestamp cursor below retention floor; "
                                 "starting at seq 7"}
    assert [f["seq"] for f in got[1:]] == [7, 8]
    t9 = json.loads(lines()[8])["time_us"]
    got = [json.loads(m)["payload"] for m in collect(p.base + V2 + f"?cursor={t9}", 1)]
    assert got[0]["seq"] == 9, "a time cursor inside retention: no info, the first event at it"


def test_v2_dict_zstd_frames_are_the_text_frames(h):
    p = start(h, "--info-every", "4", events=KINDS)
    n = len(lines(KINDS)) + len(lines(KINDS)) // 4
    dictionary = urllib.request.urlopen(p.http + jetwire.DICT_PATH).read()
    did = jetwire.dict_id(dictionary)
    text = collect(p.base + V2, n)
    with wsclient.connect(p.base + V2 + f"?zstdDictionary={did}") as ws:
        binary = [ws.recv_message(5) for _ in range(n)]
        assert_idle(ws)
    assert all(op == 2 for op, _ in binary), "every frame is a binary message"
    assert all(jetwire.frame_dict_id(z) == did for _, z in binary)
    assert [jetwire.decompress(dictionary, z).decode() for _, z in binary] == text
    assert sum(len(z) for _, z in binary) < 0.7 * sum(len(t) for t in text)
    # a retrain: the old id is refused, naming the new one, which the endpoint now serves
    urllib.request.urlopen(p.http + "/_rotate").read()
    status, body = refusal(p.base + V2 + f"?zstdDictionary={did}")
    fresh = urllib.request.urlopen(p.http + jetwire.DICT_PATH).read()
    assert jetwire.dict_id(fresh) != did
    assert status == 400 and f"current dictionary id is {jetwire.dict_id(fresh)}" in body["message"]
    try:
        urllib.request.urlopen(p.http + jetwire.DICT_PATH + f"?id={did}")
        raise AssertionError("a retired dictionary id is not served")
    except urllib.error.HTTPError as e:
        assert e.code == 404 and json.loads(e.read())["error"] == "DictionaryNotFound"
    with wsclient.connect(p.base + V2 + f"?zstdDictionary={jetwire.dict_id(fresh)}") as ws:
        op, z = ws.recv_message(5)
        assert jetwire.decompress(fresh, z).decode() == text[0]


def test_bad_zstd_frames_and_error_frames(h):
    p = start(h, "--bad-zstd", "3", "--error-after", "8", "--floor", "2")
    dictionary = urllib.request.urlopen(p.http + jetwire.DICT_PATH).read()
    with wsclient.connect(p.base + V2 + f"?zstdDictionary={jetwire.dict_id(dictionary)}") as ws:
        frames = []
        while (m := ws.recv_bytes(5)) is not None:
            frames.append(m)
    bad, good = [], []
    for z in frames:
        try:
            good.append(json.loads(jetwire.decompress(dictionary, z, limit=1 << 20)))
        except ValueError as e:
            bad.append(str(e))
    assert len(bad) == 2 and any("over the limit" in b for b in bad), bad
    assert [f["payload"]["seq"] for f in good[:-1]] == list(range(2, 10))
    assert good[-1]["$type"] == "error" and good[-1]["error"] == "ConsumerTooSlow"
    assert "cursor=10" in good[-1]["message"], "the error frame says where to resume"


def test_wss_with_a_test_certificate(h):
    if not shutil.which("openssl"):
        raise AssertionError("openssl is needed to mint the test certificate (make deps)")
    cert, key = jetwire.self_signed(h.tmp)
    p = start(h, "--tls-cert", cert, "--tls-key", key)
    url = f"wss://localhost:{p.port}"
    assert collect(url + "/subscribe", 40, cafile=cert) == v1_lines()
    got = collect(url + V2 + "?cursor=40", 1, cafile=cert)
    assert json.loads(got[0])["payload"]["seq"] == 40
    ctx = ssl.create_default_context(cafile=cert)
    stats = json.loads(urllib.request.urlopen(f"https://localhost:{p.port}/_stats",
                                              context=ctx).read())
    assert stats["eventsSent"] == 41
    try:
        collect(url + "/subscribe", 1)
        raise AssertionError("a client that does not trust the certificate got through")
    except ssl.SSLError:
        pass


def test_frames_and_requests_validate_against_the_jetstream_lexicon(h):
    if not os.path.isdir(os.path.join(INTEROP, "node_modules", "@atproto", "lexicon")):
        raise AssertionError("tests/interop/node_modules lacks @atproto/lexicon (make deps)")
    p = start(h, "--info-every", "5", "--error-after", "12", "--floor", "2", events=KINDS)
    t1 = json.loads(lines(KINDS)[0])["time_us"]
    frames = collect_until_idle(p.base + V2 + f"?cursor={t1}")
    frames += collect_until_idle(p.base + V2 + "?kinds=account&kinds=sync&kinds=identity")
    frames += collect_until_idle(p.base + V2 + "?kinds=commit&collections=io.atcr.*&cursor=3")
    path = os.path.join(h.tmp, "frames.jsonl")
    with open(path, "w") as f:
        f.write("".join(fr + "\n" for fr in frames))
    requests = os.path.join(h.tmp, "requests.json")
    with open(requests, "w") as f:
        json.dump([V2 + "?kinds=commit&kinds=identity&kinds=account&kinds=sync"
                   "&collections=io.atcr.manifest&collections=io.atcr.*&cursor=3"
                   "&zstdDictionary=7&maxMessageSizeBytes=1048576"], f)
    out = subprocess.run(["node", os.path.join(INTEROP, "validate-frames.js"), jetwire.LEXICONS,
                          path, requests], capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout)
    assert out.returncode == 0 and not result["errors"], result["errors"][:5]
    assert set(result["kinds"]) == {"commit", "identity", "account", "sync", "info", "error"}, \
        result["kinds"]
    # and the check can fail: a frame in the old guessed framing does not pass
    with open(path, "w") as f:
        f.write(json.dumps({"$type": jetwire.V2_TYPE + "commit", "seq": 1, "did": "did:plc:x",
                            "kind": "commit", "commit": {}}) + "\n")
    out = subprocess.run(["node", os.path.join(INTEROP, "validate-frames.js"), jetwire.LEXICONS,
                          path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and json.loads(out.stdout)["errors"]


def test_drop_after_and_resume_with_cursor(h):
    p = start(h, "--drop-after", "7")
    want = v1_lines()
    got, cursor, connections = [], None, 0
    while len(got) < len(want):
        url = p.base + "/subscribe" + (f"?cursor={cursor + 1}" if cursor else "")
        batch = collect(url, len(want) - len(got))  # or fewer, when the server drops it
        connections += 1
        assert 0 < len(batch) <= 7, f"connection {connections} sent {len(batch)} events"
        got += batch
        cursor = json.loads(batch[-1])["cursor"]
    assert got == want and connections == 6
    _, stats = h.get_json(p.http + "/_stats")
    assert stats["drops"] == 5 and stats["eventsSent"] == len(want)
    assert "/subscribe?cursor=8" in stats["requests"]


def test_malformed_frames_are_interleaved(h):
    for v2 in (False, True):
        p = start(h, "--malformed", "5", name=f"replay-{v2}")
        want = v1_lines() if not v2 else [
            json.dumps(jetwire.v2_payload(json.loads(line), i + 1), sort_keys=True)
            for i, line in enumerate(lines())]
        n = len(want) + len(want) // 5
        with wsclient.connect(p.base + (V2 if v2 else "/subscribe")) as ws:
            frames = [ws.recv_bytes(5) for _ in range(n)]
            assert_idle(ws)
        good = [f.decode() for i, f in enumerate(frames) if (i + 1) % 6]
        bad = [f for i, f in enumerate(frames) if (i + 1) % 6 == 0]
        if v2:
            good = [json.dumps(json.loads(g)["payload"], sort_keys=True) for g in good]
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
            body = obj.get("payload", obj)
            kinds.add("types" if not isinstance(body.get("did"), str) else "record")
        assert kinds == {"utf8", "truncated", "types", "record"}


def test_loop_shifts_time_and_seq(h):
    p = start(h, "--loop", "3")
    n = len(lines())
    got = [json.loads(m)["payload"] for m in collect(p.base + V2, 3 * n)]
    assert [f["seq"] for f in got] == list(range(1, 3 * n + 1))
    times = [f["time"] for f in got]
    assert all(a < b for a, b in zip(times, times[1:])), "time increases across passes"
    assert {k: v for k, v in got[n].items() if k not in ("seq", "time")} == \
        {k: v for k, v in got[0].items() if k not in ("seq", "time")}
    v1 = [json.loads(m) for m in collect(f"{p.base}/subscribe", 3 * n)]
    assert [jetwire.wire_time(e["time_us"]) for e in v1] == times
    assert [e["cursor"] for e in v1] == list(range(1, 3 * n + 1))
    again = collect(f"{p.base}/subscribe?cursor={v1[2 * n]['time_us']}", n)
    assert [json.loads(m)["cursor"] for m in again] == list(range(2 * n + 1, 3 * n + 1))


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
    p = start(h, "--legacy-v1", events=path)
    with wsclient.connect(p.base + "/subscribe") as ws:
        got = [ws.recv_bytes(5) for _ in want]
        assert_idle(ws)
    assert got == want, "v1 sends every line as it is, unparseable ones included"
    assert max(len(b) for b in got) > 2 * 1024 * 1024


def test_precompressed_frames_are_the_frames_compressed_on_the_fly(h):
    """--precompress (the benchmark's) changes what the server spends, not what it sends."""
    fly = start(h, name="fly")
    pre = start(h, "--precompress", name="pre")
    out = []
    for p in (fly, pre):
        dictionary = urllib.request.urlopen(p.http + jetwire.DICT_PATH).read()
        with wsclient.connect(p.base + V2 + f"?zstdDictionary={jetwire.dict_id(dictionary)}") as ws:
            out.append([jetwire.decompress(dictionary, ws.recv_bytes(5)) for _ in lines()])
    assert out[0] == out[1] and len(out[0]) == len(lines())
    assert json.loads(urllib.request.urlopen(pre.http + "/_stats").read())["framesCompressed"] \
        == len(lines())


def test_ws_discard_over_wss(h):
    cert, key = jetwire.self_signed(h.tmp)
    p = start(h, "--loop", "50", "--tls-cert", cert, "--tls-key", key)
    out = subprocess.run([h.binary("tools/ws_discard"), f"wss://localhost:{p.port}/subscribe",
                          "--count", "2000"], capture_output=True, text=True, timeout=20,
                         env=dict(os.environ, SSL_CERT_FILE=cert))
    assert out.returncode == 0, out.stderr
    assert dict(kv.split("=") for kv in out.stdout.split())["frames"] == "2000"
    out = subprocess.run([h.binary("tools/ws_discard"), f"wss://localhost:{p.port}/subscribe",
                          "--count", "10"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "TLS handshake" in out.stderr, "an untrusted server is refused"
