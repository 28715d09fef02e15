#!/usr/bin/env python3
"""Sum test results over meson test logs and print `N passed, N failed`.

Each meson test is a program that runs many cases. A program's own summary is
read from its output: the C harness prints `N passed, N failed`, pytest prints
`N passed, M failed in Xs`. A program that failed without such a summary (a
crash, a timeout) counts as one failure; one that passed without it, as one pass.
"""
import json
import re
import sys

C_LINE = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)
PYTEST_LINE = re.compile(r"^=*\s*(.*?\bin [\d.]+s.*?)\s*=*$", re.M)


def counts_from_output(text):
    m = C_LINE.findall(text)
    if m:
        p, f = m[-1]
        return int(p), int(f)
    for line in reversed(PYTEST_LINE.findall(text)):
        nums = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|errors?)", line))
        if nums:
            return nums.get("passed", 0), nums.get("failed", 0) + nums.get("error", 0) + nums.get("errors", 0)
    return None


def main(paths):
    passed = failed = 0
    for path in paths:
        try:
            lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
        except FileNotFoundError:
            print(f"{path}: missing (suite did not run)", file=sys.stderr)
            failed += 1
            continue
        for line in lines:
            if not line.strip():
                continue
            t = json.loads(line)
            result = t.get("result")
            out = (t.get("stdout") or "") + "\n" + (t.get("stderr") or "")
            c = counts_from_output(out)
            ok = result in ("OK", "EXPECTEDFAIL")
            if c is None:
                c = (1, 0) if ok else (0, 1)
            elif not ok and c[1] == 0:
                c = (c[0], 1)  # crashed or timed out after its summary
            if result == "SKIP":
                continue
            passed += c[0]
            failed += c[1]
            status = "ok" if ok else result
            print(f"  {t.get('name')}: {status} ({c[0]} passed, {c[1]} failed)")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
