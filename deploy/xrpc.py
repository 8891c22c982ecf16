#!/usr/bin/env python3
"""The HTTP client of deploy/run-local.sh and deploy/demo.sh (curl is not installed by
`make run` and `make demo`; python3 is). One process does a whole step, since starting python
costs more than the requests themselves on a busy machine.

  xrpc.py wait URL PID [SECONDS]      until URL answers 2xx; fails early if PID exits
  xrpc.py until URL TEXT PID [SECONDS] until URL's answer contains TEXT; fails early if PID exits
  xrpc.py did URL                     prints the "id" of the DID document at URL
  xrpc.py fold REPLAY APPVIEW [SECS]  until the appview has folded every event the replay
                                      server sent (its /_stats vs the appview's /metrics)
  xrpc.py ports N                     prints N free loopback TCP ports
  xrpc.py busy PORT...                prints those of PORT... something listens on
  xrpc.py show                        runs the requests on stdin, one per line:
                                      TITLE<TAB>METHOD<TAB>URL[<TAB>JSON BODY[<TAB>TOKEN]]
                                      and prints each with its JSON answer; exit 1 if any
                                      answered outside 2xx
"""
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request


def request(method, url, body=None, token=None, timeout=15):
    data = body.encode() if body else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def poll(check, seconds, pid=None, what="condition"):
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        if pid is not None and not alive(pid):
            sys.exit(f"process {pid} exited while waiting for {what}")
        try:
            if check():
                return
        except OSError as e:  # not listening yet
            last = e
        time.sleep(0.05)
    sys.exit(f"timed out after {seconds}s waiting for {what} (last error: {last})")


def metrics(base):
    _, body = request("GET", base + "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def cmd_wait(url, pid, seconds="10"):
    poll(lambda: 200 <= request("GET", url, timeout=2)[0] < 300, float(seconds), int(pid), url)


def cmd_until(url, text, pid, seconds="10"):
    poll(lambda: text.encode() in request("GET", url, timeout=2)[1], float(seconds), int(pid),
         f"{text} in {url}")


def cmd_did(url):
    status, body = request("GET", url)
    if status != 200:
        sys.exit(f"{url}: HTTP {status}")
    print(json.loads(body)["id"])


def cmd_fold(replay, appview, seconds="20"):
    def folded():
        _, body = request("GET", replay + "/_stats", timeout=2)
        sent = json.loads(body)["eventsSent"]
        return sent > 0 and metrics(appview).get("appview_events_folded_total", -1) >= sent
    poll(folded, float(seconds), what="the appview to fold the replayed events")


def cmd_show():
    failed = 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        title, method, url, *rest = line.split("\t")
        body = rest[0] if rest else None
        token = rest[1] if len(rest) > 1 else None
        status, data = request(method, url, body, token)
        try:
            text = json.dumps(json.loads(data), indent=2)
        except ValueError:
            text = data.decode(errors="replace")
        print(f"\n== {title}\n$ {method} {url}" + (f"\n  {body}" if body else ""))
        print(f"HTTP {status}\n{text}", flush=True)
        failed += not 200 <= status < 300
    sys.exit(1 if failed else 0)


def cmd_ports(n):
    socks = [socket.socket() for _ in range(int(n))]
    for s in socks:  # all bound at once, so the ports differ
        s.bind(("127.0.0.1", 0))
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_busy(*ports):
    busy = []
    for p in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(p))) == 0:
                busy.append(p)
    print(" ".join(busy))


COMMANDS = {"wait": cmd_wait, "until": cmd_until, "did": cmd_did, "fold": cmd_fold, "show": cmd_show,
            "ports": cmd_ports, "busy": cmd_busy}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
