#!/usr/bin/env python3
"""Counts test results from meson's testlog.json files: every TAP line
("ok N" / "not ok N") is one result; a test program that failed without
reporting a failing TAP line (a crash, a timeout) counts as one failure.
Prints "N passed, N failed" last; exits non-zero if anything failed."""

import json
import re
import sys

TAP = re.compile(r"^(not )?ok\b")


def count(path):
    passed = failed = 0
    with open(path) as f:
        for line in f:
            test = json.loads(line)
            ok = bad = 0
            for out_line in (test.get("stdout") or test.get("stdo") or "").splitlines():
                m = TAP.match(out_line)
                if m:
                    if m.group(1):
                        bad += 1
                    else:
                        ok += 1
            if test.get("result") not in ("OK", "EXPECTEDFAIL", "SKIP") and bad == 0:
                bad = 1
                print("failed without a TAP result: %s (%s)" % (test.get("name"), test.get("result")))
            if ok == 0 and bad == 0 and test.get("result") == "OK":
                ok = 1
            passed += ok
            failed += bad
    return passed, failed


def main():
    passed = failed = 0
    for path in sys.argv[1:]:
        p, f = count(path)
        passed += p
        failed += f
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
