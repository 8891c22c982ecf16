"""Upstream failure is never reported as absence: a handle that cannot be resolved because the
network failed is an upstream failure (502), not "no such handle" (404), and it is not
remembered as absent. Two ways to be offline, each in a network namespace of its own
(`unshare -n`): no DNS server reachable at all, and a resolver that answers "no such name" to
every question (tests/lib/dns_sinkhole.py behind a bind-mounted resolv.conf, `unshare -m`),
which is what a filtering or captive resolver, or one without an upstream, does.

The appview runs inside the namespace with Valkey reached over a unix socket (which crosses
network namespaces); the test's requests enter the namespace with `nsenter`."""
import json
import os
import shutil
import subprocess
import urllib.parse

from harness import free_port, wait_for

PREFIX = "atcr:"


def available():
    for tool in ("unshare", "nsenter", "ip", "mount"):
        if not shutil.which(tool):
            return f"{tool} is missing"
    probe = subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        return "cannot create a network namespace here: " + probe.stderr.decode().strip()
    return None


def in_namespace(pid, url):
    """GET url from inside process pid's network namespace: (status, parsed body)."""
    script = ("import sys, urllib.request, urllib.error\n"
              "try:\n"
              "    r = urllib.request.urlopen(sys.argv[1], timeout=20); s, b = r.status, r.read()\n"
              "except urllib.error.HTTPError as e:\n"
              "    s, b = e.code, e.read()\n"
              "print(s); sys.stdout.write(b.decode())\n")
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "python3", "-c", script, url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status, _, body = out.stdout.partition("\n")
    return int(status), json.loads(body) if body.startswith("{") else body


SINKHOLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib",
                        "dns_sinkhole.py")


def offline(h, argv, sinkhole):
    """argv run in a new network namespace with only lo (up); with sinkhole, its resolver is
    a local DNS server that denies every name."""
    setup = "ip link set lo up"
    if sinkhole:
        conf = os.path.join(h.tmp, "resolv.conf")
        with open(conf, "w") as f:
            f.write("nameserver 127.0.0.1\n")
        ready = os.path.join(h.tmp, "sinkhole.ready")
        setup += (f" && mount --bind {conf} /etc/resolv.conf"
                  f" && {{ python3 {SINKHOLE} 127.0.0.1 53 {ready} & }}"
                  f" && while [ ! -e {ready} ]; do sleep 0.05; done")
    return ["unshare", "-n", "-m", "sh", "-c", setup + ' && exec "$@"', "offline", *argv]


def resolve_offline(h, sinkhole):
    out = subprocess.run(offline(h, [h.binary("tools/resolve"), "alice.bsky.social",
                                     "atproto.com"], sinkhole),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines()[:2]:
        r = json.loads(line)
        assert r["status"] == "UPSTREAM_FAILURE", r
        assert r["error"] == ("handle resolution failed upstream: DNS does not answer "
                              "(offline, or the resolver filters)"), r


def test_resolver_without_dns_server(h):
    resolve_offline(h, sinkhole=False)


def test_resolver_behind_a_resolver_that_denies_every_name(h):
    resolve_offline(h, sinkhole=True)


def test_appview_offline_answers_502_not_404(h):
    sock = os.path.join(h.tmp, "valkey.sock")
    redis = h.start_redis(extra=("--unixsocket", sock, "--unixsocketperm", "700"))
    port = free_port()
    env = {"APPVIEW_VALKEY_URL": f"unix://{sock}", "APPVIEW_LISTEN": f"127.0.0.1:{port}",
           "APPVIEW_INGEST": "off", "APPVIEW_LEXICON_DIR": "lexicons",
           "APPVIEW_DATA_DIR": os.path.join(h.tmp, "appview"), "APPVIEW_KEY_PREFIX": PREFIX}
    p = h.spawn("appview", offline(h, [h.binary("appview")], sinkhole=True), env=env,
                sanitized=True)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: in_namespace(p.popen.pid, base + "/xrpc/_health")[0] == 200,
             timeout=20, what="appview in its namespace")
    q = urllib.parse.urlencode({"actor": "alice.bsky.social"})
    status, body = in_namespace(p.popen.pid, f"{base}/xrpc/io.atcr.repo.listRepositories?{q}")
    assert status == 502, (status, body)
    assert body["error"] == "UpstreamFailure", body
    assert "DNS does not answer" in body["message"], body
    # an upstream failure is not cached as "no such handle"
    assert h.redis(redis, "EXISTS", f"{PREFIX}handle-neg:alice.bsky.social") == "(integer) 0"
    assert p.stop() == 0
