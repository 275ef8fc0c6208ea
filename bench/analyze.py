#!/usr/bin/env python3
"""The peer: the same analysis, written the way an operator would write it.

Reads CMS logs line by line, picks out the web bridge Stats, call bridge
STATS and MMP audit lines with regular expressions, and computes per web
bridge the last and largest count, restarts, the leak's lower bound
(active minus the cluster's CMA), and the leak rate. Plain Python 3, no
dependencies, as one would run it on a management host.
"""
import gzip
import json
import re
import sys
from datetime import datetime, timezone

HEADER = re.compile(
    r"(?:<\d+>)?(?:(?P<iso>\d{4}-\d\d-\d\dT[\d:.]+)|(?P<bsd>[A-Z][a-z]{2} +\d+ [\d:.]+))"
    r" +(?:kern|user|mail|daemon|auth|syslog|local\d)\.\w+ +(?P<host>\S+) .*?(?P<prog>\S+): +(?P<msg>.*)$"
)
WB_STATS = re.compile(r"\[DEBUGGING\] Stats (\d+), c:(\d+), d:(\d+)")
CB_STATS = re.compile(r"STATS: (\{.*\})")
AUDIT = re.compile(r"User (\S+) from (\S+) issued command <\s*(.*?)>: permission (\w+)")


def parse_time(match, year):
    if match.group("iso"):
        return datetime.fromisoformat(match.group("iso")).replace(tzinfo=timezone.utc)
    text = " ".join(match.group("bsd").split())
    fmt = "%b %d %H:%M:%S.%f" if "." in text else "%b %d %H:%M:%S"
    return datetime.strptime(f"{year} {text}", f"%Y {fmt}").replace(tzinfo=timezone.utc)


def main(paths):
    records = []
    lines = malformed = 0
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        year = datetime.now().year
        with opener(path, "rt", errors="replace") as log:
            for line in log:
                lines += 1
                if "Stats " not in line and "STATS:" not in line and "cli:" not in line:
                    continue
                header = HEADER.search(line)
                if not header:
                    continue
                msg = header.group("msg")
                try:
                    when = parse_time(header, year)
                    if m := WB_STATS.search(msg):
                        records.append((when, header.group("host"), "wb", tuple(map(int, m.groups()))))
                    elif m := CB_STATS.search(msg):
                        cma = json.loads(m.group(1)).get("CMA", "0/0").split("/")
                        records.append((when, header.group("host"), "cb", (int(cma[0]), int(cma[1]))))
                    elif header.group("prog") == "cli" and (m := AUDIT.search(msg)):
                        if m.group(3).strip() == "webbridge restart" and m.group(4) == "granted":
                            records.append((when, header.group("host"), "restart", ()))
                except (ValueError, KeyError, IndexError):
                    malformed += 1
    records.sort(key=lambda r: r[0])

    cma = {}
    bridges = {}
    for when, host, kind, values in records:
        if kind == "cb":
            cma[host] = values[1]
            continue
        wb = bridges.setdefault(host, {"host": host, "samples": 0, "max_active": 0, "restarts": [],
                                       "leaked_lower": 0, "since": when, "last": None})
        if kind == "restart":
            wb["restarts"].append(when.isoformat())
            wb["leaked_lower"] = 0
            wb["since"] = when
            continue
        active, c, d = values
        if wb["last"] and (c < wb["last"][1] or d < wb["last"][2]):
            wb["restarts"].append(when.isoformat())
            wb["leaked_lower"] = 0
            wb["since"] = when
        wb["samples"] += 1
        wb["max_active"] = max(wb["max_active"], active)
        wb["last"] = values
        if cma:
            wb["leaked_lower"] = max(wb["leaked_lower"], active - sum(cma.values()))
        days = (when - wb["since"]).total_seconds() / 86400
        wb["leak_rate_per_day"] = wb["leaked_lower"] / days if days > 0.25 else None
    report = {
        "lines": {"total": lines, "records": len(records), "malformed": malformed},
        "webbridges": [
            {**{k: v for k, v in wb.items() if k not in ("since", "last")},
             "active": wb["last"][0] if wb["last"] else None, "leaked_upper": wb["last"][0] if wb["last"] else None}
            for wb in bridges.values()
        ],
    }
    json.dump(report, sys.stdout, indent=2, default=str)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
