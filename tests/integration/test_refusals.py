"""The refusal matrix of `certgate serve`: every certificate, handshake and
policy refusal, each asserting its audit event and exact reason.

Clients are Python's ssl (harness.tls_client) and plain sockets; the upstream
is a tiny TCP server in this file that greets every connection with a banner
and then holds it open, so an admitted client reads the banner through the
tunnel and a refused one reads the end of the connection. One gateway per
test; where a test makes several connections, events are matched by the
client's address (ip:port)."""

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

from harness import HoldUpstream, CA, SLOW, Cert, Fixture, free_port, refused_by_gateway, run, tls_client, \
    wait_for

BANNER = b"upstream says hello\n"

RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"], "min_trust": "high"},
    {"name": "no-contractors", "effect": "deny", "services": ["*"],
     "users": ["*@contractor.example"]},
]


# --- fixture ---------------------------------------------------------------------

def setup():
    fx = Fixture(with_postgres=False)
    fx.upstream = HoldUpstream(BANNER)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high")
    return fx


def teardown(fx):
    fx.upstream.stop()
    fx.close()


def service(fx, **extra):
    svc = {"name": "echo", "sni": ["localhost"], "upstream": ["127.0.0.1:%d" % fx.upstream.port]}
    svc.update(extra)
    return svc


def start_gateway(fx, gateway=None, services=None, rules=RULES):
    return fx.gateway(fx.config(services or [service(fx)], rules, gateway=gateway))


def issue(fx, base, user=None, ca=None, groups=("dba",), trust="high", device_id=None, ttl=None,
          extra=()):
    """A login certificate from fx.ca (or ca), admissible by RULES unless the
    options say otherwise."""
    name = fx.unique(base)
    return (ca or fx.ca).issue(name, user or "%s@example.com" % name, groups=groups,
                               device_id=device_id or "dev-" + name, trust=trust, ttl=ttl,
                               extra=list(extra))


def addr(sock):
    return "%s:%d" % sock.getsockname()[:2]


