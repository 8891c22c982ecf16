"""Ingest of Jetstream as it runs today, end to end: the replay server speaking the shipped v1
and v2 wires -> bin/appview -> a real redis-server (and, for #sync, a real PDS and PLC from
tests/lib/devnet.py).

v2 plain and dict-zstd must fold the same stream into the same index as v1; reconnects resume
at the right seq, and a process that read events resumes after them even before it persisted
a cursor; a SIGKILL on a v1 stream with seqs resumes exactly by seq. #sync reloads the DID from
its PDS; #info moves nothing (OutdatedCursor marks indexes incomplete); an error frame
reconnects after a backoff; CursorTooOld resumes from the floor and marks every index
incomplete; corrupt or oversized zstd frames are dropped and counted; wss:// with a test
certificate.
"""
import json
import os
import socket
import ssl
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import devnet  # noqa: E402
import jetwire  # noqa: E402
import test_ingest as e2e  # noqa: E402  (its helpers: replay, appview, snapshots)
from harness import free_port, wait_for  # noqa: E402

PREFIX = e2e.PREFIX
BASIC = os.path.join(e2e.FIXTURES, "basic.jsonl")
V2 = jetwire.V2_PATH
SEQ_LIMIT = 10 ** 15  # below: a seq cursor; from here on a time_us
SCHEMA = e2e.SCHEMA


def url(replay, path=V2, scheme="ws"):
    host = "localhost" if scheme == "wss" else "127.0.0.1"
    return f"{scheme}://{host}:{replay.port}{path}"


def replay_stats(h, replay):
    return h.get_json(f"http://127.0.0.1:{replay.port}/_stats")[1]


def start_tls_replay(h, events, extra=()):
    """The replay server on wss:// with a test certificate: its process and (cert, key)."""
    cert = jetwire.self_signed(h.tmp)
    port = free_port()
    replay = h.spawn("replay", [h.binary("tools/jetstream_replay"), "--listen",
                                f"127.0.0.1:{port}", "--events", events, *extra,
                                "--tls-cert", cert[0], "--tls-key", cert[1]])
    replay.port = port
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
             what="replay server listening")
    return replay, cert


def tls_replay_stats(replay, cert):
    tls = ssl.create_default_context(cafile=cert[0])
    with urllib.request.urlopen(f"https://localhost:{replay.port}/_stats", context=tls,
                                timeout=10) as r:
        return json.loads(r.read())


def requests_to(h, replay, path=V2):
    return [r for r in replay_stats(h, replay)["requests"] if r.startswith(path)]


def cursor_of(request):
    q = dict(kv.split("=", 1) for kv in request.split("?", 1)[1].split("&") if "=" in kv)
    return int(q["cursor"]) if "cursor" in q else None


def sent_seqs(path):
    """The seqs of the events the server sends an appview (it asks for its collections only;
    identity, account and sync events always come)."""
    out = []
    for n, ev in enumerate(e2e.read_events(path), 1):
        if ev["kind"] != "commit" or ev["commit"]["collection"] in e2e.WANTED:
            out.append(n)
    return out


def last_seq_and_time(path):
    time_us, seq = e2e.last_event(path)
    return seq, time_us


def fold_once(h, events, path, tag, env=None, replay_args=()):
    """events folded by an appview reading path; the index dump and the appview's metrics."""
    redis = h.start_redis(name=f"redis-{tag}")
    replay = e2e.start_replay(h, events, replay_args, name=f"replay-{tag}")
    app = e2e.start_appview(h, redis, [url(replay, path)], name=f"appview-{tag}", env=env)
    seq, time_us = last_seq_and_time(events)
    e2e.wait_cursor(h, redis, 1, time_us)
    if path == V2:
        e2e.wait_cursor(h, redis, 2, seq)
    metrics = h.metrics(app.base)
    health = h.get_json(app.base + "/xrpc/_health")[1]
    dump = e2e.dump(h, redis)
    assert app.stop() == 0
    return dump, metrics, health


