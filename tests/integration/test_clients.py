"""Real PostgreSQL clients with the settings docs/clients.md gives, in both
modes: psql, psycopg2, psycopg 3, asyncpg (Debian packages), node-postgres
(npm pg, pinned in tests/clients/node) and pgjdbc (Debian
libpostgresql-jdbc-java, run with `java File.java`).

Every client connects to an address (127.0.0.1) and verifies a name that is
not that address: PostgreSQL's certificate names only db.internal (tunnel
mode, through `certgate connect`), the gateway's only localhost, gw.internal
and billing.gw.internal (postgres mode). For each client and mode: a query
that shows who PostgreSQL saw, a wrong name refused by the client, a refusal
by the gateway whose text is what the client shows (recorded here and in
docs/clients.md), and a query cancel that PostgreSQL logs as cancelled.

The client programs (tests/clients) speak one line protocol: a command per
line (an URL query string), a JSON reply per line."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

from harness import (CA, SLOW, Connector, Fixture, Gateway, Postgres, Process, free_port,
                     run, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENTS = os.path.join(HERE, "..", "clients")
PGJDBC_JAR = "/usr/share/java/postgresql.jar"
PY = "/usr/bin/python3"  # Debian's, with Debian's psycopg2, psycopg and asyncpg

IDENTITY = "select current_user, client_dn from pg_stat_ssl where pid = pg_backend_pid()"
CANCELLED = "canceling statement due to user request"

RULES = [
    {"name": "no-contractors", "effect": "deny", "services": ["*"],
     "users": ["*@contractor.example"]},
    {"name": "no-superuser", "effect": "deny", "services": ["billing-db"],
     "db_users": ["postgres"]},
    {"name": "staff", "effect": "allow", "services": ["orders-db"], "users": ["*@example.com"]},
    {"name": "self", "effect": "allow", "services": ["billing-db"],
     "db_users": ["{user.local@example.com}"], "db_names": ["postgres"]},
]

# What each client shows when the gateway refuses it. Tunnel mode: an
# ErrorResponse in place of the SSLRequest's answer (the reason is in the
# connector's log); postgres mode: the gateway's FATAL inside TLS.
REASON = "certgate: access denied: denied by rule no-superuser"
LIBPQ_TUNNEL = "server sent an error response during SSL exchange"
REFUSAL = {
    "psql": {"tunnel": LIBPQ_TUNNEL, "postgres": "FATAL:  " + REASON},
    "psycopg2": {"tunnel": LIBPQ_TUNNEL, "postgres": "FATAL:  " + REASON},
    "psycopg": {"tunnel": LIBPQ_TUNNEL, "postgres": "FATAL:  " + REASON},
    "asyncpg": {"tunnel": 'PostgreSQL server at "127.0.0.1:{port}" rejected SSL upgrade',
                "postgres": REASON},
    "node-postgres": {"tunnel": "There was an error establishing an SSL connection",
                      "postgres": REASON},
    "pgjdbc": {"tunnel": "The server does not support SSL.", "postgres": "FATAL: " + REASON},
}
# ... and the SQLSTATE of that refusal, where the client reports one
REFUSAL_SQLSTATE = {
    "asyncpg": {"tunnel": None, "postgres": "28000"},
    "node-postgres": {"tunnel": None, "postgres": "28000"},
    "pgjdbc": {"tunnel": "08004", "postgres": "28000"},
}
# ... and when the certificate does not carry the name it verifies ({cert}:
# the certificate's first name, and libpq's count of the others)
LIBPQ_NAME = '{cert} does not match host name "wrong.internal"'
WRONG_NAME = {
    "psql": LIBPQ_NAME,
    "psycopg2": LIBPQ_NAME,
    "psycopg": LIBPQ_NAME,
    "asyncpg": "certificate verify failed: Hostname mismatch, certificate is not valid for "
               "'wrong.internal'",
    "node-postgres": "Hostname/IP does not match certificate's altnames: "
                     "Host: wrong.internal. is not in the cert's altnames: {altnames}",
    "pgjdbc": "The hostname wrong.internal could not be verified by hostnameverifier "
              "PgjdbcHostnameVerifier.",
}


# --- fixture -----------------------------------------------------------------------

def setup():
    fx = Fixture(with_postgres=False)
    fx.dbca = CA(fx.path("dbca"), name="db ca")
    os.chmod(fx.dbca.dir, 0o755)
    # PostgreSQL's certificate names db.internal only: a client that connects
    # to 127.0.0.1 must be told which name to verify
    pg_cert = fx.ca.server("pg", dns=("db.internal",), ips=())
    # tunnel mode: PostgreSQL verifies the login certificate itself
    fx.pg_tunnel = Postgres(fx.path("pg-tunnel"), pg_cert, fx.ca.crt)
    # postgres mode: PostgreSQL trusts only the gateway's minting CA
    fx.pg_mode = Postgres(fx.path("pg-mode"), pg_cert, fx.dbca.crt,
                          hba_lines=["local all all trust", "hostssl all all 127.0.0.1/32 cert"],
                          ident_lines=[""])
    for pg in (fx.pg_tunnel, fx.pg_mode):
        pg.sql("CREATE ROLE alice LOGIN")
    fx.alice = fx.ca.issue("alice", "alice@example.com", extra=("--pk8",))
    fx.carl = fx.ca.issue("carl", "carl@contractor.example", extra=("--pk8",))
    for cert in (fx.alice, fx.carl):
        cert.pk8 = cert.key[:-len(".key")] + ".pk8"
    named = fx.ca.server("gw-named", dns=("localhost", "gw.internal", "billing.gw.internal"),
                         ips=())
    services = [
        {"name": "orders-db", "sni": ["orders-db.internal"],
         "upstream": ["127.0.0.1:%d" % fx.pg_tunnel.port], "require_inner_tls": True},
        {"name": "billing-db", "sni": ["billing.gw.internal"], "mode": "postgres",
         "listen": "127.0.0.1:%d" % free_port(), "upstream": ["127.0.0.1:%d" % fx.pg_mode.port],
         "upstream_tls": {"ca": fx.ca.crt, "server_name": "db.internal",
                          "client_ca_cert": fx.dbca.crt, "client_ca_key": fx.dbca.key}},
    ]
    cfg = fx.config(services, RULES, gateway={"cert": named.crt, "key": named.key})
    # one gateway and two connectors for the whole file (not in fx.procs, which
    # the harness reaps after every test)
    fx.gw = Gateway(fx.dir, cfg, name="gw")
    fx.shared_port = fx.gw.ports()[0]
    fx.pg_port = int(services[1]["listen"].rsplit(":", 1)[1])
    fx.conn_alice = Connector(fx.dir, fx.shared_port, "orders-db", fx.alice, fx.ca.crt,
                              name="connect-alice")
    fx.conn_carl = Connector(fx.dir, fx.shared_port, "orders-db", fx.carl, fx.ca.crt,
                             name="connect-carl")
    # pgjdbc connects to what the name resolves to: a hosts file for the JVM
    fx.hosts = fx.path("java-hosts")
    with open(fx.hosts, "w") as f:
        f.write("127.0.0.1 db.internal gw.internal billing.gw.internal wrong.internal\n")
    fx.carl_refusals = 0
    return fx


def teardown(fx):
    for p in (fx.conn_alice, fx.conn_carl):
        p.stop()
    fx.gw.stop()
    fx.pg_tunnel.stop()
    fx.pg_mode.stop()
    fx.close()


def endpoint(fx, mode, who=None, name=None, **extra):
    """The generic connection parameters the client programs map to their own."""
    who = who or fx.alice
    if mode == "tunnel":
        conn = fx.conn_carl if who is fx.carl else fx.conn_alice
        c = {"host": "db.internal", "port": conn.port}
    else:
        c = {"host": "gw.internal", "port": fx.pg_port}
    c.update({"addr": "127.0.0.1", "user": "alice", "dbname": "postgres",
              "rootcert": fx.ca.crt, "cert": who.crt, "key": who.key, "pk8": who.pk8})
    if name:
        c["host"] = name
    c.update(extra)
    return c


# --- clients -----------------------------------------------------------------------

class LineClient:
    """A client program under tests/clients, driven over its stdin/stdout."""

    def __init__(self, fx, name, argv):
        self.name = name
        self.err_path = fx.path("client-%s.stderr" % name)
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self, timeout=60):
        try:
            line = self.lines.get(timeout=timeout * SLOW)
        except queue.Empty:
            raise AssertionError("%s said nothing in %ss" % (self.name, timeout))
        if line is None:
            with open(self.err_path) as f:
                raise AssertionError("%s exited (%s): %s" % (self.name, self.proc.wait(),
                                                             f.read()[-3000:]))
        return json.loads(line)

    def command(self, op, conn, sql):
        self.send(urllib.parse.urlencode(dict(conn, op=op, sql=sql)))

    def query(self, conn, sql):
        self.command("query", conn, sql)
        return self.read()

    def cancel(self, conn, sql, running):
        """Starts sql, calls running() once the client sent it, then cancels."""
        self.command("cancel", conn, sql)
        said = self.read()
        assert said == {"running": True}, said
        running()
        self.send("go")
        return self.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()


class Psql:
    """psql with the libpq settings of docs/clients.md (host + hostaddr)."""
    name = "psql"

    @staticmethod
    def conninfo(c):
        return ("host=%(host)s hostaddr=%(addr)s port=%(port)s user=%(user)s dbname=%(dbname)s "
                "sslmode=verify-full sslrootcert=%(rootcert)s sslcert=%(cert)s sslkey=%(key)s "
                "connect_timeout=10" % c)

    def _start(self, c, sql):
        return subprocess.Popen(["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                                 self.conninfo(c), "-c", sql], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PGAPPNAME="psql"))

    @staticmethod
    def _result(proc, out, err):
        if proc.returncode == 0:
            return {"ok": True, "rows": [line.split("\t") for line in out.splitlines()]}
        return {"ok": False, "error": err.strip()}

    def query(self, c, sql):
        proc = self._start(c, sql)
        out, err = proc.communicate(timeout=60 * SLOW)
        return self._result(proc, out, err)

    def cancel(self, c, sql, running):
        proc = self._start(c, sql)
        try:
            running()
            proc.send_signal(signal.SIGINT)  # psql sends a CancelRequest
            out, err = proc.communicate(timeout=60 * SLOW)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return self._result(proc, out, err)

    def close(self):
        pass


def python_client(fx, name, script):
    return LineClient(fx, name, [PY, os.path.join(CLIENTS, script)])


def node_client(fx):
    setup_script = os.path.join(CLIENTS, "node", "setup")
    proc = subprocess.run([setup_script], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("tests/clients/node/setup failed (%d): %s%s"
                           % (proc.returncode, proc.stdout, proc.stderr))
    return LineClient(fx, "node-postgres", ["node", os.path.join(CLIENTS, "node", "client.js")])


def pgjdbc_client(fx):
    for need in ("java", "javac"):
        if subprocess.run(["sh", "-c", "command -v " + need], capture_output=True).returncode:
            raise RuntimeError("%s not found (deploy/install-deps: default-jdk-headless)" % need)
    if not os.path.exists(PGJDBC_JAR):
        raise RuntimeError(PGJDBC_JAR + " not found (deploy/install-deps: "
                           "libpostgresql-jdbc-java)")
    return LineClient(fx, "pgjdbc", ["java", "-Djdk.net.hosts.file=" + fx.hosts,
                                     "-cp", PGJDBC_JAR,
                                     os.path.join(CLIENTS, "java", "PgjdbcClient.java")])


# --- the checks every client goes through ------------------------------------------

def active(pg, marker):
    return pg.sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                  "AND query LIKE '%%%s%%' AND pid <> pg_backend_pid()" % marker) == "1"


def logged_cancel(pg, marker):
    """PostgreSQL's log says the statement carrying marker was cancelled."""
    with open(os.path.join(pg.dir, "postgres.log"), errors="replace") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if "STATEMENT:" in line and marker in line and i > 0 and CANCELLED in lines[i - 1]:
            return True
    return False


