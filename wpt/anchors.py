#!/usr/bin/env python3
"""Ours beside Deno and workerd, per WPT directory, for wpt/README.md.

    python3 wpt/anchors.py [../shared/wpt-anchors/all_dirs.md] [wpt/expectations.json]

Reads the anchors' file-by-file tables (Deno's and workerd's status of each test, see
../shared/wpt-anchors/README.md) and takes our status from expectations.json as it is now, not from
the anchors' copy of it. Prints one row per directory: files passing in full, ours beside Deno over
the files both run, ours beside workerd over the files both run; and the subtests an anchor passes
that we are still expected to fail (the goal of issue 18 is zero).
"""
import json
import re
import sys

anchors_path = sys.argv[1] if len(sys.argv) > 1 else "../shared/wpt-anchors/all_dirs.md"
expectations_path = sys.argv[2] if len(sys.argv) > 2 else "wpt/expectations.json"
expectations = json.load(open(expectations_path))


def ours_status(test):
    """'pass' (every subtest passes), 'fail', or None (not in our subset)."""
    entry = expectations.get(test)
    if entry is None or entry == "pass":
        return "pass"
    if isinstance(entry, dict) and ("fail" in entry or "skip" in entry):
        return "fail"
    return "pass"


def ours_fails(test, subtest):
    entry = expectations.get(test)
    if not isinstance(entry, dict):
        return False
    return "skip" in entry or subtest in entry.get("fail", [])


def runs(cell):
    cell = cell.strip().lower()
    return not (cell.startswith("not run") or cell.startswith("n/a") or cell.startswith("ignore")
                or cell.startswith("disabled") or cell.startswith("omitted"))


sections = []  # [directory, rows, [(test, subtest)]]
test = None
for line in open(anchors_path):
    line = line.rstrip("\n")
    heading = re.match(r"^# (.+): ours vs Deno vs workerd$", line)
    if heading:
        sections.append([heading.group(1), [], []])
        continue
    if not sections:
        continue
    directory, rows, listed = sections[-1]
    row = re.match(r"^\| (.+?) \| (.+?) \| (.+?) \| (.+?) \|$", line)
    if row and row.group(1) not in ("test", "---", "file"):
        rows.append((row.group(1), row.group(3), row.group(4)))
        continue
    file_heading = re.match(r"^### (.+)$", line)
    if file_heading:
        test = file_heading.group(1)
        continue
    subtest = re.match(r"^- (.+) — Deno: ", line)
    if subtest and test:
        listed.append((test, subtest.group(1)))

print("| directory | run by ours and Deno | full: ours | full: Deno | run by ours and workerd "
      "| full: ours | full: workerd | subtests an anchor passes, we fail |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
totals = [0] * 7
for directory, rows, listed in sections:
    ours = lambda t: ours_status(f"{directory}/{t}") == "pass"  # noqa: E731
    with_deno = [(t, d) for t, d, _ in rows if runs(d)]
    with_workerd = [(t, w) for t, _, w in rows if runs(w)]
    figures = [
        len(with_deno),
        sum(ours(t) for t, _ in with_deno),
        sum(d.strip() == "pass" for _, d in with_deno),
        len(with_workerd),
        sum(ours(t) for t, _ in with_workerd),
        sum(w.strip() == "pass" for _, w in with_workerd),
        sum(ours_fails(t, sub) for t, sub in listed),
    ]
    print(f"| {directory} | " + " | ".join(str(n) for n in figures) + " |")
    totals = [a + b for a, b in zip(totals, figures)]
print("| **total** | " + " | ".join(f"**{n}**" for n in totals) + " |")