def test_v2_plain_and_compressed_fold_what_v1_folds(h):
    events = e2e.generate(h, 20000, seed=3)
    v1, m1, _ = fold_once(h, events, "/subscribe", "v1")
    plain, mp, _ = fold_once(h, events, V2, "v2", env={"APPVIEW_JETSTREAM_COMPRESS": "off"})
    packed, mz, health = fold_once(h, events, V2, "zstd")
    assert len(v1) > 100
    for name, d in (("v2", plain), ("v2 zstd", packed)):
        diff = sorted(k for k in set(v1) | set(d) if v1.get(k) != d.get(k))
        assert not diff, (name, [(k, v1.get(k), d.get(k)) for k in diff[:6]])
    assert mp["appview_jetstream_compressed"] == 0 and mz["appview_jetstream_compressed"] == 1
    assert health["jetstream"]["compressed"] is True and health["jetstream"]["seq"] > 0
    assert mp["appview_jetstream_bytes_total"] == mp["appview_jetstream_decompressed_bytes_total"]
    assert mz["appview_jetstream_bytes_total"] < 0.6 * mz["appview_jetstream_decompressed_bytes_total"]
    for m in (m1, mp, mz):
        assert m["appview_events_unknown_total"] == 0
    assert mz["appview_events_folded_total"] == mp["appview_events_folded_total"] == \
        m1["appview_events_folded_total"]


def test_basic_fold_over_v2_zstd(h):
    redis = h.start_redis()
    replay = e2e.start_replay(h, BASIC)
    app = e2e.start_appview(h, redis, [url(replay)])
    seq, _ = last_seq_and_time(BASIC)
    e2e.wait_cursor(h, redis, 2, seq)
    e2e.check_basic_fold(h, redis)
    reqs = requests_to(h, replay)
    assert "zstdDictionary=" in reqs[0] and "kinds=sync" in reqs[0], reqs
    assert h.metrics(app.base)["appview_jetstream_compressed"] == 1


def test_reconnects_resume_after_the_last_event_read(h):
    """The replay drops every connection after 15 events, long before the 200 ms cursor write:
    each reconnect must still ask for the seq after the last event it read (issue 15)."""
    redis = h.start_redis()
    replay = e2e.start_replay(h, BASIC, ["--drop-after", "15"])
    e2e.start_appview(h, redis, [url(replay)])
    seq, _ = last_seq_and_time(BASIC)
    e2e.wait_cursor(h, redis, 2, seq)
    e2e.check_basic_fold(h, redis)
    sent = sent_seqs(BASIC)
    assert [cursor_of(r) for r in requests_to(h, replay)] == [None, sent[14] + 1, sent[29] + 1]

    legacy = e2e.start_replay(h, BASIC, ["--drop-after", "15", "--legacy-v1"], name="legacy")
    redis2 = h.start_redis(name="redis-legacy")
    # no rewind: with events a millisecond apart a rewind of seconds would replay them all
    e2e.start_appview(h, redis2, [url(legacy, "/subscribe")], name="appview-legacy",
                      env={"APPVIEW_CURSOR_REWIND_SECONDS": "0"})
    _, time_us = last_seq_and_time(BASIC)
    e2e.wait_cursor(h, redis2, 1, time_us)
    e2e.check_basic_fold(h, redis2)
    times = [ev["time_us"] for ev in e2e.read_events(BASIC)]
    # no seq on an old server: the time_us of the last event read (the cursor is inclusive)
    assert cursor_of(requests_to(h, legacy, "/subscribe")[1]) == times[sent[14] - 1]
    assert h.redis(redis2, "EXISTS", PREFIX + "cursor:v2") == "(integer) 0"


