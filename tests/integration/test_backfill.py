"""The backfill (issue 18): a fresh appview learns every ATCR repository of the network.

The network is real: the reference PDS and PLC directory of @atproto/dev-env (tests/lib/devnet.py)
with 60 accounts, 40 of them with ATCR records written as ATCR writes them (createRecord and
applyWrites, so the PDS gives manifests TID keys; tags name their manifest by at-uri; createdAt
out of record-key order), one with more than 1,000 manifests; 20 without. Only the relay is
stood in for: a local server implementing com.atproto.sync.listReposByCollection from that PDS
(com.atproto.sync.listRepos plus com.atproto.repo.describeRepo collections) with pages of 7, its
every request and answer checked against the published lexicon by @atproto/lexicon. Between the
appview and the PDS sit counting proxies on two ports (two PDS hosts as the appview sees them),
the PLC directory's documents pointing half of the DIDs at each; they inject the faults."""
import atexit
import bisect
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import devnet
import jetstream_live
from harness import free_port, wait_for
from test_hold import incr, start_hold
from test_ingest import assert_same_index, snapshot
from upstream import Server, reply

PREFIX = "atcr:"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INTEROP = os.path.join(ROOT, "tests", "interop")
LEXICONS = os.path.join(ROOT, "lexicons")
LIST = "/xrpc/com.atproto.repo.listRecords"
NSID = "com.atproto.sync.listReposByCollection"
MEDIA = "application/vnd.oci.image.manifest.v1+json"
T0_MS = 1735689600000  # 2025-01-01
WITH_RECORDS, WITHOUT = 40, 20
BIG = 1050  # manifests of the first account


def available():
    return devnet.available()


# ---- the network, built once per module ----

def iso(ms):
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % (ms % 1000)


