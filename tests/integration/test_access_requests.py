"""Just-in-time access (issue 17; ADMIN_API.md access requests, CONFIG.md
requires_approval, AUDIT.md access.*), against real processes: PostgreSQL,
psql through `certgate connect`, `certgate serve` with an admin API and a
state folder.

- request -> pending -> approve -> psql gets in; at the grant's expiry
  (a few seconds) the live psql session ends with "revoked: policy" within
  a second, and access.expired is written once;
- a second grant approved while a session runs carries it past the first
  one's end;
- deny; deciding twice (409); approving one's own request (403);
- the input's checks and the bounds on pending requests (429);
- a restart keeps requests and grants; a grant that ended while the
  gateway was down expires (once) when it starts;
- `certgate explain --grant-until` and `certgate test` with "grants";
- /metrics counts requests by state;
- `certgate request` over mTLS with the login certificate (the catalog's
  server name, ALPN certgate-jit/1), with one worker and with two:
  request --wait -> approve -> psql -> the grant's end cuts the session;
  its refusals (one line on stderr, access.refused in the audit log); the
  requester is the certificate's user, never the message's; a restart
  keeps its request and its grant."""

import calendar
import http.client
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time

from harness import BIN, SLOW, Fixture, certgate, psql, run, wait_for
from test_admin import admin_config, admin_port, api, live_psql, psql_ok, wait_admin

RULES = [
    {"name": "oncall-jit", "effect": "allow", "services": ["orders-db", "s1", "s2", "s3",
                                                             "s4", "s5"],
     "groups": ["oncall"], "requires_approval": True},
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"]},
]


def setup():
    fx = Fixture(with_postgres=True)
    for role in ("alice", "bob", "carol"):
        fx.pg.sql("CREATE ROLE %s LOGIN" % role)
    fx.pg.sql("ALTER SYSTEM SET client_connection_check_interval = '200ms'")
    fx.pg.sql("SELECT pg_reload_conf()")
    fx.token = secrets.token_hex(24)
    fx.token_file = fx.path("admin.token")
    with open(fx.token_file, "w") as f:
        f.write(fx.token + "\n")
    os.chmod(fx.token_file, 0o600)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["oncall"])
    fx.bob = fx.ca.issue("bob", "bob@example.com", groups=["oncall"])
    fx.carol = fx.ca.issue("carol", "carol@example.com", groups=["dba"])
    fx.dave = fx.ca.issue("dave", "dave@example.com", groups=["web"])
    return fx


def teardown(fx):
    fx.close()


def services(fx):
    svc = [{"name": "orders-db", "upstream": ["127.0.0.1:%d" % fx.pg.port]},
           {"name": "billing-db", "upstream": ["127.0.0.1:%d" % fx.pg.port]}]
    svc += [{"name": "s%d" % i, "upstream": ["127.0.0.1:9"]} for i in range(1, 6)]
    return svc


def start(fx, state_dir=None, rules=None, gateway=None):
    cfg = admin_config(fx, services=services(fx), rules=rules or RULES, gateway=gateway)
    if state_dir is not None:
        cfg["state"] = {"backend": "file", "dir": state_dir}
    gw = fx.gateway(cfg)
    gw.token = fx.token
    return wait_admin(gw)


def parse_ts(text):
    base, frac = text.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1e3


def ask(gw, user="alice@example.com", service="orders-db", duration="1h", reason="INC-1234"):
    return api(gw, "POST", "/v1/access-requests",
               {"user": user, "service": service, "reason": reason, "duration": duration})


def approve(gw, rid, by="carol@example.com", reason="on call tonight"):
    return api(gw, "POST", "/v1/access-requests/%s/approve" % rid, {"by": by, "reason": reason})


def deny(gw, rid, by="carol@example.com", reason="not now"):
    return api(gw, "POST", "/v1/access-requests/%s/deny" % rid, {"by": by, "reason": reason})


def listed(gw, query=""):
    r = api(gw, "GET", "/v1/access-requests" + query)
    assert r.status == 200, r
    return r.json["requests"]


def refused(fx, gw, conn, cert, role, user):
    before = len(gw.events("authz.denied", user=user))
    r = psql(conn.port, cert, fx.ca.crt, "select 1", user=role)
    assert r.returncode != 0, "psql was admitted: %s" % r.stdout
    wait_for(lambda: len(gw.events("authz.denied", user=user)) > before, 5, "authz.denied")
    return gw.events("authz.denied", user=user)[-1]


def metric(gw, name):
    text = api(gw, "GET", "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no %s in /metrics" % name)


# --- the life of a request ------------------------------------------------------------

