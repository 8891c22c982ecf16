"""bin/hold under load: exact totals with 64 concurrent clients, and no acknowledged increment
lost (nor any counted twice) across repeated SIGKILLs."""
import http.client
import json
import random
import signal
import threading
import time
import urllib.parse

from harness import free_port, wait_for

TOKEN = "load-token"
KEYS = [(f"did:plc:user{u}aaaaaaaaaaaaaaaaaa", f"user{u}/{name}")
        for u in range(4) for name in ("app", "db", "web/frontend")]
EVENTS = ("pull", "push")


def start_hold(h, db=None, port=None):
    port = port or free_port()
    db = db or f"{h.tmp}/hold.db"
    p = h.spawn("hold", [h.binary("hold")], sanitized=True,
                env={"HOLD_LISTEN": f"127.0.0.1:{port}", "HOLD_DB": db,
                     "HOLD_SERVICE_TOKENS": TOKEN})
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: h.get_json(base + "/xrpc/_health")[0] == 200, what="hold health")
    p.base, p.port, p.db = base, port, db
    return p


class Client:
    """One keep-alive connection; post() returns the parsed JSON or raises on any failure."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def post(self, body):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = json.dumps(body).encode()
        self.conn.request("POST", "/xrpc/io.atcr.hold.incrementStats", body=data,
                          headers={"Authorization": "Bearer " + TOKEN,
                                   "Content-Type": "application/json"})
        r = self.conn.getresponse()
        payload = r.read()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}: {payload[:200]!r}")
        return json.loads(payload)

    def close(self):
        if self.conn:
            self.conn.close()


def read_counts(h, base):
    out = {}
    for did, repo in KEYS:
        q = urllib.parse.urlencode({"did": did, "repository": repo})
        status, s = h.get_json(f"{base}/xrpc/io.atcr.hold.getStats?{q}")
        assert status == 200, s
        out[(did, repo, "pull")] = s["pullCount"]
        out[(did, repo, "push")] = s["pushCount"]
    return out


def make_events(rng, n):
    evs = []
    for _ in range(n):
        did, repo = rng.choice(KEYS)
        evs.append({"did": did, "repository": repo, "event": rng.choice(EVENTS),
                    "count": rng.choice((1, 1, 1, 2, 3))})
    return evs


def test_exact_under_concurrency(h):
    """64 clients, 200,000 events (single-event requests and batches of 100) over 12
    repositories: totals and per-day rows equal exactly what was sent."""
    hold = start_hold(h)
    threads, per_thread = 64, 3125  # 64 * 3125 = 200,000 events
    sent = [dict() for _ in range(threads)]
    errors = []

    def worker(i):
        rng = random.Random(i)
        c = Client(hold.port)
        left, singles = per_thread, 60
        try:
            while left:
                n = 1 if singles > 0 else min(100, left)
                evs = make_events(rng, n)
                body = evs[0] if n == 1 else {"events": evs}
                got = c.post(body)
                assert got["applied"] == sum(e["count"] for e in evs), got
                for e in evs:
                    k = (e["did"], e["repository"], e["event"])
                    sent[i][k] = sent[i].get(k, 0) + e["count"]
                left -= n
                singles -= 1
        except Exception as e:  # reported below; a failed request breaks exactness
            errors.append(repr(e))
        finally:
            c.close()

    t0 = time.time()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.time() - t0
    assert not errors, errors[:3]
    want = {}
    for d in sent:
        for k, v in d.items():
            want[k] = want.get(k, 0) + v
    got = read_counts(h, hold.base)
    assert got == {k: want.get(k, 0) for k in got}, (got, want)
    # Per-day rows (the last two days, in case the run straddled UTC midnight) add up too.
    for did, repo in KEYS:
        q = urllib.parse.urlencode({"did": did, "repository": repo, "days": 2})
        _, hist = h.get_json(f"{hold.base}/xrpc/io.atcr.hold.getStatsHistory?{q}")
        assert sum(d["pullCount"] for d in hist["days"]) == want.get((did, repo, "pull"), 0)
        assert sum(d["pushCount"] for d in hist["days"]) == want.get((did, repo, "push"), 0)
    m = h.metrics(hold.base)
    requests = threads * (60 + (per_thread - 60 + 99) // 100)
    assert m["hold_increment_requests_total"] == requests
    assert m["hold_increments_applied_total"] == sum(want.values())
    # Group commit grouped: with 64 clients at once, some requests arrived while a commit was
    # on disk and shared the next one. How many share one depends on how fast the hold answers
    # against how fast these Python clients ask (about 1.6 per commit on the optimised build,
    # more under the sanitizers); bench/hold.sh measures events per commit under real load.
    assert m["hold_commits_total"] < requests, (m["hold_commits_total"], requests)
    print(f"    {requests} requests, 200000 events in {elapsed:.1f}s, "
          f"{m['hold_commits_total']:.0f} commits")
    assert hold.stop() == 0


def test_sigkill_loses_no_acknowledged_increment(h):
    """Load running, SIGKILL at a random moment, restart, five times. Every acknowledged
    increment is in the database; nothing beyond what was sent (no double counting)."""
    hold = start_hold(h)
    rng = random.Random()
    acked, sent = {}, {}
    lock = threading.Lock()

    for rnd in range(5):
        stop = threading.Event()

        def worker(seed):
            r = random.Random(seed)
            c = Client(hold.port)
            try:
                while not stop.is_set():
                    evs = make_events(r, r.choice((1, 1, 1, 10, 50)))
                    with lock:
                        for e in evs:
                            k = (e["did"], e["repository"], e["event"])
                            sent[k] = sent.get(k, 0) + e["count"]
                    try:
                        c.post(evs[0] if len(evs) == 1 else {"events": evs})
                    except Exception:
                        return  # the hold died: this request's fate is unknown, never retried
                    with lock:
                        for e in evs:
                            k = (e["did"], e["repository"], e["event"])
                            acked[k] = acked.get(k, 0) + e["count"]
            finally:
                c.close()

        ts = [threading.Thread(target=worker, args=(rnd * 100 + i,)) for i in range(16)]
        for t in ts:
            t.start()
        time.sleep(rng.uniform(0.3, 1.2))
        hold.kill()
        stop.set()
        for t in ts:
            t.join()
        hold.start()
        wait_for(lambda: h.get_json(hold.base + "/xrpc/_health")[0] == 200, what="restart")
        got = read_counts(h, hold.base)
        for k, v in got.items():
            assert acked.get(k, 0) <= v <= sent.get(k, 0), (rnd, k, acked.get(k), v, sent.get(k))
    assert sum(acked.values()) > 1000, "the load barely ran"
    assert hold.stop() == 0


def test_sigterm_under_load_answers_then_exits(h):
    """SIGTERM during load: requests already received are committed and answered, exit 0."""
    hold = start_hold(h)
    acked, sent = {}, {}
    lock = threading.Lock()
    stop = threading.Event()

    def worker(seed):
        r = random.Random(seed)
        c = Client(hold.port)
        while not stop.is_set():
            evs = make_events(r, 5)
            with lock:
                for e in evs:
                    k = (e["did"], e["repository"], e["event"])
                    sent[k] = sent.get(k, 0) + e["count"]
            try:
                c.post({"events": evs})
            except Exception:
                break
            with lock:
                for e in evs:
                    k = (e["did"], e["repository"], e["event"])
                    acked[k] = acked.get(k, 0) + e["count"]
        c.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    time.sleep(0.7)
    hold.signal(signal.SIGTERM)
    assert hold.wait(20) == 0
    stop.set()
    for t in ts:
        t.join()
    hold.start()
    wait_for(lambda: h.get_json(hold.base + "/xrpc/_health")[0] == 200, what="restart")
    got = read_counts(h, hold.base)
    for k, v in got.items():
        assert acked.get(k, 0) <= v <= sent.get(k, 0), (k, acked.get(k), v, sent.get(k))
    assert sum(acked.values()) > 0
