"""The appview on an empty Valkey answers every read from the network (issue 3): a real PDS and
PLC (tests/lib/devnet.py), bin/appview pointed at them, no firehose (the Jetstream URL is a
closed port), so everything the appview knows comes from the loader. Records are made as the
lexicons say: manifests by createRecord (the PDS picks a TID record key), tags naming them by
at-uri."""
import atexit
import json
import os
import time
import urllib.parse

import devnet
from harness import free_port, wait_for

PREFIX = "atcr:"
LEXICONS = "lexicons"
T0 = "2025-01-0%dT00:00:00Z"


def available():
    return devnet.available()


class _Shared:
    """One devnet for the whole module (dev-env takes seconds to start); stopped at exit."""

    def __init__(self, root):
        self.tmp = os.path.join(root, "var", "test", "test_coldpath_devnet")
        os.makedirs(self.tmp, exist_ok=True)
        self.procs = []


_NET = {}


def shared_devnet(h):
    if "net" not in _NET:
        holder = _Shared(h.root)
        net = devnet.start(holder, name="devnet")
        atexit.register(net.stop)
        alice = net.account("alice.test")
        for i in (1, 2, 3):
            create_manifest(net, alice["did"], "myapp", i)
            net.command("create", repo=alice["did"], collection="io.atcr.tag",
                        rkey=f"myapp_v{i}", record=tag(alice["did"], "myapp", f"v{i}", i))
        create_manifest(net, alice["did"], "tools", 9)
        # Invalid for the lexicon (no tag, no createdAt): skipped and counted, never served.
        net.command("create", repo=alice["did"], collection="io.atcr.tag", rkey="broken",
                    record={"$type": "io.atcr.tag", "repository": "myapp"})
        _NET["net"] = net
    return _NET["net"]


def digest(i):
    return "sha256:%064x" % i


# The record key the PDS gave the manifest of digest i, by DID.
RKEYS = {}


def create_manifest(net, did, repo, i):
    """A manifest by createRecord without a record key: the PDS makes a TID, as for ATCR."""
    uri = net.command("create", repo=did, collection="io.atcr.manifest",
                      record=manifest(repo, i))["uri"]
    RKEYS[(did, i)] = uri.rsplit("/", 1)[1]
    return RKEYS[(did, i)]


def manifest(repo, i):
    return {"$type": "io.atcr.manifest", "repository": repo, "digest": digest(i),
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
            "holdDid": "did:web:hold.example.com", "createdAt": T0 % i}


def tag(did, repo, name, i):
    return {"$type": "io.atcr.tag", "repository": repo, "tag": name,
            "manifest": f"at://{did}/io.atcr.manifest/{RKEYS[(did, i)]}", "createdAt": T0 % i}


def start_appview(h, redis, net, env=None, name="appview"):
    port = free_port()
    full = {"APPVIEW_VALKEY_URL": redis.url, "APPVIEW_LISTEN": f"127.0.0.1:{port}",
            "APPVIEW_JETSTREAM_URLS": f"ws://127.0.0.1:{free_port()}/subscribe",
            "APPVIEW_LEXICON_DIR": LEXICONS, "APPVIEW_DATA_DIR": os.path.join(h.tmp, name),
            "APPVIEW_PLC_URL": net.plc, "APPVIEW_HANDLE_RESOLVER_URL": net.pds,
            "APPVIEW_ALLOW_PRIVATE_NETWORKS": "1", "APPVIEW_KEY_PREFIX": PREFIX}
    full.update(env or {})
    p = h.spawn(name, [h.binary("appview")], env=full, sanitized=True)
    p.base = f"http://127.0.0.1:{port}"
    # 200: listening and Valkey ready. A read sent before Valkey is ready gets a 502, as it
    # should; the tests here are about what comes after.
    wait_for(lambda: h.http("GET", p.base + "/xrpc/_health")[0] == 200, what="appview and Valkey")
    return p


def xrpc(h, app, method, **params):
    q = urllib.parse.urlencode(params)
    return h.get_json(f"{app.base}/xrpc/io.atcr.repo.{method}?{q}", timeout=20)


def upstream(h, app):
    m = h.metrics(app.base)
    return {k: v for k, v in m.items() if k.startswith(("appview_upstream_requests_total",
                                                        "appview_loader_runs_total"))}


