"""The certgate subcommands as a user runs them (CLI.md): check, explain,
connect, ca, version, and the refusals of serve at start.

Exit codes are the contract: 0 success, 1 refused input, 2 usage error.
Error positions ("file:line:col: ") are computed from the fixture text
itself: the column of the value the error is about (cg_json.h: positions
are where the value at a path starts), 1-based.

Live traffic goes to a tiny TCP upstream in this file that greets every
connection with a banner and then holds it open, so an admitted client reads
the banner through the gateway."""

import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time

from harness import HoldUpstream, CA, SLOW, Cert, Fixture, Process, certgate, free_port, port_open, \
    refused_by_gateway, run, tls_client, wait_for

BANNER = b"upstream says hello\n"


# --- fixture -----------------------------------------------------------------------

# CONFIG.md's policy for a tunnel-mode service (db_users/db_names only mean
# something in postgres mode, so the analysts rule goes without them), plus a
# rule with `sources` for --source.
RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"], "min_trust": "high"},
    {"name": "analysts", "effect": "allow", "services": ["orders-db"], "groups": ["analysts"],
     "min_trust": "medium"},
    {"name": "office", "effect": "allow", "services": ["orders-db"], "groups": ["staff"],
     "sources": ["127.0.0.0/8"]},
    {"name": "no-contractors", "effect": "deny", "services": ["*"],
     "users": ["*@contractor.example"]},
]


def setup():
    fx = Fixture(with_postgres=False)
    fx.upstream = HoldUpstream(BANNER)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high")
    fx.carl = fx.ca.issue("carl", "carl@contractor.example", groups=["dba"], device_id="carl-pc",
                          trust="high")
    fx.dana = fx.ca.issue("dana", "dana@example.com", groups=["analysts"], device_id="dana-pc",
                          trust="medium")
    fx.erin = fx.ca.issue("erin", "erin@example.com", groups=["dba"], device_id="erin-pc",
                          trust="low")
    fx.frank = fx.ca.issue("frank", "frank@example.com", groups=["staff"])
    fx.expired = fx.ca.issue("expired", "alice@example.com", groups=["dba"],
                             device_id="laptop-1", trust="high",
                             extra=["--backdate", "2h", "--ttl", "1h"])
    # one explain/serve configuration, written once
    fx.policy = fx.path("policy.json")
    with open(fx.policy, "w") as f:
        json.dump(tunnel_config(fx), f, indent=2)
    return fx


def teardown(fx):
    fx.upstream.stop()
    fx.close()


def tunnel_config(fx, gateway=None):
    svc = {"name": "orders-db", "sni": ["orders-db.internal", "localhost"],
           "upstream": ["127.0.0.1:%d" % fx.upstream.port], "mode": "tunnel"}
    return fx.config([svc], RULES, gateway=gateway)


def write(fx, name, text):
    path = fx.path(name)
    with open(path, "w") as f:
        f.write(text)
    return path


def pos(text, needle):
    """1-based (line, column) where needle (unique in text) starts."""
    assert text.count(needle) == 1, "fixture needle %r is not unique" % needle
    i = text.index(needle)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


def error_lines(stderr, path):
    """stderr lines that carry a position in path: (line, col, rest)."""
    out = []
    for l in stderr.splitlines():
        m = re.match(r"^(.*?):(\d+):(\d+): (.*)$", l)
        if m and (m.group(1) == path or os.path.abspath(m.group(1)) == os.path.abspath(path)):
            out.append((int(m.group(2)), int(m.group(3)), m.group(4)))
    return out


def assert_errors(proc, path, text, expected):
    """expected: [(needle, json path, regex on the message)]: each must be
    exactly one stderr line 'path:line:col: json-path: message' at needle,
    and no other positioned line may be there."""
    found = error_lines(proc.stderr, path)
    missing = []
    for needle, jpath, msg in expected:
        line, col = pos(text, needle)
        hits = [e for e in found if e[2].startswith(jpath + ": ")]
        if len(hits) != 1:
            missing.append("%s:%d:%d: %s: /%s/ (%s)" % (
                path, line, col, jpath, msg,
                "not reported" if not hits else "reported %d times" % len(hits)))
            continue
        l, c, rest = hits[0]
        if (l, c) != (line, col) or not re.search(msg, rest[len(jpath) + 2:]):
            missing.append("%s:%d:%d: %s: /%s/ (got %d:%d: %s)" % (
                path, line, col, jpath, msg, l, c, rest))
    assert not missing, "errors not reported as expected:\n  %s\nstderr was:\n%s" % (
        "\n  ".join(missing), proc.stderr)
    assert len(found) == len(expected), "unexpected extra errors:\n" + proc.stderr


def addr(sock):
    return "%s:%d" % sock.getsockname()[:2]


