"""postgres mode in front of `hostssl ... scram-sha-256 clientcert=verify-full`
(the password as a second factor): SCRAM channel binding cannot cross the
gateway, and no client is left with PostgreSQL's "SCRAM channel binding
check failed" (issue 11).

PostgreSQL binds SCRAM-SHA-256-PLUS to its own TLS certificate, which only
the gateway sees. The gateway drops -PLUS from the mechanisms it relays;
libpq's channel_binding=require then stops on its own message. libpq's
default (prefer) answers an offer without -PLUS on TLS with the gs2 flag
"y", which PostgreSQL on TLS refuses as a downgrade, and which no relay
can rewrite (the flag is inside the client's proof): the gateway refuses
it first with a message that says what to do. channel_binding=disable
works, the password still checked by PostgreSQL."""

import os
import socket
import ssl
import struct
import sys
import threading

from harness import CA, Fixture, Postgres, free_port, psql, run
from test_postgres_mode import (direct_tls, error_fields, read_message, read_until_ready,
                                pg_service, start, startup_message, svc_port)

PASSWORD = "carol-secret"
RULES = [{"name": "self", "effect": "allow", "services": ["*"], "db_users": ["{user.local}"]}]
CB_MESSAGE = ("certgate: SCRAM channel binding cannot pass through the gateway (PostgreSQL "
              "binds it to its own TLS certificate, which only the gateway sees); connect with "
              "channel_binding=disable (sslmode=verify-full still authenticates the gateway)")


def setup():
    fx = Fixture(with_postgres=False)
    fx.dbca = CA(fx.path("dbca"), name="db ca")
    os.chmod(fx.dbca.dir, 0o755)
    pg_cert = fx.ca.server("pg", dns=("db.internal",), ips=("127.0.0.1",))
    fx.pg = Postgres(fx.path("pg"), pg_cert, fx.dbca.crt, hba_lines=[
        "local all all trust",
        # the minted certificate must verify (CN = role) and the password too
        "hostssl all carol 127.0.0.1/32 scram-sha-256 clientcert=verify-full",
        "hostssl all all 127.0.0.1/32 cert"], ident_lines=[""])
    fx.pg.sql("SET password_encryption = 'scram-sha-256'; "
              "CREATE ROLE carol LOGIN PASSWORD '%s'" % PASSWORD)
    fx.carol = fx.ca.issue("carol", "carol@example.com")
    return fx


def carol_psql(fx, gw, channel_binding, password=PASSWORD, port=None):
    return psql(port or svc_port(gw), fx.carol, fx.ca.crt,
                "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()",
                user="carol", host="localhost",
                extra_env={"PGPASSWORD": password, "PGCHANNELBINDING": channel_binding,
                           "PGAPPNAME": "cb-" + channel_binding})


def sasl_mechanisms(body):
    code, = struct.unpack("!I", body[:4])
    assert code == 10, body
    names = body[4:].split(b"\0")
    assert names[-2:] == [b"", b""], body  # the list ends with an empty name
    return [n.decode() for n in names[:-2]]


def test_channel_binding_modes(fx):
    gw = start(fx, rules=RULES)
    runs = {mode: carol_psql(fx, gw, mode) for mode in ("disable", "require", "prefer")}

    # disable: SCRAM without channel binding, PostgreSQL checks the password
    r = runs["disable"]
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "carol|t", r.stdout
    r = carol_psql(fx, gw, "disable", password="wrong")
    assert r.returncode != 0, r.stdout
    assert 'password authentication failed for user "carol"' in r.stderr, r.stderr

    # require: libpq's own message, before any password material is sent
    r = runs["require"]
    assert r.returncode != 0, r.stdout
    assert ("channel binding is required, but server did not offer an authentication "
            "method that supports channel binding") in r.stderr, r.stderr

    # prefer (libpq's default): the gateway's message, not PostgreSQL's
    r = runs["prefer"]
    assert r.returncode != 0, r.stdout
    assert "FATAL:  " + CB_MESSAGE in r.stderr, r.stderr
    ev = gw.wait_event("session.start", application_name="cb-prefer")
    end = gw.wait_event("session.end", session=ev["session"])
    assert end["reason"] == "refused: channel binding", end

    for mode, r in runs.items():
        for theirs in ("SCRAM channel binding check failed",
                       "SCRAM channel binding negotiation error"):
            assert theirs not in r.stderr, (mode, r.stderr)
    gw.stop()


