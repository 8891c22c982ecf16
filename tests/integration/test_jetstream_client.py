"""The appview's Jetstream client (appview/jetstream.c), driven through tests/tools/jetstream_tail.

Against the replay server (which speaks Jetstream as it runs today): v1 and v2 endpoints chosen
by the URL path, wanted collections and cursor in the request, fail-over to the next URL,
reconnect with the cursor after a drop, pause/resume, dict-zstd (the same messages, fewer
bytes; a retired dictionary fetched again; corrupt frames and bombs dropped), refusals before
the upgrade (CursorTooOld, InvalidRequest), error frames, wss:// with a test certificate.
Against small Python WebSocket servers in this file: a server that goes silent after the
handshake (stall detection), hand-made frames (oversize messages, fragmented messages with a
ping in between, binary frames, messages larger than one read), subprotocol answers.
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

import jetwire
from harness import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASIC = os.path.join(ROOT, "tests", "fixtures", "basic.jsonl")
V2 = "/xrpc/network.bsky.jetstream.subscribeEvents"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def available():
    return None


def fixture():
    """The fixture's events as current v1 servers send them (with "cursor", their seq)."""
    with open(BASIC) as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    return [jetwire.v1_with_cursor(line, i + 1) for i, line in enumerate(lines)]


def replay(h, *args, name="replay", tls=None):
    port = free_port()
    extra = ["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else []
    p = h.spawn(name, [h.binary("tools/jetstream_replay"), "--listen", f"127.0.0.1:{port}",
                       "--events", BASIC, "--stats", *extra, *args])
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
             what="replay server listening")
    p.base = f"wss://localhost:{port}" if tls else f"ws://127.0.0.1:{port}"
    p.port = port
    p.cafile = tls[0] if tls else None
    return p


def stats(p, path="/_stats"):
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        if p.cafile:
            s = ssl.create_default_context(cafile=p.cafile).wrap_socket(
                s, server_hostname="localhost")
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def payload_seqs(msgs):
    return [json.loads(m)["payload"]["seq"] for m in msgs]


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
    t = tail(h, [p.base + V2 + "?compress=false"], "--collection", "io.atcr.*", "--count", 5,
             "--no-compress")
    msgs, _, _ = finish(t)
    frames = [json.loads(m) for m in msgs]
    assert all(f["$type"] == "message" and f["payload"]["$type"].startswith(jetwire.V2_TYPE)
               for f in frames)
    seqs = payload_seqs(msgs)
    assert seqs == sorted(seqs)
    assert all(f["payload"]["collection"].startswith("io.atcr.")
               for f in frames if f["payload"]["$type"].endswith("#commit"))
    assert stats(p)["requests"][0] == (V2 + "?compress=false&collections=io.atcr.*"
                                       "&kinds=commit&kinds=identity&kinds=account&kinds=sync")


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
    assert reqs[1] == "/subscribe?cursor=8", "the seq after the last one: the cursor is inclusive"


def test_legacy_v1_resumes_by_time_us(h):
    p = replay(h, "--drop-after", "7", "--legacy-v1")
    with open(BASIC) as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    t = tail(h, [p.base + "/subscribe"], "--count", len(lines))
    msgs, _, _ = finish(t)
    assert msgs == lines
    assert stats(p)["requests"][1] == "/subscribe?cursor=%d" % (json.loads(lines[6])["time_us"] + 1)


def test_v2_drop_resumes_by_seq(h):
    p = replay(h, "--drop-after", "15")
    lines = fixture()
    t = tail(h, [p.base + V2], "--count", len(lines))
    msgs, summary, _ = finish(t)
    assert payload_seqs(msgs) == list(range(1, len(lines) + 1))
    reqs = [r for r in stats(p)["requests"] if r.startswith(V2)]
    assert reqs[0].startswith(V2 + "?kinds=commit&kinds=identity&kinds=account&kinds=sync"
                              "&zstdDictionary="), reqs
    assert reqs[1].startswith(V2 + "?kinds=commit&kinds=identity&kinds=account&kinds=sync"
                              "&cursor=16&zstdDictionary="), reqs


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


def test_v2_dict_zstd_gives_the_same_messages_in_fewer_bytes(h):
    p = replay(h, "--loop", "5")
    n = 5 * len(fixture())
    plain = tail(h, [p.base + V2], "--count", n, "--no-compress", name="plain")
    msgs_plain, s_plain, _ = finish(plain)
    packed = tail(h, [p.base + V2], "--count", n, name="packed")
    msgs, s, log = finish(packed)
    assert msgs == msgs_plain, "decompressed frames are exactly the text frames"
    assert "(zstd)" in log and s["zstd_errors"] == 0
    assert s["decompressed"] == s_plain["bytes"] == s_plain["decompressed"]
    assert s["bytes"] < 0.5 * s["decompressed"], (s["bytes"], s["decompressed"])
    assert stats(p)["framesCompressed"] == n


def test_corrupt_and_oversized_zstd_frames_are_dropped_and_the_stream_goes_on(h):
    p = replay(h, "--bad-zstd", "6")
    lines = fixture()
    t = tail(h, [p.base + V2], "--count", len(lines), "--max-message", 1 << 20)
    msgs, s, log = finish(t)
    assert payload_seqs(msgs) == list(range(1, len(lines) + 1)), "nothing else lost"
    bad = len(lines) // 6
    assert s["zstd_errors"] == (bad + 1) // 2 and s["oversize"] == bad // 2, s
    assert s["reconnects"] == 0
    assert "dropped a zstd frame" in log and "skipped a zstd frame decompressing to 2097152" in log