def check_query(fx, client, mode, **extra):
    r = client.query(endpoint(fx, mode, **extra), IDENTITY)
    assert r["ok"], (client.name, mode, r)
    # tunnel mode: PostgreSQL saw the login certificate itself; postgres
    # mode: the certificate the gateway minted for the db user
    want = "/CN=alice@example.com" if mode == "tunnel" else "/CN=alice"
    assert r["rows"] == [["alice", want]], (client.name, mode, r)


def check_wrong_name(fx, client, mode):
    r = client.query(endpoint(fx, mode, name="wrong.internal"), "select 1")
    assert not r["ok"], (client.name, mode, r)
    if mode == "tunnel":
        fill = {"cert": 'server certificate for "db.internal"', "altnames": "DNS:db.internal"}
    else:
        fill = {"cert": 'server certificate for "localhost" (and 2 other names)',
                "altnames": "DNS:localhost, DNS:gw.internal, DNS:billing.gw.internal"}
    want = WRONG_NAME[client.name].format(**fill)
    assert want in r["error"], (client.name, mode, want, r)
    return r


def check_refusal(fx, client, mode):
    gw = fx.gw
    before = len(gw.events("authz.denied"))
    if mode == "tunnel":
        c = endpoint(fx, mode, who=fx.carl)
    else:
        c = endpoint(fx, mode, user="postgres")
    r = client.query(c, "select 1")
    assert not r["ok"], (client.name, mode, r)
    want = REFUSAL[client.name][mode].format(port=c["port"])
    assert want in r["error"], (client.name, mode, want, r)
    if client.name in REFUSAL_SQLSTATE:
        assert r["sqlstate"] == REFUSAL_SQLSTATE[client.name][mode], (client.name, mode, r)
    for generic in ("server closed the connection unexpectedly",
                    "Connection terminated unexpectedly", "EOFException"):
        assert generic not in r["error"], (client.name, mode, r)
    denied = wait_for(lambda: gw.events("authz.denied")[before:], 10, "authz.denied")
    if mode == "tunnel":
        assert denied[-1]["user"] == "carl@contractor.example", denied
        assert denied[-1]["rule"] == "no-contractors", denied
        wait_for(lambda: fx.conn_carl.output().count(
            "the gateway refused it: denied by rule no-contractors") > fx.carl_refusals, 10,
            "the connector's log line")
        fx.carl_refusals = fx.conn_carl.output().count("the gateway refused it")
    else:
        assert denied[-1]["rule"] == "no-superuser" and denied[-1]["db_user"] == "postgres", \
            denied
    return r


