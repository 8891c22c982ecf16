"""XRPC reads of the appview (io.atcr.repo.listRepositories, listTags, getManifest, listRecent)
against a real redis-server seeded through the appview's own write path (tests/lib/records.py:
TID-keyed manifests, tags by at-uri).

The appview runs with ingest off. Its PLC directory is a small local server in this process that
knows only the DIDs a test gives it, so an unknown DID is a 404 upstream; a DID whose PDS is a
closed port makes the loader fail, which is how the stale path is reached.
"""
import base64
import http.server
import json
import os
import re
import shutil
import threading
import urllib.parse

from harness import free_port, wait_for
from records import MEDIA, Seeder, iso

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = "atcr:"
XRPC = "/xrpc/io.atcr.repo."
# RFC 3339 as atproto datetimes have it: values are served as the records wrote them.
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
T0 = 1763812200000  # 2025-11-22T11:50:00.000Z

# Output properties of each method, from lexicons/io/atcr/repo/*.json.
LEX = {}


def available():
    if not shutil.which("redis-server"):
        return "redis-server not installed"
    return None


def lexicon_output(name):
    if name not in LEX:
        with open(os.path.join(ROOT, "lexicons/io/atcr/repo", name + ".json")) as f:
            LEX[name] = json.load(f)["defs"]
    return LEX[name]


def check_object(obj, schema, defs, where):
    """Required properties present, nothing outside the declared ones, types as declared."""
    assert isinstance(obj, dict), f"{where}: not an object: {obj!r}"
    props = schema["properties"]
    for req in schema.get("required", []):
        assert req in obj, f"{where}: missing {req}: {obj!r}"
    for k, v in obj.items():
        assert k in props, f"{where}: unexpected property {k}"
        p = props[k]
        t = p["type"]
        if t == "string":
            assert isinstance(v, str), f"{where}.{k}: {v!r}"
            if p.get("format") == "datetime":
                assert DATETIME.match(v), f"{where}.{k}: {v!r}"
        elif t == "integer":
            assert isinstance(v, int) and not isinstance(v, bool), f"{where}.{k}: {v!r}"
        elif t == "boolean":
            assert isinstance(v, bool), f"{where}.{k}: {v!r}"
        elif t == "array":
            assert isinstance(v, list), f"{where}.{k}: {v!r}"
            ref = p["items"]["ref"].lstrip("#")
            for i, item in enumerate(v):
                check_object(item, defs[ref], defs, f"{where}.{k}[{i}]")


def check_output(method, body):
    defs = lexicon_output(method)
    check_object(body, defs["main"]["output"]["schema"], defs, method)


def digest(i, salt="a"):
    return "sha256:" + (salt + "%063x" % i)[-64:]


# ---- a PLC directory that knows what the test tells it ----

