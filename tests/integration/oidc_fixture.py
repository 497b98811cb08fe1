"""A real OpenID Provider for the login tests, and the helpers that drive it.

OpenIDProvider starts tests/oidc/provider.js: panva's oidc-provider (an
OpenID Certified implementation) on loopback HTTPS, with signing keys, TLS
certificate, clients and accounts all made at run time in the test's folder.
The test knows the private signing keys, so it can also forge tokens
(tests/oidc/forge.js, with `jose`, kept running as a co-process) for the
hostile-token tests.

A scripted browser (Browser: urllib, a cookie jar, html.parser) plays the
user: it follows the provider's redirects, fills in the login form, answers
the consent form, and finally follows the redirect to the client's loopback
redirect_uri, so a client's local callback server (certgate login's, or
PublicClient's here) receives the code. approve_device does the same for
the device authorization grant (RFC 8628).

PublicClient is a tiny OpenID Connect public client (authorization code +
PKCE S256 with a loopback redirect, state and nonce checked; device grant):
it proves the provider works, and gives tests genuine ID tokens without
certgate login.

Standard library only; the npm packages are installed by tests/oidc/setup
(called once per process by the first OpenIDProvider). Needs nodejs >= 18.19,
npm (for the setup) and openssl. Nothing waits a fixed time: readiness is the
provider's "listening on" line, polled.
"""

import base64
import hashlib
import html.parser
import http.cookiejar
import http.server
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import SLOW, wait_for

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OIDC_DIR = os.path.join(TESTS_DIR, "oidc")
NODE = os.environ.get("CERTGATE_NODE", "node")

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

# login -> password and the claims the provider vouches for. The last three
# are the ID tokens a careful issuer refuses, produced by the real provider.
DEFAULT_ACCOUNTS = [
    {"login": "alice", "password": "alice-password",
     "claims": {"email": "alice@example.com", "email_verified": True, "name": "Alice Example",
                "groups": ["dba", "staff"]}},
    {"login": "bob", "password": "bob-password",
     "claims": {"email": "bob@example.com", "email_verified": True, "name": "Bob Example",
                "groups": ["analysts"]}},
    {"login": "carol", "password": "carol-password",
     "claims": {"email": "carol@contractor.example", "email_verified": True,
                "name": "Carol Contractor", "groups": []}},
    {"login": "unverified", "password": "unverified-password",
     "claims": {"email": "unverified@example.com", "email_verified": False,
                "groups": ["staff"]}},
    {"login": "noemail", "password": "noemail-password",
     "claims": {"name": "No Email", "groups": ["staff"]}},
    {"login": "badgroups", "password": "badgroups-password",
     "claims": {"email": "badgroups@example.com", "email_verified": True, "groups": "dba"}},
]

# Public clients (token_endpoint_auth_method none) of application_type
# "native": oidc-provider then accepts a registered loopback redirect URI
# (http://127.0.0.1/callback) on any port, as RFC 8252 section 7.3 asks.
# One client per ID token algorithm; "other-app" is someone else's client
# (a token for it must not open certgate).
_LOOPBACK = ["http://127.0.0.1/callback", "http://localhost/callback", "http://[::1]/callback"]


def _public_client(client_id, alg):
    return {
        "client_id": client_id,
        "client_name": client_id,
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "redirect_uris": list(_LOOPBACK),
        "grant_types": ["authorization_code", DEVICE_GRANT],
        "response_types": ["code"],
        "id_token_signed_response_alg": alg,
    }


DEFAULT_CLIENTS = [
    _public_client("certgate", "RS256"),
    _public_client("certgate-es256", "ES256"),
    _public_client("certgate-eddsa", "EdDSA"),
    _public_client("other-app", "RS256"),
]

# name, kty, published in the provider's JWKS. The provider signs with the
# first published key of the type an algorithm needs. The rogue keys are
# never published: tokens signed with them must be refused (unknown kid, or
# a known kid with the wrong key).
DEFAULT_KEYS = [
    ("rsa", "RSA", True),
    ("ec", "EC", True),
    ("ed", "OKP", True),
    ("rogue-rsa", "RSA", False),
    ("rogue-ec", "EC", False),
]

