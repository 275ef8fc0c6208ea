#!/usr/bin/env bash
# Joins the sections in bench/results/ into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")"
{
    echo "# Benchmark results"
    echo
    echo "Each section is written by the script it names; rerun that script to"
    echo "reproduce it. Sections: $(ls results/*.md | xargs -n1 basename | sed 's/\.md$//' | paste -sd, - | sed 's/,/, /g')."
    for part in results/*.md; do
        echo
        cat "$part"
    done
} > RESULTS.md
cat RESULTS.md
