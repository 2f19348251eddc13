#!/usr/bin/env python3
"""Prints the pass-rate table of wpt/README.md from `runtime wpt --json FILE`.

    ./target/release/runtime wpt --json /tmp/wpt.json && python3 wpt/table.py /tmp/wpt.json
"""
import json
import sys

GOALS = {
    "url": 99, "urlpattern": 95, "encoding": 95, "streams": 95, "fetch/api": 90, "FileAPI": 90,
    "WebCryptoAPI": 90, "dom/abort": 90, "dom/events": 90, "console": 95, "hr-time": 95,
    "html/webappapis/atob": 95, "html/webappapis/timers": 95,
    "html/webappapis/structured-clone": 95,
}
ORDER = list(GOALS) + ["html/webappapis/microtask-queuing", "fetch/data-urls", "xhr/formdata",
                       "compression", "webidl"]

summary = json.load(open(sys.argv[1]))
dirs = summary["dirs"]
print("| directory | subtests passed | rate | files fully passing | goal |")
print("| --- | ---: | ---: | ---: | ---: |")
for name in ORDER + sorted(set(dirs) - set(ORDER)):
    d = dirs.get(name)
    if not d:
        continue
    rate = 100 * d["passed"] / max(1, d["total"])
    goal = GOALS.get(name)
    mark = "" if goal is None else f"{goal}%" + (" ✓" if rate >= goal else " ✗")
    files = f"{d.get('files_passing', '?')} / {d.get('files', '?')}"
    print(f"| {name} | {d['passed']} / {d['total']} | {rate:.1f}% | {files} | {mark} |")
t = summary["total"]
files = summary.get("files", {})
passing = sum(1 for f in files.values() if f.get("failed", 1) == 0)
print(f"| **total** | {t['passed']} / {t['total']} | {100 * t['passed'] / t['total']:.1f}% | "
      f"{passing} / {len(files)} | |")