class Plc:
    def __init__(self):
        self.docs = {}
        docs = self.docs

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                did = self.path.lstrip("/")
                doc = docs.get(did)
                body = json.dumps(doc if doc else {"message": "DID not registered"}).encode()
                self.send_response(200 if doc else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, did, handle, pds):
        self.docs[did] = {"id": did, "alsoKnownAs": [f"at://{handle}"],
                          "verificationMethod": [],
                          "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                       "serviceEndpoint": pds}]}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Env:
    def __init__(self, h):
        self.h = h
        self.redis = h.start_redis()
        self.seed = Seeder(h, self.redis, PREFIX)
        self.plc = Plc()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {"APPVIEW_VALKEY_URL": self.redis.url, "APPVIEW_LISTEN": f"127.0.0.1:{port}",
               "APPVIEW_INGEST": "off", "APPVIEW_PLC_URL": f"http://127.0.0.1:{self.plc.port}",
               "APPVIEW_ALLOW_PRIVATE_NETWORKS": "on", "APPVIEW_UPSTREAM_TIMEOUT_MS": "2000",
               "APPVIEW_KEY_PREFIX": PREFIX}
        self.proc = h.spawn("appview", [h.binary("appview")], env=env, sanitized=True)
        wait_for(lambda: h.http("GET", self.url + "/xrpc/_health", timeout=2)[0] == 200,
                 what="appview health")

    def get(self, method, **params):
        self.seed.flush()
        q = urllib.parse.urlencode(params)
        return self.h.get_json(f"{self.url}{XRPC}{method}?{q}")

    def ok(self, method, **params):
        status, body = self.get(method, **params)
        assert status == 200, (method, params, status, body)
        check_output(method, body)
        return body

    def walk(self, method, field, **params):
        """Every page of a list; asserts each is well formed and returns the items in order."""
        items, cursor, pages = [], None, 0
        while True:
            p = dict(params)
            if cursor:
                p["cursor"] = cursor
            body = self.ok(method, **p)
            items += body[field]
            pages += 1
            assert pages < 100, "pagination does not end"
            cursor = body.get("cursor")
            if not cursor:
                return items, pages
            assert len(body[field]) == int(params.get("limit", 50)), body

    def close(self):
        self.plc.close()


def with_env(fn):
    def run(h):
        e = Env(h)
        try:
            fn(h, e)
            assert e.proc.alive(), "appview died"
        finally:
            e.close()
    run.__name__ = fn.__name__
    return run


ALICE = "did:plc:alice7777777777777777777"
BOB = "did:plc:bob77777777777777777777777"


# ---- tests ----

@with_env
def test_list_tags_pages_once_each(h, e):
    # 23 tags; pairs share a createdAt so the cursor's tie-break on the member is exercised.
    want = []
    for i in range(23):
        d = digest(i % 4)
        if i % 4 == i:
            e.seed.manifest(ALICE, "app", d, T0 + i)
        ms = T0 + 1000 * (i // 2) + 123
        e.seed.tag(ALICE, "app", f"v{i}", d, ms)
        want.append((ms, f"v{i}", d))
    e.seed.complete(ALICE)
    want.sort(reverse=True)

    tags, pages = e.walk("listTags", "tags", actor=ALICE, repository="app", limit=5)
    assert pages == 5
    assert [t["tag"] for t in tags] == [w[1] for w in want], tags
    assert [t["digest"] for t in tags] == [w[2] for w in want]
    assert [t["createdAt"] for t in tags] == [iso(w[0]) for w in want]

    body = e.ok("listTags", actor=ALICE, repository="app")
    assert body["did"] == ALICE and body["repository"] == "app"
    assert len(body["tags"]) == 23 and "cursor" not in body and "stale" not in body
    one, pages = e.walk("listTags", "tags", actor=ALICE, repository="app", limit=1)
    assert [t["tag"] for t in one] == [w[1] for w in want] and pages == 23

    m = h.metrics(e.url)
    assert m['appview_reads_total{method="listTags"}'] == 5 + 1 + 23
    assert m["appview_reads_cache_hits_total"] >= 29


@with_env
def test_values_with_newlines_are_read_unpacked(h, e):
    """read.lua packs a page into one newline-joined string; a value holding a newline
    (the fold never writes one, but the keys are a public contract) makes the appview read the
    page again as arrays, and the answer is the same as for any other value."""
    mrkey = e.seed.manifest(ALICE, "app", digest(1), T0)
    e.seed.tag(ALICE, "app", "plain", digest(1), T0 + 2)
    e.seed.complete(ALICE)
    # Another writer of the keys, which no OCI tag allows the fold to write.
    base = f"{PREFIX}{{{ALICE}}}/"
    h.redis(e.redis, "ZADD", base + "repo/app/tags", T0 + 1, "odd\nline")
    h.redis(e.redis, "HSET", base + "recs", "t/app/odd\nline",
            f"app_odd {iso(T0 + 1)} {mrkey}=-")
    body = e.ok("listTags", actor=ALICE, repository="app")
    assert [(t["tag"], t["digest"]) for t in body["tags"]] == \
        [("plain", digest(1)), ("odd\nline", digest(1))], body
    assert "reading them unpacked" in e.proc.log()


@with_env
def test_repositories_follow_their_newest_entry(h, e):
    """A repository's updatedAt is its newest manifest or tag: a push moves it up the list, a
    delete moves it back down, and a repository whose entries are all deleted is not listed."""
    m1 = e.seed.manifest(ALICE, "app", digest(1), T0 + 1000)
    m2 = e.seed.manifest(ALICE, "web", digest(2), T0 + 2000)
    e.seed.tag(ALICE, "app", "latest", digest(1), T0 + 3000)
    e.seed.complete(ALICE)

    def listed():
        return [(r["name"], r["updatedAt"], r["tagCount"], r["manifestCount"])
                for r in e.ok("listRepositories", actor=ALICE)["repositories"]]

    assert listed() == [("app", iso(T0 + 3000), 1, 1), ("web", iso(T0 + 2000), 0, 1)]
    e.seed.delete(ALICE, "io.atcr.tag", "app_latest")
    assert listed() == [("web", iso(T0 + 2000), 0, 1), ("app", iso(T0 + 1000), 0, 1)]
    e.seed.delete(ALICE, "io.atcr.manifest", m2)
    assert listed() == [("app", iso(T0 + 1000), 0, 1)]
    repos, pages = e.walk("listRepositories", "repositories", actor=ALICE, limit=1)
    assert [r["name"] for r in repos] == ["app"] and pages == 1
    # A complete index whose repositories have no entries left lists none.
    e.seed.delete(ALICE, "io.atcr.manifest", m1)
    assert e.ok("listRepositories", actor=ALICE)["repositories"] == []


@with_env
def test_repositories_past_500_list_the_newest(h, e):
    """Ordering a DID's repositories reads each of them: past 500, a list is of the 500 the DID
    created last, so that no one can make a read stall Valkey by creating repositories."""
    for i in range(505):
        e.seed.manifest(ALICE, "r%03d" % i, digest(i), T0 + i)
    e.seed.complete(ALICE)
    repos, pages = e.walk("listRepositories", "repositories", actor=ALICE, limit=100)
    assert [r["name"] for r in repos] == ["r%03d" % i for i in range(504, 4, -1)]
    assert pages == 5


@with_env
def test_list_repositories(h, e):
    e.seed.manifest(ALICE, "app", digest(1), T0 + 1000)
    e.seed.manifest(ALICE, "app", digest(2), T0 + 5000)
    e.seed.tag(ALICE, "app", "latest", digest(2), T0 + 6000)
    e.seed.tag(ALICE, "app", "v1", digest(1), T0 + 2000)
    e.seed.manifest(ALICE, "tools/cli", digest(3), T0 + 9000)
    e.seed.manifest(ALICE, "old", digest(4), T0)
    e.seed.complete(ALICE)

    body = e.ok("listRepositories", actor=ALICE)
    assert body["did"] == ALICE and "cursor" not in body
    assert body["repositories"] == [
        {"name": "tools/cli", "latestDigest": digest(3), "updatedAt": iso(T0 + 9000),
         "tagCount": 0, "manifestCount": 1},
        {"name": "app", "latestDigest": digest(2), "updatedAt": iso(T0 + 6000),
         "tagCount": 2, "manifestCount": 2},
        {"name": "old", "latestDigest": digest(4), "updatedAt": iso(T0),
         "tagCount": 0, "manifestCount": 1},
    ], body
    repos, pages = e.walk("listRepositories", "repositories", actor=ALICE, limit=1)
    assert [r["name"] for r in repos] == ["tools/cli", "app", "old"] and pages == 3
    # Another user's index is separate.
    e.seed.manifest(BOB, "app", digest(9), T0)
    e.seed.complete(BOB)
    assert [r["name"] for r in e.ok("listRepositories", actor=BOB)["repositories"]] == ["app"]


@with_env
def test_get_manifest_by_tag_and_digest(h, e):
    e.seed.manifest(ALICE, "app", digest(1), T0)
    m2 = e.seed.manifest(ALICE, "app", digest(2), T0 + 10, hold="did:web:hold2.example.com")
    e.seed.tag(ALICE, "app", "latest", digest(2), T0 + 20)
    e.seed.complete(ALICE)

    for ref in ("latest", digest(2)):
        body = e.ok("getManifest", actor=ALICE, repository="app", reference=ref)
        assert body["uri"] == f"at://{ALICE}/io.atcr.manifest/{m2}", body
        assert body["digest"] == digest(2) and body["repository"] == "app"
        assert body["mediaType"] == MEDIA and body["holdDid"] == "did:web:hold2.example.com"
        assert body["cid"].startswith("bafyrei")
        assert body["record"]["digest"] == digest(2) and body["record"]["schemaVersion"] == 2
    assert e.ok("getManifest", actor=ALICE, repository="app", reference=digest(1))["digest"] == \
        digest(1)

    for params in ({"repository": "app", "reference": "nope"},
                   {"repository": "app", "reference": digest(7)},
                   {"repository": "other", "reference": "latest"},
                   {"repository": "other", "reference": digest(1)}):
        status, body = e.get("getManifest", actor=ALICE, **params)
        assert status == 404 and body["error"] == "NotFound", (params, status, body)


@with_env
def test_list_recent_pages_once_each(h, e):
    want = []
    for i in range(12):
        did = ALICE if i % 2 else BOB
        ms = T0 + 1000 * (i // 3)  # ties across users and repositories
        repo = "app" if i % 3 else "tools/cli"
        e.seed.manifest(did, repo, digest(i), ms)
        want.append((ms, f"{did} {repo} {digest(i)}"))
    want.sort(reverse=True)
    got, pages = e.walk("listRecent", "manifests", limit=5)
    assert pages == 3
    assert [(m["did"], m["repository"], m["digest"]) for m in got] == \
        [tuple(w[1].split(" ")) for w in want], got
    assert [m["createdAt"] for m in got] == [iso(w[0]) for w in want]
    assert len(e.ok("listRecent")["manifests"]) == 12


@with_env
def test_not_found(h, e):
    e.seed.manifest(ALICE, "app", digest(1), T0)
    e.seed.complete(ALICE)
    status, body = e.get("listTags", actor=ALICE, repository="app")
    assert status == 404 and body["error"] == "NotFound", body  # a repository without tags
    status, body = e.get("listTags", actor=ALICE, repository="nope")
    assert status == 404 and body["error"] == "NotFound", body
    # A DID nobody knows: not in Valkey, and the PLC directory answers 404.
    nobody = "did:plc:nobody7777777777777777777"
    for method, params in (("listRepositories", {}), ("listTags", {"repository": "app"}),
                           ("getManifest", {"repository": "app", "reference": "latest"})):
        status, body = e.get(method, actor=nobody, **params)
        assert status == 404 and body["error"] == "RepoNotFound", (method, status, body)
        assert body["message"]


@with_env
def test_handle_actor(h, e):
    e.seed.manifest(ALICE, "app", digest(1), T0)
    e.seed.tag(ALICE, "app", "latest", digest(1), T0)
    e.seed.complete(ALICE)
    e.seed.handle(ALICE, "alice.test")
    body = e.ok("listTags", actor="alice.test", repository="app")
    assert body["did"] == ALICE and [t["tag"] for t in body["tags"]] == ["latest"]
    assert e.ok("listRepositories", actor="Alice.Test")["did"] == ALICE


@with_env
def test_bad_parameters(h, e):
    e.seed.manifest(ALICE, "app", digest(1), T0)
    e.seed.tag(ALICE, "app", "latest", digest(1), T0)
    e.seed.tag(ALICE, "app", "v1", digest(1), T0 + 1)
    e.seed.complete(ALICE)
    good_cursor = e.ok("listTags", actor=ALICE, repository="app", limit=1)
    bad = [
        ("listRepositories", {}),
        ("listRepositories", {"actor": "not a did"}),
        ("listRepositories", {"actor": "did:plc:"}),
        ("listRepositories", {"actor": ALICE, "limit": "0"}),
        ("listRepositories", {"actor": ALICE, "limit": "101"}),
        ("listRepositories", {"actor": ALICE, "limit": "ten"}),
        ("listRepositories", {"actor": ALICE, "limit": "-1"}),
        ("listRepositories", {"actor": ALICE, "cursor": "!!!"}),
        ("listRepositories", {"actor": ALICE, "cursor": "x" * 600}),
        ("listRepositories",
         {"actor": ALICE, "cursor": base64.urlsafe_b64encode(b"12x app").decode().rstrip("=")}),
        ("listTags", {"actor": ALICE}),
        ("listTags", {"actor": ALICE, "repository": "Bad Repo"}),
        ("listTags", {"actor": ALICE, "repository": "app",
                      "cursor": base64.urlsafe_b64encode(b"123 bad tag!").decode().rstrip("=")}),
        ("getManifest", {"actor": ALICE, "repository": "app"}),
        ("getManifest", {"actor": ALICE, "repository": "app", "reference": "-bad"}),
        ("getManifest", {"actor": ALICE, "repository": "app", "reference": "sha256:xyz"}),
        ("listRecent", {"limit": "1000"}),
        ("listRecent", {"cursor": base64.urlsafe_b64encode(b"1 not-a-member").decode()}),
    ]
    for method, params in bad:
        status, body = e.get(method, **params)
        assert status == 400, (method, params, status, body)
        assert body["error"] == "InvalidRequest" and body["message"], (method, params, body)
    assert e.h.metrics(e.url)["appview_reads_invalid_total"] == len(bad)

    status, body = e.h.get_json(e.url + "/xrpc/io.atcr.repo.noSuchMethod")
    assert status == 501 and body["error"] == "MethodNotImplemented", body
    # Still serving, and a cursor the server made still works.
    assert "cursor" in good_cursor
    rest = e.ok("listTags", actor=ALICE, repository="app", cursor=good_cursor["cursor"])
    assert [t["tag"] for t in rest["tags"]] == ["latest"] and "cursor" not in rest


@with_env
def test_partial_index_served_stale_when_upstream_fails(h, e):
    # What the firehose showed of a DID whose PDS is down: a partial index, not complete.
    did = "did:plc:partial77777777777777777"
    e.plc.add(did, "partial.test", f"http://127.0.0.1:{free_port()}")
    e.seed.manifest(did, "app", digest(1), T0)
    e.seed.tag(did, "app", "latest", digest(1), T0 + 1)
    body = e.ok("listTags", actor=did, repository="app")
    assert body["stale"] is True and [t["tag"] for t in body["tags"]] == ["latest"], body
    body = e.ok("listRepositories", actor=did)
    assert body["stale"] is True and body["repositories"][0]["name"] == "app", body
    # A record is a record: getManifest by digest needs no complete index.
    assert e.ok("getManifest", actor=did, repository="app", reference=digest(1))["digest"] == \
        digest(1)
    # Nothing cached for that repository: the upstream failure is the answer.
    status, body = e.get("listTags", actor=did, repository="other")
    assert status == 502 and body["error"] == "UpstreamFailure", (status, body)
    m = h.metrics(e.url)
    assert m["appview_reads_stale_total"] == 2
    assert m["appview_reads_cache_misses_total"] >= 3


@with_env
def test_valkey_down_is_an_error_not_a_crash(h, e):
    e.seed.manifest(ALICE, "app", digest(1), T0)
    e.seed.tag(ALICE, "app", "latest", digest(1), T0)
    e.seed.complete(ALICE)
    assert e.ok("listTags", actor=ALICE, repository="app")["tags"]
    e.redis.kill()
    for method, params in (("listTags", {"actor": ALICE, "repository": "app"}),
                           ("getManifest", {"actor": ALICE, "repository": "app",
                                            "reference": "latest"}),
                           ("listRecent", {})):
        status, body = e.get(method, **params)
        assert status == 502 and body["error"] == "UpstreamFailure", (method, status, body)
