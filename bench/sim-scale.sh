#!/usr/bin/env bash
# The simulator at scale: 200 servers in one `cms-sim run` process at
# real-time speed, during a busy weekday hour, sending syslog to a UDP
# listener. Targets: under 200 MB of memory and under half a core.
# Writes bench/results/sim-scale.md and refreshes bench/RESULTS.md.
#
#   bench/sim-scale.sh                  # 200 servers, 60 s measured
#   SERVERS=50 SECONDS_MEASURED=20 bench/sim-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-200}
MEASURE=${SECONDS_MEASURED:-60}
cargo build --release -q -p cms-sim
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
# A UDP syslog listener that counts datagrams (one message each).
python3 - "$work" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", 0))
open(sys.argv[1] + "/port", "w").write(str(s.getsockname()[1]))
count = 0
while True:
    s.recv(65536)
    count += 1
    if count % 100 == 0:
        open(sys.argv[1] + "/count", "w").write(str(count))
PY
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
# A Tuesday at 10:00 UTC, the busiest hour of the load curve, after a
# silent warm-up of four virtual hours: the sessions of the day are in place.
target/release/cms-sim run --servers "$SERVERS" --speed 1 --start 2024-03-05T10:00:00Z --warm-up 4 \
    --ssh-port 0 --http-port 0 --control-port 0 --state-dir "$work/state" \
    --syslog "udp://127.0.0.1:$port" > "$work/endpoints.json" &
sim=$!
for _ in $(seq 600); do [ -s "$work/endpoints.json" ] && break; sleep 0.1; done
sleep 5   # settle
ticks() { awk '{print $14 + $15}' "/proc/$sim/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); s0=$(date +%s.%N)
sleep "$MEASURE"
t1=$(ticks); s1=$(date +%s.%N)
rss=$(awk '/VmHWM/ {print $2}' "/proc/$sim/status")
control=$(python3 -c "import json; print(json.load(open('$work/endpoints.json'))['control'])")
truth=$(python3 -c "import json, urllib.request; t = json.load(urllib.request.urlopen('http://$control/truth')); print(t['totals']['joins'], sum(s['webbridge']['active'] for s in t['servers']), t['syslog_dropped'])")
kill -TERM "$sim"; wait "$sim" || true
read -r joins active dropped <<< "$truth"
lines=$(cat "$work/count" 2>/dev/null || echo 0)
cpu=$(python3 -c "print(f'{($t1 - $t0) / $hz / ($s1 - $s0):.3f}')")
cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
cat > bench/results/sim-scale.md <<MD
## \`cms-sim run\` at scale

$SERVERS simulated servers in one process at real-time speed (\`--speed 1\`),
from a busy weekday 10:00, each with its SSH, HTTP and syslog, measured over
$MEASURE s after 5 s of settling, by \`bench/sim-scale.sh\` on $cpu_model ($(nproc) cores).

| figure | target | measured |
|---|---|---|
| CPU (user + system, in cores) | under 0.5 | **$cpu** |
| peak memory (VmHWM) | under 200 MB | **$((rss / 1024)) MiB** |

By the end the simulated users had made $joins joins (the warm-up's
included), $active sessions were open, and $lines syslog messages had reached
the UDP listener during the run ($dropped dropped by the simulator's queues).

\`\`\`sh
target/release/cms-sim run --servers $SERVERS --speed 1 --start 2024-03-05T10:00:00Z --warm-up 4 --syslog udp://127.0.0.1:PORT
\`\`\`
MD
bench/collect.sh
