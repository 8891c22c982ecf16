"""A real PDS + PLC directory for integration tests (tests/interop/devnet.js, @atproto/dev-env).

    net = devnet.start(h)                  # or start(h, spec={"accounts": [...]})
    net.pds, net.plc, net.accounts         # [{"did", "handle"}]
    net.command("create", repo=did, collection="io.atcr.tag", rkey="x", record={...})
    net.stop()                             # also done by h.close() at the end of the test

The process is registered with the harness, so it is stopped with the test's other processes
and its stderr lands in <tmp>/devnet.log.
"""
import json
import os
import queue
import shutil
import signal
import subprocess
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INTEROP = os.path.join(ROOT, "tests", "interop")
SCRIPT = os.path.join(INTEROP, "devnet.js")
INSTALL = os.path.join(ROOT, "tests", "tools", "install-node.sh")


def _installed():
    return os.path.isdir(os.path.join(INTEROP, "node_modules", "@atproto", "dev-env"))


def available():
    """None when a devnet can run here (installing the npm packages if needed), else why not."""
    if not shutil.which("node"):
        return "node is not installed"
    if os.path.exists(INSTALL):  # quiet and quick when node_modules is already current
        subprocess.run(["sh", INSTALL], cwd=ROOT, timeout=900)
    if not _installed():
        return "tests/interop/node_modules lacks @atproto/dev-env (run tests/tools/install-node.sh)"
    return None


class Devnet:
    def __init__(self, harness, spec=None, name="devnet", start_timeout=60):
        self.name = name
        self.log_path = os.path.join(harness.tmp, f"{name}.log")
        argv = ["node", SCRIPT]
        if spec is not None:
            spec_path = os.path.join(harness.tmp, f"{name}-spec.json")
            with open(spec_path, "w") as f:
                json.dump(spec, f)
            argv.append(spec_path)
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=log)
        log.close()
        harness.procs.append(self)
        self._lines = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._line(start_timeout, "the devnet's ready line")
        self.pds, self.plc, self.accounts = ready["pds"], ready["plc"], ready["accounts"]

    def _read(self):
        for raw in self.popen.stdout:
            self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def _line(self, timeout, what):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"devnet: timed out waiting for {what}\n{self.log()[-3000:]}")
        if line is None:
            raise AssertionError(f"devnet exited while waiting for {what}\n{self.log()[-3000:]}")
        return json.loads(line)

    def account(self, handle):
        return next(a for a in self.accounts if a["handle"] == handle)

    def command(self, op, timeout=30, **fields):
        """Sends one command and returns its answer; raises when the devnet reports an error."""
        self._next_id += 1
        cmd = dict(fields, op=op, id=self._next_id)
        self.popen.stdin.write((json.dumps(cmd) + "\n").encode())
        self.popen.stdin.flush()
        reply = self._line(timeout, f"the answer to {op}")
        if reply.get("id") != cmd["id"] or not reply.get("ok"):
            raise AssertionError(f"devnet {op} failed: {reply}")
        return reply

    # The harness's process interface, so h.close() stops the devnet with the rest.
    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout=20):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout}s")

    def stop(self, timeout=20):
        if self.alive():
            try:
                self.popen.stdin.close()
            except OSError:
                pass
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()


def start(harness, spec=None, **kw):
    return Devnet(harness, spec, **kw)
