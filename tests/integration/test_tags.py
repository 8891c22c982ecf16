"""Records exactly as the published lexicons allow (issue 15): io.atcr.manifest keyed by TIDs, tags
naming their manifest by at-uri, in any order, through the firehose (v1 and v2) and the cold path,
checked through the XRPC reads a user makes.

DID A is a did:web on a closed port: the appview can never reach its PDS, so whatever it serves
of A comes from the firehose (lists are partial and stale). DID B lives on a real PDS
(tests/lib/devnet.py): a manifest it never saw on the firehose is fetched with getRecord.
"""
import os

import devnet
import test_coldpath as coldpath
from harness import free_port, wait_for
from records import CID, MEDIA, tid_at
from test_ingest import last_event, start_replay, wait_cursor, write_events

PREFIX = "atcr:"
NS = "2025-01-12T23:20:50.123456789Z"  # nanoseconds
OFFSET = "2025-01-13T10:15:32.5+01:00"  # 09:15:32.5Z, an offset and one fractional digit
WHOLE = "2025-01-15T00:00:00Z"  # no fraction
G = {i: "sha256:%064x" % i for i in range(1, 10)}


def available():
    return devnet.available()


_NET = {}


def shared_devnet(h):
    if "net" not in _NET:
        import atexit

        class Holder:
            tmp = os.path.join(h.root, "var", "test", "test_tags_devnet")
            procs = []
        os.makedirs(Holder.tmp, exist_ok=True)
        _NET["net"] = devnet.start(Holder(), name="devnet")
        atexit.register(_NET["net"].stop)
    return _NET["net"]


class Stream:
    """Jetstream v1 commit events in stream order, with increasing time_us."""

    def __init__(self, t0=1736700000000000):
        self.t, self.events = t0, []

    def commit(self, did, rev, op, collection, rkey, record=None, cid=CID):
        self.t += 1000
        c = {"rev": rev, "operation": op, "collection": collection, "rkey": rkey}
        if record is not None:
            c.update(record=record, cid=cid)
        ev = {"did": did, "time_us": self.t, "kind": "commit", "commit": c}
        self.events.append(ev)
        return ev

    def again(self, ev):
        """An event delivered again, later (the stream is at-least-once)."""
        self.t += 1000
        self.events.append(dict(ev, time_us=self.t))


def manifest(repo, digest, created):
    return {"$type": "io.atcr.manifest", "repository": repo, "digest": digest,
            "mediaType": MEDIA, "schemaVersion": 2, "createdAt": created,
            "holdDid": "did:web:hold.example.com"}


def tag(did, repo, name, mrkey=None, created=NS, digest=None, uri=None):
    rec = {"$type": "io.atcr.tag", "repository": repo, "tag": name, "createdAt": created}
    if mrkey:
        rec["manifest"] = uri or f"at://{did}/io.atcr.manifest/{mrkey}"
    if digest:
        rec["manifestDigest"] = digest
    return rec


def rev(n):
    return tid_at(1736700000000000 + n * 1000, 7)


