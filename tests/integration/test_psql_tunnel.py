"""The seed's flow end to end: psql -> certgate connect -> certgate serve ->
PostgreSQL, with PostgreSQL itself verifying the login certificate inside
the tunnel (hostssl ... cert)."""

import signal
import socket
import ssl
import sys

from harness import SLOW, Fixture, psql, run, tls_client, wait_for

SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
GSSENC_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x30"


def sni_client(port, cert, ca, sni="orders-db.internal"):
    """A standard mTLS client naming the service by SNI (the gateway's
    certificate is checked against the CA, not against the service name)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert.crt, cert.key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=sni)


def recv_all(sock):
    """Everything the peer sends until it closes (errors count as the end)."""
    data = b""
    sock.settimeout(10)
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    sock.close()
    return data

RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"], "min_trust": "high"},
    {"name": "no-contractors", "effect": "deny", "services": ["*"],
     "users": ["*@contractor.example"]},
]


def setup():
    fx = Fixture(with_postgres=True)
    fx.pg.sql("CREATE ROLE alice LOGIN")
    fx.pg.sql("CREATE ROLE bob LOGIN")
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high")
    return fx


def tunnel_config(fx, **service):
    svc = {"name": "orders-db", "sni": ["orders-db.internal"],
           "upstream": ["127.0.0.1:%d" % fx.pg.port]}
    svc.update(service)
    return fx.config([svc], RULES)


def test_psql_through_tunnel_reports_client_dn(fx):
    gw = fx.gateway(tunnel_config(fx, require_inner_tls=True))
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    r = psql(conn.port, fx.alice, fx.ca.crt,
             "select current_user, ssl, client_dn from pg_stat_ssl "
             "where pid = pg_backend_pid()")
    assert r.returncode == 0, r.stderr
    user, ssl_on, dn = r.stdout.strip().split("|")
    assert user == "alice", r.stdout
    assert ssl_on == "t"
    # PostgreSQL saw the login certificate itself: end-to-end TLS inside the tunnel
    assert "CN=alice@example.com" in dn, dn
    start = gw.wait_event("session.start", user="alice@example.com")
    assert start["service"] == "orders-db"
    assert start["rule"] == "dba"
    assert start["device_id"] == "laptop-1"
    assert start["device_trust"] == "high"
    assert start["groups"] == ["dba"]
    assert start["upstream"] == "127.0.0.1:%d" % fx.pg.port
    assert len(start["cert_sha256"]) == 64
    end = gw.wait_event("session.end", session=start["session"])
    # psql sends Terminate then closes; PostgreSQL closes on Terminate: either
    # FIN may reach the gateway first
    assert end["reason"] in ("client closed", "upstream closed"), end
    assert end["bytes_up"] > 0 and end["bytes_down"] > 0
    conn.stop()
    gw.stop()
    assert gw.events("gateway.stop")


def test_deny_rule_refuses_contractor(fx):
    """A refused psql reads why (an ErrorResponse in place of the SSLRequest's
    answer), and so does the connector's log (the certgate/1 status line)."""
    for inner_tls in (True, False):
        gw = fx.gateway(tunnel_config(fx, require_inner_tls=inner_tls))
        cert = fx.ca.issue(fx.unique("contractor"), "carl@contractor.example", groups=["dba"],
                           trust="high")
        conn = fx.connector(gw.ports()[0], "orders-db", cert)
        r = psql(conn.port, cert, fx.ca.crt, "select 1", user="alice")
        assert r.returncode != 0
        # libpq >= 15.10 does not show the text of an ErrorResponse sent in
        # place of the SSLRequest's answer (CVE-2024-10977); it says that one
        # came, and the connector's log gives the reason
        assert "server sent an error response during SSL exchange" in r.stderr, r.stderr
        assert "server closed the connection unexpectedly" not in r.stderr, r.stderr
        denied = gw.wait_event("authz.denied", user="carl@contractor.example")
        assert denied["rule"] == "no-contractors"
        assert denied["reason"] == "denied by rule no-contractors"
        assert not gw.events("session.start")
        wait_for(lambda: "the gateway refused it: denied by rule no-contractors"
                 in conn.output(), 5, "the connector's log line")
        conn.stop()
        gw.stop()


