#!/usr/bin/env python3
"""Valkey alone, fed a run's own commands: the yardstick both make bench's ingest and backfill
print. The commands a server's MONITOR recorded (MONITOR_FILE) are turned into RESP
(bench/monitor_to_resp.py) and piped with `redis-cli --pipe` into a fresh redis-server, RUNS
times; the median run is the figure, because single replays spread by a quarter on these
machines. Prints one line:

  records_per_s=<median> seconds=<median> valkey_cpu=a/b/... runs=<records/s each>

or error=<why>.

  valkey_alone.py MONITOR_FILE RECORDS DIR [RUNS]   (RUNS: 5; DIR gets the RESP and the logs)
"""
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True).stdout


def valkey_cpu_s(port):
    return sum(float(line.split(":")[1]) for line in cli(port, "INFO", "cpu").splitlines()
               if line.startswith(("used_cpu_user:", "used_cpu_sys:")))


def replay(resp, d):
    """(seconds, Valkey CPU seconds) of one replay into a fresh server."""
    port = free_port()
    with open(os.path.join(d, "pipe-redis.log"), "ab") as log:
        p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", d],
                             stdout=log, stderr=log)
    try:
        for _ in range(100):
            if cli(port, "PING").strip() == "PONG":
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the replay's redis-server did not start")
        c0 = valkey_cpu_s(port)
        t0 = time.monotonic()
        with open(resp, "rb") as f:
            done = subprocess.run(["redis-cli", "-p", str(port), "--pipe"], stdin=f,
                                  capture_output=True, text=True)
        secs = time.monotonic() - t0
        if done.returncode != 0 or "errors: 0," not in done.stdout:
            raise RuntimeError(f"redis-cli --pipe: {done.stdout.strip()} {done.stderr.strip()}")
        return secs, valkey_cpu_s(port) - c0
    finally:
        p.terminate()
        p.wait()


def measure(monitor, records, d, runs=5):
    """The figures of the module's line, as a dict; RuntimeError when a replay fails."""
    resp = os.path.join(d, "commands.resp")
    with open(monitor, "rb") as fin, open(resp, "wb") as fout:
        subprocess.run([sys.executable, os.path.join(HERE, "monitor_to_resp.py")], stdin=fin,
                       stdout=fout, check=True)
    done = [replay(resp, d) for _ in range(runs)]
    secs = sorted(s for s, _ in done)[runs // 2]
    return {"records_per_s": f"{records / secs:.0f}", "seconds": f"{secs:.3f}",
            "valkey_cpu": "/".join(f"{c:.2f}" for _, c in done),
            "runs": "/".join(f"{records / s:.0f}" for s, _ in done)}


if __name__ == "__main__":
    try:
        figures = measure(sys.argv[1], int(sys.argv[2]), sys.argv[3],
                          int(sys.argv[4]) if len(sys.argv) > 4 else 5)
        print(" ".join(f"{k}={v}" for k, v in figures.items()))
    except RuntimeError as e:
        print(f"error={e}")
