"""io.atcr.hold.stats records on the firehose feed getStats without asking the hold.

A hold publishes its counts as records in its own repo; when they come by on Jetstream, the
appview keeps them as that hold's last known values for the user's repository, so a getStats
while the hold is down still shows them (status "stale"). An older record replayed later
never overwrites a newer one.
"""
import json
import os

import jetstream_live
from harness import free_port, wait_for
from test_ingest import PREFIX, start_appview, start_replay, wait_cursor

USER = "did:plc:statsuuuuuuuuuuuuuuuuuuu"
DIGEST = "sha256:" + "ab" * 32
CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"


def commit(did, t, rev, collection, rkey, record):
    return {"did": did, "time_us": t, "kind": "commit",
            "commit": {"rev": rev, "operation": "create", "collection": collection,
                       "rkey": rkey, "record": {"$type": collection, **record}, "cid": CID}}


def stats_record(pulls, pushes, updated):
    return {"did": USER, "repository": "app", "pullCount": pulls, "pushCount": pushes,
            "lastPull": updated, "createdAt": "2026-11-01T00:00:00.000Z", "updatedAt": updated}


def test_hold_stats_records_are_last_known_values(h):
    # A hold nobody can reach: its did:web points at a closed local port.
    hold = f"did:web:127.0.0.1%3A{free_port()}"
    t = 1733000000000000
    manifest = {"repository": "app", "digest": DIGEST, "holdDid": hold,
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
                "createdAt": "2026-11-20T10:00:00.000Z"}
    events = [
        commit(USER, t + 1, "3lbbbbbbbbb22", "io.atcr.manifest", DIGEST[7:], manifest),
        commit(hold, t + 2, "3lbbbbbbbbb32", "io.atcr.hold.stats", "aaaaaaaaaaaaaaaaaaaaaaaaaa",
               stats_record(7, 2, "2026-11-21T10:00:00.000Z")),
        # An older version of the same record, replayed after the newer one.
        commit(hold, t + 3, "3lbbbbbbbbb2a", "io.atcr.hold.stats", "aaaaaaaaaaaaaaaaaaaaaaaaaa",
               stats_record(3, 1, "2026-11-20T10:00:00.000Z")),
    ]
    path = os.path.join(h.tmp, "stats.jsonl")
    with open(path, "w") as f:
        f.write("".join(json.dumps(e) + "\n" for e in events))

    redis = h.start_redis()
    replay = start_replay(h, path)
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"],
                        env={"APPVIEW_ALLOW_PRIVATE_NETWORKS": "1",
                             "APPVIEW_UPSTREAM_TIMEOUT_MS": "500",
                             "APPVIEW_DATA_DIR": os.path.join(h.tmp, "data")})
    wait_cursor(h, redis, 1, t + 3)

    base = f"{PREFIX}{{{USER}}}/repo/app/"
    known = h.redis_raw(redis, "HGET", base + "holdstats", hold).strip()
    assert known == "7 2 2026-11-21T10:00:00.000Z -", known
    assert h.redis_raw(redis, "SISMEMBER", base + "holds", hold).strip() == "1"

    # Only the firehose saw this user: mark the index complete so no PDS is asked.
    h.redis(redis, "SET", f"{PREFIX}{{{USER}}}/complete", "1", "EX", "600")
    status, body = h.get_json(app.base + f"/xrpc/io.atcr.repo.getStats?actor={USER}&repository=app")
    assert status == 200, body
    holds = {x["did"]: x for x in body["holds"]}
    assert holds[hold] == {"did": hold, "pullCount": 7, "pushCount": 2, "status": "stale"}, holds
    assert body["pullCount"] == 7 and body["pushCount"] == 2, body
    assert app.stop() == 0


def test_a_stats_record_stays_behind_its_users_purge(h):
    """A hold's stats record lives in the hold's repo but writes the user's keys: when it comes
    after the user's purge, it is folded after it and survives it, even in one writer round
    where the user's first event waits on index reads and the hold (known to the writer
    already) needs none. The user's events and the hold's record arrive in one write."""
    hold = f"did:web:127.0.0.1%3A{free_port()}"
    other = "did:plc:statsooooooooooooooooooo"
    t = 1733000000000000
    js = jetstream_live.Server()
    redis = h.start_redis()
    start_appview(h, redis, [js.url], env={"APPVIEW_ALLOW_PRIVATE_NETWORKS": "1",
                                          "APPVIEW_UPSTREAM_TIMEOUT_MS": "500",
                                          "APPVIEW_DATA_DIR": os.path.join(h.tmp, "data")})
    first = stats_record(1, 1, "2026-11-21T09:00:00.000Z")
    first["did"] = other
    js.push(commit(hold, t + 1, "3lbbbbbbbbb22", "io.atcr.hold.stats",
                   "3lbbbbbbbbb22", first))
    wait_cursor(h, redis, 1, t + 1)
    manifest = {"repository": "app", "digest": DIGEST, "holdDid": hold,
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,
                "createdAt": "2026-11-20T10:00:00.000Z"}
    js.push_many([
        commit(USER, t + 2, "3lbbbbbbbbb32", "io.atcr.manifest", "3lbbbbbbbbb32", manifest),
        {"did": USER, "time_us": t + 3, "kind": "account",
         "account": {"active": False, "did": USER, "seq": 7, "status": "deleted",
                     "time": "2026-11-21T10:00:00.000Z"}},
        commit(hold, t + 4, "3lbbbbbbbbb42", "io.atcr.hold.stats", "3lbbbbbbbbb42",
               stats_record(7, 2, "2026-11-21T10:00:00.000Z")),
    ])
    wait_cursor(h, redis, 1, t + 4)
    base = f"{PREFIX}{{{USER}}}/"
    assert h.redis_raw(redis, "GET", base + "gone").strip() == str(t + 3)
    known = h.redis_raw(redis, "HGET", base + "repo/app/holdstats", hold).strip()
    assert known == "7 2 2026-11-21T10:00:00.000Z -", known
    assert not h.redis_raw(redis, "HGET", base + "recs",
                           "io.atcr.manifest/3lbbbbbbbbb32").strip(), "purged"
    js.close()
