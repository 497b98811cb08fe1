"""Worker loops (gateway.workers, issue 16): with N event loops everything
behaves as with one. Connections spread over the workers (the acceptor
hands each to the worker with the fewest), and what is global stays global:
/v1/sessions and kills across workers, max_connections and
max_sessions_per_user counted over all of them, a lock and a reload reach
every worker's sessions, a drain ends them all, audit lines stay whole.

The rest of the suite runs with CERTGATE_WORKERS=1, 2 and 4 (tests/run);
there, postgres mode's CancelRequest lands on another worker than the
session it cancels (the worker with the fewest connections takes it), see
test_postgres_mode's test_cancel_request."""

import json
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import threading

from harness import SLOW, WORKERS, Fixture, HoldUpstream, certgate, run, wait_for
from test_admin import admin_config, api, wait_admin

RULES = [{"name": "staff", "effect": "allow", "services": ["*"], "groups": ["staff"]}]


def setup():
    fx = Fixture(with_postgres=False)
    fx.token = secrets.token_hex(24)
    fx.token_file = fx.path("admin.token")
    with open(fx.token_file, "w") as f:
        f.write(fx.token + "\n")
    os.chmod(fx.token_file, 0o600)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["staff"])
    fx.bob = fx.ca.issue("bob", "bob@example.com", groups=["staff"])
    fx.up = HoldUpstream()
    return fx


def teardown(fx):
    fx.up.stop()
    fx.close()


def gateway(fx, workers, rules=None, **gateway_keys):
    service = {"name": "svc", "upstream": ["127.0.0.1:%d" % fx.up.port]}
    keys = {"workers": workers}
    keys.update(gateway_keys)
    cfg = admin_config(fx, services=[service], rules=rules or RULES, gateway=keys)
    gw = fx.gateway(cfg)
    gw.token = fx.token
    return wait_admin(gw)


def client(gw, cert):
    ctx = ssl.create_default_context(cafile=gw.ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert.crt, cert.key)
    raw = socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=10 * SLOW)
    return ctx.wrap_socket(raw, server_hostname="svc")


def sessions(fx, gw, cert, n):
    """n live sessions of cert's user (each sent a byte: session.start)."""
    gw.ca = fx.ca.crt
    before = len(gw.events("session.start"))
    socks = []
    for _ in range(n):
        s = client(gw, cert)
        s.sendall(b"x")
        socks.append(s)
    wait_for(lambda: len(gw.events("session.start")) >= before + n, 10 * SLOW,
             "%d session.start" % n)
    return socks


def ended(sock):
    """True once the gateway closed sock (EOF or a reset)."""
    sock.settimeout(5 * SLOW)
    try:
        return sock.recv(1) == b""
    except (ssl.SSLError, OSError):
        return True


def worker_connections(gw):
    text = api(gw, "GET", "/metrics").text
    found = re.findall(r'^certgate_worker_connections\{worker="(\d+)"\} (\d+)$', text, re.M)
    return {int(w): int(n) for w, n in found}


def close_all(socks):
    for s in socks:
        s.close()


def test_spread_listing_and_kill(fx):
    gw = gateway(fx, 4)
    socks = sessions(fx, gw, fx.alice, 8)
    try:
        # the acceptor gives each connection to the least loaded worker
        assert worker_connections(gw) == {0: 2, 1: 2, 2: 2, 3: 2}, worker_connections(gw)
        status = api(gw, "GET", "/v1/status").json
        assert status["workers"] == 4, status
        assert status["counts"]["sessions"] == 8, status
        assert status["counts"]["connections"] == 8, status
        listed = api(gw, "GET", "/v1/sessions").json["sessions"]
        assert len(listed) == 8, listed
        starts = [s["started"] for s in listed]
        assert starts == sorted(starts, reverse=True), starts  # newest first, every worker
        ids = {e["session"] for e in gw.events("session.start")}
        assert {s["id"] for s in listed} == ids
        # kill each one in turn, whichever worker runs it
        for victim in listed[:4]:
            r = api(gw, "DELETE", "/v1/sessions/" + victim["id"])
            assert r.status == 200, r
            gw.wait_event("session.end", session=victim["id"], reason="killed by admin")
        assert len(api(gw, "GET", "/v1/sessions").json["sessions"]) == 4
        assert api(gw, "DELETE", "/v1/sessions/" + listed[0]["id"]).status == 404
        # the bytes of live sessions on every worker are in /metrics
        text = api(gw, "GET", "/metrics").text
        m = re.search(r'^certgate_bytes_total\{service="svc",direction="up"\} (\d+)$', text,
                      re.M)
        assert m and int(m.group(1)) == 8, text
    finally:
        close_all(socks)
    gw.stop()


def test_limits_are_global(fx):
    gw = gateway(fx, 4, max_connections=3)
    socks = sessions(fx, gw, fx.alice, 3)
    try:
        extra = socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=10 * SLOW)
        assert ended(extra), "a 4th connection over max_connections 3 was kept"
        extra.close()
        gw.wait_event("tls.rejected", reason="too many connections")
    finally:
        close_all(socks)
    gw.stop()

    gw = gateway(fx, 4, max_sessions_per_user=2)
    socks = sessions(fx, gw, fx.alice, 2)
    try:
        third = client(gw, fx.alice)
        third.sendall(b"x")
        assert ended(third), "a 3rd session over max_sessions_per_user 2 was kept"
        gw.wait_event("authz.denied", user="alice@example.com", rule="max_sessions_per_user")
        socks += sessions(fx, gw, fx.bob, 2)  # counted per user
    finally:
        close_all(socks)
    gw.stop()


