"""Devices and the user's catalog (LOGIN.md, "Devices and the user's
catalog"), against the real OpenID Provider (oidc_fixture.py) and the real
issuer: a device registers at its first login (device.registered, GET
/v1/devices), the trust an admin sets shows in its next certificate,
forgetting it ends its live psql session within a second and makes the
certificate it holds worthless until it logs in again, the registry
survives a restart and a kill -9 mid-write; `certgate services` lists what
`certgate explain` admits, for a dba and an analyst alike; `certgate
connect --all` serves every allowed service and drops one a reload takes
away; `certgate connect` warns before the login certificate expires."""

import concurrent.futures
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

from harness import BIN, SLOW, Cert, Fixture, Gateway, Process, certgate, free_port, \
    port_open, psql, run, wait_for
from oidc_fixture import OpenIDProvider
from test_admin import api, wait_admin
from test_login import csr_for, device, issuer_url, keypair, openssl, post, prove, wait_keys
from test_login_client import Login, device_id_of


def setup():
    fx = Fixture(with_postgres=True)
    for role in ("alice", "bob", "analyst_ro"):
        fx.pg.sql("CREATE ROLE %s LOGIN" % role)
    fx.token = secrets.token_hex(24)
    fx.token_file = fx.path("admin.token")
    with open(fx.token_file, "w") as f:
        f.write(fx.token + "\n")
    os.chmod(fx.token_file, 0o600)
    op_cert = fx.ca.server("op", dns=("localhost",), ips=("127.0.0.1",))
    fx.op = OpenIDProvider(fx.path("op"), tls=(op_cert.crt, op_cert.key, fx.ca.crt))
    # one login key and CSR for the requests made by hand (the device key
    # is what tells devices apart)
    fx.login_key = keypair(fx, "login")
    fx.csr = csr_for(fx, fx.login_key)
    return fx


def teardown(fx):
    fx.op.close()
    fx.close()


# --- the gateway -------------------------------------------------------------------

RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"]},
]


def orders(fx, **extra):
    svc = {"name": "orders-db", "sni": ["localhost"],
           "upstream": ["127.0.0.1:%d" % fx.pg.port], "require_inner_tls": True}
    svc.update(extra)
    return svc


def gateway_config(fx, services=None, rules=None, state_dir=None, **issuer):
    block = {
        "listen": "127.0.0.1:%d" % free_port(),
        "ca_cert": fx.ca.crt,
        "ca_key": os.path.join(fx.ca.dir, "ca.key"),
        "cert_lifetime": "1h",
        "oidc": {"issuer": fx.op.issuer, "client_id": "certgate", "ca_file": fx.op.ca_file},
    }
    block.update(issuer)
    cfg = fx.config(services or [orders(fx)], rules or RULES,
                    admin={"listen": "127.0.0.1:%d" % free_port(), "token_file": fx.token_file})
    cfg["issuer"] = block
    cfg["state"] = {"backend": "file", "dir": state_dir or fx.path(fx.unique("state"))}
    return cfg


def start(fx, cfg, name=None):
    gw = Gateway(fx.dir, json.loads(json.dumps(cfg)), name=name or fx.unique("gw"))
    fx.procs.append(gw)
    gw.token = fx.token
    gw.ca_file = fx.ca.crt
    wait_admin(gw)
    wait_keys(gw)
    return gw


def restart(fx, gw, config=None):
    """The same configuration (and audit file) again, after gw stopped."""
    again = Gateway(fx.dir, json.loads(json.dumps(config or gw.config)), name=fx.unique("gw"))
    fx.procs.append(again)
    again.token, again.ca_file = gw.token, gw.ca_file
    wait_admin(again)
    wait_keys(again)
    return again


# --- logins by hand: one device key, many logins ---------------------------------------

class Device:
    def __init__(self, fx, name):
        self.key, self.pub = device(fx, fx.unique(name))
        self.proof = prove(self.key, fx.csr)
        self.id = device_id_of(openssl("pkey", "-pubin", "-outform", "DER",
                                       data=self.pub.encode()))


