"""bin/hold: auth, bad input, getBlob dedupe and redirect, reads, the record view, did.json,
SIGTERM. Load, exactness and crash durability are in test_hold_load.py."""
import base64
import hashlib
import hmac
import http.client
import json
import os
import signal
import time
import urllib.parse

from harness import free_port, wait_for

TOKEN = "s3cret-service-token"
ALICE = "did:plc:alice234567abcdefghijklm"
BOB = "did:web:bob.example.com"


def start_hold(h, name="hold", db=None, **env):
    port = free_port()
    db = db or f"{h.tmp}/{name}.db"
    e = {"HOLD_LISTEN": f"127.0.0.1:{port}", "HOLD_DB": db, "HOLD_SERVICE_TOKENS": f"other,{TOKEN}",
         "HOLD_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    e.update({k: str(v) for k, v in env.items()})
    p = h.spawn(name, [h.binary("hold")], env=e, sanitized=True)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: h.get_json(base + "/xrpc/_health")[0] == 200, what="hold health")
    p.base, p.db, p.port = base, db, port
    return p


def incr(h, base, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return h.post_json(base + "/xrpc/io.atcr.hold.incrementStats", body, headers=headers)


def stats(h, base, did, repo):
    q = urllib.parse.urlencode({"did": did, "repository": repo})
    status, body = h.get_json(f"{base}/xrpc/io.atcr.hold.getStats?{q}")
    assert status == 200, body
    return body


def all_stats(h, base):
    status, body = h.get_json(base + "/xrpc/io.atcr.hold.listStats?limit=100")
    assert status == 200, body
    return body["stats"]


def test_increment_and_read(h):
    hold = start_hold(h)
    assert incr(h, hold.base, {"did": ALICE, "repository": "alice/app", "event": "pull"}) == (
        200, {"applied": 1})
    batch = {"events": [{"did": ALICE, "repository": "alice/app", "event": "push", "count": 2},
                        {"did": ALICE, "repository": "alice/app", "event": "pull", "count": 5},
                        {"did": BOB, "repository": "bob/tools/cli", "event": "pull"}]}
    assert incr(h, hold.base, batch) == (200, {"applied": 8})
    s = stats(h, hold.base, ALICE, "alice/app")
    assert (s["pullCount"], s["pushCount"]) == (6, 2), s
    assert s["lastPull"].endswith("Z") and s["lastPush"].endswith("Z")
    # A repository never seen reads as zeros, not an error.
    s = stats(h, hold.base, BOB, "never/seen")
    assert (s["pullCount"], s["pushCount"]) == (0, 0) and "lastPull" not in s
    q = urllib.parse.urlencode({"did": ALICE, "repository": "alice/app", "days": 3})
    status, hist = h.get_json(f"{hold.base}/xrpc/io.atcr.hold.getStatsHistory?{q}")
    assert status == 200 and len(hist["days"]) == 3, hist
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert hist["days"][-1] == {"date": today, "pullCount": 6, "pushCount": 2}, hist
    assert hist["days"][0]["pullCount"] == 0
    # listStats filtered by did, and its cursor walks every row exactly once.
    for i in range(5):
        assert incr(h, hold.base, {"did": BOB, "repository": f"bob/r{i}", "event": "pull"})[0] == 200
    q = urllib.parse.urlencode({"did": BOB, "limit": 2})
    seen, cursor = [], None
    for _ in range(10):
        url = f"{hold.base}/xrpc/io.atcr.hold.listStats?{q}" + (f"&cursor={cursor}" if cursor else "")
        status, page = h.get_json(url)
        assert status == 200, page
        seen += [(s["did"], s["repository"]) for s in page["stats"]]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert sorted(seen) == sorted([(BOB, "bob/tools/cli")] + [(BOB, f"bob/r{i}") for i in range(5)])
    assert len(seen) == len(set(seen))
    m = h.metrics(hold.base)
    assert m["hold_increments_applied_total"] == 14
    assert hold.stop() == 0


def test_auth(h):
    hold = start_hold(h)
    ev = {"did": ALICE, "repository": "alice/app", "event": "pull"}
    status, body = incr(h, hold.base, ev, token=None)
    assert status == 401 and body["error"] == "AuthRequired", body
    for bad in ["", "s3cret-service-toke", "s3cret-service-tokeN", TOKEN + "x", "x" * 5000,
                TOKEN.upper(), "other " + TOKEN]:
        status, body = incr(h, hold.base, ev, token=bad)
        assert status in (401, 403) and "error" in body and "message" in body, (bad, status, body)
    for header in ["Basic " + base64.b64encode(b"a:b").decode(), TOKEN, "Bearer"]:
        status, body = h.post_json(hold.base + "/xrpc/io.atcr.hold.incrementStats", ev,
                                   headers={"Authorization": header})
        assert status == 401, (header, status, body)
    assert all_stats(h, hold.base) == []
    # Both configured tokens work; the scheme is case-insensitive.
    assert incr(h, hold.base, ev, token="other")[0] == 200
    status, _ = h.post_json(hold.base + "/xrpc/io.atcr.hold.incrementStats", ev,
                            headers={"Authorization": "bearer " + TOKEN})
    assert status == 200
    # Reads need no token.
    assert stats(h, hold.base, ALICE, "alice/app")["pullCount"] == 2
    m = h.metrics(hold.base)
    assert m['hold_rejected_total{reason="auth_wrong"}'] >= 5
    assert m['hold_rejected_total{reason="auth_missing"}'] >= 4


def test_bad_input_writes_nothing(h):
    hold = start_hold(h)
    good = {"did": ALICE, "repository": "alice/app", "event": "pull"}
    cases = [
        b"{not json", b"", b"[1,2]", b"\"pull\"", b'{"did": "x"', "{\"did\": \"\u0000\"}".encode(),
        {**good, "count": -1}, {**good, "count": 0}, {**good, "count": 10 ** 12},
        {**good, "count": 1.5}, {**good, "count": "3"}, {**good, "count": 2 ** 70},
        {**good, "did": "not-a-did"}, {**good, "did": "did:plc:"}, {**good, "did": 42},
        {**good, "repository": "Alice/App"}, {**good, "repository": "a" * 256},
        {**good, "repository": "alice//app"}, {**good, "repository": ""},
        {**good, "event": "delete"}, {**good, "event": None}, {k: v for k, v in good.items() if k != "did"},
        {"events": []}, {"events": {}}, {"events": [good] * 1001},
        # One bad event spoils the whole batch: all or nothing.
        {"events": [good, good, {**good, "event": "fetch"}]},
        {"events": [good, "pull"]},
    ]
    for body in cases:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, resp = incr(h, hold.base, raw)
        assert status == 400, (body if isinstance(body, bytes) else str(body)[:200], status, resp)
        assert resp["error"] == "InvalidRequest" and resp["message"], resp
    # 10 MB: refused before parsing, in the XRPC envelope (413 PayloadTooLarge from the server).
    big = json.dumps({"events": [good], "pad": "x" * (10 << 20)}).encode()
    status, resp = incr(h, hold.base, big)
    assert status in (400, 413) and "error" in resp, (status, resp)
    for q in ["did=nope&repository=a/b", "did=" + ALICE, "did=" + ALICE + "&repository=UP"]:
        status, resp = h.get_json(f"{hold.base}/xrpc/io.atcr.hold.getStats?{q}")
        assert status == 400 and resp["error"] == "InvalidRequest", (q, resp)
    for q in ["limit=0", "limit=101", "limit=abc", "cursor=zz"]:
        status, resp = h.get_json(f"{hold.base}/xrpc/io.atcr.hold.listStats?{q}")
        assert status == 400, (q, resp)
    q = urllib.parse.urlencode({"did": ALICE, "repository": "a/b", "days": 366})
    assert h.get_json(f"{hold.base}/xrpc/io.atcr.hold.getStatsHistory?{q}")[0] == 400
    # Nothing was written, and the hold still serves.
    assert all_stats(h, hold.base) == []
    assert h.metrics(hold.base)["hold_increments_applied_total"] == 0
    assert incr(h, hold.base, good) == (200, {"applied": 1})
    assert hold.alive()


def blob_get(h, base, source="127.0.0.1", token=None, **params):
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10,
                                      source_address=(source, 0))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request("GET", "/xrpc/com.atproto.sync.getBlob?" + urllib.parse.urlencode(params),
                 headers=headers)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, r.getheader("Location"), body


