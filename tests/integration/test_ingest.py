"""End to end: a local Jetstream replay server -> bin/appview -> a real redis-server.

The fold is checked through the Valkey keys of cache/SCHEMA.md (a contract the web UI reads
directly). Crash tests fold the same stream twice, once without and once with the failure
(SIGKILL of the appview, SIGKILL of Valkey), and require the same final index.
"""
import json
import os
import signal
import subprocess
import time

from harness import free_port, wait_for
from records import Seeder, tid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
PREFIX = "atcr:"
SCHEMA = "5"  # cache/SCHEMA.md's version: an index the appview ingests into as it is
RECENT_INDEX = f"{PREFIX}recent/by-did{{{PREFIX}recent}}"  # P recent's members, by DID
RECENT_INDEX_OLD = f"{PREFIX}recent/by-did-old{{{PREFIX}recent}}"  # kept by earlier versions


def start_replay(h, events, extra=(), name="replay"):
    port = free_port()
    p = h.spawn(name, [h.binary("tools/jetstream_replay"), "--listen", f"127.0.0.1:{port}",
                       "--events", events, *extra])
    wait_for(lambda: h.http("GET", f"http://127.0.0.1:{port}/_stats")[0] == 200,
             what="replay server")
    p.port = port
    return p


def start_appview(h, redis, urls, name="appview", env=None):
    port = free_port()
    full = {"APPVIEW_VALKEY_URL": redis.url,
            "APPVIEW_LISTEN": f"127.0.0.1:{port}", "APPVIEW_LEXICON_DIR": "lexicons",
            "APPVIEW_CURSOR_REWIND_SECONDS": "1",
            # A restarted appview waits out its killed predecessor's lease: keep that short.
            "APPVIEW_INGEST_LEASE_SECONDS": "3"}
    if urls:  # none: the default, which a reader (APPVIEW_INGEST=off) never connects to
        full["APPVIEW_JETSTREAM_URLS"] = ",".join(urls)
    full.update(env or {})
    p = h.spawn(name, [h.binary("appview")], env=full, sanitized=True)
    p.base = f"http://127.0.0.1:{port}"
    wait_for(lambda: h.http("GET", p.base + "/xrpc/_health")[0] in (200, 503), what="appview")
    return p


WANTED = ("io.atcr.manifest", "io.atcr.tag", "io.atcr.hold.stats")


def last_event(path):
    """(time_us, seq) of the last event the server sends an appview (it filters commits by
    the collections the appview asks for; identity and account events always pass)."""
    n, last = 0, (None, None)
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            n += 1
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if not isinstance(ev, dict) or not isinstance(ev.get("time_us"), int):
                continue
            if ev.get("kind") == "commit" and \
                    (ev.get("commit") or {}).get("collection") not in WANTED:
                continue
            last = (ev["time_us"], n)
    return last


def read_events(path):
    """The events of a JSONL file, parsed."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fixture_events(name):
    """The events of a fixture file, parsed."""
    return read_events(os.path.join(FIXTURES, name))


def write_events(path, events):
    """events (dicts) as a JSONL file the replay server serves; returns path."""
    with open(path, "w") as f:
        f.write("".join(json.dumps(e) + "\n" for e in events))
    return path


def wait_cursor(h, redis, flavor, value, timeout=60):
    key = f"{PREFIX}cursor:v{flavor}"
    wait_for(lambda: int(h.redis_raw(redis, "GET", key).strip() or 0) >= value, timeout=timeout,
             what=f"{key} >= {value}")


def stall_valkey_once_ingesting(h, redis, ms):
    """Once the appview has persisted a cursor, Valkey answers no client for ms (CLIENT PAUSE
    ALL): what a server stalled by a fork, a swap or a failover looks like."""
    wait_cursor(h, redis, 1, 1)
    h.redis(redis, "CLIENT", "PAUSE", str(ms), "ALL")


# The index as cache/SCHEMA.md lays it out, read in one call: a line per manifest entry
# ("m D R G X score"), per live tag with the digest it resolves to as in a complete index
# ("t D R T digest": that of the manifest record its at-uri names, "" when that one is deleted
# or absent; a tag without an at-uri has its manifestDigest), per purged DID ("g D").
SNAPSHOT = """
local prefix, out, cursor = ARGV[1], {}, '0'
local function header(v)
  if not v then return nil end
  return string.match(v, '^%S+ (%S+) (%S+) (%S+) %S+ %S+ %S+\\n')
