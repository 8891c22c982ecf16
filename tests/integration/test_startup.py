"""Operator mistakes, tried on the real binaries as a new operator makes them: each test
starts bin/appview or bin/hold with one mistake and checks the exit code, the one error line
it prints, and, when the mistake leaves it running, what the bound sockets, /xrpc/_health and
/metrics show.

Listen addresses are checked with `ss` (which sockets the process holds) and by connecting
from a second loopback address (127.0.0.2, 127.0.0.3: every 127/8 address is local on Linux),
so a service that listened on every address instead of the one it was given is caught."""
import os
import re
import socket
import subprocess
import time

from harness import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG_LINE = re.compile(r"^\S+Z (DEBUG|INFO|WARN|ERROR) ([\w-]+): (.*)$")


# ---- helpers ----

def errors(p):
    """The ERROR lines of a process' log, without timestamps: 'component: message'."""
    out = []
    for line in p.log().splitlines():
        m = LOG_LINE.match(line)
        if m and m.group(1) == "ERROR":
            out.append(f"{m.group(2)}: {m.group(3)}")
    return out


def exits(p, timeout=15):
    """Waits for a process that must stop by itself; returns its exit code."""
    return p.wait(timeout)


def listening(pid):
    """The TCP addresses (as ss prints them, e.g. 127.0.0.1:8080, [::1]:8080) process pid
    listens on."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            found.add(line.split()[3])
    return found


def can_connect(addr, port, source=None, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        if source:
            s.bind((source, 0))
        s.connect((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def http_from(source, addr, port, path):
    """A GET sent from a chosen local source address; returns the status code."""
    s = socket.create_connection((addr, port), timeout=5, source_address=(source, 0))
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1])
    finally:
        s.close()


def occupy(addr, port, family=socket.AF_INET):
    """Another program listening on addr:port."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen()
    return s


def hold(h, listen, name="hold", wait=True, **env):
    e = {"HOLD_LISTEN": listen, "HOLD_DB": os.path.join(h.tmp, f"{name}.db"),
         "HOLD_SERVICE_TOKENS": "a-service-token"}
    e.update(env)
    p = h.spawn(name, [h.binary("hold")], env=e, sanitized=True)
    if wait:
        wait_for(lambda: "INFO hold: serving" in p.log() or not p.alive(), what="hold start")
    return p


def appview(h, redis, listen, name="appview", wait=True, **env):
    e = {"APPVIEW_VALKEY_URL": redis.url, "APPVIEW_LISTEN": listen,
         "APPVIEW_LEXICON_DIR": "lexicons", "APPVIEW_DATA_DIR": os.path.join(h.tmp, name),
         "APPVIEW_JETSTREAM_URLS": "ws://127.0.0.1:9/subscribe"}
    e.update(env)
    p = h.spawn(name, [h.binary("appview")], env=e, sanitized=True)
    if wait:
        wait_for(lambda: "INFO appview: version" in p.log() or not p.alive(), what="appview start")
    return p


BUSY = ("Address already in use; another process listens on this port (ss -ltnp shows "
        "which): stop it or choose another port")


# ---- listen addresses ----

def test_ipv4_listen_address_binds_that_address_only(h):
    port = free_port()
    p = hold(h, f"127.0.0.2:{port}")
    assert p.alive(), p.log()
    assert listening(p.popen.pid) == {f"127.0.0.2:{port}"}
    assert not can_connect("127.0.0.1", port)
    # reached from another local address, as a client on the network would
    assert http_from("127.0.0.3", "127.0.0.2", port, "/xrpc/_health") == 200
    assert f"INFO hold: listening on 127.0.0.2:{port}" in p.log()
    assert p.stop() == 0


def test_appview_ipv4_listen_address_binds_that_address_only(h):
    redis = h.start_redis()
    port = free_port()
    p = appview(h, redis, f"127.0.0.2:{port}", APPVIEW_INGEST="off")
    assert p.alive(), p.log()
    assert listening(p.popen.pid) == {f"127.0.0.2:{port}"}
    assert not can_connect("127.0.0.1", port)
    assert http_from("127.0.0.3", "127.0.0.2", port, "/xrpc/_health") == 200
    assert p.stop() == 0