def check_cancel(fx, client, mode):
    pg = fx.pg_tunnel if mode == "tunnel" else fx.pg_mode
    marker = "%s %s cancel" % (client.name, mode)
    sql = "select pg_sleep(60), '%s'" % marker
    t0 = []

    def running():
        wait_for(lambda: active(pg, marker), 20, "the query of %s to run" % client.name)
        t0.append(time.monotonic())

    r = client.cancel(endpoint(fx, mode), sql, running)
    elapsed = time.monotonic() - t0[0]
    assert not r["ok"], (client.name, mode, r)
    if client.name == "asyncpg":
        # asyncpg reports a cancelled task, then the connection answers again
        assert r["error"] == "CancelledError; then select 1 returned 1", r
    else:
        assert CANCELLED in r["error"], (client.name, mode, r)
        if "sqlstate" in r:
            assert r["sqlstate"] == "57014", r
    # well before pg_sleep(60) would end, even on a loaded machine
    assert elapsed < 30, elapsed
    wait_for(lambda: logged_cancel(pg, marker), 10, "PostgreSQL to log the cancel")
    assert not active(pg, marker)
    return r


def check_all(fx, client):
    fx.results = getattr(fx, "results", {})
    try:
        for mode in ("tunnel", "postgres"):
            check_query(fx, client, mode)
            wrong = check_wrong_name(fx, client, mode)
            refused = check_refusal(fx, client, mode)
            cancelled = check_cancel(fx, client, mode)
            for what, r in (("refusal", refused), ("wrong name", wrong), ("cancel", cancelled)):
                print("# %s, %s mode, %s: %s" % (client.name, mode, what, json.dumps(
                    {k: v for k, v in r.items() if k not in ("ok", "rows")})))
    finally:
        client.close()
    assert "certgate: warn:" not in fx.conn_alice.output(), fx.conn_alice.output()