def test_relayed_offer_has_no_plus(fx):
    """What the client is offered, and a client that picks -PLUS anyway."""
    gw = start(fx, rules=RULES)
    tls, client = direct_tls(fx, svc_port(gw), fx.carol)
    tls.sendall(startup_message("carol", application_name="raw-plus"))
    m = read_message(tls)
    assert m is not None and m[0] == b"R", m
    assert sasl_mechanisms(m[1]) == ["SCRAM-SHA-256"], m  # PostgreSQL offered -PLUS too
    # SASLInitialResponse choosing the mechanism it was not offered
    data = b"p=tls-server-end-point,,n=,r=abcdefghijklmnopqrstuvwx"
    body = b"SCRAM-SHA-256-PLUS\0" + struct.pack("!I", len(data)) + data
    tls.sendall(b"p" + struct.pack("!I", len(body) + 4) + body)
    msgs = read_until_ready(tls)
    tls.close()
    errors = [error_fields(x[1]) for x in msgs if x[0] == b"E"]
    assert errors and errors[0]["C"] == "28000" and errors[0]["M"] == CB_MESSAGE, msgs
    ev = gw.wait_event("session.start", client=client)
    end = gw.wait_event("session.end", session=ev["session"])
    assert end["reason"] == "refused: channel binding", end
    gw.stop()


class OnlyPlusServer(threading.Thread):
    """A PostgreSQL stand-in whose AuthenticationSASL offers only
    SCRAM-SHA-256-PLUS; records whatever the gateway sends after it."""

    def __init__(self, cert):
        super().__init__(daemon=True)
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert.crt, cert.key)
        self.after_offer = None
        self.start()

    def run(self):
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        with conn:
            assert conn.recv(8) == struct.pack("!II", 8, 80877103)
            conn.sendall(b"S")
            tls = self.ctx.wrap_socket(conn, server_side=True)
            n, = struct.unpack("!I", tls.recv(4))
            while n > 4:
                n -= len(tls.recv(n - 4))
            body = struct.pack("!I", 10) + b"SCRAM-SHA-256-PLUS\0\0"
            tls.sendall(b"R" + struct.pack("!I", len(body) + 4) + body)
            data = b""
            try:
                while True:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except (OSError, ssl.SSLError):
                pass
            self.after_offer = data

    def stop(self):
        self.listener.close()


def test_upstream_offering_only_plus(fx):
    fake = OnlyPlusServer(fx.ca.server("fakepg", dns=("db.internal",), ips=()))
    svc = pg_service(fx, name="plus-only")
    svc["upstream"] = ["127.0.0.1:%d" % fake.port]
    gw = start(fx, [svc], rules=RULES)
    r = carol_psql(fx, gw, "prefer")
    assert r.returncode != 0, r.stdout
    assert ("FATAL:  certgate: the database offers only SASL mechanisms with channel binding "
            "(SCRAM-SHA-256-PLUS), which cannot pass through the gateway") in r.stderr, r.stderr
    ev = gw.wait_event("session.start", application_name="cb-prefer")
    end = gw.wait_event("session.end", session=ev["session"])
    assert end["reason"] == "refused: upstream offers only channel binding", end
    fake.join(10)
    assert fake.after_offer == b"", fake.after_offer  # nothing of the client's reached it
    fake.stop()
    gw.stop()


if __name__ == "__main__":
    tests = [test_channel_binding_modes, test_relayed_offer_has_no_plus,
             test_upstream_offering_only_plus]
    sys.exit(run(tests, setup=setup, teardown=lambda fx: fx.close()))
