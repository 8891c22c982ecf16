"""The appview's Jetstream client (appview/jetstream.c), driven through tests/tools/jetstream_tail.

Against the replay server: v1 and v2 endpoints chosen by the URL path, wanted collections and
cursor in the request, fail-over to the next URL, reconnect with the cursor after a drop,
pause/resume. Against small Python WebSocket servers in this file: a server that goes silent
after the handshake (stall detection), and hand-made frames (oversize messages, fragmented
messages with a ping in between, binary frames, messages larger than one read).
"""
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time

from harness import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASIC = os.path.join(ROOT, "tests", "fixtures", "basic.jsonl")
V2 = "/xrpc/network.bsky.jetstream.subscribeEvents"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def available():
    return None


def fixture():
    with open(BASIC) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def replay(h, *args):
    port = free_port()
    p = h.spawn("replay", [h.binary("tools/jetstream_replay"), "--listen", f"127.0.0.1:{port}",
                           "--events", BASIC, "--stats", *args])
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
             what="replay server listening")
    p.base = f"ws://127.0.0.1:{port}"
    return p


def stats(p):
    host, port = p.base[len("ws://"):].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /_stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def tail(h, urls, *args, name="tail", env=None):
    out = os.path.join(h.tmp, name + ".out")
    argv = [h.binary("tools/jetstream_tail"), "--out", out]
    for u in urls:
        argv += ["--url", u]
    p = h.spawn(name, argv + [str(a) for a in args], env=env, sanitized=True)
    p.out = out
    return p


def finish(p, timeout=20):
    """Waits for the tool to exit by itself; returns (messages, summary dict, log)."""
    rc = p.wait(timeout)
    log = p.log()
    assert rc == 0, f"jetstream_tail exited {rc}:\n{log[-3000:]}"
    with open(p.out) as f:
        msgs = [line.rstrip("\n") for line in f]
    m = re.search(r"^messages=.*$", log, re.M)
    assert m, log
    summary = {k: float(v) for k, v in (kv.split("=") for kv in m.group(0).split())}
    return msgs, summary, log


def expected_v1(lines, wanted):
    """What Jetstream v1 sends for wantedCollections: matching commits, all identity/account."""
    out = []
    for line in lines:
        ev = json.loads(line)
        if ev["kind"] != "commit" or ev["commit"]["collection"] in wanted:
            out.append(line)
    return out


# ---- against the replay server ----

def test_v1_sends_wanted_collections_and_gets_only_those(h):
    p = replay(h)
    wanted = ["io.atcr.manifest", "io.atcr.tag"]
    want = expected_v1(fixture(), wanted)
    assert len(want) < len(fixture()), "the fixture must carry collections to filter out"
    t = tail(h, [p.base + "/subscribe"], "--collection", wanted[0], "--collection", wanted[1],
             "--count", len(want))
    msgs, summary, log = finish(t)
    assert msgs == want
    assert summary["reconnects"] == 0
    assert f"connected {p.base}/subscribe" in log
    assert stats(p)["requests"][0] == \
        "/subscribe?wantedCollections=io.atcr.manifest&wantedCollections=io.atcr.tag"


def test_v2_path_speaks_v2_and_keeps_the_configured_query(h):
    p = replay(h)
    t = tail(h, [p.base + V2 + "?compress=false"], "--collection", "io.atcr.*", "--count", 5)
    msgs, _, _ = finish(t)
    frames = [json.loads(m) for m in msgs]
    assert all(f["$type"].startswith("network.bsky.jetstream.subscribeEvents#") for f in frames)
    assert [f["seq"] for f in frames] == sorted(f["seq"] for f in frames)
    assert all(f["commit"]["collection"].startswith("io.atcr.")
               for f in frames if f["kind"] == "commit")
    assert stats(p)["requests"][0] == (V2 + "?compress=false&collections=io.atcr.*"
                                       "&kinds=commit&kinds=identity&kinds=account")


def test_cursor_resumes_from_the_given_point(h):
    p = replay(h)
    lines = fixture()
    t10 = json.loads(lines[9])["time_us"]
    t = tail(h, [p.base + "/subscribe"], "--cursor", t10, "--count", len(lines) - 9)
    msgs, _, _ = finish(t)
    assert msgs == lines[9:]
    assert stats(p)["requests"][0] == f"/subscribe?cursor={t10}"