SECRET = "blob-url-secret-0123456789abcdef"
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def signed(secret, did, cid, repo, method=None, exp=None):
    """The query of a signed getBlob URL, computed from the documented algorithm
    (hold/blob_sig.h, lexicons/io/atcr/hold/defs.json), independently of the hold's code."""
    exp = exp if exp is not None else int(time.time()) + 300
    msg = f"io.atcr.hold.getBlob\n{did}\n{cid}\n{repo}\n{(method or 'GET').upper()}\n{exp}"
    mac = hmac.new(secret.encode(), msg.encode(), hashlib.sha256).digest()
    q = {"did": did, "cid": cid, "repo": repo, "exp": str(exp),
         "sig": base64.urlsafe_b64encode(mac).rstrip(b"=").decode()}
    if method:
        q["method"] = method
    return q


def test_get_blob_dedupe_and_redirect(h):
    hold = start_hold(h, HOLD_BLOB_URL_TEMPLATE="https://cdn.example/blobs/{did}/{cid}?x=1",
                      HOLD_PULL_DEDUPE_SECONDS=1)
    cid = CID
    # One `docker pull`: many layers of one repository from one client = one pull.
    for layer in range(6):
        status, loc, _ = blob_get(h, hold.base, token=TOKEN, did=ALICE, cid=cid, repo="alice/app")
        assert status == 302 and loc == f"https://cdn.example/blobs/{ALICE}/{cid}?x=1", (status, loc)
    assert stats(h, hold.base, ALICE, "alice/app")["pullCount"] == 1
    # Another client address, another repository, a push: each counted on its own.
    assert blob_get(h, hold.base, source="127.0.0.2", token=TOKEN, did=ALICE, cid=cid,
                    repo="alice/app")[0] == 302
    assert blob_get(h, hold.base, token=TOKEN, did=ALICE, cid=cid, repo="alice/db")[0] == 302
    for _ in range(2):
        assert blob_get(h, hold.base, token=TOKEN, did=ALICE, cid=cid, repo="alice/app",
                        method="PUT")[0] == 302
    s = stats(h, hold.base, ALICE, "alice/app")
    assert (s["pullCount"], s["pushCount"]) == (2, 1), s
    assert stats(h, hold.base, ALICE, "alice/db")["pullCount"] == 1
    # After the window the same client counts again.
    time.sleep(1.2)
    assert blob_get(h, hold.base, token=TOKEN, did=ALICE, cid=cid, repo="alice/app")[0] == 302
    assert stats(h, hold.base, ALICE, "alice/app")["pullCount"] == 3
    m = h.metrics(hold.base)
    assert m["hold_blob_deduped_total"] == 6 and m["hold_blob_counted_total"] == 5, m
    for bad in [{"did": "x", "cid": cid}, {"did": ALICE, "cid": "not a cid!"},
                {"did": ALICE, "cid": cid, "repo": "UPPER"}, {"did": ALICE, "cid": cid, "method": "DELETE"}]:
        status, _, body = blob_get(h, hold.base, **bad)
        assert status == 400 and json.loads(body)["error"] == "InvalidRequest", (bad, body)


