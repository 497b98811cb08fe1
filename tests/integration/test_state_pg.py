"""Many gateways, one truth (CONFIG.md "state: one truth for many
gateways", issue 18): three `certgate serve` instances on loopback share
their run-time state in one PostgreSQL 15 database, with HAProxy (Debian's)
in front as the L4 load balancer sending PROXY v2.

The state database is a cluster of its own (restarted by a test while the
protected database keeps serving), reached the least-privileged way: a
login role that owns a schema created for it, no superuser, no CREATE on
the database; a password in a passfile. Gateway A reaches it over the unix
socket, B and C over TCP with TLS verify-full by the name "localhost"
(looked up by the gateway, off the loop). HAProxy connects to the gateways
from 127.0.0.2 (the only PROXY-protocol source they accept), so the tests
also reach each gateway directly from 127.0.0.1.

Checked: a lock posted to one instance ends a psql session held through
another within 1 s; a lowered trust value the same; a device forgotten on
one is refused on another (the registry is shared); an access request
approved on one lets the user in through another and ends everywhere at
the grant's end; an ID token accepted
by one issuer is refused by another; the state database restarted
mid-test (sessions keep flowing, known locks stay enforced, token claims
refused then resumed, changes made meanwhile reach every instance); the
last writer wins by the store's clock after one instance was cut off;
three instances starting together on an empty schema migrate it once; a
newer schema refuses the start; `certgate check` on the state block."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

from harness import SLOW, Cert, Connector, Fixture, Gateway, Postgres, certgate, free_port, \
    pg_bin, port_open, psql, run, wait_for
from oidc_fixture import OpenIDProvider
from test_admin import RULES, api, assert_gone_within, live_psql, psql_ok, service, \
    session_end, wait_admin
from test_access_requests import parse_ts
from test_login import csr_for, device, keypair, post, prove, wait_keys

ROLE = "certgate_state"
DB = "certgate_state"
LB_SOURCE = "127.0.0.2"  # HAProxy's side of its connections to the gateways
# the on-call group gets orders-db only with an approved access request
JIT_RULES = RULES + [{"name": "oncall-jit", "effect": "allow", "services": ["orders-db"],
                      "groups": ["oncall"], "requires_approval": True}]


# --- the state database ---------------------------------------------------------

def state_sql(fx, statement):
    return fx.state.sql(statement, db=DB)


def state_pg_ctl(fx, *args):
    log = os.path.join(fx.state.dir, "postgres.log")
    fx.state._as_postgres(pg_bin("pg_ctl"), "-D", fx.state.data, "-l", log, "-w", "-t", "60",
                          *args)


def write_hba(fx, socket_rule="scram-sha-256"):
    """The state cluster's pg_hba.conf; socket_rule "reject" cuts off the
    gateway that comes over the unix socket (A)."""
    with open(os.path.join(fx.state.data, "pg_hba.conf"), "w") as f:
        f.write("local all postgres trust\n"
                "local %s %s %s\n"
                "hostssl %s %s 127.0.0.1/32 scram-sha-256\n" % (DB, ROLE, socket_rule, DB, ROLE))
    fx.state.sql("SELECT pg_reload_conf()")


def make_state_db(fx):
    cert = fx.ca.server("state-db", dns=("localhost",), ips=("127.0.0.1",))
    fx.state = Postgres(fx.path("state-pg"), cert, fx.ca.crt,
                        hba_lines=["local all postgres trust"])
    fx.password = secrets.token_hex(16)
    fx.state.sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (ROLE, fx.password))
    fx.state.sql("CREATE DATABASE %s" % DB)
    # least privilege: the DBA creates the schema for the role; the role
    # needs no CREATE on the database and is no superuser
    state_sql(fx, "CREATE SCHEMA certgate AUTHORIZATION %s" % ROLE)
    write_hba(fx)
    fx.passfile = fx.path("state.pgpass")
    with open(fx.passfile, "w") as f:
        f.write("*:%d:%s:%s:%s\n" % (fx.state.port, DB, ROLE, fx.password))
    os.chmod(fx.passfile, 0o600)


def dsn_socket(fx):
    return "host=%s port=%d dbname=%s user=%s passfile=%s" % (
        fx.state.dir, fx.state.port, DB, ROLE, fx.passfile)


def dsn_tls(fx):
    return ("postgresql://%s@localhost:%d/%s?sslmode=verify-full&sslrootcert=%s&passfile=%s"
            % (ROLE, fx.state.port, DB, fx.ca.crt, fx.passfile))


# --- gateways and the load balancer -----------------------------------------------

def gateway_config(fx, dsn, schema=None, issuer=False):
    cfg = fx.config([service(fx)], JIT_RULES,
                    gateway={"proxy_protocol_from": [LB_SOURCE + "/32"]},
                    admin={"listen": "127.0.0.1:%d" % free_port(), "token_file": fx.token_file})
    cfg["state"] = {"backend": "postgres", "dsn": dsn}
    if schema is not None:
        cfg["state"]["schema"] = schema
    if issuer:
        cfg["issuer"] = {
            "listen": "127.0.0.1:%d" % free_port(),
            "ca_cert": fx.ca.crt,
            "ca_key": os.path.join(fx.ca.dir, "ca.key"),
            "cert_lifetime": "1h",
            "device_trust": "high",
            "oidc": {"issuer": fx.op.issuer, "client_id": "certgate",
                     "ca_file": fx.op.ca_file},
        }
    return cfg


def start_gateway(fx, cfg, name, wait=True):
    gw = Gateway(fx.dir, json.loads(json.dumps(cfg)), name=name, wait=False)
    gw.token = fx.token
    gw.ca_file = fx.ca.crt
    gw.name = name
    if wait:
        gw.wait_ready()
        wait_admin(gw)
    return gw


def start_haproxy(fx):
    fx.lb_port = free_port()
    conf = fx.path("haproxy.cfg")
    with open(conf, "w") as f:
        f.write("global\n"
                "    maxconn 1000\n"
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 5s\n"
                "    timeout client 1h\n"
                "    timeout server 1h\n"
                "frontend certgate\n"
                "    bind 127.0.0.1:%d\n"
                "    default_backend gateways\n"
                "backend gateways\n"
                "    balance roundrobin\n" % fx.lb_port)
        for gw in fx.gws:
            f.write("    server %s 127.0.0.1:%d send-proxy-v2 source %s\n"
                    % (gw.name, gw.ports()[0], LB_SOURCE))
    fx.lb_log = open(fx.path("haproxy.log"), "w")
    fx.lb = subprocess.Popen(["haproxy", "-db", "-f", conf], stdout=fx.lb_log,
                             stderr=subprocess.STDOUT)
    wait_for(lambda: port_open(fx.lb_port) or fx.lb.poll() is not None, 10, "haproxy")
    if fx.lb.poll() is not None:
        with open(fx.path("haproxy.log")) as f:
            raise AssertionError("haproxy exited: " + f.read())


def setup():
    fx = Fixture(with_postgres=True)
    for role in ("alice", "bob", "carol", "dave", "erin", "frank"):
        fx.pg.sql("CREATE ROLE %s LOGIN" % role)
    fx.pg.sql("ALTER SYSTEM SET client_connection_check_interval = '200ms'")
    fx.pg.sql("SELECT pg_reload_conf()")
    fx.token = secrets.token_hex(24)
    fx.token_file = fx.path("admin.token")
    with open(fx.token_file, "w") as f:
        f.write(fx.token + "\n")
    os.chmod(fx.token_file, 0o600)
    fx.certs = {}
    for i, name in enumerate(("alice", "bob", "carol", "dave", "erin"), 1):
        fx.certs[name] = fx.ca.issue(name, "%s@example.com" % name, groups=["dba"],
                                     device_id="laptop-%d" % i, trust="high")
    fx.certs["frank"] = fx.ca.issue("frank", "frank@example.com", groups=["oncall"],
                                    device_id="laptop-6", trust="high")
    op_cert = fx.ca.server("op", dns=("localhost",), ips=("127.0.0.1",))
    fx.op = OpenIDProvider(fx.path("op"), tls=(op_cert.crt, op_cert.key, fx.ca.crt))
    make_state_db(fx)
    fx.kept = []  # processes that live across tests (Fixture.reap kills fx.procs)
    # three instances starting together on an empty schema
    cfgs = [gateway_config(fx, dsn_socket(fx), issuer=True),
            gateway_config(fx, dsn_tls(fx), issuer=True),
            gateway_config(fx, dsn_tls(fx))]
    fx.gws = [start_gateway(fx, cfg, name, wait=False) for cfg, name in zip(cfgs, "ABC")]
    fx.kept += fx.gws
    for gw in fx.gws:
        gw.wait_ready()
        wait_admin(gw)
    fx.A, fx.B, fx.C = fx.gws
    start_haproxy(fx)
    # a connector through the load balancer, and one straight to each gateway
    fx.lb_conn = {}
    fx.direct = {}
    for name, cert in fx.certs.items():
        fx.lb_conn[name] = Connector(fx.dir, fx.lb_port, "orders-db", cert, fx.ca.crt,
                                     name=fx.unique("lb-" + name))
        fx.kept.append(fx.lb_conn[name])
    for gw in fx.gws:
        fx.direct[gw.name] = {
            name: Connector(fx.dir, gw.ports()[0], "orders-db", cert, fx.ca.crt,
                            name=fx.unique("direct-%s-%s" % (gw.name, name)))
            for name, cert in fx.certs.items()}
        fx.kept += fx.direct[gw.name].values()
    return fx


def teardown(fx):
    for p in getattr(fx, "kept", []):
        p.kill()
    if getattr(fx, "lb", None) is not None:
        fx.lb.kill()
        fx.lb.wait()
        fx.lb_log.close()
    if getattr(fx, "state", None) is not None:
        fx.state.stop()
    fx.op.close()
    fx.close()


# --- helpers -------------------------------------------------------------------------

def holder(fx, user):
    """The gateway holding user's one live session, and the session."""
    def find():
        for gw in fx.gws:
            sessions = api(gw, "GET", "/v1/sessions?user=" + user).json["sessions"]
            if sessions:
                return gw, sessions[0]
        return None
    return wait_for(find, 5, "the session of %s" % user)