def test_refused_first_url_falls_over_to_the_second(h):
    p = replay(h)
    dead = f"ws://127.0.0.1:{free_port()}/subscribe"
    lines = fixture()
    t = tail(h, [dead, p.base + "/subscribe"], "--count", len(lines))
    msgs, summary, log = finish(t)
    assert msgs == lines
    assert f"cannot connect to {dead}" in log
    assert summary["reconnects"] == 1, "one failed attempt, then no backoff before the second URL"


def test_dropped_connection_resumes_from_the_last_cursor(h):
    p = replay(h, "--drop-after", "7")
    lines = fixture()
    t = tail(h, [p.base + "/subscribe"], "--count", len(lines))
    msgs, summary, log = finish(t)
    assert msgs == lines, "nothing lost or repeated across reconnects"
    drops = (len(lines) - 1) // 7
    assert summary["reconnects"] == drops
    assert log.count("connected ws://") == drops + 1
    reqs = stats(p)["requests"]
    assert reqs[1] == "/subscribe?cursor=%d" % (json.loads(lines[6])["time_us"] + 1)


def test_v2_drop_resumes_by_seq(h):
    p = replay(h, "--drop-after", "15")
    lines = fixture()
    t = tail(h, [p.base + V2], "--count", len(lines))
    msgs, summary, _ = finish(t)
    assert [json.loads(m)["seq"] for m in msgs] == list(range(1, len(lines) + 1))
    assert "/xrpc/network.bsky.jetstream.subscribeEvents?kinds=commit&kinds=identity" \
           "&kinds=account&cursor=15" in stats(p)["requests"]


def test_pause_holds_messages_and_resume_delivers_them_in_order(h):
    p = replay(h)
    lines = fixture()
    start = time.time()
    t = tail(h, [p.base + "/subscribe"], "--count", len(lines), "--pause-after", 3,
             "--pause-ms", 600)
    msgs, summary, log = finish(t)
    assert msgs == lines
    assert time.time() - start >= 0.6
    assert "paused" in log and "resumed" in log
    assert summary["reconnects"] == 0


def test_bad_url_is_refused_with_a_clear_error(h):
    t = h.spawn("tail", [h.binary("tools/jetstream_tail"), "--url", "http://example.com/x"],
                sanitized=True)
    assert t.wait(10) == 1
    assert "want ws:// or wss://" in t.log()


# ---- against hand-made servers ----

