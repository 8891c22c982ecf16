#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/ from the fixtures: the Jetstream messages of
tests/fuzz/../fixtures (as v1, and as v2 frames), the lexicons, the strings those messages
carry, DID documents and incrementStats bodies shaped like the fixtures' users, and HTTP
requests like the ones the services get. Each input is a file named by its SHA-1, as libFuzzer
names them; files already there (inputs the fuzzer found, regressions) are kept.

  python3 tests/fuzz/make_corpus.py
"""
import glob
import hashlib
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
FIXTURES = sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "*.jsonl")))


def save(name, data):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path = os.path.join(d, hashlib.sha1(data).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)


# Larger inputs (the fixtures' oversized message) would only slow the fuzzers down: libFuzzer
# sizes its inputs after the largest seed.
MAX_SEED = 16384


def fixture_lines():
    for path in FIXTURES:
        with open(path, "rb") as f:
            for line in f.read().split(b"\n"):
                if line.strip() and len(line) <= MAX_SEED:
                    yield line


def messages():
    """(raw line, parsed object or None) of every fixture message."""
    for line in fixture_lines():
        try:
            yield line, json.loads(line)
        except ValueError:
            yield line, None


def strings(v, out):
    if isinstance(v, str):
        out.add(v)
    elif isinstance(v, dict):
        for k, x in v.items():
            out.add(k)
            strings(x, out)
    elif isinstance(v, list):
        for x in v:
            strings(x, out)


def event_corpus():
    seq = 4000000000
    for line, obj in messages():
        save("event", b"\x00" + line)
        if isinstance(obj, dict):
            seq += 1
            kind = obj.get("kind", "commit")
            v2 = {"$type": f"network.bsky.jetstream.subscribeEvents#{kind}", "seq": seq, **obj}
            save("event", b"\x01" + json.dumps(v2, separators=(",", ":")).encode())
        else:
            save("event", b"\x01" + line)


def json_corpus():
    for line in fixture_lines():
        save("json_read", line)
    for path in sorted(glob.glob(os.path.join(ROOT, "lexicons", "**", "*.json"), recursive=True)):
        with open(path, "rb") as f:
            doc = f.read()
        if len(doc) <= MAX_SEED:
            save("json_read", doc)
    for case in ['{"count":2\0}', "[1,2,3]", '{"a":{"b":[null,true,false,1.5e3,-0]}}',
                 '["\\ud83d\\ude00","\\u00e9"]', '{"a":1,"a":2}', "[" * 50 + "]" * 50]:
        save("json_read", case)


def syntax_corpus():
    seen = set()
    for _, obj in messages():
        strings(obj, seen)
    seen |= {"at://did:plc:aliceaaaaaaaaaaaaaaaaaaa/io.atcr.manifest/3lbbuqg2kzc2f",
             "2025-01-12T23:20:50.123Z", "2025-01-12T23:20:50+01:00", "alice.bsky.social",
             "did:web:hold01.atcr.io%3A8443", "io.atcr.hold.stats", "library/ubuntu",
             "v1.2.3", "3lbbuqg2kzc2f", "xn--ls8h.test", "\u00e9t\u00e9"}
    for s in sorted(seen):
        if len(s) <= 1024:
            save("syntax", s)


DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def did_doc_corpus():
    base = {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": DID,
        "alsoKnownAs": ["at://alice.bsky.social"],
        "verificationMethod": [{"id": DID + "#atproto", "type": "Multikey", "controller": DID,
                                "publicKeyMultibase": "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"}],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                     "serviceEndpoint": "https://pds.example.com"}],
    }
    save("did_doc", json.dumps(base))
    save("did_doc", json.dumps(base, indent=2))
    save("did_doc", json.dumps({**base, "alsoKnownAs": ["at://a.example", "at://b.example",
                                                          "https://not-a-handle"]}))
    save("did_doc", json.dumps({**base, "service": base["service"] + [
        {"id": DID + "#atcr_hold", "type": "AtcrHold", "serviceEndpoint": "https://hold.example/"}]}))
    save("did_doc", json.dumps({**base, "id": "did:plc:someoneelse000000000000"}))
    save("did_doc", json.dumps({k: v for k, v in base.items() if k != "service"}))
    save("did_doc", json.dumps({**base, "service": {"id": "#atproto_pds"}}))
    save("did_doc", "did:web:hold01.atcr.io%3A8443")
    save("did_doc", "did:web:localhost")


def hold_body_corpus():
    users = []
    for _, obj in messages():
        commit = obj.get("commit") if isinstance(obj, dict) else None
        rec = commit.get("record") if isinstance(commit, dict) else None
        if isinstance(rec, dict) and isinstance(rec.get("repository"), str) and \
                isinstance(obj.get("did"), str):
            users.append((obj["did"], rec["repository"]))
    users = sorted(set(users))
    for i, (did, repo) in enumerate(users):
        save("hold_body", json.dumps({"did": did, "repository": repo,
                                      "event": "pull" if i % 2 else "push"}))
    save("hold_body", json.dumps({"events": [{"did": d, "repository": r, "event": "pull",
                                              "count": i + 1} for i, (d, r) in enumerate(users)]}))
    good = {"did": users[0][0], "repository": users[0][1], "event": "pull"}
    for bad in [{**good, "count": 0}, {**good, "count": 1.5}, {**good, "did": "not-a-did"},
                {**good, "repository": "Alice/App"}, {**good, "event": "fetch"}, {"events": []},
                {"events": [good, "pull"]}]:
        save("hold_body", json.dumps(bad))
    save("hold_body", '{"did":"%s","repository":"%s","event":"pull","count":2\0}' % users[0])


def http_corpus():
    reqs = [
        b"GET /xrpc/io.atcr.repo.listTags?actor=alice.bsky.social&repository=webapp&limit=10 "
        b"HTTP/1.1\r\nHost: appview.example\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
        b"GET /xrpc/com.atproto.sync.getBlob?did=did%3Aplc%3Aaliceaaaaaaaaaaaaaaaaaaa&cid=bafkrei"
        b"hdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku&repo=alice%2Fapp&exp=1700000000&sig="
        b"1730oSJXHniiqVWlCjlzHq44uEQ-_FkLF3yfiyqD7ag HTTP/1.1\r\nHost: hold\r\n\r\n",
        b"POST /xrpc/io.atcr.hold.incrementStats HTTP/1.1\r\nHost: hold\r\nAuthorization: Bearer "
        b"s3cret\r\nContent-Type: application/json\r\nContent-Length: 61\r\n\r\n"
        b'{"did":"did:plc:a","repository":"a/b","event":"pull","count":2}',
        b"POST /xrpc/io.atcr.hold.incrementStats HTTP/1.1\r\nHost: hold\r\nTransfer-Encoding: "
        b"chunked\r\nExpect: 100-continue\r\n\r\n5;x=y\r\nhello\r\n0\r\nTrailer: t\r\n\r\n",
        b"GET /xrpc/_health HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://h.example/xrpc/a?b=%20c+d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"\r\nOPTIONS * HTTP/1.1\nHost: a\n\n",
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /a%zz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    ]
    for r in reqs:
        save("http", r)


def main():
    event_corpus()
    json_corpus()
    syntax_corpus()
    did_doc_corpus()
    hold_body_corpus()
    http_corpus()
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {len(os.listdir(os.path.join(OUT, name)))} inputs")


if __name__ == "__main__":
    main()
