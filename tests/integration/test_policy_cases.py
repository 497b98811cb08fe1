"""`certgate test --config FILE CASES.json`: policy tests as code (issue 17).

The deploy example's cases pass; failing cases are each printed with their
name, position, expected and actual decision and reason, and the run ends
with "N passed, N failed" and exit 1; cases can read their claims from a
certificate, give a time (windows) and the permissive rules that would
deny; a cases file with mistakes is refused with file:line:col (exit 1);
usage mistakes exit 2."""
import json
import os
import re
import sys

from harness import Fixture, certgate, run

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(SRC, "deploy/examples")

RULES = [
    {"name": "no-weekend-contractors", "effect": "deny", "services": ["*"],
     "users": ["*@contractor.example"],
     "when": {"days": ["sat", "sun"], "tz": "Europe/Berlin"}},
    {"name": "try-no-interns", "effect": "deny", "mode": "permissive", "services": ["*"],
     "groups": ["interns"]},
    {"name": "office-hours", "effect": "allow", "services": ["orders-db"], "groups": ["staff"],
     "when": {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "08:00-18:00",
              "tz": "Europe/Berlin"}},
    {"name": "contractors", "effect": "allow", "services": ["orders-db"],
     "users": ["*@contractor.example"]},
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"], "min_trust": "high"},
]


def setup():
    fx = Fixture()
    fx.config_path = fx.path("certgate.json")
    cfg = fx.config([{"name": "orders-db", "upstream": ["127.0.0.1:9"]}], RULES)
    with open(fx.config_path, "w") as f:
        json.dump(cfg, f, indent=2)
    return fx


def write(fx, name, value):
    path = fx.path(name)
    with open(path, "w") as f:
        f.write(value if isinstance(value, str) else json.dumps(value, indent=2))
    return path


def test(fx, cases_path, *extra, config=None):
    return certgate("test", "--config", config or fx.config_path, *(list(extra) + [cases_path]),
                    check=False)


