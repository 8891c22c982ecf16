"""io.atcr.repo.getStats / getStatsHistory across real bin/hold processes: the sum over holds,
per-hold statuses when one is stopped (stale with its last counts) or never answers
(unreachable), and an answer time bounded by the per-hold timeout, not the number of holds.

The appview runs with ingest off and a seeded index (tests/lib/records.py, as test_reads.py does);
holds are did:web on 127.0.0.1 over http (APPVIEW_ALLOW_PRIVATE_NETWORKS)."""
import os
import socket
import sys
import threading
import time
import urllib.parse

from harness import free_port, wait_for

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_hold import incr, start_hold  # noqa: E402
from test_reads import PREFIX, Seeder, check_output, digest, available as reads_available  # noqa: E402

ALICE = "did:plc:alice7777777777777777777"
T0 = 1763812200000
HOLD_TIMEOUT_MS = 1500


def available():
    return reads_available()



def hold_did(hold):
    return f"did:web:127.0.0.1%3A{hold.port}"


class Blackhole:
    """A hold that serves its did.json but never answers getStats."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                return
            data += chunk
        if b"/.well-known/did.json" in data.split(b"\r\n")[0]:
            body = ('{"id":"did:web:127.0.0.1%%3A%d","service":[{"id":"#atcr_hold",'
                    '"type":"AtcrHoldService","serviceEndpoint":"http://127.0.0.1:%d"}]}'
                    % (self.port, self.port)).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
                      b"\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            c.close()
        else:
            self.conns.append(c)  # held open, never answered

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def start_appview(h, redis, holds=(), **extra):
    port = free_port()
    env = {"APPVIEW_VALKEY_URL": redis.url, "APPVIEW_LISTEN": f"127.0.0.1:{port}",
           "APPVIEW_INGEST": "off", "APPVIEW_PLC_URL": "http://127.0.0.1:1",
           "APPVIEW_ALLOW_PRIVATE_NETWORKS": "on",
           "APPVIEW_UPSTREAM_TIMEOUT_MS": str(HOLD_TIMEOUT_MS),
           "APPVIEW_KEY_PREFIX": PREFIX, "APPVIEW_STATS_TTL": "1",
           "APPVIEW_DATA_DIR": os.path.join(h.tmp, "appview-data"),
           "APPVIEW_DOCKERHUB_URL": "http://127.0.0.1:1",
           "APPVIEW_HOLDS": ",".join(holds)}
    env.update({k: str(v) for k, v in extra.items()})
    p = h.spawn(extra.get("name", "appview"), [h.binary("appview")], env=env, sanitized=True)
    p.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: h.http("GET", p.url + "/xrpc/_health", timeout=2)[0] == 200,
             what="appview health")
    return p


def get_stats(h, av, method="getStats", **params):
    q = urllib.parse.urlencode(params)
    t = time.time()
    status, body = h.get_json(f"{av.url}/xrpc/io.atcr.repo.{method}?{q}", timeout=20)
    return status, body, time.time() - t


def pulls(h, hold, n, repo="app"):
    assert incr(h, hold.base, {"did": ALICE, "repository": repo, "event": "pull", "count": n})[0] == 200


def test_sum_statuses_and_deadline(h):
    redis = h.start_redis()
    seed = Seeder(h, redis, PREFIX)
    a, b, c = start_hold(h, "hold-a"), start_hold(h, "hold-b"), start_hold(h, "hold-c")
    pulls(h, a, 5)
    pulls(h, b, 7)
    assert incr(h, b.base, {"did": ALICE, "repository": "app", "event": "push", "count": 2})[0] == 200
    pulls(h, c, 11)
    # Hold a and b from manifests, c from APPVIEW_HOLDS.
    seed.manifest(ALICE, "app", digest(1), T0, hold=hold_did(a))
    seed.manifest(ALICE, "app", digest(2), T0 + 1, hold=hold_did(b))
    seed.complete(ALICE)
    av = start_appview(h, redis, holds=[hold_did(c)])

    status, body, _ = get_stats(h, av, actor=ALICE, repository="app")
    assert status == 200, body
    check_output("getStats", body)
    assert (body["pullCount"], body["pushCount"], body["totalPullCount"]) == (23, 2, 23), body
    assert sorted((x["did"], x["pullCount"], x["status"]) for x in body["holds"]) == sorted(
        [(hold_did(a), 5, "ok"), (hold_did(b), 7, "ok"), (hold_did(c), 11, "ok")]), body
    assert "dockerHub" not in body and body["lastPull"].endswith("Z")

    # Hold b goes down: its last known counts are shown, marked stale.
    assert b.stop() == 0
    pulls(h, a, 1)
    time.sleep(1.1)  # the aggregate's TTL
    status, body, took = get_stats(h, av, actor=ALICE, repository="app")
    assert status == 200, body
    st = {x["did"]: (x["pullCount"], x["pushCount"], x["status"]) for x in body["holds"]}
    assert st[hold_did(b)] == (7, 2, "stale") and st[hold_did(a)] == (6, 0, "ok"), body
    assert body["pullCount"] == 24

    # Two holds that never answer: one hangs, one was never up. Both "unreachable", and the
    # answer comes within about one per-hold timeout, not two.
    bh = Blackhole()
    try:
        hung = f"did:web:127.0.0.1%3A{bh.port}"
        seed.manifest(ALICE, "app", digest(3), T0 + 2, hold=hung)
        seed.manifest(ALICE, "app", digest(4), T0 + 3, hold=f"did:web:127.0.0.1%3A{free_port()}")
        seed.flush()
        time.sleep(1.1)
        status, body, took = get_stats(h, av, actor=ALICE, repository="app")
        assert status == 200, body
        check_output("getStats", body)
        st = {x["did"]: (x["pullCount"], x["status"]) for x in body["holds"]}
        assert st[hung] == (0, "unreachable") and len(st) == 5, body
        assert body["pullCount"] == 24
        assert took < HOLD_TIMEOUT_MS / 1000 + 1.0, took
        # Cached: the next one is immediate.
        status, again, took2 = get_stats(h, av, actor=ALICE, repository="app")
        assert status == 200 and again == body and took2 < 0.5, (took2, again)
    finally:
        bh.close()

    # Unknown repository and bad input.
    assert get_stats(h, av, actor=ALICE, repository="nope")[0] == 404
    assert get_stats(h, av, actor=ALICE, repository="UPPER")[0] == 400
    assert get_stats(h, av, actor="not a did", repository="app")[0] == 400
    assert av.stop() == 0


def test_history_sums_holds(h):
    redis = h.start_redis()
    seed = Seeder(h, redis, PREFIX)
    a, b = start_hold(h, "hold-a"), start_hold(h, "hold-b")
    pulls(h, a, 3)
    pulls(h, b, 4)
    seed.manifest(ALICE, "app", digest(1), T0, hold=hold_did(a))
    seed.complete(ALICE)
    av = start_appview(h, redis, holds=[hold_did(b)])
    status, body, _ = get_stats(h, av, "getStatsHistory", actor=ALICE, repository="app", days=3)
    assert status == 200, body
    check_output("getStatsHistory", body)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert [d["date"] for d in body["days"]][-1] == today and len(body["days"]) == 3, body
    assert body["days"][-1]["holdPulls"] == 7 and body["days"][0]["holdPulls"] == 0, body
    assert get_stats(h, av, "getStatsHistory", actor=ALICE, repository="app", days=0)[0] == 400
    assert av.stop() == 0


def test_concurrent_requests_share_one_fanout(h):
    redis = h.start_redis()
    seed = Seeder(h, redis, PREFIX)
    a = start_hold(h, "hold-a")
    pulls(h, a, 2)
    seed.manifest(ALICE, "app", digest(1), T0, hold=hold_did(a))
    seed.complete(ALICE)
    av = start_appview(h, redis)
    results = []

    def one():
        results.append(get_stats(h, av, actor=ALICE, repository="app")[:2])

    ts = [threading.Thread(target=one) for _ in range(40)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(s == 200 and b["pullCount"] == 2 for s, b in results), results[:3]
    m = h.metrics(av.url)
    assert m["appview_hold_requests_total"] <= 3, m["appview_hold_requests_total"]
    assert av.stop() == 0


def test_many_holds_are_cached_like_one(h):
    """The stored aggregate and per-hold values grow with the number of holds; nine holds
    (which once overflowed a fixed argument array, so nothing was stored) are cached too."""
    redis = h.start_redis()
    seed = Seeder(h, redis, PREFIX)
    holds = [start_hold(h, f"hold-{i}") for i in range(9)]
    for i, hd in enumerate(holds):
        pulls(h, hd, i + 1)
        seed.manifest(ALICE, "app", digest(i + 1), T0 + i, hold=hold_did(hd))
    seed.complete(ALICE)
    av = start_appview(h, redis)
    status, first = get_stats(h, av, actor=ALICE, repository="app")[:2]
    assert status == 200 and first["pullCount"] == sum(range(1, 10)), first
    asked = h.metrics(av.url)["appview_hold_requests_total"]
    status, second = get_stats(h, av, actor=ALICE, repository="app")[:2]
    assert status == 200 and second == first
    assert h.metrics(av.url)["appview_hold_requests_total"] == asked  # served from the cache
    known = h.redis_raw(redis, "HLEN", f"{PREFIX}{{{ALICE}}}/repo/app/holdstats").strip()
    assert known == "9", known
    assert av.stop() == 0
