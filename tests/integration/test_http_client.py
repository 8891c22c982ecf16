"""atproto/http_client against real local HTTP servers (threads in this test), through the
tests/tools/http_fetch CLI: retries, timeouts, body cap, garbage, redirects, the SSRF guard,
per-host concurrency, cancellation."""
import gzip
import json
import os
import socket
import subprocess
import threading
import time

import upstream
from harness import SANITIZER_MARKS
from upstream import reply


def Server(routes):
    """The shared upstream server, answering path with routes[path](handler)."""
    return upstream.Server(lambda hd, path: routes[path.split("?")[0]](hd))


def fetch(h, *args, timeout=30):
    """Runs http_fetch; returns its JSON lines. Fails on a sanitizer report or a bad exit."""
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
    t0 = time.time()
    p = subprocess.run([h.binary("tools/http_fetch"), *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    took = time.time() - t0
    assert not any(m in p.stderr for m in SANITIZER_MARKS), p.stderr[-4000:]
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-2000:]}"
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    return lines, took


def one(h, *args, **kw):
    lines, took = fetch(h, *args, **kw)
    assert len(lines) == 1, lines
    return lines[0], took


LOCAL = ["--allow-private", "--allow-http", "--retry-base-ms", "20"]


def test_ok_headers_and_429(h):
    def ok(hd):
        reply(hd, 200, '{"a":1}', {"X-RateLimit-Remaining": "17", "X-RateLimit-Reset": "99"})

    def limited(hd):
        reply(hd, 429, '{"error":"RateLimitExceeded"}', {"Retry-After": "7"})

    with Server({"/ok": ok, "/limited": limited}) as s:
        r, _ = one(h, *LOCAL, "--body", "--show-header", "x-ratelimit-remaining",
                   "--show-header", "X-RATELIMIT-RESET", "--show-header", "absent", s.url + "/ok")
        assert r["error"] == "OK" and r["status"] == 200 and r["body"] == '{"a":1}', r
        assert r["headers"] == {"x-ratelimit-remaining": "17", "X-RATELIMIT-RESET": "99"}, r
        r, _ = one(h, *LOCAL, s.url + "/limited")
        assert (r["status"], r["attempts"], r["retry_after"]) == (429, 1, 7), r
        assert s.hits["/limited"] == 1


def test_500_then_200_is_retried(h):
    calls = {"n": 0}

    def flaky(hd):
        calls["n"] += 1
        reply(hd, 500 if calls["n"] == 1 else 200, "{}")

    def always(hd):
        reply(hd, 503, "down")

    with Server({"/flaky": flaky, "/down": always}) as s:
        r, _ = one(h, *LOCAL, s.url + "/flaky")
        assert (r["error"], r["status"], r["attempts"]) == ("OK", 200, 2), r
        assert s.hits["/flaky"] == 2
        r, _ = one(h, *LOCAL, s.url + "/down")
        assert (r["error"], r["status"], r["attempts"]) == ("OK", 503, 3), r
        assert s.hits["/down"] == 3


def test_404_and_post_5xx_not_retried(h):
    def missing(hd):
        reply(hd, 404, '{"error":"RecordNotFound"}')

    def echo(hd):
        n = int(hd.headers.get("Content-Length", "0"))
        data = hd.rfile.read(n)
        reply(hd, 500 if data == b"fail" else 200, data)

    with Server({"/missing": missing, "/echo": echo}) as s:
        r, _ = one(h, *LOCAL, s.url + "/missing")
        assert (r["status"], r["attempts"]) == (404, 1) and s.hits["/missing"] == 1, r
        r, _ = one(h, *LOCAL, "--body", "--post", '{"x":1}', s.url + "/echo")
        assert (r["status"], r["body"]) == (200, '{"x":1}'), r
        r, _ = one(h, *LOCAL, "--post", "fail", s.url + "/echo")
        assert (r["status"], r["attempts"]) == (500, 1) and s.hits["/echo"] == 2, r


def test_connection_refused_retried_then_reported(h):
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]  # bound, never listening: connections are refused
        r, _ = one(h, *LOCAL, f"http://127.0.0.1:{port}/")
    assert (r["error"], r["attempts"]) == ("CONNECT", 3), r


def test_timeout(h):
    def hang(hd):
        time.sleep(3)

    with Server({"/hang": hang}) as s:
        r, took = one(h, *LOCAL, "--timeout-ms", "400", s.url + "/hang")
    assert (r["error"], r["attempts"]) == ("TIMEOUT", 1), r
    assert took < 2.5, took