def test_request_approve_connect_expiry(fx):
    """pending -> approved -> psql runs -> the grant's end ends the live
    session (revoked: policy, within 1 s) and writes access.expired once."""
    gw = start(fx, fx.path("state-life"))
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    ev = refused(fx, gw, conn, fx.alice, "alice", "alice@example.com")
    assert ev["rule"] == "default-deny", ev
    assert "rule oncall-jit requires an approved access request for service orders-db" \
        in ev["reason"], ev

    for attempt, span in enumerate((5, 10, 20)):
        span = int(span * SLOW)
        r = ask(gw, duration="%ds" % span)
        assert r.status == 201, r
        req = r.json
        assert req["state"] == "pending" and req["id"].startswith("req-"), req
        assert req["user"] == "alice@example.com" and req["reason"] == "INC-1234", req
        assert req["duration"] == "%ds" % span and req["until"] is None, req
        ev = gw.wait_event("access.requested", id=req["id"])
        assert ev["user"] == "alice@example.com" and ev["service"] == "orders-db", ev
        assert ev["reason"] == "INC-1234" and ev["by"].startswith("127.0.0.1:"), ev
        assert ev["until"] is None and ev["duration"] == "%ds" % span, ev
        assert [x["id"] for x in listed(gw, "?state=pending")] == [req["id"]]
        assert metric(gw, 'certgate_access_requests{state="pending"}') == 1
        # still refused while pending
        refused(fx, gw, conn, fx.alice, "alice", "alice@example.com")

        r = approve(gw, req["id"])
        assert r.status == 200, r
        granted = r.json
        assert granted["state"] == "approved" and granted["decided_by"] == "carol@example.com"
        assert granted["decided_reason"] == "on call tonight", granted
        until = parse_ts(granted["until"])
        assert abs(until - parse_ts(granted["decided"]) - span) < 0.01, granted
        ev = gw.wait_event("access.approved", id=req["id"])
        assert ev["by"] == "carol@example.com" and ev["reason"] == "on call tonight", ev
        assert ev["until"] == granted["until"] and ev["from"].startswith("127.0.0.1:"), ev
        assert ev["requested_reason"] == "INC-1234", ev
        assert metric(gw, 'certgate_access_requests{state="approved"}') == 1

        try:
            p = live_psql(fx, conn, fx.alice, "alice")
        except AssertionError:
            if time.time() < until:
                raise
            p = None  # psql was cut by the grant's end before its query ran
        start_ev = gw.events("session.start", user="alice@example.com")
        if p is None or not start_ev or parse_ts(start_ev[-1]["ts"]) > until - 1:
            print("# attempt %d: the session started too late for a %ds grant" % (
                attempt + 1, span))
            if p is not None:
                p.kill()
                p.wait()
            wait_for(lambda: gw.events("access.expired", id=req["id"]), span + 10,
                     "the short grant to expire")
            continue
        start_ev = start_ev[-1]
        assert start_ev["rule"] == "oncall-jit", start_ev
        end = gw.wait_event("session.end", session=start_ev["session"], timeout=span + 10)
        assert end["reason"] == "revoked: policy", end
        late = parse_ts(end["ts"]) - until
        print("# the session ended %.3fs after the grant's end" % late)
        assert 0 <= late <= 1.0 * SLOW, "ended %.3fs after the grant's end: %s" % (late, end)
        p.wait(timeout=5 * SLOW)
        assert p.returncode != 0
        expired = gw.wait_event("access.expired", id=req["id"])
        assert expired["until"] == granted["until"] and expired["by"] == "carol@example.com"
        assert expired["user"] == "alice@example.com" and expired["service"] == "orders-db"
        late = parse_ts(expired["ts"]) - until
        assert 0 <= late <= 1.0 * SLOW, "access.expired %.3fs after the end" % late
        assert [x["id"] for x in listed(gw, "?state=expired")][-1] == req["id"]
        assert metric(gw, 'certgate_access_requests{state="expired"}') == attempt + 1
        refused(fx, gw, conn, fx.alice, "alice", "alice@example.com")
        # once per grant, however long one waits
        time.sleep(1.5)
        assert len(gw.events("access.expired", id=req["id"])) == 1
        gw.stop()
        return
    raise AssertionError("no session started within a grant of %ds" % span)


