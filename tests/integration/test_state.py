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
import time

from harness import Fixture, Gateway, run, tls_client, wait_for
from test_admin import RULES, admin_config, api, wait_admin


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


# --- state files read back are checked (commit e3bfdb7) --------------------------

# the admin API's requests need a rule that requires approval for "db"
JIT_RULES = RULES + [{"name": "db-jit", "effect": "allow", "services": ["db"],
                      "groups": ["oncall"], "requires_approval": True}]


def jit_config(fx, state_dir):
    cfg = admin_config(fx, services=[{"name": "db", "sni": ["localhost"],
                                       "upstream": ["127.0.0.1:9"]}], rules=JIT_RULES)
    cfg["state"] = {"backend": "file", "dir": state_dir}
    return cfg


def state_files(fx, name, files):
    """A state folder holding files {name: JSON document}, written the way
    the gateway writes them (0700 folder, 0600 files)."""
    state_dir = fx.path(name)
    os.makedirs(state_dir, mode=0o700)
    for fname, doc in files.items():
        path = os.path.join(state_dir, fname)
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        os.chmod(path, 0o600)
    return state_dir


def now_ms():
    return int(time.time() * 1000)


def request_record(rid, user="alice@example.com", state="pending", **extra):
    """One request as request_save writes it (gateway/state/state_requests.c)."""
    rec = {"id": rid, "user": user, "service": "db", "reason": "INC-1", "duration": 3600000,
           "state": state, "created": now_ms(), "requested_by": "127.0.0.1:1",
           "decided": 0, "until": 0}
    rec.update(extra)
    return rec


def lock_record(lid, user="mallory@example.com", **extra):
    """One lock as locks_save writes it (gateway/state/state_locks.c)."""
    rec = {"id": lid, "user": user, "reason": "offboarded", "created": now_ms(), "expires": 0,
           "by": "127.0.0.1:1"}
    rec.update(extra)
    return rec


def refused_start(fx, cfg):
    """Starts a gateway that must refuse to start: returns its output, one
    line. Does not wait 20 s on a gateway that starts anyway."""
    gw = start(fx, cfg, wait=False)
    wait_for(lambda: not gw.alive() or gw.events("gateway.start"), 20,
             "the gateway to exit or start")
    if gw.alive():
        gw.kill()
        raise AssertionError("the gateway started: %s" % gw.output())
    code = gw.wait(10)
    out = gw.output()
    assert code == 1, (code, out)
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return lines[0]


def test_loaded_ids_move_the_counter(fx):
    """A saved counter behind the ids in the file ("next" 0 with req-5, "next"
    6 with lock-7): new ids come after the loaded ones, never repeat one."""
    state_dir = state_files(fx, "state-ids", {
        "requests.json": {"next": 0, "requests": [request_record("req-5")]},
        "locks.json": {"next": 6, "locks": [lock_record("lock-7")]},
    })
    gw = wait_admin(start(fx, jit_config(fx, state_dir)))
    r = api(gw, "POST", "/v1/access-requests", {"user": "bob@example.com", "service": "db",
                                                "reason": "INC-2", "duration": "1h"})
    assert r.status == 201 and r.json["id"] == "req-6", r
    ids = [x["id"] for x in api(gw, "GET", "/v1/access-requests").json["requests"]]
    assert sorted(ids) == ["req-5", "req-6"], ids
    r = api(gw, "POST", "/v1/locks", {"user": "eve@example.com"})
    assert r.status == 201 and r.json["id"] == "lock-8", r
    ids = [x["id"] for x in api(gw, "GET", "/v1/locks").json["locks"]]
    assert sorted(ids) == ["lock-7", "lock-8"], ids
    # each loaded record is still the one it was
    assert api(gw, "GET", "/v1/access-requests/req-5").json["user"] == "alice@example.com"
    assert api(gw, "DELETE", "/v1/locks/lock-7").status == 200
    assert [x["id"] for x in api(gw, "GET", "/v1/locks").json["locks"]] == ["lock-8"]
    gw.stop()
    # and the counters were saved past them
    gw = wait_admin(start(fx, jit_config(fx, state_dir)))
    r = api(gw, "POST", "/v1/locks", {"user": "eve2@example.com"})
    assert r.status == 201 and r.json["id"] == "lock-9", r
    gw.stop()


def test_duplicate_ids_refuse_start(fx):
    """Two records with one id in a state file: the gateway refuses to start
    with one line naming the id (it used to start, with two req-1, and
    approving req-1 decided one of them)."""
    state_dir = state_files(fx, "state-dup-req", {"requests.json": {"next": 1, "requests": [
        request_record("req-1", state="approved", decided_by="carol@example.com",
                       decided=now_ms(), until=now_ms() + 3600000),
        request_record("req-1")]}})
    line = refused_start(fx, jit_config(fx, state_dir))
    assert "requests.json" in line and "requests[1]: req-1: a second request" in line, line
    state_dir = state_files(fx, "state-dup-lock", {"locks.json": {"next": 2, "locks": [
        lock_record("lock-2"), lock_record("lock-2", user="eve@example.com")]}})
    line = refused_start(fx, jit_config(fx, state_dir))
    assert "locks.json" in line and "locks[1]: lock-2: a second lock" in line, line


def test_control_characters_in_state_refuse_start(fx):
    """Text read back from a state file is what the gateway writes: UTF-8
    without control characters (a newline or an escape in a lock's reason or
    id would reach the listing and every refusal's reason)."""
    cases = [
        ("locks.json", {"next": 1, "locks": [lock_record("lock-1", reason="a\nb")]},
         "locks[0]: lock-1: a field is not UTF-8 text"),
        ("locks.json", {"next": 1, "locks": [lock_record("lock-1\u001b[2J")]},
         "locks[0]: lock id: expected UTF-8 text without control characters"),
        ("locks.json", {"next": 1, "locks": [lock_record("lock-1", by="x\u0085y")]},
         "locks[0]: lock-1: a field is not UTF-8 text"),
        ("requests.json", {"next": 1, "requests": [request_record("req-1\n")]},
         "requests[0]: a field is not UTF-8 text"),
        ("requests.json", {"next": 1, "requests": [request_record("req-1",
                                                                  reason="x\u001b[31my")]},
         "requests[0]: a field is not UTF-8 text"),
    ]
    for i, (fname, doc, want) in enumerate(cases):
        state_dir = state_files(fx, "state-ctrl-%d" % i, {fname: doc})
        line = refused_start(fx, jit_config(fx, state_dir))
        assert fname in line and want in line, (doc, line)
        assert "\u001b" not in line, line


def test_lock_reason_must_be_text(fx):
    """POST /v1/locks: a reason with control characters is refused (400)
    and nothing is locked; UTF-8 text is fine."""
    gw = wait_admin(start(fx, state_config(fx, fx.path("state-reason"))))
    for reason in ("a\nb", "red\u001b[31m", "x\u0085y", "tab\there", "del\u007f"):
        r = api(gw, "POST", "/v1/locks", {"user": "bob@example.com", "reason": reason})
        assert r.status == 400, (reason, r)
        assert "reason: expected UTF-8 text without control characters" in r.json["error"], r
    assert api(gw, "GET", "/v1/locks").json["locks"] == []
    assert not gw.events("admin.lock")
    r = api(gw, "POST", "/v1/locks", {"user": "bob@example.com", "reason": "Zo\u00eb left"})
    assert r.status == 201 and r.json["reason"] == "Zo\u00eb left", r
    gw.stop()


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")
             and (len(sys.argv) < 2 or any(a in k for a in sys.argv[1:]))]
    sys.exit(run(tests, setup=setup, teardown=teardown))