def refused_everywhere(fx, name, **match):
    """A new psql as name is refused by each gateway, straight to it."""
    user = "%s@example.com" % name
    for gw in fx.gws:
        before = len(gw.events("authz.denied", user=user))
        r = psql(fx.direct[gw.name][name].port, fx.certs[name], fx.ca.crt, "select 1",
                 user=name)
        assert r.returncode != 0, "%s admitted %s: %s" % (gw.name, name, r.stdout)
        ev = wait_for(lambda: gw.events("authz.denied", user=user)[before:], 5,
                      "authz.denied on %s" % gw.name)[-1]
        for k, v in match.items():
            assert ev.get(k) == v, (gw.name, k, ev)


def admitted_everywhere(fx, name):
    for gw in fx.gws:
        psql_ok(fx, fx.direct[gw.name][name], fx.certs[name], name)


def state_of(gw):
    return api(gw, "GET", "/readyz", token=None)


def others(fx, gw):
    return [g for g in fx.gws if g is not gw]


def locks_of(gw):
    return {l["id"]: l for l in api(gw, "GET", "/v1/locks").json["locks"]}


def id_token(fx, login="alice"):
    return fx.op.client("certgate").authorization_code(login, login + "-password")["id_token"]


# --- tests ------------------------------------------------------------------------------