def test_sigkill_on_v1_with_seqs_resumes_exactly(h):
    events = e2e.generate(h, 20000)
    want = e2e.reference_fold(h, events)
    redis = h.start_redis()
    replay = e2e.start_replay(h, events, ["--rate", "4000"])
    link = url(replay, "/subscribe")
    seq, time_us = last_seq_and_time(events)
    resumed = []
    for i in range(3):
        saved = int(h.redis(redis, "GET", PREFIX + "cursor:v2").strip('"') or 0) if i else 0
        app = e2e.start_appview(h, redis, [link], name=f"appview-{i}")
        if i:  # it waits out its predecessor's lease first, then asks for the next seq
            resumed.append(saved)
            wait_for(lambda: cursor_of(requests_to(h, replay, "/subscribe")[-1]) == saved + 1,
                     what=f"the restart asking for seq {saved + 1}")
        time.sleep(0.8 if i == 0 else 0.4)
        app.kill()
    saved = int(h.redis(redis, "GET", PREFIX + "cursor:v2").strip('"'))
    assert saved < seq, "the stream was folded before the kills: nothing tested"
    assert h.redis(redis, "GET", PREFIX + "cursor:url") == link
    e2e.start_appview(h, redis, [link], name="appview-final")
    e2e.wait_cursor(h, redis, 1, time_us)
    e2e.wait_cursor(h, redis, 2, seq)
    cursors = [cursor_of(r) for r in requests_to(h, replay, "/subscribe")]
    assert cursors[-1] == saved + 1 and all(c < SEQ_LIMIT for c in cursors[1:]), cursors
    assert all(r > 0 for r in resumed), "each restart resumed from a persisted seq"
    e2e.assert_same_index(e2e.snapshot(h, redis), want)


def test_info_frames_move_nothing_and_outdated_cursor_marks_indexes_incomplete(h):
    redis = h.start_redis()
    done = f"{PREFIX}{{did:plc:untouchedddddddddddddddd}}/complete"
    h.redis(redis, "SET", done, "1")
    replay = e2e.start_replay(h, BASIC, ["--info-every", "4"])
    app = e2e.start_appview(h, redis, [url(replay)])
    seq, _ = last_seq_and_time(BASIC)
    e2e.wait_cursor(h, redis, 2, seq)
    e2e.check_basic_fold(h, redis)
    m = h.metrics(app.base)
    infos = replay_stats(h, replay)["infosSent"]
    assert m["appview_jetstream_info_total"] == infos >= 6, (m["appview_jetstream_info_total"], infos)
    assert m["appview_ingest_indexes_marked_incomplete_total"] == 0
    assert h.redis(redis, "GET", done) == "1"
    assert app.stop() == 0

    # A time cursor (no seq of this server) below its floor: clamped, and said so in-band.
    redis = h.start_redis(name="redis-outdated")
    t2 = e2e.read_events(BASIC)[1]["time_us"]
    h.redis(redis, "SET", PREFIX + "schema", SCHEMA)
    h.redis(redis, "SET", PREFIX + "cursor:v1", str(t2 + 1_000_000))
    h.redis(redis, "SET", done, "1")
    replay = e2e.start_replay(h, BASIC, ["--floor", "10"], name="replay-outdated")
    app = e2e.start_appview(h, redis, [url(replay)], name="appview-outdated")
    e2e.wait_cursor(h, redis, 2, seq)
    assert cursor_of(requests_to(h, replay)[0]) == t2
    m = h.metrics(app.base)
    assert m["appview_ingest_outdated_cursor_total"] == 1
    wait_for(lambda: h.redis(redis, "EXISTS", done) == "(integer) 0",
             what="the index marked incomplete")
    assert h.metrics(app.base)["appview_ingest_indexes_marked_incomplete_total"] >= 1
    assert h.get_json(app.base + "/xrpc/_health")[1]["jetstream"]["outdatedCursor"] == 1


