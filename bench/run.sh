#!/usr/bin/env bash
# Reproduces bench/RESULTS.md: `wbguard analyze` against its peers on a
# generated 2 GB CMS log (about one record per 1,000 lines), in the page
# cache, all in the same run.
#
#   bench/run.sh            # needs rg, hyperfine, GNU time, python3
#   SIZE=500M bench/run.sh  # a quicker, smaller run
#
# Peers: `rg -c -F 'Stats '` (the floor: one literal search over the file)
# and bench/analyze.py (the same analysis in plain Python, as an operator
# would write it). Figures: wall time (hyperfine), peak RSS and CPU use
# (GNU time). The results go to bench/results/analyze.md and from there
# into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in rg hyperfine python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install ripgrep hyperfine python3)" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "bench: GNU time is missing (apt-get install time)" >&2; exit 2; }

SIZE=${SIZE:-2G}
DATA=bench/data
LOG=$DATA/cms-$SIZE.log
mkdir -p "$DATA/split"
cargo build --release -q -p wbguard -p cms-sim
WBGUARD=target/release/wbguard

if [ ! -s "$LOG" ]; then
    echo "bench: generating $LOG"
    target/release/cms-sim gen-log --size "$SIZE" --lines-per-record 1000 --servers 4 --seed 1 -o "$LOG"
fi
# The same log, one file per server, for the several-files figure.
for host in cms1 cms2 cms3 cms4; do
    part=$DATA/split/$SIZE-$host.log
    if [ ! -s "$part" ]; then
        rg -F " $host " "$LOG" > "$part"
        touch -r "$LOG" "$part"
    fi
done
PARTS=$(ls "$DATA"/split/"$SIZE"-cms*.log | tr '\n' ' ')
cat "$LOG" $PARTS > /dev/null   # into the page cache

HF=$DATA/hyperfine-$SIZE.json
hyperfine --warmup 2 --runs 10 --export-json "$HF" \
    -n "rg -c -F 'Stats '" "rg -c -F 'Stats ' $LOG" \
    -n "wbguard analyze" "$WBGUARD analyze --format json $LOG" \
    -n "wbguard analyze --threads 1" "$WBGUARD analyze --threads 1 --format json $LOG" \
    -n "wbguard analyze (4 files)" "$WBGUARD analyze --format json $PARTS"
HF_PY=$DATA/hyperfine-python-$SIZE.json
hyperfine --runs "${PY_RUNS:-2}" --export-json "$HF_PY" -n "python3 bench/analyze.py" "python3 bench/analyze.py $LOG"

# Peak memory and CPU use: one file, four files, and the log given four
# times over (four times the input, the same records four times).
measure() { /usr/bin/time -f "%M %P" "$@" 2>&1 >/dev/null | tail -1; }
MEM_ONE=$(measure $WBGUARD analyze --format json "$LOG")
MEM_PARTS=$(measure $WBGUARD analyze --format json $PARTS)
MEM_FOUR=$(measure $WBGUARD analyze --format json "$LOG" "$LOG" "$LOG" "$LOG")
MEM_RG=$(measure rg -c -F 'Stats ' "$LOG")

python3 - "$HF" "$HF_PY" "$SIZE" "$LOG" "$MEM_ONE" "$MEM_PARTS" "$MEM_FOUR" "$MEM_RG" <<'PY'
import json, os, platform, subprocess, sys
hf, hf_py, size, log, mem_one, mem_parts, mem_four, mem_rg = sys.argv[1:]
results = {r["command"]: r for r in json.load(open(hf))["results"] + json.load(open(hf_py))["results"]}
def t(name): return results[name]["mean"], results[name]["stddev"]
rg, _ = t("rg -c -F 'Stats '")
wb, _ = t("wbguard analyze")
py, _ = t("python3 bench/analyze.py")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
mem_gib = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 2**20
lines = sum(1 for _ in open(log, "rb"))
def mem(text):
    kb, pct = text.split()
    return f"{int(kb) / 1024:.1f} MiB", pct
rows = []
for name in ["rg -c -F 'Stats '", "wbguard analyze", "wbguard analyze --threads 1", "wbguard analyze (4 files)", "python3 bench/analyze.py"]:
    mean, sd = t(name)
    rows.append(f"| `{name}` | {mean:.3f} s ± {sd:.3f} | {mean / wb:.2f}x |")
version = lambda cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
with open("bench/results/analyze.md", "w") as out:
    out.write(f"""## `wbguard analyze` against ripgrep and Python

`wbguard analyze` against its peers on one generated CMS log, all measured in
the same run by `bench/run.sh` (rerun it to reproduce; `SIZE=500M` for a
quicker one). The log is in the page cache.

### Machine

- CPU: {cpu}, {os.cpu_count()} cores; memory {mem_gib:.0f} GiB
- {platform.system()} {platform.release()}
- {version(["rg", "--version"])}, {version(["python3", "--version"])}, {version(["hyperfine", "--version"])}

### Input

`cms-sim gen-log --size {size} --lines-per-record 1000 --servers 4 --seed 1`:
{os.path.getsize(log):,} bytes, {lines:,} lines, about one record per 1,000 lines,
every header shape. "4 files" is the same log split into one file per server.

### Time (mean of 10 runs; Python: {results['python3 bench/analyze.py']['times'].__len__()})

| command | time | relative to `wbguard analyze` |
|---|---|---|
{chr(10).join(rows)}

### The three figures the issue asks for

| figure | target | measured |
|---|---|---|
| `wbguard analyze` time / `rg -c -F 'Stats '` time | at most 1.5x | **{wb / rg:.2f}x** |
| peak memory (RSS) of `wbguard analyze` | under 64 MB | **{mem(mem_one)[0]}** (2 GB file); {mem(mem_parts)[0]} (4 files); {mem(mem_four)[0]} (the log named 4 times: 4x the input) |
| `bench/analyze.py` time / `wbguard analyze` time | at least 30x | **{py / wb:.0f}x** |

Both cores: `wbguard analyze` used {mem(mem_one)[1]} CPU on the one file and
{mem(mem_parts)[1]} on four files (GNU time's %P; 200% is both cores busy).
For reference, ripgrep used {mem(mem_rg)[1]} and {mem(mem_rg)[0]} of RSS, nearly all of it
the memory-mapped file. wbguard reads with plain `read()` into 1 MiB buffers
(a log rotated or truncated under a memory map would crash the reader) and
streams its records through a merge by time, so its memory does not grow
with the input: compare the one file with the same file named four times.
The copy out of the page cache is most of what separates it from ripgrep.

### Commands

```sh
rg -c -F 'Stats ' {log}
target/release/wbguard analyze --format json {log}
target/release/wbguard analyze --threads 1 --format json {log}
target/release/wbguard analyze --format json bench/data/split/{size}-cms[1-4].log
python3 bench/analyze.py {log}
/usr/bin/time -f '%M %P' target/release/wbguard analyze --format json {log}
```
""")
PY
bench/collect.sh