def test_started_together_on_one_schema(fx):
    """Three gateways started at once on an empty schema: one migration
    (an advisory lock makes them take turns), every one in sync."""
    assert state_sql(fx, "SELECT version FROM certgate.schema_version") == "1"
    assert state_sql(fx, "SELECT count(*) FROM certgate.schema_version") == "1"
    owner = state_sql(fx, "SELECT tableowner FROM pg_tables WHERE schemaname = 'certgate' "
                          "AND tablename = 'records'")
    assert owner == ROLE, owner
    assert state_sql(fx, "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = '%s'"
                     % ROLE) == "f"
    assert state_sql(fx, "SELECT has_database_privilege('%s', '%s', 'CREATE')"
                     % (ROLE, DB)) == "f"
    for gw in fx.gws:
        r = state_of(gw)
        assert r.status == 200, r
        st = r.json["state"]
        assert st["backend"] == "postgres" and st["ok"] and st["connected"], st
        assert st["pending"] == 0, st
        status = api(gw, "GET", "/v1/status").json["state"]
        assert status["backend"] == "postgres" and status["ok"] is True, status
        metrics = api(gw, "GET", "/metrics").text
        assert "\ncertgate_state_connected 1\n" in metrics, metrics
        # the DSN is shown without its secrets
        shown = api(gw, "GET", "/v1/policy").json["config"]["state"]
        assert shown["backend"] == "postgres" and shown["schema"] == "certgate", shown
        assert fx.password not in json.dumps(shown), shown