def test_second_grant_carries_the_session_on(fx):
    """A session admitted by a short grant goes on past its end when a longer
    grant for the service is approved meanwhile: the decision sees the
    user's latest grant (at the approval, which re-authorizes the user's
    live sessions, and when the first grant ends)."""
    gw = start(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.bob)
    span = int(8 * SLOW)
    first = ask(gw, user="bob@example.com", duration="%ds" % span).json
    assert approve(gw, first["id"]).status == 200
    until = parse_ts(api(gw, "GET", "/v1/access-requests/" + first["id"]).json["until"])
    p = live_psql(fx, conn, fx.bob, "bob")
    sid = gw.wait_event("session.start", user="bob@example.com")["session"]
    second = ask(gw, user="bob@example.com", duration="1h").json
    assert second["state"] == "pending", second
    assert approve(gw, second["id"]).status == 200
    gw.wait_event("access.expired", id=first["id"], timeout=span + 10)
    wait_for(lambda: time.time() > until + 1.5, span + 5, "1.5 s past the first grant")
    assert p.poll() is None, "psql ended at the first grant's end"
    assert not gw.events("session.end", session=sid), gw.events("session.end")
    p.kill()
    p.wait()
    gw.stop()


def test_deny_and_decide_twice(fx):
    gw = start(fx)
    conn = fx.connector(gw.ports()[0], "orders-db", fx.bob)
    req = ask(gw, user="bob@example.com").json
    r = deny(gw, req["id"])
    assert r.status == 200 and r.json["state"] == "denied", r
    assert r.json["decided_reason"] == "not now" and r.json["until"] is None, r
    ev = gw.wait_event("access.denied", id=req["id"])
    assert ev["by"] == "carol@example.com" and ev["reason"] == "not now", ev
    assert ev["until"] is None and ev["user"] == "bob@example.com", ev
    refused(fx, gw, conn, fx.bob, "bob", "bob@example.com")
    # decided once: a second decision, either way, conflicts and says how it went
    for fn in (approve, deny):
        r = fn(gw, req["id"], by="dave@example.com")
        assert r.status == 409, r
        assert "denied already (by carol@example.com" in r.json["error"], r
        assert r.json["request"]["state"] == "denied", r
    assert not gw.events("access.approved")
    assert api(gw, "GET", "/v1/access-requests/req-999").status == 404
    assert approve(gw, "req-999").status == 404
    # approved, then decided again
    req = ask(gw, user="bob@example.com").json
    assert approve(gw, req["id"]).status == 200
    r = deny(gw, req["id"])
    assert r.status == 409 and "approved already" in r.json["error"], r
    psql_ok(fx, conn, fx.bob, "bob")
    assert [x["state"] for x in listed(gw, "?user=BOB@example.com")] == ["denied", "approved"]
    assert api(gw, "GET", "/v1/access-requests?state=granted").status == 400
    gw.stop()


def test_self_approval_refused(fx):
    """The approver named in the body may not be the request's user (compared
    as users are: case-insensitively); withdrawing (denying) one's own is
    fine."""
    gw = start(fx)
    req = ask(gw).json
    r = approve(gw, req["id"], by="Alice@Example.COM")
    assert r.status == 403, r
    assert "cannot approve their own request" in r.json["error"], r
    assert api(gw, "GET", "/v1/access-requests/" + req["id"]).json["state"] == "pending"
    assert not gw.events("access.approved")
    r = api(gw, "POST", "/v1/access-requests/%s/approve" % req["id"], {"reason": "x"})
    assert r.status == 400 and "by:" in r.json["error"], r
    r = deny(gw, req["id"], by="alice@example.com", reason="withdrawn")
    assert r.status == 200 and r.json["state"] == "denied", r
    gw.stop()


