"""postgres mode end to end: psql, pgbench and raw protocol clients connect
straight to `certgate serve` (no agent); the gateway answers the SSLRequest
(or direct TLS with ALPN "postgresql"), verifies the login certificate, reads
the StartupMessage, authorizes db user and database, and logs in to a real
PostgreSQL 15 with a certificate it mints for the db user.

The database trusts only the "db ca" (ssl_ca_file), with `hostssl ... cert`
and no map: the minted certificate's CN must equal the role. Login
certificates (the test CA) are never shown to PostgreSQL."""

import copy
import json
import os
import re
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from harness import CA, SLOW, Fixture, Postgres, free_port, pg_bin, psql, run, wait_for

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)
CANCEL_CODE = 80877102
PROTOCOL_3 = 196608

RULES = [
    {"name": "no-superuser", "effect": "deny", "services": ["*"], "db_users": ["postgres"]},
    {"name": "self", "effect": "allow", "services": ["*"], "db_users": ["{user.local}"],
     "db_names": ["postgres", "appdb"]},
    {"name": "whole-claim", "effect": "allow", "services": ["*"], "db_users": ["{user}"],
     "db_names": ["postgres"]},
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"]},
]

BENCH_SCRIPT = """\\set id random(1, 100)
UPDATE bench SET v = v + 1 WHERE id = :id;
SELECT v FROM bench WHERE id = :id;
"""


# --- fixture ---------------------------------------------------------------------

def setup():
    fx = Fixture(with_postgres=False)
    # the database trusts what the "db ca" signs: the gateway's minted certificates
    fx.dbca = CA(fx.path("dbca"), name="db ca")
    os.chmod(fx.dbca.dir, 0o755)
    pg_cert = fx.ca.server("pg", dns=("db.internal",), ips=("127.0.0.1",))
    fx.pg = Postgres(fx.path("pg"), pg_cert, fx.dbca.crt,
                     hba_lines=["local all all trust", "hostssl all all 127.0.0.1/32 cert"],
                     ident_lines=[""])
    for role in ("alice", "bob", '"alice@example.com"'):
        fx.pg.sql("CREATE ROLE %s LOGIN" % role)
    fx.pg.sql("CREATE DATABASE appdb")
    fx.pg.sql("CREATE TABLE bench (id int PRIMARY KEY, v int NOT NULL DEFAULT 0)")
    fx.pg.sql("INSERT INTO bench (id) SELECT generate_series(1, 100)")
    fx.pg.sql("GRANT SELECT, UPDATE ON bench TO alice")
    # backends of clients the gateway cut off go away quickly
    fx.pg.sql("ALTER SYSTEM SET client_connection_check_interval = '200ms'")
    fx.pg.sql("SELECT pg_reload_conf()")
    fx.alice = fx.ca.issue("alice", "alice@example.com")
    fx.bob = fx.ca.issue("bob", "bob@example.com")
    fx.dora = fx.ca.issue("dora", "dora@example.com", groups=["dba"])
    fx.token = secrets.token_hex(24)
    fx.token_file = fx.path("admin.token")
    with open(fx.token_file, "w") as f:
        f.write(fx.token + "\n")
    os.chmod(fx.token_file, 0o600)
    return fx


def pg_service(fx, name="billing-db", **extra):
    svc = {"name": name, "listen": "127.0.0.1:%d" % free_port(), "mode": "postgres",
           "upstream": ["127.0.0.1:%d" % fx.pg.port],
           "upstream_tls": {"ca": fx.ca.crt, "server_name": "db.internal",
                            "client_ca_cert": fx.dbca.crt, "client_ca_key": fx.dbca.key}}
    svc.update(extra)
    return svc


def start(fx, services=None, rules=None, **extra):
    return fx.gateway(fx.config(services or [pg_service(fx)],
                                rules if rules is not None else RULES, **extra))


def svc_port(gw, name=None):
    for s in gw.config["services"]:
        if name is None or s["name"] == name:
            return int(s["listen"].rsplit(":", 1)[1])
    raise KeyError(name)


def pgq(fx, gw, cert, sql, user="alice", db="postgres", service=None, **kw):
    """psql straight to the gateway's postgres-mode listener."""
    return psql(svc_port(gw, service), cert, fx.ca.crt, sql, user=user, db=db,
                host="localhost", **kw)


def active_backends(fx, pattern="select pg_sleep%"):
    """{usename: pid} of backends running a matching statement."""
    out = fx.pg.sql("SELECT usename, pid FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE '%s'" % pattern)
    return dict(line.split("|") for line in out.splitlines() if line)


def finish(proc, timeout=10):
    try:
        out, err = proc.communicate(timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("psql still running after %ss: %s %s" % (timeout, out, err))
    return proc.returncode, out, err


# --- raw protocol clients ----------------------------------------------------------

def startup_message(user, database="postgres", **params):
    body = struct.pack("!I", PROTOCOL_3)
    for k, v in [("user", user), ("database", database)] + sorted(params.items()):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query_message(sql):
    body = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(body) + 4) + body


def recv_exact(sock, n):
    """n bytes, or None when the peer ends the connection first (EOF, reset,
    a TLS alert). A timeout is an error: the peer neither answered nor closed."""
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except socket.timeout:
            raise
        except (ConnectionError, ssl.SSLError):
            return None
        if not chunk:
            return None
        data += chunk
    return data