def test_huge_body_aborted_quickly(h):
    chunk = b"x" * (1 << 20)

    def huge(hd, length=True):
        hd.send_response(200)
        if length:
            hd.send_header("Content-Length", str(50 << 20))
        hd.send_header("Connection", "close")
        hd.end_headers()
        for _ in range(50):
            hd.wfile.write(chunk)

    def bomb(hd):
        body = gzip.compress(b"\0" * (50 << 20), compresslevel=1)
        reply(hd, 200, body, {"Content-Encoding": "gzip"})

    with Server({"/huge": huge, "/stream": lambda hd: huge(hd, False), "/bomb": bomb}) as s:
        for path in ("/huge", "/stream", "/bomb"):
            r, took = one(h, *LOCAL, s.url + path)
            assert (r["error"], r["attempts"], r["len"]) == ("TOO_LARGE", 1, 0), r
            assert took < 3, (path, took)
        r, _ = one(h, *LOCAL, "--max-body", "100", s.url + "/stream")
        assert r["error"] == "TOO_LARGE", r


def test_garbage_reply(h):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(4096)
            c.sendall(b"\x00\xffgarbage garbage\r\n\r\nnot http at all")
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        r, _ = one(h, *LOCAL, f"http://127.0.0.1:{port}/")
    finally:
        srv.close()
    assert r["error"] == "PROTOCOL" and r["status"] == 0, r


def test_ssrf_guard(h):
    def ok(hd):
        reply(hd, 200, "{}")

    with Server({"/": ok}) as s:
        # Without allow_private, loopback is refused after name resolution too.
        for url in (s.url + "/", f"http://localhost:{s.port}/", f"http://[::1]:{s.port}/",
                    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
                    "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/", "http://2130706433/"):
            r, took = one(h, "--allow-http", url)
            assert r["error"] == "BLOCKED", r
            assert took < 2, (url, took)
        assert s.hits == {}, s.hits
        r, _ = one(h, s.url + "/")
        assert r["error"] == "BLOCKED" and "scheme http" in r["error_text"], r
        r, _ = one(h, "ftp://example.com/x")
        assert r["error"] == "BLOCKED", r
        r, _ = one(h, "not a url")
        assert r["error"] == "INVALID", r
        # A trusted (configured) URL may be on loopback even with the guard on.
        r, _ = one(h, "--trusted", s.url + "/")
        assert (r["error"], r["status"]) == ("OK", 200), r


def test_redirects_are_guarded_and_limited(h):
    target = Server({"/": lambda hd: reply(hd, 200, "{}")})

    def to(location):
        return lambda hd: reply(hd, 302, "", {"Location": location})

    with target, Server({"/loop": to("/loop"), "/out": to(target.url + "/"),
                         "/meta": to("http://169.254.169.254/"),
                         "/three": to("/two"), "/two": to("/one"), "/one": to("/out")}) as s:
        # Trusted first hop; the redirect to another loopback port goes through the guard.
        r, _ = one(h, "--trusted", "--allow-http", s.url + "/out")
        assert r["error"] == "BLOCKED" and "loopback" in r["error_text"], r
        r, _ = one(h, "--trusted", "--allow-http", s.url + "/meta")
        assert r["error"] == "BLOCKED" and "link-local" in r["error_text"], r
        # Without allow_http, a redirect to http:// is refused by scheme.
        r, _ = one(h, "--trusted", s.url + "/out")
        assert r["error"] == "BLOCKED", r
        assert target.hits == {}
        r, _ = one(h, *LOCAL, s.url + "/out")
        assert (r["error"], r["status"]) == ("OK", 200), r
        r, _ = one(h, *LOCAL, s.url + "/three")
        assert r["error"] == "PROTOCOL" and "redirect" in r["error_text"].lower(), r
        r, _ = one(h, *LOCAL, s.url + "/loop")
        assert r["error"] == "PROTOCOL", r


def test_per_host_limit_and_cancel(h):
    def slow(hd):
        time.sleep(0.15)
        reply(hd, 200, "{}")

    def hang(hd):
        time.sleep(3)

    with Server({"/slow": slow, "/hang": hang}) as s:
        lines, _ = fetch(h, *LOCAL, "--max-per-host", "2", "--repeat", "8", s.url + "/slow")
        assert [r["status"] for r in lines] == [200] * 8, lines
        assert s.max_active == 2, s.max_active
        lines, took = fetch(h, *LOCAL, "--repeat", "3", "--cancel-after-ms", "200",
                            s.url + "/hang")
        assert [r["error"] for r in lines] == ["CANCELLED"] * 3, lines
        assert took < 2, took
