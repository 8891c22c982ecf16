"""Operator mistakes, tried on the real binaries as a new operator makes them: each test
starts bin/appview or bin/hold with one mistake and checks the exit code, the one error line
it prints, and, when the mistake leaves it running, what the bound sockets, /xrpc/_health and
/metrics show.

Listen addresses are checked with `ss` (which sockets the process holds) and by connecting
from a second loopback address (127.0.0.2, 127.0.0.3: every 127/8 address is local on Linux),
so a service that listened on every address instead of the one it was given is caught."""
import json
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


# ---- settings checked before anything starts (exit 2, one line on stderr) ----

def config_error(p):
    """The one line a process that refused its configuration printed (it printed nothing
    else)."""
    assert exits(p) == 2, p.log()
    lines = p.log().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_version_flag(h):
    for name in ("appview", "hold"):
        out = subprocess.run([h.binary(name), "--version"], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0 and out.stdout == f"{name} 0.1.0\n", out
        helptext = subprocess.run([h.binary(name), "--help"], capture_output=True, text=True,
                                  timeout=30).stdout
        assert "--log-level" in helptext and "env LOG_LEVEL" in helptext, helptext


def test_unknown_log_level(h):
    redis = h.start_redis()
    p = appview(h, redis, f"127.0.0.1:{free_port()}", LOG_LEVEL="verbose")
    assert config_error(p) == ("appview: bad value 'verbose' for --log-level (LOG_LEVEL): "
                               "expected debug, info, warn or error")
    p = hold(h, f"127.0.0.1:{free_port()}", LOG_LEVEL="verbose")
    assert config_error(p) == ("hold: bad value 'verbose' for --log-level (LOG_LEVEL): "
                               "expected debug, info, warn or error")
    # a known level takes effect: warn hides the start-up INFO lines
    port = free_port()
    p = hold(h, f"127.0.0.1:{port}", name="hold-warn", wait=False, LOG_LEVEL="warn")
    wait_for(lambda: h.get_json(f"http://127.0.0.1:{port}/xrpc/_health")[0] == 200,
             what="hold serving")
    assert "INFO" not in p.log() and p.alive()
    assert p.stop() == 0


def test_jetstream_urls_that_cannot_work(h):
    redis = h.start_redis()
    cases = [
        ("ws://127.0.0.1:99999/subscribe",
         "appview: bad value 'ws://127.0.0.1:99999/subscribe' for --jetstream-urls "
         "(APPVIEW_JETSTREAM_URLS): the port must be a number 1..65535"),
        ("ws://127.0.0.1:6008/subscribe,",
         "appview: bad value 'ws://127.0.0.1:6008/subscribe,' for --jetstream-urls "
         "(APPVIEW_JETSTREAM_URLS): an empty item (two commas in a row, or a comma at an end); "
         "remove it"),
        ("wss://jetstream2.us-east.bsky.network/",
         "appview: bad value 'wss://jetstream2.us-east.bsky.network/' for --jetstream-urls "
         "(APPVIEW_JETSTREAM_URLS): the path must end in /subscribe (Jetstream v1) or "
         "/xrpc/network.bsky.jetstream.subscribeEvents (v2)"),
    ]
    for i, (urls, line) in enumerate(cases):
        p = appview(h, redis, f"127.0.0.1:{free_port()}", name=f"appview{i}",
                    APPVIEW_JETSTREAM_URLS=urls)
        assert config_error(p) == line
    assert h.redis(redis, "DBSIZE") == "(integer) 0"  # no lease taken, nothing written


def test_empty_setting_with_a_default(h):
    p = hold(h, f"127.0.0.1:{free_port()}", HOLD_DB="")
    assert config_error(p) == ("hold: HOLD_DB is set but empty (--db): unset it to use the "
                               "default './var/hold.db', or give a value")


def test_http_limits_checked_before_anything_starts(h):
    redis = h.start_redis()
    port = free_port()
    p = appview(h, redis, f"127.0.0.1:{port}", APPVIEW_HTTP_IDLE_TIMEOUT="")
    assert config_error(p) == ("appview: APPVIEW_HTTP_IDLE_TIMEOUT is set but empty "
                               "(--http-idle-timeout): unset it to use the default '30', or give "
                               "a value")
    p = hold(h, f"127.0.0.1:{port}", HOLD_HTTP_MAX_CONNECTIONS="0")
    assert config_error(p) == ("hold: bad value '0' for --http-max-connections "
                               "(HOLD_HTTP_MAX_CONNECTIONS): expected an integer in 1..1000000")
    assert not can_connect("127.0.0.1", port)  # nothing was bound
    assert h.redis(redis, "DBSIZE") == "(integer) 0"


def test_valkey_url_password_never_shown(h):
    redis = h.start_redis()
    p = appview(h, redis, f"127.0.0.1:{free_port()}",
                APPVIEW_VALKEY_URL="redis://:s3cretpass@127.0.0.1:99999/0")
    assert config_error(p) == ("appview: bad value 'redis://:***@127.0.0.1:99999/0' for "
                               "--valkey-url (APPVIEW_VALKEY_URL): the port must be a number "
                               "1..65535")


def test_appview_run_outside_the_repository(h):
    redis = h.start_redis()
    elsewhere = os.path.join(h.tmp, "elsewhere")
    os.makedirs(elsewhere)
    env = {"APPVIEW_VALKEY_URL": redis.url, "APPVIEW_LISTEN": f"127.0.0.1:{free_port()}",
           "APPVIEW_INGEST": "off"}
    p = h.spawn("appview", [h.binary("appview")], env=env, sanitized=True, cwd=elsewhere)
    assert config_error(p) == (
        f"appview: --lexicon-dir (APPVIEW_LEXICON_DIR) './lexicons' is {elsewhere}/lexicons: "
        "No such file or directory; relative paths start from the working directory: run from "
        "the repository, or set it to the lexicons/ directory")
    # with the lexicons named, the data directory is created where it is asked for
    env["APPVIEW_LEXICON_DIR"] = os.path.join(ROOT, "lexicons")
    p = h.spawn("appview2", [h.binary("appview")], env=env, sanitized=True, cwd=elsewhere)
    wait_for(lambda: "INFO appview: version" in p.log(), what="appview start")
    assert os.path.isdir(os.path.join(elsewhere, "var", "appview"))
    assert p.stop() == 0


# ---- HOLD_DB ----

def test_hold_db_in_a_missing_directory(h):
    db = os.path.join(h.tmp, "missing", "hold.db")
    p = hold(h, f"127.0.0.1:{free_port()}", HOLD_DB=db)
    assert config_error(p) == (
        f"hold: --db (HOLD_DB) '{db}' is {db}: its directory {h.tmp}/missing: No such file or "
        "directory; create the directory (mkdir -p), or choose a path in an existing one")


def test_hold_db_is_a_directory(h):
    p = hold(h, f"127.0.0.1:{free_port()}", HOLD_DB=h.tmp)
    assert config_error(p) == (f"hold: --db (HOLD_DB) '{h.tmp}' is {h.tmp}: a directory; name "
                               "a file in it, e.g. hold.db")


def test_hold_db_relative_path_is_shown_absolute(h):
    p = hold(h, f"127.0.0.1:{free_port()}", HOLD_DB="no-such-dir/hold.db")
    assert config_error(p) == (
        f"hold: --db (HOLD_DB) 'no-such-dir/hold.db' is {ROOT}/no-such-dir/hold.db: its "
        f"directory {ROOT}/no-such-dir: No such file or directory; create the directory "
        "(mkdir -p), or choose a path in an existing one")


def test_hold_db_not_an_sqlite_file(h):
    db = os.path.join(h.tmp, "notes.txt")
    with open(db, "w") as f:
        f.write("these are my notes, not a database\n" * 100)
    port = free_port()
    p = hold(h, f"127.0.0.1:{port}", HOLD_DB=db)
    assert exits(p) == 1
    assert errors(p) == [
        f"hold: cannot open the database {db} (--db, HOLD_DB): file is not a database; it is "
        "not an SQLite database: name the hold's database, or a new file"]
    assert not listening(p.popen.pid)


def test_hold_db_without_permission(h):
    # As root every file is writable: run the hold as nobody against a directory of root's.
    locked = os.path.join(h.tmp, "locked")
    os.makedirs(locked, mode=0o755)
    db = os.path.join(locked, "hold.db")
    os.chmod(h.tmp, 0o755)
    e = {"HOLD_LISTEN": f"127.0.0.1:{free_port()}", "HOLD_DB": db}
    p = h.spawn("hold", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                         h.binary("hold")], env=e, sanitized=True)
    assert exits(p) == 1
    assert errors(p) == [
        f"hold: cannot open the database {db} (--db, HOLD_DB): unable to open database file "
        "(Permission denied); this user needs to read and write the file and its directory "
        "(SQLite creates -wal and -shm files next to it)"]


