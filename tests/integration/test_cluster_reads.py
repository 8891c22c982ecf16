"""Reads on a Valkey Cluster (3 primaries, 3 replicas): the cold path, a real PDS and PLC
(tests/lib/devnet.py) through the loader, whose compare-and-set keeps the recent list out of
its script when that list lives on another slot; getStats against a real bin/hold, its scripts
on the DID's slot; and a second replica that serves it all from the cluster without asking
upstream."""
import os
import sys
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_coldpath import (PREFIX, RKEYS, T0, available, digest, shared_devnet,  # noqa: E402,F401
                           start_appview, upstream, xrpc)
from test_hold import incr, start_hold  # noqa: E402


def test_cold_reads_and_stats_on_the_cluster(h):
    net = shared_devnet(h)
    alice = net.account("alice.test")
    did = alice["did"]
    cluster = h.start_redis_cluster()
    hold = start_hold(h)
    hold_did = f"did:web:127.0.0.1%3A{hold.port}"
    env = {"APPVIEW_VALKEY_CLUSTER": cluster.seeds, "APPVIEW_HOLDS": hold_did,
           "APPVIEW_UPSTREAM_TIMEOUT_MS": "2000", "APPVIEW_INGEST": "off"}
    nowhere = SimpleNamespace(url="redis://127.0.0.1:1/0")
    app = start_appview(h, nowhere, net, env=env)

    st, body = xrpc(h, app, "listTags", actor="alice.test", repository="myapp")
    assert st == 200 and "stale" not in body, body
    assert [(t["tag"], t["digest"]) for t in body["tags"]] == \
        [("v3", digest(3)), ("v2", digest(2)), ("v1", digest(1))], body
    st, body = xrpc(h, app, "listRepositories", actor=did)
    assert st == 200 and {r["name"] for r in body["repositories"]} == {"myapp", "tools"}, body
    for ref in ("v2", digest(2)):
        st, body = xrpc(h, app, "getManifest", actor=did, repository="myapp", reference=ref)
        assert st == 200 and body["digest"] == digest(2), body
        assert body["uri"] == f"at://{did}/io.atcr.manifest/{RKEYS[(did, 2)]}", body
    # The loader's recent entries, added after its compare-and-set (another slot).
    st, body = xrpc(h, app, "listRecent", limit=100)
    assert st == 200, body
    mine = sorted((m["repository"], m["digest"], m["createdAt"]) for m in body["manifests"]
                  if m["did"] == did)
    assert mine == sorted([("myapp", digest(i), T0 % i) for i in (1, 2, 3)] +
                          [("tools", digest(9), T0 % 9)]), body
    # Each is in P recent's index by DID too, where a purge finds them: the loader adds both in
    # one call on P recent's slot.
    recent, index = (set(cluster.command("ZRANGE", key, 0, -1).split("\n"))
                     for key in (f"{PREFIX}recent", f"{PREFIX}recent/by-did{{{PREFIX}recent}}"))
    assert len([m for m in recent if m.startswith(did + " ")]) == 4 and recent <= index, \
        (recent, index)

    # Every key of the DID on one node (its slot); the recent list on its own.
    by_node = cluster.keys_by_node(f"{PREFIX}{{{did}}}*")
    assert [len(k) for k in by_node.values()].count(0) == 2, by_node
    assert any(f"{PREFIX}{{{did}}}/complete" in k for k in by_node.values()), by_node

    # A second replica serves the same from the cluster, asking no PDS.
    other = start_appview(h, nowhere, net, env=env, name="appview-2")
    before = upstream(h, other)
    assert xrpc(h, other, "listTags", actor=did, repository="myapp") == \
        xrpc(h, app, "listTags", actor=did, repository="myapp")
    assert upstream(h, other) == before

    # getStats: the hold's counts (the manifests' own hold does not resolve: unreachable).
    assert incr(h, hold.base, {"did": did, "repository": "myapp", "event": "pull",
                               "count": 5})[0] == 200
    st, body = xrpc(h, app, "getStats", actor=did, repository="myapp")
    assert st == 200 and body["pullCount"] == 5, body
    statuses = {x["did"]: x["status"] for x in body["holds"]}
    assert statuses.get(hold_did) == "ok", body
    # The aggregate was saved on the DID's slot: the other replica reads it from there.
    st, again = xrpc(h, other, "getStats", actor=did, repository="myapp")
    assert st == 200 and again["pullCount"] == 5, again
    assert any(k.endswith("/repo/myapp/stats") for k in
               cluster.keys_by_node(f"{PREFIX}{{{did}}}*").get(
                   next(p for p, k in by_node.items() if k), [])), "stats not on the DID's slot"
    assert app.stop() == 0 and other.stop() == 0