def test_input_and_bounds(fx):
    gw = start(fx)
    bad = [
        ({"user": "alice@example.com", "service": "nope", "reason": "x", "duration": "1h"},
         "service: no service nope"),
        ({"user": "alice@example.com", "service": "billing-db", "reason": "x",
          "duration": "1h"}, "no rule of the policy in force requires approval for billing-db"),
        ({"user": "alice@example.com", "service": "orders-db", "duration": "1h"}, "reason:"),
        ({"user": "alice@example.com", "service": "orders-db", "reason": "x" * 501,
          "duration": "1h"}, "reason:"),
        ({"user": "alice@example.com", "service": "orders-db", "reason": "a\nb",
          "duration": "1h"}, "reason:"),
        ({"user": "alice@example.com", "service": "orders-db", "reason": "x",
          "duration": "0s"}, "duration:"),
        ({"user": "alice@example.com", "service": "orders-db", "reason": "x",
          "duration": "8d"}, "duration:"),
        ({"user": "alice@example.com", "service": "orders-db", "reason": "x",
          "duration": "soon"}, "duration:"),
        ({"service": "orders-db", "reason": "x", "duration": "1h"}, "user:"),
        ({"user": "al\u0001ce", "service": "orders-db", "reason": "x", "duration": "1h"},
         "user:"),
        ({"user": "alice@example.com", "service": "orders-db", "reason": "x",
          "duration": "1h", "until": "2030-01-01T00:00:00Z"}, "until"),
        ({"user": "alice@example.com", "service": "orders-db", "reason": 5,
          "duration": "1h"}, "reason: expected a string"),
    ]
    for body, want in bad:
        r = api(gw, "POST", "/v1/access-requests", body)
        assert r.status == 400 and want in r.json["error"], (body, r)
    assert not gw.events("access.requested")
    # one pending request per user and service: the second conflicts
    first = ask(gw).json
    r = ask(gw, user="ALICE@example.com", reason="again")
    assert r.status == 409 and r.json["request"]["id"] == first["id"], r
    # five pending per user
    for i in range(1, 5):
        assert ask(gw, service="s%d" % i).status == 201
    r = ask(gw, service="s5")
    assert r.status == 429, r
    assert "alice@example.com has 5 requests pending, the most allowed" in r.json["error"], r
    assert ask(gw, user="bob@example.com", service="s5").status == 201  # others may
    # a decision makes room
    assert deny(gw, first["id"]).status == 200
    assert ask(gw, service="s5").status == 201
    gw.stop()

    # 1000 pending in all
    gw = start(fx)
    n = 0
    for u in range(200):
        for s in ("orders-db", "s1", "s2", "s3", "s4"):
            r = ask(gw, user="u%d@example.com" % u, service=s)
            assert r.status == 201, r
            n += 1
    r = ask(gw, user="new@example.com")
    assert r.status == 429 and "1000 requests are pending" in r.json["error"], r
    assert metric(gw, 'certgate_access_requests{state="pending"}') == 1000
    assert len(listed(gw, "?state=pending")) == 1000
    gw.stop()


def test_long_non_ascii_names_in_refusals(fx):
    """A refusal quotes the user or the approver cut to 128 bytes: cut
    between characters, the reply is its 409/403/429 with a JSON body (cut
    inside an "é", it was 500 {"error": "no reply"}, commit 27705c3)."""
    gw = start(fx)
    user = "a" + "\u00e9" * 100  # 201 bytes: 128 would end inside the 64th "é"
    cut = "a" + "\u00e9" * 63
    first = ask(gw, user=user)
    assert first.status == 201 and first.json["user"] == user, first
    rid = first.json["id"]
    r = ask(gw, user=user, reason="again")
    assert r.status == 409, r
    assert r.json["request"]["id"] == rid, r
    assert r.json["error"] == "%s is pending already for %s on orders-db" % (rid, cut), r
    # users compare case-insensitively: "A..." is "a..."
    r = approve(gw, rid, by="A" + "\u00e9" * 100)
    assert r.status == 403, r
    assert r.json["error"] == "A%s cannot approve their own request %s" % (cut[1:], rid), r
    assert api(gw, "GET", "/v1/access-requests/" + rid).json["state"] == "pending"
    for i in range(1, 5):
        assert ask(gw, user=user, service="s%d" % i).status == 201
    r = ask(gw, user=user, service="s5")
    assert r.status == 429, r
    assert r.json["error"].startswith(cut + " has 5 requests pending, the most allowed"), r
    approver = "b" + "\u00e9" * 100
    r = approve(gw, rid, by=approver)
    assert r.status == 200 and r.json["decided_by"] == approver, r
    for fn in (approve, deny):
        r = fn(gw, rid)
        assert r.status == 409, r
        assert r.json["error"].startswith(
            "%s was approved already (by b%s at " % (rid, "\u00e9" * 63)), r
        assert r.json["request"]["decided_by"] == approver, r
    assert not gw.events("access.denied")
    gw.stop()


