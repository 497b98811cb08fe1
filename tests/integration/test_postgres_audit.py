"""postgres mode: the query audit cannot be evaded, names PostgreSQL would
cut are refused, and audit lines keep every field whatever bytes a client
sends (security review findings 3, 4 and 5, issue 12).

Raw protocol clients speak to the gateway in front of a real PostgreSQL 15
(the fixture of test_postgres_mode: the database trusts only the gateway's
minted certificates)."""

import json
import os
import signal
import socket
import struct
import subprocess
import sys

from harness import SLOW, Cert, run, wait_for, whole_lines
from test_postgres_mode import (client_ctx, direct_tls, error_fields, pg_service, pgq, query_message,
                                raw_connect, read_message, read_until_ready, setup, start,
                                svc_port)

SECRET_DB = "secret_" + "x" * 56  # 63 bytes: NAMEDATALEN - 1
assert len(SECRET_DB) == 63

RULES = [
    {"name": "no-secret", "effect": "deny", "services": ["*"], "db_names": [SECRET_DB]},
    {"name": "self", "effect": "allow", "services": ["*"], "db_users": ["{user.local}"]},
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"]},
]


# --- raw messages ------------------------------------------------------------------

def msg(type_, body):
    return type_ + struct.pack("!I", len(body) + 4) + body


def startup(user, database, **params):
    """A StartupMessage from bytes (a raw client may send any)."""
    body = struct.pack("!I", 196608)
    items = [(b"user", user), (b"database", database)]
    items += [(k.encode(), v) for k, v in sorted(params.items())]
    for k, v in items:
        body += k + b"\0" + v + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def parse(name, sql, types=()):
    body = name + b"\0" + sql + b"\0" + struct.pack("!H", len(types))
    for t in types:
        body += struct.pack("!I", t)
    return msg(b"P", body)


def bind_execute_sync(stmt):
    bind = msg(b"B", b"\0" + stmt + b"\0" + struct.pack("!HHH", 0, 0, 0))
    execute = msg(b"E", b"\0" + struct.pack("!I", 0))
    return bind + execute + msg(b"S", b"")


def function_call(oid, *int4_args):
    body = struct.pack("!IHH", oid, 1, 1)  # one format code for all: binary
    body += struct.pack("!H", len(int4_args))
    for a in int4_args:
        body += struct.pack("!Ii", 4, a)
    body += struct.pack("!H", 1)  # binary result
    return msg(b"F", body)


def session(fx, gw, cert=None, user=b"alice", database=b"postgres", app="raw"):
    """A logged-in raw client: (tls, client address)."""
    tls, client = direct_tls(fx, svc_port(gw), cert or fx.alice)
    tls.sendall(startup(user, database, application_name=app.encode()))
    msgs = read_until_ready(tls)
    assert msgs and msgs[-1][0] == b"Z", msgs
    return tls, client


def data_rows(msgs):
    return [m[1] for m in msgs if m[0] == b"D"]


def refused_with(tls):
    """The messages up to the gateway's FATAL and the end of the stream."""
    msgs = []
    while True:
        m = read_message(tls)
        if m is None:
            return msgs
        msgs.append(m)


# --- finding 3: the query audit ------------------------------------------------------

def test_long_statement_name_is_audited(fx):
    gw = start(fx, [pg_service(fx, audit_queries=True)], rules=RULES)
    tls, client = session(fx, gw)
    name = b"s" * 5000  # the finding: longer than all that was kept of a Parse
    tls.sendall(parse(name, b"select 42 as evaded") + bind_execute_sync(name))
    reply = read_until_ready(tls)
    assert any(r.endswith(b"42") for r in data_rows(reply)), reply
    ev = gw.wait_event("query", client=client, sql="select 42 as evaded")
    assert ev["kind"] == "parse", ev
    assert ev["statement"] == "s" * 256 and ev["statement_truncated"] is True, ev
    assert "truncated" not in ev, ev

    # a long name and long SQL: each bounded on its own, the SQL on a character
    sql = "select 'z" + "\u00e9" * 3000 + "' as long"  # byte 4096 is inside a character
    tls.sendall(parse(b"n" * 300, sql.encode()) + bind_execute_sync(b"n" * 300))
    reply = read_until_ready(tls)
    assert data_rows(reply), reply
    cut = sql.encode()[:4096].decode("utf-8", "ignore")
    ev = gw.wait_event("query", client=client, sql=cut)
    assert ev["truncated"] is True and ev["statement_truncated"] is True, ev
    assert len(ev["sql"].encode()) == 4095, len(ev["sql"].encode())

    # a named statement within bounds: its name as sent, no flags
    tls.sendall(parse(b"stmt_1", b"select 1") + bind_execute_sync(b"stmt_1"))
    read_until_ready(tls)
    ev = gw.wait_event("query", client=client, sql="select 1")
    assert ev["statement"] == "stmt_1" and "statement_truncated" not in ev, ev
    tls.sendall(msg(b"X", b""))
    tls.close()
    gw.stop()