_setup_done = False
_setup_lock = threading.Lock()


def setup_node_modules():
    """Runs tests/oidc/setup (npm ci from the lockfile; instant when already done), once."""
    global _setup_done
    with _setup_lock:
        if _setup_done:
            return
        proc = subprocess.run([os.path.join(OIDC_DIR, "setup")], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise RuntimeError("tests/oidc/setup failed (%d): %s%s"
                               % (proc.returncode, proc.stdout, proc.stderr))
        _setup_done = True


def b64url(data):
    """base64url without padding, of bytes (or of a str's UTF-8)."""
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_jwt(token):
    """(header, payload, signature bytes) of a compact JWS, nothing verified."""
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), b64url_decode(s)


def _json_bytes(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class _Forger:
    """tests/oidc/forge.js serve, a co-process: keys and tokens without a node
    start each. It ends when its stdin does (close(), or this process's end)."""

    def __init__(self, log_path):
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen([NODE, os.path.join(OIDC_DIR, "forge.js"), "serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, cwd=OIDC_DIR)
        self.lock = threading.Lock()

    def __call__(self, mode, data):
        with self.lock:
            self.proc.stdin.write(json.dumps({"mode": mode, "input": data}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("forge.js exited (%s)" % self.proc.poll())
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError("forge.js %s: %s" % (mode, answer["error"]))
        return answer["result"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def _openssl(*args, cwd=None):
    proc = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), proc.stderr))
    return proc.stdout


def make_tls(folder, names=("localhost",), ips=("127.0.0.1", "::1")):
    """A throwaway CA and a server certificate (ECDSA P-256) for the provider,
    with openssl. Returns (cert, key, ca_file) paths."""
    os.makedirs(folder, exist_ok=True)
    ca_crt, ca_key = os.path.join(folder, "ca.crt"), os.path.join(folder, "ca.key")
    crt, key = os.path.join(folder, "server.crt"), os.path.join(folder, "server.key")
    csr, ext = os.path.join(folder, "server.csr"), os.path.join(folder, "server.ext")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=certgate test IdP CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=%s" % (names[0] if names else ips[0]))
    san = ["DNS:%s" % n for n in names] + ["IP:%s" % ip for ip in ips]
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid\n"
                "subjectAltName=%s\n" % ",".join(san))
    _openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-set_serial",
             str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-extfile", ext, "-out", crt)
    for path in (ca_key, key):
        os.chmod(path, 0o600)
    return crt, key, ca_crt


class OIDCError(AssertionError):
    """The provider refused, or a flow did not end where it should."""


class LoginFailed(OIDCError):
    """The provider's login form came back: wrong login or password."""


class Response:
    """What the scripted browser got: status, final url, headers, body (str)."""

    def __init__(self, status, url, headers, body):
        self.status = status
        self.url = url
        self.headers = headers
        self.body = body

    @property
    def text(self):
        """The page's visible text, whitespace folded."""
        return _Page(self.body).text

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %s>" % (self.status, self.url)


class _Page(html.parser.HTMLParser):
    """Forms of an HTML page: [{"id", "action", "method", "inputs": [(name,
    type, value)], "buttons": [(name, value)]}], and its text. Inputs and
    buttons outside a form with form="ID" are attached to that form."""

    def __init__(self, body):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self.title = ""
        self._text = []
        self._form = None
        self._skip = 0
        self._in_title = False
        self._orphans = []
        self.feed(body or "")
        self.close()
        by_id = {f["id"]: f for f in self.forms if f["id"]}
        for owner, kind, item in self._orphans:
            if owner in by_id:
                by_id[owner][kind].append(item)

    @property
    def text(self):
        return " ".join(" ".join(self._text).split())

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag in ("style", "script"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag == "form":
            self._form = {"id": a.get("id", ""), "action": a.get("action", ""),
                          "method": a.get("method", "get").upper(), "inputs": [], "buttons": []}
            self.forms.append(self._form)
        elif tag in ("input", "button"):
            kind = (a.get("type") or ("submit" if tag == "button" else "text")).lower()
            if kind == "submit":
                if "name" not in a:
                    return
                item, bucket = (a["name"], a.get("value", "")), "buttons"
            else:
                if "name" not in a:
                    return
                item, bucket = (a["name"], kind, a.get("value", "")), "inputs"
            if "form" in a:
                self._orphans.append((a["form"], bucket, item))
            elif self._form is not None:
                self._form[bucket].append(item)

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag == "form":
            self._form = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self._text.append(data)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _origin(url):
    u = urllib.parse.urlsplit(url)
    return (u.scheme, u.hostname, u.port or {"http": 80, "https": 443}.get(u.scheme))


class Browser:
    """A scripted browser: its own cookie jar (one user's session at the
    provider), HTTPS verified against ca_file, no proxy, redirects followed
    one by one by run()."""

    def __init__(self, ca_file, timeout=10):
        self.ssl = ssl.create_default_context(cafile=ca_file)
        self.cookies = http.cookiejar.CookieJar()
        self.timeout = timeout * SLOW
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.ssl),
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect())
        self.history = []

    def request(self, method, url, fields=None, headers=None):
        """One HTTP request (no redirect followed); any status is returned."""
        data = None
        hdrs = {"User-Agent": "certgate-tests-browser", "Accept": "text/html,*/*"}
        hdrs.update(headers or {})
        if fields is not None:
            data = urllib.parse.urlencode(fields).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            resp = self.opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            resp = e
        with resp:
            body = resp.read().decode("utf-8", "replace")
            r = Response(resp.status if hasattr(resp, "status") else resp.code, url,
                         dict(resp.headers), body)
        self.history.append((method, url, r.status))
        return r

    def run(self, url, fill, consent=True, max_steps=30):
        """Follows redirects and submits the provider's forms from url on:
        inputs named in `fill` get those values (login, password, user_code),
        hidden inputs are kept, consent chooses Continue or Deny/Abort.
        Ends at a redirect leaving the provider's origin (followed once: that
        is the client's redirect_uri; its Response is returned) or at a page
        with no form (returned). Raises LoginFailed if the login form comes
        back, OIDCError on an error page or a loop."""
        home = _origin(url)
        method, fields, asked = "GET", None, set()
        for _ in range(max_steps):
            r = self.request(method, url, fields)
            if r.status in (301, 302, 303, 307, 308):
                location = r.headers.get("Location") or r.headers.get("location")
                if not location:
                    raise OIDCError("redirect without Location at %s" % url)
                url = urllib.parse.urljoin(url, location)
                method, fields = "GET", None
                if _origin(url) != home:
                    final = self.request("GET", url)
                    final.redirect_uri = url
                    return final
                continue
            page = _Page(r.body)
            if not page.forms:
                if r.status >= 400:
                    raise OIDCError("HTTP %d at %s: %s" % (r.status, url, page.text))
                return r
            form = self._choose(page.forms, consent)
            # a form asking the user something already answered: refused
            # (login, password) or ended (user_code: wrong, or aborted)
            question = tuple(sorted(n for n, t, _ in form["inputs"] if t != "hidden"))
            if question and question in asked:
                if any(t == "password" for _, t, _ in form["inputs"]):
                    raise LoginFailed("login refused at %s: %s" % (url, page.text))
                if not consent:
                    return r
                raise OIDCError("HTTP %d at %s: %s" % (r.status, url, page.text))
            asked.add(question)
            if r.status >= 400 and not question:
                raise OIDCError("HTTP %d at %s: %s" % (r.status, url, page.text))
            fields = []
            for name, kind, value in form["inputs"]:
                if name in fill and fill[name] is not None and (kind != "hidden" or not value):
                    value = fill[name]
                fields.append((name, value))
            if not consent:
                fields += [(n, v) for n, v in form["buttons"] if n == "abort"]
            method = form["method"] if form["method"] in ("GET", "POST") else "POST"
            target = urllib.parse.urljoin(url, form["action"] or url)
            if method == "GET":
                target = target.split("?")[0] + "?" + urllib.parse.urlencode(fields)
                fields = None
            url = target
        raise OIDCError("no end after %d steps: %s" % (max_steps, self.history))

    @staticmethod
    def _choose(forms, consent):
        def is_deny(f):
            return f["id"] == "deny" or f["action"].rstrip("/").endswith("/abort")
        if not consent:
            deny = [f for f in forms if is_deny(f)]
            if deny:
                return deny[0]
        usable = [f for f in forms if not is_deny(f)]
        return (usable or forms)[0]


class LoopbackServer(http.server.HTTPServer):
    """A client's loopback redirect_uri listener (host 127.0.0.1 or ::1, a free
    port): .queries gets (path, query dict) of each request; it answers a
    small page. stop() when done."""

    def __init__(self, host="127.0.0.1", port=0):
        outer = self
        self.queries = []
        if ":" in host:
            self.address_family = socket.AF_INET6

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                outer.queries.append((u.path, dict(urllib.parse.parse_qsl(u.query))))
                body = b"<html><body><p>Signed in: you may close this window.</p></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__((host, port), Handler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()


class OpenIDProvider:
    """tests/oidc/provider.js in folder (made if missing): issuer
    https://127.0.0.1:PORT (or issuer_host), its HTTPS certificate from a
    fresh openssl CA (or tls=(cert, key, ca_file), e.g. from certgate's CA),
    signing keys from DEFAULT_KEYS (or keys=[(name, kty, published), ...]),
    clients and accounts as in DEFAULT_CLIENTS / DEFAULT_ACCOUNTS. ttl:
    oidc-provider lifetimes in seconds, e.g. {"IdToken": 60}."""

    def __init__(self, folder, accounts=None, clients=None, keys=None, issuer_host="127.0.0.1",
                 tls=None, ttl=None, start=True):
        setup_node_modules()
        self.dir = folder
        os.makedirs(folder, exist_ok=True)
        self.accounts = [dict(a) for a in (accounts if accounts is not None else DEFAULT_ACCOUNTS)]
        self.clients = [dict(c) for c in (clients if clients is not None else DEFAULT_CLIENTS)]
        self.issuer_host = issuer_host
        self.ttl = dict(ttl or {})
        if tls is None:
            tls = make_tls(os.path.join(folder, "tls"))
        self.cert, self.key, self.ca_file = tls
        self._forge = _Forger(os.path.join(folder, "forge.log"))
        self.keys = {}
        specs = list(keys if keys is not None else DEFAULT_KEYS)
        made = self._forge("keygen", [{"kty": kty, "kid": "%s-%s" % (name, secrets.token_hex(4))}
                                      for name, kty, _ in specs])
        for (name, kty, published), key in zip(specs, made):
            self.keys[name] = {"jwk": key["jwk"], "public_pem": key["public_pem"],
                               "published": published}
        self.config_path = os.path.join(folder, "provider.json")
        self.log_path = os.path.join(folder, "provider.log")
        self.port = 0
        self.issuer = None
        self.proc = None
        self._disco = None
        if start:
            self.start()

    # --- process -------------------------------------------------------------------

    def write_config(self):
        config = {
            "host": "127.0.0.1",
            "port": self.port,
            "issuer_host": self.issuer_host,
            "tls": {"cert": self.cert, "key": self.key},
            "jwks": {"keys": [k["jwk"] for k in self.keys.values() if k["published"]]},
            "clients": self.clients,
            "accounts": self.accounts,
            "ttl": self.ttl,
        }
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.config_path)

    def start(self):
        """Starts the provider (on the same port as before, after a stop) and
        waits for its "listening on" line."""
        self.write_config()
        self._log = open(self.log_path, "a")
        start_at = self._log.tell()
        # stdin stays open as a pipe: if this process dies, the provider sees
        # its end and exits (--exit-with-stdin), so no node is left behind
        self.proc = subprocess.Popen([NODE, os.path.join(OIDC_DIR, "provider.js"), self.config_path,
                                      "--exit-with-stdin"], stdin=subprocess.PIPE,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=OIDC_DIR)

        def ready():
            with open(self.log_path) as f:
                f.seek(start_at)
                for line in f:
                    if line.startswith("listening on "):
                        return line.split()[2]
            if self.proc.poll() is not None:
                raise AssertionError("provider.js exited (%s): %s"
                                     % (self.proc.returncode, self.output()[-4000:]))
            return None
        self.issuer = wait_for(ready, 30, "the OpenID Provider to listen")
        self.port = int(self.issuer.rsplit(":", 1)[1])
        self._disco = None
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def output(self):
        """provider.log: one line per request, and any server error."""
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        """SIGTERM; returns the exit code (0: a clean exit)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # after a pause()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin:
            self.proc.stdin.close()
        self._log.close()
        return self.proc.returncode

    def pause(self):
        """SIGSTOP: the provider still accepts connections (the kernel does)
        but answers nothing: a hung identity provider."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT after pause()."""
        self.proc.send_signal(signal.SIGCONT)

    def requests(self, path=None):
        """The requests the provider answered so far, from its log:
        [(method, path, status)], optionally only those to path (e.g. "/jwks")."""
        out = []
        for line in self.output().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].isupper() and parts[1].startswith("/") \
                    and parts[2].isdigit():
                if path is None or parts[1] == path:
                    out.append((parts[0], parts[1], int(parts[2])))
        return out

    def close(self):
        """stop() and end the forge.js co-process (forge() works until then)."""
        self.stop()
        self._forge.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def restart(self):
        """stop() then start() on the same port: picks up add_key(), new
        accounts or clients. Sessions, grants and codes are forgotten."""
        self.stop()
        return self.start()

    def add_key(self, name, kty="RSA", published=True, first=False):
        """A new signing key (in effect at the next restart()); first=True puts it
        ahead of the others, so the provider signs with it (a key rotation)."""
        key = self._forge("keygen", {"kty": kty, "kid": "%s-%s" % (name, secrets.token_hex(4))})
        entry = {"jwk": key["jwk"], "public_pem": key["public_pem"], "published": published}
        if first:
            self.keys = dict([(name, entry)] + [(k, v) for k, v in self.keys.items() if k != name])
        else:
            self.keys[name] = entry
        return entry

    # --- endpoints -----------------------------------------------------------------

    def url(self, path=""):
        return self.issuer + path

    def browser(self):
        """A new scripted browser trusting the provider's CA (a new user session)."""
        return Browser(self.ca_file)

    def get_json(self, url):
        r = self.browser().request("GET", url, headers={"Accept": "application/json"})
        if r.status != 200:
            raise OIDCError("GET %s: HTTP %d %s" % (url, r.status, r.body[:500]))
        return r.json()

    def post_form(self, url, fields):
        """POST a form; returns (status, parsed JSON body)."""
        r = self.browser().request("POST", url, fields, headers={"Accept": "application/json"})
        return r.status, r.json()

    def discovery(self):
        """{issuer}/.well-known/openid-configuration (cached until restart)."""
        if self._disco is None:
            self._disco = self.get_json(self.url("/.well-known/openid-configuration"))
        return self._disco

    def jwks(self):
        """The published JWKS (public keys), fetched from jwks_uri."""
        return self.get_json(self.discovery()["jwks_uri"])

    def client(self, client_id="certgate", **kw):
        """A PublicClient of this provider."""
        return PublicClient(self, client_id, **kw)

    # --- the user at the provider --------------------------------------------------

    def login_authorization_code(self, auth_url, login, password, consent=True, browser=None):
        """Plays the user for an authorization request URL (as certgate login
        prints it): signs in, consents (or denies), and follows the redirect to
        the client's loopback redirect_uri, which receives code and state (or
        an error). Returns that last Response (.redirect_uri: the full URL)."""
        b = browser or self.browser()
        r = b.run(auth_url, {"login": login, "password": password}, consent=consent)
        if not hasattr(r, "redirect_uri"):
            raise OIDCError("the provider did not redirect to the client: HTTP %d %s: %s"
                            % (r.status, r.url, r.text))
        return r

    def approve_device(self, verification_uri, user_code, login, password, consent=True,
                       browser=None):
        """Plays the user of the device grant: opens verification_uri (or
        verification_uri_complete with user_code None), enters user_code,
        confirms, signs in, consents (or denies). Returns the last page; raises
        OIDCError unless it is the success page (when consenting)."""
        b = browser or self.browser()
        r = b.run(verification_uri, {"user_code": user_code, "login": login, "password": password},
                  consent=consent)
        if consent and "Sign-in success" not in r.text:
            raise OIDCError("device approval did not succeed: HTTP %d %s: %s"
                            % (r.status, r.url, r.text))
        return r

    # --- tokens made by the test ----------------------------------------------------

    def public_pem(self, name="rsa"):
        """The SPKI PEM of a signing key's public part (e.g. the HMAC secret of a
        key-confusion token)."""
        return self.keys[name]["public_pem"]

    def jwk(self, name="rsa", private=True):
        """A signing key as a JWK (private, or only its public members)."""
        jwk = dict(self.keys[name]["jwk"])
        if not private:
            for member in ("d", "p", "q", "dp", "dq", "qi"):
                jwk.pop(member, None)
        return jwk

    def id_token_claims(self, login="alice", client_id="certgate", lifetime=3600, now=None,
                        **overrides):
        """The claims of an ID token the provider would issue for an account:
        iss, sub, aud, iat, exp, auth_time, and the account's claims; overrides
        replace (a value None removes the claim)."""
        now = int(time.time() if now is None else now)
        account = next(a for a in self.accounts if a["login"] == login)
        claims = {"sub": login}
        claims.update(account.get("claims", {}))
        claims.update({"iss": self.issuer, "aud": client_id, "iat": now, "exp": now + lifetime,
                       "auth_time": now})
        for k, v in overrides.items():
            if v is None:
                claims.pop(k, None)
            else:
                claims[k] = v
        return claims

    def sign(self, payload, key="rsa", **header):
        """A token signed properly with a named key: header alg and kid from the
        key (header= entries override or add, e.g. kid="other")."""
        jwk = self.keys[key]["jwk"]
        h = {"alg": jwk["alg"], "kid": jwk["kid"], "typ": "JWT"}
        h.update(header)
        return self.forge(h, payload, key=key)

    def forge(self, header, payload, key=None, hmac_secret=None, tamper=None, signature=""):
        """A compact JWS with exactly this header (dict) and payload (dict, or
        the exact bytes). key: a key name or a private JWK, signing with
        header["alg"]; hmac_secret: str, HS* with it as the secret (e.g.
        public_pem()); neither: unsigned, `signature` as the third part (alg
        none). tamper: another payload (dict or bytes) put in place of the
        signed one after signing."""
        return self.forge_many([dict(header=header, payload=payload, key=key,
                                     hmac_secret=hmac_secret, tamper=tamper,
                                     signature=signature)])[0]

    def forge_many(self, requests):
        """forge() for several tokens in one round trip: a list of dicts of
        forge()'s arguments; returns the tokens in order."""
        wire = []
        for r in requests:
            w = {"header": r["header"],
                 "payload_b64": base64.b64encode(_json_bytes(r["payload"])).decode()}
            key = r.get("key")
            if key is not None:
                w["key"] = self.keys[key]["jwk"] if isinstance(key, str) else key
            if r.get("hmac_secret") is not None:
                w["hmac_secret"] = r["hmac_secret"]
            if r.get("tamper") is not None:
                w["tamper_payload_b64"] = base64.b64encode(_json_bytes(r["tamper"])).decode()
            if r.get("signature"):
                w["signature_b64url"] = r["signature"]
            wire.append(w)
        return self._forge("sign", wire)


