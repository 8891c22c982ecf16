"""Integration-test harness: real processes on loopback, one private directory per test.

Every process a test starts is logged to <tmp>/<name>.log and killed at the end. Logs of our
own binaries are scanned for AddressSanitizer / UBSan reports, which fail the test.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_port():
    """A free port for a cluster node: its bus listens 10000 above, which must be free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # the thing waited for may not be up yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Proc:
    def __init__(self, harness, name, argv, env, sanitized, cwd=None):
        self.harness, self.name, self.argv, self.env = harness, name, argv, env
        self.sanitized = sanitized
        self.cwd = cwd or harness.root
        self.log_path = os.path.join(harness.tmp, f"{name}.log")
        self.popen = None
        self.start()

    def start(self):
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=self.cwd)
        log.close()

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def kill(self):
        self.signal(signal.SIGKILL)
        self.wait(10)

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit code (a sanitizer failure shows here too)."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout=20):
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout}s")

    def log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()


class Harness:
    def __init__(self, root, bindir, test_name):
        self.root, self.bindir = root, bindir
        self.tmp = os.path.join(root, "var", "test", test_name.replace("/", "_"))
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        self.procs = []

    # ---- processes ----
    def spawn(self, name, argv, env=None, sanitized=False, cwd=None):
        """Starts argv in the repository root (or cwd) with its output in <tmp>/<name>.log."""
        full_env = dict(os.environ)
        full_env.update({"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:log_path=" +
                         os.path.join(self.tmp, name + ".asan"),
                         "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:log_path=" +
                         os.path.join(self.tmp, name + ".asan")})
        full_env.update(env or {})
        p = Proc(self, name, argv, full_env, sanitized, cwd)
        self.procs.append(p)
        return p

    def binary(self, name):
        """A project binary: bin/<name> from the build being tested, or its test tools."""
        return os.path.join(self.bindir, name)

    def start_redis(self, port=None, aof=False, name="redis", extra=(), data_dir=None,
                    password=None):
        """A redis-server; with aof the data lives in <tmp>/redis-data so a restart on the
        same port (another name) finds it again; with password it requires it (requirepass)
        and self.redis() sends it."""
        port = port or free_port()
        d = data_dir or os.path.join(self.tmp, "redis-data" if aof else name)
        os.makedirs(d, exist_ok=True)
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                "--save", "", "--appendonly", "yes" if aof else "no", "--protected-mode", "no",
                *(("--requirepass", password) if password else ()), *extra]
        p = self.spawn(name, argv)
        p.port = port
        p.password = password
        p.url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: self.redis(p, "PING") == "PONG", what="redis-server")
        return p

    def start_redis_cluster(self, primaries=3, replicas=1, node_timeout_ms=1000, name="cluster"):
        """A Valkey Cluster of Debian's redis-server on loopback: primaries x (1 + replicas)
        nodes, slots spread by `redis-cli --cluster create`, ready when every node says the
        cluster is ok. Returns a RedisCluster."""
        c = RedisCluster(self, name, node_timeout_ms)
        for i in range(primaries * (1 + replicas)):
            c.start_node(i)
        out = subprocess.run(["redis-cli", "--cluster", "create",
                              *[f"127.0.0.1:{n.port}" for n in c.nodes],
                              "--cluster-replicas", str(replicas), "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create: {out.stdout[-2000:]}{out.stderr}")
        c.wait_healthy(primaries)
        return c
    def _redis_cli_env(self, rp):
        env = dict(os.environ)
        if getattr(rp, "password", None):
            env["REDISCLI_AUTH"] = rp.password
        return env

    def redis(self, rp, *args):
        """One command to a redis Proc through redis-cli; returns stdout stripped."""
        out = subprocess.run(["redis-cli", "-p", str(rp.port), "--no-raw", *map(str, args)],
                             capture_output=True, text=True, timeout=10,
                             env=self._redis_cli_env(rp))
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return _unquote(out.stdout.strip())

    def redis_raw(self, rp, *args):
        out = subprocess.run(["redis-cli", "-p", str(rp.port), "--raw", *map(str, args)],
                             capture_output=True, text=True, timeout=10,
                             env=self._redis_cli_env(rp))
        return out.stdout

    # ---- HTTP ----
    def http(self, method, url, body=None, headers=None, timeout=10):
        """Returns (status, headers dict, body bytes); never raises on HTTP errors."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if data is not None and "Content-Type" not in (headers or {}):
            req.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get_json(self, url, timeout=10):
        status, _, body = self.http("GET", url, timeout=timeout)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def post_json(self, url, obj, headers=None, timeout=10):
        status, _, body = self.http("POST", url, body=obj, headers=headers, timeout=timeout)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def metrics(self, base_url):
        """Parses /metrics into {name_with_labels: float}."""
        _, _, body = self.http("GET", base_url + "/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, val = line.rpartition(" ")
                out[name] = float(val)
        return out

    # ---- end of test ----
    def close(self):
        for p in reversed(self.procs):
            if p.alive():
                p.signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except AssertionError:
                pass

    def check_sanitizers(self):
        reports = []
        for f in os.listdir(self.tmp):
            path = os.path.join(self.tmp, f)
            if ".asan" in f or f.endswith(".log"):
                with open(path, errors="replace") as fh:
                    text = fh.read()
                if any(m in text for m in SANITIZER_MARKS):
                    reports.append(f"--- {f}\n{text[-6000:]}")
        if reports:
            raise AssertionError("sanitizer reports:\n" + "\n".join(reports))

    def tail_logs(self, n=40):
        out = []
        for p in self.procs:
            if not callable(getattr(p, "log", None)):
                continue  # a stand-in registered only to be stopped with the test
            try:
                lines = p.log().splitlines()[-n:]
            except OSError:
                continue
            out.append(f"--- {p.name} log (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(out)


class RespConn:
    """A plain RESP2 connection to one redis-server, for tests that read many keys: one socket,
    pipelined commands, replies as bytes, int, None, lists, or RespError."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ValueError(f"bad RESP line {line!r}")

    def pipeline(self, commands):
        out = b""
        for cmd in commands:
            args = [a if isinstance(a, bytes) else str(a).encode() for a in cmd]
            out += b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a)
                                                    for a in args)
        self.sock.sendall(out)
        return [self._reply() for _ in commands]

    def command(self, *args):
        r = self.pipeline([args])[0]
        if isinstance(r, RespError):
            raise r
        return r


