"""The admin REST API (ADMIN_API.md) and continuous authorization, against
real processes: PostgreSQL, psql through `certgate connect`, `certgate
serve` with an admin listener and a bearer token.

Every revocation path is exercised on a LIVE psql session (running
`select pg_sleep(30)` through the tunnel): the client must be gone within
1 s of the API call's return (measured to the psql process's exit), and the
audit log must say why (session.end reason) and who (admin.* `by`).

Clients: urllib for most calls, curl (the way an admin would) for a few,
`certgate health`, promtool for /metrics, a unix datagram socket standing
in for systemd's NOTIFY_SOCKET. One gateway per test."""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from harness import BIN, SLOW, WRAPPER, Fixture, Gateway, deadline, free_port, port_open, \
    psql, run, tls_client, wait_for

RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"], "min_trust": "high"},
    {"name": "no-contractors", "effect": "deny", "services": ["*"],
     "users": ["*@contractor.example"]},
]

# revocation latencies measured by the tests, printed at the end
LATENCIES = []

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WHERE = re.compile(r"\.json:\d+:\d+")


# --- fixture -------------------------------------------------------------------

def setup():
    fx = Fixture(with_postgres=True)
    for role in ("alice", "bob", "carol", "dave", "erin"):
        fx.pg.sql("CREATE ROLE %s LOGIN" % role)
    # backends of killed clients go away quickly instead of sleeping on
    fx.pg.sql("ALTER SYSTEM SET client_connection_check_interval = '200ms'")
    fx.pg.sql("SELECT pg_reload_conf()")
    fx.token = secrets.token_hex(24)
    fx.token_file = fx.path("admin.token")
    with open(fx.token_file, "w") as f:
        f.write(fx.token + "\n")
    os.chmod(fx.token_file, 0o600)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high")
    fx.bob = fx.ca.issue("bob", "bob@example.com", groups=["dba"], device_id="laptop-2",
                         trust="high")
    fx.carol = fx.ca.issue("carol", "carol@example.com", groups=["dba"], device_id="laptop-3",
                           trust="high")
    fx.flood = None
    return fx


def teardown(fx):
    if fx.flood is not None:
        fx.flood.stop()
    fx.close()
    if LATENCIES:
        print("# revocation latencies (API call returned -> psql exited):")
        for what, ms in LATENCIES:
            print("#   %-28s %6.1f ms" % (what, ms))
        sys.stdout.flush()


def service(fx, name="orders-db", **extra):
    svc = {"name": name, "upstream": ["127.0.0.1:%d" % fx.pg.port]}
    svc.update(extra)
    return svc


def admin_config(fx, services=None, rules=None, gateway=None, token=True, **extra):
    port = free_port()
    admin = {"listen": "127.0.0.1:%d" % port}
    if token:
        admin["token_file"] = fx.token_file
    return fx.config(services or [service(fx)], rules if rules is not None else RULES,
                     gateway=gateway, admin=admin, **extra)


def admin_port(gw):
    return int(gw.config["admin"]["listen"].rsplit(":", 1)[1])


def wait_admin(gw):
    port = admin_port(gw)

    def ready():
        if not gw.alive():
            raise AssertionError("certgate serve exited (%s): %s"
                                 % (gw.proc.returncode, gw.output()))
        return port_open(port) and api(gw, "GET", "/readyz", token=None).status == 200
    wait_for(ready, 10, "the admin API's /readyz")
    return gw


# --- HTTP clients ------------------------------------------------------------------

class Reply:
    def __init__(self, status, headers, text):
        self.status = status
        self.headers = headers
        self.text = text

    @property
    def json(self):
        return json.loads(self.text)

    def __repr__(self):
        return "<HTTP %s %s>" % (self.status, self.text[:500])


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api(gw, method, path, body=None, token="default", raw=None, headers=None):
    """One request with urllib. body: a JSON value; raw: bytes sent as is.
    token: "default" = the fixture's token, None = no Authorization header."""
    if token == "default":
        token = gw.token
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                        else None)
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (admin_port(gw), path), data=data,
                                 method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with _OPENER.open(req, timeout=10 * SLOW) as resp:
            return Reply(resp.status, resp.headers, resp.read().decode())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read().decode())


def curl(gw, method, path, body=None):
    """The way an admin would: curl -sS -H "Authorization: Bearer $TOKEN" ..."""
    cmd = 'curl -sS --noproxy "*" -X "$METHOD" -H "Authorization: Bearer $TOKEN" ' \
          '-w "\\n%{http_code}" "$URL"'
    env = dict(os.environ, TOKEN=gw.token, METHOD=method,
               URL="http://127.0.0.1:%d%s" % (admin_port(gw), path))
    if body is not None:
        cmd += ' -H "Content-Type: application/json" --data-raw "$BODY"'
        env["BODY"] = json.dumps(body)
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=env,
                          timeout=20 * SLOW)
    assert proc.returncode == 0, "curl failed: %s" % proc.stderr
    text, _, code = proc.stdout.rpartition("\n")
    return Reply(int(code), {}, text)


def raw_http(gw, request, send_after=b""):
    """Sends request bytes (then send_after, ignoring a peer that stopped
    reading) and returns (status, head, body) of the reply."""
    with socket.create_connection(("127.0.0.1", admin_port(gw)), timeout=10 * SLOW) as s:
        s.sendall(request)
        try:
            if send_after:
                s.sendall(send_after)
        except OSError:
            pass
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        assert m, "no HTTP reply: %r" % data[:200]
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if length:
            want = int(length.group(1))
            while len(body) < want:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        return int(m.group(1)), head.decode("latin-1"), body.decode()