def scenario(a):
    """DID a's stream; returns it with the record keys it used."""
    s = Stream()
    m = {i: tid_at(1736600000000000 + i * 1000, 3) for i in range(1, 10)}  # manifest rkeys
    t2 = tid_at(1736600000500000, 3)  # a tag record with a TID key
    m_, t_ = "io.atcr.manifest", "io.atcr.tag"
    # One commit: the tag before its manifest.
    first = s.commit(a, rev(1), "create", t_, "app_latest", tag(a, "app", "latest", m[1]))
    s.commit(a, rev(1), "create", m_, m[1], manifest("app", G[1], NS))
    # The manifest of a tag in a later commit.
    s.commit(a, rev(2), "create", t_, t2, tag(a, "app", "v1", m[2], OFFSET))
    s.commit(a, rev(3), "create", m_, m[2], manifest("app", G[2], OFFSET))
    # A manifest that never comes (a has no reachable PDS).
    s.commit(a, rev(4), "create", t_, "app_stable", tag(a, "app", "stable", m[9]))
    # A manifest deleted under its tag, then its create delivered again.
    s.commit(a, rev(5), "create", m_, m[3], manifest("app", G[3], WHOLE))
    created3 = s.events[-1]
    s.commit(a, rev(5), "create", t_, "app_old", tag(a, "app", "old", m[3]))
    s.commit(a, rev(6), "delete", m_, m[3])
    # A tag moved to another manifest; its first create delivered again.
    s.commit(a, rev(7), "update", t_, "app_latest", tag(a, "app", "latest", m[2], WHOLE))
    s.again(first)
    # A tag record renamed: v1 goes, v1.0 comes.
    s.commit(a, rev(8), "update", t_, t2, tag(a, "app", "v1.0", m[2], OFFSET))
    # Two manifest records of one digest; the one written last (the hint) is deleted.
    s.commit(a, rev(9), "create", m_, m[5], manifest("app", G[4], WHOLE))
    s.commit(a, rev(9), "create", m_, m[4], manifest("app", G[4], WHOLE))
    s.commit(a, rev(9), "create", t_, "app_dup", tag(a, "app", "dup", m[5]))
    s.commit(a, rev(10), "delete", m_, m[4])
    s.again(created3)
    # An older writer's tag: only the deprecated digest.
    s.commit(a, rev(11), "create", t_, "app_legacy", tag(a, "app", "legacy", digest=G[2]))
    # Bad references: dropped and counted, nothing else lost.
    other = "did:plc:ooooooooooooooooooooooooo"[:32]
    bad = [("badfmt", f"at://{a}/io.atcr.manifest/{m[1]}/extra/parts"),
           ("otherdid", f"at://{other}/io.atcr.manifest/{m[1]}"),
           ("handle", f"at://alice.example.com/io.atcr.manifest/{m[1]}"),
           ("othercoll", f"at://{a}/io.atcr.tag/app_latest")]
    for i, (name, uri) in enumerate(bad):
        s.commit(a, rev(12 + i), "create", t_, f"app_{name}", tag(a, "app", name, m[1], uri=uri))
    s.commit(a, rev(20), "create", t_, "app_neither", tag(a, "app", "neither"))
    return s, m


def start_appview(h, redis, net, urls, name="appview", env=None):
    full = {"APPVIEW_JETSTREAM_URLS": ",".join(urls), "APPVIEW_UPSTREAM_TIMEOUT_MS": "3000",
            "APPVIEW_INGEST_LEASE_SECONDS": "3"}
    full.update(env or {})
    return coldpath.start_appview(h, redis, net, env=full, name=name)


def check_scenario(h, app, a, m):
    st, body = coldpath.xrpc(h, app, "listTags", actor=a, repository="app")
    assert st == 200, body
    # a's PDS cannot be reached: the list is what the firehose showed, marked stale.
    assert body.get("stale") is True, body
    tags = {t["tag"]: t for t in body["tags"]}
    got = {name: t.get("digest") for name, t in tags.items()}
    assert got == {"latest": G[2], "v1.0": G[2], "stable": None, "old": None, "dup": G[4],
                   "legacy": G[2]}, body
    # Values as written, ordered by the instant (OFFSET is 09:15:32.5Z, after NS).
    assert tags["latest"]["createdAt"] == WHOLE and tags["v1.0"]["createdAt"] == OFFSET
    assert tags["dup"]["createdAt"] == NS, tags
    order = [t["tag"] for t in body["tags"]]
    assert order.index("latest") < order.index("v1.0") < order.index("dup"), order

    def manifest_of(ref):
        return coldpath.xrpc(h, app, "getManifest", actor=a, repository="app", reference=ref)

    for ref, rkey, digest in (("latest", m[2], G[2]), ("v1.0", m[2], G[2]),
                              ("dup", m[5], G[4]), ("legacy", m[2], G[2]),
                              (G[1], m[1], G[1]), (G[4], m[5], G[4])):
        st, body = manifest_of(ref)
        assert st == 200, (ref, body)
        assert body["uri"] == f"at://{a}/io.atcr.manifest/{rkey}" and body["digest"] == digest
    assert manifest_of(G[2])[1]["record"]["createdAt"] == OFFSET
    assert manifest_of(G[1])[1]["record"]["createdAt"] == NS
    # Known to be gone: 404 though the PDS is unreachable.
    for ref in ("v1", "old", G[3]):
        st, body = manifest_of(ref)
        assert st == 404 and body["error"] == "NotFound", (ref, st, body)
    # Not known at all, and the PDS is unreachable: the upstream failure is the answer.
    for ref in ("stable", G[9], "nosuchtag"):
        st, body = manifest_of(ref)
        assert st == 502 and body["error"] == "UpstreamFailure", (ref, st, body)

    st, body = coldpath.xrpc(h, app, "listRepositories", actor=a)
    assert st == 200 and body.get("stale") is True, body
    (r,) = body["repositories"]
    assert (r["name"], r["tagCount"], r["manifestCount"]) == ("app", 6, 3), r
    assert r["latestDigest"] == G[4] and r["updatedAt"] == WHOLE, r

    st, body = coldpath.xrpc(h, app, "listRecent", limit=100)
    mine = [(x["digest"], x["createdAt"]) for x in body["manifests"] if x["did"] == a]
    assert mine == [(G[4], WHOLE), (G[2], OFFSET), (G[1], NS)], body

    mets = h.metrics(app.base)
    for reason, n in (("invalid_record", 1), ("manifest_uri_other_repo", 2),
                      ("manifest_uri_other_collection", 1), ("no_manifest_ref", 1)):
        key = f'appview_events_dropped_total{{reason="{reason}"}}'
        assert mets.get(key) == n, (key, {k: v for k, v in mets.items() if "dropped" in k})


