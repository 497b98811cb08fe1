#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/.

    tests/fuzz/make_corpus.py [--certgate build/gateway/certgate] [--config-md CONFIG.md]

Every seed is small, hand-made and deterministic, except the claims seeds:
DER certificates issued at generation time by `certgate ca issue` (public
certificates only; the keys stay in a temporary directory that is removed).
Without --certgate the claims corpus is left as it is; without --config-md
(the configuration contract, whose first ```json block is its example) the
config-md-example seed is kept as it is. Crash inputs that
were fixed live beside the seeds as crash-*: this script never removes them."""

import argparse
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
CONFIG_EXAMPLE = HERE.parents[1] / "tests/unit/policy/data/decide_basic.json"
TIME_EXAMPLE = HERE.parents[1] / "tests/unit/policy/data/decide_time.json"
APPROVAL_EXAMPLE = HERE.parents[1] / "tests/unit/policy/data/decide_approval.json"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# ---- parse: first byte picks the parser ----

def parse_seeds():
    durations = ["250ms", "90s", "15m", "24h", "7d", "1h30m", "0", "0s", "36500d",
                 "1d2h3m4s5ms", "5s1h", "1h1h", "-1s", "10", "36500d1ms"]
    for i, d in enumerate(durations):
        write("parse", "duration-%02d" % i, "d" + d)
    max_ms = 36500 * 24 * 3600 * 1000
    for i, v in enumerate([0, 1, 999, 1000, 90 * 60 * 1000, 86400000, max_ms, max_ms + 1,
                           2 ** 64 - 1]):
        write("parse", "format-%02d" % i, b"f" + struct.pack(">Q", v))
    hostports = ["db.internal:5432", "10.0.0.5:5432", "[::1]:5432", "[::]:8443",
                 "[::ffff:10.1.2.3]:80", "localhost:65535", "host:0", "a:65536", "::1:80",
                 "[fe80::1%eth0]:80", "user@host:1"]
    for i, h in enumerate(hostports):
        write("parse", "hostport-%02d" % i, "h" + h)
    cidrs = ["10.0.0.0/8", "192.168.1.7", "::1/128", "fd00::/8", "::ffff:10.0.0.0/104",
             "0.0.0.0/0", "::/0", "10.1.2.3/33", "10.1.2.3/31", "2001:db8::/129", "1.2.3.4/"]
    for i, c in enumerate(cidrs):
        write("parse", "cidr-%02d" % i, "c" + c)
    docs = [
        '{"gateway": {"listen": ["0.0.0.0:8443"]}, "services": [{"name": "a"}]}',
        '[1, -2.5e3, true, false, null, "x", [], {}]',
        '{\n\t"k\\u00e9y": "\\ud83d\\ude00",\n\t"a.b": {"[0]": 1}\n}',
        '{"": {"": [""]}}',
        '{"deep": [[[[[[[[{"x": [1]}]]]]]]]]}',
        '{"a": 1, "a": 2}',
        '{"unterminated": [1, 2',
        '{"esc": "\\"\\\\\\/\\b\\f\\n\\r\\t", "uni": "h\xc3\xa9llo"}',
    ]
    for i, j in enumerate(docs):
        write("parse", "json-%02d" % i, "j" + j)
    write("parse", "all-00", "30s")


# ---- proxy-proto ----

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(cmd, fam_proto, body):
    return V2_SIG + bytes([0x20 | cmd, fam_proto]) + struct.pack(">H", len(body)) + body


def proxy_seeds():
    v1 = [
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n",
        b"PROXY TCP6 2001:db8::1 ::1 65535 5432\r\n",
        b"PROXY TCP6 ::ffff:10.1.2.3 ::1 1 2\r\n",
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 080 1\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
    ]
    for i, s in enumerate(v1):
        write("proxy-proto", "v1-%02d" % i, s)
    inet = bytes([10, 1, 2, 3, 10, 0, 0, 1]) + struct.pack(">HH", 40000, 8443)
    inet6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack(">HH", 40000, 8443)
    tlv = b"\x04\x00\x04abcd"  # PP2_TYPE_NOOP
    seeds = [
        v2(1, 0x11, inet),
        v2(1, 0x11, inet + tlv) + b"\x16\x03\x01",
        v2(1, 0x21, inet6),
        v2(1, 0x21, inet6 + b"\x01\x00\x02h2"),
        v2(0, 0x00, b""),
        v2(0, 0x11, inet),
        v2(1, 0x00, b"anything"),
        v2(1, 0x31, bytes(216)),
        v2(1, 0x12, inet),
        v2(1, 0x11, inet + b"\x04\x00"),
        v2(1, 0x11, inet)[:20],
        V2_SIG + b"\x21\x11\x02\x10",
    ]
    for i, s in enumerate(seeds):
        write("proxy-proto", "v2-%02d" % i, s)


# ---- pg-packet ----

def startup(params, proto=0x00030000, extra=b"\x00"):
    body = struct.pack(">I", proto)
    for k, v in params:
        body += k.encode() + b"\x00" + v.encode() + b"\x00"
    body += extra
    return struct.pack(">I", len(body) + 4) + body


def msg(kind, body):
    return kind + struct.pack(">I", len(body) + 4) + body


def pg_seeds():
    seeds = {
        "ssl-request": struct.pack(">II", 8, 80877103),
        "gssenc-request": struct.pack(">II", 8, 80877104),
        "cancel-request": struct.pack(">IIII", 16, 80877102, 4242, 0xdeadbeef),
        "startup": startup([("user", "alice"), ("database", "orders"),
                            ("application_name", "psql"), ("client_encoding", "UTF8")]),
        "startup-user-only": startup([("user", "alice@example.com")]),
        "startup-3.2": startup([("user", "bob"), ("database", "")], proto=0x00030002),
        "startup-no-user": startup([("database", "orders")]),
        "startup-unterminated": startup([("user", "alice")], extra=b""),
        "startup-trailing": startup([("user", "alice")], extra=b"\x00\x00"),
        "startup-protocol-2": startup([("user", "alice")], proto=0x00020000),
        "ssl-then-startup": struct.pack(">II", 8, 80877103) + startup([("user", "a")]),
        "direct-tls": b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03",
        "bad-length": struct.pack(">II", 4, 80877103),
        "huge-length": struct.pack(">II", 0x7fffffff, 0x00030000),
        "ssl-bad-length": struct.pack(">II", 16, 80877103) + bytes(8),
        "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        # the client's messages after login (pgw_fe_read)
        "fe-query-parse": msg(b"Q", b"select 1\0")
        + msg(b"P", b"s1\0select $1\0" + struct.pack(">HI", 1, 23))
        + msg(b"B", b"\0s1\0" + bytes(6)) + msg(b"S", b""),
        "fe-long-name": msg(b"P", b"n" * 300 + b"\0select 42\0\0\0") + msg(b"S", b""),
        "fe-function-call": msg(b"F", struct.pack(">IHHH", 177, 1, 1, 2) + struct.pack(">Ii", 4, 40)
                                + struct.pack(">iH", -1, 1)),
        "fe-unterminated": msg(b"Q", b"select 1"),
        # SASL (pgw_sasl_*)
        "sasl-offer": msg(b"R", struct.pack(">I", 10) + b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
        "sasl-initial-y": b"SCRAM-SHA-256\0" + struct.pack(">I", 5) + b"y,,n=",
    }
    for name, s in seeds.items():
        write("pg-packet", name, s)


# ---- config: flag byte, then certgate.json [NUL policy.json] ----

POLICY_CONFIG = """{
  "gateway": { "listen": ["0.0.0.0:8443", "[::]:8443"], "cert": "gateway.crt",
               "key": "./keys/gateway.key", "client_ca": "/etc/certgate/login-ca.crt",
               "verify_depth": 3, "proxy_protocol_from": ["10.0.0.0/8", "fd00::/8"] },
  "admin": { "listen": "[::1]:9090" },
  "audit": { "path": "-", "on_failure": "continue" },
  "policy_file": "policy.json",
  "services": [ { "name": "orders-db", "upstream": "10.1.0.5:5432", "require_inner_tls": true } ]
}"""

POLICY_FILE = """{
  "claims": { "user": ["ext:1.3.6.1.4.1.99999.1", "san:email"], "groups": ["subject:OU"] },
  "rules": [
    { "name": "ops", "effect": "allow", "services": ["orders-db"], "users": ["*@example.com"],
      "sources": ["10.0.0.0/8"], "devices": ["laptop-1"] },
    { "name": "nobody", "effect": "deny", "services": ["*"], "groups": ["former"] }
  ]
}"""


def config_seeds(config_md):
    if config_md:
        text = Path(config_md).read_text()
        start = text.index("```json\n") + len("```json\n")
        example = text[start:text.index("```", start)]
    else:
        example = (CORPUS / "config" / "config-md-example").read_bytes()[1:].decode()
    write("config", "config-md-example", b"\x00" + example.encode())
    write("config", "config-md-example-partial", b"\x02" + example.encode())
    write("config", "decide-basic", b"\x00" + CONFIG_EXAMPLE.read_bytes())
    write("config", "policy-file", b"\x01" + POLICY_CONFIG.encode() + b"\x00" +
          POLICY_FILE.encode())
    write("config", "policy-file-missing", b"\x00" + POLICY_CONFIG.encode())
    write("config", "policy-file-partial", b"\x03" + POLICY_CONFIG.encode() + b"\x00" +
          b'{"rules": [{"name": "x"}], "extra": 1}')
    write("config", "errors", b"\x02" + b"""{
  "gateway": { "listen": "0.0.0.0:0", "cert": "", "max_cert_lifetime": "5s1h",
               "max_connections": 0, "proxy_protocol_from": ["10.0.0.0/33"] },
  "admin": { "listen": "0.0.0.0:9090" },
  "claims": { "user": ["subject:NOPE"], "groups": [], "bogus": 1 },
  "services": [ { "name": "a b", "upstream": [], "mode": "postgres", "listen": "0.0.0.0:8443" },
                { "name": "A", "sni": ["a"], "upstream": "x:1", "audit_queries": true } ],
  "rules": [ { "name": "default-deny", "effect": "maybe", "services": ["nope"],
               "db_users": ["{oops}"], "min_trust": "ultra" } ],
  "unknown": true
}""")
    write("config", "not-json", b"\x00{\"gateway\": ")
    # time windows and permissive rules (issue 17), and their mistakes
    write("config", "time-windows", b"\x00" + TIME_EXAMPLE.read_bytes())
    write("config", "time-window-errors", b"\x02" + b"""{
  "gateway": { "listen": ["0.0.0.0:8443"], "cert": "c", "key": "k", "client_ca": "ca" },
  "services": [ { "name": "tun", "upstream": "h:1" } ],
  "rules": [
    { "name": "a", "effect": "allow", "mode": "permissive", "services": ["*"],
      "when": { "days": ["mon", "Tues", 3], "hours": "22:00-22:00", "tz": "../etc/passwd" } },
    { "name": "b", "effect": "deny", "mode": "dry-run", "services": ["*"],
      "when": { "from": "2026-12-02T00:00:00Z", "until": "2026-12-01T23:00:00-01:00" } },
    { "name": "c", "effect": "deny", "services": ["*"], "when": { "hours": "08:00-24:00" } },
    { "name": "d", "effect": "deny", "services": ["*"], "when": {} }
  ]
}""")
    # just-in-time access (issue 17): rules that require approval, and the
    # key where it is refused (a deny rule, not a boolean)
    write("config", "requires-approval", b"\x00" + APPROVAL_EXAMPLE.read_bytes())
    write("config", "requires-approval-errors", b"\x02" + b"""{
  "gateway": { "listen": ["0.0.0.0:8443"], "cert": "c", "key": "k", "client_ca": "ca" },
  "services": [ { "name": "tun", "upstream": "h:1" } ],
  "rules": [
    { "name": "a", "effect": "deny", "services": ["*"], "requires_approval": true },
    { "name": "b", "effect": "allow", "services": ["*"], "requires_approval": "yes" },
    { "name": "c", "effect": "allow", "services": ["tun"], "requires_approval": true,
      "mode": "permissive" }
  ]
}""")


# ---- claims: DER certificates from the development CA ----

def claims_seeds(certgate):
    with tempfile.TemporaryDirectory() as tmp:
        ca = Path(tmp) / "ca"
        sub = Path(tmp) / "sub"

        def run(*args):
            subprocess.run([certgate, "ca"] + list(args), check=True,
                           stdout=subprocess.DEVNULL)

        run("init", "--dir", str(ca), "--name", "fuzz root CA")
        run("init", "--dir", str(sub), "--name", "fuzz sub CA", "--parent", str(ca))
        issues = {
            "default": ["--user", "alice@example.com", "--group", "dba", "--group", "ops",
                        "--device-id", "laptop-1", "--device-trust", "high"],
            "no-email": ["--user", "bob@example.com", "--no-email", "--cn", "bob",
                         "--device-trust", "low"],
            "ext-claims": ["--user", "carol@example.com", "--ext",
                           "1.3.6.1.4.1.99999.1=carol", "--ext", "1.3.6.1.4.1.99999.2=medium",
                           "--critical-ext", "1.3.6.1.4.1.99999.3"],
            "odd-trust": ["--user", "dave@example.com", "--device-trust", "always_deny",
                          "--group", "d\u00e9v", "--eku", "both", "--ca-true"],
            "rsa": ["--user", "erin@example.com", "--rsa", "1024", "--digest", "sha1"],
        }
        for name, args in issues.items():
            out = Path(tmp) / name
            run("issue", "--dir", str(sub if name == "default" else ca), "--out", str(out),
                *args)
            der = subprocess.run(["openssl", "x509", "-in", str(out) + ".crt", "-outform",
                                  "DER"], check=True, stdout=subprocess.PIPE).stdout
            write("claims", name + ".der", der)
        for name, d in (("root-ca", ca), ("sub-ca", sub)):
            der = subprocess.run(["openssl", "x509", "-in", str(d / "ca.crt"), "-outform",
                                  "DER"], check=True, stdout=subprocess.PIPE).stdout
            write("claims", name + ".der", der)


# ---- tls-records: byte 0 the suite, byte 1 the mode (0 raw, 1 sealed) ----

def tls_seeds():
    for suite in range(3):
        # raw: headers good and bad, a body of garbage
        write("tls-records", "raw-%d-record" % suite,
              bytes([suite, 0]) + b"\x17\x03\x03\x00\x20" + bytes(range(32)))
        write("tls-records", "raw-%d-alert" % suite, bytes([suite, 0]) + b"\x15\x03\x03\x00\x02\x02\x28")
        write("tls-records", "raw-%d-toolong" % suite, bytes([suite, 0]) + b"\x17\x03\x03\x41\x11")
        # sealed: (type, length, content) chunks
        chunks = [(23, b"select 1"), (21, b"\x01\x00"), (22, b"\x18\x00\x00\x01\x01"),
                  (23, b"after the key update"), (23, b"")]
        body = b"".join(bytes([t, len(c) >> 8, len(c) & 0xff]) + c for t, c in chunks)
        write("tls-records", "sealed-%d" % suite, bytes([suite, 1]) + body)
        write("tls-records", "sealed-%d-big" % suite, bytes([suite, 1, 23, 0x40, 0x00]) + b"x" * 64)
        write("tls-records", "sealed-%d-flip" % suite, bytes([suite, 1, 23, 0, 4]) + b"\x85abc")


# ---- audit-chain: 'c' + values for a constructed chain, else raw files ----

def chain_lines(n, first=1, prev="0" * 64, values=None):
    import hashlib
    import json
    lines = []
    for i in range(n):
        obj = {"ts": "2026-12-01T10:00:%02d.000Z" % i, "event": "session.start",
               "seq": first + i, "prev": prev,
               "user": (values[i] if values else "u%d" % i)}
        line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        prev = hashlib.sha256(line.encode()).hexdigest()
        lines.append(line)
    return lines


def audit_chain_seeds():
    write("audit-chain", "construct-00", "calice\nbob\ncarol\ndave")
    write("audit-chain", "construct-01", b"c\xff\xfe\n\\x41\n\"quoted\"\n]\n\xc3\xa9t\xc3\xa9\n")
    write("audit-chain", "construct-02", "c")
    write("audit-chain", "construct-03", "c" + "\n" * 30)
    ok = chain_lines(6)
    write("audit-chain", "raw-intact", "\n".join(ok) + "\n")
    write("audit-chain", "raw-series", "\n".join(ok[:3]) + "\n\x00" + "\n".join(ok[3:]) + "\n")
    write("audit-chain", "raw-torn", "\n".join(ok) + "\n" + ok[0][:30])
    write("audit-chain", "raw-removed", "\n".join(ok[:2] + ok[3:]) + "\n")
    write("audit-chain", "raw-reordered", "\n".join(ok[:2] + [ok[3], ok[2]] + ok[4:]) + "\n")
    write("audit-chain", "raw-inserted", "\n".join(ok[:4] + [ok[1]] + ok[4:]) + "\n")
    edited = list(ok)
    edited[2] = edited[2].replace('"u2"', '"u9"')
    write("audit-chain", "raw-edited", "\n".join(edited) + "\n")
    write("audit-chain", "raw-unchained",
          '{"ts":"2026-12-01T10:00:00.000Z","event":"gateway.start"}\n' + "\n".join(ok) + "\n")
    write("audit-chain", "raw-restarted", "\n".join(ok) + "\n\x00" + "\n".join(chain_lines(2)) + "\n")
    write("audit-chain", "raw-garbage", "\n\n{\n[]\nnull\n{\"seq\":1}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--certgate", help="a built certgate, for the claims seeds")
    ap.add_argument("--config-md", help="CONFIG.md, for its example configuration")
    args = ap.parse_args()
    parse_seeds()
    proxy_seeds()
    pg_seeds()
    tls_seeds()
    audit_chain_seeds()
    config_seeds(args.config_md)
    if args.certgate:
        claims_seeds(args.certgate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