def test_get_blob_counts_only_what_the_registry_vouches_for(h):
    """Anyone may fetch a blob, but only the registry's fetches count: with the service token,
    or through a signed URL that has not expired. Anonymous requests, wrong tokens, expired
    and tampered URLs are redirected without a count."""
    hold = start_hold(h, HOLD_BLOB_URL_TEMPLATE="https://cdn.example/{did}/{cid}",
                      HOLD_BLOB_URL_SECRETS=f"old-secret-0123456789,{SECRET}")
    # A stranger pulls and pushes another user's repositories, 50 names: redirected, not counted.
    for i in range(50):
        for method in ("GET", "PUT"):
            status, loc, _ = blob_get(h, hold.base, did=BOB, cid=CID, repo=f"bob/r{i}",
                                      method=method)
            assert status == 302 and loc == f"https://cdn.example/{BOB}/{CID}", (status, loc)
    for token in ("wrong-token", TOKEN + "x", TOKEN[:-1]):
        assert blob_get(h, hold.base, token=token, did=BOB, cid=CID, repo="bob/r0")[0] == 302
    # Signed URLs that do not prove anything: expired, tampered, signed with another secret,
    # malformed.
    now = int(time.time())
    expired = signed(SECRET, BOB, CID, "bob/r1", exp=now - 5)
    tampered_repo = {**signed(SECRET, BOB, CID, "bob/r1"), "repo": "bob/r2"}
    tampered_did = {**signed(SECRET, BOB, CID, "bob/r1"), "did": ALICE}
    tampered_method = {**signed(SECRET, BOB, CID, "bob/r1", method="GET"), "method": "PUT"}
    tampered_exp = {**signed(SECRET, BOB, CID, "bob/r1", exp=now - 5), "exp": str(now + 300)}
    good = signed(SECRET, BOB, CID, "bob/r1")
    flipped = {**good, "sig": ("B" if good["sig"][0] == "A" else "A") + good["sig"][1:]}
    other_secret = signed("not-the-hold-secret-xyz", BOB, CID, "bob/r1")
    for q in (expired, tampered_repo, tampered_did, tampered_method, tampered_exp, flipped,
              other_secret, {**good, "sig": good["sig"] + "="}, {**good, "exp": "0" + good["exp"]},
              {k: v for k, v in good.items() if k != "exp"}):
        status, loc, _ = blob_get(h, hold.base, **q)
        assert status == 302, (q, status)
    assert all_stats(h, hold.base) == []
    m = h.metrics(hold.base)
    assert m['hold_blob_uncounted_total{reason="anonymous"}'] == 100, m
    assert m['hold_blob_uncounted_total{reason="token_wrong"}'] == 3, m
    assert m['hold_blob_uncounted_total{reason="signature_expired"}'] == 1, m
    assert m['hold_blob_uncounted_total{reason="signature_invalid"}'] == 9, m
    assert m["hold_blob_counted_total"] == 0
    # The registry's fetches count, once per client and window: the token, a signed pull, a
    # signed push (method is part of what is signed), a URL signed with the older secret.
    assert blob_get(h, hold.base, token=TOKEN, did=BOB, cid=CID, repo="bob/app")[0] == 302
    assert blob_get(h, hold.base, token=TOKEN, did=BOB, cid=CID, repo="bob/app")[0] == 302
    assert blob_get(h, hold.base, **signed(SECRET, BOB, CID, "bob/signed"))[0] == 302
    assert blob_get(h, hold.base, **signed(SECRET, BOB, CID, "bob/signed"))[0] == 302
    assert blob_get(h, hold.base, **signed(SECRET, BOB, CID, "bob/signed", method="put"))[0] == 302
    assert blob_get(h, hold.base, **signed("old-secret-0123456789", ALICE, CID, "alice/app"))[0] == 302
    got = {(s["did"], s["repository"]): (s["pullCount"], s["pushCount"])
           for s in all_stats(h, hold.base)}
    assert got == {(BOB, "bob/app"): (1, 0), (BOB, "bob/signed"): (1, 1),
                   (ALICE, "alice/app"): (1, 0)}, got
    m = h.metrics(hold.base)
    assert m["hold_blob_counted_total"] == 4 and m["hold_blob_deduped_total"] == 2, m