def read_message(sock):
    head = recv_exact(sock, 5)
    if head is None:
        return None
    body = recv_exact(sock, struct.unpack("!I", head[1:])[0] - 4)
    if body is None:
        return None
    return head[:1], body


def read_until_ready(sock):
    """Backend messages up to ReadyForQuery 'Z' (or an ErrorResponse, or the
    end of the connection)."""
    msgs = []
    while True:
        m = read_message(sock)
        if m is None:
            return msgs
        msgs.append(m)
        if m[0] in (b"Z", b"E"):
            return msgs


def error_fields(body):
    fields = {}
    for part in body.rstrip(b"\0").split(b"\0"):
        if part:
            fields[part[:1].decode()] = part[1:].decode()
    return fields


def raw_connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    return sock, "127.0.0.1:%d" % sock.getsockname()[1]


def closed_without_answer(sock):
    """Everything the peer sends before it closes (b"" when nothing)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            raise AssertionError("the gateway neither answered nor closed; got %r" % data)
        except ConnectionError:
            return data
        if not chunk:
            return data
        data += chunk


def client_ctx(fx, cert, alpn=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=fx.ca.crt)
    if cert is not None:
        ctx.load_cert_chain(cert.crt, cert.key)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def direct_tls(fx, port, cert, alpn=("postgresql",)):
    """PostgreSQL 17's sslnegotiation=direct: TLS from the first byte."""
    sock, client = raw_connect(port)
    tls = client_ctx(fx, cert, list(alpn) if alpn else None).wrap_socket(
        sock, server_hostname="localhost")
    return tls, client


def login(tls, user="alice", database="postgres", **params):
    tls.sendall(startup_message(user, database, **params))
    return read_until_ready(tls)