def test_every_read_cold_by_did_and_handle(h):
    net = shared_devnet(h)
    alice, bob = net.account("alice.test"), net.account("bob.test")
    redis = h.start_redis()
    app = start_appview(h, redis, net)

    for actor in ("alice.test", alice["did"]):
        st, body = xrpc(h, app, "listTags", actor=actor, repository="myapp")
        assert st == 200, body
        assert body["did"] == alice["did"] and body["repository"] == "myapp", body
        got = {t["tag"]: t["digest"] for t in body["tags"]}
        assert got == {"v1": digest(1), "v2": digest(2), "v3": digest(3)}, body
        assert [t["tag"] for t in body["tags"]] == ["v3", "v2", "v1"], body  # newest first

        st, body = xrpc(h, app, "listRepositories", actor=actor)
        assert st == 200, body
        repos = {r["name"]: r for r in body["repositories"]}
        assert set(repos) == {"myapp", "tools"}, body
        assert (repos["myapp"]["tagCount"], repos["myapp"]["manifestCount"]) == (3, 3), body
        assert repos["tools"]["manifestCount"] == 1, body

        for ref in ("v2", digest(2)):
            st, body = xrpc(h, app, "getManifest", actor=actor, repository="myapp",
                            reference=ref)
            assert st == 200, body
            assert body["digest"] == digest(2) and body["repository"] == "myapp", body
            assert body["uri"] == \
                f"at://{alice['did']}/io.atcr.manifest/{RKEYS[(alice['did'], 2)]}", body
            assert body["record"]["createdAt"] == T0 % 2, body

    m = h.metrics(app.base)
    assert m["appview_loader_runs_total"] == 1, m
    assert m['appview_upstream_requests_total{method="listRecords"}'] == 2, m
    assert m["appview_loader_invalid_records_total"] == 1, m
    assert m["appview_loader_records_total"] == 7, m

    # Everything again: served from Valkey, nothing upstream.
    before = upstream(h, app)
    hits, misses = m["appview_identity_cache_hits_total"], m["appview_identity_cache_misses_total"]
    for actor in ("alice.test", alice["did"]):
        assert xrpc(h, app, "listTags", actor=actor, repository="myapp")[0] == 200
        assert xrpc(h, app, "listRepositories", actor=actor)[0] == 200
    m = h.metrics(app.base)
    assert upstream(h, app) == before, (before, m)
    assert m["appview_identity_cache_hits_total"] >= hits + 2, m  # by handle
    assert m["appview_identity_cache_misses_total"] == misses, m

    # The keys are the ones ingest writes, plus the loader's own (SCHEMA.md).
    base = f"{PREFIX}{{{alice['did']}}}/"
    assert h.redis(redis, "GET", base + "complete") == "1"
    assert h.redis(redis, "HGET", base + "id", "handle") == "alice.test"
    assert h.redis(redis, "GET", f"{PREFIX}handle:alice.test") == alice["did"]
    hint = h.redis(redis, "HGET", base + "recs", "t/myapp/v3").split(" ")
    assert hint[0] == "myapp_v3" and hint[2] == RKEYS[(alice["did"], 3)] + "=-", hint
    record = h.redis_raw(redis, "HGET", base + "recs", "io.atcr.tag/myapp_v1")
    head, body = record.split("\n", 1)
    assert head.split(" ")[1:4] == ["t", "myapp", "v1"], head
    assert json.loads(body)["tag"] == "v1", body

    # A user with no records: an empty but complete answer, not an error.
    st, body = xrpc(h, app, "listRepositories", actor="bob.test")
    assert st == 200 and body["repositories"] == [] and body["did"] == bob["did"], body
    st, body = xrpc(h, app, "listTags", actor=bob["did"], repository="myapp")
    assert st == 404 and body["error"] == "NotFound", body

    # Actors that do not exist: 404, cached as negative entries.
    st, body = xrpc(h, app, "listTags", actor="nobody.test", repository="myapp")
    assert st == 404 and body["error"] == "RepoNotFound", body
    assert h.redis_raw(redis, "EXISTS", f"{PREFIX}handle-neg:nobody.test").strip() == "1"
    ghost = "did:plc:" + "z" * 24
    st, body = xrpc(h, app, "listRepositories", actor=ghost)
    assert st == 404 and body["error"] == "RepoNotFound", body
    assert h.redis_raw(redis, "EXISTS", f"{PREFIX}{{{ghost}}}/neg").strip() == "1"
    st, body = xrpc(h, app, "listRepositories", actor="not a handle!")
    assert st == 400 and body["error"] == "InvalidRequest", body


def test_deleted_on_pds_and_missed_on_firehose(h):
    net = shared_devnet(h)
    carol = net.command("createAccount", handle="carol.test")
    for i in (4, 5):
        create_manifest(net, carol["did"], "app", i)
    for name, i in (("t4", 4), ("t5", 5), ("t6", 5)):
        net.command("create", repo=carol["did"], collection="io.atcr.tag", rkey=name,
                    record=tag(carol["did"], "app", name, i))
    redis = h.start_redis()
    app = start_appview(h, redis, net, env={"APPVIEW_RECORD_TTL": "4"})
    base = f"{PREFIX}{{{carol['did']}}}/"

    def tags():
        st, body = xrpc(h, app, "listTags", actor="carol.test", repository="app")
        assert st == 200, body
        return sorted(t["tag"] for t in body["tags"])

    assert tags() == ["t4", "t5", "t6"]
    net.command("delete", repo=carol["did"], collection="io.atcr.tag", rkey="t4")
    net.command("delete", repo=carol["did"], collection="io.atcr.manifest",
                rkey=RKEYS[(carol["did"], 4)])
    assert tags() == ["t4", "t5", "t6"]  # cached: the firehose would have told us, it did not

    # A full listing is the truth for records older than it: cached records the PDS no longer
    # lists are folded as deletes at the listing's rev, before their own keys expire.
    h.redis(redis, "DEL", base + "complete")
    assert tags() == ["t5", "t6"]
    m = h.metrics(app.base)
    assert m["appview_loader_pruned_total"] == 2, m
    tombstone = h.redis(redis, "HGET", base + "recs", f"io.atcr.manifest/{RKEYS[(carol['did'], 4)]}")
    assert tombstone.split(" ")[1] == "-", tombstone  # a tombstone: rev, then no kind
    st, body = xrpc(h, app, "listRepositories", actor=carol["did"])
    assert st == 200 and body["repositories"][0]["manifestCount"] == 1, body

    # Without any help, the index expires with the record TTL and the next read lists again.
    net.command("delete", repo=carol["did"], collection="io.atcr.tag", rkey="t6")
    assert tags() == ["t5", "t6"]
    t0 = time.time()
    wait_for(lambda: tags() == ["t5"], timeout=12, interval=0.3, what="t6 gone")
    assert time.time() - t0 < 10
