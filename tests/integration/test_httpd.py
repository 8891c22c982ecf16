"""atproto/httpd through tests/tools/httpd_probe: query parsing, the XRPC error envelopes,
bodies and their cap (Content-Length and chunked), asynchronous answers and clients that leave
before them, keep-alive and pipelining, many connections, malformed requests, large headers,
large answers read slowly, and SIGTERM with a request in flight. Every test ends with the
probe exiting 0 after SIGTERM, so ASan/LSan see a full shutdown."""
import http.client
import json
import re
import signal
import socket
import threading
import time
import urllib.parse

from harness import wait_for

MAX_BODY = 4096


def start_probe(h, name="probe", max_body=MAX_BODY):
    p = h.spawn(name, [h.binary("tools/httpd_probe"), "127.0.0.1:0", str(max_body)],
                sanitized=True)

    def port():
        m = re.search(r"^port (\d+)$", p.log(), re.M)
        return int(m.group(1)) if m else None
    p.port = wait_for(port, what="probe port")
    p.base = f"http://127.0.0.1:{p.port}"
    return p


def stop(p):
    assert p.stop() == 0, p.log()[-3000:]


def conn(p, timeout=10):
    return http.client.HTTPConnection("127.0.0.1", p.port, timeout=timeout)


def request(c, method, path, body=None, headers=None, chunked=False):
    c.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
    r = c.getresponse()
    data = r.read()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


