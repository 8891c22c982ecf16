"""appview/loader through bin/appview: single flight and upstream faults, against a real PDS and
PLC (tests/lib/devnet.py) behind local proxies that count requests and inject faults."""
import atexit
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import devnet
from harness import free_port, wait_for
from upstream import Server, reply

PREFIX = "atcr:"
LIST = "/xrpc/com.atproto.repo.listRecords"
LATEST = "/xrpc/com.atproto.sync.getLatestCommit"


def available():
    return devnet.available()


def forward(hd, url, rewrite=None):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    reply(hd, status, rewrite(body) if rewrite else body)


def query_did(path):
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    return (q.get("did") or q.get("repo") or [""])[0]


class Net:
    """The devnet behind a PLC proxy (which points every DID document at the PDS proxy) and a
    PDS proxy that counts requests per (DID, method) and applies a per-DID fault."""

    def __init__(self, holder):
        self.dn = devnet.start(holder, name="devnet")
        self.faults, self.hits, self.lock = {}, {}, threading.Lock()
        self.down_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        self.pds = Server(self._pds)
        self.plc = Server(self._plc)

    def _plc(self, hd, path):
        did = urllib.parse.unquote(path.lstrip("/"))
        target = self.down_url if self.faults.get(did) == "down" else self.pds.url
        forward(hd, self.dn.plc + path,
                lambda b: b.replace(self.dn.pds.encode(), target.encode()))

    def _pds(self, hd, path):
        did, method = query_did(path), urllib.parse.urlsplit(path).path
        with self.lock:
            n = self.hits[(did, method)] = self.hits.get((did, method), 0) + 1
        fault = self.faults.get(did)
        if fault == "slow" and method == LATEST:
            time.sleep(1.5)
        elif fault == "fail_once" and method == LIST and n == 1:
            return reply(hd, 500, '{"error":"InternalServerError"}')
        elif fault == "norepo" and method == LATEST:
            return reply(hd, 400, '{"error":"RepoNotFound","message":"Could not find repo"}')
        elif fault == "fail":
            return reply(hd, 500, '{"error":"InternalServerError"}')
        elif fault == "hang" and method == LATEST:
            time.sleep(4)
            return reply(hd, 500, "{}")
        elif fault == "garbage" and method == LIST:
            return reply(hd, 200, '{"records": [{"uri": tru')
        elif fault == "huge" and method == LIST:
            hd.send_response(200)
            hd.send_header("Content-Type", "application/json")
            hd.send_header("Content-Length", str(50 << 20))
            hd.end_headers()
            chunk = b" " * (1 << 20)
            for _ in range(50):
                hd.wfile.write(chunk)
            return
        forward(hd, self.dn.pds + path)

    def count(self, did, method):
        with self.lock:
            return self.hits.get((did, method), 0)

    def account(self, handle, fault=None, tags=2):
        acc = self.dn.command("createAccount", handle=handle)
        for i in range(1, tags + 1):
            dg = "sha256:%064x" % i
            self.dn.command("create", repo=acc["did"], collection="io.atcr.manifest",
                            rkey=dg[7:], record={
                                "$type": "io.atcr.manifest", "repository": "app", "digest": dg,
                                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "schemaVersion": 2, "createdAt": "2025-02-0%dT00:00:00Z" % i})
            self.dn.command("create", repo=acc["did"], collection="io.atcr.tag", rkey=f"t{i}",
                            record={"$type": "io.atcr.tag", "repository": "app", "tag": f"t{i}",
                                    "manifest": f"at://{acc['did']}/io.atcr.manifest/{dg[7:]}",
                                    "createdAt": "2025-02-0%dT00:00:00Z" % i})
        if fault:
            self.faults[acc["did"]] = fault
        return acc["did"]


class _Holder:
    def __init__(self, root):
        self.tmp = os.path.join(root, "var", "test", "test_loader_devnet")
        os.makedirs(self.tmp, exist_ok=True)
        self.procs = []


