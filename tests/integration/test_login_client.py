"""certgate login / status and connect's defaults (LOGIN.md, "The client"),
against a real OpenID Provider (oidc_fixture.py: npm oidc-provider, a
scripted browser playing the user).

The issuer side lands in parallel (gateway/issuer/), so this file carries a
small STAND-IN issuer (StandInIssuer: Python, HTTPS with a certificate of
the harness CA) serving /v1/login/config and /v1/login/certificate. It
checks what certgate login sends — the Bearer ID token verified with
openssl against the provider's published key, the CSR's self-signature,
the device proof over the CSR's DER, the platform — records every check,
and signs with the harness CA through `openssl x509 -req`. The tests
assert each recorded check. (To be switched to the real issuer later.)

A scripted provider (FakeIdP) covers what the real one never does on
demand: slow_down, expired_token, a token with another nonce, a callback
naming another issuer.

What certgate login prints (the lead's tests parse it):
  code flow, on stderr:  "Open <authorization URL>"  (a line of its own)
  --headless, on stderr: "To sign in, visit <verification_uri> and enter the code: <user_code>"
                         "Open <verification_uri_complete>"  (when the provider gives one)
  on success, on stdout: "user:    ...", "groups:  a, b", "device:  d-...", "trust:   ...",
                         "expires: <RFC 3339> (in 23h59m)", "files:   DIR (...)"
"""

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import BIN, SLOW, Fixture, Process, certgate, free_port, psql, run, wait_for
from oidc_fixture import OpenIDProvider, b64url, b64url_decode, decode_jwt

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCOPES = ["openid", "email", "profile", "groups"]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def openssl(*args, data=None, check=True):
    proc = subprocess.run(["openssl"] + [str(a) for a in args], capture_output=True,
                          input=data)
    if check and proc.returncode != 0:
        raise AssertionError("openssl %s: %s" % (" ".join(map(str, args)), proc.stderr))
    return proc


def device_id_of(spki_der):
    """LOGIN.md: "d-" + the first 26 characters of lowercase unpadded base32
    of SHA-256(SPKI DER)."""
    return "d-" + base64.b32encode(hashlib.sha256(spki_der).digest()).decode().lower()[:26]


def https_server(fx, handler, name):
    """A threaded HTTPS server on 127.0.0.1 (certificate of the harness CA)
    running handler; returns (server, base URL)."""
    cert = fx.ca.server(fx.unique(name), dns=("localhost",), ips=("127.0.0.1",))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.crt, cert.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server, "https://127.0.0.1:%d" % server.server_address[1]