# ---- mistakes that leave a service running: it must say so, in _health and /metrics ----

def health(h, p, port):
    return h.get_json(f"http://127.0.0.1:{port}/xrpc/_health")


def connections_received(h, redis):
    info = h.redis_raw(redis, "INFO", "stats")
    return int(re.search(r"total_connections_received:(\d+)", info).group(1))


def refused_by_valkey(h, redis, url, name):
    """An appview whose Valkey refuses its connection setup: (process, port, the one error
    line, the _health answer), once the refusal is logged."""
    port = free_port()
    p = appview(h, redis, f"127.0.0.1:{port}", name=name, APPVIEW_VALKEY_URL=url)
    wait_for(lambda: errors(p), what="the refusal logged")
    [line] = errors(p)
    return p, port, line, health(h, p, port)


def test_valkey_wrong_password(h):
    redis = h.start_redis(password="the-right-pass")
    p, port, line, (status, body) = refused_by_valkey(
        h, redis, f"redis://:wr0ng-pass@127.0.0.1:{redis.port}/0", "appview")
    assert listening(p.popen.pid) == {f"127.0.0.1:{port}"}
    assert line == (
        f"valkey: redis://:***@127.0.0.1:{redis.port}/0 (--valkey-url, APPVIEW_VALKEY_URL): "
        "connection setup refused: WRONGPASS invalid username-password pair or user is "
        "disabled; check the user and password in the URL (redis://USER:PASSWORD@HOST:PORT/DB) "
        "against the server's requirepass or ACL; retrying every 30 s")
    assert status == 503 and body["status"] == "down", body
    assert body["valkey"]["up"] is False
    assert body["valkey"]["error"].startswith("connection setup refused: WRONGPASS"), body
    assert body["problems"][0].startswith("Valkey is not ready: connection setup refused"), body
    m = h.metrics(f"http://127.0.0.1:{port}")
    assert m["valkey_up"] == 0 and m["valkey_setup_refused"] == 1
    assert m["appview_ingest_lease_held"] == 0
    # retried slowly: not another attempt within a few seconds, and not another log line
    before = connections_received(h, redis)
    time.sleep(3)
    assert connections_received(h, redis) == before + 1  # redis-cli's own second connection
    assert len(errors(p)) == 1
    for text in (p.log(), json_text(health(h, p, port)[1]), str(m)):
        assert "wr0ng-pass" not in text
    assert p.stop() == 0