_SHARED = {}


def shared_net(h):
    if "net" not in _SHARED:
        net = Net(_Holder(h.root))
        atexit.register(net.dn.stop)
        _SHARED["net"] = net
    return _SHARED["net"]


def start_appview(h, redis, plc, handle_resolver=None, env=None, name="appview"):
    port = free_port()
    full = {"APPVIEW_VALKEY_URL": redis.url, "APPVIEW_LISTEN": f"127.0.0.1:{port}",
            "APPVIEW_JETSTREAM_URLS": f"ws://127.0.0.1:{free_port()}/subscribe",
            "APPVIEW_LEXICON_DIR": "lexicons", "APPVIEW_DATA_DIR": os.path.join(h.tmp, name),
            "APPVIEW_PLC_URL": plc, "APPVIEW_ALLOW_PRIVATE_NETWORKS": "1",
            "APPVIEW_KEY_PREFIX": PREFIX}
    if handle_resolver:
        full["APPVIEW_HANDLE_RESOLVER_URL"] = handle_resolver
    full.update(env or {})
    p = h.spawn(name, [h.binary("appview")], env=full, sanitized=True)
    p.base = f"http://127.0.0.1:{port}"
    p.port = port
    # 200: listening and Valkey ready. A read sent before Valkey is ready gets a 502, as it
    # should; the tests here are about what comes after.
    wait_for(lambda: h.http("GET", p.base + "/xrpc/_health")[0] == 200, what="appview and Valkey")
    return p


def list_tags(h, app, actor, timeout=30):
    q = urllib.parse.urlencode({"actor": actor, "repository": "app"})
    return h.get_json(f"{app.base}/xrpc/io.atcr.repo.listTags?{q}", timeout=timeout)


def cached_keys(h, redis, did):
    return sorted(k for k in h.redis_raw(redis, "KEYS", f"{PREFIX}{{{did}}}/*").split())