# --- live psql sessions -------------------------------------------------------------

def live_psql(fx, conn, cert, role):
    """psql running `select pg_sleep(30)` through the connector: returns
    once PostgreSQL runs the query (a live session, end to end)."""
    app = fx.unique("app")
    p = psql(conn.port, cert, fx.ca.crt, "select pg_sleep(30)", user=role, background=True,
             extra_env={"PGAPPNAME": app})

    def running():
        if p.poll() is not None:
            raise AssertionError("psql exited %s: %s" % (p.returncode, p.stderr.read()))
        return fx.pg.sql("select count(*) from pg_stat_activity where application_name = '%s'"
                         " and state = 'active' and query like '%%pg_sleep%%'" % app) == "1"
    try:
        wait_for(running, 15, "psql's pg_sleep to run through the gateway")
    except Exception:
        if p.poll() is None:
            p.kill()
            p.wait()
        raise
    fx.procs.append(_Killer(p))
    return p


class _Killer:
    """Lets Fixture.reap kill a psql left running by a failed test."""

    def __init__(self, proc):
        self.proc = proc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def assert_gone_within(p, t0, what, limit=1.0):
    """psql p must exit (with an error) within limit s of t0 (the API call's
    return); records the latency."""
    try:
        p.wait(timeout=max(5.0, limit) * SLOW)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError("%s: psql still connected %.1f s after the call"
                             % (what, time.monotonic() - t0))
    ms = (time.monotonic() - t0) * 1000
    LATENCIES.append((what, ms))
    print("# %s: psql gone %.1f ms after the call" % (what, ms), flush=True)
    assert ms <= limit * 1000 * SLOW, "%s: psql took %.0f ms to go (limit %.0f ms)" % (
        what, ms, limit * 1000 * SLOW)
    assert p.returncode != 0, "psql finished its query normally: %s" % p.stdout.read()


def psql_ok(fx, conn, cert, role):
    r = psql(conn.port, cert, fx.ca.crt, "select current_user", user=role)
    assert r.returncode == 0, "psql refused: %s" % r.stderr
    assert r.stdout.strip() == role, r.stdout


def psql_refused(fx, gw, conn, cert, role, user, **match):
    """A new psql is refused by the gateway: returns its authz.denied event."""
    before = len(gw.events("authz.denied", user=user))
    r = psql(conn.port, cert, fx.ca.crt, "select 1", user=role)
    assert r.returncode != 0, "psql was admitted: %s" % r.stdout
    wait_for(lambda: len(gw.events("authz.denied", user=user)) > before, 5,
             "authz.denied for %s" % user)
    ev = gw.events("authz.denied", user=user)[-1]
    for k, v in match.items():
        assert ev.get(k) == v, (k, ev)
    return ev


def one_session(gw, user):
    r = api(gw, "GET", "/v1/sessions?user=" + user)
    assert r.status == 200, r
    sessions = r.json["sessions"]
    assert len(sessions) == 1, sessions
    return sessions[0]


def session_end(gw, sid, reason=None):
    """The session's one session.end; with reason, it must say that."""
    end = gw.wait_event("session.end", 5, session=sid)
    assert len(gw.events("session.end", session=sid)) == 1, gw.events("session.end")
    if reason is not None:
        assert end["reason"] == reason, "expected reason %r: %s" % (reason, end)
    return end


def new_gateway(fx, **kw):
    gw = fx.gateway(admin_config(fx, **kw))
    gw.token = fx.token
    return wait_admin(gw)


def stop(gw):
    gw.stop()
    assert gw.events("gateway.stop"), gw.events()[-3:]


def stopped(gw):
    """After the test's own SIGTERM: a clean exit (no second signal)."""
    code = gw.wait(30)
    assert code == 0, "certgate serve exited %s:\n%s" % (code, gw.output()[-4000:])
    assert gw.events("gateway.stop"), gw.events()[-3:]


# --- health, status, policy ----------------------------------------------------------

def test_health_and_readiness_are_open(fx):
    gw = new_gateway(fx)
    for path, status in (("/healthz", "ok"), ("/readyz", "ready")):
        r = api(gw, "GET", path, token=None)
        assert r.status == 200, (path, r)
        assert r.json["status"] == status, (path, r)
        assert r.headers["Content-Type"] == "application/json", r.headers
    # a wrong token does not matter on the open paths either
    assert api(gw, "GET", "/healthz", token="wrong-token-wrong-token").status == 200
    stop(gw)


