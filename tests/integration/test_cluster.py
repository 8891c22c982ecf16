"""The appview on a Valkey Cluster: 3 primaries and 3 replicas of Debian's redis-server on
loopback (`redis-cli --cluster create`), against the single-server runs of the same streams.

The index is compared through the keys of cache/SCHEMA.md (the cluster's keys are copied into
a scratch redis-server and read with test_ingest's snapshot) and through the XRPC reads. Crash
tests kill primaries (the cluster promotes their replicas), the appview, and move slots under a
running ingest, and require the index of an uninterrupted run.
"""
import os
import sys
import time
import urllib.parse
from types import SimpleNamespace

from harness import wait_for

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_ingest import (PREFIX, assert_same_index, generate, last_event,  # noqa: E402
                         reference_fold, snapshot, start_appview, start_replay)

# Readers of an index marked complete, so what they answer is the index's alone.
READER = {"APPVIEW_INGEST": "off", "APPVIEW_PLC_URL": "http://127.0.0.1:1",
          "APPVIEW_ALLOW_PRIVATE_NETWORKS": "on"}


def start_cluster_appview(h, cluster, urls, name="appview", env=None):
    full = {"APPVIEW_VALKEY_CLUSTER": cluster.seeds}
    full.update(env or {})
    # The cluster's seeds replace the URL (a port nothing listens on, to be sure).
    return start_appview(h, SimpleNamespace(url="redis://127.0.0.1:1/0"), urls, name=name,
                         env=full)


def wait_cluster_cursor(h, cluster, time_us, timeout=60):
    wait_for(lambda: int(cluster.get(PREFIX + "cursor:v1") or 0) >= time_us, timeout=timeout,
             what=f"cursor:v1 >= {time_us}")


def cluster_snapshot(h, cluster, name="scratch"):
    """The cluster's index as test_ingest.snapshot reads one server's."""
    scratch = h.start_redis(name=name)
    cluster.copy_to(scratch)
    return snapshot(h, scratch)


def xrpc(h, app, method, **params):
    st, body = h.get_json(f"{app.base}/xrpc/io.atcr.repo.{method}?"
                          f"{urllib.parse.urlencode(params)}", timeout=20)
    assert st in (200, 404), (method, params, st, body)
    return st, body


def reads_of(h, app, index):
    """Every DID's repositories and tags, a manifest of each repository by digest, and the
    recent list walked page by page, as the XRPC API answers them."""
    out = {}
    for did, repos in sorted(index.items()):
        out[did] = xrpc(h, app, "listRepositories", actor=did, limit=100)
        for repo, entries in sorted(repos.items()):
            out[did, repo] = xrpc(h, app, "listTags", actor=did, repository=repo, limit=100)
            for member in sorted(entries["manifests"])[:1]:
                out[did, repo, member] = xrpc(h, app, "getManifest", actor=did, repository=repo,
                                              reference=member.split(" ")[0])
    cursor, pages = None, []
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        pages.append(xrpc(h, app, "listRecent", **params)[1])
        cursor = pages[-1].get("cursor")
        if not cursor:
            break
    out["recent"] = pages
    return out


