"""Session lifecycle against a real PostgreSQL 15 and real psql: reloads
(SIGHUP) that revoke live sessions or are refused, SIGTERM drain, SIGUSR1
audit reopen, the cut at certificate notAfter, idle timeouts, concurrency,
upstream failover and connect timeouts, require_inner_tls, a standard TLS
client instead of `certgate connect`, and a bulk transfer with backpressure
and half-close.

Every case asserts what the client sees and the audit event (with its
reason). Measured figures (revocation and expiry latency, RSS growth) are
printed as TAP comments."""

import copy
import datetime
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

from harness import SLOW, Fixture, free_port, psql, run, tls_client, wait_for

RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"], "min_trust": "high"},
    {"name": "no-contractors", "effect": "deny", "services": ["*"],
     "users": ["*@contractor.example"]},
]

# service names the gateway certificate carries, so that a standard client can
# send SNI = service name and still verify the gateway's host name
SERVICE_NAMES = ("orders-db", "silent", "bulk")


def note(fmt, *args):
    print("# " + (fmt % args if args else fmt), flush=True)


# --- fixture -------------------------------------------------------------------

class _Killable:
    """Lets Fixture.reap() kill a background psql a failed test left behind."""

    def __init__(self, proc):
        self.proc = proc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            pass


def setup():
    fx = Fixture(with_postgres=True)
    fx.pg.sql("CREATE ROLE alice LOGIN")
    # backends of sessions the gateway cut notice it during pg_sleep
    fx.pg.sql("ALTER SYSTEM SET client_connection_check_interval = '500ms'")
    fx.pg.sql("SELECT pg_reload_conf()")
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high")
    fx.gwcert = fx.ca.server("gateway-lifecycle", dns=("localhost",) + SERVICE_NAMES,
                             ips=("127.0.0.1",))
    return fx


def pg_addr(fx):
    return "127.0.0.1:%d" % fx.pg.port


def config(fx, services=None, rules=RULES, **gateway):
    gw = {"cert": fx.gwcert.crt, "key": fx.gwcert.key}
    gw.update(gateway)
    if services is None:
        services = [{"name": "orders-db", "upstream": [pg_addr(fx)]}]
    return fx.config(services, copy.deepcopy(rules), gateway=gw)


def background_psql(fx, port, sql, cert=None, app="certgate-test", **kw):
    p = psql(port, cert or fx.alice, fx.ca.crt, sql, background=True,
             extra_env={"PGAPPNAME": app}, **kw)
    fx.procs.append(_Killable(p))
    return p


def wait_active(fx, app, count=1, timeout=15):
    """Waits until `count` backends with application_name app run a query."""
    q = ("select count(*) from pg_stat_activity where application_name = '%s' "
         "and state = 'active' and query like 'select pg_sleep%%'" % app)
    wait_for(lambda: int(fx.pg.sql(q)) >= count, timeout, "%d active backend(s) of %s"
             % (count, app))


def wait_exit(proc, timeout):
    """Waits for a background process; returns (returncode, stdout, stderr,
    monotonic time it was seen to exit)."""
    wait_for(lambda: proc.poll() is not None, timeout, "psql to exit", interval=0.005)
    seen = time.monotonic()
    out, err = proc.communicate(timeout=5)
    return proc.returncode, out, err, seen


def ts_epoch(ts):
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def addr(sock):
    return "%s:%d" % sock.getsockname()[:2]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


# --- Python peers --------------------------------------------------------------