def test_get_blob_anonymous_counting_is_opt_in(h):
    hold = start_hold(h, HOLD_BLOB_URL_TEMPLATE="https://cdn.example/{did}/{cid}",
                      HOLD_COUNT_ANONYMOUS="on", HOLD_PULL_DEDUPE_SECONDS=60)
    for source in ("127.0.0.1", "127.0.0.1", "127.0.0.3"):
        assert blob_get(h, hold.base, source=source, did=BOB, cid=CID, repo="bob/app")[0] == 302
    # A failed proof still does not count, even here.
    assert blob_get(h, hold.base, source="127.0.0.4", token="wrong-token", did=BOB, cid=CID,
                    repo="bob/app")[0] == 302
    assert stats(h, hold.base, BOB, "bob/app")["pullCount"] == 2
    assert "HOLD_COUNT_ANONYMOUS is on" in hold.log()


def test_get_blob_without_template(h):
    hold = start_hold(h)
    # Nothing is served, so nothing counts, even with the token.
    for token in (None, TOKEN):
        status, loc, body = blob_get(h, hold.base, token=token, did=BOB, cid=CID, repo="bob/app")
        assert status == 404 and json.loads(body)["error"] == "BlobNotFound" and loc is None
    assert stats(h, hold.base, BOB, "bob/app")["pullCount"] == 0
    assert all_stats(h, hold.base) == []
    assert h.metrics(hold.base)['hold_blob_uncounted_total{reason="not_found"}'] == 2