class JSONHandler(http.server.BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def log_message(self, *args):
        pass


# --- the stand-in issuer --------------------------------------------------------------

class StandInIssuer:
    """/v1/login/config and /v1/login/certificate as LOGIN.md describes them,
    just enough to test certgate login end to end. Every certificate request
    is recorded in .requests with the result of each check."""

    def __init__(self, fx, op, idp_issuer=None, client_id="certgate", trust="low"):
        self.fx, self.op = fx, op
        self.idp_issuer = idp_issuer or op.issuer
        self.client_id = client_id
        self.trust = trust
        self.requests = []
        self.refusal = None  # (status, body) answered instead of a certificate
        outer = self

        class Handler(JSONHandler):
            def do_GET(self):
                if self.path != "/v1/login/config":
                    return self.reply(404, {"error": "not found"})
                self.reply(200, {"issuer": outer.idp_issuer, "client_id": outer.client_id,
                                 "scopes": SCOPES, "cert_lifetime": "24h"})

            def do_POST(self):
                if self.path != "/v1/login/certificate":
                    return self.reply(404, {"error": "not found"})
                status, body = outer.certificate(self.headers.get("Authorization"),
                                                 self.body())
                self.reply(status, body)

        self.server, self.url = https_server(fx, Handler, "issuer")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def verify_token(self, token):
        """(claims, verified): the JWS checked with openssl against the
        provider's published key named by kid (RS256), and iss/aud/exp."""
        header, claims, sig = decode_jwt(token)
        key = next((k for k in self.op.keys.values()
                    if k["published"] and k["jwk"]["kid"] == header.get("kid")), None)
        if key is None or header.get("alg") != "RS256":
            return claims, False
        work = tempfile.mkdtemp(dir=self.fx.dir)
        data, sigf, pub = (os.path.join(work, n) for n in ("data", "sig", "pub.pem"))
        with open(data, "w") as f:
            f.write(token.rsplit(".", 1)[0])
        with open(sigf, "wb") as f:
            f.write(sig)
        with open(pub, "w") as f:
            f.write(key["public_pem"])
        ok = openssl("dgst", "-sha256", "-verify", pub, "-signature", sigf, data,
                     check=False).returncode == 0
        aud = claims.get("aud")
        ok = ok and claims.get("iss") == self.idp_issuer and claims.get("exp", 0) > time.time() \
            and self.client_id in (aud if isinstance(aud, list) else [aud])
        return claims, ok

    def certificate(self, authorization, raw):
        rec = {"authorization": authorization}
        self.requests.append(rec)
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"error": "bad request", "reason": "body is not JSON"}
        rec["body"] = body
        token = authorization[7:] if (authorization or "").startswith("Bearer ") else None
        rec["token"] = token
        rec["claims"], rec["token_ok"] = self.verify_token(token) if token else ({}, False)
        work = tempfile.mkdtemp(dir=self.fx.dir)
        csr, csr_der = os.path.join(work, "csr.pem"), os.path.join(work, "csr.der")
        with open(csr, "w") as f:
            f.write(body.get("csr") or "")
        rec["csr_ok"] = openssl("req", "-verify", "-noout", "-in", csr,
                                check=False).returncode == 0
        text = openssl("req", "-noout", "-text", "-in", csr, check=False).stdout.decode()
        rec["csr_p256"] = "prime256v1" in text or "P-256" in text
        rec["proof_ok"] = False
        rec["device_id"] = None
        if rec["csr_ok"] and body.get("device_key"):
            openssl("req", "-in", csr, "-outform", "DER", "-out", csr_der)
            dev, sig = os.path.join(work, "device.pem"), os.path.join(work, "proof.der")
            with open(dev, "w") as f:
                f.write(body["device_key"])
            with open(sig, "wb") as f:
                f.write(b64url_decode(body.get("device_proof") or ""))
            rec["proof_ok"] = openssl("dgst", "-sha256", "-verify", dev, "-signature", sig,
                                      csr_der, check=False).returncode == 0
            spki = openssl("pkey", "-pubin", "-in", dev, "-outform", "DER").stdout
            rec["device_id"] = device_id_of(spki)
        if self.refusal is not None:
            return self.refusal
        if not (rec["token_ok"] and rec["csr_ok"] and rec["proof_ok"]):
            return 401, {"error": "unauthorized", "reason": "stand-in: a check failed"}
        user, groups = rec["claims"]["email"], rec["claims"].get("groups", [])
        ext = os.path.join(work, "ext")
        san = ["email:" + user, "URI:urn:certgate:device:" + rec["device_id"],
               "URI:urn:certgate:trust:" + self.trust]
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=clientAuth\nsubjectAltName=%s\n" % ",".join(san))
        out = os.path.join(work, "cert.pem")
        openssl("x509", "-req", "-in", csr, "-CA", self.fx.ca.crt, "-CAkey", self.fx.ca.key,
                "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "1",
                "-extfile", ext, "-subj", "/CN=%s%s" % (user, "".join("/OU=" + g for g in groups)),
                "-out", out)
        with open(out) as f:
            cert = f.read()
        with open(self.fx.ca.crt) as f:
            ca = f.read()
        not_after = openssl("x509", "-noout", "-enddate", "-in", out).stdout.decode()
        return 201, {"certificate": cert, "ca": ca, "not_after": not_after.strip(),
                     "user": user, "groups": groups, "device_id": rec["device_id"],
                     "device_trust": self.trust}


# --- a scripted provider for what the real one never does --------------------------------