def test_lock_and_reload_reach_every_worker(fx):
    gw = gateway(fx, 3)
    alice = sessions(fx, gw, fx.alice, 3)
    bob = sessions(fx, gw, fx.bob, 3)
    try:
        r = api(gw, "POST", "/v1/locks", {"user": "alice@example.com", "reason": "test"})
        assert r.status == 201, r
        for s in alice:
            assert ended(s)
        wait_for(lambda: len(gw.events("session.end", reason="revoked: lock")) == 3, 5 * SLOW,
                 "three revoked: lock")
        assert all(not ended_now(s) for s in bob)

        # a policy without bob: his sessions on every worker end
        cfg = json.loads(json.dumps(gw.config))
        cfg["rules"][0]["users"] = ["carol@example.com"]
        gw.write_config(cfg)
        r = api(gw, "POST", "/v1/reload")
        assert r.status == 200, r
        for s in bob:
            assert ended(s)
        wait_for(lambda: len(gw.events("session.end", reason="revoked: policy")) == 3,
                 5 * SLOW, "three revoked: policy")

        # the number of workers needs a restart: said, and nothing changes
        cfg["gateway"]["workers"] = 2
        gw.write_config(cfg)
        r = api(gw, "POST", "/v1/reload")
        assert r.status == 400, r
        assert any("gateway.workers: changed from 3 to 2" in e for e in r.json["errors"]), r
        assert api(gw, "GET", "/v1/status").json["workers"] == 3
    finally:
        close_all(alice + bob)
    gw.stop()


def ended_now(sock):
    """True if sock was closed by the gateway already (no waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except ssl.SSLWantReadError:
        return False
    except (ssl.SSLError, OSError):
        return True
    finally:
        sock.setblocking(True)


def test_drain_ends_every_worker(fx):
    gw = gateway(fx, 4)
    socks = sessions(fx, gw, fx.alice, 8)
    try:
        gw.signal(signal.SIGTERM)
        assert gw.wait(30 * SLOW) == 0, gw.output()[-2000:]
        ends = gw.events("session.end", reason="shutdown")
        assert len(ends) == 8, ends
        events = [e["event"] for e in gw.events()]
        assert events[-1] == "gateway.stop", events[-5:]
        for s in socks:
            assert ended(s)
    finally:
        close_all(socks)


def test_audit_lines_whole_under_load(fx):
    """Eight threads, 200 sessions over four workers: every audit line is
    one whole JSON object, each session has exactly one start and one end.
    Meanwhile /v1/status reads the writer's counts (on the control loop, as
    the workers write): they only grow (ThreadSanitizer checks the reads)."""
    gw = gateway(fx, 4)
    gw.ca = fx.ca.crt
    errors = []
    polling = threading.Event()
    seen = []

    def poll_status():
        try:
            while not polling.is_set():
                body = api(gw, "GET", "/v1/status").json
                seen.append(body["audit"]["written"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    poller = threading.Thread(target=poll_status)
    poller.start()

    def worker():
        try:
            for _ in range(25):
                s = client(gw, fx.alice)
                s.sendall(b"y")
                s.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    polling.set()
    poller.join()
    assert not errors, errors
    assert len(seen) > 1 and seen == sorted(seen), seen
    def all_ended():
        counts = {e: len(gw.events(e)) for e in ("session.start", "session.end",
                                                   "session.abandoned", "tls.rejected")}
        return counts["session.end"] >= 200 or print("# so far: %s" % counts)
    wait_for(all_ended, 30 * SLOW, "200 session.end", interval=1)
    gw.stop()
    with open(gw.audit_path) as f:
        lines = f.read().splitlines()
    for line in lines:
        json.loads(line)  # raises on an interleaved or torn line
    starts = [e["session"] for e in gw.events("session.start")]
    ends = [e["session"] for e in gw.events("session.end")]
    assert len(starts) == 200 and len(set(starts)) == 200, len(starts)
    assert sorted(starts) == sorted(ends)


def test_workers_config(fx):
    cfg = admin_config(fx, services=[{"name": "svc", "upstream": ["127.0.0.1:1"]}],
                       rules=RULES, gateway={"workers": 0})
    path = fx.path("workers0.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    r = certgate("check", "--config", path, check=False)
    assert r.returncode != 0
    assert "gateway.workers" in r.stderr and "expected an integer from 1 to 256" in r.stderr, \
        r.stderr
    # by default, one per CPU this process may use
    del cfg["gateway"]["workers"]
    with open(path, "w") as f:
        json.dump(cfg, f)
    gw = fx.gateway(cfg)
    gw.token = fx.token
    wait_admin(gw)
    want = int(WORKERS) if WORKERS else len(os.sched_getaffinity(0))  # harness may set it
    assert api(gw, "GET", "/v1/status").json["workers"] == want
    gw.stop()


if __name__ == "__main__":
    sys.exit(run([test_spread_listing_and_kill, test_limits_are_global,
                  test_lock_and_reload_reach_every_worker, test_drain_ends_every_worker,
                  test_audit_lines_whole_under_load, test_workers_config],
                 setup, teardown))
