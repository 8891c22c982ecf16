#!/bin/sh
# Turns cache/NAME.lua files into C: `const char lua_NAME[] = "...";` for each.
set -e
echo '/* generated from the cache Lua scripts by tests/tools/embed.sh: do not edit */'
for f in "$@"; do
    name=$(basename "$f" .lua)
    printf 'extern const char lua_%s[];\nconst char lua_%s[] =\n' "$name" "$name"
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$/\\n"/' "$f"
    echo ';'
done