def raw(p, data, timeout=5.0, quiet=1.0):
    """Sends bytes on a fresh socket and returns everything the server sends until it closes
    or stays quiet for a moment."""
    s = socket.create_connection(("127.0.0.1", p.port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        s.settimeout(quiet)
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def assert_serving(h, p):
    status, body = h.get_json(p.base + "/xrpc/echo?a=ok")
    assert status == 200 and body == {"a": {"count": 1, "first": "ok"}}, (status, body)


def test_query_params(h):
    p = start_probe(h)
    status, body = h.get_json(p.base + "/xrpc/echo?a=1&a=2&a=3&b=x%26y+z%3D&empty=&actor=did%3Aplc%3Aab")
    assert status == 200, body
    assert body["a"] == {"count": 3, "first": "1"}, body
    assert body["b"] == {"count": 1, "first": "x&y z="}, body
    assert body["empty"] == {"count": 1, "first": ""}, body
    assert body["actor"] == {"count": 1, "first": "did:plc:ab"}, body
    # A bare name is present with an empty value; no query at all is no parameters.
    assert h.get_json(p.base + "/xrpc/echo?empty")[1] == {"empty": {"count": 1, "first": ""}}
    assert h.get_json(p.base + "/xrpc/echo")[1] == {}
    q = urllib.parse.urlencode({"b": "é ü/?&=+"})
    assert h.get_json(p.base + "/xrpc/echo?" + q)[1] == {"b": {"count": 1, "first": "é ü/?&=+"}}
    stop(p)


def test_error_envelopes(h):
    p = start_probe(h)
    status, body = h.get_json(p.base + "/xrpc/io.example.nothing")
    assert status == 501 and body["error"] == "MethodNotImplemented", (status, body)
    assert isinstance(body["message"], str)
    status, body = h.get_json(p.base + "/not/xrpc")
    assert status == 404 and body["error"] == "NotFound", (status, body)
    status, body = h.post_json(p.base + "/xrpc/echo", {"x": 1})
    assert status == 405 and body["error"] == "InvalidRequest", (status, body)
    status, body = h.get_json(p.base + "/xrpc/body")
    assert status == 405, (status, body)
    c = conn(p)
    _, headers, _ = request(c, "GET", "/xrpc/echo")
    assert headers["content-type"] == "application/json", headers
    c.close()
    assert h.get_json(p.base + "/xrpc/peer") == (200, {"peer": "127.0.0.1"})
    # HEAD gets the status and headers without a body, and keep-alive survives it.
    c = conn(p)
    status, headers, data = request(c, "HEAD", "/xrpc/echo")
    assert status == 405 and data == b"" and int(headers["content-length"]) > 0, headers
    status, _, data = request(c, "GET", "/xrpc/echo?a=1")
    assert status == 200 and json.loads(data)["a"]["first"] == "1"
    c.close()
    stop(p)


def test_bodies_and_cap(h):
    p = start_probe(h)
    payload = bytes(range(256)) * 10  # 2560 bytes, every byte value
    c = conn(p)
    status, _, data = request(c, "POST", "/xrpc/body", body=payload)
    assert status == 200 and json.loads(data) == {"length": 2560, "sum": sum(payload)}, data
    status, _, data = request(c, "POST", "/xrpc/body", body=b"")
    assert json.loads(data) == {"length": 0, "sum": 0}, data
    # Over the cap by Content-Length: 413 before the body is read, and the connection closes
    # (the client still gets the answer: what it sends meanwhile is read and dropped).
    status, headers, data = request(c, "POST", "/xrpc/body", body=b"x" * (MAX_BODY + 1))
    assert status == 413 and json.loads(data)["error"] == "PayloadTooLarge", (status, data)
    assert headers.get("connection") == "close", headers
    c.close()

    # Chunked: decoded, and the connection carries the next request.
    c = conn(p)
    chunks = [b"hello ", b"chunked ", b"world" * 100]
    status, headers, data = request(c, "POST", "/xrpc/body", body=iter(chunks),
                                    headers={"Transfer-Encoding": "chunked"}, chunked=True)
    whole = b"".join(chunks)
    assert status == 200 and json.loads(data) == {"length": len(whole), "sum": sum(whole)}, data
    assert "connection" not in headers, headers
    local = c.sock.getsockname()
    status, _, data = request(c, "GET", "/xrpc/echo?a=after")
    assert status == 200 and json.loads(data)["a"]["first"] == "after"
    assert c.sock.getsockname() == local
    c.close()
    # Over the cap: the server may answer and close before the client sent the last chunk, so
    # the whole request goes out at once on a raw socket (http.client would see EPIPE).
    body = b"".join(b"%x\r\n%s\r\n" % (3000, b"y" * 3000) for _ in range(3)) + b"0\r\n\r\n"
    out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert out.startswith(b"HTTP/1.1 413"), out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["error"] == "PayloadTooLarge", out
    # Chunk extensions and trailers are skipped; a malformed size is a 400.
    out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b'{"length":3,"sum":294}'), out
    out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"zz\r\nabc\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and b"InvalidRequest" in out, out
    # No length and not chunked: an empty body (RFC 9112 6.3), answered, then closed.
    out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b'{"length":0,"sum":0}'), out
    m = h.metrics(p.base)
    assert m['http_bad_requests_total{reason="chunked"}'] == 1, m
    assert m['http_limit_hits_total{reason="body_too_large"}'] == 2, m
    assert_serving(h, p)
    stop(p)


