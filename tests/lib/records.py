"""Records as real writers make them, for the integration tests: TID record keys and revs, at-uri
references, datetimes as RFC 3339 strings; and an index seeded through the appview's own write
path (tests/tools/fold_records: the loader's compare-and-set of the fold's plans)."""
import datetime
import json
import subprocess

B32 = "234567abcdefghijklmnopqrstuvwxyz"
CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
MEDIA = "application/vnd.oci.image.manifest.v1+json"
# 2024-11-19T07:06:40Z in microseconds: TIDs made from it sort like real ones of that time.
TID_BASE_US = 1732000000000000


def tid(n):
    """A TID (atproto timestamp identifier): 13 base32-sortable characters of a 64-bit number
    whose top bit is 0; n is used whole (microseconds << 10 | clock id)."""
    return "".join(B32[(n >> (5 * i)) & 31] for i in range(12, -1, -1))


def tid_at(us, clock=0):
    """The TID of microsecond us and a clock id."""
    return tid((us << 10) | clock)


def iso(ms):
    """Unix milliseconds as a datetime string with milliseconds and Z, as most writers do."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def manifest_record(repo, digest, created_at, hold="did:web:hold.example.com"):
    return {"$type": "io.atcr.manifest", "repository": repo, "digest": digest,
            "mediaType": MEDIA, "schemaVersion": 2, "createdAt": created_at, "holdDid": hold}


def tag_record(did, repo, tag, manifest_rkey, created_at, manifest_digest=None):
    rec = {"$type": "io.atcr.tag", "repository": repo, "tag": tag, "createdAt": created_at}
    if manifest_rkey:
        rec["manifest"] = f"at://{did}/io.atcr.manifest/{manifest_rkey}"
    if manifest_digest:
        rec["manifestDigest"] = manifest_digest
    return rec


class Seeder:
    """Records folded into a redis-server through tests/tools/fold_records, in the order given.
    Writes are buffered and sent by flush(), which callers run before they read."""

    def __init__(self, h, redis, prefix="atcr:"):
        self.h, self.redis, self.prefix = h, redis, prefix
        self.pending = []
        self.n = 0
        self.rkeys = {}  # (did, repo, digest) -> the rkey of the manifest record made for it

    def next_tid(self):
        self.n += 1
        return tid_at(TID_BASE_US + self.n * 1000)

    def put(self, did, collection, rkey, record):
        self.pending.append({"did": did, "collection": collection, "rkey": rkey,
                             "rev": self.next_tid(), "cid": CID, "record": record})

    def manifest(self, did, repo, digest, ms, hold="did:web:hold.example.com", rkey=None):
        """A manifest record with a TID record key; returns the key."""
        rkey = rkey or self.next_tid()
        self.rkeys[(did, repo, digest)] = rkey
        self.put(did, "io.atcr.manifest", rkey, manifest_record(repo, digest, iso(ms), hold))
        return rkey

    def tag(self, did, repo, tag, digest, ms, rkey=None):
        """A tag record pointing at the manifest made for digest (by at-uri), or by its
        deprecated manifestDigest when no manifest record was made for it."""
        rkey = rkey or f"{repo.replace('/', '_')}_{tag}"
        mrkey = self.rkeys.get((did, repo, digest))
        rec = tag_record(did, repo, tag, mrkey, iso(ms), None if mrkey else digest)
        self.put(did, "io.atcr.tag", rkey, rec)
        return rkey

    def delete(self, did, collection, rkey):
        self.pending.append({"did": did, "collection": collection, "rkey": rkey,
                             "rev": self.next_tid(), "delete": True})

    def flush(self):
        if not self.pending:
            return
        lines = "".join(json.dumps(p) + "\n" for p in self.pending)
        self.pending = []
        out = subprocess.run([self.h.binary("tools/fold_records"), self.redis.url, "lexicons",
                              self.prefix], input=lines, capture_output=True, text=True,
                             cwd=self.h.root, timeout=60)
        assert out.returncode == 0, out.stderr

    def complete(self, did):
        self.flush()
        self.h.redis(self.redis, "SET", f"{self.prefix}{{{did}}}/complete", "1", "EX", 3600)

    def handle(self, did, handle):
        self.flush()
        self.h.redis(self.redis, "SET", f"{self.prefix}handle:{handle}", did, "EX", 3600)
        self.h.redis(self.redis, "HSET", f"{self.prefix}{{{did}}}/id", "handle", handle, "pds",
                     "http://127.0.0.1:1")