# ---- record view ----

B32 = "abcdefghijklmnopqrstuvwxyz234567"


def rkey_of(did, repo):
    d = hashlib.sha256(did.encode() + b"\0" + repo.encode()).digest()
    bits = "".join(f"{b:08b}" for b in d)[:128] + "00"
    return "".join("234567abcdefghijklmnopqrstuvwxyz"[int(bits[i:i + 5], 2)] for i in range(0, 130, 5))


def dag_cbor(v):
    """Just enough DAG-CBOR for flat records: maps, text, unsigned ints."""
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
        return head(5, len(v)) + b"".join(dag_cbor(k) + dag_cbor(v[k]) for k in keys)
    if isinstance(v, str):
        return head(3, len(v.encode())) + v.encode()
    assert isinstance(v, int) and v >= 0
    return head(0, v)


def cid_of(value):
    raw = bytes([1, 0x71, 0x12, 0x20]) + hashlib.sha256(dag_cbor(value)).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def test_record_view(h):
    hold = start_hold(h)
    did = f"did:web:127.0.0.1%3A{hold.port}"
    repos = [f"alice/img{i}" for i in range(7)]
    assert incr(h, hold.base, {"events": [{"did": ALICE, "repository": r, "event": "pull", "count": i + 1}
                                          for i, r in enumerate(repos)]})[0] == 200
    assert incr(h, hold.base, {"did": ALICE, "repository": "alice/img0", "event": "push"})[0] == 200
    enc = urllib.parse.quote(did, safe="")
    status, desc = h.get_json(f"{hold.base}/xrpc/com.atproto.repo.describeRepo?repo={enc}")
    assert status == 200, desc
    assert desc["did"] == did and desc["collections"] == ["io.atcr.hold.stats"]
    assert desc["didDoc"]["id"] == did and desc["handle"] == "handle.invalid"
    status, body = h.get_json(f"{hold.base}/xrpc/com.atproto.repo.describeRepo?repo=did:plc:other")
    assert status == 404 and body["error"] == "RepoNotFound"

    base = f"{hold.base}/xrpc/com.atproto.repo.listRecords?repo={enc}&collection=io.atcr.hold.stats"
    records, cursor = [], None
    for _ in range(10):
        status, page = h.get_json(base + "&limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200 and len(page["records"]) <= 3, page
        records += page["records"]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert len(records) == 7 and len({r["uri"] for r in records}) == 7
    rkeys = [r["uri"].rsplit("/", 1)[1] for r in records]
    assert rkeys == sorted(rkeys)
    status, rev = h.get_json(base + "&limit=100&reverse=true")
    assert [r["uri"] for r in rev["records"]] == [r["uri"] for r in reversed(records)]
    for rec in records:
        v = rec["value"]
        assert v["$type"] == "io.atcr.hold.stats" and v["did"] == ALICE
        assert rec["uri"] == f"at://{did}/io.atcr.hold.stats/{rkey_of(ALICE, v['repository'])}"
        assert v["pullCount"] == repos.index(v["repository"]) + 1
        assert set(v) >= {"did", "repository", "pullCount", "pushCount", "createdAt", "updatedAt"}
        # The CID is the real DAG-CBOR CID of the value, computed here independently.
        assert rec["cid"] == cid_of(v), rec
        rkey = rec["uri"].rsplit("/", 1)[1]
        status, one = h.get_json(f"{hold.base}/xrpc/com.atproto.repo.getRecord?repo={enc}"
                                 f"&collection=io.atcr.hold.stats&rkey={rkey}")
        assert status == 200 and one == rec, one
    img0 = next(r for r in records if r["value"]["repository"] == "alice/img0")["value"]
    assert img0["pushCount"] == 1 and "lastPush" in img0
    status, body = h.get_json(f"{hold.base}/xrpc/com.atproto.repo.getRecord?repo={enc}"
                              f"&collection=io.atcr.hold.stats&rkey={rkey_of(ALICE, 'no/such')}")
    assert status == 404 and body["error"] == "RecordNotFound"
    status, body = h.get_json(f"{hold.base}/xrpc/com.atproto.repo.listRecords?repo={enc}"
                              "&collection=io.atcr.manifest")
    assert status == 200 and body["records"] == []


def test_did_json(h):
    hold = start_hold(h, name="hold1", HOLD_PUBLIC_URL="https://hold.example.com/")
    status, doc = h.get_json(hold.base + "/.well-known/did.json")
    assert status == 200 and doc["id"] == "did:web:hold.example.com", doc
    assert doc["service"] == [{"id": "#atcr_hold", "type": "AtcrHoldService",
                               "serviceEndpoint": "https://hold.example.com"}]
    hold2 = start_hold(h, name="hold2", HOLD_DID="did:plc:holdexplicit234567")
    status, doc = h.get_json(hold2.base + "/.well-known/did.json")
    assert doc["id"] == "did:plc:holdexplicit234567"
    status, health = h.get_json(hold2.base + "/xrpc/_health")
    assert health["status"] == "ok" and health["did"] == "did:plc:holdexplicit234567"
    status, body = h.get_json(hold2.base + "/xrpc/io.atcr.hold.nope")
    assert status == 501 and body["error"] == "MethodNotImplemented"


def test_help_and_bad_config(h):
    import subprocess
    out = subprocess.run([h.binary("hold"), "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "HOLD_SERVICE_TOKENS" in out.stdout
    out = subprocess.run([h.binary("hold"), "--pull-dedupe-seconds", "-3"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode != 0 and "HOLD_PULL_DEDUPE_SECONDS" in out.stderr
    out = subprocess.run([h.binary("hold"), "--did", "bogus"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode != 0


def test_sigterm_drains(h):
    hold = start_hold(h)
    ev = {"did": ALICE, "repository": "alice/app", "event": "pull"}
    for _ in range(20):
        assert incr(h, hold.base, ev)[0] == 200
    hold.signal(signal.SIGTERM)
    assert hold.wait(15) == 0
    assert "stopped" in hold.log()
    hold.start()
    wait_for(lambda: h.get_json(hold.base + "/xrpc/_health")[0] == 200, what="restart")
    assert stats(h, hold.base, ALICE, "alice/app")["pullCount"] == 20


def test_repeated_sigterm_still_exits_cleanly(h):
    """A supervisor that repeats SIGTERM (or an impatient operator) gets a clean exit, not a
    kill: signals after the first are ignored, also once the drain has closed its watchers."""
    for attempt in range(5):
        hold = start_hold(h, name=f"hold-{attempt}")
        pid = hold.popen.pid
        deadline = time.time() + 10
        while hold.alive() and time.time() < deadline:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                break
            time.sleep(0.0005)
        assert hold.wait(15) == 0, hold.log()[-2000:]