def test_deploy_example_cases_pass(fx):
    r = test(fx, os.path.join(EXAMPLES, "policy-tests.json"),
             config=os.path.join(EXAMPLES, "certgate.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    n = len(json.load(open(os.path.join(EXAMPLES, "policy-tests.json")))["cases"])
    assert r.stdout == "%d passed, 0 failed\n" % n, r.stdout
    assert n >= 10
    r = test(fx, os.path.join(EXAMPLES, "policy-tests.json"), "--verbose",
             config=os.path.join(EXAMPLES, "certgate.json"))
    assert r.stdout.count("\nok   ") + r.stdout.startswith("ok   ") == n, r.stdout


def test_windows_and_permissive_cases(fx):
    cases = {"at": "2026-03-30T08:00:00Z", "cases": [
        {"name": "staff in office hours", "claims": {"user": "sam@example.com",
                                                    "groups": ["staff"]},
         "service": "orders-db", "expect": "allow", "rule": "office-hours"},
        {"name": "staff on Saturday", "claims": {"user": "sam@example.com", "groups": ["staff"]},
         "service": "orders-db", "at": "2026-03-28T10:00:00Z", "expect": "deny",
         "rule": "default-deny"},
        {"name": "contractor on Friday", "claims": {"user": "bob@contractor.example"},
         "service": "orders-db", "at": "2026-03-27T22:59:59Z", "expect": "allow",
         "rule": "contractors"},
        {"name": "contractor at Saturday midnight", "claims": {"user": "bob@contractor.example"},
         "service": "orders-db", "at": "2026-03-27T23:00:00Z", "expect": "deny",
         "rule": "no-weekend-contractors"},
        {"name": "an intern would be denied", "claims": {"user": "ivy@example.com",
                                                        "groups": ["staff", "interns"]},
         "service": "orders-db", "expect": "allow", "would_deny": ["try-no-interns"]},
        {"name": "staff would not", "claims": {"user": "sam@example.com", "groups": ["staff"]},
         "service": "orders-db", "expect": "allow", "would_deny": []},
        {"name": "the trust feed lowers a dba", "claims": {"user": "dora@example.com",
                                                          "groups": ["dba"],
                                                          "device_trust": "high"},
         "feed_trust": "medium", "service": "orders-db", "source": "192.0.2.1",
         "expect": "deny"},
    ]}
    r = test(fx, write(fx, "windows.json", cases))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "7 passed, 0 failed\n", r.stdout


def test_failures_are_printed(fx):
    cases = {"at": "2026-03-30T08:00:00Z", "cases": [
        {"name": "passes", "claims": {"user": "sam@example.com", "groups": ["staff"]},
         "service": "orders-db", "expect": "allow"},
        {"name": "wrong decision", "claims": {"user": "sam@example.com", "groups": ["staff"]},
         "service": "orders-db", "at": "2026-03-28T10:00:00Z", "expect": "allow"},
        {"name": "wrong rule", "claims": {"user": "dora@example.com", "groups": ["dba", "staff"],
                                          "device_trust": "high"},
         "service": "orders-db", "expect": "allow", "rule": "dba"},
        {"name": "wrong would_deny", "claims": {"user": "ivy@example.com",
                                                "groups": ["staff", "interns"]},
         "service": "orders-db", "expect": "allow", "would_deny": []},
    ]}
    path = write(fx, "failing.json", cases)
    r = test(fx, path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "1 passed, 3 failed", r.stdout
    fails = [l for l in lines if l.startswith("FAIL ")]
    assert len(fails) == 3, r.stdout
    assert re.fullmatch(
        r"FAIL wrong decision \(.*failing\.json:\d+:\d+\): expected allow, got deny \(rule "
        r"default-deny\) at 2026-03-28T10:00:00\.000Z: no rule allows user sam@example\.com on "
        r"service orders-db", fails[0]), fails[0]
    assert ("expected allow (rule dba), got allow (rule office-hours) at "
            "2026-03-30T08:00:00.000Z: allowed by rule office-hours") in fails[1], fails[1]
    assert ('expected allow, would deny [], got allow (rule office-hours), would deny '
            '[try-no-interns]') in fails[2], fails[2]


def test_cases_from_certificates(fx):
    dora = fx.ca.issue("dora", "dora@example.com", groups=["dba"], trust="high")
    erin = fx.ca.issue("erin", "erin@contractor.example", groups=["dba"], trust="high")
    os.makedirs(fx.path("certs"), exist_ok=True)
    cases = {"at": "2026-03-28T10:00:00Z", "cases": [
        {"name": "dora", "cert": os.path.relpath(dora.crt, fx.dir), "service": "orders-db",
         "expect": "allow", "rule": "dba"},
        {"name": "erin on a Saturday", "cert": erin.crt, "service": "orders-db",
         "expect": "deny", "rule": "no-weekend-contractors"},
    ]}
    r = test(fx, write(fx, "certs.json", cases))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "2 passed, 0 failed\n", r.stdout


def test_bad_cases_files(fx):
    # a JSON syntax error: its position
    path = write(fx, "broken.json", '{"cases": [ {"name": 1,}')
    r = test(fx, path)
    assert r.returncode == 1, r
    assert re.match(r".*broken\.json:1:\d+: ", r.stderr), r.stderr
    assert "passed" not in r.stdout
    # every mistake, each where it is, before anything runs
    cases = {"cases": [
        {"name": "x", "claims": {"user": "a@example.com", "groups": "dba"},
         "service": "nope", "expect": "maybe"},
        {"name": "y", "cert": "missing.pem", "service": "orders-db", "expect": "deny",
         "db_user": "postgres", "what": 1},
        {"name": "z", "claims": {"user": "a@example.com", "device_trust": "super"},
         "service": "orders-db", "at": "tomorrow", "expect": "deny"},
    ]}
    path = write(fx, "mistakes.json", cases)
    r = test(fx, path)
    assert r.returncode == 1, r
    errors = r.stderr.splitlines()
    for want in ('cases[0].claims.groups: expected a list of at most 64 strings',
                 'cases[0].service: no service "nope" in ',
                 'cases[0].expect: expected "allow" or "deny"',
                 "cases[1].cert: ", "not a readable PEM certificate",
                 "cases[1].what: unknown key",
                 "cases[1]: db_user and db_name apply only to postgres-mode services",
                 'cases[2].claims.device_trust: expected one of "always_deny"',
                 "cases[2].at: expected an RFC 3339 time"):
        assert any(want in e and re.search(r"mistakes\.json:\d+:\d+: ", e) for e in errors), \
            (want, r.stderr)
    assert r.stdout == "", r.stdout
    # not there, empty, no cases
    r = test(fx, fx.path("absent.json"))
    assert r.returncode == 1 and "absent.json" in r.stderr, r
    r = test(fx, write(fx, "empty.json", {"cases": []}))
    assert r.returncode == 1 and 'non-empty array "cases"' in r.stderr, r
    # a configuration that does not load
    bad = write(fx, "bad-config.json", {"gateway": {}, "services": [], "rules": [
        {"name": "x", "effect": "allow", "services": ["*"],
         "when": {"hours": "8-18", "tz": "UTC"}}]})
    r = test(fx, os.path.join(EXAMPLES, "policy-tests.json"), config=bad)
    assert r.returncode == 1, r
    assert re.search(r"bad-config\.json:\d+:\d+: rules\[0\]\.when\.hours: expected", r.stderr), \
        r.stderr


def test_usage(fx):
    for args in ([], ["--config", fx.config_path], ["--bogus"],
                 ["--config", fx.config_path, "a.json", "b.json"]):
        r = certgate("test", *args, check=False)
        assert r.returncode == 2, (args, r)
        assert "usage: certgate test" in r.stderr, r.stderr
    r = certgate("test", "--help")
    assert "usage: certgate test --config FILE" in r.stdout
    assert "test     --config FILE CASES.json" in certgate("--help").stdout


if __name__ == "__main__":
    sys.exit(run([test_deploy_example_cases_pass, test_windows_and_permissive_cases,
                  test_failures_are_printed, test_cases_from_certificates, test_bad_cases_files,
                  test_usage], setup=setup, teardown=lambda fx: fx.close()))
