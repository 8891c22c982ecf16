#!/bin/sh
# `make bench`: runs every bench/*.sh (ingest, hold and reads first, then the others by name),
# or only the ones named: `sh bench/run.sh ingest reads`. Each prints its own figures next to
# its yardsticks. Exits non-zero if any failed, after running all of them.
cd "$(dirname "$0")/.." || exit 1
if [ $# -gt 0 ]; then
    names=$*
else
    names="ingest hold reads"
    for f in bench/*.sh; do
        n=$(basename "$f" .sh)
        case " run lib $names " in *" $n "*) ;; *) names="$names $n" ;; esac
    done
fi
status=0
for b in $names; do
    [ -f "bench/$b.sh" ] || continue
    echo "== bench/$b.sh"
    sh "bench/$b.sh" || { echo "bench/$b.sh failed" >&2; status=1; }
    echo
done
exit $status
