#!/usr/bin/env bash
# Peak memory of `wbguard analyze` on logs of any length (issue 12: 3 GB of
# Stats lines took 738 MB of RSS, 9 GB took 2.18 GB). Two shapes per size:
#
# - "records": a records-only log from `cms-sim gen-log --lines-per-record 1`
#   (4 servers, time advancing), as a plain file read in parallel ranges;
#   generated once into bench/data (slow: about 10 MB/s);
# - "still": one Stats line repeated (a clock that stands still, every line
#   a duplicate; what the finding used), streamed through a pipe.
#
#   bench/analyze-memory.sh                 # 3G and 9G, needs GNU time
#   SIZES="1G" bench/analyze-memory.sh      # quicker
#
# Results: bench/results/analyze-memory.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/bin/time ] || { echo "bench: GNU time is missing (apt-get install time)" >&2; exit 2; }

SIZES=${SIZES:-3G 9G}
DATA=bench/data
OUT=bench/results/analyze-memory.md
mkdir -p "$DATA"
cargo build --release -q -p wbguard -p cms-sim
TARGET=${CARGO_TARGET_DIR:-target}
WBGUARD=$TARGET/release/wbguard
SIM=$TARGET/release/cms-sim
LINE='Mar 18 14:58:48.078 user.info cms1 webbridge: INFO : [DEBUGGING] Stats 149, c:3477, d:3170'

measure() { # label, then the command; prints "| label | peak | time | records | duplicates |"
    local label=$1 report
    shift
    report=$(mktemp)
    /usr/bin/time -f '%M %e' -o "$report.time" "$@" >"$report"
    read -r kib seconds <"$report.time"
    python3 - "$label" "$kib" "$seconds" "$report" <<'PY'
import json, sys
label, kib, seconds, path = sys.argv[1:]
lines = json.load(open(path))["lines"]
print(f"| {label} | {int(kib) / 1024:.1f} MiB | {float(seconds):.1f} s | {lines['records']:,} | {lines['duplicates']:,} |")
PY
    rm -f "$report" "$report.time"
}

{
    echo "## Peak memory of \`wbguard analyze\` (bench/analyze-memory.sh)"
    echo
    echo "$(nproc) cores, $(uname -sr); $(date -u +%Y-%m-%d). Target: under 64 MiB whatever the size."
    echo
    echo "| input | peak RSS | time | records | duplicates |"
    echo "|---|---|---|---|---|"
    for size in $SIZES; do
        log=$DATA/records-$size.log
        [ -s "$log" ] || "$SIM" gen-log --lines-per-record 1 --servers 4 --size "$size" -o "$log" 2>/dev/null
        measure "records, $size file" "$WBGUARD" analyze --format json "$log"
        measure "still, $size pipe" sh -c "yes '$LINE' | head -c $size | $WBGUARD analyze --format json -"
    done
} | tee "$OUT"