end
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', prefix .. '{*', 'COUNT', 1000)
  cursor = page[1]
  for _, k in ipairs(page[2]) do
    local did, rest = string.match(k, '^' .. prefix .. '{(.-)}/(.*)$')
    local recs = prefix .. '{' .. did .. '}/recs'
    local repo = rest and string.match(rest, '^repo/(.*)/manifests$')
    if repo then
      local z = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
      for i = 1, #z, 2 do out[#out + 1] = 'm ' .. did .. ' ' .. repo .. ' ' .. z[i] .. ' ' .. z[i + 1] end
    end
    repo = rest and string.match(rest, '^repo/(.*)/tags$')
    if repo then
      for _, t in ipairs(redis.call('ZRANGE', k, 0, -1)) do
        local hint = redis.call('HGET', recs, 't/' .. repo .. '/' .. t) or ''
        local mrkey, mdigest = string.match(hint, '^%S+ %S+ ([^=]*)=(.*)$')
        local digest = ''
        if mrkey and mrkey ~= '-' then
          local kind, r, g = header(redis.call('HGET', recs, 'io.atcr.manifest/' .. mrkey))
          if kind == 'm' and r == repo then digest = g end
        elseif mdigest and mdigest ~= '-' then
          digest = mdigest
        end
        out[#out + 1] = 't ' .. did .. ' ' .. repo .. ' ' .. t .. ' ' .. digest
      end
    end
    if rest == 'gone' then out[#out + 1] = 'g ' .. did end
  end
until cursor == '0'
return out
"""


def snapshot(h, redis):
    """The index as a plain structure: {did: {repo: {manifests: {"G X": score}, tags: {T:
    digest}}}}, recent (its members), gone DIDs."""
    index, gone = {}, set()

    def entry(did, repo):
        return index.setdefault(did, {}).setdefault(repo, {"manifests": {}, "tags": {}})

    for line in h.redis_raw(redis, "EVAL", SNAPSHOT, 0, PREFIX).split("\n"):
        parts = line.split(" ")
        if parts[0] == "m":
            entry(parts[1], parts[2])["manifests"][f"{parts[3]} {parts[4]}"] = parts[5]
        elif parts[0] == "t":
            entry(parts[1], parts[2])["tags"][parts[3]] = parts[4] if len(parts) > 4 else ""
        elif parts[0] == "g":
            gone.add(parts[1])
    recent = recent_indexed(h, redis)
    return {"index": index, "recent": recent, "gone": sorted(gone)}


def recent_indexed(h, redis):
    """P recent's members, sorted, once checked to be in its index by DID: an entry missing
    from it would outlive its account's purge. (What else the index holds, members P recent
    lost, depends on where the writer's rounds ended.)"""
    recent = sorted(filter(None, h.redis_raw(redis, "ZRANGE", PREFIX + "recent", 0, -1).split("\n")))
    by_did = set(h.redis_raw(redis, "ZRANGE", RECENT_INDEX, 0, -1).split("\n"))
    missing = sorted(set(recent) - by_did)
    assert not missing, f"entries of P recent missing from {RECENT_INDEX}: {missing[:5]}"
    return recent


def digests(manifests):
    """The digests of a snapshot's manifest entries ("G X")."""
    return sorted({m.split(" ")[0] for m in manifests})


def assert_same_index(got, want):
    """Equality, with the first differences named when it fails."""
    if got == want:
        return
    diffs = []
    for part in ("recent", "gone"):
        if got[part] != want[part]:
            diffs.append(f"{part}: extra {sorted(set(got[part]) - set(want[part]))[:5]} "
                         f"missing {sorted(set(want[part]) - set(got[part]))[:5]}")
    for did in sorted(set(got["index"]) | set(want["index"])):
        g, w = got["index"].get(did, {}), want["index"].get(did, {})
        for repo in sorted(set(g) | set(w)):
            for part in ("manifests", "tags"):
                gp, wp = g.get(repo, {}).get(part, {}), w.get(repo, {}).get(part, {})
                bad = sorted(k for k in set(gp) | set(wp) if gp.get(k) != wp.get(k))
                if bad:
                    diffs.append(f"{did} {repo} {part}: " + "; ".join(
                        f"{k}: got {gp.get(k)} want {wp.get(k)}" for k in bad[:4]))
    raise AssertionError("index differs from the uninterrupted run:\n" + "\n".join(diffs[:6]))


def metric_sum(h, base, prefix):
    return sum(v for k, v in h.metrics(base).items() if k.startswith(prefix))


def check_basic_fold(h, redis):
    with open(os.path.join(FIXTURES, "basic.expected.json")) as f:
        expected = json.load(f)
    snap = snapshot(h, redis)
    want = {did: {repo: {"manifests": sorted(r["manifests"]), "tags": r["tags"]}
                  for repo, r in d["repositories"].items()}
            for did, d in expected["dids"].items()}
    got = {did: {repo: {"manifests": digests(r["manifests"]), "tags": r["tags"]}
                 for repo, r in repos.items()}
           for did, repos in snap["index"].items()}
    assert got == want, f"fold differs:\n got {json.dumps(got, indent=1)}\nwant {json.dumps(want, indent=1)}"
    assert snap["gone"] == sorted(expected["purged"])
    want_recent = sorted(f"{r['did']} {r['repository']} {r['digest']}" for r in expected["recent"])
    got_recent = sorted(" ".join(m.split(" ")[:3]) for m in snap["recent"])
    assert got_recent == want_recent, (got_recent, want_recent)
    for did in expected["purged"]:
        keys = h.redis_raw(redis, "KEYS", f"{PREFIX}{{{did}}}*").split()
        assert keys == [f"{PREFIX}{{{did}}}/gone"], keys  # nothing but the purge mark is left


def test_fold_v1(h):
    redis = h.start_redis()
    fixture = os.path.join(FIXTURES, "basic.jsonl")
    replay = start_replay(h, fixture)
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    time_us, _ = last_event(fixture)
    wait_cursor(h, redis, 1, time_us)
    check_basic_fold(h, redis)
    m = h.metrics(app.base)
    assert m["appview_records_stale_total"] >= 1  # the fixture replays an event after its delete
    assert m["appview_accounts_purged_total"] == 1
    # Records carry TTLs; the cursor has none.
    any_rec = h.redis_raw(redis, "KEYS", PREFIX + "{*}/recs").split()[0]
    assert 0 < int(h.redis_raw(redis, "TTL", any_rec)) <= 3600
    assert int(h.redis_raw(redis, "TTL", PREFIX + "cursor:v1")) == -1
    assert app.stop() == 0


def test_fold_v2_endpoint(h):
    redis = h.start_redis()
    fixture = os.path.join(FIXTURES, "basic.jsonl")
    replay = start_replay(h, fixture)
    start_appview(h, redis, [
        f"ws://127.0.0.1:{replay.port}/xrpc/network.bsky.jetstream.subscribeEvents"])
    _, seq = last_event(fixture)
    wait_cursor(h, redis, 2, seq)
    check_basic_fold(h, redis)
    _, _, body = h.http("GET", f"http://127.0.0.1:{replay.port}/_stats")
    assert "collections=io.atcr.manifest" in body.decode(), body


def fold_basic_and_stop(h):
    """basic.jsonl folded by an appview that then stops: redis, the replay server, its URL and
    the stream's last time_us."""
    redis = h.start_redis()
    fixture = os.path.join(FIXTURES, "basic.jsonl")
    replay = start_replay(h, fixture)
    url = f"ws://127.0.0.1:{replay.port}/subscribe"
    app = start_appview(h, redis, [url])
    time_us, _ = last_event(fixture)
    wait_cursor(h, redis, 1, time_us)
    assert app.stop() == 0
    return redis, replay, url, time_us


def test_restart_resumes_from_cursor(h):
    """A second appview on the same Valkey asks the server for the persisted cursor: the seq
    after the last one (the server puts its seq on every v1 event; a time_us is rewound)."""
    redis, replay, url, time_us = fold_basic_and_stop(h)
    app2 = start_appview(h, redis, [url], name="appview2")
    wait_for(lambda: h.metrics(app2.base).get("appview_jetstream_connected") == 1,
             what="second connection")
    _, _, body = h.http("GET", f"http://127.0.0.1:{replay.port}/_stats")
    _, seq = last_event(os.path.join(FIXTURES, "basic.jsonl"))
    assert f"cursor={seq + 1}" in body.decode(), body
    check_basic_fold(h, redis)


def test_recent_entries_lost_in_a_crash_come_back_on_replay(h):
    """A round's recent entries go in one ZADD after the round's records, so a crash in between
    leaves records without their entries, and a cursor that did not move past them. Reading
    the stream again finds the records already written, and must add their entries back."""
    redis, _, url, time_us = fold_basic_and_stop(h)
    want = snapshot(h, redis)
    assert want["recent"]
    h.redis_raw(redis, "DEL", PREFIX + "recent", PREFIX + "cursor:v1", PREFIX + "cursor:v2",
                PREFIX + "cursor:url")
    app2 = start_appview(h, redis, [url], name="appview2")
    wait_cursor(h, redis, 1, time_us)
    assert metric_sum(h, app2.base, "appview_records_stale_total") > 0
    assert_same_index(snapshot(h, redis), want)


def test_recent_index_rebuild_leaves_every_entry_to_its_purge(h):
    """cache/trim_recent.lua trims P recent without its index, and rebuilds the index from P
    recent once it outgrows its bound, deleting the index before the rebuild that earlier
    versions kept; cache/forget_recent.lua finds a DID's entries in the index, those added
    since the rebuild too. Run on a real server with a list of 3 and an index bound of 5."""
    redis = h.start_redis()
    scripts = {name: open(os.path.join(ROOT, "cache", f"{name}.lua")).read()
               for name in ("trim_recent", "forget_recent")}
    recent = PREFIX + "recent"

    def add(did, n, score):
        member = f"{did} app sha256:{n:064x} 3lbbuqg2k{n:04d} 2025-01-13T10:15:{n:02d}Z"
        h.redis_raw(redis, "ZADD", RECENT_INDEX, 0, member)
        h.redis_raw(redis, "ZADD", recent, score, member)
        return member

    def trim():
        return int(h.redis_raw(redis, "EVAL", scripts["trim_recent"], 3, recent, RECENT_INDEX,
                               RECENT_INDEX_OLD, 3, 5))

    def members(key):
        return sorted(filter(None, h.redis_raw(redis, "ZRANGE", key, 0, -1).split("\n")))

    alice, bob = "did:plc:aliceaaaaaaaaaaaaaaaaaaa", "did:plc:bobbbbbbbbbbbbbbbbbbbbbb"
    first = [add(alice if n % 2 else bob, n, 1000 + n) for n in range(5)]
    assert trim() == 2 and members(recent) == sorted(first[2:])
    assert members(RECENT_INDEX) == sorted(first), "trimmed: the index keeps what it held"
    h.redis_raw(redis, "ZADD", RECENT_INDEX_OLD, 0, first[0])  # as an earlier version left it
    sixth = add(alice, 5, 1005)
    assert trim() == 1
    assert members(RECENT_INDEX) == members(recent) == sorted([first[3], first[4], sixth]), \
        "rebuilt from P recent"
    assert int(h.redis_raw(redis, "EXISTS", RECENT_INDEX_OLD)) == 0
    late = add(alice, 6, 1006)
    removed = int(h.redis_raw(redis, "EVAL", scripts["forget_recent"], 2, recent, RECENT_INDEX,
                              alice))
    assert removed == 3 and members(recent) == [first[4]]
    assert members(RECENT_INDEX) == [first[4]] and late not in members(recent)


def test_identity_event_drops_the_cached_identity(h):
    """An identity event drops the DID's cached identity and its handle's entry, so the next
    query resolves both again; another DID's identity stays cached."""
    carol, dave = "did:plc:carolccccccccccccccccccc", "did:plc:daveddddddddddddddddddddd"
    redis = h.start_redis()
    for did, handle in ((carol, "carol.test"), (dave, "dave.test")):
        h.redis(redis, "HSET", f"{PREFIX}{{{did}}}/id", "handle", handle, "pds", "https://pds.test")
        h.redis(redis, "SET", f"{PREFIX}handle:{handle}", did)
    events = os.path.join(h.tmp, "identity.jsonl")
    write_events(events, [{"did": carol, "time_us": 1732000000011000, "kind": "identity",
                           "identity": {"did": carol, "handle": "carol.example", "seq": 1,
                                        "time": "2024-11-19T07:06:40.011Z"}}])
    replay = start_replay(h, events)
    start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_cursor(h, redis, 1, 1732000000011000)
    gone = (f"{PREFIX}{{{carol}}}/id", f"{PREFIX}handle:carol.test")
    assert h.redis_raw(redis, "EXISTS", *gone).strip() == "0"
    assert h.redis(redis, "HGET", f"{PREFIX}{{{dave}}}/id", "handle") == "dave.test"
    assert h.redis(redis, "GET", f"{PREFIX}handle:dave.test") == dave


def test_old_commit_delivered_again_after_a_restart_stays_deleted(h):
    """A create whose commit was folded and then deleted, delivered again later (a new time_us,
    its old rev) by a stream the next appview process reads: that process remembers nothing,
    so only the DID's ~rev in Valkey tells the create is not new. It must stay deleted."""
    lines = fixture_events("basic.jsonl")
    digest = "ca0df2c95aa144c1d0ff2ff3c8f967fdc1de9ef0c4120b3726416701b519d619"
    mine = [e for e in lines if (e.get("commit") or {}).get("rkey") == digest]
    create, delete = mine[0], mine[1]
    assert create["commit"]["operation"] == "create" and delete["commit"]["operation"] == "delete"
    again = json.loads(json.dumps(create))
    again["time_us"] = delete["time_us"] + 5_000_000
    # A new commit of the DID first, in an earlier batch (the server sends 4 events a second):
    # the appview then knows the DID, and must still not take the old create for a new one.
    other = json.loads(json.dumps(create))
    other["time_us"] = delete["time_us"] + 4_000_000
    other["commit"]["rev"] = "3lbbuqh2kzc2f"
    other["commit"]["rkey"] = "ab" * 32
    other["commit"]["record"]["digest"] = "sha256:" + "ab" * 32
    first, second = (os.path.join(h.tmp, n) for n in ("first.jsonl", "second.jsonl"))
    write_events(first, [create, delete])
    write_events(second, [other, again])
    redis = h.start_redis()
    replay = start_replay(h, first)
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_cursor(h, redis, 1, delete["time_us"])
    assert app.stop() == 0
    replay2 = start_replay(h, second, ["--rate", "4"], name="replay2")
    app2 = start_appview(h, redis, [f"ws://127.0.0.1:{replay2.port}/subscribe"], name="appview2")
    wait_cursor(h, redis, 1, again["time_us"])
    recs = f"{PREFIX}{{{create['did']}}}/recs"
    field = f"io.atcr.manifest/{digest}"
    assert h.redis_raw(redis, "HGET", recs, field).startswith(delete["commit"]["rev"] + " - ")
    manifests = h.redis_raw(redis, "ZRANGE", f"{PREFIX}{{{create['did']}}}/repo/webapp/manifests",
                            0, -1)
    assert digest not in manifests and "sha256:" + "ab" * 32 in manifests
    assert h.metrics(app2.base)["appview_records_stale_total"] == 1
    assert app2.stop() == 0


def test_old_commit_into_an_index_without_rev_stays_deleted(h):
    """A DID whose records only the loader wrote (it keeps no ~rev): its history is unknown, so
    an old create delivered again must not pass for new, even after the DID's first event of
    the run (a duplicate, folded as stale) left ~rev unset."""
    lines = fixture_events("basic.jsonl")
    x = "ca0df2c95aa144c1d0ff2ff3c8f967fdc1de9ef0c4120b3726416701b519d619"
    y = "29c1b289e7522195b362e44f54e05470b69ad20540ab60a18a05e5bf6951f13d"
    create_x, delete_x = [e for e in lines if (e.get("commit") or {}).get("rkey") == x][:2]
    create_y = next(e for e in lines if (e.get("commit") or {}).get("rkey") == y)
    did = create_x["did"]
    redis = h.start_redis()
    recs = f"{PREFIX}{{{did}}}/recs"
    rev_y = create_y["commit"]["rev"]
    h.redis(redis, "SET", PREFIX + "schema", SCHEMA)
    h.redis(redis, "HSET", recs, f"io.atcr.manifest/{x}", delete_x["commit"]["rev"] + " - - - - - -",
            f"io.atcr.manifest/{y}",
            f"{rev_y} m webapp sha256:{y} - 2024-11-19T07:06:40.003Z {create_y['commit']['cid']}"
            "\n{}")
    again = dict(create_x, time_us=create_y["time_us"] + 1_000_000)
    # the duplicate first, the old create in a later batch
    path = write_events(os.path.join(h.tmp, "again.jsonl"), [create_y, again])
    replay = start_replay(h, path, ["--rate", "4"])
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_cursor(h, redis, 1, again["time_us"])
    assert h.redis(redis, "GET", PREFIX + "schema") == SCHEMA
    assert h.redis_raw(redis, "HGET", recs, f"io.atcr.manifest/{x}").startswith(
        delete_x["commit"]["rev"] + " - ")
    assert h.metrics(app.base)["appview_records_stale_total"] == 2
    assert app.stop() == 0


def generate(h, n, seed=7):
    path = os.path.join(h.tmp, f"events-{n}-{seed}.jsonl")
    subprocess.run([h.binary("tools/gen_events"), "-n", str(n), "--seed", str(seed),
                    "--atcr-percent", "40", "--dids", "30", "-o", path], check=True,
                   capture_output=True)
    return path


def reference_fold(h, events):
    """The index an uninterrupted run builds from this stream."""
    redis = h.start_redis(name="redis-ref")
    replay = start_replay(h, events, name="replay-ref")
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"], name="appview-ref")
    time_us, _ = last_event(events)
    wait_cursor(h, redis, 1, time_us)
    snap = snapshot(h, redis)
    app.stop()
    assert snap["index"], "the reference run indexed nothing"
    return snap


def test_sigkill_midstream_loses_nothing(h):
    events = generate(h, 20000)
    want = reference_fold(h, events)
    redis = h.start_redis()
    replay = start_replay(h, events, ["--rate", "4000"])
    url = f"ws://127.0.0.1:{replay.port}/subscribe"
    time_us, _ = last_event(events)
    for i in range(3):
        app = start_appview(h, redis, [url], name=f"appview-{i}")
        time.sleep(0.8 + 0.3 * i)
        app.kill()
    saved = h.redis_raw(redis, "GET", PREFIX + "cursor:v1").strip()
    assert int(saved or 0) < time_us, "the stream was folded before the kills: nothing tested"
    start_appview(h, redis, [url], name="appview-final")
    wait_cursor(h, redis, 1, time_us)
    assert_same_index(snapshot(h, redis), want)


def test_a_stream_far_ahead_of_valkey_is_folded_in_bounded_rounds(h):
    """Valkey stops answering for 1.5 s mid-stream while the stream goes on: the ingester
    queues far more events than one round takes (appview/writer.c ROUND_MAX), and folds them
    in several rounds once Valkey answers. The index equals a run at a pace Valkey keeps up
    with."""
    events = generate(h, 60000, seed=17)
    time_us, _ = last_event(events)
    ref_redis = h.start_redis(name="redis-paced")
    paced = start_replay(h, events, ["--rate", "6000"], name="replay-paced")
    ref = start_appview(h, ref_redis, [f"ws://127.0.0.1:{paced.port}/subscribe"],
                        name="appview-paced")
    wait_cursor(h, ref_redis, 1, time_us, timeout=120)
    want = snapshot(h, ref_redis)
    assert ref.stop() == 0
    assert want["index"], "the paced run indexed nothing"

    redis = h.start_redis()
    replay = start_replay(h, events, ["--rate", "20000"])
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    stall_valkey_once_ingesting(h, redis, 1500)
    wait_cursor(h, redis, 1, time_us, timeout=120)
    assert h.metrics(app.base)["appview_ingest_rounds_cut_total"] > 0, "no round was cut"
    assert_same_index(snapshot(h, redis), want)
    assert app.stop() == 0


def test_a_valkey_stall_longer_than_the_lease_loses_it_and_ingest_goes_on(h):
    """Valkey answers nothing for longer than the lease (3 s here): the replica gives the
    lease up and stops reading; once Valkey answers it takes the lease back and ingests the
    rest of the stream from its cursor, as a standby would."""
    events = generate(h, 20000, seed=23)
    time_us, _ = last_event(events)
    want = reference_fold(h, events)
    redis = h.start_redis()
    replay = start_replay(h, events, ["--rate", "3000"])
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    stall_valkey_once_ingesting(h, redis, 4500)
    wait_cursor(h, redis, 1, time_us, timeout=90)
    assert_same_index(snapshot(h, redis), want)
    # took it, lost it in the stall, took it back: once (a renewal that came back late must not
    # take it for a moment, only for the next tick to give it up again and drop the stream)
    assert h.metrics(app.base)["appview_ingest_lease_changes_total"] == 3
    assert app.stop() == 0


def leader(h, app):
    return h.get_json(app.base + "/xrpc/_health")[1]["jetstream"]["leader"]


def test_one_replica_ingests_and_a_standby_takes_over(h):
    """Two ingest-enabled appviews share a Valkey: one holds the lease and reads the stream,
    the other stands by. SIGKILL the ingester mid-stream: the standby takes over when the
    lease lapses, from the saved cursor, and the index ends as an uninterrupted run's."""
    events = generate(h, 20000, seed=13)
    want = reference_fold(h, events)
    redis = h.start_redis()
    replay = start_replay(h, events, ["--rate", "4000"])
    url = f"ws://127.0.0.1:{replay.port}/subscribe"
    time_us, _ = last_event(events)
    # TTLs: the first holder's 3 s is what the standby waits out after the SIGKILL; the second
    # one's 8 s is what the third would wait out if SIGTERM did not give the lease back.
    first = start_appview(h, redis, [url], name="appview-a")
    wait_for(lambda: leader(h, first), what="the first appview takes the lease")
    second = start_appview(h, redis, [url], name="appview-b",
                           env={"APPVIEW_INGEST_LEASE_SECONDS": "8"})
    time.sleep(1.5)  # several renewals
    assert leader(h, first) and not leader(h, second)
    assert h.metrics(second.base)["appview_ingest_lease_held"] == 0
    assert h.metrics(second.base)["appview_jetstream_events_total"] == 0
    assert h.metrics(first.base)["appview_jetstream_events_total"] > 0

    first.kill()
    killed_at = time.time()
    saved = int(h.redis_raw(redis, "GET", PREFIX + "cursor:v1").strip() or 0)
    assert saved < time_us, "the stream was folded before the kill: nothing tested"
    wait_for(lambda: leader(h, second), timeout=20, what="the standby takes the lease")
    # The TTL (3 s), then at most one standby retry (8 s / 3), with slack for a loaded machine.
    assert time.time() - killed_at < 3 + 8 / 3 + 3, "took over later than the lease allows"
    wait_cursor(h, redis, 1, time_us)
    assert_same_index(snapshot(h, redis), want)

    # SIGTERM gives the lease back: a new standby takes over without waiting the TTL out.
    third = start_appview(h, redis, [url], name="appview-c")
    time.sleep(1.0)
    assert not leader(h, third)
    assert second.stop(15) == 0
    stopped_at = time.time()
    wait_for(lambda: leader(h, third), timeout=15, what="the new standby takes the lease")
    # Given back: one retry of the standby (1 s) away, not the holder's 8 s TTL.
    assert time.time() - stopped_at < 5.0, "the lease was not given back on SIGTERM"

    # A holder that finds the lease taken (here by hand) stops reading at its next renewal.
    h.redis(redis, "SET", PREFIX + "ingest-lease", "someone-else", "PX", 60000)
    wait_for(lambda: not leader(h, third), timeout=5, what="the holder notices")
    wait_for(lambda: not h.get_json(third.base + "/xrpc/_health")[1]["jetstream"]["connected"],
             timeout=5, what="the stream closed")
    assert third.alive()


# Every key under the prefix as "key type ttl sha1-of-contents" (ttl: "ttl" when it has one),
# so two folds can be compared whole: record bodies, mappings, scores and TTLs.
DUMP = """
local out = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do
  local t = redis.call('TYPE', k).ok
  local ttl = redis.call('PTTL', k)
  local c = ''
  if t == 'string' then c = redis.call('GET', k)
  elseif t == 'hash' then
    local a, parts = redis.call('HGETALL', k), {}
    for i = 1, #a, 2 do parts[#parts + 1] = a[i] .. '\\0' .. a[i + 1] end
    table.sort(parts)
    c = table.concat(parts, '\\1')
  elseif t == 'zset' then c = table.concat(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'), '\\1')
  elseif t == 'set' then
    local a = redis.call('SMEMBERS', k)
    table.sort(a)
    c = table.concat(a, '\\1')
  end
  out[#out + 1] = k .. ' ' .. t .. ' ' .. (ttl > 0 and 'ttl' or tostring(ttl)) .. ' ' ..
                  redis.sha1hex(c)
end
return out
"""


def dump(h, redis):
    """Every key of the index and a digest of its value, but P recent's index by DID, which
    recent_indexed checks instead."""
    recent_indexed(h, redis)
    lines = h.redis_raw(redis, "EVAL", DUMP, 0, PREFIX).split("\n")
    skip = (PREFIX + "ingest-lease", PREFIX + "cursor:", RECENT_INDEX)
    return dict(line.split(" ", 1) for line in lines if line and not line.startswith(skip))


def final_records(path):
    """What a PDS listing would hold once the stream is over: the live io.atcr.manifest and
    io.atcr.tag records of every DID not purged, as fold_records lines (the stream is in commit
    order)."""
    live = {}
    for ev in read_events(path):
        did = ev.get("did")
        if ev.get("kind") == "account":
            acct = ev.get("account") or {}
            if acct.get("active") is False and acct.get("status") in ("deleted", "takendown"):
                live = {k: v for k, v in live.items() if k[0] != did}
            continue
        c = ev.get("commit") or {}
        if ev.get("kind") != "commit" or c.get("collection") not in WANTED[:2]:
            continue
        k = (did, c["collection"], c["rkey"])
        if c["operation"] == "delete":
            live.pop(k, None)
        else:
            live[k] = {"did": did, "collection": k[1], "rkey": k[2], "rev": c["rev"],
                       "cid": c["cid"], "record": c["record"]}
    return list(live.values())


def ingest_matches_loader(h, events, replay_args=(), tag=""):
    """Folds the stream through the firehose path (the appview's ingester), and what it leaves
    on the PDSes through the cold path (the loader's compare-and-set): what a reader sees (index
    entries, tags resolved, the recent list) must be the same. Returns the ingest's metrics."""
    time_us, _ = last_event(events)
    redis = h.start_redis(name=f"redis-ingest{tag}")
    replay = start_replay(h, events, replay_args, name=f"replay{tag}")
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"],
                        name=f"appview{tag}")
    wait_cursor(h, redis, 1, time_us)
    metrics = h.metrics(app.base)
    ingested = snapshot(h, redis)
    assert app.stop() == 0
    loaded_redis = h.start_redis(name=f"redis-loader{tag}")
    seed = Seeder(h, loaded_redis, PREFIX)
    seed.pending = final_records(events)
    seed.flush()
    loaded = snapshot(h, loaded_redis)
    assert len(ingested["index"]) > 5, ingested
    loaded["gone"] = ingested["gone"]  # a listing knows no purges, only their absence
    assert_same_index(ingested, loaded)
    return metrics


def test_ingest_and_loader_build_the_same_index(h):
    """The ingester plans each event from what it remembers and writes plain commands; the
    loader plans each listed record and writes it as one compare-and-set. Both follow one
    rulebook (appview/plan.c): the stream's fold and the fold of what it leaves must read the
    same. The stream is dense in updates, deletes, moves and purges."""
    m = ingest_matches_loader(h, generate(h, 20000, seed=5))
    # The ingester remembered what it wrote, and read far less than it folded.
    assert m["appview_ingest_remembered_records"] > 0
    assert m["appview_ingest_reads_total"] < 0.5 * m["appview_events_folded_total"], m


def step_did(d):
    return "did:plc:" + "a" * 11 + tid(d)


def step_event(d, t, step):
    """The event of one step of DID number d at time_us t: ("create"|"update"|"delete", "m" or
    "t", rkey, repository, [tag,] digest character) for a commit, or ("account", status)."""
    did = step_did(d)
    if step[0] == "account":
        return {"did": did, "time_us": t, "kind": "account",
                "account": {"active": False, "did": did, "seq": t // 1000, "status": step[1],
                            "time": "2024-11-19T07:06:40.026Z"}}
    op, kind, rkey, *rest = step
    commit = {"rev": tid((t << 10) | d), "operation": op, "rkey": rkey,
              "collection": "io.atcr.manifest" if kind == "m" else "io.atcr.tag"}
    if op != "delete":
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000000))
        when += ".%03dZ" % (t // 1000 % 1000)
        digest = "sha256:" + (rest[-1] * 64)
        if kind == "m":
            record = {"$type": "io.atcr.manifest", "repository": rest[0],
                      "digest": digest, "holdDid": "did:web:hold01.atcr.io",
                      "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "schemaVersion": 2, "createdAt": when}
        else:
            record = {"$type": "io.atcr.tag", "repository": rest[0], "tag": rest[1],
                      "manifest": f"at://{did}/io.atcr.manifest/{digest[7:]}",
                      "manifestDigest": digest, "createdAt": when}
        commit.update(record=record,
                      cid="bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm")
    return {"did": did, "time_us": t, "kind": "commit", "commit": commit}


def unindexing_events(path, dids=40):
    """For each of dids DIDs, the cases where a delete or a move removes index entries: a
    digest two manifest records share (only its owner's delete removes the entry), the last
    entry of a repository, manifests and tags that move to another repository, a create and a
    delete back to back. The DIDs' steps interleave, so that rounds mix them differently."""
    steps = [
        ("create", "m", "ma", "app", "1"), ("create", "m", "mb", "app", "1"),
        ("create", "t", "t1", "app", "latest", "1"), ("delete", "m", "ma"),
        ("delete", "m", "mb"), ("delete", "t", "t1"), ("create", "m", "mc", "app", "2"),
        ("update", "m", "mc", "web", "2"), ("create", "t", "t2", "web", "v1", "2"),
        ("update", "t", "t2", "app", "v1", "2"), ("delete", "m", "mc"), ("delete", "t", "t2"),
        ("create", "m", "md", "web", "3"), ("delete", "m", "md"),
        ("create", "m", "me", "app", "4"), ("create", "m", "mf", "app", "4"),
        ("create", "t", "t3", "app", "v2", "4"), ("delete", "m", "mf"), ("delete", "m", "me"),
        ("update", "t", "t3", "web", "v2", "4"), ("delete", "t", "t3"),
    ]
    # First, creates for other DIDs: whatever the stream sent while the appview was starting
    # comes in one round, and should not be the steps below.
    warmup = [(d, ("create", "m", f"w{i}", "warm", str(i % 10))) for i in range(600)
              for d in [dids + i % 10]]
    steps_in_order = warmup + [(d, steps[i - d]) for i in range(len(steps) + dids)
                               for d in range(dids) if 0 <= i - d < len(steps)]
    t = 1732000000000000
    events = []
    for d, step in steps_in_order:
        t += 1000
        events.append(step_event(d, t, step))
    return write_events(path, events)


def test_unindexing_matches_the_loader(h):
    """Deletes and moves of live records take their index entries out (a tag's only when it is
    the record that named the tag last); the index must end as a listing of what is left
    builds it, whether the steps arrive in one round or one by one."""
    events = unindexing_events(os.path.join(h.tmp, "unindexing.jsonl"))
    ingest_matches_loader(h, events, (), "-fast")
    ingest_matches_loader(h, events, ("--rate", "1500"), "-paced")


def test_repository_named_again_after_a_purge(h):
    """The ingester names a repository in repos once and remembers that it did; a purge
    deletes repos, and the DID's next push into the same repository must name it again, the
    steps in one round or one by one."""
    steps = [("create", "m", "ma", "app", "1"), ("create", "t", "t1", "app", "latest", "1"),
             ("account", "takendown"), ("create", "m", "mb", "app", "2"),
             ("create", "t", "t2", "web", "v1", "2")]
    t, events = 1732000000000000, []
    for step in steps:
        for d in range(20):
            t += 1000
            events.append(step_event(d, t, step))
    path = write_events(os.path.join(h.tmp, "purge-and-push.jsonl"), events)
    ingest_matches_loader(h, path, (), "-fast")
    ingest_matches_loader(h, path, ("--rate", "200"), "-paced")


def test_repository_named_again_after_repos_expired(h):
    """repos expires with the DID's other keys when no write refreshes its TTL (2 s here): the
    ingester must then name a repository again, though it named it before."""
    first, second = 1732000000000000, 1732000003500000
    path = write_events(os.path.join(h.tmp, "expiry.jsonl"), [
        step_event(0, first, ("create", "m", "ma", "app", "1")),
        step_event(0, second, ("create", "m", "mb", "app", "2"))])
    redis = h.start_redis()
    replay = start_replay(h, path, ["--live"])
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"],
                        env={"APPVIEW_RECORD_TTL": "2"})
    repos = f"{PREFIX}{{{step_did(0)}}}/repos"
    wait_cursor(h, redis, 1, first)
    assert h.redis_raw(redis, "ZRANGE", repos, 0, -1).split() == ["app"]
    wait_for(lambda: h.redis(redis, "EXISTS", repos) == "(integer) 0", timeout=10,
             what="repos to expire")
    wait_cursor(h, redis, 1, second)
    assert h.redis_raw(redis, "ZRANGE", repos, 0, -1).split() == ["app"]
    assert 0 < int(h.redis_raw(redis, "PTTL", repos)) <= 2000
    assert app.stop() == 0


def test_flush_midstream_keeps_ttls(h):
    """FLUSHALL under a running ingester: the appview remembers which keys it gave a TTL, and
    must notice the flush, or it writes keys again without one (a cache that never expires)."""
    events = generate(h, 20000, seed=13)
    redis = h.start_redis()
    replay = start_replay(h, events, ["--rate", "5000"])
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_for(lambda: h.metrics(app.base).get("appview_records_indexed_total", 0) > 500,
             what="some records indexed")
    h.redis(redis, "FLUSHALL")
    time_us, _ = last_event(events)
    wait_cursor(h, redis, 1, time_us)
    keys = dump(h, redis)
    assert any(k.endswith("/recs") for k in keys), "nothing was indexed after the flush"
    no_ttl = {PREFIX + "schema", PREFIX + "recent"}
    missing = sorted(k for k, v in keys.items() if k not in no_ttl and " ttl " not in v)
    assert not missing, missing[:10]
    assert h.redis_raw(redis, "GET", PREFIX + "schema").strip() == SCHEMA


def test_valkey_restart_midstream_loses_nothing(h):
    events = generate(h, 20000, seed=11)
    want = reference_fold(h, events)
    port = free_port()
    aof = ("--appendfsync", "always")
    redis = h.start_redis(port=port, aof=True, extra=aof)
    replay = start_replay(h, events, ["--rate", "4000"])
    # Two restarts with the reconnect backoff after "LOADING" can take longer than the 3 s lease
    # the other tests use; then the lease lapses and ingest resumes without a replay to count.
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"],
                        env={"APPVIEW_INGEST_LEASE_SECONDS": "15"})
    time_us, _ = last_event(events)
    for i in range(2):
        time.sleep(1.0)
        redis.kill()
        time.sleep(0.5)
        assert app.alive()
        redis = h.start_redis(port=port, aof=True, extra=aof, name=f"redis-{i}")
    wait_cursor(h, redis, 1, time_us)
    assert h.metrics(app.base)["appview_ingest_replays_total"] >= 1
    assert_same_index(snapshot(h, redis), want)