def run_scenario(h, path):
    net = shared_devnet(h)
    a = f"did:web:127.0.0.1%3A{free_port()}"
    stream, m = scenario(a)
    # b: a manifest on its PDS the firehose never showed, and a tag the firehose did.
    b = net.command("createAccount", handle=f"b{free_port()}.test")["did"]
    made = net.command("create", repo=b, collection="io.atcr.manifest",
                       record=manifest("tools", G[7], OFFSET))
    mb = made["uri"].rsplit("/", 1)[1]
    t = net.command("create", repo=b, collection="io.atcr.tag", rkey="tools_latest",
                    record=tag(b, "tools", "latest", mb, NS))
    stream.commit(b, t["rev"], "create", "io.atcr.tag", "tools_latest",
                  tag(b, "tools", "latest", mb, NS), t["cid"])
    events = write_events(os.path.join(h.tmp, "tags.jsonl"), stream.events)
    redis = h.start_redis()
    replay = start_replay(h, events)
    app = start_appview(h, redis, net, [f"ws://127.0.0.1:{replay.port}{path}"])
    time_us, seq = last_event(events)
    if path == "/subscribe":
        wait_cursor(h, redis, 1, time_us)
    else:
        wait_cursor(h, redis, 2, seq)
    check_scenario(h, app, a, m)

    # b's tag came first; its manifest is fetched from the PDS once, then served from Valkey.
    for _ in range(2):
        st, body = coldpath.xrpc(h, app, "getManifest", actor=b, repository="tools", reference="latest")
        assert st == 200, body
        assert body["uri"] == made["uri"] and body["digest"] == G[7], body
    mets = h.metrics(app.base)
    assert mets['appview_upstream_requests_total{method="getRecord"}'] == 1, mets
    assert app.stop() == 0


def test_tid_keyed_manifests_and_tags_by_at_uri_v1(h):
    run_scenario(h, "/subscribe")


def test_tid_keyed_manifests_and_tags_by_at_uri_v2(h):
    run_scenario(h, "/xrpc/network.bsky.jetstream.subscribeEvents")