def test_async_replies(h):
    p = start_probe(h)
    t0 = time.time()
    status, body = h.get_json(p.base + "/xrpc/slow?ms=200")
    assert status == 200 and body == {"slow": True} and time.time() - t0 >= 0.19
    # Ten at once are answered together, not one after another.
    results = []

    def one():
        results.append(h.get_json(p.base + "/xrpc/slow?ms=300"))
    threads = [threading.Thread(target=one) for _ in range(10)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.time() - t0 < 2.0
    assert results == [(200, {"slow": True})] * 10, results
    stop(p)


def test_client_leaves_before_async_reply(h):
    p = start_probe(h)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", p.port))
        s.sendall(b"GET /xrpc/slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.02)
        s.close()
    # A body half sent, then gone: the request never reaches a handler and is freed on close.
    s = socket.create_connection(("127.0.0.1", p.port))
    s.sendall(b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    time.sleep(0.05)
    s.close()
    time.sleep(0.5)  # the timers fire and answer requests whose clients are gone
    assert_serving(h, p)
    # Every request was freed: the drain on SIGTERM (which waits for none in flight) ends.
    stop(p)


def test_keep_alive_and_pipelining(h):
    p = start_probe(h)
    c = conn(p)
    c.connect()
    local = c.sock.getsockname()
    for i in range(20):
        status, _, data = request(c, "GET", f"/xrpc/echo?a={i}")
        assert status == 200 and json.loads(data)["a"]["first"] == str(i)
        status, _, data = request(c, "POST", "/xrpc/body", body=b"k" * i)
        assert status == 200 and json.loads(data)["length"] == i
    for path, want in (("/xrpc/nope", 501), ("/nope", 404), ("/xrpc/slow?ms=50", 200),
                       ("/xrpc/big?n=200000", 200)):
        status, _, data = request(c, "GET", path)
        assert status == want, (path, status, data)
    assert c.sock.getsockname() == local, "the server closed a keep-alive connection"
    c.close()
    # Three requests in one packet come back as three answers, in order.
    reqs = b"".join(b"GET /xrpc/echo?a=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3))
    out = raw(p, reqs)
    assert out.count(b"HTTP/1.1 200") == 3, out
    assert [int(x) for x in re.findall(rb'"first":"(\d)"', out)] == [0, 1, 2], out
    stop(p)


def test_many_connections(h):
    p = start_probe(h)
    socks = [socket.create_connection(("127.0.0.1", p.port), timeout=10) for _ in range(200)]
    t0 = time.time()
    for i, s in enumerate(socks):
        path = b"/xrpc/slow?ms=200" if i % 2 else b"/xrpc/echo?a=%d" % i
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    ok = 0
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        ok += data.startswith(b"HTTP/1.1 200")
        s.close()
    assert ok == 200, ok
    assert time.time() - t0 < 5.0
    assert_serving(h, p)
    stop(p)


def test_malformed_requests(h):
    p = start_probe(h)
    garbage = [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x00\x01\x02\xff\xfe binary \r\n\r\n",
        b"GET /xrpc/echo HTTP/9.9\r\n\r\n",
        b"GET /xrpc/echo HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /xrpc/echo?" + b"a=1&" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /" + b"x" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"GET /xrpc/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
        b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"GET /xrpc/echo HTTP/1.1\r\nHost: x\r\n",  # never finished
        b"\r\n" * 1000,
    ]
    for g in garbage:
        out = raw(p, g, quiet=0.3)
        # Answered with some HTTP status or closed; never a crash.
        assert out == b"" or out.startswith(b"HTTP/1."), (g[:60], out[:200])
    out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and b"Content-Length" in out, out
    out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"1" * 40 +
              b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and b"Content-Length" in out, out
    assert_serving(h, p)
    stop(p)


def test_large_headers(h):
    p = start_probe(h)
    c = conn(p)
    for n in (5000, 12000):
        token = "Bearer " + "t" * n
        status, _, data = request(c, "GET", "/xrpc/header?name=authorization",
                                  headers={"Authorization": token})
        assert status == 200 and json.loads(data)["value"] == token, (n, status, data[:100])
    status, _, data = request(c, "GET", "/xrpc/header?name=x-probe-token",
                              headers={"X-Probe-Token": "v" * 6000})
    assert status == 200 and json.loads(data)["value"] == "v" * 6000, data[:100]
    status, _, data = request(c, "GET", "/xrpc/header?name=x-absent")
    assert json.loads(data) == {"value": None}
    c.close()
    # Beyond the 16 KiB header budget: refused (an error status or a closed connection).
    out = raw(p, b"GET /xrpc/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"z" * 20000 +
              b"\r\n\r\n")
    assert out == b"" or re.match(rb"HTTP/1.1 (4\d\d)", out), out[:200]
    out = raw(p, b"GET /xrpc/echo HTTP/1.1\r\nHost: x\r\n" +
              b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(300)) + b"\r\n")
    assert out == b"" or re.match(rb"HTTP/1.1 (4\d\d)", out), out[:200]
    assert_serving(h, p)
    stop(p)


def test_large_answer_read_slowly(h):
    p = start_probe(h)
    n = 3_000_000
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(b"GET /xrpc/big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: %d" % n in head.lower(), head
    while len(body) < n:
        chunk = s.recv(65536)
        assert chunk, len(body)
        body += chunk
        if len(body) < 300_000:
            time.sleep(0.005)  # a slow reader: the server must wait for room, not spin or drop
    assert len(body) == n and body[:26] == b"abcdefghijklmnopqrstuvwxyz" and body[-1:] == \
        bytes([ord("a") + (n - 1) % 26])
    # The same connection carries the next request.
    s.sendall(b"GET /xrpc/echo?a=next HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"}"):
        data += s.recv(4096)
    assert b'"first":"next"' in data, data
    s.close()
    stop(p)


def test_sigterm_with_request_in_flight(h):
    p = start_probe(h)
    result = {}

    def slow():
        result["slow"] = h.get_json(p.base + "/xrpc/slow?ms=800")
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    p.signal(signal.SIGTERM)
    wait_for(lambda: "draining 1 requests" in p.log(), what="drain to start")
    # While draining, new requests are turned away with 503.
    status, body = h.get_json(p.base + "/xrpc/echo?a=1")
    assert status == 503 and body["error"] == "ServiceUnavailable", (status, body)
    t.join(5)
    assert result.get("slow") == (200, {"slow": True}), result
    assert p.wait(10) == 0, p.log()[-3000:]


def answers(data):
    """The status codes of the HTTP answers in data, in order (interim 100s included)."""
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def test_framing_follows_rfc9112(h):
    p = start_probe(h)
    # Transfer-Encoding with Content-Length, either order: 400, closed; what follows (the
    # smuggled request) is never answered.
    for head in (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                 b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"):
        out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n0\r\n\r\n"
                  b"GET /xrpc/echo?a=smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answers(out) == [400] and b"smuggled" not in out, out
        assert b"Connection: close" in out and b"InvalidRequest" in out, out
    # A GET carrying a chunked body: the body is read as a body; the request after it is the
    # only other answer, and "0\r\n\r\n" is not taken for a request.
    out = raw(p, b"GET /xrpc/echo?a=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n0\r\n\r\nGET /xrpc/echo?a=2 HTTP/1.1\r\nHost: x\r\n\r\n", quiet=0.3)
    assert answers(out) == [200, 200] and out.count(b'"first"') == 2, out
    out = raw(p, b"GET /xrpc/echo?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n"
                 b"GET /xGET /xrpc/echo?a=2 HTTP/1.1\r\nHost: x\r\n\r\n", quiet=0.3)
    assert answers(out) == [200, 200], out
    # Codings other than a final chunked: 501 or 400, closed.
    out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert answers(out) == [501], out
    out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
    assert answers(out) == [400], out
    # Conflicting lengths, folded lines, a NUL or a bare CR in a header: 400, closed.
    for bad in (b"Content-Length: 3\r\nContent-Length: 4\r\n", b"X-A: a\r\n  folded\r\n",
                b"Authorization: Bearer secret\x00x\r\n", b"Authorization: Bearer secret\rX: y\r\n"):
        out = raw(p, b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\nabc")
        assert answers(out) == [400] and b"Connection: close" in out, (bad, out)
    m = h.metrics(p.base)
    assert m['http_bad_requests_total{reason="te_and_cl"}'] == 2, m
    assert m['http_bad_requests_total{reason="transfer_encoding"}'] == 2, m
    assert_serving(h, p)
    stop(p)


def test_every_request_gets_an_answer(h):
    p = start_probe(h)
    cases = [
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 400, b"InvalidRequest"),
        (b"GET /xrpc/echo\r\n\r\n", 400, b"InvalidRequest"),  # HTTP/0.9
        (b"GET /xrpc/echo?a=%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, b"percent-encoding"),
        (b"GET /xrpc/ec%ZZho HTTP/1.1\r\nHost: x\r\n\r\n", 400, b"percent-encoding"),
        (b"GET /xrpc/echo?a=%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400, b"percent-encoding"),
        (b"TRACE /xrpc/echo HTTP/1.1\r\nHost: x\r\n\r\n", 405, b"InvalidRequest"),
        (b"BREW /xrpc/echo HTTP/1.1\r\nHost: x\r\n\r\n", 501, b"MethodNotImplemented"),
        (b"DELETE /xrpc/nothing HTTP/1.1\r\nHost: x\r\n\r\n", 501, b"MethodNotImplemented"),
        (b"GET /xrpc/echo HTTP/2.0\r\nHost: x\r\n\r\n", 505, b"InvalidRequest"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, b"InvalidRequest"),
        (b"GET /xrpc/echo HTTP/1.1\r\n\r\n", 400, b"Host"),
        (b"POST /xrpc/body HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n", 417, b"expectation"),
        # A PUT with an empty body on a POST route: answered at once, not at a timeout.
        (b"PUT /xrpc/body HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, b"not allowed"),
    ]
    for req, status, needle in cases:
        t0 = time.time()
        out = raw(p, req, quiet=0.5)
        assert answers(out) == [status] and needle in out, (req, out)
        assert out.split(b"\r\n\r\n", 1)[1].startswith(b'{"error":'), out
        assert time.time() - t0 < 1.5, req
    # 405 says what is allowed; HTTP/1.0 is answered and closed unless it asks to keep alive.
    out = raw(p, b"TRACE /xrpc/echo HTTP/1.1\r\nHost: x\r\n\r\n", quiet=0.3)
    assert b"Allow: GET\r\n" in out, out
    out = raw(p, b"GET /xrpc/echo?a=old HTTP/1.0\r\n\r\n")
    assert answers(out) == [200] and b"Connection: close" in out and b'"old"' in out, out
    out = raw(p, b"GET /xrpc/echo?a=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                 b"GET /xrpc/echo?a=2 HTTP/1.0\r\n\r\n", quiet=0.3)
    assert answers(out) == [200, 200] and b"Connection: keep-alive" in out, out
    assert_serving(h, p)
    stop(p)


def test_checks_run_before_the_body(h):
    """A route's check sees the head only: refused requests never have their body read, and
    with Expect: 100-continue the client is not even asked to send it."""
    p = start_probe(h)
    out = raw(p, b"POST /xrpc/checked HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    assert answers(out) == [401] and b"Connection: close" in out, out
    out = raw(p, b"POST /xrpc/checked HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Probe-Key: yes\r\n"
                 b"Expect: 100-continue\r\n\r\n", quiet=0.3)
    assert answers(out) == [100], out
    # Without Expect: the answer comes while the body is still owed, before any of it is read.
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(b"POST /xrpc/checked HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n" +
              b"x" * 1000)
    data = b""
    while b"}" not in data:
        data += s.recv(4096)
    assert answers(data) == [401], data
    s.sendall(b"y" * 100000)  # dropped while the server lingers, no reset
    s.close()
    c = conn(p)
    status, _, data = request(c, "POST", "/xrpc/checked", body=b"12345",
                              headers={"X-Probe-Key": "yes"})
    assert status == 200 and json.loads(data)["length"] == 5, data
    c.close()
    stop(p)


def test_drain_does_not_wait_for_unfinished_requests(h):
    """SIGTERM while requests are still arriving (half a body, half a head, idle keep-alive):
    those get a 503 or are closed, and the server exits at once."""
    p = start_probe(h)
    half_body = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    half_body.sendall(b"PUT /xrpc/body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
    half_head = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    half_head.sendall(b"GET /xrpc/echo HTTP/1.1\r\nHo")
    idle = conn(p)
    assert request(idle, "GET", "/xrpc/echo?a=1")[0] == 200
    time.sleep(0.2)
    t0 = time.time()
    assert p.stop(timeout=10) == 0, p.log()[-2000:]
    assert time.time() - t0 < 2.0
    for s in (half_body, half_head):
        data = s.recv(4096)
        assert data == b"" or answers(data) in ([503], [405]), data
        s.close()
    idle.close()