def weak_tls_client(port, cert, ca, server_name="localhost", timeout=5):
    """tls_client for a login certificate that a default client refuses to
    even load (RSA-1024 key, SHA-1 signature): security level 0 on the
    client's side, so the gateway is the one that judges it."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(cert.crt, cert.key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_name)
    except Exception:
        raw.close()
        raise


def read_banner(sock):
    data = b""
    while len(data) < len(BANNER):
        chunk = sock.recv(len(BANNER) - len(data))
        if not chunk:
            break
        data += chunk
    return data


def admitted(fx, gw, cert, port=None, server_name="localhost"):
    """Connects with cert; the banner must come through. Returns the open
    socket and its session.start event."""
    port = port or gw.ports()[0]
    sock = tls_client(port, cert, fx.ca.crt, server_name=server_name)
    try:
        data = read_banner(sock)
    except (ssl.SSLError, OSError) as e:
        sock.close()
        raise AssertionError("refused (%r); audit: %s" % (e, gw.events("tls.rejected")
                                                         + gw.events("authz.denied")))
    assert data == BANNER, (data, gw.events())
    start = gw.wait_event("session.start", client=addr(sock))
    return sock, start


def refused(fx, gw, cert, event="tls.rejected", port=None, server_name="localhost",
            client=tls_client):
    """Connects with cert; the gateway must end the connection (during the
    handshake, or on the first read with TLS 1.3) and write `event` for this
    client. Returns the event."""
    port = port or gw.ports()[0]
    starts = len(gw.events("session.start"))
    try:
        sock = client(port, cert, fx.ca.crt, server_name=server_name)
    except ssl.SSLError:
        # refused inside the handshake, before our side finished it: the
        # client port is unknown, so this must be the only such event
        ev = gw.wait_event(event)
        assert len(gw.events(event)) == 1, gw.events(event)
        assert len(gw.events("session.start")) == starts, gw.events("session.start")
    else:
        me = addr(sock)
        assert refused_by_gateway(sock), "the gateway admitted the connection"
        ev = gw.wait_event(event, client=me)
        assert not gw.events("session.start", client=me), gw.events("session.start")
    return ev


def cert_info(cert):
    d = ssl._ssl._test_decode_cert(cert.crt)
    not_after = time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                              time.gmtime(ssl.cert_time_to_seconds(d["notAfter"])))
    return d["serialNumber"].upper(), not_after


def assert_cert_fields(ev, cert, subject):
    serial, not_after = cert_info(cert)
    assert ev["subject"] == subject, ev
    assert ev["serial"].upper() == serial, (ev, serial)
    assert ev["not_after"] == not_after, (ev, not_after)


def assert_closed(sock, strict=False):
    """The gateway closed a plain socket: EOF (or, unless strict, a reset)."""
    try:
        data = sock.recv(64)
    except ConnectionResetError:
        assert not strict, "reset instead of a clean close"
        return
    finally:
        sock.close()
    assert data == b"", data


# --- certificate validity -------------------------------------------------------

def test_expired_certificate(fx):
    gw = start_gateway(fx)
    cert = issue(fx, "expired", groups=(), extra=["--backdate", "2h", "--ttl", "1h"])
    ev = refused(fx, gw, cert)
    assert ev["reason"] == "certificate expired", ev
    assert ev["service"] == "echo", ev
    assert ev["session"], ev
    assert ev["client"].startswith("127.0.0.1:"), ev
    name = os.path.basename(cert.crt)[:-4]
    assert_cert_fields(ev, cert, "CN=%s@example.com" % name)
    gw.stop()


def test_not_yet_valid_beyond_skew(fx):
    gw = start_gateway(fx)
    cert = issue(fx, "future", extra=["--postdate", "10m"])
    ev = refused(fx, gw, cert)
    assert ev["reason"] == "certificate not yet valid", ev
    assert ev["serial"].upper() == cert_info(cert)[0], ev
    gw.stop()


def test_not_yet_valid_within_skew_is_admitted(fx):
    gw = start_gateway(fx)  # default clock_skew 30s
    cert = issue(fx, "soon", extra=["--postdate", "10s"])
    sock, start = admitted(fx, gw, cert)
    assert start["cert_serial"].upper() == cert_info(cert)[0], start
    assert start["rule"] == "dba", start
    sock.close()
    gw.wait_event("session.end", session=start["session"])
    assert not gw.events("tls.rejected")
    gw.stop()


def test_lifetime_over_max_cert_lifetime(fx):
    gw = start_gateway(fx, gateway={"max_cert_lifetime": "1h"})
    cert = issue(fx, "long", ttl="2h")
    ev = refused(fx, gw, cert)
    assert ev["reason"] == "lifetime exceeds max_cert_lifetime", ev
    # the same limit admits a certificate that stays under it
    ok = issue(fx, "short", ttl="59m")
    sock, _ = admitted(fx, gw, ok)
    sock.close()
    gw.stop()


# --- issuer -------------------------------------------------------------------------

def test_other_ca_is_unknown(fx):
    gw = start_gateway(fx)
    other = CA(fx.path("other-ca"), name="some other CA")
    cert = issue(fx, "stranger", ca=other)
    ev = refused(fx, gw, cert)
    assert ev["reason"] == "unknown ca", ev
    assert ev["serial"].upper() == cert_info(cert)[0], ev
    gw.stop()


def test_self_signed_leaf_is_unknown_ca(fx):
    gw = start_gateway(fx)
    key, crt = fx.path("selfsigned.key"), fx.path("selfsigned.crt")
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=x@example.com",
         "-addext", "subjectAltName=email:x@example.com",
         "-addext", "extendedKeyUsage=clientAuth",
         "-addext", "basicConstraints=critical,CA:FALSE"],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    ev = refused(fx, gw, Cert(crt, key))
    assert ev["reason"] == "unknown ca", ev
    assert ev["subject"] == "CN=x@example.com", ev
    gw.stop()


def test_no_client_certificate(fx):
    gw = start_gateway(fx)
    ev = refused(fx, gw, None)
    assert ev["reason"] == "no client certificate", ev
    assert "serial" not in ev and "subject" not in ev, ev
    gw.stop()


def test_chain_through_intermediate_is_admitted(fx):
    inter = CA(fx.path("inter-ca"), name="certgate test intermediate", parent=fx.ca)
    gw = start_gateway(fx)  # client_ca: the root only
    cert = issue(fx, "chained", ca=inter, extra=["--chain"])
    sock, start = admitted(fx, gw, cert)
    assert start["cert_serial"].upper() == cert_info(cert)[0], start
    sock.close()
    # without the intermediate in the Certificate message, the root alone
    # cannot vouch for the leaf
    bare = issue(fx, "unchained", ca=inter)
    ev = refused(fx, gw, bare)
    assert ev["reason"] == "unknown ca", ev
    gw.stop()


# --- revocation ----------------------------------------------------------------------

def test_revoked_by_crl_after_sighup(fx):
    ca = CA(fx.path("crl-ca"), name="certgate CRL test CA")
    crl = ca.write_crl()  # empty
    gw = start_gateway(fx, gateway={"client_ca": ca.crt, "crl": crl})
    cert = issue(fx, "revokee", ca=ca)
    sock, start = admitted(fx, gw, cert)  # stays open across the reload
    ca.revoke(cert)
    gw.reload()
    reload_ev = gw.wait_event("admin.reload")
    assert reload_ev["ok"] is True, reload_ev
    assert reload_ev["generation"] == gw.events("gateway.start")[0]["generation"] + 1, reload_ev
    # the live session is re-verified under the new CRL and closed
    end = gw.wait_event("session.end", session=start["session"])
    assert end["reason"].startswith("revoked"), end
    assert refused_by_gateway(sock), "the revoked session is still open"
    ev = refused(fx, gw, cert)
    assert ev["reason"] == "certificate revoked", ev
    assert ev["serial"].upper() == cert_info(cert)[0], ev
    gw.stop()


def test_remembered_chain_is_not_trusted_past_expiry(fx):
    # the gateway remembers verified chains (gateway/verify_cache.h): a
    # certificate admitted a moment ago must still be refused once expired,
    # and the same one admitted twice must be admitted twice
    gw = start_gateway(fx)
    cert = issue(fx, "remembered", ttl="4s")
    for _ in range(2):
        sock, start = admitted(fx, gw, cert)
        sock.close()
    not_after = ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(cert.crt)["notAfter"])
    # valid through its notAfter second (RFC 5280 4.1.2.5), so expired from
    # the next one on (the remembered chain included)
    time.sleep(max(0.0, not_after + 1 - time.time()) + 0.2)
    ev = refused(fx, gw, cert)
    assert ev["reason"] == "certificate expired", ev
    gw.stop()


def test_expired_crl_fails_closed(fx):
    ca = CA(fx.path("stale-crl-ca"), name="certgate stale CRL CA")
    crl = ca.write_crl(["--backdate", "2d", "--crl-ttl", "1d"])
    gw = start_gateway(fx, gateway={"client_ca": ca.crt, "crl": crl})
    cert = issue(fx, "stale", ca=ca)
    ev = refused(fx, gw, cert)
    assert ev["reason"] == "crl expired", ev
    gw.stop()


# --- certificate contents -----------------------------------------------------------

def test_leaf_with_ca_true(fx):
    gw = start_gateway(fx)
    ev = refused(fx, gw, issue(fx, "cacert", extra=["--ca-true"]))
    assert ev["reason"] == "certificate is a ca", ev
    gw.stop()


def test_eku_server_only(fx):
    gw = start_gateway(fx)
    ev = refused(fx, gw, issue(fx, "server-eku", extra=["--eku", "server"]))
    assert ev["reason"] == "certificate not for client authentication", ev
    gw.stop()


def test_unknown_critical_extension(fx):
    gw = start_gateway(fx)
    ev = refused(fx, gw, issue(fx, "critext", extra=["--critical-ext", "1.3.6.1.4.1.55555.1"]))
    assert ev["reason"] == "unhandled critical extension", ev
    gw.stop()


def test_rsa_1024_key(fx):
    gw = start_gateway(fx)
    ev = refused(fx, gw, issue(fx, "rsa1024", extra=["--rsa", "1024"]), client=weak_tls_client)
    assert ev["reason"] == "key too small", ev
    # an RSA key of an acceptable size is fine
    sock, _ = admitted(fx, gw, issue(fx, "rsa2048", extra=["--rsa", "2048"]))
    sock.close()
    gw.stop()


def test_sha1_signature(fx):
    gw = start_gateway(fx)
    ev = refused(fx, gw, issue(fx, "sha1", extra=["--digest", "sha1"]), client=weak_tls_client)
    assert ev["reason"] == "signature algorithm too weak", ev
    gw.stop()


# --- service selection -----------------------------------------------------------------

def test_unknown_sni(fx):
    gw = start_gateway(fx)
    ev = refused(fx, gw, fx.alice, server_name="nope")
    assert ev["reason"] == "unknown service", ev
    assert ev["sni"] == "nope", ev
    assert "service" not in ev, ev
    gw.stop()


def test_no_sni_on_shared_listener(fx):
    gw = start_gateway(fx)
    ev = refused(fx, gw, fx.alice, server_name=None)
    assert ev["reason"] == "unknown service", ev
    assert "sni" not in ev, ev
    gw.stop()


def test_service_listener_accepts_no_sni(fx):
    own = "127.0.0.1:%d" % free_port()
    gw = start_gateway(fx, services=[service(fx, name="own", sni=[], listen=own)])
    sock, start = admitted(fx, gw, fx.alice, port=int(own.rsplit(":", 1)[1]), server_name=None)
    assert start["service"] == "own", start
    sock.close()
    # the shared listener still wants an SNI
    ev = refused(fx, gw, fx.alice, server_name=None)
    assert ev["reason"] == "unknown service", ev
    gw.stop()


# --- not TLS at all -------------------------------------------------------------------

def test_garbage_is_not_tls(fx):
    gw = start_gateway(fx)
    sock = socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=5 * SLOW)
    me = addr(sock)
    sock.sendall(b"hello\r\n\r\n")
    assert_closed(sock)
    ev = gw.wait_event("tls.rejected", client=me)
    assert ev["reason"] == "not tls", ev
    gw.stop()


def test_proxy_header_from_untrusted_address(fx):
    gw = start_gateway(fx, gateway={"proxy_protocol_from": ["10.0.0.0/8"]})
    for header in (b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 8443\r\n",
                   b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([192, 0, 2, 7, 192, 0, 2, 1])
                   + (40000).to_bytes(2, "big") + (8443).to_bytes(2, "big")):
        sock = socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=5 * SLOW)
        me = addr(sock)
        sock.sendall(header)
        assert_closed(sock)
        ev = gw.wait_event("tls.rejected", client=me)  # the real peer, not the header's
        assert ev["reason"].startswith("proxy protocol header from an address not in"), ev
    gw.stop()


def test_silent_client_handshake_timeout(fx):
    gw = start_gateway(fx, gateway={"handshake_timeout": "1s"})
    sock = socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=10 * SLOW)
    me = addr(sock)
    t0 = time.monotonic()
    assert_closed(sock, strict=True)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed <= 2.0 * SLOW, "closed after %.2fs" % elapsed
    ev = gw.wait_event("tls.rejected", client=me)
    assert ev["reason"] == "handshake timeout", ev
    gw.stop()


# --- policy -----------------------------------------------------------------------------

def assert_identity(ev, cert_user, groups, device_id, trust):
    assert ev["user"] == cert_user, ev
    assert ev["groups"] == groups, ev
    assert ev["device_id"] == device_id, ev
    assert ev["device_trust"] == trust, ev
    assert ev["service"] == "echo", ev


def test_policy_low_trust(fx):
    gw = start_gateway(fx)
    cert = fx.ca.issue(fx.unique("lowtrust"), "lou@example.com", groups=["dba"],
                       device_id="old-laptop", trust="low")
    ev = refused(fx, gw, cert, event="authz.denied")
    assert_identity(ev, "lou@example.com", ["dba"], "old-laptop", "low")
    assert ev["rule"] == "default-deny", ev
    assert ev["reason"] == "device trust low is below min_trust high of rule dba", ev
    gw.stop()


def test_policy_deny_rule(fx):
    gw = start_gateway(fx)
    cert = fx.ca.issue(fx.unique("contractor"), "carl@contractor.example", groups=["dba"],
                       device_id="carl-pc", trust="high")
    ev = refused(fx, gw, cert, event="authz.denied")
    assert_identity(ev, "carl@contractor.example", ["dba"], "carl-pc", "high")
    assert ev["rule"] == "no-contractors", ev
    assert ev["reason"] == "denied by rule no-contractors", ev
    gw.stop()


def test_policy_default_deny(fx):
    gw = start_gateway(fx)
    cert = fx.ca.issue(fx.unique("analyst"), "bob@example.com", groups=["analysts"],
                       device_id="bob-pc", trust="high")
    ev = refused(fx, gw, cert, event="authz.denied")
    assert_identity(ev, "bob@example.com", ["analysts"], "bob-pc", "high")
    assert ev["rule"] == "default-deny", ev
    assert ev["reason"] == "no rule allows user bob@example.com on service echo", ev
    gw.stop()


def test_max_sessions_per_user(fx):
    gw = start_gateway(fx, gateway={"max_sessions_per_user": 1})
    first, start = admitted(fx, gw, fx.alice)  # held open by the upstream
    ev = refused(fx, gw, fx.alice, event="authz.denied")
    assert ev["reason"] == "too many sessions", ev
    assert ev["user"] == "alice@example.com", ev
    assert ev["rule"] == "max_sessions_per_user", ev
    assert not gw.events("session.end"), "the first session must still be live"
    # the same user in other letters is the same user (as for locks and globs)
    shouting = issue(fx, "shouting", user="ALICE@Example.COM")
    ev = refused(fx, gw, shouting, event="authz.denied")
    assert ev["reason"] == "too many sessions", ev
    # another user is not affected
    other, _ = admitted(fx, gw, issue(fx, "other"))
    other.close()
    # once the first ends, alice may connect again
    first.close()
    gw.wait_event("session.end", session=start["session"])
    again, _ = admitted(fx, gw, fx.alice)
    again.close()
    gw.stop()


def open_connections(admin):
    """certgate_connections_open from the admin /metrics, or None."""
    try:
        with urllib.request.urlopen("http://%s/metrics" % admin, timeout=2 * SLOW) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("certgate_connections_open "):
            return int(line.split()[1])
    raise AssertionError("no certgate_connections_open in /metrics:\n" + text)


def test_max_connections(fx):
    admin = "127.0.0.1:%d" % free_port()
    gw = fx.gateway(fx.config([service(fx)], RULES, gateway={"max_connections": 2},
                              admin={"listen": admin}))
    port = gw.ports()[0]
    # the readiness probe's connection must be gone before counting ours
    wait_for(lambda: open_connections(admin) == 0, what="no open connection")
    held = [socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW) for _ in range(2)]
    wait_for(lambda: open_connections(admin) == 2, what="two open connections")
    third = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    me = addr(third)
    assert_closed(third)
    ev = gw.wait_event("tls.rejected", client=me)
    assert ev["reason"] == "too many connections", ev
    # the two held connections are still up (handshake_timeout is 10s)
    assert len(gw.events("tls.rejected")) == 1, gw.events("tls.rejected")
    assert open_connections(admin) == 2
    for s in held:
        s.setblocking(False)
        try:
            assert s.recv(1) != b"", "a held connection was closed"
        except BlockingIOError:
            pass
        s.close()
    wait_for(lambda: open_connections(admin) == 0, what="the held connections to close")
    # room again
    sock, _ = admitted(fx, gw, fx.alice)
    sock.close()
    gw.stop()

if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
