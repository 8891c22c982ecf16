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
            try:
                lines = p.log().splitlines()[-n:]
            except OSError:
                continue
            out.append(f"--- {p.name} log (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(out)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


def _unquote(s):
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s