def test_status(fx):
    gw = new_gateway(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    p = live_psql(fx, conn, fx.alice, "alice")
    r = api(gw, "GET", "/v1/status")
    assert r.status == 200, r
    st = r.json
    assert st["generation"] == 1, st
    assert re.fullmatch(r"[0-9a-f]{64}", st["policy_sha256"]), st
    assert isinstance(st["uptime_seconds"], int) and 0 <= st["uptime_seconds"] < 60, st
    assert st["version"], st
    assert RFC3339_MS.match(st["loaded_at"]) and RFC3339_MS.match(st["started_at"]), st
    assert st["ready"] is True, st
    # the counts agree with the audit log (the connector's own port probe
    # makes a short session of its own too)
    started = len(gw.events("session.start"))
    assert st["counts"]["sessions"] == 1, st
    assert st["counts"]["sessions_started"] == started >= 1, (st, started)
    assert st["counts"]["accepted"] >= started, st
    assert st["counts"]["refused"] == 0, st
    # the sha256 is the policy's: a different policy, a different hash
    cfg = dict(gw.config, rules=RULES + [{"name": "extra", "effect": "deny",
                                          "services": ["*"], "users": ["x@example.com"]}])
    gw.write_config(cfg)
    assert api(gw, "POST", "/v1/reload").json == {"generation": 2}
    st2 = api(gw, "GET", "/v1/status").json
    assert st2["generation"] == 2 and st2["policy_sha256"] != st["policy_sha256"], st2
    assert st2["counts"]["sessions"] == 1, st2  # alice is still admitted
    p.kill()
    p.wait()
    stop(gw)


def test_reload_ok_and_policy_shows_no_secrets(fx):
    gw = new_gateway(fx)
    r = api(gw, "GET", "/v1/policy")
    assert r.status == 200, r
    pol = r.json
    assert pol["generation"] == 1, pol
    assert re.fullmatch(r"[0-9a-f]{64}", pol["sha256"]), pol
    cfg = pol["config"]
    assert [s["name"] for s in cfg["services"]] == ["orders-db"], cfg
    assert [x["name"] for x in cfg["rules"]] == ["dba", "no-contractors"], cfg
    assert cfg["admin"]["listen"] == gw.config["admin"]["listen"], cfg
    assert "-----BEGIN" not in r.text, "key material in /v1/policy"
    assert fx.token not in r.text, "the admin token in /v1/policy"
    assert "PRIVATE" not in r.text, r.text
    r = api(gw, "POST", "/v1/reload")
    assert r.status == 200 and r.json == {"generation": 2}, r
    ev = gw.wait_event("admin.reload", generation=2)
    assert ev["ok"] is True and ev["errors"] == [], ev
    assert ev["by"].startswith("127.0.0.1:"), ev
    assert api(gw, "GET", "/v1/policy").json["generation"] == 2
    # the token is nowhere else either
    with open(gw.audit_path) as f:
        assert fx.token not in f.read()
    assert fx.token not in gw.output()
    stop(gw)


def test_reload_moves_the_admin_listener(fx):
    """admin.listen follows a reload: the new address answers, the old one
    is closed; removing the admin section closes it."""
    gw = new_gateway(fx)
    old_port = admin_port(gw)
    cfg = dict(gw.config)
    new_port = free_port()
    cfg["admin"] = dict(cfg["admin"], listen="127.0.0.1:%d" % new_port)
    gw.write_config(cfg)  # api() now talks to the new port
    gw.reload()
    gw.wait_event("admin.reload", generation=2)
    wait_for(lambda: not port_open(old_port), what="the old admin port to close")
    assert admin_port(gw) == new_port
    assert api(gw, "GET", "/v1/status").json["generation"] == 2
    cfg = dict(gw.config)
    del cfg["admin"]
    gw.write_config(cfg)
    gw.reload()
    gw.wait_event("admin.reload", generation=3)
    wait_for(lambda: not port_open(new_port), what="the admin port to close")
    stop(gw)


def test_certgate_health(fx):
    gw = new_gateway(fx)
    r = subprocess.run([BIN, "health", "--admin", gw.config["admin"]["listen"]],
                       capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    closed = "127.0.0.1:%d" % free_port()
    r = subprocess.run([BIN, "health", "--admin", closed], capture_output=True, text=True,
                       timeout=20 * SLOW)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert closed in r.stderr, r.stderr
    stop(gw)


# --- authentication and errors -------------------------------------------------------

def test_token_required(fx):
    gw = new_gateway(fx)
    for path in ("/v1/status", "/v1/sessions", "/v1/policy", "/v1/locks", "/metrics"):
        for token in (None, "wrong-token-0123456789", fx.token + "x", fx.token[:-1]):
            r = api(gw, "GET", path, token=token)
            assert r.status == 401, (path, token, r)
            assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
            assert "error" in r.json, r
        r = api(gw, "GET", path)
        assert r.status == 200, (path, r)
    # a state change without the token does nothing
    r = api(gw, "POST", "/v1/locks", {"user": "alice@example.com"}, token=None)
    assert r.status == 401, r
    assert api(gw, "GET", "/v1/locks").json["locks"] == []
    r = api(gw, "POST", "/v1/reload", token="nope-nope-nope-nope")
    assert r.status == 401, r
    assert not gw.events("admin.reload") and not gw.events("admin.lock")
    stop(gw)


def test_http_errors(fx):
    gw = new_gateway(fx)
    r = api(gw, "GET", "/v1/nope")
    assert r.status == 404 and "error" in r.json, r
    r = api(gw, "PATCH", "/v1/locks", {"user": "a@example.com"})
    assert r.status == 405, r
    assert r.headers["Allow"] == "GET, POST", r.headers
    r = api(gw, "POST", "/v1/status")
    assert r.status == 405 and r.headers["Allow"] == "GET", r
    r = api(gw, "POST", "/v1/devices/laptop-1/trust", {"level": "low"})
    assert r.status == 405 and r.headers["Allow"] == "GET, PUT, DELETE", r
    r = api(gw, "GET", "/v1/sessions/some-id")
    assert r.status == 405 and r.headers["Allow"] == "DELETE", r
    # bad bodies
    r = api(gw, "POST", "/v1/locks", raw=b'{"user": "alice@example.com"')
    assert r.status == 400 and "invalid JSON" in r.json["error"], r
    r = api(gw, "POST", "/v1/locks", raw=b'["alice@example.com"]')
    assert r.status == 400 and "object" in r.json["error"], r
    r = api(gw, "POST", "/v1/locks", {"usr": "alice@example.com"})
    assert r.status == 400 and '"usr"' in r.json["error"], r
    r = api(gw, "PUT", "/v1/devices/laptop-1/trust", {"level": "low", "tll": "1h"})
    assert r.status == 400 and '"tll"' in r.json["error"], r
    r = api(gw, "PUT", "/v1/devices/laptop-1/trust", {"level": "sky-high"})
    assert r.status == 400, r
    r = api(gw, "POST", "/v1/locks", {"user": "a@example.com", "ttl": "soon"})
    assert r.status == 400 and "ttl" in r.json["error"], r
    assert api(gw, "GET", "/v1/locks").json["locks"] == []
    # 413: declared too large (answered before the body), and chunked growing too large
    status, head, body = raw_http(gw, (
        "POST /v1/locks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (fx.token, 70000)).encode())
    assert status == 413, (status, head, body)
    assert "error" in json.loads(body), body
    chunk = b"x" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    status, head, body = raw_http(gw, (
        "POST /v1/locks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        % fx.token).encode(), send_after=chunks)
    assert status == 413, (status, head, body)
    # a 64 KiB body is still read (and judged on its content)
    big = json.dumps({"user": "a@example.com", "reason": "r" * (65536 - 60)}).encode()
    big += b" " * (65536 - len(big))
    assert len(big) == 65536
    r = api(gw, "POST", "/v1/locks", raw=big)
    assert r.status == 400 and "reason" in r.json["error"], r  # over 1024 characters
    assert gw.alive()
    stop(gw)


def test_non_loopback_admin_without_token_refuses_to_start(fx):
    cfg = admin_config(fx, token=False)
    cfg["admin"]["listen"] = "0.0.0.0:%d" % free_port()
    cfg["audit"] = {"path": fx.path(fx.unique("refused") + ".audit")}
    path = fx.path(fx.unique("refused") + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    r = subprocess.run(list(WRAPPER) + [BIN, "serve", "--config", path], capture_output=True,
                       text=True, timeout=20 * SLOW)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "admin.listen" in r.stderr and "token_file" in r.stderr, r.stderr
    assert os.path.basename(path) in r.stderr, r.stderr
    assert not port_open(int(cfg["admin"]["listen"].rsplit(":", 1)[1]))
    # the same on loopback starts (no token needed there)
    cfg = admin_config(fx, token=False)
    gw2 = wait_admin(fx.gateway(cfg))
    gw2.token = None
    assert api(gw2, "GET", "/v1/status", token=None).status == 200
    stop(gw2)


# --- sessions ---------------------------------------------------------------------------

def test_sessions_list_and_filters(fx):
    gw = new_gateway(fx, services=[service(fx, "orders-db"), service(fx, "billing-db")])
    c1 = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    c2 = fx.connector(gw.ports()[0], "billing-db", fx.bob)
    pa = live_psql(fx, c1, fx.alice, "alice")
    pb = live_psql(fx, c2, fx.bob, "bob")
    all_ = api(gw, "GET", "/v1/sessions").json["sessions"]
    assert sorted(s["user"] for s in all_) == ["alice@example.com", "bob@example.com"], all_
    a = one_session(gw, "alice@example.com")
    fields = {"id", "user", "groups", "device_id", "device_trust", "service", "upstream",
              "client", "started", "cert_not_after", "bytes_up", "bytes_down", "rule"}
    assert fields <= set(a), sorted(fields - set(a))
    start = gw.events("session.start", user="alice@example.com")[-1]
    assert a["id"] == start["session"], (a, start)
    assert a["groups"] == ["dba"] and a["device_id"] == "laptop-1", a
    assert a["device_trust"] == "high" and a["rule"] == "dba", a
    assert a["service"] == "orders-db", a
    assert a["upstream"] == "127.0.0.1:%d" % fx.pg.port, a
    assert a["client"] == start["client"] and a["client"].startswith("127.0.0.1:"), a
    assert RFC3339_MS.match(a["started"]), a
    assert a["cert_not_after"] == start["cert_not_after"], (a, start)
    assert a["bytes_up"] > 0 and a["bytes_down"] > 0, a
    for query, users in (("?service=billing-db", ["bob@example.com"]),
                         ("?service=orders-db", ["alice@example.com"]),
                         ("?device=laptop-2", ["bob@example.com"]),
                         ("?device=laptop-9", []),
                         ("?user=BOB@example.com", ["bob@example.com"]),
                         ("?user=nobody@example.com", []),
                         ("?user=alice@example.com&service=billing-db", [])):
        got = api(gw, "GET", "/v1/sessions" + query).json["sessions"]
        assert [s["user"] for s in got] == users, (query, got)
    for p in (pa, pb):
        p.kill()
        p.wait()
    stop(gw)


def test_kill_session_with_curl(fx):
    gw = new_gateway(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    p = live_psql(fx, conn, fx.alice, "alice")
    sid = one_session(gw, "alice@example.com")["id"]
    r = curl(gw, "DELETE", "/v1/sessions/" + sid)
    t0 = time.monotonic()
    assert r.status == 200, r
    assert r.json == {"id": sid, "closed": True}, r
    assert_gone_within(p, t0, "DELETE /v1/sessions/{id}")
    session_end(gw, sid, "killed by admin")
    ev = gw.wait_event("admin.session_killed", session=sid)
    assert ev["by"].startswith("127.0.0.1:") and ev["user"] == "alice@example.com", ev
    assert api(gw, "GET", "/v1/sessions").json["sessions"] == []
    # gone: a second kill, and an unknown id, are 404
    assert curl(gw, "DELETE", "/v1/sessions/" + sid).status == 404
    assert curl(gw, "DELETE", "/v1/sessions/no-such-session").status == 404
    # the user is not locked out by a kill
    psql_ok(fx, conn, fx.alice, "alice")
    stop(gw)


# --- trust feed ----------------------------------------------------------------------------

def test_device_trust_feed(fx):
    gw = new_gateway(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    other = fx.connector(gw.ports()[0], "orders-db", fx.bob)
    p = live_psql(fx, conn, fx.alice, "alice")
    pb = live_psql(fx, other, fx.bob, "bob")  # another device: untouched
    sid = one_session(gw, "alice@example.com")["id"]
    assert api(gw, "GET", "/v1/devices/laptop-1/trust").status == 404
    r = api(gw, "PUT", "/v1/devices/laptop-1/trust", {"level": "low", "ttl": "1h"})
    t0 = time.monotonic()
    assert r.status == 200, r
    assert_gone_within(p, t0, "PUT trust low")
    assert r.json["device"] == "laptop-1" and r.json["level"] == "low", r
    assert RFC3339_MS.match(r.json["expires"]), r
    session_end(gw, sid, "revoked: device trust")
    ev = gw.wait_event("admin.trust", device="laptop-1")
    assert ev["level"] == "low" and ev["by"].startswith("127.0.0.1:"), ev
    assert pb.poll() is None, "bob's session (another device) ended too"
    got = api(gw, "GET", "/v1/devices/laptop-1/trust")
    assert got.status == 200 and got.json["level"] == "low", got
    # new connections from that device are refused
    psql_refused(fx, gw, conn, fx.alice, "alice", "alice@example.com", device_id="laptop-1",
                 device_trust="low", rule="default-deny")
    # raising is harmless; clearing restores
    r = api(gw, "DELETE", "/v1/devices/laptop-1/trust")
    assert r.status == 200, r
    assert gw.wait_event("admin.trust", device="laptop-1", cleared=True)["by"]
    assert api(gw, "GET", "/v1/devices/laptop-1/trust").status == 404
    assert api(gw, "DELETE", "/v1/devices/laptop-1/trust").status == 404
    psql_ok(fx, conn, fx.alice, "alice")
    assert pb.poll() is None
    pb.kill()
    pb.wait()
    stop(gw)


def test_device_trust_ttl_lapses(fx):
    gw = new_gateway(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.carol)
    p = live_psql(fx, conn, fx.carol, "carol")
    sid = one_session(gw, "carol@example.com")["id"]
    r = api(gw, "PUT", "/v1/devices/laptop-3/trust", {"level": "always_deny", "ttl": "1s"})
    t0 = time.monotonic()
    assert r.status == 200, r
    assert_gone_within(p, t0, "PUT trust always_deny 1s")
    session_end(gw, sid, "revoked: device trust")
    # refused while it holds (only if the check comes in well before the second is out)
    if SLOW == 1 and time.monotonic() - t0 < 0.3:
        psql_refused(fx, gw, conn, fx.carol, "carol", "carol@example.com",
                     device_trust="always_deny")
    wait_for(lambda: api(gw, "GET", "/v1/devices/laptop-3/trust").status == 404, 5,
             "the trust value to lapse")
    psql_ok(fx, conn, fx.carol, "carol")
    stop(gw)


# --- locks ---------------------------------------------------------------------------------

def test_user_lock_with_curl(fx):
    gw = new_gateway(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    p = live_psql(fx, conn, fx.alice, "alice")
    sid = one_session(gw, "alice@example.com")["id"]
    r = curl(gw, "POST", "/v1/locks", {"user": "alice@example.com", "reason": "stolen laptop"})
    t0 = time.monotonic()
    assert r.status == 201, r
    assert_gone_within(p, t0, "POST /v1/locks user")
    lock = r.json
    assert lock["user"] == "alice@example.com" and lock["reason"] == "stolen laptop", lock
    assert lock["id"] and lock["expires"] is None, lock
    session_end(gw, sid, "revoked: lock")
    ev = gw.wait_event("admin.lock", id=lock["id"])
    assert ev["user"] == "alice@example.com" and ev["by"].startswith("127.0.0.1:"), ev
    ev = psql_refused(fx, gw, conn, fx.alice, "alice", "alice@example.com", rule="lock")
    assert lock["id"] in ev["reason"] and "stolen laptop" in ev["reason"], ev
    # duplicates conflict, even spelled differently
    r = curl(gw, "POST", "/v1/locks", {"user": "Alice@Example.com"})
    assert r.status == 409, r
    assert r.json["lock"]["id"] == lock["id"], r
    listed = curl(gw, "GET", "/v1/locks").json["locks"]
    assert [x["id"] for x in listed] == [lock["id"]], listed
    r = curl(gw, "DELETE", "/v1/locks/" + lock["id"])
    assert r.status == 200, r
    ev = gw.wait_event("admin.unlock", id=lock["id"])
    assert ev["by"].startswith("127.0.0.1:"), ev
    assert curl(gw, "GET", "/v1/locks").json["locks"] == []
    assert curl(gw, "DELETE", "/v1/locks/" + lock["id"]).status == 404
    psql_ok(fx, conn, fx.alice, "alice")
    stop(gw)


def test_device_lock(fx):
    gw = new_gateway(fx)
    ca = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    cb = fx.connector(gw.ports()[0], "orders-db", fx.bob)
    pa = live_psql(fx, ca, fx.alice, "alice")
    pb = live_psql(fx, cb, fx.bob, "bob")
    sid = one_session(gw, "bob@example.com")["id"]
    r = api(gw, "POST", "/v1/locks", {"device": "laptop-2"})
    t0 = time.monotonic()
    assert r.status == 201, r
    assert_gone_within(pb, t0, "POST /v1/locks device")
    assert r.json["device"] == "laptop-2" and "user" not in r.json, r
    session_end(gw, sid, "revoked: lock")
    assert pa.poll() is None, "alice (another device) was cut off too"
    assert api(gw, "POST", "/v1/locks", {"device": "laptop-2"}).status == 409
    assert api(gw, "POST", "/v1/locks", {"device": "laptop-2", "user": "x@example.com"}) \
        .status == 400
    psql_refused(fx, gw, cb, fx.bob, "bob", "bob@example.com", rule="lock",
                 device_id="laptop-2")
    assert api(gw, "DELETE", "/v1/locks/" + r.json["id"]).status == 200
    psql_ok(fx, cb, fx.bob, "bob")
    pa.kill()
    pa.wait()
    stop(gw)


def test_lock_ttl_lapses(fx):
    gw = new_gateway(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.carol)
    p = live_psql(fx, conn, fx.carol, "carol")
    sid = one_session(gw, "carol@example.com")["id"]
    r = api(gw, "POST", "/v1/locks", {"user": "carol@example.com", "ttl": "1s"})
    t0 = time.monotonic()
    assert r.status == 201, r
    assert_gone_within(p, t0, "POST /v1/locks ttl 1s")
    assert RFC3339_MS.match(r.json["expires"]), r
    session_end(gw, sid, "revoked: lock")
    wait_for(lambda: api(gw, "GET", "/v1/locks").json["locks"] == [], 5, "the lock to lapse")
    psql_ok(fx, conn, fx.carol, "carol")
    stop(gw)


# --- reload --------------------------------------------------------------------------------

def write_raw_config(gw, text):
    tmp = gw.config_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, gw.config_path)


def assert_reload_refused(fx, gw, conn, generation):
    n = len(gw.events("admin.reload"))
    r = api(gw, "POST", "/v1/reload")
    assert r.status == 400, r
    errors = r.json["errors"]
    print("# reload errors: %s" % errors)
    assert errors and all(WHERE.search(e) for e in errors), errors
    assert r.json["generation"] == generation, r
    assert api(gw, "GET", "/v1/status").json["generation"] == generation
    wait_for(lambda: len(gw.events("admin.reload")) > n, 5, "admin.reload")
    ev = gw.events("admin.reload")[-1]
    assert ev["ok"] is False and ev["generation"] == generation, ev
    assert ev["errors"] == errors and ev["by"].startswith("127.0.0.1:"), ev
    # the old policy is still in force
    psql_ok(fx, conn, fx.alice, "alice")
    return errors


def test_reload_invalid_keeps_old_policy(fx):
    gw = new_gateway(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    p = live_psql(fx, conn, fx.alice, "alice")
    good = json.dumps(gw.config, indent=2)
    # a syntax error
    broken = good.replace('"rules": [', '"rules": [,', 1)
    write_raw_config(gw, broken)
    errors = assert_reload_refused(fx, gw, conn, 1)
    line = next(i for i, l in enumerate(broken.splitlines(), 1) if '"rules": [,' in l)
    assert ("%s:%d:" % (gw.config_path, line)) in errors[0], (line, errors)
    # a bad duration, at its place in the file
    bad = dict(gw.config, gateway=dict(gw.config["gateway"], idle_timeout="ten minutes"))
    text = json.dumps(bad, indent=2)
    write_raw_config(gw, text)
    errors = assert_reload_refused(fx, gw, conn, 1)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "ten minutes" in l)
    assert any(":%d:" % line in e and "idle_timeout" in e for e in errors), (line, errors)
    assert p.poll() is None, "a refused reload dropped a live session"
    assert gw.events("session.end") == [] or all(
        e["reason"] in ("client closed", "upstream closed") for e in gw.events("session.end"))
    write_raw_config(gw, good)
    assert api(gw, "POST", "/v1/reload").json == {"generation": 2}
    assert p.poll() is None
    p.kill()
    p.wait()
    stop(gw)


def test_reload_revokes_live_session(fx):
    gw = new_gateway(fx)
    ca = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    cb = fx.connector(gw.ports()[0], "orders-db", fx.bob)
    pa = live_psql(fx, ca, fx.alice, "alice")
    pb = live_psql(fx, cb, fx.bob, "bob")
    sid = one_session(gw, "alice@example.com")["id"]
    rules = [{"name": "no-alice", "effect": "deny", "services": ["*"],
              "users": ["alice@example.com"]}] + RULES
    gw.write_config(dict(gw.config, rules=rules))
    r = api(gw, "POST", "/v1/reload")
    t0 = time.monotonic()
    assert r.status == 200, r
    assert_gone_within(pa, t0, "POST /v1/reload (policy)")
    assert r.json == {"generation": 2}, r
    session_end(gw, sid, "revoked: policy")
    ev = gw.wait_event("admin.reload", generation=2)
    assert ev["ok"] is True and ev["errors"] == [] and ev["by"].startswith("127.0.0.1:"), ev
    assert pb.poll() is None, "bob is still admitted, yet his session ended"
    assert one_session(gw, "bob@example.com")["rule"] == "dba"
    psql_refused(fx, gw, ca, fx.alice, "alice", "alice@example.com", rule="no-alice")
    pb.kill()
    pb.wait()
    stop(gw)


def test_crl_reload_revokes_certificate(fx):
    dave = fx.ca.issue("dave", "dave@example.com", groups=["dba"], device_id="laptop-4",
                       trust="high")
    crl = fx.ca.write_crl()
    gw = new_gateway(fx, gateway={"crl": crl})
    conn = fx.connector(gw.ports()[0], "orders-db", dave)
    p = live_psql(fx, conn, dave, "dave")
    sid = one_session(gw, "dave@example.com")["id"]
    fx.ca.revoke(dave)
    r = api(gw, "POST", "/v1/reload")
    t0 = time.monotonic()
    assert r.status == 200 and r.json == {"generation": 2}, r
    assert_gone_within(p, t0, "POST /v1/reload (CRL)")
    session_end(gw, sid, "revoked: certificate")
    ev = gw.wait_event("admin.reload", generation=2)
    assert ev["ok"] is True and ev["by"].startswith("127.0.0.1:"), ev
    # and a new connection with it is refused at the handshake
    r = psql(conn.port, dave, fx.ca.crt, "select 1", user="dave")
    assert r.returncode != 0
    ev = gw.wait_event("tls.rejected", reason="certificate revoked")
    stop(gw)


# --- metrics -------------------------------------------------------------------------------

def test_metrics(fx):
    promtool = shutil.which("promtool")
    assert promtool, ("promtool not found: it comes with Debian's prometheus package "
                      "(deploy/install-deps installs it)")
    gw = new_gateway(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    p = live_psql(fx, conn, fx.alice, "alice")
    contractor = fx.ca.issue("erin", "erin@contractor.example", groups=["dba"], trust="high")
    cc = fx.connector(gw.ports()[0], "orders-db", contractor)
    psql_refused(fx, gw, cc, contractor, "erin", "erin@contractor.example")
    assert api(gw, "POST", "/v1/reload").status == 200
    r = api(gw, "GET", "/metrics")
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers
    check = subprocess.run([promtool, "check", "metrics"], input=r.text, capture_output=True,
                           text=True, timeout=30 * SLOW)
    assert check.returncode == 0, "promtool check metrics: %s%s\n%s" % (
        check.stdout, check.stderr, r.text)
    text = r.text
    denied = len(gw.events("authz.denied", rule="no-contractors"))
    for line in ("certgate_sessions_live 1",
                 'certgate_connections_refused_total{event="authz.denied",'
                 'reason="no-contractors"} %d\n' % denied,
                 "certgate_policy_generation 2",
                 'certgate_reloads_total{result="ok"} 1',
                 "# TYPE certgate_handshake_duration_seconds histogram",
                 'certgate_handshake_duration_seconds_bucket{le="+Inf"} ',
                 "certgate_handshake_duration_seconds_count "):
        assert line in text, "%r not in:\n%s" % (line, text)
    m = re.search(r'^certgate_handshake_duration_seconds_count (\d+)$', text, re.M)
    assert int(m.group(1)) >= 2, text
    up = re.search(r'^certgate_bytes_total\{service="orders-db",direction="up"\} (\d+)$',
                   text, re.M)
    down = re.search(r'^certgate_bytes_total\{service="orders-db",direction="down"\} (\d+)$',
                     text, re.M)
    assert up and down and int(up.group(1)) > 0 and int(down.group(1)) > 0, text
    p.kill()
    p.wait()
    stop(gw)


# --- readiness while draining ----------------------------------------------------------------

class Flood(socketserver.ThreadingTCPServer):
    """An upstream that writes as fast as it can to every connection."""
    daemon_threads = True
    allow_reuse_address = True

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            data = b"x" * 65536
            try:
                while True:
                    self.request.sendall(data)
            except OSError:
                pass

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Flood.Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


def test_readyz_503_while_draining(fx):
    """A client that stops reading keeps its session's graceful close
    pending (up to the link's linger): meanwhile /readyz says 503."""
    if fx.flood is None:
        fx.flood = Flood()
    flood = {"name": "flood", "sni": ["localhost"], "upstream": ["127.0.0.1:%d" % fx.flood.port]}
    gw = new_gateway(fx, services=[service(fx), flood])
    sock = tls_client(gw.ports()[0], fx.alice, fx.ca.crt, server_name="localhost")
    try:
        sock.recv(1)  # admitted, and the flood is on
        gw.wait_event("session.start", service="flood")
        last = [-1]

        def stalled():
            """bytes_down stops growing: the gateway holds a full write queue"""
            got = api(gw, "GET", "/v1/sessions?service=flood").json["sessions"]
            now = got[0]["bytes_down"] if got else None
            same = now is not None and now == last[0]
            last[0] = now
            return same
        wait_for(stalled, 10, "the flood to fill the client's buffers", interval=0.05)
        gw.signal(signal.SIGTERM)
        seen = []

        def not_ready():
            try:
                r = api(gw, "GET", "/readyz", token=None)
            except OSError as e:
                seen.append(repr(e))
                return "gone"
            seen.append(r.status)
            return r if r.status != 200 else None
        r = wait_for(not_ready, 5, "/readyz to change after SIGTERM", interval=0.005)
        assert r != "gone", "the admin API went away without a 503 first: %s" % seen
        assert r.status == 503 and r.json["error"] == "draining", r
        assert api(gw, "GET", "/healthz", token=None).status == 200  # still live
    finally:
        sock.close()
    gw.wait_event("session.end", service="flood", reason="shutdown")
    stopped(gw)


# --- sd_notify -------------------------------------------------------------------------------

class EnvGateway(Gateway):
    """certgate serve with extra environment (the harness's Gateway takes
    none); with watchdog_pid, WATCHDOG_PID is the gateway's own pid (sh
    exports $$, then execs)."""

    def __init__(self, fx, config, env, watchdog_pid=False):
        name = fx.unique("gw")
        self.folder = fx.dir
        self.config_path = os.path.join(fx.dir, name + ".json")
        self.audit_path = os.path.join(fx.dir, name + ".audit")
        config.setdefault("audit", {})["path"] = self.audit_path
        self.write_config(config)
        self.log_path = os.path.join(fx.dir, name + ".log")
        self.log = open(self.log_path, "w")
        cmd = list(WRAPPER) + [BIN, "serve", "--config", self.config_path]
        if watchdog_pid:
            cmd = ["sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh"] + cmd
        full = {k: v for k, v in os.environ.items()
                if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        full.update(env)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full)
        self.token = fx.token
        fx.procs.append(self)


class NotifySocket:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def recv(self, timeout=5.0):
        """The next message as a dict (keys in order), or None on timeout."""
        self.sock.settimeout(timeout * SLOW)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        return dict(line.split("=", 1) for line in data.decode().splitlines() if line)

    def next(self, skip_watchdog=True, timeout=5.0):
        end = deadline(timeout)
        while True:
            msg = self.recv(max(0.01, end - time.monotonic()))
            assert msg is not None, "no sd_notify message within %.1f s" % timeout
            if not (skip_watchdog and list(msg) == ["WATCHDOG"]):
                return msg

    def close(self):
        self.sock.close()
        os.unlink(self.path)


def test_sd_notify_ready_reload_stop(fx):
    ns = NotifySocket(fx.path(fx.unique("notify") + ".sock"))
    try:
        gw = EnvGateway(fx, admin_config(fx), {"NOTIFY_SOCKET": ns.path})
        msg = ns.next(skip_watchdog=False)
        assert msg.get("READY") == "1" and msg.get("STATUS"), msg
        # READY=1 comes once it listens: the ports answer at once
        assert all(port_open(p) for p in gw.ports()), "READY=1 before listening"
        assert api(gw, "GET", "/readyz", token=None).status == 200
        before = time.monotonic()
        gw.signal(signal.SIGHUP)
        msg = ns.next(skip_watchdog=False)
        after = time.monotonic()
        assert msg.get("RELOADING") == "1", msg
        assert re.fullmatch(r"\d+", msg.get("MONOTONIC_USEC", "")), msg
        usec = int(msg["MONOTONIC_USEC"])
        assert before * 1e6 - 1000 <= usec <= after * 1e6 + 1000, (before, usec, after)
        msg = ns.next(skip_watchdog=False)
        assert msg.get("READY") == "1", msg
        ev = gw.wait_event("admin.reload", generation=2)
        assert ev["ok"] is True and ev["by"] == "signal", ev
        gw.signal(signal.SIGTERM)
        msg = ns.next(skip_watchdog=False)
        assert msg == {"STOPPING": "1"}, msg
        stopped(gw)
        assert ns.recv(0.1) is None, "messages after STOPPING=1"
    finally:
        ns.close()


def test_sd_notify_watchdog(fx):
    ns = NotifySocket(fx.path(fx.unique("notify") + ".sock"))
    try:
        gw = EnvGateway(fx, admin_config(fx), {"NOTIFY_SOCKET": ns.path,
                                               "WATCHDOG_USEC": "200000"}, watchdog_pid=True)
        msg = ns.next()
        assert msg.get("READY") == "1", msg
        pings = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0 and len(pings) < 3:
            msg = ns.recv(max(0.01, 1.0 - (time.monotonic() - t0)))
            if msg is not None:
                pings.append((time.monotonic() - t0, msg))
        got = [m for _, m in pings if m == {"WATCHDOG": "1"}]
        assert len(got) >= 3, "WATCHDOG=1 within 1 s: %s" % pings
        stop(gw)
    finally:
        ns.close()
    # a WATCHDOG_PID that is not the gateway's: no pings
    ns = NotifySocket(fx.path(fx.unique("notify") + ".sock"))
    try:
        gw = EnvGateway(fx, admin_config(fx), {"NOTIFY_SOCKET": ns.path,
                                               "WATCHDOG_USEC": "200000",
                                               "WATCHDOG_PID": "1"})
        msg = ns.next(skip_watchdog=False)
        assert msg.get("READY") == "1", msg
        assert ns.recv(0.3) is None, "pinged although WATCHDOG_PID is another process"
        stop(gw)
    finally:
        ns.close()


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")
             and (len(sys.argv) < 2 or any(a in k for a in sys.argv[1:]))]
    sys.exit(run(tests, setup=setup, teardown=teardown))