def json_text(obj):
    return json.dumps(obj)


def test_valkey_password_missing_and_database_out_of_range(h):
    redis = h.start_redis(password="the-right-pass")
    p, _, line, (status, _) = refused_by_valkey(h, redis, f"redis://127.0.0.1:{redis.port}/0",
                                                "no-password")
    assert "connection setup refused: NOAUTH Authentication required; check the user and " \
        "password in the URL" in line, line
    assert status == 503
    assert p.stop() == 0

    other = h.start_redis(name="redis16")
    p, _, line, (status, body) = refused_by_valkey(h, other, f"redis://127.0.0.1:{other.port}/99",
                                                   "db-99")
    assert line == (
        f"valkey: redis://127.0.0.1:{other.port}/99 (--valkey-url, APPVIEW_VALKEY_URL): "
        "connection setup refused: ERR DB index is out of range; the server has fewer "
        "databases: use a smaller /DB in the URL, or raise its 'databases' setting; retrying "
        "every 30 s")
    assert status == 503 and "DB index is out of range" in body["valkey"]["error"]
    assert p.stop() == 0


def test_valkey_unreachable_is_named(h):
    port, vport = free_port(), free_port()
    redis = type("R", (), {"url": f"redis://127.0.0.1:{vport}/0"})
    p = appview(h, redis, f"127.0.0.1:{port}")
    wait_for(lambda: "WARN valkey" in p.log(), what="the failure logged")
    warns = [x for x in p.log().splitlines() if "WARN valkey" in x]
    assert warns[0].endswith(f"valkey: redis://127.0.0.1:{vport}/0 (--valkey-url, "
                             "APPVIEW_VALKEY_URL): cannot connect: Connection refused; retrying")
    time.sleep(1)  # several retries, one line
    assert len([x for x in p.log().splitlines() if "WARN valkey" in x]) == 1
    status, body = health(h, p, port)
    assert status == 503 and body["valkey"]["error"] == "cannot connect: Connection refused"
    assert p.stop() == 0