class Network:
    def __init__(self, root):
        class Holder:
            tmp = os.path.join(root, "var", "test", "test_backfill_devnet")
            procs = []
        os.makedirs(Holder.tmp, exist_ok=True)
        self.dn = devnet.start(Holder(), name="devnet")
        rng = random.Random(18)
        # Every manifest gets its own createdAt, in an order unrelated to its record key.
        stamps = iter(rng.sample(range(1, 400 * 86400), BIG + 40 * 20))
        self.accounts = [self.dn.command("createAccount", handle=f"u{i:02d}.test")
                         for i in range(WITH_RECORDS + WITHOUT)]
        self.atcr = [a["did"] for a in self.accounts[:WITH_RECORDS]]
        for i, acc in enumerate(self.accounts[:WITH_RECORDS]):
            did = acc["did"]
            repos = ["app", "web", "tools"][:1 + i % 3]
            n = BIG if i == 0 else rng.randint(2, 12)
            manifests = [{"collection": "io.atcr.manifest", "record": {
                "$type": "io.atcr.manifest", "repository": repos[k % len(repos)],
                "digest": "sha256:%064x" % (i * 100000 + k), "mediaType": MEDIA,
                "schemaVersion": 2, "holdDid": "did:web:127.0.0.1%3A9",
                "createdAt": iso(T0_MS + next(stamps) * 1000 + rng.randint(0, 999))}}
                for k in range(n)]
            made = self.dn.command("createMany", repo=did, writes=manifests, timeout=120)["results"]
            tags = []
            for k, (w, res) in enumerate(zip(manifests, made)):
                if k % 3 == 0 and k < 30:  # a few tags per repository, by at-uri
                    repo = w["record"]["repository"]
                    tags.append({"collection": "io.atcr.tag", "rkey": f"{repo}_v{k}", "record": {
                        "$type": "io.atcr.tag", "repository": repo, "tag": f"v{k}",
                        "manifest": res["uri"], "createdAt": w["record"]["createdAt"]}})
            self.dn.command("createMany", repo=did, writes=tags, timeout=60)
        for acc in self.accounts[WITH_RECORDS:WITH_RECORDS + WITHOUT // 2]:
            # Records of other apps only: no relay lists these for io.atcr.*.
            self.dn.command("create", repo=acc["did"], collection="app.bsky.actor.profile",
                            rkey="self", record={"$type": "app.bsky.actor.profile",
                                                 "displayName": acc["handle"]})

    def atcr_dids(self):
        """The DIDs with ATCR records (a test may add one)."""
        return sorted(self.atcr)


_NET = {}


def network(h):
    if "net" not in _NET:
        _NET["net"] = Network(h.root)
        atexit.register(_NET["net"].dn.stop)
    return _NET["net"]


def fetch(url, timeout=20):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def pds_records(pds, did, collection):
    """Every record of a collection, as the PDS lists it."""
    out, cursor = [], None
    while True:
        q = {"repo": did, "collection": collection, "limit": 100}
        if cursor:
            q["cursor"] = cursor
        st, body = fetch(f"{pds}{LIST}?{urllib.parse.urlencode(q)}")
        assert st == 200, body
        page = json.loads(body)
        out += page["records"]
        cursor = page.get("cursor")
        if not cursor or len(page["records"]) < 100:
            return out


def truth(net):
    """What the PDS holds now: {did: {"manifests": {rkey: record}, "tags": {rkey: record}}}."""
    out = {}
    for acc in net.accounts:
        did = acc["did"]
        out[did] = {kind: {r["uri"].rsplit("/", 1)[1]: r["value"]
                           for r in pds_records(net.dn.pds, did, f"io.atcr.{kind[:-1]}")}
                    for kind in ("manifests", "tags")}
    return out


# ---- stand-ins and proxies ----

class Stopped:
    """Registered with the harness like a process, so h.close() closes it after the test."""

    def __init__(self, h, close=None):
        self.name, self.open = type(self).__name__, True
        if close:
            self.close = close
        h.procs.append(self)

    def alive(self):
        return self.open

    def signal(self, sig):
        self.open = False
        self.close()

    def wait(self, timeout=None):
        return 0

    def log(self):
        return ""


class Relay(Stopped):
    """listReposByCollection from the PDS, pages of PAGE DIDs, the last DID as the cursor."""
    PAGE = 7

    def __init__(self, h, net):
        super().__init__(h)
        self.net, self.samples, self.requests = net, [], []
        self.fail_after = None  # answer 503 once this many pages were served
        self.served = 0
        self.delay = 0.0
        self.garbage = 0  # the next answers that are not JSON
        self.loop_after = None  # (collection, cursor) answered with itself: a listing never ending
        self.bad_entries = []  # added to the first page
        self.lock = threading.Lock()
        self.refresh()
        self.server = Server(self._handle)
        self.url = self.server.url

    def refresh(self):
        """Reads the PDS again: listRepos, then each repository's collections."""
        index, cursor = {}, None
        while True:
            q = "?limit=100" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
            st, body = fetch(f"{self.net.dn.pds}/xrpc/com.atproto.sync.listRepos{q}")
            assert st == 200, body
            page = json.loads(body)
            for repo in page["repos"]:
                st, body = fetch(f"{self.net.dn.pds}/xrpc/com.atproto.repo.describeRepo?"
                                 + urllib.parse.urlencode({"repo": repo["did"]}))
                assert st == 200, body
                for c in json.loads(body)["collections"]:
                    index.setdefault(c, set()).add(repo["did"])
            cursor = page.get("cursor")
            if not cursor or not page["repos"]:
                break
        self.index = {c: sorted(d) for c, d in index.items()}

    def _handle(self, hd, path):
        u = urllib.parse.urlsplit(path)
        if u.path != f"/xrpc/{NSID}":
            return reply(hd, 501, '{"error":"MethodNotImplemented"}')
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        params = {"collection": q.get("collection", [])}
        try:
            if "limit" in q:
                params["limit"] = int(q["limit"][0])
        except ValueError:
            return reply(hd, 400, '{"error":"InvalidRequest","message":"limit"}')
        if "cursor" in q:
            params["cursor"] = q["cursor"][0]
        with self.lock:
            down = self.fail_after is not None and self.served >= self.fail_after
            self.samples.append({"nsid": NSID, "params": params})
            self.requests.append((time.time(), tuple(params["collection"]), params.get("cursor"),
                                  503 if down else 200))
            self.served += not down
        if down:
            return reply(hd, 503, '{"error":"ServiceUnavailable","message":"relay restarting"}')
        time.sleep(self.delay)
        with self.lock:
            garbage, self.garbage = self.garbage > 0, max(self.garbage - 1, 0)
        if garbage:
            return reply(hd, 200, '{"repos": [{"did": tru')
        limit = params.get("limit", 500)
        if not 1 <= limit <= 2000:
            return reply(hd, 400, '{"error":"InvalidRequest","message":"limit out of range"}')
        names = params["collection"] or list(self.index)
        dids = sorted(set().union(*(self.index.get(c, []) for c in names)))
        start = bisect.bisect_right(dids, params["cursor"]) if "cursor" in params else 0
        page = dids[start:start + min(limit, self.PAGE)]
        out = {"repos": [{"did": d} for d in page]}
        if start + len(page) < len(dids):
            out["cursor"] = page[-1]
        if self.loop_after == (tuple(params["collection"]), params.get("cursor")):
            out["cursor"] = params["cursor"]
        if self.bad_entries and start == 0:
            out["repos"] = self.bad_entries + out["repos"]
        else:
            with self.lock:
                self.samples.append({"nsid": NSID, "output": out})
        reply(hd, 200, json.dumps(out))

    def check_lexicon(self, h):
        """Every request the relay took and every answer it gave, per @atproto/lexicon."""
        path = os.path.join(h.tmp, "relay-samples.json")
        with self.lock, open(path, "w") as f:
            json.dump(self.samples, f)
        out = subprocess.run(["node", os.path.join(INTEROP, "validate-lexicons.js"), LEXICONS,
                              path], capture_output=True, text=True, timeout=60, cwd=INTEROP)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        bad = [(s, r) for s, r in zip(self.samples, res["results"]) if not r["ok"]]
        assert res["errors"] == [] and not bad and len(res["results"]) == len(self.samples), bad[:3]
        assert any("output" in s for s in self.samples)

    def close(self):
        self.server.close()


def resp(port, *args):
    """One command to Valkey over RESP (the proxies ask while they answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"*{len(args)}\r\n".encode() +
                  b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args))
        data = b""
        while not data.endswith(b"\r\n"):
            data += s.recv(4096)
        return data.decode().strip()


class Upstreams(Stopped):
    """The PLC directory behind a proxy that points each DID document at one of two PDS proxies
    (hosts 0 and 1, DIDs alternating in sorted order); the PDS proxies forward to the real PDS,
    log every request, count each listing's last page per (DID, collection) and inject faults."""

    def __init__(self, h, net, redis=None, delay=0.0):
        super().__init__(h)
        self.net, self.redis, self.delay = net, redis, delay
        self.lock = threading.Lock()
        self.log = []  # (time, host, did, method, status)
        self.last_pages = {}  # (did, collection) -> listings served to their end
        self.after_done = []  # listRecords of a DID already marked done
        self.fail_dids = set()  # listRecords answers 500
        self.rate_limit = {}  # host -> seconds of reset for its next listRecords
        self.parked = []  # (host, from, until) of the 429s given
        self.hold, self.held, self.release = set(), threading.Event(), threading.Event()
        self.no_pds = set()  # their DID documents name no PDS
        self.holds = {}  # DID -> URL: a hold's document, naming only its #atcr_hold service
        self.plc_log = []  # times of the PLC requests
        self.plc_rate_limit = None  # seconds of Retry-After for the next PLC request's 429
        self.plc_parked = []  # times of the PLC's 429s
        self.release.set()
        dids = sorted(a["did"] for a in net.accounts)
        self.host_of = {did: i % 2 for i, did in enumerate(dids)}
        self.hosts = [Server(lambda hd, p, k=k: self._pds(k, hd, p)) for k in (0, 1)]
        self.plc = Server(self._plc)

    def _plc(self, hd, path):
        did = urllib.parse.unquote(path.lstrip("/"))
        with self.lock:
            self.plc_log.append(time.time())
            wait, self.plc_rate_limit = self.plc_rate_limit, None
            if wait:
                self.plc_parked.append(time.time())
        if wait:
            return reply(hd, 429, '{"error":"RateLimitExceeded","message":"Rate Limit Exceeded"}',
                         {"Retry-After": str(wait)})
        if did in self.holds:
            return reply(hd, 200, json.dumps({
                "@context": ["https://www.w3.org/ns/did/v1"], "id": did, "alsoKnownAs": [],
                "verificationMethod": [],
                "service": [{"id": "#atcr_hold", "type": "AtcrHoldService",
                             "serviceEndpoint": self.holds[did]}]}))
        st, body = fetch(self.net.dn.plc + path)
        if did in self.no_pds:
            doc = json.loads(body)
            doc["service"] = []
            return reply(hd, st, json.dumps(doc))
        target = self.hosts[self.host_of.get(did, 0)].url
        reply(hd, st, body.replace(self.net.dn.pds.encode(), target.encode()))

    def _pds(self, host, hd, path):
        u = urllib.parse.urlsplit(path)
        q = urllib.parse.parse_qs(u.query)
        did, method = (q.get("repo") or q.get("did") or [""])[0], u.path
        status = self._answer(host, hd, path, did, method, q)
        with self.lock:
            self.log.append((time.time(), host, did, method, status))

    def _answer(self, host, hd, path, did, method, q):
        if method == LIST and self.redis and \
                resp(self.redis.port, "SISMEMBER", PREFIX + "backfill{bf}:done", did) == ":1":
            with self.lock:
                self.after_done.append(did)
        with self.lock:
            reset = self.rate_limit.pop(host, None) if method == LIST else None
        if reset:
            until = int(time.time()) + reset
            with self.lock:
                self.parked.append((host, time.time(), until))
            reply(hd, 429, '{"error":"RateLimitExceeded","message":"Rate Limit Exceeded"}',
                  {"RateLimit-Limit": "3000", "RateLimit-Remaining": "0",
                   "RateLimit-Reset": str(until), "RateLimit-Policy": "3000;w=300"})
            return 429
        if method == LIST and did in self.fail_dids:
            reply(hd, 500, '{"error":"InternalServerError","message":"Internal Server Error"}')
            return 500
        if self.delay and method == LIST:
            time.sleep(self.delay)
        st, body = fetch(self.net.dn.pds + path)
        if method == LIST and did in self.hold:
            self.held.set()  # answered by the PDS; delivered once released
            self.release.wait(60)
        if method == LIST and st == 200:
            page = json.loads(body)
            limit = int(q.get("limit", ["50"])[0])
            if not page.get("cursor") or len(page["records"]) < limit:
                key = (did, q["collection"][0])
                with self.lock:
                    self.last_pages[key] = self.last_pages.get(key, 0) + 1
        reply(hd, st, body)
        return st

    def close(self):
        self.release.set()
        for s in self.hosts + [self.plc]:
            s.close()

    def count(self, method=LIST, host=None, since=0.0, until=float("inf")):
        with self.lock:
            return sum(1 for t, k, _, m, _ in self.log
                       if m == method and (host is None or k == host) and since <= t < until)



# ---- the appview ----

def appview_env(h, redis, net, ups, extra=None):
    env = {"APPVIEW_VALKEY_URL": redis.url, "APPVIEW_PLC_URL": ups.plc.url,
           "APPVIEW_HANDLE_RESOLVER_URL": net.dn.pds, "APPVIEW_ALLOW_PRIVATE_NETWORKS": "1",
           "APPVIEW_LEXICON_DIR": LEXICONS, "APPVIEW_KEY_PREFIX": PREFIX,
           "APPVIEW_DATA_DIR": os.path.join(h.tmp, "appview-data"),
           "APPVIEW_INGEST_LEASE_SECONDS": "1", "APPVIEW_BACKFILL_CONCURRENCY": "4",
           "APPVIEW_BACKFILL_PER_HOST": "2", "APPVIEW_UPSTREAM_TIMEOUT_MS": "5000"}
    env.update(extra or {})
    return env


def backfill_command(h, redis, net, ups, relay, args=(), env=None, name="backfill", wait=True):
    """`appview backfill --relay URL` (the sanitized build); with wait, its exit status."""
    p = h.spawn(name, [h.binary("appview"), "backfill", "--relay", relay.url, *args],
                env=appview_env(h, redis, net, ups, env), sanitized=True)
    return p.wait(180) if wait else p


def start_service(h, redis, net, ups, env=None, name="appview"):
    for attempt in range(3):  # a free port may be taken before the appview binds it
        port = free_port()
        full = appview_env(h, redis, net, ups, {"APPVIEW_LISTEN": f"127.0.0.1:{port}",
                                                "APPVIEW_INGEST": "off"})
        full.update(env or {})
        p = h.spawn(name if not attempt else f"{name}-{attempt}", [h.binary("appview")],
                    env=full, sanitized=True)
        p.base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: not p.alive() or h.http("GET", p.base + "/xrpc/_health")[0] == 200,
                     timeout=20, what="appview and Valkey")
        except AssertionError:
            if "binding" not in p.log():
                raise
        if p.alive() and h.http("GET", p.base + "/xrpc/_health")[0] == 200:
            return p
        p.stop()
    raise AssertionError(f"{name} did not start: {p.log()[-2000:]}")