def token_for(fx, login):
    return fx.op.client("certgate").authorization_code(login, login + "-password")["id_token"]


def login(fx, gw, dev, login_as="alice", platform="Linux 6.1 Debian 12", token=None):
    """A certificate for dev's device; the files written for psql."""
    extra = {"device_key": dev.pub, "device_proof": dev.proof}
    if platform is not None:
        extra["platform"] = platform
    status, body = post(gw, token or token_for(fx, login_as), fx.csr, **extra)
    assert status == 201, body
    crt = fx.path(fx.unique("login") + ".crt")
    with open(crt, "w") as f:
        f.write(body["certificate"])
    body["cert"] = Cert(crt, fx.login_key)
    return body


def devices(gw):
    r = api(gw, "GET", "/v1/devices")
    assert r.status == 200, r
    return {d["id"]: d for d in r.json["devices"]}


def audit_ms(ev):
    return time.mktime(time.strptime(ev["ts"][:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + \
        int(ev["ts"][20:23])


def tunnel_psql(fx, gw, cert, sql="select current_user", **kw):
    conn = fx.connector(gw.ports()[0], "orders-db", cert)
    try:
        return psql(conn.port, cert, fx.ca.crt, sql, **kw), conn
    except Exception:
        conn.stop()
        raise


# --- the device registry ------------------------------------------------------------

def test_first_login_registers_the_device(fx):
    """certgate login (the code flow, the real provider): device.registered
    with the platform it reports, listed by GET /v1/devices; a second login
    updates last_seen and registers nothing."""
    gw = start(fx, gateway_config(fx))
    home = fx.path("home-register")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["HOME"] = home
    argv = ["--issuer", issuer_url(gw), "--ca", fx.ca.crt,
            "--gateway", "localhost:%d" % gw.ports()[0]]
    lg = Login(argv, env)
    fx.op.login_authorization_code(lg.open_url(), "alice", "alice-password")
    assert lg.finish() == 0, lg.stderr
    folder = os.path.join(home, ".config", "certgate")
    record = json.load(open(os.path.join(folder, "login.json")))
    device_id = record["device_id"]
    assert record["gateway"] == "localhost:%d" % gw.ports()[0], record
    ev = gw.wait_event("device.registered", device_id=device_id)
    uname = os.uname()
    assert ev["user"] == "alice@example.com", ev
    assert ev["platform"].startswith("%s %s" % (uname.sysname, uname.release)), ev
    listed = devices(gw)
    assert set(listed) == {device_id}, listed
    d = listed[device_id]
    assert d["user"] == "alice@example.com" and d["platform"] == ev["platform"], d
    assert d["first_seen"] == d["last_seen"] and d["trust"] is None, d
    assert d["effective_trust"] == "low", d
    # again: the same device, last seen later, no second registration
    time.sleep(1.1)  # last_seen has millisecond resolution; make the change visible
    lg = Login(["--issuer", issuer_url(gw)], env)  # the rest from login.json
    fx.op.login_authorization_code(lg.open_url(), "alice", "alice-password")
    assert lg.finish() == 0, lg.stderr
    gw.wait_event("login.issued", device_id=device_id)
    wait_for(lambda: len(gw.events("login.issued")) == 2, 10, "the second login")
    assert len(gw.events("device.registered")) == 1
    again = devices(gw)[device_id]
    assert again["first_seen"] == d["first_seen"] and again["last_seen"] > d["last_seen"], again
    # the gateway remembered by certgate login --gateway stays for the next logins
    assert json.load(open(os.path.join(folder, "login.json")))["gateway"] == record["gateway"]
    # and the registry is in the state folder
    saved = json.load(open(os.path.join(gw.config["state"]["dir"], "devices.json")))
    assert saved["devices"][device_id]["user"] == "alice@example.com", saved
    gw.stop()


def test_admin_trust_shows_in_the_next_certificate(fx):
    gw = start(fx, gateway_config(fx, device_trust="high"))
    dev = Device(fx, "trust-dev")
    first = login(fx, gw, dev)
    assert first["device_trust"] == "high", first
    r = api(gw, "PUT", "/v1/devices/%s/trust" % first["device_id"], {"level": "medium"})
    assert r.status == 200, r
    listed = devices(gw)[first["device_id"]]
    assert listed["trust"] == "medium" and listed["effective_trust"] == "medium", listed
    second = login(fx, gw, dev)
    assert second["device_trust"] == "medium", second
    text = openssl("x509", "-in", second["cert"].crt, "-noout", "-ext",
                   "subjectAltName").decode()
    assert "urn:certgate:trust:medium" in text, text
    # an admin cannot lift a device above issuer.device_trust
    assert api(gw, "PUT", "/v1/devices/%s/trust" % first["device_id"],
               {"level": "high"}).status == 200
    gw.stop()
    cfg = json.loads(json.dumps(gw.config))
    cfg["issuer"]["device_trust"] = "medium"
    gw = restart(fx, gw, cfg)
    listed = devices(gw)[first["device_id"]]
    assert listed["trust"] == "high" and listed["effective_trust"] == "medium", listed
    assert login(fx, gw, dev)["device_trust"] == "medium"
    gw.stop()


def test_forget_ends_sessions_and_refuses_the_old_certificate(fx):
    """DELETE /v1/devices/{id}: the live psql session ends within a second
    (revoked: device trust), the certificate the device holds is refused
    from then on (also after a restart), the trust an admin set is gone, and
    the next login registers the device anew at the default trust, with a
    certificate that works at once."""
    gw = start(fx, gateway_config(fx, device_trust="high"))
    dev = Device(fx, "forget-dev")
    old = login(fx, gw, dev)
    device_id = old["device_id"]
    assert api(gw, "PUT", "/v1/devices/%s/trust" % device_id, {"level": "medium"}).status == 200
    conn = fx.connector(gw.ports()[0], "orders-db", old["cert"])
    live = psql(conn.port, old["cert"], fx.ca.crt, "select pg_sleep(60)", background=True)
    gw.wait_event("session.start", device_id=device_id)
    t0 = time.monotonic()
    r = api(gw, "DELETE", "/v1/devices/%s" % device_id)
    assert r.status == 200 and r.json == {"id": device_id, "forgotten": True}, r
    end = gw.wait_event("session.end", reason="revoked: device trust")
    assert live.wait(10 * SLOW) != 0
    took = time.monotonic() - t0
    forgotten = gw.wait_event("device.forgotten", device_id=device_id)
    assert forgotten["user"] == "alice@example.com", forgotten
    assert forgotten["platform"] == "Linux 6.1 Debian 12", forgotten
    assert forgotten["by"].startswith("127.0.0.1:"), forgotten
    gap = audit_ms(end) - audit_ms(forgotten)
    print("# forget -> session.end: %d ms in the audit log; psql gone after %.0f ms"
          % (gap, took * 1000))
    assert 0 <= gap < 1000, (forgotten, end)
    assert device_id not in devices(gw)
    assert api(gw, "DELETE", "/v1/devices/%s" % device_id).status == 404
    assert api(gw, "GET", "/v1/devices/%s/trust" % device_id).status == 404
    # the certificate the device still holds: refused, and the connector says why
    r = psql(conn.port, old["cert"], fx.ca.crt, "select 1")
    assert r.returncode != 0, r.stdout
    denied = gw.wait_event("authz.denied", rule="forgotten-device")
    assert denied["reason"] == "device forgotten: log in again", denied
    assert denied["device_id"] == device_id, denied
    wait_for(lambda: "refused it: device forgotten: log in again" in conn.output(), 10,
             "the connector to say why")
    conn.stop()
    # its next login registers it anew, at the default trust, and works at once
    new = login(fx, gw, dev, platform=None)
    assert new["device_id"] == device_id and new["device_trust"] == "high", new
    registered = gw.events("device.registered", device_id=device_id)
    assert len(registered) == 2 and registered[-1]["platform"] is None, registered
    listed = devices(gw)[device_id]
    assert listed["trust"] is None and listed["platform"] is None, listed
    r, conn = tunnel_psql(fx, gw, new["cert"])
    assert r.returncode == 0 and r.stdout.strip() == "alice", r.stderr
    conn.stop()
    r, conn = tunnel_psql(fx, gw, old["cert"], "select 1")
    assert r.returncode != 0, "the old certificate works again"
    conn.stop()
    # a restart forgets neither the device nor when it was forgotten
    gw.stop()
    gw = restart(fx, gw)
    assert devices(gw)[device_id]["user"] == "alice@example.com"
    r, conn = tunnel_psql(fx, gw, old["cert"], "select 1")
    assert r.returncode != 0, "the old certificate works after a restart"
    conn.stop()
    r, conn = tunnel_psql(fx, gw, new["cert"])
    assert r.returncode == 0, r.stderr
    conn.stop()
    gw.stop()


def test_registry_survives_kill9_mid_write(fx):
    """Logins of new devices as fast as the issuer takes them, the gateway
    killed -9 in the middle: it starts again and reads back a registry that
    is whole: every device it lists did log in, with its user and platform,
    and those registered well before the kill are all there."""
    state_dir = fx.path("state-kill9")
    gw = start(fx, gateway_config(fx, state_dir=state_dir))
    early = [Device(fx, "early") for _ in range(3)]
    for dev in early:
        login(fx, gw, dev)
    early_ids = set(devices(gw))
    wait_for(lambda: set(json.load(open(os.path.join(state_dir, "devices.json")))["devices"])
             == early_ids, 10, "the early devices on disk")
    many = [Device(fx, "many") for _ in range(80)]
    kid = fx.op.keys["rsa"]["jwk"]["kid"]
    tokens = fx.op.forge_many([dict(header={"alg": "RS256", "kid": kid},
                                    payload=dict(fx.op.id_token_claims("alice"),
                                                 jti=secrets.token_hex(8)), key="rsa")
                               for _ in many])
    registered = []
    stop = threading.Event()

    def one(pair):
        dev, token = pair
        if stop.is_set():
            return
        try:
            status, body = post(gw, token, fx.csr, device_key=dev.pub, device_proof=dev.proof,
                                platform="Linux kill9")
        except OSError:
            return
        if status == 201:
            registered.append(body["device_id"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(one, p) for p in zip(many, tokens)]
        wait_for(lambda: len(registered) >= 30, 60, "30 devices registered")
        gw.signal(signal.SIGKILL)
        gw.wait(10)
        stop.set()
        for f in futures:
            f.result()
    assert not [n for n in os.listdir(state_dir) if n.endswith(".json") and n != "devices.json"
                and n not in ("locks.json", "trust.json", "tokens.json")], os.listdir(state_dir)
    gw = restart(fx, gw)
    listed = devices(gw)
    assert early_ids <= set(listed), (early_ids, set(listed))
    # a device may be on disk whose reply the kill cut off, never one that
    # did not log in
    assert set(listed) <= early_ids | {d.id for d in many}, set(listed)
    for d in listed.values():
        assert d["user"] == "alice@example.com" and d["platform"] in (
            "Linux 6.1 Debian 12", "Linux kill9"), d
    print("# kill -9 after %d registrations: %d devices read back whole"
          % (len(registered), len(listed) - len(early_ids)))
    gw.stop()


# --- the user's catalog ---------------------------------------------------------------

def catalog_services(fx):
    """orders-db and reports-db (tunnels with a client_port), wiki (a
    tunnel without one), billing-db (postgres mode, its own port)."""
    fx.ports = {"orders-db": free_port(), "reports-db": free_port(), "scratch-db": free_port()}
    pg = "127.0.0.1:%d" % fx.pg.port
    return [
        orders(fx, client_port=fx.ports["orders-db"], description="Orders (read/write)"),
        {"name": "reports-db", "upstream": [pg], "require_inner_tls": True,
         "client_port": fx.ports["reports-db"], "description": "Reports \u2014 read only"},
        {"name": "wiki", "upstream": ["127.0.0.1:9"]},
        {"name": "billing-db", "listen": "127.0.0.1:%d" % free_port(), "mode": "postgres",
         "upstream": [pg], "description": "Billing",
         "upstream_tls": {"ca": fx.ca.crt, "server_name": "localhost",
                          "client_ca_cert": fx.ca.crt, "client_ca_key": fx.ca.key}},
    ]


CATALOG_RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"]},
    {"name": "analysts-orders", "effect": "allow", "services": ["orders-db"],
     "groups": ["analysts"]},
    {"name": "analysts-billing", "effect": "allow", "services": ["billing-db"],
     "groups": ["analysts"], "db_users": ["analyst_ro"]},
    {"name": "no-superuser", "effect": "deny", "services": ["billing-db"],
     "db_users": ["postgres"]},
    {"name": "wiki-here", "effect": "allow", "services": ["wiki"],
     "users": ["*@example.com"], "sources": ["127.0.0.0/8"]},
]


def services_cmd(fx, gw, cert, *extra, check=True):
    args = ["services", "--gateway", "localhost:%d" % gw.ports()[0], "--cert", cert.crt,
            "--key", cert.key, "--ca", fx.ca.crt] + list(extra)
    return certgate(*args, check=check)


def explained(fx, gw, cert):
    """The services `certgate explain` admits cert to (from this host)."""
    admitted = set()
    for svc in gw.config["services"]:
        r = certgate("explain", "--config", gw.config_path, "--cert", cert.crt, "--service",
                     svc["name"], "--source", "127.0.0.1", "--json", check=False)
        doc = json.loads(r.stdout)
        assert r.returncode == (0 if doc["admitted"] else 1), r
        if doc["admitted"]:
            admitted.add(svc["name"])
    return admitted


def test_catalog_matches_explain_for_a_dba_and_an_analyst(fx):
    gw = start(fx, gateway_config(fx, services=catalog_services(fx), rules=CATALOG_RULES))
    alice = login(fx, gw, Device(fx, "alice-dev"), "alice")
    bob = login(fx, gw, Device(fx, "bob-dev"), "bob")
    lists = {}
    for who, body in (("alice", alice), ("bob", bob)):
        r = services_cmd(fx, gw, body["cert"], "--json")
        doc = json.loads(r.stdout)
        assert doc["user"] == body["user"] and doc["device_id"] == body["device_id"], doc
        listed = [s["name"] for s in doc["services"]]
        assert listed == [s["name"] for s in gw.config["services"] if s["name"] in listed], \
            "not in the configuration's order: %s" % listed
        assert set(listed) == explained(fx, gw, body["cert"]), (who, listed)
        lists[who] = doc
        ev = gw.wait_event("catalog.listed", user=body["user"])
        assert ev["device_id"] == body["device_id"] and ev["services"] == listed, ev
    # the two differ exactly where the policy does
    assert [s["name"] for s in lists["alice"]["services"]] == \
        ["orders-db", "reports-db", "wiki", "billing-db"], lists["alice"]
    assert [s["name"] for s in lists["bob"]["services"]] == ["orders-db", "wiki", "billing-db"], \
        lists["bob"]
    by_name = {s["name"]: s for s in lists["alice"]["services"]}
    assert by_name["orders-db"] == {"name": "orders-db", "mode": "tunnel",
                                    "description": "Orders (read/write)",
                                    "client_port": fx.ports["orders-db"]}, by_name
    assert by_name["wiki"]["client_port"] is None and by_name["wiki"]["description"] is None
    billing_port = int(gw.config["services"][3]["listen"].rsplit(":", 1)[1])
    assert by_name["billing-db"]["mode"] == "postgres" and \
        by_name["billing-db"]["port"] == billing_port, by_name
    # the table
    text = services_cmd(fx, gw, alice["cert"]).stdout
    assert re.search(r"^orders-db +tunnel +127\.0\.0\.1:%d +Orders \(read/write\)$"
                     % fx.ports["orders-db"], text, re.M), text
    assert re.search(r"^billing-db +postgres +localhost:%d \(psql\) +Billing$" % billing_port,
                     text, re.M), text
    assert re.search(r"^wiki +tunnel +-$", text, re.M), text
    # how long a catalog takes, the command's start included
    times = []
    for _ in range(5):
        t0 = time.monotonic()
        services_cmd(fx, gw, alice["cert"], "--json")
        times.append(time.monotonic() - t0)
    print("# certgate services (4 services, process start included): median %.0f ms"
          % (sorted(times)[2] * 1000))
    # a device trust of always_deny refuses the certificate itself
    assert api(gw, "PUT", "/v1/devices/%s/trust" % bob["device_id"],
               {"level": "always_deny"}).status == 200
    r = services_cmd(fx, gw, bob["cert"], check=False)
    assert r.returncode == 1 and "refuses this certificate: device trust always_deny" \
        in r.stderr, r
    assert api(gw, "DELETE", "/v1/devices/%s/trust" % bob["device_id"]).status == 200
    assert services_cmd(fx, gw, bob["cert"]).returncode == 0
    # a lock refuses the certificate itself: said, exit 1, audited
    lock = api(gw, "POST", "/v1/locks", {"user": "bob@example.com", "reason": "offboarded"})
    assert lock.status == 201, lock
    r = services_cmd(fx, gw, bob["cert"], check=False)
    assert r.returncode == 1 and "refuses this certificate: locked: offboarded" in r.stderr, r
    ev = gw.wait_event("catalog.listed", reason="locked: offboarded (lock %s)" % lock.json["id"])
    assert ev["services"] == [], ev
    gw.stop()


def test_catalog_reserved_name_and_refusals(fx):
    """The catalog's server name is no service's; an unknown certificate
    never gets one."""
    cfg = gateway_config(fx, services=[orders(fx, sni=["certgate-catalog"])])
    path = fx.path("reserved.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    r = certgate("check", "--config", path, check=False)
    assert r.returncode == 1 and '"certgate-catalog" is reserved' in r.stderr, r.stderr
    gw = start(fx, gateway_config(fx, services=catalog_services(fx), rules=CATALOG_RULES))
    other = os.path.join(fx.dir, "other-ca")
    certgate("ca", "init", "--dir", other)
    stranger = Cert(os.path.join(other, "s.crt"), os.path.join(other, "s.key"))
    certgate("ca", "issue", "--dir", other, "--out", os.path.join(other, "s"), "--user",
             "alice@example.com", "--group", "dba")
    r = services_cmd(fx, gw, stranger, check=False)
    assert r.returncode == 1 and "certgate services:" in r.stderr, r
    gw.wait_event("tls.rejected", sni="certgate-catalog")
    assert gw.events("catalog.listed") == []
    gw.stop()


# --- connect --all, and the renewal prompt ------------------------------------------

class Connect(Process):
    """certgate connect with the arguments given (the login files named)."""

    def __init__(self, fx, gw, cert, *args):
        super().__init__(["connect", "--gateway", "localhost:%d" % gw.ports()[0],
                          "--cert", cert.crt, "--key", cert.key, "--ca", fx.ca.crt] + list(args),
                         fx.path(fx.unique("connect") + ".log"))
        fx.procs.append(self)

    def wait_output(self, text, timeout=10):
        def seen():
            if text in self.output():
                return True
            if not self.alive():
                raise AssertionError("certgate connect exited %s:\n%s"
                                     % (self.proc.returncode, self.output()))
            return False
        try:
            wait_for(seen, timeout, "certgate connect to say %r" % text)
        except AssertionError as e:
            raise AssertionError("%s; it said:\n%s" % (e, self.output())) from None

    def stop(self):
        if self.alive():
            self.signal(signal.SIGTERM)
            return self.wait(15)
        return self.proc.returncode


def test_connect_all_serves_each_allowed_service(fx):
    """--all: one listener per tunnel-mode service with a client_port (a
    taken port, no client_port and postgres mode skipped with a word), two
    psql sessions at once through two of them; a reload that takes a
    service away closes its listener within the next refresh."""
    services = catalog_services(fx)
    services.append({"name": "scratch-db", "upstream": ["127.0.0.1:%d" % fx.pg.port],
                     "client_port": fx.ports["scratch-db"]})
    gw = start(fx, gateway_config(fx, services=services, rules=CATALOG_RULES))
    alice = login(fx, gw, Device(fx, "all-dev"), "alice")
    taken = socket.socket()
    taken.bind(("127.0.0.1", fx.ports["scratch-db"]))
    taken.listen(1)
    try:
        conn = Connect(fx, gw, alice["cert"], "--all", "--refresh", "1s")
        conn.wait_output("orders-db: listening on 127.0.0.1:%d" % fx.ports["orders-db"])
        conn.wait_output("reports-db: listening on 127.0.0.1:%d" % fx.ports["reports-db"])
        conn.wait_output("scratch-db: 127.0.0.1:%d is taken: skipped" % fx.ports["scratch-db"])
        conn.wait_output("wiki: no client_port: skipped")
        conn.wait_output("billing-db: postgres mode: psql connects to the gateway, localhost:")
    finally:
        taken.close()
    # two services at once
    slow = psql(fx.ports["orders-db"], alice["cert"], fx.ca.crt, "select pg_sleep(2), 'orders'",
                background=True)
    r = psql(fx.ports["reports-db"], alice["cert"], fx.ca.crt, "select 'reports'")
    assert r.returncode == 0 and r.stdout.strip() == "reports", r.stderr
    out, err = slow.communicate(timeout=30 * SLOW)
    assert slow.returncode == 0 and out.strip().endswith("orders"), err
    started = {e["service"] for e in gw.events("session.start", user="alice@example.com")}
    assert {"orders-db", "reports-db"} <= started, started
    # the freed port is taken up at a later refresh
    conn.wait_output("scratch-db: listening on 127.0.0.1:%d" % fx.ports["scratch-db"])
    # a reload takes reports-db away from dba: its listener goes, orders-db stays
    cfg = json.loads(json.dumps(gw.config))
    cfg["rules"][0]["services"] = ["orders-db", "wiki", "billing-db", "scratch-db"]
    gw.write_config(cfg)
    t0 = time.monotonic()
    assert api(gw, "POST", "/v1/reload").status == 200
    conn.wait_output("reports-db: no longer in your catalog: stopped listening on "
                     "127.0.0.1:%d" % fx.ports["reports-db"])
    print("# reload -> the connector's listener gone: %.1f s (refresh every 1 s)"
          % (time.monotonic() - t0))
    wait_for(lambda: not port_open(fx.ports["reports-db"]), 5, "the reports-db port to close")
    r = psql(fx.ports["orders-db"], alice["cert"], fx.ca.crt, "select 1")
    assert r.returncode == 0, r.stderr
    assert conn.alive()
    assert conn.stop() == 0
    gw.stop()


def test_connect_service_uses_the_catalog_port(fx):
    """--service alone: 127.0.0.1 at the catalog's client_port; a service
    not in the catalog, or without client_port, is refused with a word."""
    gw = start(fx, gateway_config(fx, services=catalog_services(fx), rules=CATALOG_RULES))
    bob = login(fx, gw, Device(fx, "svc-dev"), "bob")
    conn = Connect(fx, gw, bob["cert"], "--service", "orders-db")
    conn.wait_output("listening on 127.0.0.1:%d" % fx.ports["orders-db"])
    r = psql(fx.ports["orders-db"], bob["cert"], fx.ca.crt, "select current_user", user="bob")
    assert r.returncode == 0 and r.stdout.strip() == "bob", r.stderr
    conn.stop()
    for service, text in (("reports-db", "reports-db is not in your catalog"),
                          ("wiki", "wiki has no client_port: give --listen"),
                          ("billing-db", "billing-db is a postgres-mode service")):
        c = Connect(fx, gw, bob["cert"], "--service", service)
        assert c.wait(15) == 1, c.output()
        assert text in c.output(), c.output()
    gw.stop()


def test_connect_warns_before_the_certificate_expires(fx):
    """A login certificate with 9 minutes left: one warning at once; the
    renewed files are picked up without a restart (and with --all the
    catalog is read again at once); one with seconds left: a warning, then
    one more when it has expired."""
    gw = start(fx, gateway_config(fx, services=catalog_services(fx), rules=CATALOG_RULES))
    folder = fx.path("renew")
    os.makedirs(folder)
    live = Cert(os.path.join(folder, "login-cert.pem"), os.path.join(folder, "login-key.pem"))

    def issue_into(ttl):
        c = fx.ca.issue(fx.unique("renew"), "alice@example.com", groups=["dba"], ttl=ttl)
        os.replace(c.key, live.key)  # the key first: never a certificate without its key
        os.replace(c.crt, live.crt)

    issue_into("9m")
    conn = Connect(fx, gw, live, "--all", "--refresh", "1h")
    conn.wait_output("run certgate login")
    assert re.search(r"expires in (9m|8m\d+s) \(", conn.output()), conn.output()
    before = len(gw.events("catalog.listed"))
    issue_into("1h")
    conn.wait_output("loaded the renewed login certificate %s" % live.crt)
    wait_for(lambda: len(gw.events("catalog.listed")) > before, 10,
             "the catalog read again after the renewal")
    r = psql(fx.ports["orders-db"], live, fx.ca.crt, "select 1")
    assert r.returncode == 0, r.stderr
    assert conn.output().count("expires in") == 1, conn.output()
    conn.stop()

    issue_into("4s")
    conn = Connect(fx, gw, live, "--service", "orders-db", "--listen",
                   "127.0.0.1:%d" % free_port())
    conn.wait_output("run certgate login")
    assert re.search(r"expires in \ds \(", conn.output()), conn.output()
    conn.wait_output("has expired", timeout=20)
    time.sleep(1.5)  # the watch runs every second: no warning twice
    out = conn.output()
    assert out.count("expires in") == 1 and out.count("has expired") == 1, out
    conn.stop()
    gw.stop()


def test_usage_and_the_man_page(fx):
    """certgate(1) documents exactly the options of services (and connect's
    new ones); usage errors exit 2 with one line."""
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    man = open(os.path.join(src, "docs/man/certgate.1.scd")).read()
    for cmd in ("services", "connect"):
        opts = set(re.findall(r"--[a-z][a-z0-9-]*", certgate(cmd, "--help").stdout)) - {"--help"}
        m = re.search(r"^## certgate %s\n(.*?)(?=^## |^# )" % cmd, man, re.M | re.S)
        documented = set(re.findall(r"--[a-z][a-z0-9-]*", m.group(1))) - {"--help"}
        assert opts == documented, (cmd, sorted(opts ^ documented))
    assert "*certgate services*" in man
    assert "  services " in certgate("--help").stdout
    home = fx.path("usage-home")
    env = dict(os.environ, HOME=home)
    env.pop("XDG_CONFIG_HOME", None)
    for args, code, text in (
            (["connect", "--all", "--service", "x"], 2, "--all takes no --service or --listen"),
            (["connect", "--service", "x", "--refresh", "1s"], 2, "--refresh goes with --all"),
            (["connect", "--all", "--gateway", "nope"], 2, "--gateway nope: expected HOST:PORT"),
            (["services", "--gateway", "h:1"], 1, "no login certificate in"),
            (["services", "--cert", "x"], 2, "--cert goes with --key"),
            (["login", "--gateway", "no-port"], 2, "--gateway no-port: expected HOST:PORT")):
        r = certgate(*args, check=False, env=env)
        assert r.returncode == code and text in r.stderr, (args, r.returncode, r.stderr)
    # the login folder without a remembered gateway
    folder = os.path.join(home, ".config", "certgate")
    os.makedirs(folder)
    alice = fx.ca.issue(fx.unique("usage"), "alice@example.com")
    for src_path, name in ((alice.crt, "login-cert.pem"), (alice.key, "login-key.pem"),
                           (fx.ca.crt, "ca.pem")):
        with open(src_path) as f, open(os.path.join(folder, name), "w") as g:
            g.write(f.read())
    r = certgate("services", check=False, env=env)
    assert r.returncode == 2 and "--gateway HOST:PORT is required" in r.stderr, r.stderr


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")
             and (len(sys.argv) < 2 or any(a in k for a in sys.argv[1:]))]
    sys.exit(run(tests, setup=setup, teardown=teardown))
