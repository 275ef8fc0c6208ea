#!/usr/bin/env bash
# Fleet scale (issue 15): N servers in N/10 clusters, a week of their
# syslog (`cms-sim gen-log --days 7`, dated the last seven days) through
# one guard, by a followed file and by TCP; then what the page asks of a
# guard holding that week: /api/status, a week's chart of one web bridge
# and of one cluster (`/api/history?webbridge=` and `?cluster=`, 600
# points, as the page asks), and the page's first render in headless
# Chromium. Peak RSS through all of it; the SQLite file's size per web
# bridge, scaled to 90 days. Each size in turn, to show how each figure
# grows.
#
# Targets (250 servers): ingest under 10 s by file and by TCP;
# /api/status, and each chart, under 50 ms; each chart under 200 KB; the
# page's first render under 2 s; peak RSS under 128 MB.
# Writes bench/results/fleet.md and refreshes bench/RESULTS.md.
#
#   bench/fleet.sh                      # 25, 250 and 1000 servers
#   SIZES=250 bench/fleet.sh            # one size
#   KEEP=1 bench/fleet.sh               # keep the work folder (logs, databases)
#   LINES_PER_RECORD=20 SIZES=250 bench/fleet.sh   # with CMS's noise (60 M lines)
#   LOGS=/tmp/weeks bench/fleet.sh      # use week-N.log there if present (the
#                                       # same gen-log command, made earlier)
#
# Needs chromium and chromium-driver (Debian), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"25 250 1000"}
DAYS=${DAYS:-7}
REQUESTS=${REQUESTS:-20}
# Sizes above this are copies of its week (see below).
SIMULATED=${SIMULATED:-250}
command -v chromedriver >/dev/null || { echo "needs chromedriver (apt-get install chromium-driver)" >&2; exit 2; }
cargo build --release -q -p wbguard -p cms-sim
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
start=$(date -u -d "$DAYS days ago" +%Y-%m-%dT%H:%M:%SZ)

# One guard over one size's week: prints "key=value" lines.
#   $1 servers, $2 "file" or "tcp", $3 the log, $4 the configuration
guard_run() {
    local servers=$1 how=$2 log=$3 config=$4 dir http port pid records begin end
    dir=$(mktemp -d -p "$work")
    http=$(free_port); port=$(free_port)
    records=$(wc -l < "$log")
    local follow=()
    [ "$how" = file ] && follow=(--follow "$log")
    begin=$(date +%s.%N)
    target/release/wbguard watch --config "$config" --listen-syslog "tcp://127.0.0.1:$port" \
        --listen-http "127.0.0.1:$http" --state-dir "$dir" "${follow[@]}" > "$dir/endpoints" 2> "$dir/stderr" &
    pid=$!
    for _ in $(seq 200); do [ -s "$dir/endpoints" ] && break; sleep 0.05; done
    if [ "$how" = tcp ]; then
        python3 bench/send.py tcp 127.0.0.1 "$port" "$log" > "$dir/sent" &
        end=$(python3 bench/send.py wait "http://127.0.0.1:$http/metrics" "$records")
        wait $!
        begin=$(cat "$dir/sent")
    else
        end=$(python3 bench/send.py wait "http://127.0.0.1:$http/metrics" "$records")
    fi
    echo "ingest_seconds=$(python3 -c "print(f'{$end - $begin:.2f}')")"
    echo "records=$records"
    echo "ingest_rss_kib=$(hwm "$pid")"
    # What the page asks, once the history has the week.
    python3 bench/fleet.py measure "http://127.0.0.1:$http" "$REQUESTS" "$DAYS"
    if [ "$how" = file ]; then
        python3 bench/fleet.py page "http://127.0.0.1:$http/"
    fi
    echo "peak_rss_kib=$(hwm "$pid")"
    echo "dropped_batches=$(curl -s "http://127.0.0.1:$http/metrics" | awk '/^wbguard_history_dropped_batches_total/ {print $2}')"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    echo "database_bytes=$(du -cb "$dir"/*.sqlite* 2>/dev/null | tail -1 | cut -f1)"
    rm -rf "$dir"
}

rows=()
for servers in $SIZES; do
    log="$work/week-$servers.log"
    if [ -n "${LOGS:-}" ] && [ -s "$LOGS/week-$servers.log" ]; then
        # A week generated earlier (it ends when it was made: the newest
        # records are that old, nothing else changes).
        cp "$LOGS/week-$servers.log" "$log"
    elif [ "$servers" -gt "$SIMULATED" ] && [ $((servers % SIMULATED)) = 0 ]; then
        # Simulating 1,000 servers takes over an hour on 2 CPUs: copies of
        # the largest simulated week, each with its own host names.
        [ -s "$work/week-$SIMULATED.log" ] || target/release/cms-sim gen-log --servers "$SIMULATED" --days "$DAYS" \
            --start "$start" --header wire --lines-per-record "${LINES_PER_RECORD:-1}" --seed 15 -o "$work/week-$SIMULATED.log"
        python3 bench/fleet.py replicate "$work/week-$SIMULATED.log" "$SIMULATED" $((servers / SIMULATED)) > "$log"
    else
        target/release/cms-sim gen-log --servers "$servers" --days "$DAYS" --start "$start" --header wire \
            --lines-per-record "${LINES_PER_RECORD:-1}" --seed 15 -o "$log"
    fi
    config="$work/fleet-$servers.toml"
    python3 bench/fleet.py config "$servers" > "$config"
    for how in file tcp; do
        echo "== $servers servers, by $how" >&2
        result=$(guard_run "$servers" "$how" "$log" "$config" | tr '\n' ' ')
        echo "$result" >&2
        rows+=("servers=$servers how=$how bytes=$(stat -c %s "$log") $result")
    done
    # The simulated week stays for the copies of larger sizes.
    [ "$servers" = "$SIMULATED" ] || rm -f "$log"
done

python3 bench/fleet.py report "$DAYS" "${rows[@]}" > bench/results/fleet.md
cat bench/results/fleet.md
bench/collect.sh > /dev/null 2>&1 || true