def test_lock_on_one_ends_a_session_held_through_another(fx):
    conn = fx.lb_conn["alice"]
    p = live_psql(fx, conn, fx.certs["alice"], "alice")
    held_by, session = holder(fx, "alice@example.com")
    # through the load balancer: the audited client is the connector, not HAProxy
    assert session["client"].startswith("127.0.0.1:"), session
    start = held_by.wait_event("session.start", session=session["id"])
    assert start["client"].startswith("127.0.0.1:"), start
    poster = others(fx, held_by)[0]
    r = api(poster, "POST", "/v1/locks", {"user": "alice@example.com", "reason": "stolen"})
    t0 = time.monotonic()
    assert r.status == 201, r
    assert_gone_within(p, t0, "lock on %s, session on %s" % (poster.name, held_by.name))
    session_end(held_by, session["id"], "revoked: lock")
    lock_id = r.json["id"]
    assert lock_id.startswith("lock-") and len(lock_id) == 21, lock_id
    for gw in fx.gws:
        wait_for(lambda: lock_id in locks_of(gw), 2, "the lock on %s" % gw.name)
    refused_everywhere(fx, "alice", rule="lock")
    # lifted on the third: admitted everywhere again
    lifter = [g for g in fx.gws if g not in (held_by, poster)][0]
    assert api(lifter, "DELETE", "/v1/locks/" + lock_id).status == 200
    for gw in fx.gws:
        wait_for(lambda: lock_id not in locks_of(gw), 2, "the lock lifted on %s" % gw.name)
    admitted_everywhere(fx, "alice")


def test_lowered_trust_ends_sessions_elsewhere(fx):
    conn = fx.lb_conn["bob"]
    p = live_psql(fx, conn, fx.certs["bob"], "bob")
    held_by, session = holder(fx, "bob@example.com")
    setter = others(fx, held_by)[-1]
    r = api(setter, "PUT", "/v1/devices/laptop-2/trust", {"level": "low"})
    t0 = time.monotonic()
    assert r.status == 200, r
    assert_gone_within(p, t0, "trust on %s, session on %s" % (setter.name, held_by.name))
    session_end(held_by, session["id"], "revoked: device trust")
    for gw in fx.gws:
        got = wait_for(lambda: api(gw, "GET", "/v1/devices/laptop-2/trust").json
                       if api(gw, "GET", "/v1/devices/laptop-2/trust").status == 200 else None,
                       2, "the trust value on %s" % gw.name)
        assert got["level"] == "low", got
    refused_everywhere(fx, "bob")
    assert api(held_by, "DELETE", "/v1/devices/laptop-2/trust").status == 200
    for gw in fx.gws:
        wait_for(lambda: api(gw, "GET", "/v1/devices/laptop-2/trust").status == 404, 2,
                 "the trust value cleared on %s" % gw.name)
    admitted_everywhere(fx, "bob")


def test_token_accepted_by_one_issuer_is_refused_by_another(fx):
    for gw in (fx.A, fx.B):
        wait_keys(gw)
    token = id_token(fx)
    csr = csr_for(fx, keypair(fx, "replay"))
    status, body = post(fx.A, token, csr)
    assert status == 201, body
    status, body = post(fx.B, token, csr)
    assert status == 401 and body["reason"] == "token replayed", body
    fx.B.wait_event("login.denied", reason="token replayed")
    status, body = post(fx.A, token, csr)
    assert status == 401 and body["reason"] == "token replayed", body
    # a fresh token still works on B
    status, body = post(fx.B, id_token(fx), csr)
    assert status == 201, body


def device_login(fx, gw, dev_key, dev_pub, login_key, csr):
    """A certificate from gw's issuer for the device dev_key proves."""
    status, body = post(gw, id_token(fx), csr, device_key=dev_pub,
                        device_proof=prove(dev_key, csr), platform="Linux 6.1 Debian 12")
    assert status == 201, body
    crt = fx.path(fx.unique("device-login") + ".crt")
    with open(crt, "w") as f:
        f.write(body["certificate"])
    return body["device_id"], Cert(crt, login_key)


def devices_of(gw):
    return {d["id"]: d for d in api(gw, "GET", "/v1/devices").json["devices"]}