# --- tests -------------------------------------------------------------------------

def test_psql(fx):
    check_all(fx, Psql())


def test_psycopg2(fx):
    check_all(fx, python_client(fx, "psycopg2", "psycopg2_client.py"))


def test_psycopg3(fx):
    check_all(fx, python_client(fx, "psycopg", "psycopg_client.py"))


def test_asyncpg(fx):
    client = python_client(fx, "asyncpg", "asyncpg_client.py")
    try:
        # direct TLS (PostgreSQL 17's sslnegotiation=direct) with ALPN postgresql
        check_query(fx, client, "postgres", direct="1")
        # without the ALPN the gateway refuses, as PostgreSQL 17 does: this
        # also shows that direct_tls=True really skipped the SSLRequest
        before = len(fx.gw.events("tls.rejected"))
        r = client.query(endpoint(fx, "postgres", direct="1", alpn="0"), "select 1")
        assert not r["ok"], r
        rejected = wait_for(lambda: fx.gw.events("tls.rejected")[before:], 10, "tls.rejected")
        assert rejected[-1]["reason"] == "direct TLS without ALPN postgresql", rejected
        print("# asyncpg, direct TLS without ALPN: %s" % json.dumps(r))
    except Exception:
        client.close()
        raise
    check_all(fx, client)