class KeepAlive:
    """Admin API calls over one HTTP/1.1 connection (thousands of them)."""

    def __init__(self, gw):
        self.gw = gw
        self.conn = None

    def call(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + self.gw.token}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", admin_port(self.gw),
                                                       timeout=10 * SLOW)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                text = resp.read().decode()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, json.loads(text) if text else None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # the server closed the kept connection before this request
                self.close()
                if attempt == 2:
                    raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def test_denying_the_oldest_pending_after_the_history_is_full(fx):
    """req-1 pending while 1000 others are denied (GW_ACCESS_HISTORY_MAX
    decided requests kept), then req-1 denied: the trim after that denial
    forgets the oldest decided one other than req-1. It used to free req-1
    itself, then answer and audit from freed memory (500, an access.denied
    without id; under ASan a heap use after free), commit e3bfdb7."""
    gw = start(fx)
    c = KeepAlive(gw)
    t0 = time.monotonic()
    try:
        status, old = c.call("POST", "/v1/access-requests",
                             {"user": "alice@example.com", "service": "orders-db",
                              "reason": "INC-1", "duration": "1h"})
        assert status == 201 and old["id"] == "req-1", (status, old)
        for i in range(1000):
            status, body = c.call("POST", "/v1/access-requests",
                                  {"user": "bob@example.com", "service": "orders-db",
                                   "reason": "INC-%d" % i, "duration": "1h"})
            assert status == 201, (i, status, body)
            status, body = c.call("POST", "/v1/access-requests/%s/deny" % body["id"],
                                  {"by": "carol@example.com"})
            assert status == 200, (i, status, body)
        took = time.monotonic() - t0
        status, body = c.call("POST", "/v1/access-requests/req-1/deny",
                              {"by": "carol@example.com", "reason": "too late"})
        assert status == 200, (status, body)
        assert body["id"] == "req-1" and body["state"] == "denied", body
        assert body["user"] == "alice@example.com" and body["service"] == "orders-db", body
        assert body["decided_by"] == "carol@example.com", body
        assert body["decided_reason"] == "too late" and body["reason"] == "INC-1", body
        status, body = c.call("GET", "/v1/access-requests/req-1")
        assert status == 200 and body["state"] == "denied", (status, body)
        # the oldest other decided request went instead
        status, _ = c.call("GET", "/v1/access-requests/req-2")
        assert status == 404, status
        status, body = c.call("GET", "/v1/access-requests?state=denied")
        ids = {x["id"] for x in body["requests"]}
        assert len(ids) == 1000 and "req-1" in ids and "req-1001" in ids, len(ids)
    finally:
        c.close()
    print("# 2000 requests on one connection in %.2fs" % took)
    ev = gw.wait_event("access.denied", id="req-1")
    assert ev["user"] == "alice@example.com" and ev["service"] == "orders-db", ev
    assert ev["by"] == "carol@example.com" and ev["reason"] == "too late", ev
    assert ev["requested_reason"] == "INC-1", ev
    assert len(gw.events("access.denied")) == 1001
    gw.stop()


def test_restart_keeps_requests_and_grants(fx):
    state_dir = fx.path("state-restart")
    gw = start(fx, state_dir)
    granted = ask(gw, user="bob@example.com", duration="1h").json
    assert approve(gw, granted["id"]).status == 200
    pending = ask(gw).json
    short = ask(gw, user="alice@example.com", service="s1", duration="2s").json
    assert approve(gw, short["id"]).status == 200
    until = parse_ts(api(gw, "GET", "/v1/access-requests/" + short["id"]).json["until"])
    # stopped before the short grant ends (else it expires here, not at the start)
    gw.stop()
    if time.time() >= until:
        raise AssertionError("the gateway took longer than 2 s to stop")
    path = os.path.join(state_dir, "requests.json")
    assert os.stat(path).st_mode & 0o777 == 0o600
    wait_for(lambda: time.time() > until, 5, "the short grant to end while the gateway is down")

    gw = start(fx, state_dir)
    states = {x["id"]: x["state"] for x in listed(gw)}
    assert states == {granted["id"]: "approved", pending["id"]: "pending",
                      short["id"]: "expired"}, states
    ev = gw.wait_event("access.expired", id=short["id"])
    assert ev["user"] == "alice@example.com" and ev["service"] == "s1", ev
    conn = fx.connector(gw.ports()[0], "orders-db", fx.bob)
    psql_ok(fx, conn, fx.bob, "bob")  # the grant survived
    r = ask(gw, user="carol@example.com")
    assert r.status == 201 and r.json["id"] == "req-4", r  # ids count on
    gw.stop()
    # expired once: a second start writes no access.expired
    gw = start(fx, state_dir)
    assert not gw.events("access.expired"), gw.events("access.expired")
    assert api(gw, "GET", "/v1/access-requests/" + granted["id"]).json["state"] == "approved"
    gw.stop()


# --- explain and test ------------------------------------------------------------------

