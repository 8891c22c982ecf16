#!/bin/sh
# Runs each libFuzzer harness in DIR for SECONDS over its saved corpus (tests/fuzz/corpus/NAME,
# read only) and a working corpus (var/fuzz/NAME, where new inputs go), with ASan and UBSan,
# then prints one line per harness: runs, execs/s, coverage, crashes. Crashing inputs are kept
# in var/fuzz/artifacts/; copy one into tests/fuzz/corpus/NAME once fixed, so `make test`
# replays it from then on. Exit status 1 when any harness crashed.
#   sh tests/fuzz/run.sh build-fuzz/bin/fuzz 60
set -u
DIR=$1
SECONDS_EACH=${2:-60}
OUT=var/fuzz
mkdir -p "$OUT/artifacts"
crashed=0
summary=""
for bin in "$DIR"/fuzz_*; do
    name=$(basename "$bin" | sed 's/^fuzz_//')
    mkdir -p "$OUT/$name"
    log="$OUT/$name.log"
    before=$(ls "$OUT/artifacts" | grep -c "^$name-" || true)
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
        "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$OUT/artifacts/$name-" "$OUT/$name" "tests/fuzz/corpus/$name" \
        >"$log" 2>&1
    rc=$?
    after=$(ls "$OUT/artifacts" | grep -c "^$name-" || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | sed 's/cov: //')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | sed 's/ft: //')
    corpus=$(ls "$OUT/$name" "tests/fuzz/corpus/$name" | grep -vc ':$\|^$')
    line=$(printf '%-10s %10s runs %7s execs/s  cov %5s  ft %6s  corpus %5s  crashes %s' \
        "$name" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corpus" $((after - before)))
    echo "$line"
    summary="$summary$line
"
    if [ $rc -ne 0 ] || [ $((after - before)) -gt 0 ]; then
        crashed=1
        echo "  see $log" >&2
    fi
done
printf '%s' "$summary" >"$OUT/summary.txt"
exit $crashed