def test_malformed_messages_are_refused(fx):
    gw = start(fx, [pg_service(fx, audit_queries=True)], rules=RULES)
    cases = [
        # what is sent, the reason the session ends with
        (msg(b"Q", b"select 1"), "a string without its terminating NUL"),
        (msg(b"P", b"x" * 5000), "a string without its terminating NUL"),
        (msg(b"P", b"s\0select 1\0\0\1"), "a message shorter than its fields"),
        (msg(b"Q", b"select 1\0select 2\0"), "bytes after the end of a message's fields"),
        (b"Q" + struct.pack("!I", 3), "message length under 4"),
    ]
    for sent, why in cases:
        tls, client = session(fx, gw)
        tls.sendall(query_message("select 'before'") + sent)
        msgs = refused_with(tls)
        tls.close()
        errors = [error_fields(m[1]) for m in msgs if m[0] == b"E"]
        assert errors, (sent[:20], msgs)
        assert errors[-1]["S"] == "FATAL" and errors[-1]["C"] == "08P01", errors
        assert errors[-1]["M"] == "certgate: protocol violation: " + why, errors
        start_ev = gw.wait_event("session.start", client=client)
        end = gw.wait_event("session.end", session=start_ev["session"])
        assert end["reason"] == "protocol violation: " + why, end
    # a Query the gateway cannot read runs nowhere: nothing of it was audited
    assert not [e for e in gw.events("query") if e["sql"].startswith("select 1")], \
        gw.events("query")
    gw.stop()


def test_function_calls(fx):
    oid = int(fx.pg.sql("SELECT 'int4pl'::regproc::oid"))
    lo_oids = {int(o) for o in fx.pg.sql(
        "SELECT oid FROM pg_proc WHERE proname IN "
        "('lo_open', 'lowrite', 'lo_close', 'lo_creat', 'lo_create')").split()}
    gw = start(fx, [pg_service(fx, audit_queries=True),
                    pg_service(fx, name="strict-db", audit_queries=True,
                               function_calls="refuse")], rules=RULES)

    # audited: function OID and argument count
    tls, client = session(fx, gw)
    tls.sendall(function_call(oid, 40, 2))
    reply = read_until_ready(tls)
    results = [m[1] for m in reply if m[0] == b"V"]
    assert results == [struct.pack("!Ii", 4, 42)], reply
    ev = gw.wait_event("query", client=client, kind="function_call")
    assert ev["function_oid"] == oid and ev["args"] == 2 and ev["sql"] is None, ev
    assert "refused" not in ev, ev
    tls.sendall(msg(b"X", b""))
    tls.close()

    # psql's large objects go through FunctionCall (libpq's fast path)
    blob = fx.path("blob.bin")
    with open(blob, "wb") as f:
        f.write(os.urandom(3000))
    fx.pg.sql("GRANT EXECUTE ON FUNCTION lo_import(text) TO alice")
    r = pgq(fx, gw, fx.alice, "\\lo_import " + blob, extra_env={"PGAPPNAME": "lo"})
    assert r.returncode == 0, r.stderr
    lo = gw.wait_event("session.start", application_name="lo")
    gw.wait_event("session.end", session=lo["session"])
    calls = [e for e in gw.events("query", session=lo["session"])
             if e["kind"] == "function_call"]
    assert calls and {e["function_oid"] for e in calls} <= lo_oids, calls

    # refused: a FATAL, the session ends, the attempt is audited
    tls, client = direct_tls(fx, svc_port(gw, "strict-db"), fx.alice)
    tls.sendall(startup(b"alice", b"postgres", application_name=b"strict"))
    assert read_until_ready(tls)[-1][0] == b"Z"
    tls.sendall(function_call(oid, 40, 2))
    msgs = refused_with(tls)
    tls.close()
    assert not [m for m in msgs if m[0] == b"V"], msgs
    errors = [error_fields(m[1]) for m in msgs if m[0] == b"E"]
    assert errors and errors[-1]["C"] == "42501", msgs
    assert "function calls (FunctionCall messages) are refused" in errors[-1]["M"], errors
    ev = gw.wait_event("query", client=client, kind="function_call")
    assert ev["refused"] is True and ev["function_oid"] == oid, ev
    start_ev = gw.wait_event("session.start", client=client)
    end = gw.wait_event("session.end", session=start_ev["session"])
    assert end["reason"] == "refused: function call", end
    # and psql's \lo_import there fails with that message
    r = pgq(fx, gw, fx.alice, "\\lo_import " + blob, service="strict-db")
    assert r.returncode != 0 and "function calls" in r.stderr, (r.stdout, r.stderr)
    gw.stop()