class FakeIdP:
    """Discovery, device authorization and a token endpoint answering from
    .token_replies (each a function of the form fields returning (status,
    body)). ID tokens are signed with the real provider's published key, so
    the stand-in issuer (configured with this issuer) verifies them."""

    def __init__(self, fx, op, interval=1, expires_in=600):
        self.op = op
        self.token_replies = []
        self.token_forms = []
        self.token_times = []
        self.device_times = []
        self.interval, self.expires_in = interval, expires_in
        self.iss_in_answers = False  # authorization_response_iss_parameter_supported
        outer = self

        class Handler(JSONHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    return self.reply(200, {
                        "issuer": outer.issuer,
                        "authorization_endpoint": outer.issuer + "/auth",
                        "token_endpoint": outer.issuer + "/token",
                        "device_authorization_endpoint": outer.issuer + "/device/auth",
                        "jwks_uri": outer.issuer + "/jwks",
                        "authorization_response_iss_parameter_supported":
                            outer.iss_in_answers})
                self.reply(404, {"error": "not found"})

            def do_POST(self):
                form = dict(urllib.parse.parse_qsl(self.body().decode()))
                if self.path == "/device/auth":
                    outer.device_times.append(time.monotonic())
                    return self.reply(200, {
                        "device_code": "device-code-1", "user_code": "WDJB-MJHT",
                        "verification_uri": outer.issuer + "/device",
                        "verification_uri_complete": outer.issuer + "/device?user_code=WDJB-MJHT",
                        "expires_in": outer.expires_in, "interval": outer.interval})
                if self.path == "/token":
                    outer.token_times.append(time.monotonic())
                    outer.token_forms.append(form)
                    if not outer.token_replies:
                        return self.reply(400, {"error": "authorization_pending"})
                    status, body = outer.token_replies.pop(0)(form)
                    return self.reply(status, body)
                self.reply(404, {"error": "not found"})

        self.server, self.issuer = https_server(fx, Handler, "fake-idp")

    def id_token(self, **claims):
        return self.op.sign(self.op.id_token_claims("alice", iss=self.issuer, **claims))

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --- running certgate login --------------------------------------------------------------

class Login:
    """certgate login as a child: its stdout and stderr read line by line as
    they come (so a test can act on the URL it prints)."""

    def __init__(self, args, env):
        self.start = time.monotonic()
        self.proc = subprocess.Popen([BIN, "login"] + [str(a) for a in args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self._read, args=(s, l), daemon=True)
                        for s, l in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()
        self.elapsed = None

    @staticmethod
    def _read(stream, lines):
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_line(self, pattern, timeout=30):
        """The first stderr line matching pattern (re.search): its match."""
        rx = re.compile(pattern)

        def found():
            for line in list(self.err):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None:
                for t in self.readers:
                    t.join(5)
                if not any(rx.search(line) for line in self.err):
                    raise AssertionError("certgate login exited %s before %r:\n%s\n%s" % (
                        self.proc.returncode, pattern, self.stdout, self.stderr))
            return None
        return wait_for(found, timeout, "certgate login to print %r" % pattern)

    def open_url(self):
        return self.wait_line(r"^Open (\S+)$").group(1)

    def finish(self, timeout=60):
        try:
            code = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("certgate login did not end:\n%s" % self.stderr)
        self.elapsed = time.monotonic() - self.start
        for t in self.readers:
            t.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def stdout(self):
        return "\n".join(self.out)

    @property
    def stderr(self):
        return "\n".join(self.err)


class LoginFx(Fixture):
    def __init__(self):
        super().__init__(with_postgres=True)
        self.pg.sql("CREATE ROLE alice LOGIN")
        # the provider's HTTPS from the harness CA: one --ca for issuer and provider
        op_cert = self.ca.server("op", dns=("localhost",), ips=("127.0.0.1",))
        self.op = OpenIDProvider(self.path("op"), tls=(op_cert.crt, op_cert.key, self.ca.crt))
        self.issuer = StandInIssuer(self, self.op)
        self.servers = [self.issuer]
        self.logins = []
        self.timings = {}
        # a fake xdg-open that records what it was asked to open
        self.bin = self.path("bin")
        os.makedirs(self.bin)
        with open(os.path.join(self.bin, "xdg-open"), "w") as f:
            f.write("#!/bin/sh\necho \"$@\" >> \"$XDG_OPEN_LOG\"\n")
        os.chmod(os.path.join(self.bin, "xdg-open"), 0o755)

    def env(self, home=None, display=False, **extra):
        """A clean environment: its own HOME, no proxy, no desktop unless
        display (then the fake xdg-open is first on PATH)."""
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
               and k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_CONFIG_HOME")}
        env["HOME"] = home or self.path(self.unique("home"))
        if display:
            env["DISPLAY"] = ":99"
            env["PATH"] = self.bin + ":" + env["PATH"]
            env["XDG_OPEN_LOG"] = self.path(self.unique("xdg-open") + ".log")
        env.update(extra)
        return env

    def login(self, *args, env=None, issuer=None, ca=True):
        argv = ["--issuer", (issuer or self.issuer).url] if issuer is not False else []
        if ca:
            argv += ["--ca", self.ca.crt]
        argv += list(args)
        lg = Login(argv, env or self.env())
        self.logins.append(lg)
        return lg

    def code_login(self, *args, user="alice", password="alice-password", **kw):
        """A whole code-flow login, the scripted browser signing in."""
        lg = self.login(*args, **kw)
        page = self.op.login_authorization_code(lg.open_url(), user, password)
        code = lg.finish()
        assert code == 0, "exit %s:\n%s\n%s" % (code, lg.stdout, lg.stderr)
        lg.page = page
        return lg

    def reap(self):
        for lg in self.logins:
            lg.kill()
        self.logins = []
        super().reap()

    def close(self):
        for s in self.servers:
            s.stop()
        self.op.close()
        if self.timings:
            print("# timings: " + ", ".join("%s %.2fs" % kv for kv in self.timings.items()))
        super().close()


def setup():
    return LoginFx()


def teardown(fx):
    fx.close()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read(path, binary=False):
    with open(path, "rb" if binary else "r") as f:
        return f.read()


def pubkey_of(*args):
    return openssl(*args).stdout


def query_of(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def plain_get(url):
    """GET on the loopback (no proxy): (status, body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10 * SLOW) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --- the code flow --------------------------------------------------------------------

def test_code_flow_end_to_end(fx):
    """Authorization code + PKCE S256 with a loopback redirect against the real
    provider; the browser opened (xdg-open) and the URL printed; the stand-in
    issuer sees a verified ID token for client certgate with this login's
    nonce, a self-signed P-256 CSR, a valid device proof and the platform;
    the files land in DIR with their modes; stdout says who you are."""
    d = fx.path("code")
    env = fx.env(display=True)
    lg = fx.code_login("--dir", d, env=env)
    fx.timings["code-flow login"] = lg.elapsed
    url = [line for line in lg.err if line.startswith("Open ")][0][5:]
    q = query_of(url)
    assert url.startswith(fx.op.discovery()["authorization_endpoint"] + "?"), url
    assert q["response_type"] == "code" and q["client_id"] == "certgate", q
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43, q
    assert q["scope"] == " ".join(SCOPES), q
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/callback", q["redirect_uri"]), q
    assert len(q["state"]) == 43 and len(q["nonce"]) == 43 and q["state"] != q["nonce"], q
    # the browser was asked to open exactly that URL
    assert read(env["XDG_OPEN_LOG"]).strip() == url
    # the user's browser got the closing page
    assert lg.page.status == 200 and "You can close this window" in lg.page.text, lg.page.text

    assert len(fx.issuer.requests) >= 1
    rec = fx.issuer.requests[-1]
    assert rec["authorization"].startswith("Bearer "), rec["authorization"]
    assert rec["token_ok"], rec["claims"]  # signature (openssl), iss, aud, exp
    assert rec["claims"]["aud"] == "certgate" and rec["claims"]["email"] == "alice@example.com"
    assert rec["claims"]["nonce"] == q["nonce"], rec["claims"]
    assert rec["csr_ok"] and rec["csr_p256"], rec
    assert rec["proof_ok"], rec
    assert set(rec["body"]) == {"csr", "device_key", "device_proof", "platform"}, rec["body"]
    assert rec["body"]["platform"].startswith(os.uname().sysname + " " + os.uname().release)
    assert 0 < len(rec["body"]["platform"]) <= 128
    assert "BEGIN PUBLIC KEY" in rec["body"]["device_key"]

    # the files, their modes, and keys that belong together
    assert mode(d) == 0o700
    files = {"login-key.pem": 0o600, "login-key.pk8": 0o600, "device-key.pem": 0o600,
             "login-cert.pem": 0o644, "ca.pem": 0o644, "login.json": 0o600}
    assert sorted(os.listdir(d)) == sorted(files), os.listdir(d)
    for name, m in files.items():
        assert mode(os.path.join(d, name)) == m, (name, oct(mode(os.path.join(d, name))))
    cert_pub = pubkey_of("x509", "-noout", "-pubkey", "-in", os.path.join(d, "login-cert.pem"))
    assert pubkey_of("pkey", "-pubout", "-in", os.path.join(d, "login-key.pem")) == cert_pub
    assert pubkey_of("pkey", "-pubout", "-inform", "DER",
                     "-in", os.path.join(d, "login-key.pk8")) == cert_pub
    assert read(os.path.join(d, "ca.pem")) == read(fx.ca.crt)
    openssl("verify", "-CAfile", os.path.join(d, "ca.pem"), os.path.join(d, "login-cert.pem"))
    device_pub = openssl("pkey", "-pubout", "-outform", "DER",
                         "-in", os.path.join(d, "device-key.pem")).stdout
    assert device_id_of(device_pub) == rec["device_id"]

    saved = json.loads(read(os.path.join(d, "login.json")))
    assert saved["issuer"] == fx.issuer.url and saved["issuer_ca"] == fx.ca.crt, saved
    assert saved["user"] == "alice@example.com" and saved["groups"] == ["dba", "staff"], saved
    assert saved["device_id"] == rec["device_id"] and saved["device_trust"] == "low", saved
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", saved["not_after"]), saved

    out = lg.stdout
    assert "Logged in at %s." % fx.issuer.url in out, out
    assert "user:    alice@example.com" in out and "groups:  dba, staff" in out, out
    assert "device:  %s" % rec["device_id"] in out and "trust:   low" in out, out
    assert re.search(r"^expires: \S+ \(in (23h5\dm|1d)\)$", out, re.M), out
    assert "files:   %s (" % d in out, out
    assert "made this machine's device key" in lg.stderr, lg.stderr


def test_device_key_once_and_last_login_defaults(fx):
    """A second login reuses the device key (same id, same file, 0600) with a
    fresh login key; with no --issuer and no --ca it logs in where the last
    login did; members of login.json it does not own (the coming "gateway")
    are kept. --no-browser: the URL printed, no browser started."""
    d = fx.path("twice")
    first = fx.code_login("--dir", d)
    device_pem = read(os.path.join(d, "device-key.pem"))
    key1 = read(os.path.join(d, "login-key.pem"))
    saved = json.loads(read(os.path.join(d, "login.json")))
    saved["gateway"] = "gw.example:8443"
    with open(os.path.join(d, "login.json"), "w") as f:
        json.dump(saved, f)
    env = fx.env(display=True)
    second = fx.code_login("--dir", d, "--no-browser", issuer=False, ca=False, env=env)
    assert not os.path.exists(env["XDG_OPEN_LOG"]), "--no-browser started a browser"
    assert read(os.path.join(d, "device-key.pem")) == device_pem
    assert mode(os.path.join(d, "device-key.pem")) == 0o600
    assert read(os.path.join(d, "login-key.pem")) != key1, "the login key was reused"
    ids = [r["device_id"] for r in fx.issuer.requests[-2:]]
    assert ids[0] == ids[1] and ids[0] is not None, ids
    assert "made this machine's device key" in first.stderr
    assert "made this machine's device key" not in second.stderr, second.stderr
    again = json.loads(read(os.path.join(d, "login.json")))
    assert again["gateway"] == "gw.example:8443", again
    assert again["issuer"] == fx.issuer.url and again["device_id"] == ids[0], again


def test_idp_denial(fx):
    """The user denies consent: the provider's error is printed on one line,
    exit 1, nothing asked of the issuer, no files."""
    d = fx.path("denied")
    n = len(fx.issuer.requests)
    lg = fx.login("--dir", d)
    page = fx.op.login_authorization_code(lg.open_url(), "alice", "alice-password",
                                          consent=False)
    assert lg.finish() == 1
    last = lg.err[-1]
    assert last.startswith("certgate login: the identity provider refused the sign-in: "
                           "access_denied"), lg.stderr
    assert "Sign-in failed" in page.text and "access_denied" in page.text, page.text
    assert len(fx.issuer.requests) == n
    assert not os.path.exists(os.path.join(d, "login-cert.pem"))


def test_callback_with_wrong_state_ignored(fx):
    """Answers at the loopback port that do not carry this login's state (a
    forged success, a forged denial, none at all) are answered 400 and
    ignored — with a warning — and the real sign-in still completes."""
    d = fx.path("state")
    lg = fx.login("--dir", d)
    url = lg.open_url()
    redirect = query_of(url)["redirect_uri"]
    for query in ("code=forged&state=wrong", "error=access_denied&state=wrong", "code=forged",
                  "code=forged&state=" + query_of(url)["state"][:-1]):
        status, body = plain_get(redirect + "?" + query)
        assert status == 400 and "state does not match" in body, (query, status, body)
    status, _ = plain_get(redirect.replace("/callback", "/other"))
    assert status == 404
    assert lg.proc.poll() is None, lg.stderr
    # each warning is printed as its answer goes out: they may trail the
    # answers a little (ASan, a loaded machine)
    wait_for(lambda: sum("ignored a sign-in answer with a wrong state" in line
                         for line in lg.err) == 4, 10, "the four warnings")
    page = fx.op.login_authorization_code(url, "alice", "alice-password")
    assert lg.finish() == 0, lg.stderr
    assert "Signed in" in page.text


def test_sign_in_timeout(fx):
    """Nobody signs in: --timeout ends the wait with a clear line, exit 1."""
    lg = fx.login("--dir", fx.path("timeout"), "--timeout", "1s")
    lg.open_url()
    assert lg.finish(timeout=30) == 1
    assert re.match(r"certgate login: no sign-in answer came back to "
                    r"http://127\.0\.0\.1:\d+/callback in time: run certgate login again$",
                    lg.err[-1]), lg.stderr


def test_issuer_refusal_printed(fx):
    """The issuer's {"error", "reason"} is printed as one line; exit 1; no files."""
    d = fx.path("refused")
    fx.issuer.refusal = (403, {"error": "forbidden", "reason": "user not allowed"})
    try:
        lg = fx.login("--dir", d)
        fx.op.login_authorization_code(lg.open_url(), "alice", "alice-password")
        assert lg.finish() == 1
    finally:
        fx.issuer.refusal = None
    assert lg.err[-1] == "certgate login: the issuer refused: user not allowed (HTTP 403 " \
                         "forbidden)", lg.stderr
    assert not os.path.exists(os.path.join(d, "login-cert.pem"))
    assert not os.path.exists(os.path.join(d, "login-key.pem"))


def test_https_verified_and_discovery_issuer_checked(fx):
    """Without --ca the issuer's certificate is not trusted (exit 1, curl's
    reason); a discovery document naming another issuer is refused."""
    lg = fx.login("--dir", fx.path("noca"), ca=False)
    assert lg.finish() == 1
    assert lg.err[-1].startswith("certgate login: cannot reach the issuer: GET %s/v1/login/"
                                 "config: SSL certificate problem" % fx.issuer.url), lg.stderr
    # the config names the provider as https://localhost:PORT; its discovery
    # document says https://127.0.0.1:PORT
    other = StandInIssuer(fx, fx.op, idp_issuer=fx.op.issuer.replace("127.0.0.1", "localhost"))
    fx.servers.append(other)
    lg = fx.login("--dir", fx.path("mixup"), issuer=other)
    assert lg.finish() == 1
    assert "names the issuer \"%s\", not \"%s\"" % (fx.op.issuer, other.idp_issuer) \
        in lg.err[-1], lg.stderr
    assert not other.requests


def test_nonce_pkce_and_mixup_with_scripted_provider(fx):
    """With a scripted provider: the token request carries the PKCE verifier
    of the challenge sent (S256); an ID token with another nonce is refused;
    a callback naming another issuer (RFC 9207 iss) is refused. Neither
    reaches the issuer."""
    fake = FakeIdP(fx, fx.op)
    fx.servers.append(fake)
    issuer = StandInIssuer(fx, fx.op, idp_issuer=fake.issuer)
    fx.servers.append(issuer)
    fake.token_replies.append(lambda form: (200, {"access_token": "x", "token_type": "Bearer",
                                                  "id_token": fake.id_token(nonce="not-yours")}))
    lg = fx.login("--dir", fx.path("nonce"), issuer=issuer)
    q = query_of(lg.open_url())
    status, body = plain_get("%s?code=C1&state=%s" % (q["redirect_uri"], q["state"]))
    assert status == 200 and "Signed in" in body, body
    assert lg.finish() == 1
    assert "nonce is not this login's" in lg.err[-1], lg.stderr
    form = fake.token_forms[-1]
    assert form["grant_type"] == "authorization_code" and form["code"] == "C1", form
    assert form["redirect_uri"] == q["redirect_uri"] and form["client_id"] == "certgate", form
    assert b64url(hashlib.sha256(form["code_verifier"].encode()).digest()) \
        == q["code_challenge"], form
    # the same with the right nonce goes through: the check is not blanket
    lg = fx.login("--dir", fx.path("nonce-ok"), issuer=issuer)
    q = query_of(lg.open_url())
    fake.token_replies.append(lambda form: (200, {"id_token": fake.id_token(nonce=q["nonce"])}))
    plain_get("%s?code=C2&state=%s" % (q["redirect_uri"], q["state"]))
    assert lg.finish() == 0, lg.stderr
    assert len(issuer.requests) == 1 and issuer.requests[0]["token_ok"]
    # mix-up: the right state, another issuer
    lg = fx.login("--dir", fx.path("mixup-iss"), issuer=issuer)
    q = query_of(lg.open_url())
    status, _ = plain_get("%s?code=C3&state=%s&iss=%s" % (
        q["redirect_uri"], q["state"], urllib.parse.quote("https://evil.example", safe="")))
    assert status == 400
    assert lg.finish() == 1
    assert "names the issuer \"https://evil.example\"" in lg.err[-1], lg.stderr
    assert len(issuer.requests) == 1
    # a provider that says every answer carries iss (RFC 9207): an answer
    # without one is not its (before, it was taken)
    fake.iss_in_answers = True
    lg = fx.login("--dir", fx.path("mixup-no-iss"), issuer=issuer)
    q = query_of(lg.open_url())
    status, _ = plain_get("%s?code=C4&state=%s" % (q["redirect_uri"], q["state"]))
    assert status == 400
    assert lg.finish() == 1
    assert "names no issuer" in lg.err[-1], lg.stderr
    assert len(issuer.requests) == 1
    # and with its iss it goes through
    lg = fx.login("--dir", fx.path("iss-ok"), issuer=issuer)
    q = query_of(lg.open_url())
    fake.token_replies.append(lambda form: (200, {"id_token": fake.id_token(nonce=q["nonce"])}))
    status, _ = plain_get("%s?code=C5&state=%s&iss=%s" % (
        q["redirect_uri"], q["state"], urllib.parse.quote(fake.issuer, safe="")))
    assert status == 200
    assert lg.finish() == 0, lg.stderr
    assert len(issuer.requests) == 2


# --- the device grant ---------------------------------------------------------------------

def test_headless_device_flow(fx):
    """--headless against the real provider: the verification URL and user
    code printed, the user approves elsewhere, the login completes; a denial
    there ends it with a clear line."""
    d = fx.path("headless")
    lg = fx.login("--dir", d, "--headless")
    m = lg.wait_line(r"^To sign in, visit (\S+) and enter the code: (\S+)$")
    complete = lg.open_url()
    assert m.group(1) == fx.op.discovery()["device_authorization_endpoint"].replace(
        "/device/auth", "/device"), m.group(1)
    assert query_of(complete).get("user_code") == m.group(2), complete
    fx.op.approve_device(m.group(1), m.group(2), "alice", "alice-password")
    assert lg.finish() == 0, lg.stderr
    fx.timings["headless login"] = lg.elapsed
    rec = fx.issuer.requests[-1]
    assert rec["token_ok"] and rec["csr_ok"] and rec["proof_ok"], rec
    assert "user:    alice@example.com" in lg.stdout, lg.stdout
    assert os.path.exists(os.path.join(d, "login-cert.pem"))

    lg = fx.login("--dir", fx.path("headless-denied"), "--headless")
    m = lg.wait_line(r"^To sign in, visit (\S+) and enter the code: (\S+)$")
    fx.op.approve_device(m.group(1), m.group(2), "alice", "alice-password", consent=False)
    assert lg.finish() == 1
    assert lg.err[-1].startswith("certgate login: the sign-in was denied at the identity "
                                 "provider (access_denied"), lg.stderr


def test_device_flow_pacing_and_endings(fx):
    """With a scripted provider: the interval is honoured, slow_down adds 5 s
    to it; expired_token and access_denied end the login with their own
    lines."""
    fake = FakeIdP(fx, fx.op, interval=1)
    fx.servers.append(fake)
    issuer = StandInIssuer(fx, fx.op, idp_issuer=fake.issuer)
    fx.servers.append(issuer)
    fake.token_replies += [lambda f: (400, {"error": "authorization_pending"}),
                           lambda f: (400, {"error": "slow_down"}),
                           lambda f: (200, {"id_token": fake.id_token()})]
    lg = fx.login("--dir", fx.path("pacing"), "--headless", issuer=issuer)
    assert lg.wait_line(r"visit (\S+) and enter the code: (\S+)$").groups() == (
        fake.issuer + "/device", "WDJB-MJHT")
    assert lg.open_url() == fake.issuer + "/device?user_code=WDJB-MJHT"
    assert lg.finish() == 0, lg.stderr
    t = [fake.device_times[-1]] + fake.token_times[-3:]
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert gaps[0] >= 0.95 and gaps[1] >= 0.95, gaps   # interval 1 s
    assert gaps[2] >= 5.95, gaps                       # 1 s + 5 s after slow_down
    form = fake.token_forms[-1]
    assert form == {"grant_type": DEVICE_GRANT, "device_code": "device-code-1",
                    "client_id": "certgate"}, form
    assert issuer.requests[-1]["token_ok"]

    for error, line in (("expired_token", "the code expired before the sign-in was approved: "
                                          "run certgate login --headless again"),
                        ("access_denied", "the sign-in was denied at the identity provider "
                                          "(access_denied: no)")):
        fake.token_replies.append(lambda f, e=error: (400, {"error": e,
                                                            "error_description": "no"}))
        lg = fx.login("--dir", fx.path(error), "--headless", issuer=issuer)
        assert lg.finish() == 1
        assert lg.err[-1] == "certgate login: " + line, lg.stderr
    # the device code's own expiry bounds the wait too
    fake.expires_in = 2
    lg = fx.login("--dir", fx.path("expires"), "--headless", issuer=issuer)
    assert lg.finish() == 1
    assert "the code expired before the sign-in was approved" in lg.err[-1], lg.stderr


# --- status -------------------------------------------------------------------------------

def status(*args, env=None):
    return certgate("status", *args, check=False, env=env)


def test_status(fx):
    """No certificate: exit 1 with the hint; a valid one: who and how long,
    exit 0; an expired one (certgate ca issue --backdate): exit 1; a key
    that does not match: exit 1; usage errors: 2."""
    d = fx.path("status")
    r = status("--dir", d)
    assert r.returncode == 1 and r.stderr == \
        "certgate status: no login certificate in %s: run certgate login\n" % d, r.stderr
    # the default folder: $XDG_CONFIG_HOME/certgate
    env = fx.env(XDG_CONFIG_HOME=fx.path("status-xdg"))
    r = status(env=env)
    assert r.returncode == 1 and "no login certificate in %s/certgate" % fx.path("status-xdg") \
        in r.stderr, r.stderr

    fx.code_login("--dir", d)
    r = status("--dir", d)
    assert r.returncode == 0, r.stderr
    device = json.loads(read(os.path.join(d, "login.json")))["device_id"]
    lines = r.stdout.splitlines()
    assert lines[0] == "issuer:  " + fx.issuer.url, r.stdout
    assert lines[1:5] == ["user:    alice@example.com", "groups:  dba, staff",
                          "device:  " + device, "trust:   low"], r.stdout
    assert re.fullmatch(r"expires: \S+Z \(in (23h5\dm|1d)\)", lines[5]), r.stdout
    assert lines[6] == "files:   " + d, r.stdout

    # expired: a certificate that ended an hour ago
    old = fx.ca.issue("expired", "alice@example.com", groups=["dba"], ttl="1h",
                      extra=["--backdate", "2h"])
    e = fx.path("status-expired")
    os.makedirs(e)
    shutil.copy(old.crt, os.path.join(e, "login-cert.pem"))
    shutil.copy(old.key, os.path.join(e, "login-key.pem"))
    r = status("--dir", e)
    assert r.returncode == 1, r.stdout
    assert re.search(r"^expires: \S+ \(expired 1h(\d+m)? ago\)$", r.stdout, re.M), r.stdout
    assert re.fullmatch(r"certgate status: the login certificate expired \S+ ago: run "
                        r"certgate login\n", r.stderr), r.stderr
    assert "device:  (none)" in r.stdout and "trust:   (none)" in r.stdout, r.stdout
    # a key that is not the certificate's
    other = fx.ca.issue("other", "bob@example.com")
    shutil.copy(other.key, os.path.join(e, "login-key.pem"))
    r = status("--dir", e)
    assert r.returncode == 1 and "is not the key of" in r.stderr, r.stderr
    assert status("--dir").returncode == 2
    assert status("--bogus").returncode == 2
    assert status("extra").returncode == 2


# --- connect's defaults ----------------------------------------------------------------------

class EnvProcess(Process):
    """harness.Process with an environment of its own."""

    def __init__(self, args, log_path, env):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([BIN] + [str(a) for a in args], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)


def test_connect_uses_the_login_folder(fx):
    """certgate login with XDG_CONFIG_HOME (no --dir), then certgate connect
    with no --cert/--key/--ca: it says which files it uses, and psql works
    through it with the login certificate (PostgreSQL verifies it inside the
    tunnel; the gateway audits the device id the issuer derived)."""
    xdg = fx.path("xdg")
    env = fx.env(XDG_CONFIG_HOME=xdg)
    lg = fx.code_login(env=env)
    d = os.path.join(xdg, "certgate")
    assert "files:   %s (" % d in lg.stdout, lg.stdout
    device = json.loads(read(os.path.join(d, "login.json")))["device_id"]
    gw = fx.gateway(fx.config(
        [{"name": "orders-db", "upstream": ["127.0.0.1:%d" % fx.pg.port]}],
        [{"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"],
          "min_trust": "low"}]))
    port = free_port()
    conn = EnvProcess(["connect", "--gateway", "localhost:%d" % gw.ports()[0], "--service",
                       "orders-db", "--listen", "127.0.0.1:%d" % port],
                      fx.path(fx.unique("connect") + ".log"), env)
    fx.procs.append(conn)
    wait_for(lambda: "listening on" in conn.output() or not conn.alive(), 10, "connect")
    assert conn.alive(), conn.output()
    assert "login certificate %s/login-cert.pem, key %s/login-key.pem, CA %s/ca.pem" \
        % (d, d, d) in conn.output(), conn.output()

    class Cert:
        crt = os.path.join(d, "login-cert.pem")
        key = os.path.join(d, "login-key.pem")
    r = psql(port, Cert, os.path.join(d, "ca.pem"), "select current_user")
    assert r.returncode == 0 and r.stdout.strip() == "alice", r.stderr
    start = gw.wait_event("session.start", user="alice@example.com")
    assert start["device_id"] == device and start["device_trust"] == "low", start
    conn.signal(signal.SIGTERM)
    assert conn.wait(15) == 0, conn.output()


def test_connect_defaults_refused_clearly(fx):
    """No login certificate in the folder: exit 1 saying so; --cert without
    --key: usage error."""
    empty = fx.path("connect-empty")
    os.makedirs(empty)
    base = ["connect", "--gateway", "localhost:1", "--service", "s", "--listen",
            "127.0.0.1:%d" % free_port()]
    r = certgate(*(base + ["--dir", empty]), check=False)
    assert r.returncode == 1 and r.stderr == \
        "certgate connect: no login certificate in %s: run certgate login\n" % empty, r.stderr
    env = fx.env(XDG_CONFIG_HOME=fx.path("connect-xdg"))
    r = certgate(*base, check=False, env=env)
    assert r.returncode == 1 and "no login certificate in %s/certgate" \
        % fx.path("connect-xdg") in r.stderr, r.stderr
    r = certgate(*(base + ["--cert", fx.gateway_cert.crt]), check=False)
    assert r.returncode == 2 and "--cert with --key is required" in r.stderr, r.stderr


# --- usage --------------------------------------------------------------------------------

def test_usage_errors(fx):
    d = fx.path("usage")
    for args, code, text in (
            ([], 2, "--issuer is required (no earlier login in %s)" % d),
            (["--issuer", "http://127.0.0.1:1"], 2, "expected an https:// URL"),
            (["--issuer", fx.issuer.url, "--timeout", "soon"], 2, "--timeout soon"),
            (["--issuer", fx.issuer.url, "--timeout", "0"], 2, "--timeout 0"),
            (["--issuer", fx.issuer.url, "--ca", fx.path("missing.pem")], 1,
             "--ca %s: No such file or directory" % fx.path("missing.pem")),
            (["--issuer", fx.issuer.url, "surplus"], 2, "unexpected argument")):
        r = certgate("login", "--dir", d, *args, check=False, env=fx.env())
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and text in r.stderr, (args, r.stderr)
    assert certgate("login", "--bogus", check=False).returncode == 2
    assert certgate("login", "--help").stdout.startswith("usage: certgate login")
    assert certgate("status", "--help").stdout.startswith("usage: certgate status")


def scd_section(text, start):
    i = text.index(start)
    m = re.compile(r"^(## |# )", re.M).search(text, i + len(start))
    return text[i:m.start() if m else len(text)]


def test_man_page_documents_login_and_status(fx):
    """certgate(1) documents exactly the options login, status and connect
    list in --help (as test_deploy.py does for the other subcommands)."""
    man = read(os.path.join(SRC, "docs/man/certgate.1.scd"))
    for cmd in ("login", "status", "connect"):
        opts = set(re.findall(r"--[a-z][a-z0-9-]*", certgate(cmd, "--help").stdout)) - {"--help"}
        documented = set(re.findall(r"--[a-z][a-z0-9-]*",
                                    scd_section(man, "## certgate %s" % cmd))) - {"--help"}
        assert opts == documented, (cmd, sorted(opts ^ documented))
        assert "*certgate %s*" % cmd in man


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