class PublicClient:
    """A tiny OpenID Connect public client (what certgate login does):
    authorization code + PKCE (S256) with a loopback redirect_uri on a free
    port, state and nonce checked; and the device grant. Each method returns
    the token response with the ID token decoded: "id_token_header",
    "id_token_claims"."""

    def __init__(self, op, client_id="certgate", scopes=("openid", "email", "profile", "groups"),
                 redirect_host="127.0.0.1"):
        # redirect_host: 127.0.0.1, localhost or [::1] (the loopback names
        # DEFAULT_CLIENTS register)
        self.op = op
        self.client_id = client_id
        self.scopes = list(scopes)
        self.redirect_host = redirect_host

    def _token(self, fields):
        return self.op.post_form(self.op.discovery()["token_endpoint"], fields)

    def _decoded(self, token_response, nonce=None):
        header, claims, _ = decode_jwt(token_response["id_token"])
        if claims.get("iss") != self.op.issuer:
            raise OIDCError("ID token iss %r" % claims.get("iss"))
        aud = claims.get("aud")
        if self.client_id not in (aud if isinstance(aud, list) else [aud]):
            raise OIDCError("ID token aud %r" % aud)
        if nonce is not None and claims.get("nonce") != nonce:
            raise OIDCError("ID token nonce %r, sent %r" % (claims.get("nonce"), nonce))
        token_response["id_token_header"] = header
        token_response["id_token_claims"] = claims
        return token_response

    def authorization_url(self, redirect_uri, state, nonce, challenge, **extra):
        """The authorization request URL (code, PKCE S256 with challenge)."""
        params = {"response_type": "code", "client_id": self.client_id,
                  "redirect_uri": redirect_uri, "scope": " ".join(self.scopes), "state": state,
                  "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"}
        params.update(extra)
        return self.op.discovery()["authorization_endpoint"] + "?" + urllib.parse.urlencode(params)

    def authorization_code(self, login, password, consent=True, browser=None, **extra):
        """The whole flow as the user `login`; returns the token response.
        With consent=False returns the error the redirect_uri received
        ({"error": "access_denied", ...}). extra: more authorization
        request parameters (e.g. prompt="login")."""
        verifier = b64url(os.urandom(32))
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        state, nonce = b64url(os.urandom(16)), b64url(os.urandom(16))
        cb = LoopbackServer(self.redirect_host.strip("[]"))
        try:
            redirect_uri = "http://%s:%d/callback" % (self.redirect_host, cb.port)
            url = self.authorization_url(redirect_uri, state, nonce, challenge, **extra)
            self.op.login_authorization_code(url, login, password, consent=consent, browser=browser)
            if not cb.queries:
                raise OIDCError("the loopback redirect_uri received nothing")
            path, query = cb.queries[-1]
        finally:
            cb.stop()
        if path != "/callback":
            raise OIDCError("redirected to %s" % path)
        if query.get("state") != state:
            raise OIDCError("state %r, sent %r" % (query.get("state"), state))
        if query.get("iss") not in (None, self.op.issuer):
            raise OIDCError("iss %r in the authorization response" % query.get("iss"))
        if "error" in query:
            if consent:
                raise OIDCError("authorization error: %s" % query)
            return query
        status, body = self._token({"grant_type": "authorization_code", "code": query["code"],
                                    "redirect_uri": redirect_uri, "client_id": self.client_id,
                                    "code_verifier": verifier})
        if status != 200:
            raise OIDCError("token endpoint: HTTP %d %s" % (status, body))
        return self._decoded(body, nonce)

    def device_authorization(self):
        """Starts a device grant: the device authorization response (device_code,
        user_code, verification_uri, verification_uri_complete, interval, ...)."""
        status, body = self.op.post_form(self.op.discovery()["device_authorization_endpoint"],
                                         {"client_id": self.client_id,
                                          "scope": " ".join(self.scopes)})
        if status != 200:
            raise OIDCError("device authorization: HTTP %d %s" % (status, body))
        return body

    def poll_device(self, device_code):
        """One token request of the device grant: (status, body); 400
        {"error": "authorization_pending"} until the user approved."""
        return self._token({"grant_type": DEVICE_GRANT, "device_code": device_code,
                            "client_id": self.client_id})

    def device(self, login, password, consent=True, timeout=10):
        """The whole device grant as the user `login`, approved by the scripted
        browser, then polled to the token response (or to the error when
        consent=False)."""
        auth = self.device_authorization()
        self.op.approve_device(auth["verification_uri"], auth["user_code"], login, password,
                               consent=consent)
        result = {}

        def done():
            status, body = self.poll_device(auth["device_code"])
            if status == 400 and body.get("error") in ("authorization_pending", "slow_down"):
                return None
            result.update(status=status, body=body)
            return True
        wait_for(done, timeout, "the device grant's token", interval=0.05)
        if result["status"] != 200:
            if consent:
                raise OIDCError("device token: HTTP %d %s" % (result["status"], result["body"]))
            return result["body"]
        return self._decoded(result["body"])