def test_ipv6_listen_address_is_ipv6_only(h):
    port = free_port()
    p = hold(h, f"[::1]:{port}")
    assert p.alive(), p.log()
    assert listening(p.popen.pid) == {f"[::1]:{port}"}
    assert can_connect("::1", port, family=socket.AF_INET6)
    assert not can_connect("127.0.0.1", port)
    assert p.stop() == 0


def test_host_name_binds_every_address_it_resolves_to(h):
    port = free_port()
    p = hold(h, f"localhost:{port}")
    assert p.alive(), p.log()
    want = set()
    for family, *_, addr in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM):
        want.add(f"[{addr[0]}]:{port}" if family == socket.AF_INET6 else f"{addr[0]}:{port}")
    assert listening(p.popen.pid) == want
    [line] = [x for x in p.log().splitlines() if "INFO hold: listening on " in x]
    assert set(line.split("listening on ", 1)[1].split(", ")) == want, line
    assert p.stop() == 0


def test_wildcard_listen_address_binds_every_ipv4_address(h):
    port = free_port()
    p = hold(h, f"0.0.0.0:{port}")
    assert listening(p.popen.pid) == {f"0.0.0.0:{port}"}
    assert http_from("127.0.0.3", "127.0.0.2", port, "/xrpc/_health") == 200
    assert p.stop() == 0


def test_unresolvable_listen_host_stops_start_up(h):
    port = free_port()
    # one DNS try, one second: the test does not wait out a resolver that is not there
    p = hold(h, f"no-such-host.invalid:{port}", RES_OPTIONS="timeout:1 attempts:1")
    assert exits(p) == 1
    [line] = errors(p)
    assert line.startswith(f"hold: cannot listen on no-such-host.invalid:{port} "
                           "(--listen, HOLD_LISTEN): cannot resolve 'no-such-host.invalid': "), line
    assert line.endswith("use an IP address, or a name this machine resolves "
                         "(getent hosts NAME)"), line


def test_address_not_on_this_machine_stops_start_up(h):
    p = hold(h, "203.0.113.7:8081")
    assert exits(p) == 1
    assert errors(p) == [
        "hold: cannot listen on 203.0.113.7:8081 (--listen, HOLD_LISTEN): Cannot assign "
        "requested address; no interface of this machine has that address (ip address lists "
        "them): use one of its addresses, or 0.0.0.0 for every IPv4 address"]


# ---- a port already taken ----

def test_port_taken_on_the_same_address_stops_the_hold(h):
    port = free_port()
    other = occupy("127.0.0.1", port)
    try:
        p = hold(h, f"127.0.0.1:{port}")
        assert exits(p) == 1
        assert errors(p) == [f"hold: cannot listen on 127.0.0.1:{port} (--listen, HOLD_LISTEN): "
                             + BUSY]
        assert "INFO store: opened" not in p.log()  # the address is checked first
    finally:
        other.close()


def test_port_taken_stops_the_appview_before_it_takes_the_lease(h):
    redis = h.start_redis()
    port = free_port()
    other = occupy("127.0.0.1", port)
    try:
        p = appview(h, redis, f"127.0.0.1:{port}")
        assert exits(p) == 1
        assert errors(p) == [
            f"appview: cannot listen on 127.0.0.1:{port} (--listen, APPVIEW_LISTEN): " + BUSY]
        assert h.redis(redis, "EXISTS", "atcr:ingest-lease") == "(integer) 0"
        assert h.redis(redis, "DBSIZE") == "(integer) 0"
    finally:
        other.close()


def test_port_taken_on_another_address(h):
    port = free_port()
    other = occupy("127.0.0.2", port)
    try:
        # a different address on the same port is free ...
        p = hold(h, f"127.0.0.1:{port}", name="hold-own-address")
        assert p.alive(), p.log()
        assert listening(p.popen.pid) == {f"127.0.0.1:{port}"}
        assert p.stop() == 0
        # ... every address includes the taken one
        p = hold(h, f"0.0.0.0:{port}", name="hold-every-address")
        assert exits(p) == 1
        assert errors(p) == [f"hold: cannot listen on 0.0.0.0:{port} (--listen, HOLD_LISTEN): "
                             + BUSY]
    finally:
        other.close()