def xrpc(h, app, method, **params):
    q = urllib.parse.urlencode(params)
    return h.get_json(f"{app.base}/xrpc/io.atcr.repo.{method}?{q}", timeout=30)


def count(h, redis, *args):
    """An integer reply (HLEN, SCARD, EXISTS)."""
    return int(h.redis_raw(redis, *args).strip())


def state(h, redis):
    raw = h.redis_raw(redis, "HGETALL", PREFIX + "backfill{bf}").split("\n")
    return dict(zip(raw[0::2], raw[1::2]))


def wait_finished(h, redis, timeout=120):
    wait_for(lambda: state(h, redis).get("state") == "finished", timeout=timeout, interval=0.2,
             what="the backfill pass to finish")
    return state(h, redis)


# ---- what a user checks ----

def check_every_read(h, app, net, want):
    """Every read method answers for every account as the PDS says; for the accounts the
    backfill loaded, from Valkey alone (no listing); the others (the relay lists none of their
    records) answer empty, through the loader."""
    before = h.metrics(app.base)
    loaded = set(net.atcr_dids())
    accounts = sorted(net.accounts, key=lambda a: a["did"] not in loaded)
    for i, acc in enumerate(accounts):
        did, handle = acc["did"], acc["handle"]
        if did not in loaded and i and accounts[i - 1]["did"] in loaded:
            after = h.metrics(app.base)
            for key in ('appview_upstream_requests_total{method="listRecords"}',
                        "appview_loader_runs_total"):
                assert after.get(key, 0) == before.get(key, 0), f"a read went upstream: {key}"
        t = want[did]
        repos = {}
        for rec in t["manifests"].values():
            repos.setdefault(rec["repository"], {"manifests": 0, "tags": {}})["manifests"] += 1
        for rec in t["tags"].values():
            target = t["manifests"][rec["manifest"].rsplit("/", 1)[1]]
            repos[rec["repository"]]["tags"][rec["tag"]] = target["digest"]
        st, body = xrpc(h, app, "listRepositories", actor=handle, limit=100)
        assert st == 200 and body["did"] == did, (handle, body)
        got = {r["name"]: (r["manifestCount"], r["tagCount"]) for r in body["repositories"]}
        assert got == {r: (v["manifests"], len(v["tags"])) for r, v in repos.items()}, (handle, got)
        for repo, v in repos.items():
            st, body = xrpc(h, app, "listTags", actor=did, repository=repo, limit=100)
            if not v["tags"]:
                assert st == 404 and body["error"] == "NotFound", body
            else:
                assert st == 200, body
                assert {x["tag"]: x["digest"] for x in body["tags"]} == v["tags"], (handle, body)
            digest = next(r["digest"] for r in t["manifests"].values() if r["repository"] == repo)
            refs = [digest]
            if v["tags"]:
                tag, digest = next(iter(v["tags"].items()))
                refs = [tag, digest]
            for ref in refs:
                st, body = xrpc(h, app, "getManifest", actor=handle, repository=repo,
                                reference=ref)
                assert st == 200 and body["digest"] == digest, (handle, repo, ref, body)
            if i % 8:
                continue  # stats ask the holds (here a closed port, three tries): a sample
            st, body = xrpc(h, app, "getStats", actor=did, repository=repo)
            assert st == 200 and body["repository"] == repo, body
            st, body = xrpc(h, app, "getStatsHistory", actor=did, repository=repo, days=7)
            assert st == 200 and "days" in body, body