# --- admin API -------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api(fx, gw, method, path, body=None):
    port = int(gw.config["admin"]["listen"].rsplit(":", 1)[1])
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method=method)
    req.add_header("Authorization", "Bearer " + fx.token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=10 * SLOW) as resp:
            return resp.status, json.loads(resp.read().decode() or "null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# --- tests -----------------------------------------------------------------------

def test_psql_straight_to_gateway(fx):
    gw = start(fx)
    r = pgq(fx, gw, fx.alice,
            "select current_user, ssl, client_dn, issuer_dn, current_setting('application_name')"
            " from pg_stat_ssl where pid = pg_backend_pid()",
            extra_env={"PGAPPNAME": "billing-report"})
    assert r.returncode == 0, r.stderr
    user, ssl_on, dn, issuer, app = r.stdout.strip().split("|")
    assert user == "alice", r.stdout
    assert ssl_on == "t", r.stdout
    # PostgreSQL saw the certificate the gateway minted, not the login certificate
    assert dn == "/CN=alice", r.stdout
    assert issuer == "/CN=db ca", r.stdout
    assert app == "billing-report", r.stdout
    start_ev = gw.wait_event("session.start", application_name="billing-report")
    assert start_ev["user"] == "alice@example.com", start_ev
    assert start_ev["service"] == "billing-db", start_ev
    assert start_ev["db_user"] == "alice", start_ev
    assert start_ev["db_name"] == "postgres", start_ev
    assert start_ev["rule"] == "self", start_ev
    assert start_ev["upstream"] == "127.0.0.1:%d" % fx.pg.port, start_ev
    assert len(start_ev["cert_sha256"]) == 64, start_ev
    end = gw.wait_event("session.end", session=start_ev["session"])
    assert end["reason"] in ("client closed", "upstream closed"), end
    assert end["bytes_up"] > 0 and end["bytes_down"] > 0, end
    # the application name as a connection parameter
    r = psql(svc_port(gw), fx.alice, fx.ca.crt, "select 1", host="localhost",
             db="appdb application_name=from-conninfo")
    assert r.returncode == 0, r.stderr
    ev = gw.wait_event("session.start", application_name="from-conninfo")
    assert ev["db_name"] == "appdb", ev
    gw.stop()


def test_db_users_and_db_names(fx):
    gw = start(fx)
    allowed = [
        # cert, db user, database, rule, current_user
        (fx.alice, "alice", "postgres", "self"),
        (fx.alice, "alice", "appdb", "self"),
        (fx.alice, "alice@example.com", "postgres", "whole-claim"),  # {user}: the whole claim
        (fx.bob, "bob", "postgres", "self"),
        (fx.dora, "bob", "appdb", "dba"),
    ]
    for cert, db_user, db, rule in allowed:
        r = pgq(fx, gw, cert, "select current_user, current_database()", user=db_user, db=db)
        assert r.returncode == 0, (db_user, db, r.stderr)
        assert r.stdout.strip() == "%s|%s" % (db_user, db), r.stdout
        ev = gw.wait_event("session.start", db_user=db_user, db_name=db)
        assert ev["rule"] == rule, ev
    refused = [
        # cert, claim, db user, database, deciding rule
        (fx.alice, "alice@example.com", "bob", "postgres", "default-deny"),  # {user.local}
        (fx.alice, "alice@example.com", "alice", "otherdb", "default-deny"),  # db_names
        # {user} is the whole claim, not its local part; whole-claim only allows postgres
        (fx.alice, "alice@example.com", "alice@example.com", "appdb", "default-deny"),
        (fx.bob, "bob@example.com", "alice", "postgres", "default-deny"),
        (fx.alice, "alice@example.com", "postgres", "postgres", "no-superuser"),
        (fx.dora, "dora@example.com", "postgres", "postgres", "no-superuser"),
    ]
    for cert, claim, db_user, db, rule in refused:
        r = pgq(fx, gw, cert, "select 1", user=db_user, db=db)
        assert r.returncode != 0, (claim, db_user, db, r.stdout)
        denied = gw.wait_event("authz.denied", user=claim, db_user=db_user, db_name=db)
        assert denied["rule"] == rule, denied
        assert "FATAL:  certgate: access denied: %s" % denied["reason"] in r.stderr, \
            (r.stderr, denied)
        if rule == "no-superuser":
            assert denied["reason"] == "denied by rule no-superuser", denied
    starts = gw.events("session.start")
    assert len(starts) == len(allowed), starts
    gw.stop()


def test_plaintext_startup_refused(fx):
    gw = start(fx)
    r = pgq(fx, gw, fx.alice, "select 1", sslmode="disable")
    assert r.returncode != 0, r.stdout
    assert "SSL required" in r.stderr, r.stderr
    ev = gw.wait_event("tls.rejected", reason="ssl required")
    assert ev["service"] == "billing-db", ev
    # sslmode=prefer sends the SSLRequest first and gets in
    r = pgq(fx, gw, fx.alice, "select 1", sslmode="prefer")
    assert r.returncode == 0, r.stderr
    assert len(gw.events("session.start")) == 1
    gw.stop()


def test_first_packet_edge_cases(fx):
    gw = start(fx)
    port = svc_port(gw)

    # SSLRequest with 8 more bytes in the same packet: no 'S', closed
    sock, client = raw_connect(port)
    sock.sendall(SSL_REQUEST + struct.pack("!II", 8, PROTOCOL_3))
    assert closed_without_answer(sock) == b"", "answered an SSLRequest with data after it"
    sock.close()
    ev = gw.wait_event("tls.rejected", client=client)
    assert ev["reason"] == "data after SSLRequest", ev

    # GSSENCRequest: 'N'; then an SSLRequest on the same connection: 'S', TLS, login
    sock, client = raw_connect(port)
    sock.sendall(GSSENC_REQUEST)
    assert recv_exact(sock, 1) == b"N"
    sock.sendall(SSL_REQUEST)
    assert recv_exact(sock, 1) == b"S"
    tls = client_ctx(fx, fx.alice).wrap_socket(sock, server_hostname="localhost")
    msgs = login(tls, application_name="after-gssenc")
    assert msgs and msgs[0] == (b"R", struct.pack("!I", 0)), msgs
    assert msgs[-1][0] == b"Z", msgs
    tls.sendall(b"X" + struct.pack("!I", 4))
    tls.close()
    ev = gw.wait_event("session.start", application_name="after-gssenc")
    assert ev["client"] == client, ev

    # malformed first packets: too short, too long, unknown code
    for packet in (struct.pack("!II", 4, 80877103), struct.pack("!II", 7, PROTOCOL_3),
                   struct.pack("!II", 10001, PROTOCOL_3),
                   struct.pack("!II", 0xffffffff, PROTOCOL_3),
                   struct.pack("!II", 8, 12345678)):
        sock, client = raw_connect(port)
        sock.sendall(packet)
        assert closed_without_answer(sock) == b"", packet
        sock.close()
        ev = gw.wait_event("tls.rejected", client=client)
        assert ev["reason"] == "invalid startup packet", (packet, ev)

    # an oversized StartupMessage inside TLS
    sock, client = raw_connect(port)
    sock.sendall(SSL_REQUEST)
    assert recv_exact(sock, 1) == b"S"
    tls = client_ctx(fx, fx.alice).wrap_socket(sock, server_hostname="localhost")
    tls.sendall(struct.pack("!II", 20000, PROTOCOL_3) + b"user\0alice\0" * 100)
    assert read_message(tls) is None
    tls.close()
    ev = gw.wait_event("tls.rejected", client=client)
    assert ev["reason"] == "invalid startup packet", ev

    # no crash: the gateway still serves
    assert gw.alive(), gw.output()
    r = pgq(fx, gw, fx.alice, "select 42")
    assert r.returncode == 0 and r.stdout.strip() == "42", r.stderr
    gw.stop()


def test_direct_tls_alpn(fx):
    gw = start(fx)
    port = svc_port(gw)
    tls, client = direct_tls(fx, port, fx.alice)
    assert tls.selected_alpn_protocol() == "postgresql"
    msgs = login(tls, application_name="direct-tls")
    types = [m[0] for m in msgs]
    assert msgs and msgs[0] == (b"R", struct.pack("!I", 0)), msgs  # AuthenticationOk
    assert types[-1] == b"Z", types
    keys = [m[1] for m in msgs if m[0] == b"K"]
    assert len(keys) == 1, types
    key_pid, _ = struct.unpack("!II", keys[0])
    tls.sendall(query_message("select pg_backend_pid(), current_user"))
    reply = read_until_ready(tls)
    rows = [m[1] for m in reply if m[0] == b"D"]
    assert len(rows) == 1, reply
    # DataRow: Int16 count, then Int32 length + bytes per column
    count, = struct.unpack("!H", rows[0][:2])
    at, cols = 2, []
    for _ in range(count):
        n, = struct.unpack("!i", rows[0][at:at + 4])
        cols.append(rows[0][at + 4:at + 4 + n].decode())
        at += 4 + n
    backend_pid, user = int(cols[0]), cols[1]
    assert user == "alice", cols
    # the client holds the gateway's cancel key, never the backend's
    assert key_pid != backend_pid, (key_pid, backend_pid)
    tls.sendall(b"X" + struct.pack("!I", 4))
    tls.close()
    ev = gw.wait_event("session.start", application_name="direct-tls")
    assert ev["client"] == client and ev["db_user"] == "alice", ev

    # a refusal reaches the client inside TLS as FATAL 28000
    tls, client = direct_tls(fx, port, fx.alice)
    msgs = login(tls, user="bob")
    tls.close()
    assert msgs and msgs[-1][0] == b"E", msgs
    fields = error_fields(msgs[-1][1])
    assert fields.get("S") == "FATAL" and fields.get("C") == "28000", fields
    assert fields.get("M", "").startswith("certgate: access denied: "), fields
    gw.wait_event("authz.denied", client=client, db_user="bob")

    # direct TLS without ALPN (or with another protocol only): refused
    for n, alpn in enumerate((None, ("http/1.1",)), 1):
        try:
            tls, client = direct_tls(fx, port, fx.alice, alpn=alpn)
        except (ssl.SSLError, ConnectionError):
            pass  # refused during the handshake: the audit still says why
        else:
            assert tls.selected_alpn_protocol() is None
            msgs = login(tls)
            tls.close()
            assert not any(m[0] == b"R" for m in msgs), msgs
        wait_for(lambda: len(gw.events("tls.rejected",
                                       reason="direct TLS without ALPN postgresql")) == n,
                 10, "refusal %d of direct TLS without ALPN" % n)
    assert len(gw.events("session.start")) == 1

    # the shared listener: the service picked by SNI, TLS first, ALPN required too
    shared = int(gw.config["gateway"]["listen"][0].rsplit(":", 1)[1])
    for alpn, admitted in ((["postgresql"], True), (None, False)):
        ctx = client_ctx(fx, fx.alice, alpn)
        ctx.check_hostname = False  # SNI is the service name; the certificate says localhost
        sock, client = raw_connect(shared)
        tls = ctx.wrap_socket(sock, server_hostname="billing-db")
        msgs = login(tls, application_name="by-sni")
        tls.close()
        if admitted:
            assert msgs and msgs[0] == (b"R", struct.pack("!I", 0)), msgs
            ev = gw.wait_event("session.start", client=client)
            assert ev["service"] == "billing-db" and ev["application_name"] == "by-sni", ev
        else:
            assert not any(m[0] == b"R" for m in msgs), msgs
            ev = gw.wait_event("tls.rejected", client=client)
            assert ev["reason"] == "direct TLS without ALPN postgresql", ev
    gw.stop()


def test_cancel_request(fx):
    gw = start(fx)
    port = svc_port(gw)
    alice = pgq(fx, gw, fx.alice, "select pg_sleep(30)", background=True)
    # bob's query must outlast the steps below, slowed by sanitizers too
    bob = pgq(fx, gw, fx.bob, "select pg_sleep(%d)" % (4 * SLOW), user="bob", background=True)
    try:
        backends = wait_for(lambda: (lambda b: b if len(b) == 2 else None)(active_backends(fx)),
                            10, "both pg_sleep queries running")
        # made-up keys, one of them naming alice's real backend pid: ignored
        for pid in (0x12345678, int(backends["alice"])):
            sock, _ = raw_connect(port)
            sock.sendall(struct.pack("!IIII", 16, CANCEL_CODE, pid, secrets.randbits(32)))
            assert closed_without_answer(sock) == b""
            sock.close()
        # (logged at most once a second: the second line may be held back)
        wait_for(lambda: gw.output().count("unknown key: ignored") >= 1, 5,
                 "the gateway to ignore the cancel requests")
        assert "forwarded" not in gw.output(), gw.output()
        assert "alice" in active_backends(fx), "a made-up cancel key cancelled alice's query"
        assert alice.poll() is None and bob.poll() is None

        # psql's own CancelRequest (SIGINT) names the key the gateway gave it
        t0 = time.monotonic()
        alice.send_signal(signal.SIGINT)
        rc, out, err = finish(alice, 5)
        elapsed = time.monotonic() - t0
        assert rc != 0, (out, err)
        assert "canceling statement due to user request" in err, err
        assert elapsed < 5 * SLOW, elapsed
        assert "forwarded to session" in gw.output(), gw.output()
        # bob's query, in flight at the same time, was not cancelled
        assert bob.poll() is None, "bob's query ended together with alice's"
        rc, out, err = finish(bob, 20)
        assert rc == 0, err
        assert "canceling" not in err, err
    finally:
        for p in (alice, bob):
            if p.poll() is None:
                p.kill()
                p.communicate()
    gw.stop()


def test_cancel_key_checked(fx):
    """The key must match whole (pid and secret); libpq 17 may send the
    CancelRequest inside TLS after an SSLRequest."""
    gw = start(fx)
    port = svc_port(gw)
    tls, _ = direct_tls(fx, port, fx.alice)
    msgs = login(tls, application_name="raw-sleeper")
    keys = [m[1] for m in msgs if m[0] == b"K"]
    assert len(keys) == 1 and msgs[-1][0] == b"Z", msgs
    pid, secret = struct.unpack("!II", keys[0])
    tls.sendall(query_message("select pg_sleep(30)"))
    wait_for(lambda: "alice" in active_backends(fx), 10, "the raw session's query running")

    # the gateway's pid with a wrong secret, in clear: ignored
    sock, _ = raw_connect(port)
    sock.sendall(struct.pack("!IIII", 16, CANCEL_CODE, pid, secret ^ 0x80000001))
    assert closed_without_answer(sock) == b""
    sock.close()
    wait_for(lambda: "unknown key: ignored" in gw.output(), 5, "the wrong secret ignored")
    assert "alice" in active_backends(fx), "a wrong secret cancelled the query"

    # the right key, inside TLS after an SSLRequest: forwarded, the query ends
    sock, _ = raw_connect(port)
    sock.sendall(SSL_REQUEST)
    assert recv_exact(sock, 1) == b"S"
    ctls = client_ctx(fx, fx.alice).wrap_socket(sock, server_hostname="localhost")
    ctls.sendall(struct.pack("!IIII", 16, CANCEL_CODE, pid, secret))
    assert read_message(ctls) is None  # no answer to a CancelRequest: closed
    ctls.close()
    reply = read_until_ready(tls)
    errors = [error_fields(m[1]) for m in reply if m[0] == b"E"]
    assert errors and errors[0].get("C") == "57014", reply  # query_canceled
    tls.sendall(b"X" + struct.pack("!I", 4))
    tls.close()
    assert len(gw.events("session.start")) == 1, gw.events("session.start")
    gw.stop()


def run_pgbench(fx, port, mode, app):
    script = fx.path("bench.sql")
    with open(script, "w") as f:
        f.write(BENCH_SCRIPT)
    env = dict(os.environ, PGSSLMODE="verify-full", PGSSLCERT=fx.alice.crt,
               PGSSLKEY=fx.alice.key, PGSSLROOTCERT=fx.ca.crt, PGAPPNAME=app,
               PGCONNECT_TIMEOUT="10")
    env.pop("PGPASSWORD", None)
    try:
        pgbench = pg_bin("pgbench")
    except RuntimeError:
        pgbench = "pgbench"
    r = subprocess.run([pgbench, "-n", "-M", mode, "-c", "2", "-t", "20", "-f", script,
                        "-h", "localhost", "-p", str(port), "-U", "alice", "postgres"],
                       capture_output=True, text=True, env=env, timeout=60 * SLOW)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "number of transactions actually processed: 40/40" in r.stdout, r.stdout
    return r


def test_query_audit_pgbench(fx):
    gw = start(fx, [pg_service(fx, audit_queries=True),
                    pg_service(fx, name="quiet-db", audit_queries=False)])
    before = int(fx.pg.sql("SELECT sum(v) FROM bench"))

    def queries_of(app):
        sessions = {e["session"] for e in gw.events("session.start", application_name=app)}
        assert len(sessions) >= 2, (app, sessions)  # pgbench: 2 clients (+ its own)
        for s in sessions:  # every query is audited before its session ends
            gw.wait_event("session.end", session=s)
        return [e for e in gw.events("query") if e["session"] in sessions]

    run_pgbench(fx, svc_port(gw, "billing-db"), "simple", "bench-simple")
    qs = queries_of("bench-simple")
    assert qs and all(q["kind"] == "simple" for q in qs), {q["kind"] for q in qs}
    updates = [q for q in qs if q["sql"].startswith("UPDATE bench")]
    selects = [q for q in qs if q["sql"].startswith("SELECT v FROM bench")]
    assert len(updates) == 40 and len(selects) == 40, (len(updates), len(selects))
    # simple protocol: the values are in the SQL text
    assert all(re.fullmatch(r"UPDATE bench SET v = v \+ 1 WHERE id = \d+;?", q["sql"])
               for q in updates), updates[:3]
    q = updates[0]
    assert q["user"] == "alice@example.com" and q["db_user"] == "alice", q
    assert q["db_name"] == "postgres" and q["service"] == "billing-db", q
    assert "truncated" not in q, q

    run_pgbench(fx, svc_port(gw, "billing-db"), "extended", "bench-extended")
    qs = queries_of("bench-extended")
    assert qs and all(q["kind"] == "parse" for q in qs), {q["kind"] for q in qs}
    # extended protocol: the statement with its parameter placeholder
    updates = [q for q in qs if q["sql"].rstrip(";") == "UPDATE bench SET v = v + 1 WHERE id = $1"]
    selects = [q for q in qs if q["sql"].rstrip(";") == "SELECT v FROM bench WHERE id = $1"]
    assert len(updates) == 40 and len(selects) == 40, [q["sql"] for q in qs][:4]

    # audit_queries false: sessions, but no query events
    run_pgbench(fx, svc_port(gw, "quiet-db"), "extended", "bench-quiet")
    run_pgbench(fx, svc_port(gw, "quiet-db"), "simple", "bench-quiet2")
    r = pgq(fx, gw, fx.alice, "select 'quiet'", service="quiet-db")
    assert r.returncode == 0, r.stderr
    quiet = gw.events("session.start", service="quiet-db")
    assert len(quiet) >= 5, quiet
    for e in quiet:
        gw.wait_event("session.end", session=e["session"])
    leaked = gw.events("query", service="quiet-db")
    assert not leaked, "%d query events with audit_queries false: %s" % (len(leaked), leaked[:2])
    assert int(fx.pg.sql("SELECT sum(v) FROM bench")) == before + 4 * 40

    # long queries: cut at 4096 bytes, never inside a UTF-8 character
    long_sql = "select '" + "x" * 5000 + "' as long"
    exact_sql = "select '" + "y" * (4096 - len("select '' as exact")) + "' as exact"
    assert len(exact_sql) == 4096
    utf8_sql = "select 'z" + "\u00e9" * 3000 + "' as utf8"  # byte 4096 is mid-character
    for sql in (long_sql, exact_sql, utf8_sql):
        r = pgq(fx, gw, fx.alice, sql)
        assert r.returncode == 0, r.stderr
    ev = gw.wait_event("query", sql=long_sql[:4096])
    assert ev["truncated"] is True and ev["kind"] == "simple", ev
    ev = gw.wait_event("query", sql=exact_sql)
    assert "truncated" not in ev, ev
    cut = utf8_sql.encode()[:4095].decode()
    ev = gw.wait_event("query", sql=cut)
    assert ev["truncated"] is True, ev
    assert not [e for e in gw.events("query") if len(e["sql"].encode()) > 4096]
    gw.stop()


def test_upstream_certificate_checked(fx):
    wrong_name = pg_service(fx, name="wrong-name")
    wrong_name["upstream_tls"]["server_name"] = "not-the-db.internal"
    wrong_ca = pg_service(fx, name="wrong-ca")
    wrong_ca["upstream_tls"]["ca"] = fx.dbca.crt  # did not sign PostgreSQL's certificate
    gw = start(fx, [wrong_name, wrong_ca])
    for name, why in (("wrong-name", "hostname mismatch"), ("wrong-ca", "issuer")):
        r = pgq(fx, gw, fx.alice, "select 1", service=name)
        assert r.returncode != 0, r.stdout
        assert "the database is not reachable" in r.stderr, r.stderr
        ev = gw.wait_event("upstream.failed", service=name)
        assert "certificate" in ev["reason"] and why in ev["reason"], ev
        assert ev["upstream"] == ["127.0.0.1:%d" % fx.pg.port], ev
        assert ev["user"] == "alice@example.com", ev
    assert not gw.events("session.start")
    gw.stop()


def test_reload_revokes_postgres_session(fx):
    gw = start(fx)
    alice = pgq(fx, gw, fx.alice, "select pg_sleep(30)", background=True)
    bob = pgq(fx, gw, fx.bob, "select pg_sleep(30)", user="bob", background=True)
    try:
        wait_for(lambda: len(active_backends(fx)) == 2, 10, "both sessions running")
        a_start = gw.wait_event("session.start", db_user="alice")
        b_start = gw.wait_event("session.start", db_user="bob")
        cfg = copy.deepcopy(gw.config)
        cfg["rules"] = [{"name": "bob-only", "effect": "allow", "services": ["*"],
                         "db_users": ["bob"]}]
        gw.write_config(cfg)
        gw.reload()
        wait_for(lambda: alice.poll() is not None, 1.0, "psql to end after the reload")
        assert gw.events("admin.reload", ok=True), gw.events("admin.reload")
        end = gw.wait_event("session.end", session=a_start["session"])
        assert end["reason"] == "revoked: policy", end
        # still admitted: bob goes on
        assert bob.poll() is None, finish(bob)
        assert not gw.events("session.end", session=b_start["session"])
        r = pgq(fx, gw, fx.alice, "select 1")
        assert r.returncode != 0 and "access denied" in r.stderr, r.stderr
        bob.send_signal(signal.SIGINT)
        finish(bob)
    finally:
        for p in (alice, bob):
            if p.poll() is None:
                p.kill()
                p.communicate()
    gw.stop()


def test_reload_between_tls_and_startup(fx):
    """The decision is taken when the StartupMessage arrives, under the
    configuration in force then: a reload that lands after the client's TLS
    handshake and before its StartupMessage must decide it."""
    gw = start(fx)
    port = svc_port(gw)
    tls, _ = direct_tls(fx, port, fx.alice)  # handshake done under generation 1
    cfg = copy.deepcopy(gw.config)
    cfg["rules"] = [{"name": "bob-only", "effect": "allow", "services": ["*"],
                     "db_users": ["bob"]}]
    gw.write_config(cfg)
    gw.reload()
    gw.wait_event("admin.reload", generation=2)
    tls.sendall(startup_message("alice"))
    msgs = read_until_ready(tls)
    errors = [error_fields(m[1]) for m in msgs if m[0] == b"E"]
    assert errors and errors[0].get("C") == "28000", msgs
    assert "access denied" in errors[0].get("M", ""), errors
    denied = gw.wait_event("authz.denied", db_user="alice")
    assert denied["rule"] == "default-deny", denied
    assert not gw.events("session.start", db_user="alice")
    tls.close()
    gw.stop()


def test_admin_lock_ends_postgres_session(fx):
    admin = {"listen": "127.0.0.1:%d" % free_port(), "token_file": fx.token_file}
    gw = start(fx, admin=admin)
    wait_for(lambda: api(fx, gw, "GET", "/readyz")[0] == 200, 10, "the admin API")
    alice = pgq(fx, gw, fx.alice, "select pg_sleep(30)", background=True)
    try:
        wait_for(lambda: "alice" in active_backends(fx), 10, "alice's query running")
        s_start = gw.wait_event("session.start", db_user="alice")
        status, lock = api(fx, gw, "POST", "/v1/locks", {"user": "alice@example.com"})
        assert status == 201, (status, lock)
        wait_for(lambda: alice.poll() is not None, 1.0, "psql to end after the lock")
        end = gw.wait_event("session.end", session=s_start["session"])
        assert end["reason"] == "revoked: lock", end
        # psql says why, from the gateway's FATAL between backend messages
        _, _, err = finish(alice)
        assert "certgate: revoked: lock" in err, err
        r = pgq(fx, gw, fx.alice, "select 1")
        assert r.returncode != 0 and "access denied" in r.stderr, r.stderr
        denied = gw.wait_event("authz.denied", user="alice@example.com")
        assert denied["rule"] == "lock" and denied["db_user"] == "alice", denied
        status, _ = api(fx, gw, "DELETE", "/v1/locks/" + lock["id"])
        assert status in (200, 204), status
        r = pgq(fx, gw, fx.alice, "select 1")
        assert r.returncode == 0, r.stderr
    finally:
        if alice.poll() is None:
            alice.kill()
            alice.communicate()
    gw.stop()


def test_first_logins_at_once_on_every_worker(fx):
    """Each reload builds new TLS contexts; the first logins after it check
    PostgreSQL's certificate against the new CA objects on several workers at
    once. OpenSSL caches a certificate's extensions on first use under a lock
    not every reader takes (openssl#25202): the gateway decodes them before
    the workers share the context. Under ThreadSanitizer a race there stops
    the gateway."""
    gw = start(fx, gateway={"workers": 4})
    for round_ in range(4):
        if round_ > 0:
            gw.reload()
            wait_for(lambda: len(gw.events("admin.reload", ok=True)) == round_, 10,
                     "reload %d" % round_)
        procs = [pgq(fx, gw, fx.alice, "select 1", background=True) for _ in range(8)]
        for p in procs:
            code, out, err = finish(p, 30)
            assert code == 0 and out.strip() == "1", (round_, code, err, gw.output())
        assert gw.alive(), gw.output()
    gw.stop()


def test_minted_certificates_stay_in_memory(fx):
    def listing():
        found = set()
        for root, dirs, files in os.walk(fx.dir):
            if root == fx.pg.dir:
                dirs[:] = []  # PostgreSQL's own files change as it runs
            for name in files:
                found.add(os.path.join(root, name))
        return found

    def tmp_pems():
        tmp = tempfile.gettempdir()
        return {n for n in os.listdir(tmp) if n.endswith((".crt", ".pem", ".key"))}

    gw = start(fx)
    before, tmp_before = listing(), tmp_pems()
    for cert, db_user in ((fx.alice, "alice"), (fx.bob, "bob"),
                          (fx.alice, "alice@example.com"), (fx.dora, "alice")):
        r = pgq(fx, gw, cert, "select current_user", user=db_user)
        assert r.returncode == 0 and r.stdout.strip() == db_user, r.stderr
    assert len(gw.events("session.start")) == 4
    after = listing()
    assert after == before, "new files: %s" % sorted(after - before)
    assert tmp_pems() <= tmp_before, sorted(tmp_pems() - tmp_before)
    gw.stop()


# --- the StartupMessage: replication, pipelining, echoed names ---------------------

def tls_after_ssl_request(fx, port, cert):
    """libpq's sslmode path: SSLRequest, 'S', then TLS with cert."""
    sock, client = raw_connect(port)
    sock.sendall(SSL_REQUEST)
    assert recv_exact(sock, 1) == b"S"
    return client_ctx(fx, cert).wrap_socket(sock, server_hostname="localhost"), client


def test_replication_connections_refused(fx):
    """replication=true makes PostgreSQL start a walsender, which streams
    every database whatever the rule's db_names (a base backup): refused
    before the database is reached, unless the value is PostgreSQL's false
    (parse_bool: false, no, off, 0 and their prefixes, any case)."""
    gw = start(fx)
    port = svc_port(gw)
    for value in ("true", "database", "on", "yes", "1"):
        tls, client = tls_after_ssl_request(fx, port, fx.alice)
        msgs = login(tls, application_name="repl-" + value, replication=value)
        tls.close()
        assert msgs and msgs[-1][0] == b"E", (value, msgs)
        assert not any(m[0] == b"R" for m in msgs), (value, msgs)
        fields = error_fields(msgs[-1][1])
        assert fields.get("S") == "FATAL" and fields.get("C") == "28000", (value, fields)
        assert fields.get("M") == ("certgate: access denied: replication connections are not "
                                   "forwarded in postgres mode"), (value, fields)
        denied = gw.wait_event("authz.denied", client=client)
        assert denied["rule"] == "replication", (value, denied)
        assert denied["db_user"] == "alice" and denied["db_name"] == "postgres", denied
    assert not gw.events("session.start"), gw.events("session.start")
    # an ordinary session, said in any of PostgreSQL's ways
    for value in ("false", "off", "OFF", "0", "no"):
        tls, client = tls_after_ssl_request(fx, port, fx.alice)
        msgs = login(tls, application_name="not-repl", replication=value)
        assert msgs and msgs[-1][0] == b"Z", (value, msgs)
        tls.sendall(query_message("select backend_type from pg_stat_activity "
                                  "where pid = pg_backend_pid()"))
        reply = read_until_ready(tls)
        rows = [m[1] for m in reply if m[0] == b"D"]
        assert rows and rows[0].endswith(b"client backend"), (value, reply)
        tls.sendall(b"X" + struct.pack("!I", 4))
        tls.close()
        ev = gw.wait_event("session.start", client=client)
        assert ev["rule"] == "self", ev
    assert len(gw.events("authz.denied")) == 5, gw.events("authz.denied")
    gw.stop()


def test_data_after_startup_in_a_later_tls_record(fx):
    """The StartupMessage and a Query in two TLS records sent together,
    before any answer: refused like the two in one record (PostgreSQL reads
    nothing after the StartupMessage until it has answered); the Query runs
    nowhere."""
    fx.pg.sql("CREATE TABLE pipelined_marks (x int)")
    fx.pg.sql("GRANT INSERT, SELECT ON pipelined_marks TO alice")
    gw = start(fx, [pg_service(fx, audit_queries=True)])
    port = svc_port(gw)
    for direct in (False, True):
        sock, client = raw_connect(port)
        if not direct:
            sock.sendall(SSL_REQUEST)
            assert recv_exact(sock, 1) == b"S"
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_ctx(fx, fx.alice, ["postgresql"] if direct else None).wrap_bio(
            inc, out, server_hostname="localhost")
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = out.read()
                if data:
                    sock.sendall(data)
                chunk = sock.recv(65536)
                assert chunk, "closed during the handshake"
                inc.write(chunk)
        first = out.read()  # TLS 1.3: the client's Finished
        obj.write(startup_message("alice", application_name="pipelined"))
        one = out.read()
        obj.write(query_message("insert into pipelined_marks values (%d)" % direct))
        two = out.read()
        assert one and two and one[0] == two[0] == 0x17, (one[:5], two[:5])  # two records
        sock.sendall(first + one + two)
        # the gateway closes; whatever it sends is no session
        got = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionError, socket.timeout):
                break
            if not chunk:
                break
            inc.write(chunk)
            try:
                while True:
                    plain = obj.read(65536)
                    if not plain:
                        break
                    got += plain
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLError):
                pass
        sock.close()
        assert b"R\0\0\0\x08\0\0\0\0" not in got, got  # no AuthenticationOk
        ev = gw.wait_event("tls.rejected", client=client)
        assert ev["reason"] == "invalid startup packet", ev
        assert ev["detail"] == "data after the StartupMessage", ev
    time.sleep(0.3 * SLOW)  # a forwarded Query would have run by now
    assert fx.pg.sql("SELECT count(*) FROM pipelined_marks") == "0"
    assert not gw.events("session.start"), gw.events("session.start")
    assert not gw.events("query"), gw.events("query")
    # one record after the other, each waiting for its answer: served
    tls, client = tls_after_ssl_request(fx, port, fx.alice)
    assert login(tls, application_name="in-turn")[-1][0] == b"Z"
    tls.sendall(query_message("insert into pipelined_marks values (7)"))
    assert read_until_ready(tls)[-1][0] == b"Z"
    tls.sendall(b"X" + struct.pack("!I", 4))
    tls.close()
    assert fx.pg.sql("SELECT x FROM pipelined_marks") == "7"
    gw.stop()


