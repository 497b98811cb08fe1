"""testssl.sh (Debian's package) against a gateway listener (issue 6): TLS 1.2
and 1.3 only, no weak cipher, no renegotiation, no session resumption and
so no 0-RTT; the test asserts on testssl's JSON findings.

testssl probes protocols and ciphers with its own sockets: the ServerHello
comes before the gateway asks for a client certificate, so those checks need
none. Its other checks (renegotiation, server defaults, resumption) run
`openssl s_client` to a full handshake, which an mTLS gateway refuses without
a certificate; testssl 3.0 has no option for one, so it is handed an
`openssl` wrapper (--openssl) that adds the login certificate to every
s_client: those handshakes complete and the checks are real (the test
asserts that they were admitted). The listener is a service's own port,
because testssl's s_client calls send no SNI.

Findings that come from the test PKI, not from the gateway, are named and
tolerated: the dev CA is not in the system trust store (cert_chain_of_trust)
and dev certificates carry no CRL/OCSP URI (cert_revocation). Two direct
checks complete the picture: a renegotiation request on a live TLS 1.2
session (openssl s_client, "R") is refused, and a TLS 1.3 client gets no
session ticket to send early data with."""

import json
import os
import shutil
import subprocess
import threading
import sys
import time

from harness import HoldUpstream, SLOW, Fixture, free_port, run, wait_for

RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"], "min_trust": "high"},
]

BANNER = b"upstream says hello\n"

# severities testssl gives to real problems
BAD = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
# findings about the test PKI rather than the gateway's TLS
PKI_FINDINGS = {"cert_chain_of_trust", "cert_revocation", "DNS_CAArecord"}


def note(fmt, *args):
    print("# " + (fmt % args if args else fmt), flush=True)


def setup():
    fx = Fixture(with_postgres=False)
    fx.upstream = HoldUpstream(BANNER)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high", ttl="1h")
    fx.findings = {}
    fx.port = free_port()
    fx.gw = fx.gateway(fx.config(
        [{"name": "echo", "listen": "127.0.0.1:%d" % fx.port,
          "upstream": ["127.0.0.1:%d" % fx.upstream.port]}], RULES,
        gateway={"listen": []}))
    # one gateway for the whole file (one testssl run): not reaped between tests
    fx.procs.remove(fx.gw)
    return fx


def teardown(fx):
    try:
        fx.gw.stop()
    finally:
        fx.gw.kill()
        fx.upstream.stop()
        fx.close()


def openssl_with_cert(fx):
    path = fx.path("openssl-mtls")
    with open(path, "w") as f:
        f.write('#!/bin/sh\n'
                '# openssl, with a login certificate added to every s_client\n'
                'if [ "$1" = s_client ]; then\n'
                '\tshift\n'
                '\texec openssl s_client -cert "%s" -key "%s" "$@"\n'
                'fi\n'
                'exec openssl "$@"\n' % (fx.alice.crt, fx.alice.key))
    os.chmod(path, 0o755)
    return path