def check_recent(h, app, want):
    """listRecent, page by page, is every manifest of the network, newest createdAt first."""
    expect = sorted(((rec["createdAt"], did, rec["repository"], rec["digest"])
                     for did, t in want.items() for rec in t["manifests"].values()),
                    reverse=True)
    got, cursor = [], None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        st, body = xrpc(h, app, "listRecent", **params)
        assert st == 200, body
        got += [(m["createdAt"], m["did"], m["repository"], m["digest"])
                for m in body["manifests"]]
        cursor = body.get("cursor")
        if not cursor or not body["manifests"]:
            break
    assert len(got) == len(expect) and got == expect, (len(got), len(expect),
                                                       [g for g in got if g not in expect][:3])


# ---- the tests ----


def test_backfill_command_loads_the_whole_network(h):
    net = network(h)
    want = truth(net)
    relay, ups = Relay(h, net), Upstreams(h, net)
    redis = h.start_redis()
    assert backfill_command(h, redis, net, ups, relay) == 0, h.tail_logs()
    st = state(h, redis)
    assert st["state"] == "finished" and st["found"] == st["done"] == str(WITH_RECORDS), st
    assert int(st["records"]) == sum(len(t["manifests"]) + len(t["tags"])
                                     for t in want.values()), st
    assert count(h, redis, "HLEN", PREFIX + "backfill{bf}:failed") == 0
    # Paging: the relay's pages of 7 were all asked for, each collection to its end.
    pages = {c: [r for r in relay.requests if r[1] == (c,)]
             for c in ("io.atcr.manifest", "io.atcr.tag")}
    assert len(pages["io.atcr.manifest"]) == -(-WITH_RECORDS // Relay.PAGE), pages
    # Each DID listed once, both collections to their last page, from the host it lives on.
    for did in net.atcr_dids():
        assert ups.last_pages.get((did, "io.atcr.manifest")) == 1, did
        assert ups.last_pages.get((did, "io.atcr.tag")) == 1, did
    assert ups.count(host=0) and ups.count(host=1)
    big = net.accounts[0]["did"]
    assert sum(1 for _, _, d, m, _ in ups.log if d == big and m == LIST) >= BIG // 100 + 2

    app = start_service(h, redis, net, ups)
    check_every_read(h, app, net, want)
    check_recent(h, app, want)
    st, body = h.get_json(app.base + "/xrpc/_health")
    assert body["backfill"]["mode"] == "off", body
    relay.check_lexicon(h)


def test_backfill_on_a_valkey_cluster(h):
    """The same pass into a 3-primary cluster: the pass's keys share a slot (one script call
    changes them together), each DID's keys land on its own, and the reads answer from them."""
    net = network(h)
    want = truth(net)
    relay, ups = Relay(h, net), Upstreams(h, net)
    cluster = h.start_redis_cluster()
    env = {"APPVIEW_VALKEY_CLUSTER": cluster.seeds}
    nowhere = SimpleNamespace(url="redis://127.0.0.1:1/0")  # the seeds replace the URL
    assert backfill_command(h, nowhere, net, ups, relay, env=env) == 0, h.tail_logs()
    scratch = h.start_redis(name="scratch")
    cluster.copy_to(scratch)
    st = state(h, scratch)
    assert st["state"] == "finished" and st["found"] == st["done"] == str(WITH_RECORDS), st
    by_node = cluster.keys_by_node(PREFIX + "{*}/recs")
    assert len(by_node) == 3 and all(by_node.values()), {p: len(k) for p, k in by_node.items()}

    app = start_service(h, nowhere, net, ups, env=env)
    check_every_read(h, app, net, want)
    check_recent(h, app, want)


def test_sigkill_at_random_moments_loads_each_did_once(h):
    net = network(h)
    want = truth(net)
    redis = h.start_redis()
    relay, ups = Relay(h, net), Upstreams(h, net, redis=redis, delay=0.04)
    relay.delay = 0.15  # so that kills come while DIDs are being listed too
    env = {"APPVIEW_BACKFILL": "auto", "APPVIEW_RELAY_URL": relay.url,
           "APPVIEW_BACKFILL_PER_HOST": "1", "APPVIEW_BACKFILL_CONCURRENCY": "3"}
    rng = random.Random()
    kills, mid_pass = 0, 0
    for k in range(5):
        app = start_service(h, redis, net, ups, env=env, name=f"appview{k}")
        before = int(state(h, redis).get("done", 0))
        # A few more DIDs done, then a random moment: mid-listing, mid-write, anywhere.
        wait_for(lambda: int(state(h, redis).get("done", 0)) >= before + 3 or
                 state(h, redis).get("state") == "finished", timeout=60, interval=0.05,
                 what="progress")
        time.sleep(rng.uniform(0, 0.4))
        s = state(h, redis)
        if s.get("state") == "finished":
            break
        app.kill()
        kills += 1
        mid_pass += int(s.get("done", 0)) < WITH_RECORDS
    app = start_service(h, redis, net, ups, env=env, name="appview-last")
    st = wait_finished(h, redis)
    assert kills >= 3 and mid_pass >= 3, (kills, mid_pass)
    # The relay was asked each page once, or again by a run killed before saving it.
    pages = [r for r in relay.requests if r[1] == ("io.atcr.manifest",)]
    assert len(pages) <= -(-WITH_RECORDS // Relay.PAGE) + kills, pages
    assert st["found"] == st["done"] == str(WITH_RECORDS), st
    assert count(h, redis, "HLEN", PREFIX + "backfill{bf}:failed") == 0
    assert count(h, redis, "SCARD", PREFIX + "backfill{bf}:todo") == 0
    # No DID was listed after it was marked done; none was skipped; a DID listed twice was
    # one in progress when a kill came (at most the concurrency per kill).
    assert ups.after_done == [], ups.after_done
    extra = 0
    for did in net.atcr_dids():
        n = ups.last_pages.get((did, "io.atcr.manifest"), 0)
        assert n >= 1, f"{did} never listed to its end"
        extra += n - 1
    assert extra <= kills * 3, (extra, kills)
    check_recent(h, app, want)
    st, body = h.get_json(app.base + "/xrpc/_health")
    assert body["backfill"]["mode"] == "auto" and body["backfill"]["state"] == "finished", body
    relay.check_lexicon(h)


def test_firehose_events_during_the_backfill_win(h):
    """A listing answered before a write and delivered after its firehose event was folded: the
    event wins, and the index equals a cold fold of what the PDS holds."""
    net = network(h)
    fh = net.dn.command("createAccount", handle=f"fh{int(time.time()) % 100000}.test")
    did = fh["did"]
    mk = [{"collection": "io.atcr.manifest", "record": {
        "$type": "io.atcr.manifest", "repository": "live", "digest": "sha256:%064x" % (900 + k),
        "mediaType": MEDIA, "schemaVersion": 2, "createdAt": iso(T0_MS + k * 3600000)}}
        for k in range(3)]
    m = [r["uri"] for r in net.dn.command("createMany", repo=did, writes=mk)["results"]]

    def tag(name, uri, k):
        return {"$type": "io.atcr.tag", "repository": "live", "tag": name, "manifest": uri,
                "createdAt": iso(T0_MS + k * 3600000 + 1)}
    net.dn.command("createMany", repo=did, writes=[
        {"collection": "io.atcr.tag", "rkey": "live_latest", "record": tag("latest", m[0], 0)},
        {"collection": "io.atcr.tag", "rkey": "live_old", "record": tag("old", m[1], 1)}])
    net.accounts.append(fh)
    net.atcr.append(did)
    relay = Relay(h, net)
    redis = h.start_redis()
    ups = Upstreams(h, net)
    ups.hold, ups.release = {did}, threading.Event()
    js = jetstream_live.Server()
    Stopped(h, js.close)
    t_us = [int(time.time() * 1e6)]

    def event(op, collection, rkey, res, record=None):
        t_us[0] += 1000
        c = {"rev": res["rev"], "operation": op, "collection": collection, "rkey": rkey}
        if record is not None:
            c.update(record=record, cid=res["cid"])
        js.push({"did": did, "time_us": t_us[0], "kind": "commit", "commit": c})

    app = start_service(h, redis, net, ups, env={
        "APPVIEW_INGEST": "on", "APPVIEW_JETSTREAM_URLS": js.url, "APPVIEW_BACKFILL": "auto",
        "APPVIEW_RELAY_URL": relay.url})
    assert ups.held.wait(60), "the backfill never listed the account"
    # The PDS answered the listing; before it arrives, the account writes, and the firehose
    # brings the writes to the appview.
    latest = tag("latest", m[2], 5)
    res = net.dn.command("put", repo=did, collection="io.atcr.tag", rkey="live_latest",
                         record=latest)
    event("update", "io.atcr.tag", "live_latest", res, latest)
    mrkey = m[1].rsplit("/", 1)[1]
    res = net.dn.command("delete", repo=did, collection="io.atcr.manifest", rkey=mrkey)
    event("delete", "io.atcr.manifest", mrkey, res)
    newm = dict(mk[0]["record"], digest="sha256:%064x" % 999, createdAt=iso(T0_MS + 90000000))
    res = net.dn.command("create", repo=did, collection="io.atcr.manifest", record=newm)
    event("create", "io.atcr.manifest", res["uri"].rsplit("/", 1)[1], res, newm)
    wait_for(lambda: int(h.redis(redis, "GET", PREFIX + "cursor:v1") or 0) >= t_us[0],
             timeout=30, what="the events folded")
    ups.release.set()
    wait_finished(h, redis)

    st, body = xrpc(h, app, "listTags", actor=did, repository="live")
    assert st == 200 and {t["tag"]: t.get("digest") for t in body["tags"]} == {
        "latest": mk[2]["record"]["digest"], "old": None}, body
    st, body = xrpc(h, app, "listRepositories", actor=did)
    assert st == 200 and body["repositories"][0]["manifestCount"] == 3, body

    # The same network folded cold, from the PDS as it is now: the same index.
    cold = h.start_redis(name="redis-cold")
    assert backfill_command(h, cold, net, Upstreams(h, net), relay, name="cold") == 0
    assert_same_index(snapshot(h, redis), snapshot(h, cold))


def test_relay_down_then_back_resumes_from_its_cursor(h):
    net = network(h)
    relay, ups = Relay(h, net), Upstreams(h, net)
    redis = h.start_redis()
    dids = net.atcr_dids()
    # Two pages, then the relay is down; killed meanwhile, and started again while it is.
    relay.fail_after = 2
    p = backfill_command(h, redis, net, ups, relay, wait=False, name="backfill1")
    wait_for(lambda: any(r[3] == 503 for r in relay.requests), timeout=30,
             what="the relay down")
    saved = state(h, redis).get("cursor:io.atcr.manifest")
    assert saved == dids[2 * Relay.PAGE - 1], (saved, relay.requests)
    p.kill()
    n = len(relay.requests)
    p = backfill_command(h, redis, net, ups, relay, wait=False, name="backfill2")
    wait_for(lambda: len(relay.requests) >= n + 2, timeout=30, what="the relay asked again")
    relay.fail_after = None
    assert p.wait(120) == 0, h.tail_logs()
    # The second run asked from the saved cursor, while the relay was down and after.
    after = [r for r in relay.requests[n:] if r[1] == ("io.atcr.manifest",)]
    assert after[0][2] == saved and after[1][2] == saved, after
    assert all(r[2] and r[2] >= saved for r in after), after
    st = state(h, redis)
    assert st["found"] == st["done"] == str(len(dids)), st
    relay.check_lexicon(h)


def test_a_pds_failing_for_one_did_fails_it_and_the_others_complete(h):
    net = network(h)
    relay, ups = Relay(h, net), Upstreams(h, net)
    redis = h.start_redis()
    dids = net.atcr_dids()
    bad = dids[5]
    ups.fail_dids = {bad}
    p = backfill_command(h, redis, net, ups, relay, wait=False)
    assert p.wait(180) == 1, p.log()[-3000:]
    assert f"  {bad}: listRecords: HTTP 500" in p.log(), p.log()[-2000:]
    st = state(h, redis)
    assert st["done"] == str(len(dids) - 1) and st["state"] == "finished", st
    failed = h.redis(redis, "HGET", PREFIX + "backfill{bf}:failed", bad).split(" ", 2)
    assert failed[0] == "3" and "HTTP 500" in failed[2], failed
    # Three attempts, each the HTTP client's three tries of at most two listings.
    tries = sum(1 for _, _, d, m, _ in ups.log if d == bad and m == LIST)
    assert 3 <= tries <= 3 * 3 * 2, tries
    # Once the PDS is well, the next run retries that DID only.
    ups.fail_dids = set()
    n = len(ups.log)
    assert backfill_command(h, redis, net, ups, relay, name="retry") == 0
    assert {d for _, _, d, m, _ in ups.log[n:] if m == LIST} == {bad}
    st = state(h, redis)
    assert st["done"] == str(len(dids)) and st["retries"] == "1", st
    assert count(h, redis, "EXISTS", f"{PREFIX}{{{bad}}}/complete") == 1


def test_a_restart_goes_on_counting_a_dids_failed_attempts(h):
    """A DID's failed attempts are written as they happen: a restart does not give it three
    more, so a PDS failing for one DID cannot hold a pass that restarts open forever."""
    net = network(h)
    relay, ups = Relay(h, net), Upstreams(h, net)
    redis = h.start_redis()
    bad = net.atcr_dids()[5]
    ups.fail_dids = {bad}
    tries_key = PREFIX + "backfill{bf}:tries"
    p = backfill_command(h, redis, net, ups, relay, wait=False)
    wait_for(lambda: h.redis(redis, "HGET", tries_key, bad).startswith("1 "), timeout=60,
             what="its first failed attempt written")
    p.kill()
    noted = h.redis(redis, "HGET", tries_key, bad).split(" ", 2)
    before = int(noted[0])
    assert before in (1, 2) and "HTTP 500" in noted[2], noted
    p = backfill_command(h, redis, net, ups, relay, wait=False, name="backfill2")
    assert p.wait(180) == 1, p.log()[-3000:]
    again = [int(n) for n in re.findall(re.escape(bad) + r": .*\(attempt (\d) of 3; trying again\)",
                                          p.log())]
    # The second run made the attempts left, numbered on from the first run's.
    assert again == list(range(before + 1, 3)), (before, again)
    failed = h.redis(redis, "HGET", PREFIX + "backfill{bf}:failed", bad).split(" ", 2)
    assert failed[0] == "3" and "HTTP 500" in failed[2], failed
    assert count(h, redis, "HLEN", tries_key) == 0
    st = state(h, redis)
    assert st["done"] == str(len(net.atcr_dids()) - 1) and st["state"] == "finished", st


def test_a_429_parks_its_host_while_the_other_goes_on(h):
    net = network(h)
    relay, ups = Relay(h, net), Upstreams(h, net, delay=0.02)
    redis = h.start_redis()
    ups.rate_limit = {0: 3}
    assert backfill_command(h, redis, net, ups, relay,
                            env={"APPVIEW_BACKFILL_PER_HOST": "1"}) == 0, h.tail_logs()
    assert len(ups.parked) == 1, ups.parked
    _, t429, until = ups.parked[0]
    # Host 0 was asked nothing until its reset (whole seconds, so a second of slack; and
    # what was in flight with the 429), host 1 went on meanwhile.
    during = [x for x in ups.log if t429 + 0.3 < x[0] < until - 1]
    assert not [x for x in during if x[1] == 0], during
    assert [x for x in during if x[1] == 1 and x[3] == LIST]
    st = state(h, redis)
    assert st["found"] == st["done"] == str(len(net.atcr_dids())), st
    assert count(h, redis, "HLEN", PREFIX + "backfill{bf}:failed") == 0


def test_a_plc_429_parks_resolving_and_the_pass_completes(h):
    """The PLC directory answering 429 (the public one limits each client) parks every
    resolution for the wait it names, rather than failing DID after DID against it: after its
    one 429 it is asked nothing until the Retry-After is over, and the pass completes with no
    DID failed or retried."""
    net = network(h)
    relay, ups = Relay(h, net), Upstreams(h, net)
    redis = h.start_redis()
    ups.plc_rate_limit = 2
    p = backfill_command(h, redis, net, ups, relay, wait=False)
    assert p.wait(180) == 0, h.tail_logs()
    assert len(ups.plc_parked) == 1, ups.plc_parked
    t429 = ups.plc_parked[0]
    # What was in flight with the 429 is answered; nothing new is asked until its end.
    during = [t for t in ups.plc_log if t429 + 0.3 < t < t429 + 2 - 0.3]
    assert not during, [round(t - t429, 2) for t in during]
    assert [t for t in ups.plc_log if t >= t429 + 2 - 0.3], "resolving went on after the wait"
    st = state(h, redis)
    assert st["found"] == st["done"] == str(len(net.atcr_dids())), st
    assert count(h, redis, "HLEN", PREFIX + "backfill{bf}:failed") == 0
    assert "resolving parked for" in p.log()


def test_bad_input_is_bounded_counted_and_reported(h):
    """A relay answering garbage, then a cursor that loops and entries that are no DID; a DID
    whose document names no PDS: each counted, the DID reported failed, the rest loaded."""
    net = network(h)
    dids = net.atcr_dids()
    relay, ups = Relay(h, net), Upstreams(h, net)
    relay.garbage = 1
    relay.loop_after = (("io.atcr.tag",), relay.index["io.atcr.tag"][Relay.PAGE - 1])
    relay.bad_entries = [{"did": "not a did"}, {"handle": "alice.test"}]
    ups.no_pds = {dids[3]}
    redis = h.start_redis()
    app = start_service(h, redis, net, ups, env={"APPVIEW_BACKFILL": "once",
                                                 "APPVIEW_RELAY_URL": relay.url})
    st = wait_finished(h, redis)
    assert st["found"] == str(len(dids)) and st["done"] == str(len(dids) - 1), st
    failed = h.redis(redis, "HGET", PREFIX + "backfill{bf}:failed", dids[3])
    assert failed.startswith("0 ") and failed.endswith("the DID document names no PDS"), failed
    m = h.metrics(app.base)
    assert m["appview_backfill_invalid_dids_total"] == 6, m  # three collections' first pages
    assert m["appview_backfill_source_errors_total"] == 2, m  # the garbage, the loop
    assert m["appview_backfill_dids_failed_total"] == 1, m
    assert m["appview_backfill_dids_loaded_total"] == len(dids) - 1, m
    assert "answered the cursor it was sent" in app.log()
    # The looping listing ended at the loop: the tag pages after it were never asked for.
    tags = [r for r in relay.requests if r[1] == ("io.atcr.tag",) and r[3] == 200]
    assert [r[2] for r in tags].count(relay.loop_after[1]) == 1, tags
    st, body = h.get_json(app.base + "/xrpc/_health")
    assert body["backfill"]["state"].startswith("finished with failed DIDs"), body


def test_a_hold_listed_under_its_stats_is_loaded_from_its_service(h):
    """A hold (bin/hold, its DID's document naming only #atcr_hold) is what the relay lists
    under io.atcr.hold.stats: the backfill lists its stats records from the hold and folds
    them as the firehose does, so each user's repository knows the hold serves it and its
    last known counts."""
    net = network(h)
    dids = net.atcr_dids()
    hold_did = "did:plc:holdbackfillhhhhhhhhhhhh"
    hold = start_hold(h, HOLD_DID=hold_did)
    assert incr(h, hold.base, {"events": [
        {"did": dids[0], "repository": "app", "event": "pull", "count": 3},
        {"did": dids[0], "repository": "app", "event": "push", "count": 1},
        {"did": dids[1], "repository": "web", "event": "pull", "count": 2}]})[0] == 200
    relay, ups = Relay(h, net), Upstreams(h, net)
    relay.index["io.atcr.hold.stats"] = [hold_did]
    ups.holds[hold_did] = hold.base
    redis = h.start_redis()
    assert backfill_command(h, redis, net, ups, relay) == 0, h.tail_logs()
    st = state(h, redis)
    assert st["found"] == st["done"] == str(len(dids) + 1), st
    for did, repo, counts in ((dids[0], "app", "3 1"), (dids[1], "web", "2 0")):
        base = f"{PREFIX}{{{did}}}/repo/{repo}/"
        assert h.redis_raw(redis, "SMEMBERS", base + "holds").split() == [hold_did], base
        assert h.redis_raw(redis, "HGET", base + "holdstats", hold_did).startswith(counts + " ")
    assert [r for r in relay.requests if r[1] == ("io.atcr.hold.stats",)]
    assert hold.stop() == 0


def test_auto_backfills_after_the_ingester_drops_an_old_layout(h):
    """An index of schema 3 under the prefix: the backfill waits while the ingester drops it,
    then runs the pass the ingester asks for, and listRecent holds the network's history."""
    net = network(h)
    want = truth(net)
    relay, ups = Relay(h, net), Upstreams(h, net)
    redis = h.start_redis()
    old = "did:plc:oldoooooooooooooooooooooo"
    h.redis(redis, "SET", PREFIX + "schema", "3")
    h.redis(redis, "ZADD", PREFIX + "recent", 1, f"{old} app sha256:aa")
    h.redis(redis, "HSET", PREFIX + "backfill{bf}", "pass", "1-old", "state", "finished", "source",
            relay.url)
    js = jetstream_live.Server()
    Stopped(h, js.close)
    app = start_service(h, redis, net, ups, env={
        "APPVIEW_INGEST": "on", "APPVIEW_JETSTREAM_URLS": js.url, "APPVIEW_BACKFILL": "auto",
        "APPVIEW_RELAY_URL": relay.url})
    st = wait_finished(h, redis)
    assert st["reason"] == "schema change" and st["pass"] != "1-old", st
    assert st["found"] == st["done"] == str(len(net.atcr_dids())), st
    assert h.redis(redis, "GET", PREFIX + "schema") == "5"
    log = app.log()
    assert log.index("dropping it") < log.index("a new pass is requested: schema change")
    check_recent(h, app, {d: t for d, t in want.items() if d in net.atcr_dids()})