def test_error_response_hides_control_characters(fx):
    """A refusal quotes the db user the client sent: its control characters
    reach the client's terminal as '?', never as escape sequences."""
    gw = start(fx)
    port = svc_port(gw)
    for user, shown in (("\x1b[2Jevil", "?[2Jevil"), ("a\x07b\x7fc\u009b2Jd", "a?b?c?2Jd")):
        tls, client = tls_after_ssl_request(fx, port, fx.alice)
        msgs = login(tls, user=user)
        tls.close()
        assert msgs and msgs[-1][0] == b"E", msgs
        raw = msgs[-1][1]
        fields = error_fields(raw)
        assert fields.get("C") == "28000", fields
        assert "db user %s on database postgres" % shown in fields.get("M", ""), fields
        assert b"\x1b" not in raw and b"\x07" not in raw and b"\x7f" not in raw, raw
        assert "\u009b".encode() not in raw, raw  # the 8-bit CSI
        denied = gw.wait_event("authz.denied", client=client)
        assert denied["db_user"] == user and denied["rule"] == "default-deny", denied
    gw.stop()


if __name__ == "__main__":
    tests = [test_psql_straight_to_gateway, test_db_users_and_db_names,
             test_plaintext_startup_refused, test_first_packet_edge_cases,
             test_direct_tls_alpn, test_cancel_request, test_cancel_key_checked,
             test_query_audit_pgbench, test_first_logins_at_once_on_every_worker,
             test_upstream_certificate_checked, test_reload_revokes_postgres_session,
             test_reload_between_tls_and_startup,
             test_admin_lock_ends_postgres_session, test_minted_certificates_stay_in_memory,
             test_replication_connections_refused, test_data_after_startup_in_a_later_tls_record,
             test_error_response_hides_control_characters]
    sys.exit(run(tests, setup=setup, teardown=lambda fx: fx.close()))
