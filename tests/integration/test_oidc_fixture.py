"""The OpenID Provider fixture (oidc_fixture.py, tests/oidc/) proves itself,
with no certgate in the loop: discovery and JWKS over verified HTTPS, the
authorization code flow with PKCE and a loopback redirect on a free port
(state and nonce checked) by a tiny public client, the device grant, ID
tokens with email, email_verified and groups signed RS256, ES256 and EdDSA
(signatures checked with openssl, not with the library that made them), and
forge()'s hostile tokens, each of the shape its name says.

The login tests (issue 14) build on this: if this file fails, they can't
mean anything."""

import concurrent.futures
import hmac
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import run, wait_for
from oidc_fixture import LoginFailed, LoopbackServer, OIDCError, OpenIDProvider, \
    b64url, b64url_decode, decode_jwt

SCOPES = {"openid", "email", "profile", "groups"}


class Fx:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="certgate-oidc-")
        self.op = OpenIDProvider(os.path.join(self.dir, "op"))
        self.counter = 0

    def path(self, name):
        self.counter += 1
        return os.path.join(self.dir, "%d-%s" % (self.counter, name))

    def close(self):
        self.op.close()
        if not os.environ.get("CERTGATE_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("# kept %s" % self.dir)


def setup():
    return Fx()


def teardown(fx):
    fx.close()


# --- signature checks with openssl (independent of jose) -----------------------------

def _der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80:
        b = b"\0" + b
    return b"\x02" + bytes([len(b)]) + b


def verify_openssl(fx, token, public_pem):
    """True if openssl verifies the JWS signature of token with public_pem
    (RS256, ES256 or EdDSA, from the header)."""
    h, p, s = token.split(".")
    alg = json.loads(b64url_decode(h))["alg"]
    sig = b64url_decode(s)
    data, sigf, pub = fx.path("data"), fx.path("sig"), fx.path("pub.pem")
    with open(data, "wb") as f:
        f.write(("%s.%s" % (h, p)).encode())
    with open(pub, "w") as f:
        f.write(public_pem)
    if alg == "ES256":  # JWS: r || s; openssl wants the DER SEQUENCE
        body = _der_int(sig[:32]) + _der_int(sig[32:])
        sig = b"\x30" + bytes([len(body)]) + body
    with open(sigf, "wb") as f:
        f.write(sig)
    if alg in ("RS256", "ES256"):
        args = ["dgst", "-sha256", "-verify", pub, "-signature", sigf, data]
    elif alg == "EdDSA":
        args = ["pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", data,
                "-sigfile", sigf]
    else:
        raise AssertionError("no openssl check for %s" % alg)
    proc = subprocess.run(["openssl"] + args, capture_output=True, text=True)
    return proc.returncode == 0


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def kid_of(op, name):
    return op.keys[name]["jwk"]["kid"]


# --- discovery and keys -------------------------------------------------------------

def test_discovery(fx):
    op = fx.op
    assert op.issuer == "https://127.0.0.1:%d" % op.port, op.issuer
    d = op.discovery()
    assert d["issuer"] == op.issuer, d
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri",
                     "device_authorization_endpoint", "userinfo_endpoint"):
        assert d[endpoint].startswith(op.issuer + "/"), (endpoint, d[endpoint])
    assert d["code_challenge_methods_supported"] == ["S256"], d
    assert d["response_types_supported"] == ["code"], d
    assert {"authorization_code", "urn:ietf:params:oauth:grant-type:device_code"} \
        <= set(d["grant_types_supported"]), d
    assert {"RS256", "ES256", "EdDSA"} <= set(d["id_token_signing_alg_values_supported"]), d
    assert SCOPES <= set(d["scopes_supported"]), d
    assert {"sub", "email", "email_verified", "groups"} <= set(d["claims_supported"]), d
    assert "none" in d["token_endpoint_auth_methods_supported"], d