def test_explain_and_test_say_when_approval_is_needed(fx):
    gw = start(fx)
    gw.stop()
    config = gw.config_path
    base = ["explain", "--config", config, "--cert", fx.alice.crt, "--service", "orders-db"]
    r = certgate(*base, check=False)
    assert r.returncode == 1, r.stdout
    assert "requires approval: no approved access request is held" in r.stdout, r.stdout
    assert "requires_approval: no approved access request for orders-db" in r.stdout, r.stdout
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    r = certgate(*(base + ["--grant-until", later, "--json"]), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    rule = [x for x in out["rules"] if x["name"] == "oncall-jit"][0]
    assert rule["matched"] and rule["requires_approval"]["held"], rule
    assert out["decision"]["rule"] == "oncall-jit", out["decision"]
    assert out["decision"]["valid_until"].startswith(later[:-1]), out["decision"]
    earlier = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    r = certgate(*(base + ["--grant-until", earlier]), check=False)
    assert r.returncode == 1 and "the grant ended at" in r.stdout, r.stdout
    r = certgate(*(base + ["--grant-until", "tomorrow"]), check=False)
    assert r.returncode == 2 and "--grant-until" in r.stderr, r.stderr

    cases = {"at": "2026-06-01T10:00:00Z", "cases": [
        {"name": "no grant", "claims": {"user": "alice@example.com", "groups": ["oncall"]},
         "service": "orders-db", "expect": "deny"},
        {"name": "granted", "claims": {"user": "alice@example.com", "groups": ["oncall"]},
         "service": "orders-db", "expect": "allow", "rule": "oncall-jit",
         "grants": [{"service": "s1", "until": "2026-06-01T12:00:00Z"},
                    {"service": "orders-db", "until": "2026-06-01T11:00:00Z"}]},
        {"name": "ended", "claims": {"user": "alice@example.com", "groups": ["oncall"]},
         "service": "orders-db", "expect": "deny",
         "grants": [{"service": "orders-db", "until": "2026-06-01T10:00:00Z"}]},
        {"name": "another service's grant", "claims": {"user": "alice@example.com",
                                                         "groups": ["oncall"]},
         "service": "orders-db", "expect": "allow",
         "grants": [{"service": "s1", "until": "2026-06-01T12:00:00Z"}]},
    ]}
    path = fx.path("jit-cases.json")
    with open(path, "w") as f:
        json.dump(cases, f, indent=1)
    r = certgate("test", "--config", config, path, check=False)
    assert r.returncode == 1, r.stdout
    assert "3 passed, 1 failed" in r.stdout, r.stdout
    assert "FAIL another service's grant" in r.stdout, r.stdout
    assert "requires an approved access request" in r.stdout, r.stdout
    cases["cases"][1]["grants"][0]["until"] = "noon"
    with open(path, "w") as f:
        json.dump(cases, f, indent=1)
    r = certgate("test", "--config", config, path, check=False)
    assert r.returncode == 1 and "cases[1].grants[0].until" in r.stderr, r.stderr


def test_requires_approval_on_deny_rule_refused(fx):
    gw = start(fx)
    gw.stop()
    cfg = json.loads(json.dumps(gw.config))
    cfg["rules"].append({"name": "odd", "effect": "deny", "services": ["*"],
                         "requires_approval": True})
    path = fx.path("deny-approval.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    r = certgate("check", "--config", path, check=False)
    assert r.returncode != 0, r.stdout
    assert "rules[2].requires_approval: applies to allow rules only" in r.stderr, r.stderr


# --- certgate request: the user's side, over mTLS -------------------------------------

def request_args(fx, gw, cert, service, *extra):
    return ["request", service, "--gateway", "localhost:%d" % gw.ports()[0], "--cert",
            cert.crt, "--key", cert.key, "--ca", fx.ca.crt] + list(extra)


def cli_request(fx, gw, cert, service, *extra):
    return certgate(*request_args(fx, gw, cert, service, *extra), check=False)


def cli_request_waiting(fx, gw, cert, service, *extra):
    """`certgate request ... --wait` in the background: (process, request id)."""
    p = subprocess.Popen([BIN] + request_args(fx, gw, cert, service, "--wait", *extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith("req-"):
        p.kill()
        _, err = p.communicate()
        raise AssertionError("certgate request printed %r: %s" % (line, err))
    return p, line


def raw_request(fx, gw, cert, message):
    """One line on the request channel as any TLS client could send it."""
    ctx = ssl.create_default_context(cafile=fx.ca.crt)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert.crt, cert.key)
    ctx.set_alpn_protocols(["certgate-jit/1"])
    with socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=15 * SLOW) as sock:
        with ctx.wrap_socket(sock, server_hostname="certgate-catalog") as tls:
            assert tls.selected_alpn_protocol() == "certgate-jit/1"
            tls.sendall((json.dumps(message) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
    return json.loads(data)


def check_cli_lifecycle(fx, gw):
    conn = fx.connector(gw.ports()[0], "orders-db", fx.alice)
    span = int(10 * SLOW)
    p, rid = cli_request_waiting(fx, gw, fx.alice, "orders-db", "--reason", "INC-7 lag",
                                 "--for", "%ds" % span)
    ev = gw.wait_event("access.requested", id=rid)
    # the requester is the certificate's user, and it is said where from
    assert ev["user"] == "alice@example.com" and ev["by"] == "alice@example.com", ev
    assert ev["service"] == "orders-db" and ev["reason"] == "INC-7 lag", ev
    assert ev["duration"] == "%ds" % span and ev["until"] is None, ev
    assert ev["client"].startswith("127.0.0.1:") and ev["session"], ev
    req = api(gw, "GET", "/v1/access-requests/" + rid).json
    assert req["state"] == "pending" and req["requested_by"] == "alice@example.com", req
    # nobody approves their own request, however it was made
    r = approve(gw, rid, by="alice@example.com")
    assert r.status == 403 and "cannot approve their own request" in r.json["error"], r
    time.sleep(1.5)  # --wait keeps waiting meanwhile (it asks every second)
    assert p.poll() is None, p.communicate()
    r = approve(gw, rid)
    assert r.status == 200, r
    until = parse_ts(r.json["until"])
    out, err = p.communicate(timeout=15 * SLOW)
    assert p.returncode == 0, (out, err)
    assert "%s approved by carol@example.com until %s" % (rid, r.json["until"]) in out, out

    psession = live_psql(fx, conn, fx.alice, "alice")
    start_ev = gw.wait_event("session.start", user="alice@example.com")
    assert start_ev["rule"] == "oncall-jit", start_ev
    end = gw.wait_event("session.end", session=start_ev["session"], timeout=span + 15)
    assert end["reason"] == "revoked: policy", end
    late = parse_ts(end["ts"]) - until
    print("# the session ended %.3fs after the grant's end" % late)
    assert 0 <= late <= 1.0 * SLOW, "ended %.3fs after the grant's end: %s" % (late, end)
    psession.wait(timeout=10 * SLOW)
    assert psession.returncode != 0
    expired = gw.wait_event("access.expired", id=rid)
    assert expired["user"] == "alice@example.com", expired
    refused(fx, gw, conn, fx.alice, "alice", "alice@example.com")
    # asked after the fact, the request says how it ended
    answer = raw_request(fx, gw, fx.alice, {"op": "status", "id": rid})
    assert answer["request"]["state"] == "expired", answer


def test_cli_request_wait_approve_connect_expiry(fx):
    """certgate request --wait -> an approver approves -> --wait exits 0 ->
    psql gets in -> the grant's end ends the session (revoked: policy)."""
    gw = start(fx)
    check_cli_lifecycle(fx, gw)
    gw.stop()


def test_cli_request_across_workers(fx):
    """The same with two workers: the request crosses from the worker that
    holds the connection to the control loop and back."""
    gw = start(fx, gateway={"workers": 2})
    check_cli_lifecycle(fx, gw)
    gw.stop()


def test_cli_request_refusals(fx):
    """Each refusal: exit 1, one line on stderr saying why, access.refused in
    the audit log with the certificate's user; nothing recorded."""
    gw = start(fx)
    base = ("--reason", "INC-9", "--for", "1h")
    cases = [
        (fx.alice, "billing-db", base,
         "no rule of the policy in force requires approval for billing-db"),
        (fx.alice, "nope", base, "service: no service nope in the policy in force"),
        (fx.alice, "orders-db", ("--reason", "", "--for", "1h"), "reason: expected 1 to 500"),
        (fx.alice, "orders-db", ("--reason", "x" * 501, "--for", "1h"), "reason: expected"),
        (fx.alice, "orders-db", ("--reason", "INC-9", "--for", "8d"),
         "duration: expected a duration from 1s to 7d"),
        (fx.alice, "orders-db", ("--reason", "INC-9", "--for", "soon"), "duration:"),
        (fx.carol, "orders-db", base,
         "rule dba admits you to orders-db without an approval"),
        (fx.dave, "orders-db", base, "an approval would not admit you to orders-db"),
    ]
    for cert, service, extra, want in cases:
        before = len(gw.events("access.refused"))
        r = cli_request(fx, gw, cert, service, *extra)
        assert r.returncode == 1, (service, extra, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("certgate request: refused: "), lines
        assert want in lines[0], (want, lines)
        assert r.stdout == "", r.stdout
        ev = wait_for(lambda: gw.events("access.refused")[before:], 5, "access.refused")[-1]
        user = {fx.alice.crt: "alice@example.com", fx.carol.crt: "carol@example.com",
                fx.dave.crt: "dave@example.com"}[cert.crt]
        assert ev["user"] == user and ev["by"] == user and ev["service"] == service, ev
        assert want in ev["reason"] and ev["id"] is None, ev
    assert not gw.events("access.requested")
    assert listed(gw) == []

    # usage errors never reach the gateway
    r = certgate(*request_args(fx, gw, fx.alice, "orders-db", "--for", "1h"), check=False)
    assert r.returncode == 2 and "--reason TEXT is required" in r.stderr, r.stderr

    # a lock refuses the certificate's requests too
    lock = api(gw, "POST", "/v1/locks", {"user": "bob@example.com", "reason": "offboarding"})
    assert lock.status == 201, lock
    r = cli_request(fx, gw, fx.bob, "orders-db", *base)
    assert r.returncode == 1 and "locked: offboarding" in r.stderr, r.stderr

    # the requester comes from the certificate: the message cannot name one
    answer = raw_request(fx, gw, fx.alice, {"op": "request", "service": "orders-db",
                                            "reason": "x", "duration": "1h",
                                            "user": "bob@example.com"})
    assert "unknown member" in answer["error"], answer
    answer = raw_request(fx, gw, fx.alice, {"op": "request", "service": "orders-db",
                                            "reason": "x", "duration": "1h"})
    rid = answer["request"]["id"]
    assert answer["request"]["user"] == "alice@example.com", answer
    # one pending per user and service: the answer names the one pending
    r = cli_request(fx, gw, fx.alice, "orders-db", *base)
    assert r.returncode == 1 and "%s is pending already" % rid in r.stderr, r.stderr
    # another user learns nothing of it
    answer = raw_request(fx, gw, fx.bob, {"op": "status", "id": rid})
    assert answer == {"error": "no access request %s of yours" % rid}, answer
    assert raw_request(fx, gw, fx.alice, {"op": "status", "id": rid})["request"]["id"] == rid
    # the request channel is the catalog's server name's only
    ctx = ssl.create_default_context(cafile=fx.ca.crt)
    ctx.check_hostname = False
    ctx.load_cert_chain(fx.alice.crt, fx.alice.key)
    ctx.set_alpn_protocols(["certgate-jit/1"])
    with socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=15 * SLOW) as sock:
        with ctx.wrap_socket(sock, server_hostname="orders-db") as tls:
            tls.sendall(b'{"op": "status", "id": "req-1"}\n')
            try:
                assert tls.recv(4096) == b""
            except (ssl.SSLError, ConnectionResetError):
                pass
    ev = gw.wait_event("tls.rejected", sni="orders-db")
    assert "ALPN certgate-jit/1 is for the server name certgate-catalog" in ev["reason"], ev
    gw.stop()


def test_cli_request_survives_a_restart(fx):
    """A request made with certgate request survives a restart pending; asked
    again with --wait, certgate request waits on it; its grant survives the
    next restart, and psql gets in."""
    state_dir = fx.path("state-cli")
    gw = start(fx, state_dir)
    r = cli_request(fx, gw, fx.bob, "orders-db", "--reason", "INC-11", "--for", "1h")
    assert r.returncode == 0, r.stderr
    rid = r.stdout.strip()
    assert rid.startswith("req-") and "%s is pending" % rid in r.stderr, (r.stdout, r.stderr)
    gw.stop()

    gw = start(fx, state_dir)
    assert [(x["id"], x["state"]) for x in listed(gw)] == [(rid, "pending")]
    p = subprocess.Popen([BIN] + request_args(fx, gw, fx.bob, "orders-db", "--reason",
                                              "INC-11", "--for", "1h", "--wait"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == rid
    assert approve(gw, rid).status == 200
    out, err = p.communicate(timeout=15 * SLOW)
    assert p.returncode == 0 and "%s approved by carol@example.com" % rid in out, (out, err)
    assert "%s is pending already" % rid in err, err
    gw.stop()

    gw = start(fx, state_dir)
    assert api(gw, "GET", "/v1/access-requests/" + rid).json["state"] == "approved"
    conn = fx.connector(gw.ports()[0], "orders-db", fx.bob)
    psql_ok(fx, conn, fx.bob, "bob")
    ev = gw.wait_event("session.start", user="bob@example.com")
    assert ev["rule"] == "oncall-jit", ev
    gw.stop()


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")
             and (len(sys.argv) < 2 or any(a in k for a in sys.argv[1:]))]
    sys.exit(run(tests, setup=setup, teardown=teardown))
