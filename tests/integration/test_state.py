"""Run-time state (CONFIG.md "state", gateway/state/): locks and the live
trust feed kept under state.dir survive a restart and a kill -9 mid-write,
an unreadable state file refuses the start, a reload cannot move the state,
and /readyz, /v1/status and /metrics say how the state is doing."""

import json
import os
import secrets
import signal
import sys
import threading

from harness import Fixture, Gateway, run, tls_client, wait_for
from test_admin import admin_config, api, wait_admin


def setup():
    fx = Fixture(with_postgres=False)
    fx.token = secrets.token_hex(24)
    fx.token_file = fx.path("admin.token")
    with open(fx.token_file, "w") as f:
        f.write(fx.token + "\n")
    os.chmod(fx.token_file, 0o600)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high")
    fx.bob = fx.ca.issue("bob", "bob@example.com", groups=["dba"], device_id="laptop-2",
                         trust="high")
    return fx


def teardown(fx):
    fx.close()


def state_config(fx, state_dir, upstream_port=9):
    cfg = admin_config(fx, services=[{"name": "db", "sni": ["localhost"],
                                       "upstream": ["127.0.0.1:%d" % upstream_port]}])
    cfg["state"] = {"backend": "file", "dir": state_dir}
    return cfg


def start(fx, cfg, **kw):
    gw = Gateway(fx.dir, json.loads(json.dumps(cfg)), name=fx.unique("gw"), **kw)
    fx.procs.append(gw)
    gw.token = fx.token
    return gw


def refused_by_lock(gw, cert, fx):
    """A TLS client of the locked user: refused with rule "lock"."""
    port = gw.ports()[0]
    before = len(gw.events("authz.denied"))
    try:
        s = tls_client(port, cert, fx.ca.crt, server_name="localhost")
        s.settimeout(5)
        try:
            s.recv(1)
        except OSError:
            pass
        s.close()
    except OSError:
        pass
    denied = wait_for(lambda: gw.events("authz.denied")[before:], 10, "authz.denied")
    return denied[-1]


def test_lock_and_trust_survive_restart(fx):
    state_dir = fx.path("state-restart")
    cfg = state_config(fx, state_dir)
    gw = wait_admin(start(fx, cfg))
    r = api(gw, "POST", "/v1/locks", {"user": "bob@example.com", "reason": "offboarded"})
    assert r.status == 201 and r.json["id"] == "lock-1", r
    r = api(gw, "PUT", "/v1/devices/laptop-1/trust", {"level": "low"})
    assert r.status == 200, r
    wait_for(lambda: os.path.exists(os.path.join(state_dir, "locks.json")) and
             os.path.exists(os.path.join(state_dir, "trust.json")), 5, "the state files")
    assert os.stat(os.path.join(state_dir, "locks.json")).st_mode & 0o777 == 0o600
    gw.stop()

    gw = wait_admin(start(fx, cfg))
    locks = api(gw, "GET", "/v1/locks").json["locks"]
    assert [(l["id"], l["user"], l["reason"]) for l in locks] == \
        [("lock-1", "bob@example.com", "offboarded")], locks
    trust = api(gw, "GET", "/v1/devices/laptop-1/trust")
    assert trust.status == 200 and trust.json["level"] == "low", trust
    denied = refused_by_lock(gw, fx.bob, fx)
    assert denied["rule"] == "lock" and "lock-1" in denied["reason"], denied
    r = api(gw, "POST", "/v1/locks", {"device": "laptop-9"})
    assert r.json["id"] == "lock-2", r  # ids go on counting across restarts
    ready = api(gw, "GET", "/readyz", token=None).json
    assert ready["state"]["backend"] == "file" and ready["state"]["ok"] is True, ready
    status = api(gw, "GET", "/v1/status").json
    assert status["state"]["backend"] == "file", status
    metrics = api(gw, "GET", "/metrics").text
    assert "\ncertgate_state_errors_total 0\n" in metrics, metrics
    gw.stop()


def test_memory_state_forgets(fx):
    """Without a state block nothing persists (and /readyz says so)."""
    cfg = admin_config(fx, services=[{"name": "db", "upstream": ["127.0.0.1:9"]}])
    gw = wait_admin(start(fx, cfg))
    assert api(gw, "POST", "/v1/locks", {"user": "bob@example.com"}).status == 201
    assert api(gw, "GET", "/readyz", token=None).json["state"]["backend"] == "memory"
    gw.stop()
    gw = wait_admin(start(fx, cfg))
    assert api(gw, "GET", "/v1/locks").json["locks"] == []
    gw.stop()


def test_unreadable_state_refuses_start(fx):
    state_dir = fx.path("state-torn")
    os.makedirs(state_dir)
    with open(os.path.join(state_dir, "locks.json"), "w") as f:
        f.write('{"next": 2, "locks": [')
    gw = start(fx, state_config(fx, state_dir), wait=False)
    code = gw.wait(20)
    assert code == 1, (code, gw.output())
    assert "locks.json:1:" in gw.output(), gw.output()


def test_reload_cannot_move_state(fx):
    cfg = state_config(fx, fx.path("state-a"))
    gw = wait_admin(start(fx, cfg))
    moved = json.loads(json.dumps(gw.config))
    moved["state"]["dir"] = fx.path("state-b")
    gw.write_config(moved)
    r = api(gw, "POST", "/v1/reload")
    assert r.status == 400, r
    assert any("state: changed" in e for e in r.json["errors"]), r.json
    # the rest of a valid reload is unaffected
    gw.write_config(cfg | {"audit": gw.config["audit"]})
    assert api(gw, "POST", "/v1/reload").status == 200
    gw.stop()


def test_kill9_mid_write_leaves_readable_state(fx):
    """Locks posted as fast as the API takes them, the gateway killed -9 in
    the middle: it starts again, and what it reads back is whole (a prefix
    of the locks posted, ids consecutive)."""
    state_dir = fx.path("state-kill")
    cfg = state_config(fx, state_dir)
    gw = wait_admin(start(fx, cfg))
    stop = threading.Event()
    posted = []

    def post():
        i = 0
        while not stop.is_set():
            try:
                r = api(gw, "POST", "/v1/locks", {"user": "u%d@example.com" % i})
            except OSError:
                return
            if r.status != 201:
                return
            posted.append(r.json["id"])
            i += 1
    t = threading.Thread(target=post, daemon=True)
    t.start()
    wait_for(lambda: len(posted) >= 200, 30, "200 locks posted")
    gw.signal(signal.SIGKILL)
    gw.wait(10)
    stop.set()
    t.join(10)
    gw = wait_admin(start(fx, cfg))
    locks = api(gw, "GET", "/v1/locks").json["locks"]
    ids = [int(l["id"].split("-")[1]) for l in locks]
    assert ids == list(range(1, len(ids) + 1)), ids[:10]
    assert len(ids) > 0
    print("# kill -9 after %d locks posted: %d read back whole" % (len(posted), len(ids)))
    gw.stop()


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")
             and (len(sys.argv) < 2 or any(a in k for a in sys.argv[1:]))]
    sys.exit(run(tests, setup=setup, teardown=teardown))