def run_testssl(fx):
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    assert testssl, ("testssl.sh not found: Debian's testssl.sh package "
                     "(deploy/install-deps installs it)")
    out = fx.path("testssl.json")
    args = [testssl, "--quiet", "--color", "0", "--warnings", "off", "--fast",
            "--openssl", openssl_with_cert(fx), "--jsonfile", out,
            "-p", "-s", "-f", "-S", "-U",
            "--nodns", "none", "--ip", "127.0.0.1", "localhost:%d" % fx.port]
    t0 = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=240 * SLOW,
                          env=dict(os.environ, TERM="dumb", HEADER_MAXSLEEP="2"),
                          stdin=subprocess.DEVNULL)
    took = time.monotonic() - t0
    note("testssl %s: exit %d in %.1f s", " ".join(args[1:]), proc.returncode, took)
    assert os.path.exists(out), "no JSON from testssl (exit %d): %s %s" % (
        proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    with open(out) as f:
        findings = json.load(f)
    fx.findings = {}
    for item in findings:
        fx.findings.setdefault(item["id"], item)
    return proc


def finding(fx, key):
    item = fx.findings.get(key)
    assert item is not None, "testssl reported no %s (ids: %s)" % (key, sorted(fx.findings))
    return item["finding"]


def test_testssl_run(fx):
    proc = run_testssl(fx)
    for key, item in sorted(fx.findings.items()):
        if item["severity"] in BAD or key in ("TLS1_2", "TLS1_3", "secure_renego",
                                              "secure_client_renego", "TLS_session_ticket",
                                              "sessionresumption_ticket",
                                              "sessionresumption_ID"):
            note("  %-28s %-8s %s", key, item["severity"], item["finding"][:100])
    assert not fx.gw.events("tls.rejected", reason="no client certificate"), \
        "the s_client wrapper did not present the certificate"
    starts = fx.gw.events("session.start", user="alice@example.com")
    assert starts, "no testssl handshake was admitted: its s_client checks were not real"
    note("testssl: %d admitted s_client sessions, %d refused probes", len(starts),
         len(fx.gw.events("tls.rejected")))
    assert fx.gw.alive()


def test_protocols(fx):
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert finding(fx, old) == "not offered", (old, finding(fx, old))
    assert finding(fx, "TLS1_2") == "offered", finding(fx, "TLS1_2")
    assert finding(fx, "TLS1_3").startswith("offered"), finding(fx, "TLS1_3")
    assert finding(fx, "fallback_SCSV").startswith("no protocol below TLS 1.2"), \
        finding(fx, "fallback_SCSV")


def test_ciphers(fx):
    for weak in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                 "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):
        assert finding(fx, weak) == "not offered", (weak, finding(fx, weak))
    assert finding(fx, "cipherlist_STRONG") == "offered"
    assert finding(fx, "PFS") == "offered"
    suites = finding(fx, "PFS_ciphers").split()
    assert suites, "no forward-secret suite listed"
    for s in suites:
        assert ("GCM" in s or "CHACHA20" in s) and "CBC" not in s, ("not an AEAD suite", s)
    for key in ("SWEET32", "FREAK", "LOGJAM", "BEAST", "LUCKY13", "POODLE_SSL", "DROWN",
                "ROBOT", "heartbleed", "CCS", "CRIME_TLS"):
        assert fx.findings[key]["severity"] == "OK", (key, fx.findings[key])


def test_renegotiation(fx):
    # RFC 5746 signalling is fine; what matters is that a client cannot renegotiate
    assert finding(fx, "secure_renego") == "supported", finding(fx, "secure_renego")
    assert fx.findings["secure_client_renego"]["severity"] == "OK", \
        fx.findings["secure_client_renego"]
    assert finding(fx, "secure_client_renego") == "not vulnerable", \
        finding(fx, "secure_client_renego")
    # directly: a renegotiation request on a live TLS 1.2 session
    proc = subprocess.Popen(
        ["openssl", "s_client", "-tls1_2", "-cert", fx.alice.crt, "-key", fx.alice.key,
         "-CAfile", fx.ca.crt, "-verify_return_error", "-connect", "127.0.0.1:%d" % fx.port],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        # the session is up once the upstream's greeting came through it
        wait_for(lambda: any("upstream says hello" in l for l in lines), 10,
                 "the upstream's greeting through the s_client session")
        proc.stdin.write("R\n")
        proc.stdin.flush()
        proc.wait(timeout=10 * SLOW)
    except BrokenPipeError:
        proc.wait(timeout=10 * SLOW)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    out = "".join(lines)
    assert "upstream says hello" in out, out[-2000:]
    assert "RENEGOTIATING" in out, out[-2000:]
    assert "no renegotiation" in out, "renegotiation was not refused:\n" + out[-2000:]
    note("renegotiation on a live session: %s",
         [l for l in out.splitlines() if "renegotiation" in l.lower()][-1:])


def test_no_resumption_no_early_data(fx):
    assert finding(fx, "TLS_session_ticket").startswith("no"), finding(fx, "TLS_session_ticket")
    assert finding(fx, "sessionresumption_ticket") == "not supported", \
        finding(fx, "sessionresumption_ticket")
    assert finding(fx, "sessionresumption_ID").startswith("No Session ID"), \
        finding(fx, "sessionresumption_ID")
    assert "early data" not in finding(fx, "TLS_extensions"), finding(fx, "TLS_extensions")
    # directly: a TLS 1.3 client keeps no session to send 0-RTT data with
    sess = fx.path("tls13.session")
    proc = subprocess.run(
        ["openssl", "s_client", "-tls1_3", "-cert", fx.alice.crt, "-key", fx.alice.key,
         "-CAfile", fx.ca.crt, "-verify_return_error", "-sess_out", sess,
         "-connect", "127.0.0.1:%d" % fx.port],
        input="", capture_output=True, text=True, timeout=20 * SLOW)
    assert "New, TLSv1.3" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-1000:]
    assert not os.path.exists(sess) or os.path.getsize(sess) == 0, \
        "the gateway handed out a TLS 1.3 session ticket"


def test_no_other_findings(fx):
    bad = {k: (v["severity"], v["finding"]) for k, v in fx.findings.items()
           if v["severity"] in BAD and k not in PKI_FINDINGS}
    assert not bad, "testssl flags: %s" % bad
    for k in sorted(PKI_FINDINGS & set(fx.findings)):
        note("tolerated (test PKI): %s %s %s", k, fx.findings[k]["severity"],
             fx.findings[k]["finding"][:80])


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