def test_device_forgotten_on_one_is_refused_on_another(fx):
    """The device registry is shared: a device registered by A's issuer is
    listed by every gateway; forgotten on B, its session held through C
    ends within 1 s (revoked: device trust) and its certificate is refused
    on A (rule forgotten-device); its next login, on B, works on C."""
    for gw in (fx.A, fx.B):
        wait_keys(gw)
    login_key = keypair(fx, "forget-login")
    csr = csr_for(fx, login_key)
    dev_key, dev_pub = device(fx, fx.unique("forget-dev"))
    device_id, cert = device_login(fx, fx.A, dev_key, dev_pub, login_key, csr)
    for gw in fx.gws:
        listed = wait_for(lambda: devices_of(gw).get(device_id), 2,
                          "the device registered on %s" % gw.name)
        assert listed["user"] == "alice@example.com", listed
        assert listed["platform"] == "Linux 6.1 Debian 12", listed
    conn = {gw.name: Connector(fx.dir, gw.ports()[0], "orders-db", cert, fx.ca.crt,
                               name=fx.unique("forget-%s" % gw.name)) for gw in fx.gws}
    fx.procs += list(conn.values())
    p = live_psql(fx, conn["C"], cert, "alice")
    session = holder(fx, "alice@example.com")[1]
    r = api(fx.B, "DELETE", "/v1/devices/" + device_id)
    t0 = time.monotonic()
    assert r.status == 200 and r.json == {"id": device_id, "forgotten": True}, r
    assert_gone_within(p, t0, "device forgotten on B, session on C")
    session_end(fx.C, session["id"], "revoked: device trust")
    for gw in fx.gws:
        wait_for(lambda: device_id not in devices_of(gw), 2, "forgotten on %s" % gw.name)
    before = len(fx.A.events("authz.denied", rule="forgotten-device"))
    r = psql(conn["A"].port, cert, fx.ca.crt, "select 1", user="alice")
    assert r.returncode != 0, "A admitted a forgotten device: %s" % r.stdout
    denied = wait_for(lambda: fx.A.events("authz.denied", rule="forgotten-device")[before:], 5,
                      "forgotten-device on A")[-1]
    assert denied["device_id"] == device_id, denied
    # the forget is in the store for good
    row = json.loads(state_sql(fx, "SELECT value FROM certgate.records WHERE kind = 'devices' "
                                   "AND key = '%s'" % device_id))
    assert row["user"] is None and row["forgotten"] > 0, row
    # its next login (on B) registers it anew; the new certificate works on C
    device_id2, cert2 = device_login(fx, fx.B, dev_key, dev_pub, login_key, csr)
    assert device_id2 == device_id
    for gw in fx.gws:
        wait_for(lambda: devices_of(gw).get(device_id), 2, "registered anew on %s" % gw.name)
    c2 = Connector(fx.dir, fx.C.ports()[0], "orders-db", cert2, fx.ca.crt,
                   name=fx.unique("forget-new-C"))
    fx.procs.append(c2)
    r = psql(c2.port, cert2, fx.ca.crt, "select current_user", user="alice")
    assert r.returncode == 0 and r.stdout.strip() == "alice", r.stderr
    r = psql(conn["C"].port, cert, fx.ca.crt, "select 1", user="alice")
    assert r.returncode != 0, "the old certificate works again on C"
    for c in list(conn.values()) + [c2]:
        c.stop()


def access(gw, rid):
    r = api(gw, "GET", "/v1/access-requests/" + rid)
    return r.json if r.status == 200 else None