def test_https_is_verified(fx):
    """The provider's HTTPS verifies against the fixture's CA, as
    127.0.0.1 and as localhost (no name resolution needed: SNI and the
    check only), and not without that CA."""
    url = fx.op.url("/.well-known/openid-configuration")
    ctx = ssl.create_default_context(cafile=fx.op.ca_file)
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        assert r.status == 200
    with socket.create_connection(("127.0.0.1", fx.op.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.getpeercert()["subjectAltName"], tls.getpeercert()
    try:
        urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)
    except urllib.error.URLError as e:
        assert isinstance(e.reason, ssl.SSLCertVerificationError), e
    else:
        raise AssertionError("the provider's certificate verified without its CA")


def test_jwks(fx):
    op = fx.op
    keys = op.jwks()["keys"]
    by_kid = {k["kid"]: k for k in keys}
    published = [n for n, k in op.keys.items() if k["published"]]
    assert sorted(by_kid) == sorted(kid_of(op, n) for n in published), (by_kid, published)
    for name in published:
        k = by_kid[kid_of(op, name)]
        assert k == op.jwk(name, private=False), (k, op.jwk(name, private=False))
        assert "d" not in k, k
    assert {k["kty"] for k in keys} == {"RSA", "EC", "OKP"}, keys
    for rogue in ("rogue-rsa", "rogue-ec"):
        assert kid_of(op, rogue) not in by_kid
        assert "d" in op.jwk(rogue), "the test holds the private keys"


# --- authorization code + PKCE ------------------------------------------------------

def test_authorization_code_pkce(fx):
    op = fx.op
    client = op.client("certgate")
    tok = client.authorization_code("alice", "alice-password")
    assert tok["token_type"] == "Bearer" and tok["access_token"], tok
    h, c = tok["id_token_header"], tok["id_token_claims"]
    assert h["alg"] == "RS256" and h["kid"] == kid_of(op, "rsa"), h
    assert c["iss"] == op.issuer and c["aud"] == "certgate" and c["sub"] == "alice", c
    assert c["email"] == "alice@example.com" and c["email_verified"] is True, c
    assert c["groups"] == ["dba", "staff"], c
    assert c["iat"] <= time.time() + 5 < c["exp"], c
    assert verify_openssl(fx, tok["id_token"], op.public_pem("rsa"))
    assert not verify_openssl(fx, tok["id_token"], op.public_pem("rogue-rsa"))


def test_loopback_redirect_any_port(fx):
    """RFC 8252: the registered http://127.0.0.1/callback (also [::1] and
    localhost) on whatever port the client's listener got (every flow here
    uses a new free port); another path refused. localhost is left out: a
    minimal Debian has no /etc/hosts to resolve it."""
    op = fx.op
    ports = set()
    for _ in range(2):
        b = op.browser()
        op.client("certgate").authorization_code("bob", "bob-password", browser=b)
        ports.add(urllib.parse.urlsplit(b.history[-1][1]).port)
    assert len(ports) == 2, ports
    if ipv6_loopback():
        tok = op.client("certgate", redirect_host="[::1]").authorization_code("bob", "bob-password")
        assert tok["id_token_claims"]["email"] == "bob@example.com", tok
    client = op.client("certgate")
    url = client.authorization_url("http://127.0.0.1:1/elsewhere", "s", "n",
                                   b64url(hashlib.sha256(b"v" * 43).digest()))
    try:
        op.login_authorization_code(url, "alice", "alice-password")
    except OIDCError as e:
        assert "redirect_uri" in str(e), e
    else:
        raise AssertionError("an unregistered redirect_uri path was accepted")


def test_pkce_required_and_checked(fx):
    """No code_challenge: refused at the redirect_uri. A wrong code_verifier:
    refused at the token endpoint."""
    op = fx.op
    client = op.client("certgate")
    cb = LoopbackServer()
    try:
        redirect_uri = "http://127.0.0.1:%d/callback" % cb.port
        params = {"response_type": "code", "client_id": "certgate", "redirect_uri": redirect_uri,
                  "scope": "openid email", "state": "st", "nonce": "nn"}
        url = op.discovery()["authorization_endpoint"] + "?" + urllib.parse.urlencode(params)
        op.login_authorization_code(url, "alice", "alice-password")
        assert cb.queries[-1][1].get("error") == "invalid_request", cb.queries
        assert "PKCE" in cb.queries[-1][1].get("error_description", ""), cb.queries
        challenge = b64url(hashlib.sha256(b"right-verifier-right-verifier-right-verifier").digest())
        url = client.authorization_url(redirect_uri, "st2", "nn2", challenge)
        op.login_authorization_code(url, "alice", "alice-password")
        q = cb.queries[-1][1]
        assert q.get("state") == "st2" and q.get("code"), q
    finally:
        cb.stop()
    status, body = op.post_form(op.discovery()["token_endpoint"], {
        "grant_type": "authorization_code", "code": q["code"], "redirect_uri": redirect_uri,
        "client_id": "certgate", "code_verifier": "wrong-verifier-wrong-verifier-wrong-verifier"})
    assert status == 400 and body["error"] == "invalid_grant", (status, body)


def test_es256_and_eddsa_clients(fx):
    op = fx.op
    for client_id, alg, key in (("certgate-es256", "ES256", "ec"),
                                ("certgate-eddsa", "EdDSA", "ed")):
        tok = op.client(client_id).authorization_code("alice", "alice-password")
        h, c = tok["id_token_header"], tok["id_token_claims"]
        assert h["alg"] == alg and h["kid"] == kid_of(op, key), h
        assert c["aud"] == client_id and c["groups"] == ["dba", "staff"], c
        assert verify_openssl(fx, tok["id_token"], op.public_pem(key)), alg


def test_wrong_password_and_denial(fx):
    op = fx.op
    client = op.client("certgate")
    try:
        client.authorization_code("alice", "not-her-password")
    except LoginFailed as e:
        assert "Invalid login or password" in str(e), e
    else:
        raise AssertionError("a wrong password signed in")
    try:
        client.authorization_code("mallory", "whatever")
    except LoginFailed:
        pass
    else:
        raise AssertionError("an unknown account signed in")
    err = client.authorization_code("alice", "alice-password", consent=False)
    assert err["error"] == "access_denied", err


def test_accounts_with_awkward_claims(fx):
    """The real provider vouches for what the issuer must refuse."""
    client = fx.op.client("certgate")
    c = client.authorization_code("unverified", "unverified-password")["id_token_claims"]
    assert c["email_verified"] is False, c
    c = client.authorization_code("noemail", "noemail-password")["id_token_claims"]
    assert "email" not in c and c["sub"] == "noemail", c
    c = client.authorization_code("badgroups", "badgroups-password")["id_token_claims"]
    assert c["groups"] == "dba", c


def test_single_sign_on_session(fx):
    """A browser that signed in once is not asked again (the provider's
    session cookie), only to consent for a new client."""
    op = fx.op
    b = op.browser()
    op.client("certgate").authorization_code("bob", "bob-password", browser=b)
    tok = op.client("other-app").authorization_code("bob", "ignored", browser=b)
    assert tok["id_token_claims"]["sub"] == "bob", tok
    assert not any(u.endswith("/login") for _, u, _ in b.history[-8:]), b.history


# --- device authorization grant -----------------------------------------------------

def test_device_flow(fx):
    op = fx.op
    client = op.client("certgate")
    auth = client.device_authorization()
    assert auth["verification_uri"] == op.url("/device"), auth
    assert auth["user_code"] and auth["device_code"] and auth["expires_in"] > 0, auth
    status, body = client.poll_device(auth["device_code"])
    assert status == 400 and body["error"] == "authorization_pending", (status, body)
    page = op.approve_device(auth["verification_uri"], auth["user_code"], "alice",
                             "alice-password")
    assert page.status == 200, page
    status, body = client.poll_device(auth["device_code"])
    assert status == 200, (status, body)
    h, c, _ = decode_jwt(body["id_token"])
    assert h["kid"] == kid_of(op, "rsa"), h
    assert c["sub"] == "alice" and c["email_verified"] is True, c
    assert c["groups"] == ["dba", "staff"], c
    assert c["aud"] == "certgate" and c["iss"] == op.issuer, c
    assert verify_openssl(fx, body["id_token"], op.public_pem("rsa"))
    # a device code is good once
    status, body = client.poll_device(auth["device_code"])
    assert status == 400 and body["error"] == "invalid_grant", (status, body)


def test_device_flow_complete_uri_and_denial(fx):
    op = fx.op
    client = op.client("certgate-es256")
    auth = client.device_authorization()
    op.approve_device(auth["verification_uri_complete"], None, "bob", "bob-password")
    status, body = client.poll_device(auth["device_code"])
    assert status == 200 and decode_jwt(body["id_token"])[0]["alg"] == "ES256", (status, body)
    err = client.device("bob", "bob-password", consent=False)
    assert err["error"] == "access_denied", err
    try:
        op.approve_device(op.url("/device"), "BCDF-GHJK", "bob", "bob-password")
    except OIDCError as e:
        assert "incorrect" in str(e), e
    else:
        raise AssertionError("a made-up user code was approved")


# --- forged tokens ------------------------------------------------------------------

def test_forge_hostile_shapes(fx):
    op = fx.op
    claims = op.id_token_claims("alice", "certgate")
    assert claims["iss"] == op.issuer and claims["email"] == "alice@example.com", claims
    rsa_kid = kid_of(op, "rsa")
    pem = op.public_pem("rsa")
    assert pem.startswith("-----BEGIN PUBLIC KEY-----"), pem
    good_header = {"alg": "RS256", "kid": rsa_kid, "typ": "JWT"}
    evil = dict(claims, email="mallory@example.com", groups=["dba"])
    expired = op.id_token_claims("alice", exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    tokens = op.forge_many([
        # 0 genuine
        dict(header=good_header, payload=claims, key="rsa"),
        # 1 alg none
        dict(header={"alg": "none", "typ": "JWT"}, payload=claims),
        # 2 key confusion: HS256 with the RSA public key's PEM as the secret
        dict(header={"alg": "HS256", "kid": rsa_kid}, payload=claims, hmac_secret=pem),
        # 3 a valid signature over another payload
        dict(header=good_header, payload=claims, key="rsa", tamper=evil),
        # 4 unknown kid
        dict(header={"alg": "RS256", "kid": kid_of(op, "rogue-rsa")}, payload=claims,
             key="rogue-rsa"),
        # 5 a published kid, signed by another key
        dict(header=good_header, payload=claims, key="rogue-rsa"),
        # 6 expired
        dict(header=good_header, payload=expired, key="rsa"),
        # 7 genuine ES256
        dict(header={"alg": "ES256", "kid": kid_of(op, "ec")}, payload=claims, key="ec"),
        # 8 exact payload bytes (a duplicate claim)
        dict(header=good_header, payload=b'{"sub":"alice","sub":"mallory"}', key="rsa"),
    ])
    genuine = tokens[0]
    assert decode_jwt(genuine)[0] == good_header and decode_jwt(genuine)[1] == claims
    assert verify_openssl(fx, genuine, pem)

    h, p, s = decode_jwt(tokens[1])
    assert h == {"alg": "none", "typ": "JWT"} and p == claims and s == b"", tokens[1]
    assert tokens[1].endswith(".")

    h, p, s = decode_jwt(tokens[2])
    assert h == {"alg": "HS256", "kid": rsa_kid} and p == claims, h
    signing_input = tokens[2].rsplit(".", 1)[0].encode()
    assert s == hmac.new(pem.encode(), signing_input, hashlib.sha256).digest(), "HS256 over the PEM"

    h, p, s = decode_jwt(tokens[3])
    assert p == evil and h == good_header, p
    assert s == decode_jwt(genuine)[2], "RS256 is deterministic: the genuine token's signature"
    assert not verify_openssl(fx, tokens[3], pem)

    assert decode_jwt(tokens[4])[0]["kid"] not in {k["kid"] for k in op.jwks()["keys"]}
    assert verify_openssl(fx, tokens[4], op.public_pem("rogue-rsa"))
    assert decode_jwt(tokens[5])[0]["kid"] == rsa_kid and not verify_openssl(fx, tokens[5], pem)
    assert decode_jwt(tokens[6])[1]["exp"] < time.time()
    assert verify_openssl(fx, tokens[6], pem)
    assert verify_openssl(fx, tokens[7], op.public_pem("ec"))
    assert b64url_decode(tokens[8].split(".")[1]) == b'{"sub":"alice","sub":"mallory"}'
    assert verify_openssl(fx, tokens[8], pem)

    # sign(): header from the key; a claim set to None is removed
    t = op.sign(op.id_token_claims("alice", email=None), key="ec")
    h, p, _ = decode_jwt(t)
    assert h == {"alg": "ES256", "kid": kid_of(op, "ec"), "typ": "JWT"} and "email" not in p, (h, p)
    assert verify_openssl(fx, t, op.public_pem("ec"))
    # a single forge() with an unsigned token carrying a made-up signature
    t = op.forge({"alg": "None"}, {"sub": "x"}, signature="AAAA")
    assert t.split(".")[2] == "AAAA" and decode_jwt(t)[0] == {"alg": "None"}, t


# --- load, hang, key rotation, stop -------------------------------------------------

def test_parallel_logins(fx):
    """Scripted browsers in threads (the issuer load test's shape): every
    login gets its own code and ID token; requests() counts them."""
    op = fx.op
    client = op.client("certgate")
    before = len(op.requests("/token"))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(lambda i: client.authorization_code("alice", "alice-password"),
                               range(24)))
    assert len({t["id_token"] for t in tokens}) == 24
    assert all(t["id_token_claims"]["email"] == "alice@example.com" for t in tokens)
    # the provider logs a request after answering it: the last may lag
    wait_for(lambda: len(op.requests("/token")) - before >= 24, 10, "24 token requests logged")
    assert len(op.requests("/token")) - before == 24, op.requests("/token")


def test_pause_and_resume(fx):
    """pause(): connections are accepted but never answered (a hung IdP)."""
    op = fx.op
    ctx = ssl.create_default_context(cafile=op.ca_file)
    op.pause()
    try:
        with socket.create_connection(("127.0.0.1", op.port), timeout=5) as raw:
            raw.settimeout(0.3)
            try:
                ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            except (socket.timeout, ssl.SSLError, OSError):
                pass
            else:
                raise AssertionError("a paused provider finished a TLS handshake")
    finally:
        op.resume()
    assert op.jwks()["keys"]


def test_restart_with_a_new_key(fx):
    """add_key(first=True) + restart(): same issuer and port, the new key is
    published and signs; the old one stays published."""
    op = fx.op
    issuer = op.issuer
    op.add_key("rsa2", "RSA", first=True)
    op.restart()
    assert op.issuer == issuer, (op.issuer, issuer)
    kids = [k["kid"] for k in op.jwks()["keys"]]
    assert kid_of(op, "rsa2") in kids and kid_of(op, "rsa") in kids, kids
    tok = op.client("certgate").authorization_code("alice", "alice-password")
    assert tok["id_token_header"]["kid"] == kid_of(op, "rsa2"), tok["id_token_header"]
    assert verify_openssl(fx, tok["id_token"], op.public_pem("rsa2"))


def test_sigterm_exits_cleanly(fx):
    op = fx.op
    assert op.alive()
    assert op.stop() == 0, op.output()[-2000:]
    assert "stopping (SIGTERM)" in op.output()


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