def ingesting_midstream(h, seed):
    """A paced stream of 20,000 events, the index an uninterrupted run builds from it, and an
    appview in the middle of ingesting it: (events, that index, its redis, the appview)."""
    events = generate(h, 20000, seed=seed)
    want = reference_fold(h, events)
    redis = h.start_redis()
    replay = start_replay(h, events, ["--rate", "4000"])
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_for(lambda: h.metrics(app.base).get("appview_records_indexed_total", 0) > 300,
             what="some records indexed")
    return events, want, redis, app


def test_valkey_refusing_writes_loses_nothing(h):
    """Valkey out of memory (maxmemory, noeviction) for a while mid-ingest, then given room:
    refused writes are not skipped but written again from the last acknowledged cursor, so the
    index, the recent list included, ends as an uninterrupted run's. Meanwhile ingest pauses
    with a log line per attempt, not per write, and _health says why."""
    events, want, redis, app = ingesting_midstream(h, seed=17)
    used = int(next(line.split(":")[1] for line in
                    h.redis_raw(redis, "INFO", "memory").splitlines()
                    if line.startswith("used_memory:")))
    h.redis(redis, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    h.redis(redis, "CONFIG", "SET", "maxmemory", str(used + 32 * 1024))

    def health_refusing():
        status, body = h.get_json(app.base + "/xrpc/_health")
        return (status, body) if body["valkey"].get("writesRefused") else None

    status, body = wait_for(health_refusing, timeout=20, what="_health to show the refusal")
    refused = body["valkey"]["writesRefused"]
    assert refused.startswith("OOM"), refused
    assert status == 503 and body["status"] == "degraded" and body["valkey"]["up"] is True, body
    assert any(p.startswith("Valkey refuses the ingester's writes, ingest paused: OOM")
               for p in body["problems"]), body
    assert h.metrics(app.base)["appview_valkey_writes_refused"] == 1
    time.sleep(3)
    h.redis(redis, "CONFIG", "SET", "maxmemory", "0")
    wait_cursor(h, redis, 1, last_event(events)[0])
    assert_same_index(snapshot(h, redis), want)
    m = h.metrics(app.base)
    assert m["appview_ingest_refused_retries_total"] >= 1 and m["appview_valkey_writes_refused"] == 0
    status, body = h.get_json(app.base + "/xrpc/_health")
    assert "writesRefused" not in body["valkey"], body
    assert status == 200 and body["status"] == "ok" and body["problems"] == [], body
    log = app.log()
    assert log.count("write refused") + log.count("refused writes") < 40, log[-3000:]
    assert app.stop() == 0


def test_valkey_stopped_midstream_loses_nothing(h):
    """Valkey frozen (SIGSTOP) past the command timeout, then thawed: the connection is dropped
    and made again, and the stream read again from the last acknowledged cursor."""
    events, want, redis, app = ingesting_midstream(h, seed=19)
    redis.signal(signal.SIGSTOP)
    time.sleep(6)
    redis.signal(signal.SIGCONT)
    wait_cursor(h, redis, 1, last_event(events)[0], timeout=90)
    assert_same_index(snapshot(h, redis), want)
    assert h.metrics(app.base)["valkey_reconnects_total"] >= 1
    assert "no reply for" in app.log()
    assert app.stop() == 0


def test_malformed_input_is_dropped_and_counted(h):
    redis = h.start_redis()
    fixture = os.path.join(FIXTURES, "malformed.jsonl")
    with open(os.path.join(FIXTURES, "malformed.expected.json")) as f:
        expected = json.load(f)
    # Add a 2 MB record and a record with invalid UTF-8 to the fixture's own bad lines.
    events = os.path.join(h.tmp, "bad.jsonl")
    with open(fixture, "rb") as src, open(events, "wb") as out:
        lines = [l for l in src.read().split(b"\n") if l.strip()]
        t = json.loads(lines[-1])["time_us"]
        big = {"did": "did:plc:bigbbbbbbbbbbbbbbbbbbbbb", "time_us": t + 1, "kind": "commit",
               "commit": {"rev": "3l3qo2vutsw2b", "operation": "create",
                          "collection": "io.atcr.manifest", "rkey": "abc",
                          "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",
                          "record": {"$type": "io.atcr.manifest", "repository": "x" * 2_000_000}}}
        bad_utf8 = (b'{"did":"did:plc:utfuuuuuuuuuuuuuuuuuuuuu","time_us":%d,"kind":"commit",'
                    b'"commit":{"rev":"3l3qo2vutsw2c","operation":"create","collection":'
                    b'"io.atcr.tag","rkey":"x","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm",'
                    b'"record":{"tag":"\xff\xfe"}}}' % (t + 2))
        out.write(b"\n".join(lines + [json.dumps(big).encode(), bad_utf8]) + b"\n")
    replay = start_replay(h, events, ["--malformed", "3"])
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_cursor(h, redis, 1, t + 2)
    dropped = metric_sum(h, app.base, "appview_events_dropped_total")
    oversize = h.metrics(app.base)["appview_jetstream_oversize_total"]
    assert oversize >= 2, oversize  # the fixture's and ours
    assert dropped + oversize >= expected["malformedLines"] + 2, (dropped, oversize)
    snap = snapshot(h, redis)
    want = {did: {repo: {"manifests": sorted(r["manifests"]), "tags": r["tags"]}
                  for repo, r in d["repositories"].items()}
            for did, d in expected["dids"].items()}
    got = {did: {repo: {"manifests": digests(r["manifests"]), "tags": r["tags"]}
                 for repo, r in repos.items()} for did, repos in snap["index"].items()}
    assert got == want, f"got {got}\nwant {want}"
    status, health = h.get_json(app.base + "/xrpc/_health")
    assert status == 200 and health["valkey"]["up"] is True
    assert app.stop() == 0


def test_falls_over_to_second_url(h):
    redis = h.start_redis()
    fixture = os.path.join(FIXTURES, "basic.jsonl")
    replay = start_replay(h, fixture)
    dead = f"ws://127.0.0.1:{free_port()}/subscribe"
    start_appview(h, redis, [dead, f"ws://127.0.0.1:{replay.port}/subscribe"])
    time_us, _ = last_event(fixture)
    wait_cursor(h, redis, 1, time_us)
    check_basic_fold(h, redis)


def test_health_reports_valkey_down(h):
    redis = h.start_redis()
    app = start_appview(h, redis, [f"ws://127.0.0.1:{free_port()}/subscribe"])
    # start_appview returns once it listens; Valkey may still be connecting (503).
    wait_for(lambda: h.get_json(app.base + "/xrpc/_health")[0] == 200, what="200 health")
    status, body = h.get_json(app.base + "/xrpc/_health")
    assert status == 200 and body["valkey"]["up"] is True
    redis.kill()
    wait_for(lambda: h.get_json(app.base + "/xrpc/_health")[0] == 503, what="503 health")
    status, body = h.get_json(app.base + "/xrpc/_health")
    assert body["valkey"]["up"] is False
    assert app.alive()
    status, body = h.get_json(app.base + "/xrpc/io.atcr.repo.noSuchMethod")
    assert status == 501 and body["error"] == "MethodNotImplemented"


def test_other_schema_is_not_ingested_into(h):
    """An index of another layout (here version 1, which wrote a cursor but no schema mark) is
    left alone: folding on top of it would serve a mix of both."""
    redis = h.start_redis()
    fixture = os.path.join(FIXTURES, "basic.jsonl")
    replay = start_replay(h, fixture)
    h.redis(redis, "SET", PREFIX + "cursor:v1", "1")
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_for(lambda: "key schema 1" in app.log(), what="the schema complaint")
    time.sleep(0.5)
    assert h.get_json(f"http://127.0.0.1:{replay.port}/_stats")[1]["eventsSent"] == 0
    assert h.redis(redis, "GET", PREFIX + "cursor:v1") == "1"
    assert h.redis(redis, "EXISTS", PREFIX + "schema") == "(integer) 0"
    assert app.alive()

    # A fresh index gets the mark, and an appview that finds it ingests.
    h.redis(redis, "FLUSHALL")
    app.stop()
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"], name="appview2")
    wait_cursor(h, redis, 1, last_event(fixture)[0])
    assert h.redis(redis, "GET", PREFIX + "schema") == SCHEMA
    check_basic_fold(h, redis)


def test_outdated_schema_drop_keeps_to_its_own_prefix(h):
    """A prefix holding what SCAN reads as a wildcard ("x*:") drops its own old keys only:
    "xyz:keep" matches the unescaped pattern "x*:*" but lives under another prefix."""
    redis = h.start_redis()
    prefix = "x*:"
    h.redis(redis, "SET", prefix + "schema", "3")
    h.redis(redis, "SET", prefix + "cursor:v1", "1")
    old = prefix + "{did:plc:oldoooooooooooooooooooooo}/recs"
    h.redis(redis, "HSET", old, "t/app/latest", "sha256:" + "a" * 64)
    h.redis(redis, "SET", "xyz:keep", "1")
    replay = start_replay(h, os.path.join(FIXTURES, "basic.jsonl"))
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"],
                        env={"APPVIEW_KEY_PREFIX": prefix})
    wait_for(lambda: h.redis(redis, "GET", prefix + "schema") == SCHEMA, what="schema written")
    assert h.redis(redis, "EXISTS", old) == "(integer) 0"
    assert h.redis(redis, "GET", "xyz:keep") == "1", app.log()[-2000:]