class SilentUpstream:
    """Accepts every connection and holds it: reads (and drops) what comes,
    never sends anything, closes on EOF."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    @staticmethod
    def _hold(conn):
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        conn.close()

    def close(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


class TlsPipe:
    """A TLS client on a raw socket through MemoryBIOs: one thread drives it,
    and close_notify can be sent while reading goes on (half-close), which
    SSLSocket cannot do."""

    def __init__(self, port, cert, ca, server_name, timeout=10):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        ctx.load_cert_chain(cert.crt, cert.key)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=server_name)
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        self.eof = False
        self.got_close_notify = False
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                if not self._fill():
                    raise ConnectionError("EOF during the TLS handshake")
        self.flush()

    def flush(self):
        data = self.out.read()
        if data:
            self.raw.sendall(data)

    def _fill(self):
        data = self.raw.recv(262144)
        if not data:
            self.inc.write_eof()
            self.eof = True
            return False
        self.inc.write(data)
        return True

    def send(self, data):
        view = memoryview(data)
        while view:
            n = self.obj.write(view[:65536])
            view = view[n:]
            self.flush()

    def read_available(self):
        """Plaintext already decryptable, without touching the socket;
        None at close_notify."""
        chunks = []
        while True:
            try:
                data = self.obj.read(262144)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                data = b""
            if not data:
                # close_notify: Python raises SSLZeroReturnError once we sent
                # ours too, and returns b"" while we have not
                self.got_close_notify = True
                self.flush()
                return b"".join(chunks) if chunks else None
            chunks.append(data)
        self.flush()
        return b"".join(chunks)

    def recv(self):
        """Blocks for plaintext; b"" once the peer closed (close_notify or
        EOF)."""
        while True:
            data = self.read_available()
            if data is None:
                return b""
            if data:
                return data
            if self.eof or not self._fill():
                return b""

    def close_notify(self):
        """Sends close_notify and FIN; reading stays possible."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # sent; the peer's own close_notify comes later
        self.flush()
        self.raw.shutdown(socket.SHUT_WR)

    def close(self):
        self.raw.close()


class Forwarder:
    """A standard mTLS client standing in for `certgate connect`: listens on
    loopback and, for every connection, opens a TLS connection to the gateway
    with the login certificate and SNI = service, then pumps bytes both ways
    (one thread per connection)."""

    def __init__(self, gateway_port, service, cert, ca):
        self.args = (gateway_port, cert, ca, service)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.errors = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _pump(self, conn):
        tls = None
        try:
            tls = TlsPipe(*self.args)
            while True:
                readable, _, _ = select.select([conn, tls.raw], [], [], 30)
                if not readable:
                    break
                if conn in readable:
                    data = conn.recv(65536)
                    if not data:
                        break
                    tls.send(data)
                if tls.raw in readable:
                    alive = tls._fill()
                    data = tls.read_available()
                    if data:
                        conn.sendall(data)
                    if data is None or not alive:
                        break
        except (OSError, ssl.SSLError) as e:
            self.errors.append(repr(e))
        finally:
            conn.close()
            if tls is not None:
                tls.close()

    def close(self):
        self.sock.close()


# --- reloads -------------------------------------------------------------------

def test_sighup_revokes_live_session(fx):
    gw = fx.gateway(config(fx))
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    p = background_psql(fx, conn.port, "select pg_sleep(30)", app="revoke")
    start = gw.wait_event("session.start", user="alice@example.com")
    assert start["rule"] == "dba", start
    wait_active(fx, "revoke")

    cfg = copy.deepcopy(gw.config)
    cfg["rules"] = [{"name": "ops-only", "effect": "allow", "services": ["*"],
                     "groups": ["ops"]}]
    gw.write_config(cfg)
    t0 = time.monotonic()
    gw.reload()
    code, _, err, seen = wait_exit(p, 5)
    latency = seen - t0
    note("revocation latency (SIGHUP -> psql exit): %.0f ms", latency * 1000)
    assert code != 0, "psql exited 0 after its session was revoked"
    assert latency < 1.0 * SLOW, "psql still ran %.2fs after the reload" % latency

    end = gw.wait_event("session.end", session=start["session"])
    assert end["reason"] == "revoked: policy", end
    reloads = gw.events("admin.reload")
    assert len(reloads) == 1, reloads
    assert reloads[0]["ok"] is True and reloads[0]["generation"] == 2, reloads
    assert reloads[0]["errors"] == [], reloads

    r = psql(conn.port, fx.alice, fx.ca.crt, "select 1")
    assert r.returncode != 0, r.stdout
    denied = gw.wait_event("authz.denied", user="alice@example.com")
    assert denied["rule"] == "default-deny", denied
    assert len(gw.events("session.start")) == 1
    conn.stop()
    gw.stop()
    assert gw.events("gateway.stop")[-1]["generation"] == 2