def test_error_frame_reconnects_after_a_backoff(h):
    redis = h.start_redis()
    replay = e2e.start_replay(h, BASIC, ["--error-after", "12"])
    app = e2e.start_appview(h, redis, [url(replay)])
    seq, _ = last_seq_and_time(BASIC)
    e2e.wait_cursor(h, redis, 2, seq)
    e2e.check_basic_fold(h, redis)
    sent = sent_seqs(BASIC)
    assert [cursor_of(r) for r in requests_to(h, replay)] == \
        [None, sent[11] + 1, sent[23] + 1][:len(sent) // 12 + 1], requests_to(h, replay)
    assert h.metrics(app.base)["appview_jetstream_error_frames_total"] == len(sent) // 12
    assert "Jetstream ended the stream: ConsumerTooSlow" in app.log()
    assert "retrying %s in" % url(replay) in app.log()


def test_cursor_too_old_resumes_from_the_floor_and_marks_indexes_incomplete(h):
    redis = h.start_redis()
    replay = e2e.start_replay(h, BASIC, ["--floor", "20"])
    link = url(replay)
    times = [ev["time_us"] for ev in e2e.read_events(BASIC)]
    done = [f"{PREFIX}{{did:plc:{c * 24}}}/complete" for c in "xyz"]
    for key in done:
        h.redis(redis, "SET", key, "1")
    h.redis(redis, "MSET", PREFIX + "schema", SCHEMA, PREFIX + "cursor:v1", str(times[2]),
            PREFIX + "cursor:v2", "3", PREFIX + "cursor:url", link)
    app = e2e.start_appview(h, redis, [link])
    seq, _ = last_seq_and_time(BASIC)
    e2e.wait_cursor(h, redis, 2, seq)
    assert [cursor_of(r) for r in requests_to(h, replay)] == [4, 20]
    status, health = h.get_json(app.base + "/xrpc/_health")
    assert status == 200 and health["jetstream"]["cursorTooOld"] == 1
    assert health["jetstream"]["lastFloor"] == 20
    wait_for(lambda: h.redis(redis, "EXISTS", *done) == "(integer) 0",
             what="every index marked incomplete")
    m = h.metrics(app.base)
    assert m["appview_ingest_cursor_too_old_total"] == 1
    assert m['appview_jetstream_refusals_total{error="CursorTooOld"}'] == 1
    assert m["appview_ingest_indexes_marked_incomplete_total"] == 3


def test_corrupt_and_oversized_zstd_frames_are_dropped_and_counted(h):
    redis = h.start_redis()
    replay = e2e.start_replay(h, BASIC, ["--bad-zstd", "5"])
    app = e2e.start_appview(h, redis, [url(replay)])
    seq, _ = last_seq_and_time(BASIC)
    e2e.wait_cursor(h, redis, 2, seq)
    e2e.check_basic_fold(h, redis)
    m = h.metrics(app.base)
    assert m["appview_jetstream_zstd_errors_total"] >= 3
    assert m["appview_jetstream_oversize_total"] >= 3
    assert m["appview_jetstream_reconnects_total"] == 0
    assert app.alive()


def test_wss_with_a_test_certificate(h):
    redis = h.start_redis()
    replay, cert = start_tls_replay(h, BASIC)
    # the default URLs' shape: wss://host/subscribe
    app = e2e.start_appview(h, redis, [url(replay, "/subscribe", "wss")],
                            env={"SSL_CERT_FILE": cert[0]})
    _, time_us = last_seq_and_time(BASIC)
    e2e.wait_cursor(h, redis, 1, time_us)
    e2e.check_basic_fold(h, redis)
    assert h.get_json(app.base + "/xrpc/_health")[1]["jetstream"]["url"].startswith("wss://")


def test_wss_reading_stops_while_valkey_is_behind(h):
    """Over wss:// the reader stops when the writes pending pass their bound, as over ws://.
    OpenSSL keeps decrypted bytes the socket does not announce again; draining them with a
    zero timer that re-armed itself ran in one pass of Debian's libuv and starved the phase
    where the ingester pauses reading, so a fast stream was read into memory whole."""
    events = e2e.generate(h, 50000, seed=19)
    redis = h.start_redis()
    replay, cert = start_tls_replay(h, events, ["--loop", "100"])

    def sent():
        return tls_replay_stats(replay, cert)["eventsSent"]

    app = e2e.start_appview(h, redis, [url(replay, "/subscribe", "wss")],
                            env={"SSL_CERT_FILE": cert[0]})
    # shorter than the lease (3 s in these tests): the replica keeps it and its stream
    e2e.stall_valkey_once_ingesting(h, redis, 2500)
    before = sent()
    time.sleep(2)
    read = sent() - before
    # While Valkey stands still, at most 20,000 events' writes come to be pending (one event
    # in 2.5 is ours: 50,000 events) and the sockets buffer a few thousand more.
    assert read < 80000, f"{read} events read in 2 s while Valkey stood still"
    e2e.wait_cursor(h, redis, 1, e2e.last_event(events)[0])
    assert app.stop() == 0


def test_sync_reloads_the_did_from_its_pds(h):
    why = devnet.available()
    if why:
        raise AssertionError(why)
    net = devnet.start(h)
    alice = net.account("alice.test")["did"]
    digest = "sha256:%064x" % 7
    manifest = {"$type": "io.atcr.manifest", "repository": "tools", "digest": digest,
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
                "holdDid": "did:web:hold01.atcr.io", "createdAt": "2025-08-12T12:00:00Z"}
    uri = net.command("create", repo=alice, collection="io.atcr.manifest",
                      record=manifest)["uri"]
    net.command("create", repo=alice, collection="io.atcr.tag",
                record={"$type": "io.atcr.tag", "repository": "tools", "tag": "v1",
                        "manifest": uri, "manifestDigest": digest,
                        "createdAt": "2025-08-12T12:00:01Z"})
    # The stream showed a manifest the repo no longer has (its history was rewritten), then
    # says so with #sync.
    ghost = "sha256:%064x" % 8
    t = 1755000000000000
    events = [
        {"did": alice, "time_us": t, "kind": "commit", "commit": {
            "rev": "3kaaaaaaaaaa2", "operation": "create", "collection": "io.atcr.manifest",
            "rkey": "3kaaaaaaaaaa2", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
            "record": dict(manifest, repository="ghosts", digest=ghost)}},
        {"did": alice, "time_us": t + 1000000, "kind": "sync", "sync": {
            "did": alice, "seq": 900, "rev": "3kaaaaaaaaab2", "blocks": {"$bytes": "OqJl"},
            "time": "2025-08-12T12:00:02.000Z"}},
        # An old update of the record the reload found gone, delivered after it: the reload's
        # tombstone (at the repository's latest rev) must win over what the writer remembered.
        {"did": alice, "time_us": t + 5000000, "kind": "commit", "commit": {
            "rev": "3kaaaaaaaaac2", "operation": "update", "collection": "io.atcr.manifest",
            "rkey": "3kaaaaaaaaaa2", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
            "record": dict(manifest, repository="ghosts", digest=ghost)}},
    ]
    path = e2e.write_events(os.path.join(h.tmp, "sync.jsonl"), events)
    redis = h.start_redis()
    replay = e2e.start_replay(h, path, ["--live"])  # the #sync a second later, then 4 s
    app = e2e.start_appview(h, redis, [url(replay)], env={
        "APPVIEW_PLC_URL": net.plc, "APPVIEW_ALLOW_PRIVATE_NETWORKS": "1"})
    complete = f"{PREFIX}{{{alice}}}/complete"

    def index():
        return e2e.snapshot(h, redis)["index"].get(alice, {})

    wait_for(lambda: ghost in h.redis_raw(redis, "ZRANGE",
                                         f"{PREFIX}{{{alice}}}/repo/ghosts/manifests", 0, -1),
             what="the firehose's manifest indexed")
    assert h.redis(redis, "EXISTS", complete) == "(integer) 0"
    wait_for(lambda: h.redis(redis, "EXISTS", complete) == "(integer) 1", timeout=30,
             what="the DID reloaded from its PDS")
    got = index()
    assert "ghosts" not in got, "a record the repo no longer has is gone"
    e2e.wait_cursor(h, redis, 1, t + 5000000)
    assert "ghosts" not in index(), "an older event brought back what the reload pruned"
    assert e2e.digests(got["tools"]["manifests"]) == [digest], got
    assert got["tools"]["tags"] == {"v1": digest}, got
    m = h.metrics(app.base)
    assert m["appview_ingest_syncs_total"] == 1 and m["appview_loader_runs_total"] >= 1
    assert "#sync for " + alice in app.log()
    _, body = h.get_json(f"{app.base}/xrpc/io.atcr.repo.listRepositories?actor={alice}")
    assert [r["name"] for r in body["repositories"]] == ["tools"], body