def test_grant_approved_on_one_admits_through_another(fx):
    """Access requests are shared: asked on B, approved on C, the grant lets
    frank in through A and B; at its end the sessions held through both end
    (revoked: policy) and every gateway refuses him again."""
    span = int(8 * SLOW)
    refused_everywhere(fx, "frank", rule="default-deny")
    r = api(fx.B, "POST", "/v1/access-requests",
            {"user": "frank@example.com", "service": "orders-db", "duration": "%ds" % span,
             "reason": "INC-18"})
    assert r.status == 201, r
    rid = r.json["id"]
    assert rid.startswith("req-") and len(rid) == 20, rid  # random: any gateway makes them
    for gw in fx.gws:
        got = wait_for(lambda: access(gw, rid), 2, "the request on %s" % gw.name)
        assert got["state"] == "pending" and got["reason"] == "INC-18", got
    r = api(fx.C, "POST", "/v1/access-requests/%s/approve" % rid,
            {"by": "carol@example.com", "reason": "on call"})
    t0 = time.monotonic()
    assert r.status == 200 and r.json["state"] == "approved", r
    until = parse_ts(r.json["until"])
    wait_for(lambda: (access(fx.A, rid) or {}).get("state") == "approved", 1 * SLOW,
             "the approval on A")
    print("# approved on C, the grant in force on A after %.1f ms"
          % ((time.monotonic() - t0) * 1000), flush=True)
    held = {}
    for gw in (fx.A, fx.B):
        held[gw.name] = live_psql(fx, fx.direct[gw.name]["frank"], fx.certs["frank"], "frank")
    starts = {gw.name: gw.events("session.start", user="frank@example.com")[-1]
              for gw in (fx.A, fx.B)}
    for gw in (fx.A, fx.B):
        assert starts[gw.name]["rule"] == "oncall-jit", starts[gw.name]
        p = held[gw.name]
        p.wait(timeout=span + 10 * SLOW)
        assert p.returncode != 0, "frank's session through %s outlived the grant" % gw.name
        end = session_end(gw, starts[gw.name]["session"], "revoked: policy")
        late = parse_ts(end["ts"]) - until
        print("# the session through %s ended %.3f s after the grant's end" % (gw.name, late),
              flush=True)
        assert 0 <= late <= 1.0 * SLOW, (gw.name, late, end)
    for gw in fx.gws:
        wait_for(lambda: (access(gw, rid) or {}).get("state") == "expired", 2 * SLOW,
                 "expired on %s" % gw.name)
    # every gateway's timer expired it; one of them claimed the audit line
    time.sleep(1 * SLOW)
    lines = [(gw.name, e) for gw in fx.gws for e in gw.events("access.expired", id=rid)]
    assert len(lines) == 1, "access.expired %d times: %s" % (len(lines), lines)
    assert lines[0][1]["by"] == "carol@example.com" and lines[0][1]["reason"] == "grant ended"
    print("# access.expired written once, by %s" % lines[0][0], flush=True)
    refused_everywhere(fx, "frank")


def wait_connected(fx, connected, timeout=20):
    for gw in fx.gws:
        wait_for(lambda: state_of(gw).json["state"].get("connected") is connected, timeout,
                 "%s connected=%s" % (gw.name, connected))


def test_state_database_restarted(fx):
    """The state database goes away mid-test and comes back: the data path
    keeps serving, what is known stays enforced, token claims are refused
    (fail closed) and resume, changes made meanwhile reach everyone."""
    r = api(fx.C, "POST", "/v1/locks", {"user": "dave@example.com", "reason": "before"})
    assert r.status == 201, r
    dave_lock = r.json["id"]
    for gw in fx.gws:
        wait_for(lambda: dave_lock in locks_of(gw), 2, "dave's lock on %s" % gw.name)
    for gw in (fx.A, fx.B):
        wait_keys(gw)
    csr = csr_for(fx, keypair(fx, "outage"))
    # a session held across the outage (through the load balancer)
    held = psql(fx.lb_conn["carol"].port, fx.certs["carol"], fx.ca.crt,
                "select pg_sleep(%d), 'carried on'" % (20 * SLOW), user="carol",
                background=True)
    holder(fx, "carol@example.com")
    errors_before = {gw.name: int(metric(gw, "certgate_state_errors_total")) for gw in fx.gws}

    state_pg_ctl(fx, "-m", "fast", "stop")
    t_down = time.monotonic()
    try:
        wait_connected(fx, False, 10)
        for gw in fx.gws:
            r = state_of(gw)
            assert r.status == 200, r  # the data path stays ready
            st = r.json["state"]
            assert st["ok"] is False and st["problem"].startswith("state store unavailable"), st
            assert metric(gw, "certgate_state_connected") == "0"
            assert int(metric(gw, "certgate_state_errors_total")) > errors_before[gw.name]
            status = api(gw, "GET", "/v1/status").json["state"]
            assert status["connected"] is False and status["problem"], status
        # known locks stay enforced, new sessions flow
        refused_everywhere(fx, "dave", rule="lock")
        admitted_everywhere(fx, "erin")
        # nothing new is granted: a login needs the store's answer
        status, body = post(fx.A, id_token(fx), csr)
        assert status == 503 and body["reason"] == "state store unavailable", body
        fx.A.wait_event("login.denied", reason="state store unavailable")
        # a change made meanwhile is enforced here at once, and kept
        r = api(fx.A, "POST", "/v1/locks", {"user": "erin@example.com", "reason": "outage"})
        assert r.status == 201, r
        erin_lock = r.json["id"]
        assert state_of(fx.A).json["state"]["pending"] == 1
        before = len(fx.A.events("authz.denied", user="erin@example.com"))
        rr = psql(fx.direct["A"]["erin"].port, fx.certs["erin"], fx.ca.crt, "select 1",
                  user="erin")
        assert rr.returncode != 0, rr.stdout
        wait_for(lambda: fx.A.events("authz.denied", user="erin@example.com")[before:], 5,
                 "erin refused on A")
        assert held.poll() is None, "the session held across the outage ended"
    finally:
        state_pg_ctl(fx, "start")
    print("# state database away for %.1f s" % (time.monotonic() - t_down), flush=True)
    t_up = time.monotonic()
    wait_connected(fx, True, 15)
    print("# every gateway back in sync %.2f s after the restart" % (time.monotonic() - t_up),
          flush=True)
    # the change made while away reached every gateway
    for gw in fx.gws:
        wait_for(lambda: erin_lock in locks_of(gw), 5, "erin's lock on %s" % gw.name)
        assert state_of(gw).json["state"]["pending"] == 0
    refused_everywhere(fx, "erin", rule="lock")
    # reloading after the outage re-applied only what changed: dave's lock
    # reached A and B once, when it was made
    for gw in (fx.A, fx.B):
        heard = gw.output().count("locks %s changed by another gateway" % dave_lock)
        assert heard == 1, (gw.name, heard, gw.output()[-3000:])
    # logins resume
    status, body = post(fx.A, id_token(fx), csr)
    assert status == 201, body
    out, err = held.communicate(timeout=40 * SLOW)
    assert held.returncode == 0 and "carried on" in out, (held.returncode, out, err)
    for gw in fx.gws:
        for lock_id in list(locks_of(gw)):
            api(gw, "DELETE", "/v1/locks/" + lock_id)
    for gw in fx.gws:
        wait_for(lambda: locks_of(gw) == {}, 5, "no locks on %s" % gw.name)


