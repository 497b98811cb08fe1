"""The path-validation corpus (tests/pathval, issue 12) against certgate.

The corpus is generated at run time (tests/pathval/make_corpus.py: keys and
certificates in the test's temporary folder, nothing committed). For every
case a configuration is written with client_ca = the case's trust anchors,
crl = its CRLs concatenated, crl_check and verify_depth when the case sets
them (crl_check only when it is not the default, "chain"), one tunnel
service "x" and a rule admitting everyone; then

    certgate explain --config CFG --cert chain.pem --service x --json [--at TIME]

runs the same verification as a live handshake (gw_cert_reverify), and its
certificate.refused (and certificate.detail, for the cases with
detail_contains) is compared with the case. The cases marked "live" also go
through a real handshake with certgate serve and Python's ssl as the
client, judged by the tls.rejected audit event (reason, detail) or the
session that starts.

One TAP line per case (and per live case): "ok N - name" when certgate
decides as the case expects, "not ok N - name" followed by "# expected
... / # got ..." lines when it does not."""

import json
import os
import ssl
import subprocess
import sys
import time

from harness import BIN, SLOW, Cert, Fixture, HoldUpstream, tls_client, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_CORPUS = os.path.normpath(os.path.join(HERE, "..", "pathval", "make_corpus.py"))
BANNER = b"pathval upstream\n"
SERVICE = "x"
RULES = [{"name": "everyone", "effect": "allow", "services": ["*"]}]


# --- the corpus ---------------------------------------------------------------------

def make_corpus(folder, *extra):
    """Generates the corpus into folder; returns [(case folder, case.json)]."""
    proc = subprocess.run([sys.executable, MAKE_CORPUS, folder] + list(extra),
                          capture_output=True, text=True, timeout=300 * SLOW)
    if proc.returncode != 0:
        raise RuntimeError("make_corpus.py failed: %s%s" % (proc.stdout, proc.stderr))
    with open(os.path.join(folder, "index.json")) as f:
        names = json.load(f)["cases"]
    cases = []
    for name in names:
        d = os.path.join(folder, name)
        with open(os.path.join(d, "case.json")) as f:
            cases.append((d, json.load(f)))
    return cases


def case_config(fx, case_dir, case, upstream_port):
    """The gateway configuration of one case (a dict, as harness.Gateway takes)."""
    gw = {"client_ca": os.path.join(case_dir, case["anchors"])}
    if case["crls"]:
        crl = os.path.join(case_dir, "crls.pem")
        with open(crl, "w") as out:
            for name in case["crls"]:
                with open(os.path.join(case_dir, name)) as f:
                    out.write(f.read())
        gw["crl"] = crl
    if case.get("crl_check", "chain") != "chain":
        gw["crl_check"] = case["crl_check"]
    if "verify_depth" in case:
        gw["verify_depth"] = case["verify_depth"]
    svc = {"name": SERVICE, "sni": ["localhost"], "mode": "tunnel",
           "upstream": ["127.0.0.1:%d" % upstream_port]}
    return fx.config([svc], RULES, gateway=gw)


def rfc3339(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# --- outcomes -----------------------------------------------------------------------

class Outcome:
    """What certgate did with a case: verdict "accept", "refuse" or "error"."""

    def __init__(self, verdict, reason=None, detail=None, error=None):
        self.verdict = verdict
        self.reason = reason
        self.detail = detail
        # one line: TAP diagnostics are lines starting with "#"
        self.error = None if error is None else \
            " | ".join(l.strip() for l in error.splitlines() if l.strip())

    def __str__(self):
        if self.verdict == "accept":
            return "accept"
        if self.verdict == "refuse":
            s = "refuse: %s" % self.reason
            return s + (" (detail: %s)" % self.detail if self.detail else "")
        return "error: %s" % self.error


def explain(fx, case_dir, case, config_path):
    args = [BIN, "explain", "--config", config_path, "--cert",
            os.path.join(case_dir, case["chain"]), "--service", SERVICE, "--json"]
    if "at" in case:
        args += ["--at", rfc3339(case["at"])]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60 * SLOW)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        err = (proc.stderr.strip().splitlines() or ["exit %d, no output" % proc.returncode])
        # "/tmp/.../case/certgate.json:10:18: gateway.crl_check: unknown key"
        return Outcome("error", error=err[0].replace(case_dir + os.sep, ""))
    cert = doc.get("certificate", {})
    refused = cert.get("refused")
    if refused is None:
        return Outcome("accept")
    return Outcome("refuse", refused, cert.get("detail"))