def frame(opcode, payload=b"", fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


def read_frame(conn):
    """One client frame (masked, as clients must): (opcode, unmasked payload)."""
    def exact(n):
        b = b""
        while len(b) < n:
            chunk = conn.recv(n - len(b))
            if not chunk:
                raise EOFError
            b += chunk
        return b
    b0, b1 = exact(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack(">H", exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(8))[0]
    mask = exact(4)
    data = exact(n)
    return b0 & 0x0f, bytes(c ^ mask[i % 4] for i, c in enumerate(data))


class WsServer:
    """Accepts connections, answers the upgrade, then runs `script(conn)` for each."""

    def __init__(self, script, tls=None):
        self.script, self.tls = script, tls
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        port = self.sock.getsockname()[1]
        self.url = ("wss://localhost:%d/subscribe" if tls else "ws://127.0.0.1:%d/subscribe") % port
        self.connections = 0
        self.errors = []
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.conns.append(conn)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                req += chunk
            key = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", req).group(1)
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.script(conn)
        except Exception as e:  # reported by the test, not lost in a thread
            self.errors.append(repr(e))

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_silent_server_is_detected_as_stalled_and_replaced(h):
    silent = WsServer(lambda conn: time.sleep(30))
    p = replay(h)
    lines = fixture()
    try:
        start = time.time()
        t = tail(h, [silent.url, p.base + "/subscribe"], "--stall", 1, "--count", len(lines))
        msgs, summary, log = finish(t)
    finally:
        silent.close()
    assert msgs == lines
    assert summary["stalls"] == 1
    assert f"connected {silent.url}" in log, "the handshake succeeded; the stream then stalled"
    assert re.search(r"disconnected from .*stalled", log)
    assert 1.0 <= time.time() - start < 10
    assert not silent.errors


def test_frames_oversize_fragmented_binary_and_ping(h):
    big = 250_000  # more than one 256 KiB read once framed with what precedes it
    msgs_sent = {
        "a": json.dumps({"n": "a", "time_us": 1}),
        "frag": json.dumps({"n": "frag", "pad": "f" * 150_000}),
        "big": json.dumps({"n": "big", "pad": "b" * big}),
        "z": json.dumps({"n": "z", "pad": "é"}),
    }
    pong = {}

    def script(conn):
        conn.sendall(frame(1, msgs_sent["a"].encode()))
        conn.sendall(frame(1, b"x" * 400_000))  # oversize, one frame
        for i in range(4):  # oversize, in fragments
            conn.sendall(frame(0 if i else 1, b"y" * 100_000, fin=i == 3))
        f = msgs_sent["frag"].encode()
        parts = [f[:50_000], f[50_000:100_000], f[100_000:]]
        conn.sendall(frame(1, parts[0], fin=False))
        conn.sendall(frame(9, b"are you there"))  # a ping between fragments
        conn.sendall(frame(0, parts[1], fin=False) + frame(0, parts[2]))
        pong["frame"] = read_frame(conn)
        conn.sendall(frame(2, b"\x00\x01binary"))
        data = frame(1, msgs_sent["big"].encode()) + frame(1, msgs_sent["z"].encode())
        for i in range(0, len(data), 7919):  # split reads, headers cut in the middle
            conn.sendall(data[i:i + 7919])
            time.sleep(0.001)
        time.sleep(10)

    srv = WsServer(script)
    try:
        t = tail(h, [srv.url], "--max-message", 300_000, "--count", 4)
        msgs, summary, log = finish(t)
    finally:
        srv.close()
    assert not srv.errors, srv.errors
    assert msgs == [msgs_sent["a"], msgs_sent["frag"], msgs_sent["big"], msgs_sent["z"]]
    assert summary["oversize"] == 2 and summary["binary"] == 1
    assert summary["reconnects"] == 0
    assert pong["frame"] == (10, b"are you there"), "a ping is answered with its payload"
    assert log.count("skipped a message") == 2


def test_protocol_error_drops_and_reconnects(h):
    def script(conn):
        if srv.connections == 1:
            conn.sendall(frame(1, b'{"first":1}') + bytes([0x81, 0x85]) + b"mask" + b"hello")
        else:
            conn.sendall(frame(1, b'{"second":1}'))
        time.sleep(10)

    srv = WsServer(script)
    try:
        t = tail(h, [srv.url], "--count", 2)
        msgs, summary, log = finish(t)
    finally:
        srv.close()
    assert msgs == ['{"first":1}', '{"second":1}']
    assert "server sent a masked frame" in log
    assert summary["reconnects"] == 1


def test_wss_with_a_trusted_ca(h):
    if not shutil.which("openssl"):
        return  # no way to mint a certificate here; the ws:// tests still cover the framing
    key, cert = os.path.join(h.tmp, "key.pem"), os.path.join(h.tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    frag = json.dumps({"n": "frag", "pad": "f" * 100_000}).encode()

    def script(conn):
        conn.sendall(frame(1, b'{"n":"a"}'))
        conn.sendall(frame(1, b"x" * 150_000))  # oversize
        conn.sendall(frame(1, frag[:40_000], fin=False) + frame(0, frag[40_000:]))
        conn.sendall(frame(1, b'{"n":"z"}'))
        time.sleep(10)

    srv = WsServer(script, tls=ctx)
    try:
        untrusted = tail(h, [srv.url], "--count", 1, name="untrusted")
        wait_for(lambda: "cannot connect to " + srv.url in untrusted.log(),
                 what="the self-signed certificate to be refused")
        untrusted.stop()
        t = tail(h, [srv.url], "--max-message", 120_000, "--count", 3,
                 env={"SSL_CERT_FILE": cert})
        msgs, summary, log = finish(t)
    finally:
        srv.close()
    assert msgs == ['{"n":"a"}', frag.decode(), '{"n":"z"}']
    assert summary["oversize"] == 1
    assert f"connected {srv.url}" in log