def _error_location(text, needle):
    """1-based line of the first line of text containing needle."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in the config" % needle)


def test_sighup_invalid_config_keeps_old_policy(fx):
    gw = fx.gateway(config(fx))
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    good = copy.deepcopy(gw.config)
    name = os.path.basename(gw.config_path)

    # 1. a syntax error: a stray comma opening the rules array
    text = json.dumps(good, indent=2).replace('"rules": [', '"rules": [,', 1)
    bad_line = _error_location(text, '"rules": [,')
    with open(gw.config_path, "w") as f:
        f.write(text)
    gw.reload()
    first = gw.wait_event("admin.reload")
    assert first["ok"] is False, first
    assert first["generation"] == 1, first
    assert first["errors"], first
    loc = re.compile(re.escape(name) + r":%d:\d+: " % bad_line)
    assert any(loc.search(e) for e in first["errors"]), first["errors"]
    wait_for(lambda: loc.search(gw.output()), 5, "the syntax error in the log")

    # 2. a semantic error: a duration that is not one
    bad = copy.deepcopy(good)
    bad["gateway"]["idle_timeout"] = "5 parsecs"
    gw.write_config(bad)
    dur_line = _error_location(json.dumps(bad, indent=2), '"idle_timeout"')
    gw.reload()
    wait_for(lambda: len(gw.events("admin.reload")) == 2, 5, "the second admin.reload")
    second = gw.events("admin.reload")[1]
    assert second["ok"] is False and second["generation"] == 1, second
    loc2 = re.compile(re.escape(name) + r":%d:\d+: gateway\.idle_timeout" % dur_line)
    assert any(loc2.search(e) for e in second["errors"]), second["errors"]
    wait_for(lambda: loc2.search(gw.output()), 5, "the duration error in the log")
    log_lines = [l for l in gw.output().splitlines() if loc.search(l) or loc2.search(l)]
    note("logged: %s", " | ".join(log_lines))

    # the old policy is still in force
    r = psql(conn.port, fx.alice, fx.ca.crt, "select current_user")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "alice", r.stdout
    start = gw.wait_event("session.start", user="alice@example.com")
    assert start["rule"] == "dba", start
    assert not gw.events("admin.reload", ok=True)
    conn.stop()
    gw.stop()
    assert gw.events("gateway.stop")[-1]["generation"] == 1


# --- signals -------------------------------------------------------------------

def test_sigterm_ends_live_session(fx):
    gw = fx.gateway(config(fx))
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    p = background_psql(fx, conn.port, "select pg_sleep(30)", app="sigterm")
    start = gw.wait_event("session.start", user="alice@example.com")
    wait_active(fx, "sigterm")
    t0 = time.monotonic()
    assert gw.stop() == 0
    code, _, err, seen = wait_exit(p, 5)
    note("SIGTERM -> psql exit: %.0f ms", (seen - t0) * 1000)
    assert code != 0, "psql exited 0 though the gateway shut down"
    events = gw.events()
    ends = [e for e in events if e["event"] == "session.end"]
    assert len(ends) == 1 and ends[0]["session"] == start["session"], ends
    assert ends[0]["reason"] == "shutdown", ends
    assert events[-1]["event"] == "gateway.stop", events[-1]
    conn.stop()


def test_sigusr1_reopens_audit_file(fx):
    gw = fx.gateway(config(fx))
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    rotated = gw.audit_path + ".1"
    os.rename(gw.audit_path, rotated)
    gw.signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(gw.audit_path), 5, "the reopened audit file")
    r = psql(conn.port, fx.alice, fx.ca.crt, "select current_user")
    assert r.returncode == 0, r.stderr
    start = gw.wait_event("session.start", user="alice@example.com")
    gw.wait_event("session.end", session=start["session"])
    with open(rotated) as f:
        old = [json.loads(line)["event"] for line in f if line.strip()]
    assert old == ["gateway.start"], old
    new = [e["event"] for e in gw.events()]
    assert new == ["session.start", "session.end"], new
    conn.stop()
    gw.stop()
    assert gw.events("gateway.stop")


# --- deadlines -----------------------------------------------------------------

def test_session_cut_at_certificate_expiry(fx):
    gw = fx.gateway(config(fx))
    cert = fx.ca.issue(fx.unique("shortlived"), "alice@example.com", groups=["dba"],
                       device_id="laptop-1", trust="high", ttl="4s")
    conn = fx.connector(gw.ports()[0], "orders-db", cert)
    p = background_psql(fx, conn.port, "select pg_sleep(30)", cert=cert, app="expiry")
    start = gw.wait_event("session.start", user="alice@example.com")
    not_after = ts_epoch(start["cert_not_after"])
    wait_active(fx, "expiry")
    assert time.time() < not_after, "the session started too late to test the cut"
    code, _, err, _ = wait_exit(p, 10)
    exited = time.time()
    # the certificate is valid through its notAfter second (RFC 5280
    # 4.1.2.5, as the handshake judges it): the cut comes one second after
    # notAfter
    expiry = not_after + 1
    lag = exited - expiry
    note("expiry cut: psql exited %.0f ms after the notAfter second", lag * 1000)
    assert code != 0, "psql exited 0 across the certificate expiry"
    assert lag >= 0, "the session ended %.3fs before its notAfter second was over" % -lag
    assert lag < 1.0 * SLOW, "the session outlived its notAfter second by %.2fs" % lag
    end = gw.wait_event("session.end", session=start["session"])
    assert end["reason"] == "certificate expired", end
    assert ts_epoch(end["ts"]) >= expiry, (end, start["cert_not_after"])
    conn.stop()
    gw.stop()


def test_idle_timeout(fx):
    up = SilentUpstream()
    try:
        gw = fx.gateway(config(fx, services=[{"name": "silent", "upstream": [
            "127.0.0.1:%d" % up.port]}], idle_timeout="1s"))
        port = gw.ports()[0]
        quiet = tls_client(port, fx.alice, fx.ca.crt, server_name="silent")
        t0 = time.monotonic()
        chatty = tls_client(port, fx.alice, fx.ca.crt, server_name="silent")
        quiet_addr, chatty_addr = addr(quiet), addr(chatty)

        stop = threading.Event()
        chatty_error = []

        def tick():
            try:
                while not stop.wait(0.3):
                    chatty.sendall(b".")
            except OSError as e:
                chatty_error.append(repr(e))
        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()

        quiet.settimeout(5 * SLOW)
        try:
            data = quiet.recv(1)
        except (ssl.SSLError, ConnectionError) as e:
            data = repr(e)
        cut = time.monotonic() - t0
        quiet.close()
        note("idle cut after %.0f ms of silence (idle_timeout 1s)", cut * 1000)
        assert data == b"", data
        assert 0.9 <= cut < 2.0 * SLOW, cut
        end = gw.wait_event("session.end", client=quiet_addr)
        assert end["reason"] == "idle timeout", end
        assert end["bytes_up"] == 0 and end["bytes_down"] == 0, end

        # the chatty one sends a byte every 300 ms: well past the idle timeout
        wait_for(lambda: time.monotonic() - t0 > 2.5, 5, "2.5 s of chatter")
        stop.set()
        ticker.join()
        assert not chatty_error, chatty_error
        assert not gw.events("session.end", client=chatty_addr), \
            gw.events("session.end", client=chatty_addr)
        chatty.close()
        end = gw.wait_event("session.end", client=chatty_addr)
        assert end["reason"] == "client closed", end
        assert end["bytes_up"] >= 7, end
        gw.stop()
    finally:
        up.close()


# --- load ----------------------------------------------------------------------

def test_forty_concurrent_psql_sessions(fx):
    n = 40
    # all forty come from 127.0.0.1 and may be in their handshakes at once
    # on a slow machine (sanitizers): the per-source cap must not bite
    gw = fx.gateway(config(fx, max_connections=200, max_handshakes_per_source=n))
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    t0 = time.monotonic()
    procs = [background_psql(fx, conn.port, "select pg_sleep(1), current_user", app="many")
             for _ in range(n)]
    results = [p.communicate(timeout=60 * SLOW) for p in procs]
    elapsed = time.monotonic() - t0
    note("%d concurrent psql sessions done in %.2f s", n, elapsed)
    failed = [(p.returncode, err) for p, (out, err) in zip(procs, results) if p.returncode != 0]
    assert not failed, failed[:3]
    assert all(out.strip() == "|alice" for out, _ in results), results[:3]
    wait_for(lambda: len(gw.events("session.end")) >= n, 10, "%d session.end events" % n)
    starts, ends = gw.events("session.start"), gw.events("session.end")
    assert len(starts) == n and len(ends) == n, (len(starts), len(ends))
    assert {e["session"] for e in starts} == {e["session"] for e in ends}
    assert len({e["session"] for e in starts}) == n
    assert all(e["reason"] in ("client closed", "upstream closed") for e in ends), ends
    assert not gw.events("authz.denied") and not gw.events("tls.rejected")
    conn.stop()
    gw.stop()


# --- upstreams -----------------------------------------------------------------

def test_upstream_down_and_failover(fx):
    closed = free_port()
    down = "127.0.0.1:%d" % closed
    gw = fx.gateway(config(fx, services=[
        {"name": "down", "upstream": [down]},
        {"name": "failover", "upstream": [down, pg_addr(fx)]},
    ]))
    c_down = fx.connector(gw.ports()[0], "down", fx.alice)
    r = psql(c_down.port, fx.alice, fx.ca.crt, "select 1")
    assert r.returncode != 0, r.stdout
    failed = gw.wait_event("upstream.failed", service="down")
    assert failed["upstream"] == [down], failed
    assert failed["reason"] == "connection refused", failed
    assert failed["user"] == "alice@example.com", failed
    assert not gw.events("session.start", service="down")

    # both round-robin starting points: closed port first, then PostgreSQL first
    c_fo = fx.connector(gw.ports()[0], "failover", fx.alice)
    for _ in range(2):
        r = psql(c_fo.port, fx.alice, fx.ca.crt, "select current_user")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "alice"
    starts = gw.events("session.start", service="failover")
    assert len(starts) == 2 and all(s["upstream"] == pg_addr(fx) for s in starts), starts
    assert not gw.events("upstream.failed", service="failover")
    c_down.stop()
    c_fo.stop()
    gw.stop()


class BlackHole:
    """An address whose SYNs go into a network namespace made here and are
    never answered: a veth pair, the peer in the namespace, and a permanent
    neighbour entry with a MAC no one has (frames are dropped on arrival)."""

    def __init__(self):
        pid = os.getpid()
        tag = "%d" % (pid % 100000)
        self.ns, self.veth = "cglc" + tag, "cglc%sa" % tag
        # a /30 of 10.254.0.0/16 picked by pid: concurrent runs do not share one
        net = "10.254.%d.%d" % ((pid >> 6) % 256, (pid % 64) * 4)
        base = net.rsplit(".", 1)[0] + "."
        last = int(net.rsplit(".", 1)[1])
        self.host, self.addr = base + str(last + 1), base + str(last + 2)
        steps = [
            ["ip", "netns", "add", self.ns],
            ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.veth[:-1] + "b"],
            ["ip", "link", "set", self.veth[:-1] + "b", "netns", self.ns],
            ["ip", "-n", self.ns, "link", "set", self.veth[:-1] + "b", "up"],
            ["ip", "addr", "add", self.host + "/30", "dev", self.veth],
            ["ip", "link", "set", self.veth, "up"],
            ["ip", "neigh", "replace", self.addr, "lladdr", "02:00:5e:00:53:fe", "dev", self.veth,
             "nud", "permanent"],
        ]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                self.close()
                raise OSError("%s: %s" % (" ".join(cmd), r.stderr.strip()))

    def close(self):
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def test_upstream_connect_timeout(fx):
    if shutil.which("ip") is None or os.geteuid() != 0:
        note("SKIP connect_timeout: needs root and iproute2 for a network namespace")
        return
    try:
        hole = BlackHole()
    except OSError as e:
        note("SKIP connect_timeout: cannot build a network namespace: %s", e)
        return
    try:
        dead = "%s:5432" % hole.addr
        gw = fx.gateway(config(fx, services=[
            {"name": "dead", "upstream": [dead], "connect_timeout": "300ms"},
            {"name": "slow-failover", "upstream": [dead, pg_addr(fx)],
             "connect_timeout": "300ms"},
        ]))
        c_dead = fx.connector(gw.ports()[0], "dead", fx.alice)
        t0 = time.monotonic()
        r = psql(c_dead.port, fx.alice, fx.ca.crt, "select 1")
        took = time.monotonic() - t0
        assert r.returncode != 0, r.stdout
        failed = gw.wait_event("upstream.failed", service="dead")
        note("connect timeout 300ms: psql failed after %.0f ms", took * 1000)
        assert failed["upstream"] == [dead], failed
        assert failed["reason"] == "connect timeout", failed
        assert 0.3 <= took < 3 * SLOW, took

        c_fo = fx.connector(gw.ports()[0], "slow-failover", fx.alice)
        t0 = time.monotonic()
        r = psql(c_fo.port, fx.alice, fx.ca.crt, "select current_user")
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        start = gw.wait_event("session.start", service="slow-failover")
        assert start["upstream"] == pg_addr(fx), start
        note("failover past a 300ms connect timeout took %.0f ms", took * 1000)
        assert took >= 0.3, "the first (dead) upstream was not tried first"
        c_dead.stop()
        c_fo.stop()
        gw.stop()
    finally:
        hole.close()


# --- require_inner_tls ---------------------------------------------------------

def test_require_inner_tls(fx):
    gw = fx.gateway(config(fx, services=[{"name": "orders-db", "upstream": [pg_addr(fx)],
                                          "require_inner_tls": True}]))
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    r = psql(conn.port, None, fx.ca.crt, "select 1", sslmode="disable")
    assert r.returncode != 0, r.stdout
    assert "requires TLS inside the tunnel" in r.stderr, r.stderr
    denied = gw.wait_event("authz.denied", user="alice@example.com")
    assert denied["reason"] == "plaintext startup refused: require_inner_tls", denied
    assert not gw.events("session.start")

    r = psql(conn.port, fx.alice, fx.ca.crt, "select current_user", sslmode="require")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "alice"
    assert len(gw.events("session.start")) == 1

    # a CancelRequest first: forwarded (PostgreSQL ignores an unknown key)
    sock = tls_client(gw.ports()[0], fx.alice, fx.ca.crt, server_name="orders-db")
    me = addr(sock)
    sock.sendall(struct.pack("!IIII", 16, 80877102, 4242, 0x5eed))
    sock.settimeout(5 * SLOW)
    try:
        while sock.recv(4096):
            pass
    except (ssl.SSLError, OSError):
        pass
    sock.close()
    start = gw.wait_event("session.start", client=me)
    assert start["upstream"] == pg_addr(fx), start
    end = gw.wait_event("session.end", client=me)
    assert end["bytes_up"] == 16, end
    assert not gw.events("authz.denied", client=me)
    conn.stop()
    gw.stop()


# --- a standard client ---------------------------------------------------------

def test_standard_tls_client_instead_of_connector(fx):
    gw = fx.gateway(config(fx))
    fwd = Forwarder(gw.ports()[0], "orders-db", fx.alice, fx.ca.crt)
    try:
        r = psql(fwd.port, fx.alice, fx.ca.crt,
                 "select current_user, ssl, client_dn from pg_stat_ssl "
                 "where pid = pg_backend_pid()")
        assert r.returncode == 0, (r.stderr, fwd.errors)
        user, ssl_on, dn = r.stdout.strip().split("|")
        assert user == "alice" and ssl_on == "t", r.stdout
        assert "CN=alice@example.com" in dn, dn
        start = gw.wait_event("session.start", user="alice@example.com")
        assert start["service"] == "orders-db" and start["rule"] == "dba", start
        end = gw.wait_event("session.end", session=start["session"])
        assert end["reason"] in ("client closed", "upstream closed"), end
    finally:
        fwd.close()
    gw.stop()


# --- bulk transfer -------------------------------------------------------------

class BulkUpstream(threading.Thread):
    """Takes one connection with a small receive buffer; reads nothing for
    `stall` seconds, then slowly, then at full speed, hashing everything up
    to EOF; then answers `answer` and closes."""

    def __init__(self, answer, stall=1.0, slow=1.0):
        super().__init__(daemon=True)
        self.answer, self.stall, self.slow = answer, stall, slow
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.reading = threading.Event()  # the stall is over
        self.probe = None  # called as the stall ends: what the client had sent by then
        self.probed = None
        self.received = 0
        self.digest = None
        self.error = None

    def run(self):
        try:
            self.sock.settimeout(30 * SLOW)
            conn, _ = self.sock.accept()
            conn.settimeout(30 * SLOW)
            h = hashlib.sha256()
            time.sleep(self.stall)  # the slow reader: not reading at all yet
            if self.probe is not None:
                self.probed = self.probe()
            self.reading.set()
            end_slow = time.monotonic() + self.slow
            while True:
                slow = time.monotonic() < end_slow
                data = conn.recv(16384 if slow else 1 << 20)
                if not data:
                    break
                h.update(data)
                self.received += len(data)
                if slow:
                    time.sleep(0.01)
            self.digest = h.hexdigest()
            conn.sendall(self.answer)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(5 * SLOW)
            while conn.recv(65536):
                pass
            conn.close()
        except Exception as e:  # reported by the test
            self.error = repr(e)
            self.reading.set()
        finally:
            self.sock.close()


def test_bulk_transfer_backpressure_and_half_close(fx):
    size, answer_size = 32 << 20, 1 << 20
    payload = os.urandom(size)
    answer = os.urandom(answer_size)
    up = BulkUpstream(answer)
    up.start()
    gw = fx.gateway(config(fx, services=[{"name": "bulk", "upstream": [
        "127.0.0.1:%d" % up.port]}]))
    pid = gw.proc.pid
    pipe = TlsPipe(gw.ports()[0], fx.alice, fx.ca.crt, "bulk", timeout=30)
    me = addr(pipe.raw)
    gw.wait_event("session.start", client=me)
    base = rss_kib(pid)

    sent = [0]
    upload_error = []

    def upload():
        try:
            view = memoryview(payload)
            for off in range(0, size, 256 << 10):
                pipe.send(view[off:off + (256 << 10)])
                sent[0] = off + len(view[off:off + (256 << 10)])
        except Exception as e:
            upload_error.append(repr(e))
    uploader = threading.Thread(target=upload, daemon=True)
    # read by the upstream's own thread as its stall ends, not by the loop
    # below, which a loaded machine may not run until the upload is over
    up.probe = lambda: sent[0]
    t0 = time.monotonic()
    uploader.start()
    peak = base
    while uploader.is_alive() and time.monotonic() - t0 < 60 * SLOW:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.02)
    sent_in_stall = up.probed
    uploader.join(1)
    assert not uploader.is_alive(), "upload stuck at %d bytes" % sent[0]
    assert not upload_error, upload_error
    note("bulk: %d MiB up in %.2f s; RSS %d KiB -> peak %d KiB (+%d KiB); "
         "%s MiB sent while the upstream read nothing", size >> 20, time.monotonic() - t0,
         base, peak, peak - base,
         "all" if sent_in_stall is None else "%.1f" % (sent_in_stall / 1048576.0))
    assert peak - base < 64 * 1024, "gateway RSS grew by %d KiB" % (peak - base)
    assert sent_in_stall is not None and sent_in_stall < size, \
        "the whole upload went through while the upstream read nothing"

    # half-close: close_notify + FIN; the answer must still come through whole
    pipe.close_notify()
    got = []
    while True:
        data = pipe.recv()
        if not data:
            break
        got.append(data)
    pipe.close()
    assert pipe.got_close_notify, "the stream to the client ended without close_notify"
    got = b"".join(got)
    up.join(30 * SLOW)
    assert up.error is None, up.error
    assert up.received == size, (up.received, size)
    assert up.digest == hashlib.sha256(payload).hexdigest(), "upload corrupted"
    assert len(got) == answer_size, len(got)
    assert hashlib.sha256(got).digest() == hashlib.sha256(answer).digest(), "answer corrupted"

    end = gw.wait_event("session.end", client=me)
    assert end["bytes_up"] == size, end
    assert end["bytes_down"] == answer_size, end
    assert end["reason"] == "client closed", end
    gw.stop()


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=lambda fx: fx.close()))