def live(fx, case_dir, case, config):
    """A real handshake: certgate serve with the case's configuration, Python's
    ssl as the client sending chain.pem with leaf.key."""
    gw = fx.gateway(json.loads(json.dumps(config)))
    try:
        port = gw.ports()[0]
        cert = Cert(os.path.join(case_dir, case["chain"]), os.path.join(case_dir, case["key"]))
        try:
            sock = tls_client(port, cert, fx.ca.crt, server_name="localhost")
        except (ssl.SSLError, OSError):
            sock, me = None, None
        else:
            me = "%s:%d" % sock.getsockname()[:2]
        if sock is not None:
            data = b""
            try:
                while len(data) < len(BANNER):
                    chunk = sock.recv(len(BANNER) - len(data))
                    if not chunk:
                        break
                    data += chunk
            except (ssl.SSLError, OSError):
                pass
            finally:
                sock.close()
            if data == BANNER:
                gw.wait_event("session.start", client=me)
                return Outcome("accept")
        match = {"client": me} if me else {}

        def rejected():
            return gw.events("tls.rejected", **match) or gw.events("authz.denied", **match)
        try:
            ev = wait_for(rejected, 10, "tls.rejected for %s" % (me or "the client"))[-1]
        except AssertionError as e:
            return Outcome("error", error=str(e))
        if ev["event"] == "authz.denied":
            return Outcome("error", error="verified, then denied by policy: %s" % ev.get("reason"))
        return Outcome("refuse", ev.get("reason"), ev.get("detail"))
    finally:
        gw.stop(expect=None)


def judge(case, got):
    """[] when got is what the case expects, else the differences."""
    if got.verdict == "error":
        return ["certgate could not judge the case: %s" % got.error]
    if case["expect"] == "accept":
        return [] if got.verdict == "accept" else ["expected accept"]
    diffs = []
    if got.verdict != "refuse":
        return ["expected refuse: %s" % case["reason"]]
    if got.reason != case["reason"]:
        diffs.append("expected reason %r" % case["reason"])
    want = case.get("detail_contains")
    if want and want not in (got.detail or ""):
        diffs.append("expected a detail naming %r" % want)
    return diffs


# --- TAP ----------------------------------------------------------------------------

class Tap:
    def __init__(self, plan):
        self.n = 0
        self.failed = 0
        print("1..%d" % plan, flush=True)

    def report(self, name, case, diffs, got):
        self.n += 1
        if not diffs:
            print("ok %d - %s" % (self.n, name), flush=True)
            return
        self.failed += 1
        print("not ok %d - %s" % (self.n, name))
        want = case["expect"] + ("" if case["expect"] == "accept" else ": " + case["reason"])
        if case.get("detail_contains"):
            want += " (detail naming %r)" % case["detail_contains"]
        print("#   expected %s" % want)
        print("#   got      %s" % got)
        for d in diffs:
            print("#   - %s" % d)
        sys.stdout.flush()


def main():
    fx = None
    upstream = None
    try:
        fx = Fixture(with_postgres=False)
        upstream = HoldUpstream(BANNER)
        cases = make_corpus(fx.path("corpus"))
    except Exception as e:
        print("1..1\nnot ok 1 - make the corpus and the gateway fixture")
        print("# %s" % e)
        if upstream:
            upstream.stop()
        if fx:
            fx.close()
        return 1
    tap = Tap(len(cases) + sum(1 for _, c in cases if c.get("live")))
    print("# %d cases, %d of them live too" % (len(cases), sum(1 for _, c in cases
                                                              if c.get("live"))), flush=True)
    try:
        for case_dir, case in cases:
            name = case["name"]
            config = case_config(fx, case_dir, case, upstream.port)
            path = os.path.join(case_dir, "certgate.json")
            with open(path, "w") as f:
                json.dump(config, f, indent=2)
            got = explain(fx, case_dir, case, path)
            tap.report(name, case, judge(case, got), got)
        for case_dir, case in cases:
            if not case.get("live"):
                continue
            name = "live: " + case["name"]
            config = case_config(fx, case_dir, case, upstream.port)
            try:
                got = live(fx, case_dir, case, config)
            except Exception as e:  # a gateway that does not start, ...
                got = Outcome("error", error="%s: %s" % (type(e).__name__, e))
            finally:
                fx.reap()
            tap.report(name, case, judge(case, got), got)
    finally:
        upstream.stop()
        fx.close()
    print("# %d as expected, %d failed" % (tap.n - tap.failed, tap.failed))
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
