"""The appview's Docker Hub client against a local fake Hub (real sockets, scripted answers):
the pull count next to the holds' in getStats, 404 remembered, 401 not remembered, 500 then
200 retried, 429 parks every call (nothing sent while parked, the attempt not used up), and
concurrent getStats for one image send one Hub request."""
import http.server
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reads import PREFIX, Seeder, check_output, digest, available  # noqa: E402,F401
from test_stats import ALICE, T0, get_stats, hold_did, pulls, start_appview  # noqa: E402
from test_hold import start_hold  # noqa: E402


class FakeHub:
    def __init__(self):
        self.script = {}  # image -> list of (status, headers, body, delay); last one repeats
        self.log = []     # (time, image)
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                parts = self.path.strip("/").split("/")
                image = "/".join(parts[2:4])
                hub.log.append((time.time(), image, self.headers.get("User-Agent", "")))
                steps = hub.script.get(image, [(404, {}, {}, 0)])
                status, headers, body, delay = steps.pop(0) if len(steps) > 1 else steps[0]
                if delay:
                    time.sleep(delay)
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, str(v))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, image):
        return sum(1 for _, i, _ in self.log if i == image)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def ok(pulls_, stars=3):
    return (200, {}, {"pull_count": pulls_, "star_count": stars, "last_updated": "2025-11-01T00:00:00Z"}, 0)


def setup(h, images, **extra):
    redis = h.start_redis()
    seed = Seeder(h, redis, PREFIX)
    hold = start_hold(h, "hold-a")
    pulls(h, hold, 5)
    lines = []
    for i, img in enumerate(images):
        repo = f"r{i}"
        seed.manifest(ALICE, repo, digest(i), T0 + i, hold=hold_did(hold))
        pulls(h, hold, 1, repo=repo)
        lines.append(f"{ALICE}/{repo} = {img}")
    seed.complete(ALICE)
    mp = os.path.join(h.tmp, "hubmap.txt")
    with open(mp, "w") as f:
        f.write("# test mapping\n" + "\n".join(lines) + "\n")
    hub = FakeHub()
    av = start_appview(h, redis, APPVIEW_DOCKERHUB_URL=hub.url, APPVIEW_DOCKERHUB_MAP=mp,
                       **extra)
    return hub, av


def test_status_handling(h):
    images = ["lib/ok", "lib/gone", "lib/denied", "lib/flaky"]
    hub = FakeHub.__new__(FakeHub)
    hub, av = setup(h, images)
    try:
        hub.script["lib/ok"] = [ok(1000)]
        hub.script["lib/gone"] = [(404, {}, {"message": "not found"}, 0)]
        hub.script["lib/denied"] = [(401, {}, {"message": "auth"}, 0)]
        hub.script["lib/flaky"] = [(500, {}, {}, 0), (503, {}, {}, 0), ok(77)]
        for _ in range(2):
            for i in range(4):
                status, body, _ = get_stats(h, av, actor=ALICE, repository=f"r{i}")
                assert status == 200, body
                check_output("getStats", body)
                img = images[i]
                if img in ("lib/ok", "lib/flaky"):
                    assert body["dockerHub"]["image"] == img, body
                    assert body["totalPullCount"] == body["pullCount"] + body["dockerHub"]["pullCount"]
                else:
                    assert "dockerHub" not in body, body
            time.sleep(1.1)
        # 404 remembered for a day: asked once (by the refresh round at start-up or the first
        # getStats, which share one request); 401 never remembered: asked again each time;
        # flaky succeeded on its third attempt.
        assert hub.count("lib/gone") == 1, hub.log
        assert 2 <= hub.count("lib/denied") <= 3, hub.log
        # (ok answers are reused for the stats TTL, 1 s here: both were asked again once.)
        assert hub.count("lib/flaky") == hub.count("lib/ok") + 2, hub.log
        m = h.metrics(av.url)
        assert m["appview_dockerhub_denied_total"] == hub.count("lib/denied")
        assert m["appview_dockerhub_retries_total"] == 2
        assert m["appview_dockerhub_missing_total"] == 1
        assert all(ua.startswith("atcr-appview/") for _, _, ua in hub.log)
    finally:
        hub.close()
    assert av.stop() == 0


def test_park_and_single_flight(h):
    hub, av = setup(h, ["lib/busy", "lib/other"])
    try:
        t429 = []
        hub.script["lib/busy"] = [(429, {"Retry-After": 2, "X-RateLimit-Remaining": 0}, {}, 0),
                                  (429, {"Retry-After": 1}, {}, 0),
                                  (429, {"Retry-After": 1}, {}, 0), ok(500)]
        hub.script["lib/other"] = [ok(9, 0)]
        # The refresh round at start-up meets the 429s: three parks, never "missing".
        time.sleep(1.3)
        t429 = [t for t, i, _ in hub.log if i == "lib/busy"]
        assert len(t429) >= 1
        # Nothing is sent while parked, for any image.
        def wait_other():
            return hub.count("lib/other") >= 1
        deadline = time.time() + 10
        while time.time() < deadline and not wait_other():
            time.sleep(0.05)
        log = sorted(hub.log)
        busy = [i for i, (_, img, _) in enumerate(log) if img == "lib/busy"][:3]  # the 429s
        for k in busy:
            (ta, ia, _), (tb, ib, _) = log[k], log[k + 1]
            if tb - ta < 0.9:
                raise AssertionError(f"request {ib} sent {tb - ta:.2f}s after a 429: {log}")
        assert hub.count("lib/busy") == 4 and hub.count("lib/other") == 1, log
        status, body, _ = get_stats(h, av, actor=ALICE, repository="r0")
        assert status == 200 and body["dockerHub"]["pullCount"] == 500, body
        assert h.metrics(av.url)["appview_dockerhub_parked_total"] == 3

        # 100 concurrent getStats, after the cached answers expired: one request per image.
        hub.log.clear()
        results = []

        def one(i):
            results.append(get_stats(h, av, actor=ALICE, repository=f"r{i % 2}")[:2])
        time.sleep(1.1)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert all(s == 200 for s, _ in results)
        assert hub.count("lib/busy") <= 1 and hub.count("lib/other") <= 1, hub.log
    finally:
        hub.close()
    assert av.stop() == 0