def test_what_the_index_knows_is_served_while_plc_is_down(h):
    """An index built from the cold path; then the PLC directory goes away (and the cached
    identity expires): records the index holds are served, records it knows were deleted answer
    404, lists are served stale, and only what it knows nothing of is an upstream failure."""
    net = shared_devnet(h)
    d = net.command("createAccount", handle=f"plc{free_port()}.test")["did"]
    rk = {}
    for i in (1, 2, 3):
        rk[i] = net.command("create", repo=d, collection="io.atcr.manifest",
                            record=manifest("app", G[i], WHOLE))["uri"].rsplit("/", 1)[1]
        net.command("create", repo=d, collection="io.atcr.tag", rkey=f"t{i}",
                    record=tag(d, "app", f"t{i}", rk[i], NS))
    redis = h.start_redis()
    closed = [f"ws://127.0.0.1:{free_port()}/subscribe"]
    app = start_appview(h, redis, net, closed)
    st, body = coldpath.xrpc(h, app, "listTags", actor=d, repository="app")
    assert st == 200 and len(body["tags"]) == 3, body
    # t3 and manifest 3 deleted on the PDS; a listing learns it (the prune leaves tombstones).
    net.command("delete", repo=d, collection="io.atcr.tag", rkey="t3")
    net.command("delete", repo=d, collection="io.atcr.manifest", rkey=rk[3])
    base = f"{PREFIX}{{{d}}}/"
    h.redis(redis, "DEL", base + "complete")
    st, body = coldpath.xrpc(h, app, "listTags", actor=d, repository="app")
    assert sorted(t["tag"] for t in body["tags"]) == ["t1", "t2"], body
    assert app.stop() == 0

    # The PLC directory is gone, and so are the cached identity and the complete mark.
    h.redis(redis, "DEL", base + "complete", base + "id")
    down = start_appview(h, redis, net, closed, name="appview-plc-down",
                         env={"APPVIEW_PLC_URL": f"http://127.0.0.1:{free_port()}"})
    for ref, digest in (("t1", G[1]), (G[2], G[2])):
        st, body = coldpath.xrpc(h, down, "getManifest", actor=d, repository="app", reference=ref)
        assert st == 200 and body["digest"] == digest, (ref, st, body)
    for ref in ("t3", G[3]):
        st, body = coldpath.xrpc(h, down, "getManifest", actor=d, repository="app", reference=ref)
        assert st == 404 and body["error"] == "NotFound", (ref, st, body)
    st, body = coldpath.xrpc(h, down, "listTags", actor=d, repository="app")
    assert st == 200 and body["stale"] is True, body
    assert {t["tag"]: t["digest"] for t in body["tags"]} == {"t1": G[1], "t2": G[2]}, body
    st, body = coldpath.xrpc(h, down, "listRepositories", actor=d)
    assert st == 200 and body["stale"] is True and body["repositories"][0]["name"] == "app"
    st, body = coldpath.xrpc(h, down, "getManifest", actor=d, repository="app", reference=G[9])
    assert st == 502 and body["error"] == "UpstreamFailure", (st, body)
    assert down.stop() == 0


def test_flush_midstream_is_refilled_from_the_pds(h):
    """Valkey is a cache: flushed in the middle of a stream of TID-keyed records, the index
    comes back to what an uninterrupted run serves, from the firehose and the user's PDS."""
    net = shared_devnet(h)
    d = net.command("createAccount", handle=f"flush{free_port()}.test")["did"]
    s = Stream()
    want = {}
    for i in range(1, 41):
        repo = f"r{i % 4}"
        made = net.command("create", repo=d, collection="io.atcr.manifest",
                           record=manifest(repo, G[1 + i % 9][:-4] + "%04d" % i, WHOLE))
        mrkey = made["uri"].rsplit("/", 1)[1]
        s.commit(d, made["rev"], "create", "io.atcr.manifest", mrkey,
                 manifest(repo, G[1 + i % 9][:-4] + "%04d" % i, WHOLE), made["cid"])
        name = f"v{i % 7}"
        rec = tag(d, repo, name, mrkey, NS)
        t = net.command("put", repo=d, collection="io.atcr.tag", rkey=f"{repo}_{name}",
                        record=rec)
        s.commit(d, t["rev"], "update" if (repo, name) in want else "create", "io.atcr.tag",
                 f"{repo}_{name}", rec, t["cid"])
        want[(repo, name)] = G[1 + i % 9][:-4] + "%04d" % i
    events = write_events(os.path.join(h.tmp, "flush.jsonl"), s.events)
    redis = h.start_redis()
    replay = start_replay(h, events, ["--rate", "20"])
    app = start_appview(h, redis, net, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_for(lambda: h.metrics(app.base).get("appview_records_indexed_total", 0) >= 30,
             what="part of the stream indexed")
    h.redis(redis, "FLUSHALL")
    wait_cursor(h, redis, 1, last_event(events)[0], timeout=30)
    for repo in ("r0", "r1", "r2", "r3"):
        st, body = coldpath.xrpc(h, app, "listTags", actor=d, repository=repo)
        assert st == 200 and "stale" not in body, body
        got = {t["tag"]: t["digest"] for t in body["tags"]}
        assert got == {n: g for (r, n), g in want.items() if r == repo}, (repo, body)
        for name, digest in got.items():
            st, m = coldpath.xrpc(h, app, "getManifest", actor=d, repository=repo, reference=name)
            assert st == 200 and m["digest"] == digest, m
    st, body = coldpath.xrpc(h, app, "listRepositories", actor=d)
    assert sorted(r["name"] for r in body["repositories"]) == ["r0", "r1", "r2", "r3"], body
    assert sum(r["manifestCount"] for r in body["repositories"]) == 40, body
    assert app.stop() == 0
