#!/bin/sh
# Installs tests/interop's npm packages (@atproto/lexicon, @atproto/dev-env) when node_modules is
# missing or package.json changed since the last install; silent when there is nothing to do.
set -e
dir=$(cd "$(dirname "$0")/../interop" && pwd)
stamp="$dir/node_modules/.installed-package.json"
if [ -d "$dir/node_modules" ] && [ -f "$stamp" ] && cmp -s "$dir/package.json" "$stamp"; then
    exit 0
fi
command -v npm >/dev/null || { echo "install-node: npm not found (tests/tools/install-deps.sh installs it)" >&2; exit 1; }
echo "install-node: npm install in $dir (a few minutes the first time)" >&2
cd "$dir"
npm install --no-audit --no-fund --loglevel=error >&2
# npm 11 skips install scripts, so the native sqlite module the dev-env PDS uses is built here.
npm rebuild better-sqlite3 --loglevel=error >/dev/null
cp package.json "$stamp"