# --- finding 4: names PostgreSQL would cut --------------------------------------------

def test_names_over_63_bytes_refused(fx):
    fx.pg.sql('CREATE DATABASE "%s"' % SECRET_DB)
    # what PostgreSQL 15 does with a longer name: cuts it to 63 bytes, no word
    assert fx.pg.sql("SELECT current_database()", db=SECRET_DB + "_copy") == SECRET_DB
    gw = start(fx, rules=RULES)

    r = pgq(fx, gw, fx.alice, "select current_database()", db=SECRET_DB)
    assert r.returncode != 0, r.stdout
    ev = gw.wait_event("authz.denied", db_name=SECRET_DB)
    assert ev["rule"] == "no-secret", ev

    # the bypass: the denied name plus any suffix
    r = pgq(fx, gw, fx.alice, "select current_database()", db=SECRET_DB + "_copy")
    assert r.returncode != 0, "reached %s" % r.stdout
    assert "certgate: access denied: database name longer than 63 bytes" in r.stderr, r.stderr
    ev = gw.wait_event("authz.denied", db_name=SECRET_DB + "_copy")
    assert ev["rule"] == "name_too_long", ev
    assert ev["reason"] == ("database name longer than 63 bytes (PostgreSQL would cut it to "
                            "another name)"), ev
    assert ev["user"] == "alice@example.com" and ev["db_user"] == "alice", ev

    # user names the same way
    long_user = "alice" + "_" * 59
    r = pgq(fx, gw, fx.dora, "select 1", user=long_user)
    assert r.returncode != 0, r.stdout
    ev = gw.wait_event("authz.denied", db_user=long_user)
    assert ev["rule"] == "name_too_long", ev
    assert ev["reason"].startswith("db user longer than 63 bytes"), ev

    # 63 bytes exactly is a name like any other
    other = "public_" + "y" * 56
    fx.pg.sql('CREATE DATABASE "%s"' % other)
    r = pgq(fx, gw, fx.alice, "select current_database()", db=other)
    assert r.returncode == 0 and r.stdout.strip() == other, r.stderr
    assert not gw.events("session.start", db_name=SECRET_DB + "_copy")
    gw.stop()


# --- finding 5: audit fields never dropped --------------------------------------------

def test_non_utf8_fields_kept(fx):
    gw = start(fx, rules=RULES)

    # a db user that is not UTF-8: refused, and the line says who and why
    tls, client = direct_tls(fx, svc_port(gw), fx.alice)
    tls.sendall(startup(b"al\xffce", b"postgres"))
    msgs = read_until_ready(tls)
    tls.close()
    assert msgs and msgs[-1][0] == b"E", msgs
    ev = gw.wait_event("authz.denied", client=client)
    assert ev["db_user"] == "al\\xffce" and ev["db_name"] == "postgres", ev
    assert ev["reason"] == ("no rule allows user alice@example.com as db user al\\xffce on "
                            "database postgres of service billing-db"), ev
    assert ev["escaped"] == ["db_user", "reason"], ev

    # allowed, with a database and application name in LATIN1 (and a backslash)
    tls, client = direct_tls(fx, svc_port(gw), fx.dora)
    tls.sendall(startup(b"alice", b"caf\xe9", application_name=b"r\\port\xff"))
    msgs = read_until_ready(tls)  # PostgreSQL: no such database
    tls.close()
    ev = gw.wait_event("session.start", client=client)
    assert ev["db_name"] == "caf\\xe9", ev
    assert ev["application_name"] == "r\\x5cport\\xff", ev
    assert ev["escaped"] == ["db_name", "application_name"], ev
    gw.stop()


