#!/usr/bin/env bash
# Restarting 100 simulated web bridges: `wbguard restart --parallel 32`
# against Cisco's script and parallel-ssh (Debian's pssh), all against the
# same `cms-sim run` deployment, in the same run. Each run must restart
# all 100 (checked with the truth API). Writes bench/results/restart.md.
#
#   bench/restart.sh              # needs python3 + paramiko, parallel-ssh, hyperfine
#   SERVERS=20 bench/restart.sh   # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-100}
for tool in parallel-ssh hyperfine python3 ssh-keygen; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install pssh hyperfine openssh-client)" >&2; exit 2; }
done
python3 -c 'import paramiko' 2>/dev/null || { echo "bench: paramiko is missing (pip install paramiko)" >&2; exit 2; }
cargo build --release -q -p wbguard -p cms-sim
root=$(pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ssh_port=$(free_port); http_port=$(free_port)
ssh-keygen -q -t ed25519 -N "" -f "$work/id"
# A short web bridge downtime keeps the page check from dominating.
printf 'restart_downtime_seconds = 0.2\n' > "$work/scenario.toml"
"$root/target/release/cms-sim" run --servers "$SERVERS" --address-per-server --ssh-port "$ssh_port" --http-port "$http_port" \
    --control-port 0 --state-dir "$work/sim" --authorized-key "$work/id.pub" --scenario "$work/scenario.toml" > "$work/endpoints.json" &
for _ in $(seq 300); do [ -s "$work/endpoints.json" ] && break; sleep 0.1; done
control=$(python3 -c "import json; print(json.load(open('$work/endpoints.json'))['control'])")
restarts() { python3 -c "import json, urllib.request; print(json.load(urllib.request.urlopen('http://$control/truth'))['totals']['restarts'])"; }
addresses=$(python3 -c "import json; print(' '.join(s['ssh'].split(':')[0] for s in json.load(open('$work/endpoints.json'))['servers']))")

# wbguard: key authentication, host keys trusted beforehand; once without
# and once with the web page check.
for check in off on; do
    {
        printf 'state_dir = "%s/state-%s"\nknown_hosts = "%s/known_hosts"\n[auth]\nkey_file = "%s/id"\n' "$work" "$check" "$work" "$work"
        for a in $addresses; do
            printf '\n[[server]]\nname = "%s"\nmmp = "%s:%s"\n' "$a" "$a" "$ssh_port"
            [ "$check" = on ] && printf 'webbridge_url = "http://%s:%s/"\n' "$a" "$http_port"
        done
    } > "$work/wbguard-$check.toml"
done
names=$(echo $addresses)
"$root/target/release/wbguard" trust --yes --config "$work/wbguard-off.toml" $names > /dev/null

# Cisco's script as published (tests/cisco), pointed at the simulator.
python3 - "$root/crates/cms-sim/tests/cisco/webbridge_restart.py" "$work/cisco.py" "$ssh_port" $addresses <<'PY'
import sys
source, target, port, *addresses = sys.argv[1:]
text = open(source).read()
servers = ",".join(f'{i + 1}:"{a}"' for i, a in enumerate(addresses))
text = text.replace('webbridges={1:"127.0.0.1",2:"127.0.0.1",3:"127.0.0.1",4:"127.0.0.1"}', "webbridges={" + servers + "}")
open(target, "w").write(text.replace("mmp_port = 22", f"mmp_port = {port}"))
PY
# parallel-ssh: key authentication, 32 at a time, as its manual shows.
for a in $addresses; do echo "$a:$ssh_port"; done > "$work/hosts"

before=$(restarts)
hyperfine --runs "${RUNS:-3}" --export-json "$work/fast.json" \
    -n "wbguard restart --parallel 32" "$root/target/release/wbguard restart --config $work/wbguard-off.toml --parallel 32" \
    -n "wbguard restart --parallel 32 (page checked)" "$root/target/release/wbguard restart --config $work/wbguard-on.toml --parallel 32" \
    -n "parallel-ssh -p 32" "parallel-ssh -h $work/hosts -p 32 -l admin -t 60 -O StrictHostKeyChecking=no -O UserKnownHostsFile=/dev/null -O IdentityFile=$work/id -O BatchMode=yes 'webbridge restart'"
hyperfine --runs 1 --export-json "$work/cisco.json" \
    -n "Cisco's script" "cd $work && python3 cisco.py"
after=$(restarts)
expected=$(( SERVERS * (3 * ${RUNS:-3} + 1) ))
[ $((after - before)) -eq "$expected" ] || { echo "bench: expected $expected restarts, the truth API counts $((after - before))" >&2; exit 1; }

python3 - "$work/fast.json" "$work/cisco.json" "$SERVERS" "$((after - before))" <<'PY'
import json, sys
fast, cisco, servers, restarts = sys.argv[1:]
results = {r["command"]: r for r in json.load(open(fast))["results"] + json.load(open(cisco))["results"]}
wb = results["wbguard restart --parallel 32"]["mean"]
wb_checked = results["wbguard restart --parallel 32 (page checked)"]["mean"]
pssh = results["parallel-ssh -p 32"]["mean"]
cisco_t = results["Cisco's script"]["mean"]
rows = "\n".join(
    f"| {name} | {r['mean']:.2f} s" + (f" ± {r['stddev']:.2f}" if r.get("stddev") else "") + f" | {len(r['times'])} |"
    for name, r in results.items())
with open("bench/results/restart.md", "w") as out:
    out.write(f"""## Restarting {servers} web bridges

`bench/restart.sh`: one `cms-sim run` deployment of {servers} servers (each on
its own loopback address, one SSH port, web bridge down 0.2 s per restart);
every tool restarts every web bridge, and the truth API confirms all
{restarts} restarts of the run. wbguard and parallel-ssh use key
authentication, Cisco's script its password, as each is meant to.

| command | wall time | runs |
|---|---|---|
{rows}

| figure | target | measured |
|---|---|---|
| Cisco's script / `wbguard restart --parallel 32` | at least 100x | **{cisco_t / wb:.0f}x** (page checked: {cisco_t / wb_checked:.0f}x) |
| parallel-ssh -p 32 / `wbguard restart --parallel 32` | at least 3x | **{pssh / wb:.1f}x** (page checked: {pssh / wb_checked:.1f}x) |
| `wbguard restart --parallel 32` (page checked) / parallel-ssh -p 32 | at most 1.5x | **{wb_checked / pssh:.2f}x** |

wbguard also checks each host key against known_hosts, runs `version`
before the restart (to skip release 3.x), writes the restart log and the
audit file; with the page check it waits until each web bridge's page
answers again. Cisco's script sleeps a second per server and checks nothing.
""")
PY
bench/collect.sh > /dev/null
cat bench/results/restart.md
