"""The audit log cannot be written (issue 6, AUDIT.md, CONFIG.md audit.on_failure).

Two ways to break it, as root:
- a full disk: audit.path is a symlink, switched to /dev/full (every write
  fails with ENOSPC) and back, with SIGUSR1 (reopen) each time;
- a read-only directory: the audit file is deleted and its directory made
  read-only, so the reopen must create it and cannot. chmod 555 does not
  stop root, so the directory is bind-mounted onto itself read-only
  (`mount --bind`, then `mount -o remount,bind,ro`); the test is skipped
  when mounting is not allowed.

With on_failure "refuse": a new session is refused before any byte reaches
the upstream, /readyz is 503 "audit unavailable", /metrics counts the refusal
and the lost events; when the disk recovers the gateway's once-a-second probe
writes audit.resumed {"lost": N} and serves again, without a restart. With
"continue": sessions go on, /readyz stays 200, the lost events are counted.
A gateway whose audit log is unwritable at start refuses to start."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

from harness import HoldUpstream, BIN, SLOW, Fixture, free_port, run, tls_client, wait_for, whole_lines

BANNER = b"upstream says hello\n"

RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"], "min_trust": "high"},
]


def note(fmt, *args):
    print("# " + (fmt % args if args else fmt), flush=True)


def setup():
    fx = Fixture(with_postgres=False)
    fx.upstream = HoldUpstream(BANNER)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high")
    return fx


def teardown(fx):
    fx.upstream.stop()
    fx.close()


def start(fx, audit_path, on_failure, wait=True):
    cfg = fx.config([{"name": "echo", "sni": ["localhost"],
                      "upstream": ["127.0.0.1:%d" % fx.upstream.port]}], RULES,
                    admin={"listen": "127.0.0.1:%d" % free_port()},
                    audit={"path": audit_path, "on_failure": on_failure})
    return fx.gateway(cfg, wait=wait)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(gw, path):
    url = "http://%s%s" % (gw.config["admin"]["listen"], path)
    try:
        with _OPENER.open(url, timeout=5 * SLOW) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def readyz(gw):
    """Status and body of /readyz, without the run-time state's health
    (test_state.py checks that)."""
    status, body = get(gw, "/readyz")
    body = json.loads(body)
    assert body.pop("state")["ok"] is True, body
    return status, body


def metrics(gw):
    status, text = get(gw, "/metrics")
    assert status == 200, text
    return text


def metric_value(text, name):
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    return int(m.group(1)) if m else None


def wait_admin(gw):
    wait_for(lambda: readyz(gw)[0] == 200, 10, "/readyz 200")


def session_ok(fx, gw):
    """A session goes through (banner) and its session.start is audited."""
    sock = tls_client(gw.ports()[0], fx.alice, fx.ca.crt)
    try:
        assert sock.recv(len(BANNER)) == BANNER
        me = "%s:%d" % sock.getsockname()[:2]
    finally:
        sock.close()
    return me


def read_events(path):
    with open(path) as f:
        return [json.loads(line) for line in whole_lines(f.read()) if line.strip()]


def wait_unhealthy(fx, gw):
    """After a SIGUSR1 onto a broken destination: the reopen is not visible
    by itself, so make the gateway write (a refused connection: tls.rejected
    "not tls") until /readyz reports the failure."""
    def broken():
        with socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=5 * SLOW) as s:
            s.sendall(b"not tls at all\r\n")
            try:
                s.recv(16)
            except OSError:
                pass
        status, body = readyz(gw)
        return body if status == 503 else None
    return wait_for(broken, 10, "/readyz to report the audit failure", interval=0.05)


def refused_session(fx, gw):
    """A client with a valid certificate: the gateway closes it before
    anything reaches the upstream (no banner; what it sends is dropped)."""
    before = len(fx.upstream.received)
    sock = tls_client(gw.ports()[0], fx.alice, fx.ca.crt)
    try:
        try:
            sock.sendall(b"PING\n")
        except OSError:
            pass
        sock.settimeout(5 * SLOW)
        try:
            data = sock.recv(64)
        except (ssl.SSLError, OSError) as e:
            data = repr(e).encode()
        assert BANNER not in data, "the session was admitted"
    finally:
        sock.close()
    # the upstream connection (made before session.start) saw no client byte
    wait_for(lambda: len(fx.upstream.received) > before, 5, "the upstream connection to end")
    assert all(r == b"" for r in fx.upstream.received[before:]), fx.upstream.received[before:]


def assert_recovers(fx, gw, real_path, lost_before):
    """Within ~2 s of the fix: /readyz 200, audit.resumed {"lost": N} in the
    file, and sessions again."""
    t0 = time.monotonic()

    def resumed_events():
        try:
            return [e for e in read_events(real_path) if e["event"] == "audit.resumed"]
        except FileNotFoundError:
            return []
    wait_for(resumed_events, 3, "audit.resumed")
    wait_for(lambda: readyz(gw)[0] == 200, 3, "/readyz 200 again")
    took = time.monotonic() - t0
    note("audit recovered: audit.resumed written and /readyz 200 %.0f ms after the fix",
         took * 1000)
    assert took <= 2.0 * SLOW + 0.5, took
    resumed = resumed_events()
    assert len(resumed) == 1, resumed
    lost = metric_value(metrics(gw), "certgate_audit_lost_events_total")
    assert resumed[0]["lost"] == lost >= lost_before > 0, (resumed, lost, lost_before)
    me = session_ok(fx, gw)
    wait_for(lambda: [e for e in read_events(real_path)
                      if e["event"] == "session.start" and e["client"] == me], 5,
             "the new session's session.start")
    return resumed[0]


def switch_link(link, target):
    tmp = link + ".new"
    os.symlink(target, tmp)
    os.replace(tmp, link)


# --- refuse ---------------------------------------------------------------------

def test_refuse_on_full_disk_and_recover(fx):
    d = fx.path(fx.unique("full"))
    os.mkdir(d)
    real, link = os.path.join(d, "audit.real.jsonl"), os.path.join(d, "audit.jsonl")
    os.symlink(real, link)
    gw = start(fx, link, "refuse")
    wait_admin(gw)
    me = session_ok(fx, gw)
    wait_for(lambda: gw.events("session.end", client=me), 5, "session.end")

    switch_link(link, "/dev/full")
    gw.signal(signal.SIGUSR1)
    body = wait_unhealthy(fx, gw)
    assert body == {"status": "not ready", "error": "audit unavailable"}, body
    refused_session(fx, gw)
    wait_for(lambda: "audit unavailable" in gw.output(), 5, "the refusal in stderr")
    log = gw.output()
    assert re.search(r"refusing session \S+ of alice@example\.com: audit unavailable", log), log
    assert "No space left on device" in log, log
    text = metrics(gw)
    refused = re.search(r'^certgate_connections_refused_total\{event="session\.start",'
                        r'reason="audit unavailable"\} (\d+)$', text, re.M)
    assert refused and int(refused.group(1)) >= 1, text
    lost = metric_value(text, "certgate_audit_lost_events_total")
    assert lost and lost >= 1, text  # the refused session.start at least
    assert readyz(gw) == (503, {"status": "not ready", "error": "audit unavailable"})
    assert get(gw, "/healthz")[0] == 200  # alive, just not ready
    # the container checks say the same: not ready (restart would not help),
    # but alive (a liveness probe must not kill it)
    admin = gw.config["admin"]["listen"]
    health = [BIN, "health", "--admin", admin]
    r = subprocess.run(health, capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 1 and "503" in r.stderr, (r.returncode, r.stdout, r.stderr)
    r = subprocess.run(health + ["--live"], capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 0 and "alive" in r.stdout, (r.returncode, r.stdout, r.stderr)

    switch_link(link, real)
    gw.signal(signal.SIGUSR1)
    resumed = assert_recovers(fx, gw, real, lost)
    note("refuse: %d event(s) lost while /dev/full, audit.resumed says lost=%d", lost,
         resumed["lost"])
    gw.stop()


def mount_ro(path):
    """Bind-mounts path onto itself and makes that mount read-only; returns
    None or why it cannot."""
    r = subprocess.run(["mount", "--bind", path, path], capture_output=True, text=True)
    if r.returncode != 0:
        return r.stderr.strip() or "mount --bind failed"
    r = subprocess.run(["mount", "-o", "remount,bind,ro", path], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["umount", path], capture_output=True)
        return r.stderr.strip() or "remount ro failed"
    return None


def test_refuse_on_read_only_directory_and_recover(fx):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        note("SKIP read-only directory: needs root and mount(8) for a read-only bind mount")
        return
    d = fx.path(fx.unique("rodir"))
    os.mkdir(d)
    path = os.path.join(d, "audit.jsonl")
    gw = start(fx, path, "refuse")
    wait_admin(gw)
    me = session_ok(fx, gw)
    wait_for(lambda: gw.events("session.end", client=me), 5, "session.end")
    mounted = False
    try:
        # deleted, and its directory read-only: the reopen must create it, and cannot
        os.unlink(path)
        why = mount_ro(d)
        if why is not None:
            note("SKIP read-only directory: cannot make a read-only bind mount: %s", why)
            gw.stop()
            return
        mounted = True
        try:
            open(path, "a").close()
            raise AssertionError("root can still create files in the read-only mount")
        except OSError:
            pass
        gw.signal(signal.SIGUSR1)
        body = wait_unhealthy(fx, gw)
        assert body == {"status": "not ready", "error": "audit unavailable"}, body
        refused_session(fx, gw)
        wait_for(lambda: "refusing session" in gw.output(), 5, "the refusal in stderr")
        assert "Read-only file system" in gw.output(), gw.output()
        text = metrics(gw)
        assert re.search(r'^certgate_connections_refused_total\{event="session\.start",'
                         r'reason="audit unavailable"\} [1-9]', text, re.M), text
        lost = metric_value(text, "certgate_audit_lost_events_total")
        assert lost and lost >= 1, text
        assert not os.path.exists(path)

        # the directory is writable again: the probe creates the file
        r = subprocess.run(["mount", "-o", "remount,bind,rw", d], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        resumed = assert_recovers(fx, gw, path, lost)
        note("read-only directory: %d event(s) lost, audit.resumed lost=%d, file recreated",
             lost, resumed["lost"])
        gw.stop()
    finally:
        if gw.alive():
            gw.kill()
        if mounted:
            r = subprocess.run(["umount", d], capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", d], capture_output=True)


# --- continue -----------------------------------------------------------------------

def test_continue_keeps_serving_and_counts(fx):
    d = fx.path(fx.unique("cont"))
    os.mkdir(d)
    real, link = os.path.join(d, "audit.real.jsonl"), os.path.join(d, "audit.jsonl")
    os.symlink(real, link)
    gw = start(fx, link, "continue")
    wait_admin(gw)
    switch_link(link, "/dev/full")
    gw.signal(signal.SIGUSR1)

    def failing():
        session_ok(fx, gw)
        return "No space left on device" in gw.output()
    wait_for(failing, 10, "a write to fail")
    before = metric_value(metrics(gw), "certgate_audit_lost_events_total")
    assert before and before >= 1
    n = 5
    for _ in range(n):
        session_ok(fx, gw)  # admitted all the same
        assert readyz(gw) == (200, {"status": "ready"})
    # session.start and session.end of each: 2 lost events a session
    wait_for(lambda: metric_value(metrics(gw), "certgate_audit_lost_events_total")
             >= before + 2 * n, 5, "%d more lost events" % (2 * n))
    lost = metric_value(metrics(gw), "certgate_audit_lost_events_total")
    note("continue: %d sessions served on /dev/full, %d event(s) counted lost", n + 1, lost)
    assert get(gw, "/healthz")[0] == 200
    assert not re.search(r'reason="audit unavailable"', metrics(gw))

    switch_link(link, real)
    gw.signal(signal.SIGUSR1)
    assert_recovers(fx, gw, real, lost)
    gw.stop()


# --- at start --------------------------------------------------------------------------

def test_unwritable_at_start_refuses_to_start(fx):
    # a path that cannot be opened
    missing = fx.path("no-such-dir/audit.jsonl")
    gw = start(fx, missing, "refuse", wait=False)
    code = gw.wait(20)
    out = gw.output()
    assert code == 1, (code, out)
    assert "audit.path" in out and missing in out, out
    note("unopenable audit path: exit %d: %s", code, out.strip().splitlines()[-1])

    # a path that opens but cannot be written (a full disk)
    link = fx.path(fx.unique("startfull") + ".jsonl")
    os.symlink("/dev/full", link)
    gw = start(fx, link, "refuse", wait=False)
    code = gw.wait(20)
    out = gw.output()
    assert code == 1, (code, out)
    assert "cannot write the audit log %s: refusing to start" % link in out, out
    note("unwritable audit path: exit %d: %s", code,
         [l for l in out.splitlines() if "refusing to start" in l][0])

    # with on_failure "continue" the same gateway starts (and counts the loss)
    gw = start(fx, link, "continue", wait=False)
    wait_for(lambda: gw.alive() and readyz_or_none(gw) == 200, 10, "/readyz 200")
    assert metric_value(metrics(gw), "certgate_audit_lost_events_total") >= 1
    gw.stop()


def readyz_or_none(gw):
    if not gw.alive():
        raise AssertionError("certgate serve exited %s: %s" % (gw.proc.returncode, gw.output()))
    try:
        return readyz(gw)[0]
    except OSError:
        return None


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