def test_a_retired_dictionary_is_fetched_again(h):
    p = replay(h, "--drop-after", "10", "--rate", "20")
    lines = fixture()
    t = tail(h, [p.base + V2], "--count", len(lines))
    wait_for(lambda: "(zstd)" in t.log(), what="the first compressed connection")
    old = stats(p)["dictionaryId"]
    stats(p, "/_rotate")  # a retrain while it reads: its reconnect names a retired id
    msgs, s, log = finish(t)
    assert payload_seqs(msgs) == list(range(1, len(lines) + 1))
    new = stats(p)["dictionaryId"]
    assert new != old
    assert f"retired zstd dictionary {old} (now {new})" in log
    assert f"zstd dictionary {new} (" in log
    reqs = [r for r in stats(p)["requests"] if r.startswith(V2)]
    assert f"zstdDictionary={old}" in reqs[1] and reqs[2].endswith(f"zstdDictionary={new}"), reqs
    assert "cursor=11&" in reqs[1] and "cursor=11&" in reqs[2], "the refusal moved nothing"


def test_no_dictionary_means_an_uncompressed_stream(h):
    p = replay(h, "--dict-fetch-fails")
    lines = fixture()
    t = tail(h, [p.base + V2], "--count", len(lines))
    msgs, s, log = finish(t)
    assert payload_seqs(msgs) == list(range(1, len(lines) + 1))
    assert "reading it uncompressed" in log and s["bytes"] == s["decompressed"]
    assert not any("zstdDictionary" in r for r in stats(p)["requests"])


def test_cursor_too_old_resumes_from_the_floor(h):
    p = replay(h, "--floor", "25")
    lines = fixture()
    t = tail(h, [p.base + V2], "--cursor", 3, "--count", len(lines) - 24)
    msgs, s, log = finish(t)
    assert payload_seqs(msgs) == list(range(25, len(lines) + 1))
    assert s["too_old"] == 1 and "too old at %s: floor 25" % (p.base + V2) in log
    reqs = [r for r in stats(p)["requests"] if r.startswith(V2)]
    assert "cursor=3&" in reqs[0] and "cursor=25&" in reqs[1], reqs


def test_invalid_request_is_logged_and_the_next_url_tried(h):
    p = replay(h)
    lines = fixture()
    bad = p.base + V2 + "?wantedCollections=io.atcr.tag"
    t = tail(h, [bad, p.base + "/subscribe"], "--count", len(lines))
    msgs, s, log = finish(t)
    assert msgs == lines
    assert "refused the request as invalid" in log and "wantedCollections" in log


def test_an_error_frame_ends_the_stream_and_it_resumes_after_a_backoff(h):
    p = replay(h, "--error-after", "12")
    lines = fixture()
    start = time.time()
    t = tail(h, [p.base + V2], "--count", len(lines))
    msgs, s, log = finish(t)
    assert payload_seqs(msgs) == list(range(1, len(lines) + 1))
    assert "retrying %s in" % (p.base + V2) in log
    assert stats(p)["errorsSent"] >= 1 and time.time() - start >= 0.12
    reqs = [r for r in stats(p)["requests"] if r.startswith(V2)]
    assert "cursor=13&" in reqs[1], reqs
    assert "error frame: ConsumerTooSlow" in log


def test_wss_to_the_replay_with_a_test_certificate(h):
    if not shutil.which("openssl"):
        raise AssertionError("openssl is needed to mint the test certificate (make test installs it)")
    cert = jetwire.self_signed(h.tmp)
    p = replay(h, tls=cert)
    lines = fixture()
    env = {"SSL_CERT_FILE": cert[0]}
    t = tail(h, [p.base + "/subscribe"], "--count", len(lines), env=env, name="v1")
    msgs, _, log = finish(t)
    assert msgs == lines and f"connected {p.base}/subscribe" in log
    t = tail(h, [p.base + V2], "--count", len(lines), env=env, name="v2")
    msgs, s, log = finish(t)
    assert payload_seqs(msgs) == list(range(1, len(lines) + 1))
    # The dictionary comes through the HTTP client (libcurl), which trusts the system store
    # only: a private CA named by SSL_CERT_FILE costs compression, not the stream.
    assert "SSL certificate problem" in log and "reading it uncompressed" in log


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
    """Accepts connections, answers the upgrade (with `protocol` as Sec-WebSocket-Protocol
    when given), then runs `script(conn)` for each; requests keeps their heads."""

    def __init__(self, script, tls=None, protocol=None, path="/subscribe"):
        self.script, self.tls, self.protocol = script, tls, protocol
        self.requests = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        port = self.sock.getsockname()[1]
        self.url = ("wss://localhost:%d" if tls else "ws://127.0.0.1:%d") % port + path
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
            self.requests.append(req.decode(errors="replace"))
            key = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", req).group(1)
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
            proto = b"Sec-WebSocket-Protocol: %s\r\n" % self.protocol.encode() \
                if self.protocol else b""
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n" +
                         proto + b"\r\n")
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


def test_v2_offers_the_subprotocol_and_refuses_another(h):
    frame1 = json.dumps({"$type": "message", "payload": {
        "$type": jetwire.V2_TYPE + "info", "name": "ServerNotice"}}).encode()
    good = WsServer(lambda conn: (conn.sendall(frame(1, frame1)), time.sleep(10)),
                    protocol="xrpc.v1.json", path=V2)
    wrong = WsServer(lambda conn: time.sleep(10), protocol="xrpc.v2.cbor", path=V2)
    try:
        t = tail(h, [wrong.url, good.url], "--count", 1, "--no-compress")
        msgs, _, log = finish(t)
    finally:
        good.close()
        wrong.close()
    assert msgs == [frame1.decode()]
    assert "server chose a subprotocol we did not offer" in log
    assert all(re.search(r"(?im)^sec-websocket-protocol: xrpc\.v1\.json\r$", r)
               for r in good.requests + wrong.requests)
