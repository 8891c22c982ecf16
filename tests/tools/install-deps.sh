#!/bin/sh
# Installs the Debian 12 packages a make target needs, when missing; silent when nothing is.
#   install-deps.sh build        the compiler and the -dev packages (`make`)
#   install-deps.sh run          build, and what `make run` and `make demo` start: redis-server,
#                                redis-tools, python3
#   install-deps.sh test         run, and what `make test` uses: node and npm (tests/interop),
#                                iproute2 (ip, ss), and the lint and format tools it gates on
#   install-deps.sh bench        run, and the benchmarks' wrk, nginx and sqlite3
#   install-deps.sh tools PKG... only the packages named (`make lint`, `make format`)
# Any package named after the profile is added to it (`make fuzz`: build clang libclang-rt-14-dev).
set -e
BUILD="build-essential pkg-config libwebsockets-dev libwebsockets-evlib-uv libuv1-dev
libhiredis-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev libzstd-dev
ca-certificates"
RUN="$BUILD redis-server redis-tools python3"
profile=${1:-build}
[ $# -gt 0 ] && shift
case "$profile" in
build) PKGS="$BUILD" ;;
run) PKGS="$RUN" ;;
test) PKGS="$RUN nodejs npm iproute2 openssl cppcheck clang-tidy clang-format" ;;
bench) PKGS="$RUN openssl wrk nginx-light sqlite3" ;;
tools) PKGS="" ;;
*)
    echo "install-deps: unknown profile '$profile' (build, run, test, bench or tools)" >&2
    exit 2
    ;;
esac
PKGS="$PKGS $*"
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
    echo "install-deps: missing packages:$missing" >&2
    echo "install-deps: run as root: apt-get install$missing" >&2
    exit 1
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $missing >/dev/null
