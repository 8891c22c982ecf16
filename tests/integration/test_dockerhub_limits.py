"""The appview's Docker Hub rate limit, seen from a local fake Hub (real sockets) that logs
when each request arrives: with APPVIEW_DOCKERHUB_RATE=3 per APPVIEW_DOCKERHUB_RATE_WINDOW=2 s
and 8 mapped images asked for at once through getStats, no 2-second window holds more than 3
requests, and every image is still fetched, once.

A getStats waits for the Hub only until its deadline (the per-hold timeout + 200 ms, stats.c):
the images still queued behind the limiter are answered without `dockerHub` (no snapshot yet),
their Hub calls go on and land in the history, and a later getStats whose Hub call is late
shows the last snapshot instead (pullCount, lastSyncedAt of that day, no starCount)."""
import os
import sqlite3
import sys
import threading
import time

from harness import free_port, wait_for

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_dockerhub import FakeHub, ok  # noqa: E402
from test_reads import PREFIX, Seeder, check_output, digest, available  # noqa: E402,F401
from test_stats import ALICE, HOLD_TIMEOUT_MS, T0, get_stats, start_appview  # noqa: E402

RATE, WINDOW = 3, 2
N = 8
SLACK = 0.4  # arrival jitter allowed at the fake; a full-bucket refill comes 0.67 s after a burst


def image(i):
    return f"lib/i{i}"


def history_db(h):
    return os.path.join(h.tmp, "appview-data", "stats-history.db")


def mark_synced(h, images):
    """Records the images as synced just now, so the refresh loop's round at start-up leaves
    them alone and every Hub request in this test comes from getStats. Same tables as
    appview/history.c creates (CREATE TABLE IF NOT EXISTS there keeps these)."""
    os.makedirs(os.path.dirname(history_db(h)), exist_ok=True)
    db = sqlite3.connect(history_db(h))
    now = int(time.time() * 1000)
    with db:
        db.execute("CREATE TABLE images(image TEXT PRIMARY KEY, synced_ms INTEGER NOT NULL)")
        db.execute("CREATE TABLE snapshots(image TEXT NOT NULL, day INTEGER NOT NULL,"
                   " pull_count INTEGER NOT NULL, PRIMARY KEY(image, day))")
        db.executemany("INSERT INTO images VALUES(?, ?)", [(img, now) for img in images])
    db.close()


def snapshots(h):
    db = sqlite3.connect(f"file:{history_db(h)}?mode=ro", uri=True, timeout=5)
    try:
        return {img: count for img, count in
                db.execute("SELECT image, pull_count FROM snapshots ORDER BY day")}
    finally:
        db.close()


def densest(times, window):
    """The most requests that arrived within any `window` seconds of each other."""
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u - t < window) for i, t in enumerate(times)),
               default=0)


def test_rate_limit_spaces_hub_requests(h):
    redis = h.start_redis()
    seed = Seeder(h, redis, PREFIX)
    # A hold that is not there: the holds' part is answered at once ("unreachable").
    nohold = f"did:web:127.0.0.1%3A{free_port()}"
    for i in range(N):
        seed.manifest(ALICE, f"r{i}", digest(i), T0 + i, hold=nohold)
    seed.complete(ALICE)
    mp = os.path.join(h.tmp, "hubmap.txt")
    with open(mp, "w") as f:
        f.write("".join(f"{ALICE}/r{i} = {image(i)}\n" for i in range(N)))
    mark_synced(h, [image(i) for i in range(N)])
    hub = FakeHub()
    # A request whose client gave up (the late answer below) fails to write: expected.
    hub.server.handle_error = lambda request, address: None
    try:
        for i in range(N):
            hub.script[image(i)] = [ok(1000 + i, stars=i)]
        av = start_appview(h, redis, APPVIEW_DOCKERHUB_URL=hub.url, APPVIEW_DOCKERHUB_MAP=mp,
                           APPVIEW_DOCKERHUB_RATE=RATE, APPVIEW_DOCKERHUB_RATE_WINDOW=WINDOW)
        time.sleep(1.2)  # past the refresh loop's first round, which finds nothing to do
        assert hub.log == [], hub.log

        results = {}
        go = threading.Barrier(N)

        def one(i):
            go.wait()
            results[i] = get_stats(h, av, actor=ALICE, repository=f"r{i}")

        ts = [threading.Thread(target=one, args=(i,)) for i in range(N)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        deadline = HOLD_TIMEOUT_MS / 1000 + 0.2
        answered = []
        for i in range(N):
            status, body, took = results[i]
            assert status == 200, (i, body)
            check_output("getStats", body)
            # Bounded by the deadline, not by the limiter's queue.
            assert took < deadline + 1.0, (i, took)
            if "dockerHub" in body:
                d = body["dockerHub"]
                assert (d["image"], d["pullCount"], d["starCount"]) == (image(i), 1000 + i, i), body
                assert body["totalPullCount"] == body["pullCount"] + 1000 + i, body
                answered.append(i)
            else:
                # Still queued at the deadline, and nothing recorded yet to show instead.
                assert took > deadline - 0.3 and body["totalPullCount"] == body["pullCount"], (
                    i, took, body)
        # The first window's requests come back in time; the limiter holds back the rest.
        assert RATE <= len(answered) < N, results

        # The held-back calls go on after their getStats were answered: every image is asked
        # once and its answer recorded in the history.
        wait_for(lambda: len(snapshots(h)) == N, timeout=N / RATE * WINDOW + 5,
                 what="a snapshot of every image")
        assert snapshots(h) == {image(i): 1000 + i for i in range(N)}
        assert sorted(i for _, i, _ in hub.log) == sorted(image(i) for i in range(N)), hub.log

        # A later getStats whose Hub call is late shows the last snapshot (the call goes on).
        late = N - 1
        hub.script[image(late)] = [ok(5000, stars=50)[:3] + (3.0,)]
        time.sleep(1.1)  # past the stats TTL and the Hub answer's reuse time (both 1 s)
        status, body, took = get_stats(h, av, actor=ALICE, repository=f"r{late}")
        assert status == 200 and took < deadline + 1.0, (status, took, body)
        check_output("getStats", body)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert body["dockerHub"] == {"image": image(late), "pullCount": 1000 + late,
                                     "lastSyncedAt": f"{today}T00:00:00.000Z"}, body
        wait_for(lambda: snapshots(h)[image(late)] == 5000, timeout=6,
                 what="the late answer recorded")

        arrivals = [t for t, _, _ in hub.log]
        assert len(arrivals) == N + 1, hub.log
        gaps = sorted(arrivals)
        assert densest(arrivals, WINDOW - SLACK) <= RATE, (
            f"more than {RATE} Hub requests within {WINDOW - SLACK}s: arrivals at "
            f"{[round(t - gaps[0], 2) for t in gaps]}")
        m = h.metrics(av.url)
        assert m["appview_dockerhub_requests_total"] == N + 1, m
        assert av.stop() == 0
    finally:
        hub.close()
