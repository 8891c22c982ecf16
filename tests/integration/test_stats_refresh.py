"""The Docker Hub refresh loop commits each image before it asks for the next: an appview
killed (SIGKILL) while the loop waits for the Hub's answer about the second image of a page
keeps the first image's snapshot in its SQLite history, and after a restart the loop asks only
for the images it had not finished, never again for the one it had.

A local fake Hub (test_dockerhub.FakeHub: real sockets) logs every request; the appview runs
with ingest off and a mapping file of three images, so the refresh loop's first round (1 s
after start) fetches them one at a time, alphabetically (all equally stale)."""
import os
import sqlite3
import sys
import time

from harness import wait_for

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_dockerhub import FakeHub, ok  # noqa: E402
from test_reads import available  # noqa: E402,F401
from test_stats import ALICE, start_appview  # noqa: E402

IMAGES = {"lib/a": 100, "lib/b": 200, "lib/c": 300}


def history(h):
    """{image: (synced_ms, {day: pull_count})} as the appview committed it."""
    path = os.path.join(h.tmp, "appview-data", "stats-history.db")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        out = {img: (ms, {}) for img, ms in db.execute("SELECT image, synced_ms FROM images")}
        for img, day, count in db.execute("SELECT image, day, pull_count FROM snapshots"):
            out.setdefault(img, (None, {}))[1][day] = count
        return out
    finally:
        db.close()


def test_crash_between_images(h):
    redis = h.start_redis()
    hub = FakeHub()
    # The killed appview never reads its answer: the fake's write then fails, which is expected.
    hub.server.handle_error = lambda request, address: None
    try:
        hub.script["lib/a"] = [ok(IMAGES["lib/a"])]
        # The first answer about lib/b comes late (the crash happens meanwhile), later ones at once.
        slow = ok(IMAGES["lib/b"])
        hub.script["lib/b"] = [slow[:3] + (3.0,), slow]
        hub.script["lib/c"] = [ok(IMAGES["lib/c"])]
        mp = os.path.join(h.tmp, "hubmap.txt")
        with open(mp, "w") as f:
            f.write("".join(f"{ALICE}/r{i} = {img}\n" for i, img in enumerate(IMAGES)))
        av = start_appview(h, redis, APPVIEW_DOCKERHUB_URL=hub.url, APPVIEW_DOCKERHUB_MAP=mp)

        wait_for(lambda: hub.count("lib/b") == 1, timeout=10, what="the Hub asked about lib/b")
        av.kill()
        assert [i for _, i, _ in sorted(hub.log)] == ["lib/a", "lib/b"], hub.log
        before = history(h)
        assert set(before) == set(IMAGES), before
        synced_a, snaps_a = before["lib/a"]
        assert list(snaps_a.values()) == [IMAGES["lib/a"]] and synced_a > 0, before
        assert before["lib/b"] == (0, {}) and before["lib/c"] == (0, {}), before

        # The same data directory and mapping: the first round after the restart asks for
        # b and c only.
        av.start()
        wait_for(lambda: h.http("GET", av.url + "/xrpc/_health", timeout=2)[0] == 200,
                 what="appview health after the restart")
        wait_for(lambda: all(history(h)[i][1] for i in IMAGES), timeout=10,
                 what="snapshots of every image")
        time.sleep(0.5)  # room for a wrong extra request to show up
        assert (hub.count("lib/a"), hub.count("lib/b"), hub.count("lib/c")) == (1, 2, 1), hub.log
        after = history(h)
        assert after["lib/a"] == before["lib/a"], (before, after)
        for img, pulls in IMAGES.items():
            assert list(after[img][1].values()) == [pulls] and after[img][0] > 0, after
        m = h.metrics(av.url)
        assert m["appview_dockerhub_requests_total"] == 2, m
        assert av.stop() == 0
    finally:
        hub.close()
