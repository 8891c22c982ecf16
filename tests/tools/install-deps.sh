#!/bin/sh
# Installs the Debian 12 packages the build, the tests and the benchmarks need, if missing, and
# those named as arguments (`make lint` and `make format` name their tools).
set -e
PKGS="build-essential pkg-config libwebsockets-dev libwebsockets-evlib-uv libuv1-dev libhiredis-dev
libjansson-dev libsqlite3-dev sqlite3 libcurl4-openssl-dev libzstd-dev libssl-dev openssl redis-server redis-tools
python3 wrk nginx-light ca-certificates curl nodejs npm $*"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# node and npm may come from elsewhere than Debian (nodesource's nodejs bundles npm, and
# Debian's npm package conflicts with it): any node and npm on PATH will do.
if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=$(echo "$missing" | sed 's/ nodejs//; s/ npm//')
fi
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages:$missing (run as root or install them)" >&2
    exit 1
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $missing >/dev/null