def test_single_flight_500_concurrent_cold_requests(h):
    net = shared_net(h)
    did = net.account("flight.test", fault="slow", tags=3)
    redis = h.start_redis()
    app = start_appview(h, redis, net.plc.url, net.dn.pds)

    # 500 requests on 500 connections, all sent while the first load waits on the slow PDS.
    path = "/xrpc/io.atcr.repo.listTags?" + urllib.parse.urlencode(
        {"actor": did, "repository": "app"})
    req = (f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode()
    socks = []
    t0 = time.time()
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", app.port), timeout=30)
        s.sendall(req)
        socks.append(s)
    sent = time.time() - t0
    answers = []
    for s in socks:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        answers.append((int(head.split()[1]), body))
    took = time.time() - t0
    assert all(st == 200 for st, _ in answers), [a for a in answers if a[0] != 200][:3]
    tags = {tuple(sorted(t["tag"] for t in json.loads(b)["tags"])) for _, b in answers}
    assert tags == {("t1", "t2", "t3")}, tags
    assert net.count(did, LATEST) == 1, net.hits
    assert net.count(did, LIST) == 2, net.hits  # one page per collection, once
    m = h.metrics(app.base)
    assert m["appview_loader_runs_total"] == 1, m
    assert m['appview_upstream_requests_total{method="listRecords"}'] == 2, m
    print(f"    500 concurrent cold listTags: sent in {sent:.2f}s, all answered in {took:.2f}s, "
          f"{m['appview_loader_coalesced_total']:.0f} joined the load in flight")


def test_upstream_faults(h):
    net = shared_net(h)
    dids = {f: net.account(f"{f.replace('_', '')}.test", fault=f)
            for f in ("fail_once", "fail", "hang", "garbage", "huge", "down")}
    redis = h.start_redis()
    app = start_appview(h, redis, net.plc.url, net.dn.pds,
                        env={"APPVIEW_UPSTREAM_TIMEOUT_MS": "700"})

    # 500 then 200: retried within the call, answered, cached as complete.
    st, body = list_tags(h, app, dids["fail_once"])
    assert st == 200 and len(body["tags"]) == 2, body
    assert net.count(dids["fail_once"], LIST) == 3, net.hits  # manifests twice, tags once

    expect = {"fail": (502, "UpstreamFailure"), "hang": (504, "UpstreamTimeout"),
              "garbage": (502, "UpstreamFailure"), "huge": (502, "UpstreamFailure"),
              "down": (502, "UpstreamFailure")}
    t0 = time.time()
    for fault, (code, name) in expect.items():
        st, body = list_tags(h, app, dids[fault])
        assert (st, body.get("error")) == (code, name), (fault, st, body)
        # Nothing but the identity may be cached: no negative entry, no complete index.
        keys = cached_keys(h, redis, dids[fault])
        assert f"{PREFIX}{{{dids[fault]}}}/complete" not in keys, (fault, keys)
        assert f"{PREFIX}{{{dids[fault]}}}/neg" not in keys, (fault, keys)
    assert time.time() - t0 < 25
    assert net.count(dids["fail"], LATEST) == 3, net.hits  # at most 3 attempts
    assert app.alive()

    # Once the PDS behaves, the same actors are served: nothing wrong was remembered.
    for fault in expect:
        net.faults.pop(dids[fault])
    h.redis(redis, "DEL", f"{PREFIX}{{{dids['down']}}}/id")  # its cached PDS is the dead one
    for fault in expect:
        st, body = list_tags(h, app, dids[fault])
        assert st == 200 and len(body["tags"]) == 2, (fault, st, body)
    m = h.metrics(app.base)
    assert m['appview_loader_failures_total{status="upstream_timeout"}'] >= 1, m
    assert m['appview_loader_failures_total{status="upstream_failure"}'] >= 4, m

    # A DID the PLC does not know, and a PDS that says RepoNotFound: 404, cached negative.
    ghost = "did:plc:" + "q" * 24
    norepo = net.account("norepo.test", fault="norepo", tags=0)
    for did in (ghost, norepo):
        st, body = list_tags(h, app, did)
        assert st == 404 and body["error"] == "RepoNotFound", body
        assert f"{PREFIX}{{{did}}}/neg" in cached_keys(h, redis, did)
    before = net.count(norepo, LATEST)
    assert list_tags(h, app, norepo)[0] == 404
    assert net.count(norepo, LATEST) == before  # answered by the negative entry


def test_ssrf_guard_on_document_endpoints(h):
    pds_hits = []
    pds = Server(lambda hd, path: (pds_hits.append(path), reply(hd, 200, "{}")))
    dids = {"loopback": "did:plc:" + "c" * 24, "metadata": "did:plc:" + "d" * 24,
            "private": "did:plc:" + "e" * 24}
    endpoints = {"loopback": pds.url, "metadata": "https://169.254.169.254",
                 "private": "https://10.0.0.7"}

    def doc(did, endpoint):
        return json.dumps({"id": did, "alsoKnownAs": [], "service": [
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
             "serviceEndpoint": endpoint}]})

    docs = {"/" + dids[k]: doc(dids[k], endpoints[k]) for k in dids}
    plc = Server(lambda hd, path: reply(hd, 200, docs[path]) if path in docs
                 else reply(hd, 404, '{"message":"DID not registered"}'))
    try:
        redis = h.start_redis()
        # The PLC is the operator's own (trusted even on loopback); the documents are not.
        app = start_appview(h, redis, plc.url, env={"APPVIEW_ALLOW_PRIVATE_NETWORKS": "0"})
        for k, did in dids.items():
            st, body = list_tags(h, app, did)
            assert st == 502 and body["error"] == "UpstreamFailure", (k, st, body)
            assert cached_keys(h, redis, did) == [], (k, cached_keys(h, redis, did))
        assert pds_hits == [], pds_hits
        assert app.alive()
    finally:
        plc.close()
        pds.close()
