#!/usr/bin/env python3
"""The README's table: the corpus judged by certgate (explain, as the runner
does) and by `openssl verify`, plain and with -x509_strict.

    CERTGATE_BIN=build/gateway/certgate /usr/bin/python3 tests/pathval/survey.py

Prints a Markdown table on stdout. Cases with "at": when the certgate
binary has no `explain --at`, they are judged in real time, by waiting for
their second (the corpus is made with --at-lead 60 for that); a verdict
that could not be had within that second is shown as "not measured".
openssl gets -attime. openssl has no "check where a CRL is present" mode:
crl_check leaf is -crl_check, chain and all are -crl_check_all. Its
verify_depth is the case's, or certgate's default (4)."""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import test_path_validation as runner  # noqa: E402
from harness import Fixture  # noqa: E402

DEFAULT_DEPTH = 4


def openssl_verify(case_dir, case, strict):
    args = ["openssl", "verify", "-purpose", "sslclient", "-CAfile",
            os.path.join(case_dir, case["anchors"]),
            "-verify_depth", str(case.get("verify_depth", DEFAULT_DEPTH))]
    if strict:
        args.append("-x509_strict")
    if case["intermediates"]:
        untrusted = os.path.join(case_dir, "untrusted.pem")
        with open(untrusted, "w") as out:
            for p in case["intermediates"]:
                with open(os.path.join(case_dir, p)) as f:
                    out.write(f.read())
        args += ["-untrusted", untrusted]
    if case["crls"]:
        args.append("-crl_check" if case.get("crl_check") == "leaf" else "-crl_check_all")
        for p in case["crls"]:
            args += ["-CRLfile", os.path.join(case_dir, p)]
    if "at" in case:
        args += ["-attime", str(case["at"])]
    args.append(os.path.join(case_dir, case["leaf"]))
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode == 0:
        return "accept"
    errors = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("error ") and " lookup: " in line:
            depth = line.split(" at ", 1)[1].split(" depth", 1)[0]
            errors.append("%s (depth %s)" % (line.split(" lookup: ", 1)[1], depth))
    return "refuse: " + ("; ".join(dict.fromkeys(errors)) if errors else "(no error line)")


def certgate_today(fx, case_dir, case, config_path, has_at):
    if "at" not in case or has_at:
        return str(runner.explain(fx, case_dir, case, config_path, has_at))
    at = case["at"]
    if time.time() >= at:
        return "not measured (its second has passed)"
    time.sleep(at - time.time() + 0.05)
    got = runner.explain(fx, case_dir, case, config_path, False)
    if time.time() >= at + 1:
        return "not measured (explain took past its second)"
    return "%s (real time)" % got


def cell(s):
    return s.replace("|", "\\|")


def main():
    fx = Fixture(with_postgres=False)
    try:
        cases = runner.make_corpus(fx.path("corpus"), "--at-lead", "60")
        has_at = runner.explain_has_at()
        rows = {}
        # the real-time cases first, while their second is ahead
        order = sorted(cases, key=lambda c: "at" not in c[1])
        for case_dir, case in order:
            config = runner.case_config(fx, case_dir, case, 9)
            path = os.path.join(case_dir, "certgate.json")
            with open(path, "w") as f:
                json.dump(config, f, indent=2)
            rows[case["name"]] = (
                certgate_today(fx, case_dir, case, path, has_at),
                openssl_verify(case_dir, case, False),
                openssl_verify(case_dir, case, True))
        print("| case | expected | certgate today | `openssl verify` | "
              "`openssl verify -x509_strict` |")
        print("| --- | --- | --- | --- | --- |")
        for case_dir, case in cases:
            want = case["expect"] if case["expect"] == "accept" else \
                "refuse: %s" % case["reason"]
            if case.get("detail_contains"):
                want += " (detail names %s)" % case["detail_contains"]
            if case.get("crl_check", "chain") != "chain":
                want += " [crl_check %s]" % case["crl_check"]
            if "verify_depth" in case:
                want += " [verify_depth %d]" % case["verify_depth"]
            today, plain, strict = rows[case["name"]]
            gap = " ✗" if case.get("known_gap") else ""
            print("| `%s` | %s | %s%s | %s | %s |" % (case["name"], cell(want), cell(today), gap,
                                                     cell(plain), cell(strict)))
    finally:
        fx.close()


if __name__ == "__main__":
    main()
