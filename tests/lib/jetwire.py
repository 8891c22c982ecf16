"""What tests need to speak Jetstream as it runs today (bluesky-social/jetstream, docs/README.md
section 5): the v2 frame a v1 event line becomes, zstd with a dictionary (libzstd through
ctypes), and a self-signed certificate for wss://.

    jetwire.v2_payload(json.loads(line), seq)   # the payload the lexicon describes
    jetwire.decompress(dictionary, frame)       # a dict-zstd binary message -> bytes
    jetwire.dict_id(dictionary)                 # the id in a structured dictionary's header
    cert, key = jetwire.self_signed(h.tmp)      # CN/SAN localhost
"""
import ctypes
import ctypes.util
import datetime
import os
import struct
import subprocess

V2_PATH = "/xrpc/network.bsky.jetstream.subscribeEvents"
DICT_PATH = "/xrpc/network.bsky.jetstream.getZstdDictionary"
V2_TYPE = "network.bsky.jetstream.subscribeEvents#"
SUBPROTOCOL = "xrpc.v1.json"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEXICONS = os.path.join(ROOT, "tests", "fixtures", "jetstream-lexicons")


def wire_time(time_us):
    """RFC 3339, UTC, exactly six fractional digits: the v2 "time" fields."""
    t = datetime.datetime.fromtimestamp(time_us // 1_000_000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (time_us % 1_000_000)


def v2_payload(ev, seq):
    """The v2 payload of a v1 event: commits flattened, the other kinds wrapping the upstream
    event, with Jetstream's own seq and time."""
    kind = ev["kind"]
    p = {"$type": V2_TYPE + kind, "did": ev["did"], "seq": seq, "time": wire_time(ev["time_us"])}
    if kind == "commit":
        p.update(ev["commit"])
    else:
        p[kind] = ev[kind]
    return p


def v1_with_cursor(line, seq):
    """A v1 line as current servers send it: "cursor" right after time_us."""
    head, sep, rest = line.partition('"time_us":')
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return head + sep + rest[:digits] + ',"cursor":%d' % seq + rest[digits:]


_zstd = None


def _lib():
    global _zstd
    if _zstd is None:
        lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
        lib.ZSTD_createDCtx.restype = ctypes.c_void_p
        lib.ZSTD_freeDCtx.argtypes = [ctypes.c_void_p]
        lib.ZSTD_decompress_usingDict.restype = ctypes.c_size_t
        lib.ZSTD_decompress_usingDict.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
            ctypes.c_char_p, ctypes.c_size_t]
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
        lib.ZSTD_getFrameContentSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.ZSTD_getErrorName.restype = ctypes.c_char_p
        lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]
        _zstd = lib
    return _zstd


def decompress(dictionary, frame, limit=16 << 20):
    lib = _lib()
    size = lib.ZSTD_getFrameContentSize(frame, len(frame))
    if size >= (1 << 64) - 2:
        raise ValueError("no content size in the frame header (or not a zstd frame)")
    if size > limit:
        raise ValueError("frame of %d bytes over the limit" % size)
    out = ctypes.create_string_buffer(max(int(size), 1))
    dctx = lib.ZSTD_createDCtx()
    try:
        n = lib.ZSTD_decompress_usingDict(dctx, out, size, frame, len(frame), dictionary,
                                          len(dictionary))
    finally:
        lib.ZSTD_freeDCtx(dctx)
    if lib.ZSTD_isError(n):
        raise ValueError(lib.ZSTD_getErrorName(n).decode())
    return out.raw[:n]


def dict_id(dictionary):
    magic, did = struct.unpack("<II", dictionary[:8])
    if magic != 0xEC30A437:
        raise ValueError("not a structured zstd dictionary")
    return did


def frame_dict_id(frame):
    """The dictionary id a zstd frame header names (0: none)."""
    fhd = frame[4]
    size = (0, 1, 2, 4)[fhd & 3]
    start = 5 + (0 if fhd & 0x20 else 1)
    return int.from_bytes(frame[start:start + size], "little") if size else 0


def self_signed(directory, name="localhost"):
    """(cert, key) paths of a fresh self-signed certificate for name."""
    key, cert = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=" + name,
                    "-addext", "subjectAltName=DNS:" + name], check=True, capture_output=True)
    return cert, key