def test_outdated_schema_is_dropped_and_rebuilt(h):
    """An index of version 4 (no index of P recent by DID, which a purge now reads)
    cannot be read as the current version: the ingester drops its keys, keeps the cursor,
    marks the prefix as the current version and goes on from the cursor. Keys outside the
    prefix are left alone."""
    redis = h.start_redis()
    fixture = os.path.join(FIXTURES, "basic.jsonl")
    replay = start_replay(h, fixture)
    h.redis(redis, "SET", PREFIX + "schema", "4")
    h.redis(redis, "SET", PREFIX + "cursor:v1", "1")
    old = f"{PREFIX}{{did:plc:oldoooooooooooooooooooooo}}/"
    h.redis(redis, "HSET", old + "recs", "t/app/latest", "sha256:" + "a" * 64)
    h.redis(redis, "ZADD", old + "repo/app/tags", 1, "latest")
    h.redis(redis, "ZADD", PREFIX + "recent", 1, "did:plc:oldoooooooooooooooooooooo app sha256:aa")
    h.redis(redis, "SET", PREFIX + "handle:old.test", "did:plc:oldoooooooooooooooooooooo")
    h.redis(redis, "SET", "other:keep", "1")
    app = start_appview(h, redis, [f"ws://127.0.0.1:{replay.port}/subscribe"])
    wait_cursor(h, redis, 1, last_event(fixture)[0])
    assert "key schema 4" in app.log() and "dropping it" in app.log()
    assert h.redis(redis, "GET", PREFIX + "schema") == SCHEMA
    assert h.redis(redis, "EXISTS", old + "recs", old + "repo/app/tags",
                   PREFIX + "handle:old.test") == "(integer) 0"
    assert h.redis(redis, "GET", "other:keep") == "1"
    assert h.metrics(app.base)["appview_schema_dropped_keys_total"] >= 4
    check_basic_fold(h, redis)