def jetstream_health_degrades(h, url, cause):
    """An appview whose only Jetstream cannot be reached: it holds the lease, and after the
    stall period (1 s here) _health says so with a 503."""
    redis = h.start_redis()
    port = free_port()
    p = appview(h, redis, f"127.0.0.1:{port}", APPVIEW_JETSTREAM_URLS=url,
                APPVIEW_JETSTREAM_STALL_SECONDS="1", RES_OPTIONS="timeout:1 attempts:1")
    line = f"WARN jetstream: cannot connect to {url} (APPVIEW_JETSTREAM_URLS): {cause}"
    wait_for(lambda: line in p.log(), what="the cannot-connect line")
    wait_for(lambda: health(h, p, port)[0] == 503, what="503 health")
    status, body = health(h, p, port)
    assert body["status"] == "degraded" and body["valkey"]["up"] is True, body
    js = body["jetstream"]
    assert js["leader"] is True and js["connected"] is False
    assert js["error"] == f"{url}: {cause}" and js["secondsWithoutStream"] > 1, js
    assert js["lastMessageAgeSeconds"] is None and js["lagSeconds"] > 1, js
    [problem] = body["problems"]
    assert problem.startswith("holding the ingest lease without a Jetstream connection for ")
    assert problem.endswith(f"s: {url}: {cause}"), problem
    m = h.metrics(f"http://127.0.0.1:{port}")
    assert m["appview_ingest_lease_held"] == 1 and m["appview_jetstream_connected"] == 0
    assert m["appview_cursor_lag_seconds"] > 1
    assert p.stop() == 0


def test_jetstream_that_refuses(h):
    port = free_port()
    jetstream_health_degrades(h, f"ws://127.0.0.1:{port}/subscribe", "connect: Connection refused")


def test_jetstream_name_that_does_not_resolve(h):
    jetstream_health_degrades(h, "wss://no-such-jetstream.invalid/subscribe",
                              "cannot resolve no-such-jetstream.invalid: unknown node or service")


def test_secrets_absent_from_logs_metrics_and_health(h):
    redis = h.start_redis(password="valkey-s3cret-pass")
    port, hport = free_port(), free_port()
    p = appview(h, redis, f"127.0.0.1:{port}",
                APPVIEW_VALKEY_URL=f"redis://:valkey-s3cret-pass@127.0.0.1:{redis.port}/0",
                APPVIEW_INGEST="off")
    wait_for(lambda: health(h, p, port)[0] == 200, what="appview healthy")
    hp = hold(h, f"127.0.0.1:{hport}", HOLD_SERVICE_TOKENS="hold-t0ken-one,hold-t0ken-two",
              HOLD_BLOB_URL_SECRETS="blob-url-s3cret-0001")
    base = f"http://127.0.0.1:{hport}"
    # a wrong token and a right one, so both paths log
    for token in ("hold-t0ken-wrong", "hold-t0ken-two"):
        h.post_json(base + "/xrpc/io.atcr.hold.incrementStats",
                    {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "repository": "r", "event": "pull"},
                    headers={"Authorization": f"Bearer {token}"})
    seen = [p.log(), hp.log(), json_text(health(h, p, port)[1]),
            json_text(h.get_json(base + "/xrpc/_health")[1]),
            h.http("GET", f"http://127.0.0.1:{port}/metrics")[2].decode(),
            h.http("GET", base + "/metrics")[2].decode()]
    for text in seen:
        for secret in ("valkey-s3cret-pass", "hold-t0ken-one", "hold-t0ken-two",
                       "hold-t0ken-wrong", "blob-url-s3cret-0001"):
            assert secret not in text, (secret, text[-2000:])
    assert f"Valkey redis://:***@127.0.0.1:{redis.port}/0" in p.log()
    assert p.stop() == 0 and hp.stop() == 0
    # a mistake in the token list names the setting, not the tokens
    bad = hold(h, f"127.0.0.1:{free_port()}", name="hold-bad",
               HOLD_SERVICE_TOKENS="hold-t0ken-one,,hold-t0ken-two")
    assert config_error(bad) == ("hold: bad value for --service-tokens (HOLD_SERVICE_TOKENS), "
                                 "not shown: an empty item (two commas in a row, or a comma at "
                                 "an end); remove it")
    bad = hold(h, f"127.0.0.1:{free_port()}", name="hold-bad-secret",
               HOLD_BLOB_URL_SECRETS="blob-url-s3cret-0001,short-s3cret")
    assert config_error(bad) == ("hold: bad value for --blob-url-secrets (HOLD_BLOB_URL_SECRETS), "
                                 "not shown: at least 16 characters")