def test_node_postgres(fx):
    client = node_client(fx)
    try:
        # sslnegotiation 'direct' on the gateway's shared listener, where TLS
        # comes first and the service is picked by SNI (= servername): only
        # direct TLS with ALPN postgresql can work there
        c = endpoint(fx, "postgres", name="billing.gw.internal", port=fx.shared_port, direct="1")
        r = client.query(c, IDENTITY)
        assert r["ok"] and r["rows"] == [["alice", "/CN=alice"]], r
    except Exception:
        client.close()
        raise
    check_all(fx, client)


def test_pgjdbc(fx):
    check_all(fx, pgjdbc_client(fx))


def test_name_in_hosts_file_for_any_client(fx):
    """docs/clients.md's way for every client at once: the connector on a
    loopback address of its own, the database's name pointing there in
    /etc/hosts (private to this test: a mount namespace), and psql given
    the name alone, no hostaddr."""
    port = free_port()
    conn = Process(["connect", "--gateway", "localhost:%d" % fx.shared_port,
                    "--service", "orders-db", "--listen", "127.0.0.2:%d" % port,
                    "--cert", fx.alice.crt, "--key", fx.alice.key, "--ca", fx.ca.crt],
                   fx.path("connect-hosts.log"))
    fx.procs.append(conn)
    wait_for(lambda: "listening on" in conn.output() or not conn.alive(), 10, "the connector")
    hosts = fx.path("etc-hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n127.0.0.2 db.internal\n")
    c = endpoint(fx, "tunnel")
    c["port"] = port
    info = Psql.conninfo(c).replace(" hostaddr=127.0.0.1", "")
    assert "hostaddr" not in info
    before = len(fx.gw.events("session.start", service="orders-db"))
    r = subprocess.run(["unshare", "--mount", "sh", "-c",
                        'mount --bind "$0" /etc/hosts && exec psql -X -A -t "$1" -c "$2"',
                        hosts, info, IDENTITY],
                       capture_output=True, text=True, timeout=60 * SLOW)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "alice|/CN=alice@example.com", r.stdout
    assert len(fx.gw.events("session.start", service="orders-db")) == before + 1


if __name__ == "__main__":
    tests = [test_psql, test_psycopg2, test_psycopg3, test_asyncpg, test_node_postgres,
             test_pgjdbc, test_name_in_hosts_file_for_any_client]
    sys.exit(run(tests, setup=setup, teardown=teardown))
