#!/usr/bin/env python3
"""The README's table: the corpus judged by certgate (explain, as the runner
does) and by `openssl verify`, plain and with -x509_strict, and the
agreement figures under it.

    CERTGATE_BIN=build/gateway/certgate /usr/bin/python3 tests/pathval/survey.py

Prints a Markdown table on stdout, then the figures: for each verifier,
how many cases it gets right by verdict (accept/refuse), and for certgate
also exactly (the reason string, and the detail where the case asks for
one). Cases with "at" are judged at that second: certgate with
`explain --at`, openssl with -attime. openssl has no "check where a CRL is
present" mode: crl_check leaf is -crl_check, chain and all are
-crl_check_all. Its verify_depth is the case's, or certgate's default
(4)."""

import json
import os
import subprocess
import sys

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


def cell(s):
    return s.replace("|", "\\|")


def main():
    fx = Fixture(with_postgres=False)
    try:
        cases = runner.make_corpus(fx.path("corpus"))
        now = case_now(cases)
        rows = []
        right = {"certgate": 0, "certgate exactly": 0, "openssl verify": 0,
                 "openssl verify -x509_strict": 0}
        for case_dir, case in cases:
            config = runner.case_config(fx, case_dir, case, 9)
            path = os.path.join(case_dir, "certgate.json")
            with open(path, "w") as f:
                json.dump(config, f, indent=2)
            got = runner.explain(fx, case_dir, case, path)
            plain = openssl_verify(case_dir, case, False)
            strict = openssl_verify(case_dir, case, True)
            right["certgate"] += got.verdict == case["expect"]
            right["certgate exactly"] += not runner.judge(case, got)
            right["openssl verify"] += plain.split(":")[0] == case["expect"]
            right["openssl verify -x509_strict"] += strict.split(":")[0] == case["expect"]
            rows.append((case, str(got), plain, strict))
        print("| case | expected | certgate | `openssl verify` | "
              "`openssl verify -x509_strict` |")
        print("| --- | --- | --- | --- | --- |")
        for case, got, plain, strict in rows:
            want = case["expect"] if case["expect"] == "accept" else \
                "refuse: %s" % case["reason"]
            if case.get("detail_contains"):
                want += " (detail names %s)" % case["detail_contains"]
            if case.get("crl_check", "chain") != "chain":
                want += " [crl_check %s]" % case["crl_check"]
            if "verify_depth" in case:
                want += " [verify_depth %d]" % case["verify_depth"]
            if "at" in case:
                want += " [at now%+ds]" % (case["at"] - now)
            print("| `%s` | %s | %s | %s | %s |" % (case["name"], cell(want), cell(got),
                                                   cell(plain), cell(strict)))
        print()
        for who, n in right.items():
            print("- %s: %d of %d" % (who, n, len(cases)))
    finally:
        fx.close()


def case_now(cases):
    """The corpus's --now (index.json), from a case folder's parent."""
    with open(os.path.join(os.path.dirname(cases[0][0]), "index.json")) as f:
        return json.load(f)["now"]


if __name__ == "__main__":
    main()
