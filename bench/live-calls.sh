#!/usr/bin/env bash
# Live calls (issue 13): the guard on its logs alone against the guard with
# CDRs, over a simulated week of a 24-hour deployment and of an office
# (virtual time, the demo's policy, Cisco's script daily at 03:00 beside
# them); and, over real sockets, the time from the callLegEnd that leaves
# the cluster without CMA calls to the restart (the simulator posting CDRs
# and serving its API, a real guard restarting through its MMP).
# Writes bench/results/live-calls.md and refreshes bench/RESULTS.md.
#
#   bench/live-calls.sh            # 5 latency runs
#   RUNS=10 bench/live-calls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
WBGUARD_BENCH_OUT="$work/weeks.json" cargo test --release -q -p wbguard --bin wbguard \
    commands::demo::compare::tests::a_week_of_busy_nights -- --include-ignored > /dev/null
for _ in $(seq "$RUNS"); do
    cargo test --release -q -p wbguard --test cli live_calls::cdrs_free -- --nocapture 2>&1 \
        | sed -n 's/^from the last callLegEnd to the restart: \([0-9]*\) ms$/\1/p' >> "$work/latency"
done
python3 - "$work" "$RUNS" <<'PY' > bench/results/live-calls.md
import json, statistics, sys, os
work, runs = sys.argv[1], int(sys.argv[2])
weeks = json.load(open(os.path.join(work, "weeks.json")))
latency = [int(x) for x in open(os.path.join(work, "latency")).read().split()]
print("## Live calls: the guard with CDRs against the guard on its logs\n")
print("Written by `bench/live-calls.sh`. A simulated week (from the seed of the demo,")
print("four servers, about 110 real sessions per web bridge at peak, 2% of ended")
print("sessions leaking), the demo's policy (restart at 100 sure leaks or a lockout")
print("forecast, no call may drop), in virtual time; wbguard's runs parse every line")
print("and take the core's decisions once a simulated minute, \"with CDRs\" also")
print("given the deployment's live CMA calls at that minute.\n")
titles = {"all_day": "A 24-hour deployment (never below 70% of the peak, a join every few seconds)",
          "office": "An office (busy days, quiet nights and weekends)"}
for name in ["all_day", "office"]:
    print(f"### {titles[name]}\n")
    print("| strategy | refused joins | dropped calls | restarts |")
    print("|---|---|---|---|")
    for o in weeks[name]:
        print(f"| {o['name']} | {o['refused_joins']} | {o['dropped_calls']} | {o['restarts']} |")
    print()
print("What it says: under 24-hour load the cluster is never without a live CMA call,")
print("so live calls cannot prove any restart harmless, and neither guard restarts")
print("(the lockout that follows is issue 14's to solve). On office load the logs")
print("already find the quiet nights, so the week's totals are the same. What CDRs")
print("and the API add is not in these totals but at the second of a restart: a call")
print("that began after the last log sample is seen, and a web bridge the logs hold")
print("is freed as soon as the last call ends (below).\n")
print("### From the last callLegEnd to the restart, over real sockets\n")
print(f"`tests/cli/live_calls.rs` (`cdrs_free_...`), {len(latency)} runs: the simulator's call")
print("bridges post CDRs to `wbguard watch --listen-cdr` and serve their API; the guard")
print("holds a web bridge at its limit while two CMA calls are live, and the time is")
print("taken from the control request that ends the last one to the simulator counting")
print("the restart (the CDR post, the guard's next round, a fresh API check, SSH);")
print("the guard decides once a second, which is most of it.\n")
print("| runs | median | min | max |")
print("|---|---|---|---|")
print(f"| {len(latency)} | {statistics.median(latency):.0f} ms | {min(latency)} ms | {max(latency)} ms |")
PY
bench/collect.sh > /dev/null
cat bench/results/live-calls.md