def test_tls_rejected_fields_kept(fx):
    gw = start(fx, rules=RULES)
    shared = int(gw.config["gateway"]["listen"][0].rsplit(":", 1)[1])

    # a subject longer than the 511 bytes kept, cut where a character would split
    key, crt = fx.path("long-subject.key"), fx.path("long-subject.crt")
    ou = "\u00e9" * 60
    for pad in ("", "a"):  # one of the two shifts the cut into a character
        last = pad + ou
        full = ",".join(["OU=" + last] + ["OU=" + ou] * 4 + ["CN=x"]).encode()
        if full[511] & 0xc0 == 0x80:
            break
    subj = "/CN=x" + "".join("/OU=%s" % ou for _ in range(4)) + "/OU=" + last
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-utf8", "-subj", subj,
         "-addext", "extendedKeyUsage=clientAuth"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert full[511] & 0xc0 == 0x80, "the 511-byte cut must land inside a character"
    ctx = client_ctx(fx, Cert(crt, key), ["postgresql"])
    ctx.check_hostname = False  # SNI is the service name; the certificate says localhost
    sock, _ = raw_connect(shared)
    try:
        ctx.wrap_socket(sock, server_hostname="billing-db").recv(1)
    except (OSError, ConnectionError):
        pass
    sock.close()
    ev = gw.wait_event("tls.rejected", reason="unknown ca")
    assert "subject" in ev, ev
    assert full.startswith(ev["subject"].encode()), ev["subject"]
    assert len(ev["subject"].encode()) == 510, len(ev["subject"].encode())  # not 511

    # an SNI that is not UTF-8 (any byte but NUL may be sent)
    proc = subprocess.run(
        [b"openssl", b"s_client", b"-connect", ("127.0.0.1:%d" % shared).encode(),
         b"-servername", b"db\xff.example", b"-cert", fx.alice.crt.encode(), b"-key",
         fx.alice.key.encode()], input=b"", capture_output=True, timeout=30)
    ev = gw.wait_event("tls.rejected", reason="unknown service")
    assert ev["sni"] == "db\\xff.example" and ev["escaped"] == ["sni"], (ev, proc.stderr)
    gw.stop()


# --- the query line is written before the statement runs ------------------------------

def switch_link(link, target):
    tmp = link + ".new"
    os.symlink(target, tmp)
    os.replace(tmp, link)


def read_events(path):
    with open(path) as f:
        return [json.loads(line) for line in whole_lines(f.read()) if line.strip()]


def test_query_not_forwarded_when_its_line_cannot_be_written(fx):
    """audit_queries with audit.on_failure "refuse": a statement whose query
    line cannot be written (a full disk: audit.path switched to /dev/full,
    then SIGUSR1) never reaches PostgreSQL; the session ends with 57P03."""
    fx.pg.sql("CREATE TABLE audited_marks (x int)")
    fx.pg.sql("GRANT INSERT, SELECT ON audited_marks TO alice")
    d = fx.path(fx.unique("full"))
    os.mkdir(d)
    real, link = os.path.join(d, "audit.real.jsonl"), os.path.join(d, "audit.jsonl")
    os.symlink(real, link)
    gw = start(fx, [pg_service(fx, audit_queries=True)], rules=RULES,
               audit={"path": link, "on_failure": "refuse"})
    try:
        tls, client = session(fx, gw)
        tls.sendall(query_message("insert into audited_marks values (1)"))
        assert read_until_ready(tls)[-1][0] == b"Z"
        gw.wait_event("query", client=client, sql="insert into audited_marks values (1)")

        switch_link(link, "/dev/full")  # gw.events() must not read it from here on
        gw.signal(signal.SIGUSR1)

        def failing():  # a refused connection makes the gateway write a line
            with socket.create_connection(("127.0.0.1", gw.ports()[0]),
                                          timeout=5 * SLOW) as s:
                s.sendall(b"not tls at all\r\n")
                try:
                    s.recv(16)
                except OSError:
                    pass
            return "audit: cannot write to" in gw.output()
        wait_for(failing, 10, "the audit writes to fail", interval=0.05)

        tls.sendall(query_message("insert into audited_marks values (2)"))
        msgs = read_until_ready(tls)  # up to the first E (or Z: it ran)
        assert not [m for m in msgs if m[0] in (b"C", b"Z")], msgs  # no INSERT 0 1
        errors = [error_fields(m[1]) for m in msgs if m[0] == b"E"]
        assert errors, msgs
        assert errors[-1]["S"] == "FATAL" and errors[-1]["C"] == "57P03", errors
        assert errors[-1]["M"] == "certgate: audit unavailable, try again later", errors
        assert read_message(tls) is None  # the session ended
        tls.close()
        assert fx.pg.sql("SELECT x FROM audited_marks ORDER BY x") == "1"
    finally:
        switch_link(link, real)
        gw.signal(signal.SIGUSR1)
    wait_for(lambda: [e for e in read_events(real) if e["event"] == "audit.resumed"], 10,
             "audit.resumed")
    assert not [e for e in read_events(real) if e["event"] == "query" and "(2)" in e["sql"]]
    assert fx.pg.sql("SELECT x FROM audited_marks ORDER BY x") == "1"
    gw.stop()


if __name__ == "__main__":
    tests = [test_long_statement_name_is_audited, test_malformed_messages_are_refused,
             test_function_calls, test_names_over_63_bytes_refused, test_non_utf8_fields_kept,
             test_tls_rejected_fields_kept,
             test_query_not_forwarded_when_its_line_cannot_be_written]
    sys.exit(run(tests, setup=setup, teardown=lambda fx: fx.close()))