def test_refusal_reason_for_a_plain_tls_client(fx):
    """Without the connector (a standard mTLS client speaking PostgreSQL
    inside), the refusal is an ErrorResponse to its SSLRequest; other
    protocols' first bytes get a close, and nothing hangs."""
    gw = fx.gateway(tunnel_config(fx))
    cert = fx.ca.issue(fx.unique("contractor"), "cleo@contractor.example", trust="high")
    sock = sni_client(gw.ports()[0], cert, fx.ca.crt)
    sock.sendall(SSL_REQUEST)
    reply = recv_all(sock)
    assert reply[:1] == b"E", reply
    assert b"certgate: access denied: denied by rule no-contractors" in reply, reply
    assert b"28000" in reply, reply
    sock = sni_client(gw.ports()[0], cert, fx.ca.crt)
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert recv_all(sock) == b""
    assert len(gw.events("authz.denied")) == 2
    gw.stop()


def test_gssenc_request_inside_the_tunnel_is_answered_n(fx):
    """require_inner_tls: a GSSENCRequest gets 'N' (as PostgreSQL answers), the
    SSLRequest that follows on the same connection goes to PostgreSQL; no
    refusal, no audit noise."""
    gw = fx.gateway(tunnel_config(fx, require_inner_tls=True))
    sock = sni_client(gw.ports()[0], fx.alice, fx.ca.crt)
    sock.sendall(GSSENC_REQUEST)
    assert sock.recv(1) == b"N"
    sock.sendall(SSL_REQUEST)
    assert sock.recv(1) == b"S"  # PostgreSQL's answer, through the tunnel
    sock.close()
    gw.wait_event("session.end")
    assert not gw.events("authz.denied"), gw.events("authz.denied")
    # a second GSSENCRequest is not a PostgreSQL client's way: refused
    sock = sni_client(gw.ports()[0], fx.alice, fx.ca.crt)
    sock.sendall(GSSENC_REQUEST)
    assert sock.recv(1) == b"N"
    sock.sendall(GSSENC_REQUEST)
    reply = recv_all(sock)
    assert reply[:1] == b"E" and b"requires TLS inside the tunnel" in reply, reply
    gw.stop()


def test_query_cancel_through_the_connector_is_quiet(fx):
    """A query cancel opens a connection that gets no answer by design: the
    connector must not warn about it."""
    gw = fx.gateway(tunnel_config(fx, require_inner_tls=True))
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    r = psql(conn.port, fx.alice, fx.ca.crt, "select pg_sleep(30)",
             background=True)
    wait_for(lambda: len(gw.events("session.start")) >= 1, 10, "the session")
    wait_for(lambda: fx.pg.sql("select count(*) from pg_stat_activity "
                               "where query like '%pg_sleep(30)%' and pid <> pg_backend_pid()")
             .strip() == "1", 10, "the query to run")
    r.send_signal(signal.SIGINT)  # psql sends a CancelRequest on a new connection
    out, err = r.communicate(timeout=20)
    assert "canceling statement due to user request" in err, err
    wait_for(lambda: len(gw.events("session.end")) >= 2, 10, "both connections to end")
    assert "certgate: warn:" not in conn.output(), conn.output()
    conn.stop()
    gw.stop()


def test_rsa_server_key_and_tls12(fx):
    """An RSA gateway key works as well as ECDSA, and a TLS 1.2 client is
    served (1.3 is preferred when both sides have it)."""
    rsa = fx.ca.server(fx.unique("gw-rsa"), dns=("orders-db.internal",), ips=("127.0.0.1",),
                       extra=("--rsa", "2048"))
    cfg = tunnel_config(fx)
    cfg["gateway"]["cert"], cfg["gateway"]["key"] = rsa.crt, rsa.key
    gw = fx.gateway(cfg)
    port = gw.ports()[0]
    sock = tls_client(port, fx.alice, fx.ca.crt, server_name="orders-db.internal")
    assert sock.version() == "TLSv1.3", sock.version()
    sock.close()
    ctx = ssl.create_default_context(cafile=fx.ca.crt)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(fx.alice.crt, fx.alice.key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    with ctx.wrap_socket(raw, server_hostname="orders-db.internal") as tls12:
        assert tls12.version() == "TLSv1.2"
        assert "ECDHE-RSA" in tls12.cipher()[0], tls12.cipher()
        # the upstream is PostgreSQL: an SSLRequest gets its one-byte answer
        tls12.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
        assert tls12.recv(1) == b"S"
    # the first client closed right after its handshake: as a rule no
    # upstream for it (test_abandoned.py times that; a loaded machine may
    # see its close only once the session began): each client has one line
    wait_for(lambda: len(gw.events("session.start")) + len(gw.events("session.abandoned")) >= 2,
             5, "a line for each client")
    assert len(gw.events("session.start")) in (1, 2), gw.events()
    assert len(gw.events("session.start")) + len(gw.events("session.abandoned")) == 2, gw.events()
    gw.stop()


if __name__ == "__main__":
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=lambda fx: fx.close()))