def test_cluster_folds_what_one_server_folds(h):
    """The same stream into one server and into the cluster: the same keys (read back from
    every primary), the same XRPC answers, and the keys spread over the three primaries."""
    events = generate(h, 20000, seed=23)
    want = reference_fold(h, events)
    cluster = h.start_redis_cluster()
    replay = start_replay(h, events)
    app = start_cluster_appview(h, cluster, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_cluster_cursor(h, cluster, last_event(events)[0])
    assert_same_index(cluster_snapshot(h, cluster), want)
    by_node = cluster.keys_by_node(PREFIX + "*")
    assert len(by_node) == 3 and all(len(k) > 20 for k in by_node.values()), \
        {p: len(k) for p, k in by_node.items()}
    assert app.stop() == 0

    ref = next(p for p in h.procs if p.name == "redis-ref")
    for did in want["index"]:
        h.redis(ref, "SET", f"{PREFIX}{{{did}}}/complete", "1")
        cluster.set(f"{PREFIX}{{{did}}}/complete", "1")
    one = start_appview(h, ref, [], name="reader-one", env=READER)
    many = start_cluster_appview(h, cluster, [], name="reader-cluster", env=READER)
    for reader in (one, many):  # 200 once the slot map is known: a read before gets a 502
        wait_for(lambda r=reader: h.http("GET", r.base + "/xrpc/_health")[0] == 200,
                 what=f"{reader.name} and Valkey")
    got, expected = reads_of(h, many, want["index"]), reads_of(h, one, want["index"])
    bad = [k for k in expected if got.get(k) != expected[k]]
    assert not bad, [(k, got.get(k), expected[k]) for k in bad[:3]]
    tagged = [k for k, v in expected.items()
              if isinstance(k, tuple) and len(k) == 2 and v[0] == 200 and v[1]["tags"]]
    assert len(tagged) > 20, "too few tag lists to compare"
    assert sum(len(p["manifests"]) for p in got["recent"]) == len(want["recent"])


def ingest_paced(h, cluster, events, rate, env=None):
    """A replay server pacing the stream, and an appview ingesting it into the cluster."""
    replay = start_replay(h, events, ["--rate", str(rate)])
    app = start_cluster_appview(h, cluster, [f"ws://127.0.0.1:{replay.port}/subscribe"],
                                env=env)
    return replay, app


def indexed(h, app):
    return h.metrics(app.base).get("appview_records_indexed_total", 0)


def healthy(h, app):
    """True when _health answers 200; else raises with what it said, for wait_for's report."""
    st, body = h.get_json(app.base + "/xrpc/_health")
    if st != 200:
        raise AssertionError(f"_health {st}: {body}")
    return True


def test_primary_failovers_and_an_appview_kill_lose_nothing(h):
    """SIGKILL of a primary mid-ingest, three times: its replica is promoted, the appview
    refreshes its map, sends again what the dead node did not answer, pauses and replays from
    the cursor the replicas confirmed; the killed node comes back as a replica. Then SIGKILL of
    the appview itself. The index ends as an uninterrupted run's, the recent list included."""
    events = generate(h, 30000, seed=29)
    want = reference_fold(h, events)
    cluster = h.start_redis_cluster()
    replay, app = ingest_paced(h, cluster, events, 2500)
    done = 300
    for round_ in range(3):
        wait_for(lambda: indexed(h, app) > done, timeout=30, what="ingest under way")
        victim = cluster.kill_primary(round_ % 3)
        t0 = time.time()
        # Meanwhile the appview answers: health says Valkey is down, it does not hang.
        st, body = h.get_json(app.base + "/xrpc/_health", timeout=5)
        assert st in (200, 503), body
        cluster.wait_failover()
        failover = time.time() - t0
        cluster.restart_as_replica(victim)
        wait_for(lambda: healthy(h, app), timeout=30,
                 what="the appview to see every slot served again")
        done = indexed(h, app) + 300
        assert failover < 15, failover
    wait_for(lambda: indexed(h, app) > done, timeout=30, what="ingest under way")
    app.kill()
    app = start_cluster_appview(h, cluster, [f"ws://127.0.0.1:{replay.port}/subscribe"],
                                name="appview-2")
    wait_cluster_cursor(h, cluster, last_event(events)[0], timeout=120)
    assert_same_index(cluster_snapshot(h, cluster), want)
    assert app.stop() == 0
    log = "".join(open(os.path.join(h.tmp, f"{n}.log")).read() for n in ("appview", "appview-2"))
    assert log.count("lost") >= 3, "the appview never saw a primary go away"


def busiest_did(events):
    """The DID with the most io.atcr commits in a stream file."""
    counts = {}
    for line in open(events):
        if '"io.atcr.' in line:
            did = line.split('"did":"', 1)[1].split('"', 1)[0]
            counts[did] = counts.get(did, 0) + 1
    return max(counts, key=counts.get)


def migrate(h, source, target, keys):
    """MIGRATE keys of a slot from source to target (it must be importing/migrating)."""
    if keys:
        h.redis(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)


def want_records(events):
    """io.atcr record events of a stream file (about what an uninterrupted run indexes)."""
    return sum(1 for line in open(events) if '"collection":"io.atcr.' in line)


def test_slot_migration_during_ingest_loses_nothing(h):
    """Slots move while the appview writes: `redis-cli --cluster reshard` of many slots (the
    appview follows MOVED and refreshes its map), and the slot of the busiest DID moved by
    hand, half its keys first (ASK to the new node for those, TRYAGAIN for a script naming keys
    on both sides), the rest a second later. Nothing is lost."""
    events = generate(h, 30000, seed=31)
    want = reference_fold(h, events)
    cluster = h.start_redis_cluster()
    replay, app = ingest_paced(h, cluster, events, 2500)
    wait_for(lambda: indexed(h, app) > 300, timeout=30, what="ingest under way")
    did = busiest_did(events)
    recs = f"{PREFIX}{{{did}}}/recs"
    slot = int(h.redis(cluster.nodes[0], "CLUSTER", "KEYSLOT", recs).split()[-1])
    owner = next(n for n in cluster.primaries() if slot in cluster.slots_of(n))
    target = next(n for n in cluster.primaries() if n is not owner)
    h.redis(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(owner))
    h.redis(owner, "CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(target))
    migrate(h, owner, target, [recs])
    time.sleep(1.5)  # the DID's events meanwhile: its recs on the new node, the rest on the old
    migrate(h, owner, target, h.redis_raw(owner, "CLUSTER", "GETKEYSINSLOT", slot, 1000).split())
    for n in cluster.primaries():
        h.redis(n, "CLUSTER", "SETSLOT", slot, "NODE", cluster.node_id(target))
    assert indexed(h, app) < 0.8 * want_records(events), "the stream ended before the moves"
    a, b, _ = cluster.primaries()
    cluster.reshard(3000, a, b)

    wait_cluster_cursor(h, cluster, last_event(events)[0], timeout=120)
    assert_same_index(cluster_snapshot(h, cluster), want)
    m = h.metrics(app.base)
    assert m['valkey_cluster_redirects_total{kind="moved"}'] > 0, m
    assert m['valkey_cluster_redirects_total{kind="ask"}'] > 0, m
    assert app.stop() == 0


def leader(h, app):
    st, body = h.get_json(app.base + "/xrpc/_health")
    return st == 200 and body.get("jetstream", {}).get("leader") is True


def test_lease_between_two_replicas_on_the_cluster(h):
    """Two appviews on one cluster: the ingest lease (a key of its own slot) elects one; SIGKILL
    of the leader mid-stream hands ingest to the standby, which fences its predecessor's
    connections on every primary and resumes from the cursor."""
    events = generate(h, 20000, seed=37)
    want = reference_fold(h, events)
    cluster = h.start_redis_cluster()
    replay = start_replay(h, events, ["--rate", "3000"])
    url = f"ws://127.0.0.1:{replay.port}/subscribe"
    first = start_cluster_appview(h, cluster, [url], name="appview-a")
    wait_for(lambda: leader(h, first), what="the first appview takes the lease")
    second = start_cluster_appview(h, cluster, [url], name="appview-b")
    time.sleep(1.5)  # several renewals
    assert leader(h, first) and not leader(h, second)
    assert h.metrics(second.base)["appview_jetstream_events_total"] == 0
    first.kill()
    assert int(cluster.get(PREFIX + "cursor:v1") or 0) < last_event(events)[0], \
        "the stream was folded before the kill: nothing tested"
    wait_for(lambda: leader(h, second), timeout=20, what="the standby takes the lease")
    wait_cluster_cursor(h, cluster, last_event(events)[0], timeout=90)
    assert_same_index(cluster_snapshot(h, cluster), want)
    assert second.stop() == 0