class RespError(Exception):
    pass


class RedisCluster:
    """A running cluster: its nodes (Procs with .port), which are primaries, failures and slot
    moves on demand, and every key read back through the node that holds it."""

    def __init__(self, harness, name, node_timeout_ms):
        self.h, self.name, self.node_timeout_ms = harness, name, node_timeout_ms
        self.nodes = []

    def start_node(self, i, port=None):
        """Node i (again, on its port and with its nodes.conf, when it was started before)."""
        port = port or (self.nodes[i].port if i < len(self.nodes) else cluster_port())
        p = self.h.start_redis(port=port, name=f"{self.name}-{i}", extra=(
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # a replica gets its first copy at once, not after the default 5 s wait
            "--repl-diskless-sync-delay", "0"))
        if i < len(self.nodes):
            self.nodes[i] = p
        else:
            self.nodes.append(p)
        return p

    @property
    def seeds(self):
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def cluster_nodes(self, via=None):
        """CLUSTER NODES from a live node: [{id, port, flags, primary, slots}]."""
        for n in ([via] if via else self.nodes):
            if not n.alive():
                continue
            try:
                text = self.h.redis_raw(n, "CLUSTER", "NODES")
            except Exception:  # a node starting up
                continue
            out = []
            for line in text.splitlines():
                f = line.split()
                if len(f) < 8:
                    continue
                out.append({"id": f[0], "port": int(f[1].split("@")[0].rsplit(":", 1)[1]),
                            "flags": f[2].split(","), "primary": f[3], "slots": f[8:]})
            if out:
                return out
        raise AssertionError("no cluster node answers")

    def primaries(self):
        """The nodes (Procs) that are live primaries with slots, by port order."""
        ports = {e["port"] for e in self.cluster_nodes()
                 if "master" in e["flags"] and "fail" not in e["flags"] and e["slots"]}
        return [n for n in self.nodes if n.port in ports and n.alive()]

    def node_id(self, proc):
        return next(e["id"] for e in self.cluster_nodes() if e["port"] == proc.port)

    def slots_of(self, proc):
        """The slots a primary serves (CLUSTER NODES ranges, migrations left out)."""
        entry = next(e for e in self.cluster_nodes() if e["port"] == proc.port)
        out = set()
        for r in entry["slots"]:
            if r[0].isdigit():
                first, _, last = r.partition("-")
                out.update(range(int(first), int(last or first) + 1))
        return out

    def wait_healthy(self, primaries, timeout=30):
        """Every live node says cluster_state:ok, sees `primaries` primaries with slots and none
        failed, and every live replica holds its primary's copy."""
        def healthy():
            live = [n for n in self.nodes if n.alive()]
            for n in live:
                if "cluster_state:ok" not in self.h.redis_raw(n, "CLUSTER", "INFO"):
                    return False
                entries = self.cluster_nodes(via=n)
                if any("fail" in e["flags"] or "fail?" in e["flags"] for e in entries):
                    return False
                if sum(1 for e in entries if "master" in e["flags"] and e["slots"]) != primaries:
                    return False
                role = self.h.redis_raw(n, "INFO", "replication")
                if "role:slave" in role and "master_link_status:up" not in role:
                    return False
            return True
        wait_for(healthy, timeout=timeout, interval=0.1, what=f"{self.name} healthy")

    def kill_primary(self, index=0):
        """SIGKILLs one primary; returns its node index. Its replica is promoted by the
        cluster (failover) once the others agree it failed."""
        victim = self.primaries()[index]
        victim.kill()
        return self.nodes.index(victim)

    def wait_failover(self, primaries=3, timeout=30):
        """A replica took over every slot a killed primary served."""
        def covered():
            live = [n for n in self.nodes if n.alive()]
            return all("cluster_state:ok" in self.h.redis_raw(n, "CLUSTER", "INFO")
                       for n in live) and len(self.primaries()) == primaries
        wait_for(covered, timeout=timeout, interval=0.1, what=f"{self.name} failover")

    def restart_as_replica(self, i, primaries=3):
        """Node i, killed, starts again (same port and nodes.conf, no data): the cluster makes
        it a replica of the node that took its place, which sends it everything."""
        p = self.start_node(i)
        wait_for(lambda: "master_link_status:up" in self.h.redis_raw(p, "INFO", "replication"),
                 timeout=30, interval=0.1, what=f"node {i} to come back as a replica")
        self.wait_healthy(primaries)
        return p

    def reshard(self, slots, source, target):
        """Moves `slots` slots from primary source to primary target (redis-cli --cluster
        reshard: MIGRATE key batches, ASK meanwhile, MOVED after)."""
        out = subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source.port}",
                              "--cluster-from", self.node_id(source),
                              "--cluster-to", self.node_id(target),
                              "--cluster-slots", str(slots), "--cluster-yes",
                              "--cluster-pipeline", "2"],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"reshard: {out.stdout[-2000:]}{out.stderr}")

    def command(self, *args):
        """One command through the cluster (redis-cli -c follows MOVED): its answer's text."""
        out = subprocess.run(["redis-cli", "-c", "-p", str(self.primaries()[0].port), "--raw",
                              *map(str, args)], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def get(self, key):
        return self.command("GET", key)

    def set(self, key, value):
        """SET through the cluster (redis-cli -c follows MOVED)."""
        subprocess.run(["redis-cli", "-c", "-p", str(self.primaries()[0].port), "SET", key,
                        value], capture_output=True, text=True, timeout=10, check=True)

    def keys_by_node(self, pattern="*"):
        """{port: [key, ...]} of every live primary (SCAN)."""
        out = {}
        for n in self.primaries():
            conn = RespConn(n.port)
            try:
                keys, cursor = [], b"0"
                while True:
                    cursor, page = conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                    keys += [k.decode() for k in page]
                    if cursor == b"0":
                        break
                out[n.port] = keys
            finally:
                conn.close()
        return out

    def copy_to(self, single, pattern="*"):
        """Every key of the cluster (DUMP on the primary that holds it) RESTOREd into a single
        redis-server, so what reads one server's keys reads the cluster's."""
        dst = RespConn(single.port)
        try:
            for port, keys in self.keys_by_node(pattern).items():
                src = RespConn(port)
                try:
                    dumps = src.pipeline([("DUMP", k) for k in keys])
                finally:
                    src.close()
                restores = [("RESTORE", k, 0, d, "REPLACE") for k, d in zip(keys, dumps)
                            if isinstance(d, bytes)]
                for r in dst.pipeline(restores):
                    if isinstance(r, RespError):
                        raise r
        finally:
            dst.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


def _unquote(s):
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s
