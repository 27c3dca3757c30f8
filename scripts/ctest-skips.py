#!/usr/bin/python3
"""ctest-skips.py: how many tests one ctest run skipped, and why.

    ctest-skips.py TITLE CONSOLE_LOG BUILD_DIR [--fail]

CONSOLE_LOG is what ctest printed (scripts/test.sh tees it); its "The
following tests did not run:" block names the skipped tests (a test whose
exit status is its SKIP_RETURN_CODE, 77 for all of ours: tests/CMakeLists.txt).
The reasons are the `SKIP <what>: <why>` lines each test printed, read from
the run's own log in BUILD_DIR/Testing/Temporary (LastTest.log, or
LastDynamicAnalysis_*.log for a memcheck run; the newest one).

Prints `==== TITLE: N test(s) skipped ====` and, for each, its name and
reasons. Exits 0; with --fail, exits 3 when N > 0.
"""
import glob
import os
import re
import sys


def skipped_names(console):
    names, inside = [], False
    for line in console.splitlines():
        if line.startswith("The following tests did not run:"):
            inside = True
            continue
        if inside:
            m = re.match(r"\s+\d+ - (\S+) \((\w[\w ]*)\)\s*$", line)
            if not m:
                inside = False
                continue
            if m.group(2) == "Skipped":
                names.append(m.group(1))
    return names


def reasons(build_dir):
    """{test name: [its SKIP lines]} from the newest ctest log of the build dir."""
    tmp = os.path.join(build_dir, "Testing", "Temporary")
    logs = [p for pat in ("LastTest.log", "LastTest_*.log", "LastDynamicAnalysis_*.log")
            for p in glob.glob(os.path.join(tmp, pat))]
    if not logs:
        return {}
    out, name = {}, None
    with open(max(logs, key=os.path.getmtime), errors="replace") as f:
        for line in f:
            m = re.match(r"\d+/\d+ Testing: (\S+)$", line.rstrip("\n"))
            if m:
                name = m.group(1)
                continue
            if name and line.startswith("SKIP "):
                out.setdefault(name, []).append(line[5:].rstrip("\n"))
    return out


def main():
    if len(sys.argv) < 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    title, console_log, build_dir = sys.argv[1:4]
    fail = "--fail" in sys.argv[4:]
    with open(console_log, errors="replace") as f:
        names = skipped_names(f.read())
    why = reasons(build_dir) if names else {}
    print(f"==== {title}: {len(names)} test(s) skipped ====")
    for n in names:
        print(f"  SKIPPED {n}")
        for r in why.get(n) or ["(no SKIP line in its output)"]:
            print(f"      {r}")
    return 3 if fail and names else 0


if __name__ == "__main__":
    sys.exit(main())