def metric(gw, name):
    for line in api(gw, "GET", "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return line.split()[1]
    raise AssertionError("no metric %s" % name)


def trust_level(gw, device):
    r = api(gw, "GET", "/v1/devices/%s/trust" % device)
    return r.json["level"] if r.status == 200 else None


def test_last_writer_wins_by_the_stores_clock(fx):
    """A is cut off from the store (its socket rule rejects it) while B
    stays: changes on both sides to the same records meet when A is back,
    and the change made later wins, whichever side made it."""
    write_hba(fx, "reject")
    state_sql(fx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE usename = '%s' AND client_addr IS NULL" % ROLE)
    try:
        wait_for(lambda: state_of(fx.A).json["state"]["connected"] is False, 10, "A cut off")
        assert state_of(fx.B).json["state"]["connected"] is True
        # x: A first (cut off), then B: B's is later and wins
        assert api(fx.A, "PUT", "/v1/devices/x-1/trust", {"level": "low"}).status == 200
        time.sleep(0.05)  # two changes apart in time: that is the point of the test
        assert api(fx.B, "PUT", "/v1/devices/x-1/trust", {"level": "medium"}).status == 200
        # y: B first, then A (cut off): A's is later and wins when it is back
        assert api(fx.B, "PUT", "/v1/devices/y-1/trust", {"level": "low"}).status == 200
        time.sleep(0.05)
        assert api(fx.A, "PUT", "/v1/devices/y-1/trust", {"level": "high"}).status == 200
        assert trust_level(fx.A, "x-1") == "low" and trust_level(fx.A, "y-1") == "high"
        wait_for(lambda: (trust_level(fx.C, "x-1"), trust_level(fx.C, "y-1")) ==
                 ("medium", "low"), 2, "B's changes on C")
    finally:
        write_hba(fx)
    wait_for(lambda: state_of(fx.A).json["state"]["connected"] is True, 15, "A back")
    for gw in fx.gws:
        wait_for(lambda: (trust_level(gw, "x-1"), trust_level(gw, "y-1")) == ("medium", "high"),
                 5, "the later changes on %s" % gw.name)
    stamps = state_sql(fx, "SELECT key || '=' || (value->>'level') FROM certgate.records "
                           "WHERE kind = 'trust' ORDER BY key")
    assert stamps.split() == ["x-1=medium", "y-1=high"], stamps
    for gw in (fx.A,):
        for device in ("x-1", "y-1"):
            api(gw, "DELETE", "/v1/devices/%s/trust" % device)


def test_newer_schema_refuses_start(fx):
    state_sql(fx, "CREATE SCHEMA future AUTHORIZATION %s" % ROLE)
    state_sql(fx, "CREATE TABLE future.schema_version (version integer NOT NULL)")
    state_sql(fx, "INSERT INTO future.schema_version VALUES (99)")
    state_sql(fx, "ALTER TABLE future.schema_version OWNER TO %s" % ROLE)
    gw = start_gateway(fx, gateway_config(fx, dsn_tls(fx), schema="future"), "future",
                       wait=False)
    fx.procs.append(gw)
    code = gw.wait(40)
    out = gw.output()
    assert code == 1, (code, out)
    assert ("state: the state store's schema \"future\" is version 99, this certgate knows "
            "up to version 1: upgrade certgate") in out, out
    assert state_sql(fx, "SELECT version FROM future.schema_version") == "99"  # untouched


def test_schema_created_when_the_role_may(fx):
    """Without a schema made for it, a role with CREATE on the database
    makes its own."""
    state_sql(fx, "GRANT CREATE ON DATABASE %s TO %s" % (DB, ROLE))
    try:
        gw = start_gateway(fx, gateway_config(fx, dsn_socket(fx), schema="made_here"), "made")
        fx.procs.append(gw)
        assert state_sql(fx, "SELECT nspowner::regrole FROM pg_namespace "
                             "WHERE nspname = 'made_here'") == ROLE
        assert state_sql(fx, "SELECT version FROM made_here.schema_version") == "1"
        gw.stop()
    finally:
        state_sql(fx, "REVOKE CREATE ON DATABASE %s FROM %s" % (DB, ROLE))
    # and without it, a missing schema refuses the start with the store's reason
    gw = start_gateway(fx, gateway_config(fx, dsn_socket(fx), schema="not_allowed"), "denied",
                       wait=False)
    fx.procs.append(gw)
    wait_for(lambda: "permission denied for database" in gw.output(), 20,
             "the store's refusal in the log")
    gw.signal(signal.SIGTERM)
    gw.wait(40)


def test_check_reports_state_errors(fx):
    good = gateway_config(fx, dsn_tls(fx))
    path = fx.path("check.json")

    def check(state):
        cfg = json.loads(json.dumps(good))
        cfg["state"] = state
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        return certgate("check", "--config", path, check=False)

    r = check(good["state"])
    assert r.returncode == 0, r.stderr
    assert "state.dsn" not in r.stderr, r.stderr  # verify-full, passfile: nothing to warn
    r = check({"backend": "postgres", "dsn": "host=db sslmode=require password=hunter2"})
    assert r.returncode == 0, r.stderr
    assert "state.dsn: the connection string holds a password" in r.stderr, r.stderr
    assert "sslmode=require does not verify" in r.stderr, r.stderr
    assert "hunter2" not in r.stderr, r.stderr
    cases = [
        ({"backend": "postgres", "dsn": "host=db colour=blue"},
         "state.dsn: invalid connection option \"colour\""),
        ({"backend": "postgres", "dsn": "host='db"},
         "state.dsn: unterminated quoted string in connection info string"),
        ({"backend": "postgres", "dsn": "host=x", "schema": "Bad-Name"},
         "state.schema: expected a lowercase SQL identifier"),
        ({"backend": "postgres"}, "state: missing required key \"dsn\""),
        ({"backend": "postgres", "dsn": "service=prod"}, "state.dsn: service= is not supported"),
        ({"backend": "file", "dir": "x", "dsn": "host=x"},
         "state.dsn: only with backend \"postgres\""),
        ({"backend": "etcd"}, "state.backend: expected \"file\" or \"postgres\""),
    ]
    for state, want in cases:
        r = check(state)
        assert r.returncode == 1, (state, r.stderr)
        assert want in r.stderr, (state, r.stderr)
        assert "check.json:" in r.stderr, r.stderr  # with its position


def test_zz_every_gateway_drains_clean(fx):
    """Last: SIGTERM drains each gateway, its store connection closed (a
    change made just before it is in the store), exit 0 (no leak under
    the sanitizers)."""
    r = api(fx.C, "POST", "/v1/locks", {"device": "laptop-last", "reason": "at the end"})
    assert r.status == 201, r
    fx.C.stop()
    for gw in (fx.A, fx.B):
        wait_for(lambda: r.json["id"] in locks_of(gw), 5, "the last lock on %s" % gw.name)
        gw.stop()
    assert state_sql(fx, "SELECT count(*) FROM certgate.records WHERE kind = 'locks' "
                         "AND key = '%s'" % r.json["id"]) == "1"
    assert state_sql(fx, "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s'"
                     % ROLE) == "0"


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")
             and (len(sys.argv) < 2 or any(a in k for a in sys.argv[1:]))]
    sys.exit(run(tests, setup=setup, teardown=teardown))