def read_banner(sock):
    data = b""
    while len(data) < len(BANNER):
        chunk = sock.recv(len(BANNER) - len(data))
        if not chunk:
            break
        data += chunk
    return data


def serial_of(cert):
    out = subprocess.run(["openssl", "x509", "-in", cert.crt, "-noout", "-serial"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return int(out.split("=", 1)[1], 16)


def explain(fx, cert, *extra, service="orders-db", config=None, json_out=False):
    args = ["explain", "--config", config or fx.policy, "--cert", cert.crt, "--service", service]
    args += list(extra)
    if json_out:
        args.append("--json")
    return certgate(*args, check=False)


def through(port, timeout=5):
    """A plain client of a connector: returns what it reads before the
    banner is complete or the connection ends."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW) as s:
        try:
            return read_banner(s)
        except OSError:
            return b""


# --- check -------------------------------------------------------------------------

def test_check_valid_config(fx):
    r = certgate("check", "--config", fx.policy, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and fx.policy in lines[0] and re.search(r"\bok\b", lines[0]), r.stdout


def bad_config_text(fx):
    # relative paths: relative to this file's folder (fx.dir)
    return """{
  "gateway": {
    "listen": ["127.0.0.1:%d"],
    "cert": "ca/gateway.crt",
    "key": "ca/alice.key",
    "client_ca": "ca/no-such-ca.crt",
    "idle_timout": "1h",
    "handshake_timeout": "10 parsecs"
  },
  "services": [
    { "name": "orders-db",
      "upstream": ["127.0.0.1:%d", "db.internal"] }
  ],
  "rules": [
    { "name": "dba", "effect": "allow", "services": ["orders-db"], "groups": ["dba"] },
    { "name": "billing", "effect": "allow",
      "services": ["orders-db", "billing-db"] }
  ]
}
""" % (free_port(), fx.upstream.port)


BAD_CONFIG_ERRORS = [
    ('"1h"', "gateway.idle_timout", r"unknown key"),
    ('"10 parsecs"', "gateway.handshake_timeout", r"duration"),
    ('"db.internal"', "services[0].upstream[1]", r'host:port'),
    ('"billing-db"', "rules[1].services[1]", r'unknown service.*billing-db'),
]
BAD_FILE_ERRORS = [
    ('"ca/no-such-ca.crt"', "gateway.client_ca", r"no-such-ca\.crt.*(No such file|not found)"),
    ('"ca/alice.key"', "gateway.key", r"alice\.key.*(mismatch|does not match)"),
]


def test_check_reports_every_error(fx):
    """Config mistakes and certificate/key mistakes in one file: all of them
    at once, each at its exact position (CLI.md: 'report every error found
    (not just the first)')."""
    text = bad_config_text(fx)
    path = write(fx, "bad-all.json", text)
    r = certgate("check", "--config", path, check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stdout == "", r.stdout
    assert_errors(r, path, text, BAD_CONFIG_ERRORS + BAD_FILE_ERRORS)


def test_check_certificate_errors(fx):
    """The certificate and key errors alone (the configuration otherwise
    valid): both reported, each at its position."""
    text = bad_config_text(fx).replace('"idle_timout": "1h"', '"idle_timeout": "1h"') \
        .replace('"10 parsecs"', '"10s"').replace('"db.internal"', '"127.0.0.2:5432"') \
        .replace('"orders-db", "billing-db"', '"orders-db"')
    path = write(fx, "bad-files.json", text)
    r = certgate("check", "--config", path, check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert_errors(r, path, text, BAD_FILE_ERRORS)


def test_check_json_syntax_error(fx):
    cases = [
        # trailing comma: the error is at the '}' that follows it
        ('{\n  "gateway": {\n    "cert": "a.crt",\n    "key": "a.key",\n  },\n'
         '  "rules": []\n}\n', "},", 0),
        # a stray comma inside an array: the error is at the second one
        ('{\n  "gateway": {\n    "listen": ["127.0.0.1:1",, "127.0.0.1:2"]\n  }\n}\n', ",,", 1),
    ]
    for i, (text, needle, skip) in enumerate(cases):
        path = write(fx, "syntax%d.json" % i, text)
        line, col = pos(text, needle)
        col += skip
        r = certgate("check", "--config", path, check=False)
        assert r.returncode == 1, (r.returncode, r.stderr)
        found = error_lines(r.stderr, path)
        assert len(found) == 1, r.stderr
        assert found[0][:2] == (line, col), "expected %s:%d:%d, got:\n%s" % (
            path, line, col, r.stderr)


def test_check_usage(fx):
    r = certgate("check", check=False)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--config" in r.stderr, r.stderr
    r = certgate("check", "--config", fx.policy, "--no-such-option", check=False)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "no-such-option" in r.stderr, r.stderr
    r = certgate("check", "--help", check=False)
    assert r.returncode == 0, r.stderr
    assert "usage: certgate check --config FILE" in r.stdout, r.stdout
    # a missing file is a refused input, not a usage error
    r = certgate("check", "--config", fx.path("no-such.json"), check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "no-such.json" in r.stderr and "No such file" in r.stderr, r.stderr


def risky_config_text(fx, keys):
    """A valid configuration with every setting `certgate check` warns about
    (security review findings 7 and 9); keys: the secret files to name."""
    return """{
  "gateway": {
    "listen": ["127.0.0.1:%(port)d"],
    "cert": "%(cert)s",
    "key": "%(key)s",
    "client_ca": "%(ca)s",
    "max_cert_lifetime": "30d",
    "clock_skew": "10m",
    "proxy_protocol_from": ["10.0.0.0/8", "::/0"]
  },
  "admin": { "listen": "127.0.0.1:%(admin)d", "token_file": "%(token)s" },
  "services": [
    { "name": "orders-db", "upstream": ["127.0.0.1:%(up)d"] },
    { "name": "billing-db", "listen": "127.0.0.1:%(pg)d", "mode": "postgres",
      "upstream": ["127.0.0.1:%(up)d"],
      "upstream_tls": { "ca": "%(ca)s", "server_name": "localhost",
                        "client_ca_cert": "%(mint_crt)s", "client_ca_key": "%(mint_key)s" } }
  ],
  "rules": [
    { "name": "anyone", "effect": "allow", "services": ["*"] },
    { "name": "own", "effect": "allow", "services": ["billing-db"],
      "db_users": ["{user.local}"], "db_names": ["{user.local}_*"] },
    { "name": "own-bound", "effect": "allow", "services": ["billing-db"],
      "db_users": ["{user.local@example.com}"], "db_names": ["{user.local@example.com}:*"] }
  ]
}
""" % dict(port=free_port(), admin=free_port(), pg=free_port(), up=fx.upstream.port,
           cert=fx.gateway_cert.crt, ca=fx.ca.crt, **keys)


def secret_files(fx, name, mode):
    """Copies of the gateway key, a minting CA's key and an admin token, all
    with mode."""
    if not hasattr(fx, "mint"):
        fx.mint = CA(fx.path("mint"), name="minting CA")
    out = {}
    for k, src in (("key", fx.gateway_cert.key), ("mint_key", fx.mint.key)):
        dst = fx.path("%s-%s.key" % (name, k))
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
        os.chmod(dst, mode)
        out[k] = dst
    out["token"] = fx.path("%s.token" % name)
    with open(out["token"], "w") as f:
        f.write("t" * 32 + "\n")
    os.chmod(out["token"], mode)
    out["mint_crt"] = fx.mint.crt
    return out


def warning_lines(stderr, path):
    return [(l, c, rest[len("warning: "):]) for l, c, rest in error_lines(stderr, path)
            if rest.startswith("warning: ")]


def test_check_warns_on_dangerous_settings(fx):
    keys = secret_files(fx, "risky", 0o644)
    text = risky_config_text(fx, keys)
    path = write(fx, "risky.json", text)
    expected = [
        ('"%s"' % keys["key"], "gateway.key", r"private key.*readable by every user \(mode 0644\)"),
        ('"%s"' % keys["mint_key"], "services[1].upstream_tls.client_ca_key",
         r"mints database client certificates.*readable by every user"),
        ('"%s"' % keys["token"], "admin.token_file", r"bearer token.*readable by every user"),
        ('"::/0"', "gateway.proxy_protocol_from[1]", r"::/0 trusts PROXY headers"),
        ('"30d"', "gateway.max_cert_lifetime", r"^30d: .*over 7 days"),
        ('"10m"', "gateway.clock_skew", r"^10m: .*under 5 minutes"),
        ('{ "name": "anyone"', "rules[0]", r'"anyone" lets every user'),
        ('"{user.local}"]', "rules[1].db_users[0]", r"alice@partner\.example"),
        ('"{user.local}_*"', "rules[1].db_names[0]", r"alice@partner\.example"),
        ('"{user.local}_*"', "rules[1].db_names[0]", r"alice_x_private"),
    ]
    r = certgate("check", "--config", path, check=False)
    assert r.returncode == 0, r.stderr
    assert ": ok (2 services, 3 rules" in r.stdout, r.stdout
    found = warning_lines(r.stderr, path)
    missing = []
    for needle, jpath, msg in expected:
        line, col = pos(text, needle)
        hits = [w for w in found if (w[0], w[1]) == (line, col) and w[2].startswith(jpath + ": ")
                and re.search(msg, w[2][len(jpath) + 2:])]
        if len(hits) != 1:
            missing.append("%d:%d: %s: /%s/" % (line, col, jpath, msg))
    assert not missing, "warnings not reported as expected:\n  %s\nstderr:\n%s" % (
        "\n  ".join(missing), r.stderr)
    assert len(found) == len(expected), r.stderr
    assert r.stderr.rstrip().endswith("%s: %d warnings" % (path, len(expected))), r.stderr
    # --strict: the same warnings fail the check
    r = certgate("check", "--strict", "--config", path, check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stdout == "", r.stdout
    assert len(warning_lines(r.stderr, path)) == len(expected), r.stderr
    assert "%d warnings, refused by --strict" % len(expected) in r.stderr, r.stderr

    # the safe forms: 0600 files, root-owned 0640 ones, and settings in range
    safe = secret_files(fx, "safe", 0o600)
    if os.geteuid() == 0:
        os.chmod(safe["token"], 0o640)  # root-owned, for a group that needs it
    text = risky_config_text(fx, safe).replace('"30d"', '"7d"').replace('"10m"', '"5m"') \
        .replace('"::/0"', '"fd00::/8"') \
        .replace('{ "name": "anyone", "effect": "allow", "services": ["*"] }',
                 '{ "name": "anyone", "effect": "allow", "services": ["*"], "groups": ["dba"] }') \
        .replace('"db_users": ["{user.local}"], "db_names": ["{user.local}_*"]',
                 '"users": ["*@example.com"], "db_users": ["{user.local}"], '
                 '"db_names": ["{user.local}:*"]')
    path = write(fx, "safe.json", text)
    r = certgate("check", "--strict", "--config", path, check=False)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # a group-readable secret not owned by root is warned about
    if os.geteuid() == 0:
        os.chown(safe["token"], 65534, -1)
        r = certgate("check", "--strict", "--config", path, check=False)
        assert r.returncode == 1, r.stderr
        found = warning_lines(r.stderr, path)
        assert len(found) == 1 and found[0][2].startswith("admin.token_file: ") \
            and "readable by its group, and not owned by root (mode 0640)" in found[0][2], \
            r.stderr


def test_user_local_bound_to_a_domain(fx):
    """{user.local@example.com}: alice@example.com gets database user alice;
    a user of another domain with the same local part gets nothing."""
    keys = secret_files(fx, "bound", 0o600)
    path = write(fx, "bound.json", risky_config_text(fx, keys))
    partner = fx.ca.issue("alice-partner", "alice@partner.example", groups=["staff"])
    r = explain(fx, fx.alice, "--db-user", "alice", "--db-name", "alice:scratch",
                service="billing-db", config=path)
    assert r.returncode == 0 and "own-bound" in r.stdout, r.stdout + r.stderr
    # "anyone" and "own" would admit her too: check the bound rule alone
    text = read_text(path).replace('{ "name": "anyone", "effect": "allow", "services": ["*"] },',
                                   "")
    text = text.replace('"db_users": ["{user.local}"], "db_names": ["{user.local}_*"]',
                        '"db_users": ["nobody"]')
    path = write(fx, "bound-only.json", text)
    r = explain(fx, fx.alice, "--db-user", "alice", "--db-name", "alice:scratch",
                service="billing-db", config=path)
    assert r.returncode == 0 and "decision: allow (rule own-bound)" in r.stdout, r.stdout
    r = explain(fx, partner, "--db-user", "alice", "--db-name", "alice:scratch",
                service="billing-db", config=path)
    assert r.returncode == 1 and "decision: deny" in r.stdout, r.stdout + r.stderr
    assert "{user.local@example.com}" in r.stdout, r.stdout


def read_text(path):
    with open(path) as f:
        return f.read()


# --- explain -----------------------------------------------------------------------

def test_explain_allowed_text(fx):
    r = explain(fx, fx.alice)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    out = r.stdout
    assert re.search(r"^\s*user: alice@example\.com$", out, re.M), out
    assert re.search(r"^\s*groups: dba$", out, re.M), out
    assert re.search(r"^\s*device_id: laptop-1$", out, re.M), out
    assert re.search(r"^\s*device_trust: high$", out, re.M), out
    # every rule, with matched or why not
    assert re.search(r"^\s*dba\s+allow\s+matched$", out, re.M), out
    assert re.search(r"^\s*analysts\s+allow\s+groups: .*analysts", out, re.M), out
    assert re.search(r"^\s*office\s+allow\s+groups: .*staff", out, re.M), out
    assert re.search(r"^\s*no-contractors\s+deny\s+users: .*contractor", out, re.M), out
    assert "decision: allow (rule dba)" in out, out
    assert "note:" not in out, out


def test_explain_allowed_json(fx):
    r = explain(fx, fx.alice, json_out=True)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["claims"] == {"user": "alice@example.com", "groups": ["dba"],
                             "device_id": "laptop-1", "device_trust": "high"}, doc["claims"]
    rules = {x["name"]: x for x in doc["rules"]}
    assert [x["name"] for x in doc["rules"]] == [x["name"] for x in RULES], doc["rules"]
    assert rules["dba"]["matched"] is True, rules
    for name in ("analysts", "office", "no-contractors"):
        assert rules[name]["matched"] is False and rules[name]["why_not"], rules[name]
    assert doc["decision"]["allow"] is True and doc["decision"]["rule"] == "dba", doc["decision"]
    assert doc["certificate"]["serial"] and int(doc["certificate"]["serial"], 16) == \
        serial_of(fx.alice), doc["certificate"]


def test_explain_contractor_denied(fx):
    r = explain(fx, fx.carl)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert re.search(r"^\s*no-contractors\s+deny\s+matched$", r.stdout, re.M), r.stdout
    assert "decision: deny (rule no-contractors)" in r.stdout, r.stdout
    doc = json.loads(explain(fx, fx.carl, json_out=True).stdout)
    assert doc["decision"]["allow"] is False, doc
    assert doc["decision"]["rule"] == "no-contractors", doc


def test_explain_expired_certificate(fx):
    r = explain(fx, fx.expired)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert re.search(r"handshake would refuse.*certificate expired", r.stdout), r.stdout
    doc = json.loads(explain(fx, fx.expired, json_out=True).stdout)
    assert doc["certificate"]["refused"] == "certificate expired", doc
    assert doc["admitted"] is False, doc


def test_explain_at(fx):
    """--at decides as of another second: a certificate is fine through its
    notAfter second (validity is inclusive) and expired the second after;
    before the CA's own notBefore nothing is valid; a time that is not RFC
    3339 is a usage error."""
    decoded = ssl._ssl._test_decode_cert(fx.alice.crt)
    not_after = int(ssl.cert_time_to_seconds(decoded["notAfter"]))

    def rfc3339(t):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    r = explain(fx, fx.alice, "--at", rfc3339(not_after))
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert "verification: ok" in r.stdout and "as of: " + rfc3339(not_after)[:-1] in r.stdout, \
        r.stdout
    r = explain(fx, fx.alice, "--at", rfc3339(not_after + 1), json_out=True)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["certificate"]["refused"] == "certificate expired", doc
    assert doc["certificate"]["detail"] == doc["certificate"]["subject"], doc
    assert doc["request"]["at"] == rfc3339(not_after + 1)[:-1] + ".000Z", doc
    # the same second with an offset
    r = explain(fx, fx.alice, "--at",
                time.strftime("%Y-%m-%dT%H:%M:%S+02:00", time.gmtime(not_after + 7200)))
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    # a day ago the test CA did not exist yet: the refusal names it
    r = explain(fx, fx.alice, "--at", rfc3339(time.time() - 86400), json_out=True)
    doc = json.loads(r.stdout)
    assert doc["certificate"]["refused"] == "certificate not yet valid", doc
    assert doc["certificate"]["detail"] == "CN=certgate test CA", doc
    for bad in ("yesterday", "2026-12-04", "2026-12-04T23:29:08", str(not_after)):
        r = explain(fx, fx.alice, "--at", bad)
        assert r.returncode == 2 and "--at" in r.stderr, (bad, r.returncode, r.stderr)


def test_explain_verifies_the_chain_in_the_cert_file(fx):
    """A login certificate issued by an intermediate, its PEM file carrying
    the intermediate after the leaf (as sent to the gateway): explain
    verifies it like the live gateway does, against the root alone."""
    inter = CA(fx.path("explain-inter"), name="explain intermediate", parent=fx.ca)
    leaf = inter.issue("chained", "alice@example.com", groups=["dba"], device_id="laptop-1",
                       trust="high", extra=["--chain"])
    r = explain(fx, leaf)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert "verification: ok" in r.stdout, r.stdout
    # the leaf alone cannot be chained to the root
    with open(leaf.crt) as f:
        first = f.read().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    alone = fx.path("leaf-alone.crt")
    with open(alone, "w") as f:
        f.write(first)
    r = certgate("explain", "--config", fx.policy, "--cert", alone, "--service", "orders-db",
                 check=False)
    assert r.returncode == 1 and "refused: unknown ca" in r.stdout, (r.returncode, r.stdout)


def test_explain_source_cidr(fx):
    r = explain(fx, fx.frank, "--source", "127.0.0.9")
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert re.search(r"^\s*office\s+allow\s+matched$", r.stdout, re.M), r.stdout
    assert "decision: allow (rule office)" in r.stdout, r.stdout
    r = explain(fx, fx.frank, "--source", "192.0.2.7")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert re.search(r"^\s*office\s+allow\s+sources: .*192\.0\.2\.7", r.stdout, re.M), r.stdout
    assert "decision: deny (rule default-deny)" in r.stdout, r.stdout
    r = explain(fx, fx.frank, "--source", "not-an-ip")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)


def test_explain_unknown_service_and_missing_cert(fx):
    r = explain(fx, fx.alice, service="no-such-service")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "no-such-service" in r.stderr and "no such service" in r.stderr, r.stderr
    assert r.stdout == "", r.stdout
    r = explain(fx, Cert(fx.path("no-such.crt"), None))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "no-such.crt" in r.stderr, r.stderr
    r = certgate("explain", "--config", fx.policy, "--cert", fx.alice.crt, check=False)
    assert r.returncode == 2, (r.returncode, r.stderr)


def test_explain_matches_live_gateway(fx):
    """The same certificate gets the same decision and rule offline and live."""
    gw = fx.gateway(tunnel_config(fx))
    port = gw.ports()[0]
    cases = [("alice", fx.alice), ("carl", fx.carl), ("dana", fx.dana), ("erin", fx.erin),
             ("frank", fx.frank)]
    seen = set()
    for name, cert in cases:
        r = explain(fx, cert, "--source", "127.0.0.1", json_out=True, config=gw.config_path)
        assert r.returncode in (0, 1), (name, r.returncode, r.stderr)
        d = json.loads(r.stdout)["decision"]
        assert (r.returncode == 0) == d["allow"], (name, r.stdout)
        sock = tls_client(port, cert, fx.ca.crt, server_name="localhost")
        me = addr(sock)
        if d["allow"]:
            try:
                assert read_banner(sock) == BANNER, (name, "explain allows, gateway refused",
                                                     gw.events())
            finally:
                sock.close()
            live = gw.wait_event("session.start", client=me)
            assert not gw.events("authz.denied", client=me), name
        else:
            assert refused_by_gateway(sock), (name, "explain denies, gateway admitted")
            live = gw.wait_event("authz.denied", client=me)
            assert not gw.events("session.start", client=me), name
        assert live["rule"] == d["rule"], (name, "explain: %s, gateway: %s" % (d, live))
        seen.add((d["allow"], d["rule"]))
    # the cases really cover allow and deny, by different rules
    assert {(True, "dba"), (True, "analysts"), (True, "office"), (False, "no-contractors"),
            (False, "default-deny")} <= seen, seen
    # and the handshake refusal explain predicts
    r = explain(fx, fx.expired, json_out=True, config=gw.config_path)
    assert r.returncode == 1
    refused = json.loads(r.stdout)["certificate"]["refused"]
    try:
        sock = tls_client(port, fx.expired, fx.ca.crt, server_name="localhost")
    except ssl.SSLError:
        pass
    else:
        assert refused_by_gateway(sock)
    ev = gw.wait_event("tls.rejected")
    assert ev["reason"] == refused, (ev, refused)
    gw.stop()


# --- connect -----------------------------------------------------------------------

class Connector(Process):
    """certgate connect, ready when it logs that it listens. (Unlike
    harness.Connector, readiness is not probed by connecting: a probe
    connection is a tunnel, and would add its own session or refusal to the
    gateway's audit log.)"""

    def __init__(self, fx, gateway_port, cert, ca=None, host="localhost", service="orders-db",
                 listen_ip="127.0.0.1"):
        self.port = free_port()
        super().__init__(["connect", "--gateway", "%s:%d" % (host, gateway_port),
                          "--service", service, "--listen", "%s:%d" % (listen_ip, self.port),
                          "--cert", cert.crt, "--key", cert.key, "--ca", ca or fx.ca.crt],
                         fx.path(fx.unique("connect") + ".log"))
        fx.procs.append(self)
        wait_for(lambda: "listening on" in self.output() or not self.alive(), 10,
                 "the connector to listen")
        assert self.alive(), "certgate connect exited: " + self.output()

    def stop(self):
        if self.alive():
            self.signal(signal.SIGTERM)
            return self.wait(15)
        return self.proc.returncode


def connector_log_says(conn, pattern, what):
    return wait_for(lambda: re.search(pattern, conn.output()), 10, what)


def test_connect_refuses_gateway_signed_by_other_ca(fx):
    gw = fx.gateway(tunnel_config(fx))
    other = CA(fx.path("other-ca"), name="some other CA")
    conn = Connector(fx, gw.ports()[0], fx.alice, ca=other.crt)
    assert through(conn.port) == b"", "the connector trusted a gateway its --ca did not sign"
    connector_log_says(conn, r"TLS with the gateway failed: .*(unable to get local issuer|"
                             r"certificate verify failed|self.signed)",
                       "the connector to say why the gateway was not trusted")
    assert not gw.events("session.start"), gw.events()
    # the same connector set-up with the right CA works (the control)
    ok = Connector(fx, gw.ports()[0], fx.alice)
    assert through(ok.port) == BANNER, ok.output()
    assert conn.stop() == 0
    assert ok.stop() == 0
    gw.stop()


def test_connect_checks_gateway_host_name(fx):
    # a gateway certificate for other.example and 127.0.0.1, not localhost
    cert = fx.ca.server(fx.unique("gw-other"), dns=("other.example",), ips=("127.0.0.1",))
    gw = fx.gateway(tunnel_config(fx, gateway={"cert": cert.crt, "key": cert.key}))
    port = gw.ports()[0]
    bad = Connector(fx, port, fx.alice, host="localhost")
    assert through(bad.port) == b"", "the connector accepted a certificate without localhost"
    connector_log_says(bad, r"TLS with the gateway failed: .*(hostname mismatch|host ?name)",
                       "the connector to report the host name mismatch")
    good = Connector(fx, port, fx.alice, host="127.0.0.1")
    assert through(good.port) == BANNER, good.output()
    assert len(gw.events("session.start")) == 1, gw.events()
    bad.stop()
    good.stop()
    gw.stop()


def test_connect_picks_up_renewed_certificate(fx):
    gw = fx.gateway(tunnel_config(fx))
    prefix = fx.unique("renewed")
    first = fx.ca.issue(prefix, "alice@example.com", groups=["dba"], device_id="laptop-1",
                        trust="high", ttl="15m")
    serial_a = serial_of(first)
    conn = Connector(fx, gw.ports()[0], first)
    assert through(conn.port) == BANNER, conn.output()
    start = wait_for(lambda: gw.events("session.start"), 10, "the first session.start")
    assert len(start) == 1 and int(start[0]["cert_serial"], 16) == serial_a, (start, serial_a)

    renewed = fx.ca.issue(prefix, "alice@example.com", groups=["dba"], device_id="laptop-1",
                          trust="high", ttl="15m")
    assert renewed.crt == first.crt
    serial_b = serial_of(renewed)
    assert serial_b != serial_a
    assert through(conn.port) == BANNER, conn.output()
    starts = wait_for(lambda: len(gw.events("session.start")) == 2 and gw.events("session.start"),
                      10, "the second session.start")
    assert int(starts[1]["cert_serial"], 16) == serial_b, (
        "the connector kept the old certificate: session.start cert_serial %s, expected %X"
        % (starts[1]["cert_serial"], serial_b))
    assert conn.alive()
    assert conn.stop() == 0
    gw.stop()


def test_connect_usage(fx):
    base = ["connect", "--gateway", "localhost:1", "--listen", "127.0.0.1:%d" % free_port(),
            "--cert", fx.alice.crt, "--key", fx.alice.key, "--ca", fx.ca.crt]
    r = certgate(*base, check=False, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--service" in r.stderr, r.stderr
    r = certgate(*(base + ["--service", "orders-db", "--bogus"]), check=False, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    r = certgate("connect", "--help", check=False)
    assert r.returncode == 0 and "usage: certgate connect" in r.stdout, (r.returncode, r.stdout)


def test_connect_sigterm_exits_0(fx):
    gw = fx.gateway(tunnel_config(fx))
    # idle
    conn = Connector(fx, gw.ports()[0], fx.alice)
    conn.signal(signal.SIGTERM)
    assert conn.wait(15) == 0, conn.output()
    # with a tunnel open
    conn = Connector(fx, gw.ports()[0], fx.alice)
    with socket.create_connection(("127.0.0.1", conn.port), timeout=5 * SLOW) as s:
        assert read_banner(s) == BANNER, conn.output()
        conn.signal(signal.SIGTERM)
        assert conn.wait(15) == 0, conn.output()
    assert not port_open(conn.port)
    gw.stop()


def test_connect_warns_off_loopback(fx):
    """--listen on an address others reach hands them the user's login
    certificate: certgate connect says so on stderr (and still listens,
    for the user who means it); on loopback it says nothing."""
    gw = fx.gateway(tunnel_config(fx))
    warning = "is not a loopback address"
    conn = Connector(fx, gw.ports()[0], fx.alice, listen_ip="0.0.0.0")
    assert warning in conn.output() and "0.0.0.0:%d" % conn.port in conn.output(), \
        conn.output()
    assert conn.stop() == 0
    conn = Connector(fx, gw.ports()[0], fx.alice)
    assert warning not in conn.output(), conn.output()
    assert conn.stop() == 0
    gw.stop()


# --- ca ----------------------------------------------------------------------------

def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ca_files_and_modes(fx):
    folder = fx.path("ca-modes")
    old = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        ca = CA(folder, name="modes CA")
        cert = ca.issue("bob", "bob@example.com", groups=["dba", "ops"], device_id="bob-pc",
                        trust="medium")
        server = ca.server("srv", dns=("db.example",), ips=("127.0.0.1",))
    finally:
        os.umask(old)
    assert mode(ca.key) == 0o600, oct(mode(ca.key))
    assert mode(cert.key) == 0o600, oct(mode(cert.key))
    assert mode(server.key) == 0o600, oct(mode(server.key))
    assert mode(folder) == 0o700, oct(mode(folder))
    assert mode(ca.crt) & 0o022 == 0, oct(mode(ca.crt))
    for c in (cert, server):
        r = subprocess.run(["openssl", "verify", "-CAfile", ca.crt, c.crt], capture_output=True,
                           text=True)
        assert r.returncode == 0 and r.stdout.strip().endswith(": OK"), (r.stdout, r.stderr)
    text = subprocess.run(["openssl", "x509", "-in", cert.crt, "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "email:bob@example.com" in text, text
    assert "URI:urn:certgate:device:bob-pc" in text, text
    assert "URI:urn:certgate:trust:medium" in text, text
    subject = re.search(r"Subject: (.*)", text).group(1)
    assert re.search(r"\bCN ?= ?bob@example\.com\b", subject), subject
    assert re.search(r"\bOU ?= ?dba\b.*\bOU ?= ?ops\b", subject), subject  # groups in order
    assert "TLS Web Client Authentication" in text, text
    # a login certificate is short-lived: 15 minutes by default
    r = subprocess.run(["openssl", "x509", "-in", cert.crt, "-noout", "-checkend", "840"],
                       capture_output=True, text=True)
    assert r.returncode == 0, "expires within 14 minutes"
    r = subprocess.run(["openssl", "x509", "-in", cert.crt, "-noout", "-checkend", "960"],
                       capture_output=True, text=True)
    assert r.returncode == 1, "valid for more than 16 minutes"
    stext = subprocess.run(["openssl", "x509", "-in", server.crt, "-noout", "-text"],
                           capture_output=True, text=True, check=True).stdout
    assert "DNS:db.example" in stext and "IP Address:127.0.0.1" in stext, stext


def test_ca_init_twice_without_force(fx):
    folder = fx.path("ca-twice")
    certgate("ca", "init", "--dir", folder)
    with open(os.path.join(folder, "ca.key")) as f:
        key = f.read()
    r = certgate("ca", "init", "--dir", folder, check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "--force" in r.stderr, r.stderr
    with open(os.path.join(folder, "ca.key")) as f:
        assert f.read() == key, "the existing CA key was replaced"
    certgate("ca", "init", "--dir", folder, "--force")
    with open(os.path.join(folder, "ca.key")) as f:
        assert f.read() != key, "--force did not replace the CA"
    r = certgate("ca", "issue", "--dir", folder, "--out", os.path.join(folder, "x"), check=False)
    assert r.returncode == 2, (r.returncode, r.stderr)  # --user missing


# --- version, unknown subcommand ---------------------------------------------------

def test_version(fx):
    r = certgate("version")
    out = r.stdout
    for name in ("certgate", "OpenSSL", "libuv", "jansson", "libmicrohttpd"):
        assert re.search(r"(?im)^%s\s+v?\d+\.\d+" % re.escape(name), out), (name, out)


def test_unknown_subcommand(fx):
    r = certgate("no-such-command", check=False)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "no-such-command" in r.stderr, r.stderr
    r = certgate(check=False)
    assert r.returncode == 2, (r.returncode, r.stderr)
    r = certgate("--help", check=False)
    assert r.returncode == 0 and "usage: certgate" in r.stdout, (r.returncode, r.stdout)


# --- serve refusals at start -------------------------------------------------------

def test_serve_refuses_broken_config(fx):
    text = bad_config_text(fx).replace('"ca/alice.key"', '"ca/gateway.key"') \
        .replace('"ca/no-such-ca.crt"', '"ca/ca.crt"')
    path = write(fx, "serve-bad.json", text)
    r = certgate("serve", "--config", path, check=False, timeout=20)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert_errors(r, path, text, BAD_CONFIG_ERRORS)


def test_serve_refuses_port_in_use(fx):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = tunnel_config(fx, gateway={"listen": ["127.0.0.1:%d" % port]})
        cfg["audit"] = {"path": fx.path("inuse.audit")}
        path = write(fx, "inuse.json", json.dumps(cfg, indent=2))
        r = certgate("serve", "--config", path, check=False, timeout=20)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "cannot listen on 127.0.0.1:%d" % port in r.stderr, r.stderr


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
