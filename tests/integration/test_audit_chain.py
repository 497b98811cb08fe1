"""The audit log's hash chain (issue 17, CONFIG.md audit.chain, CLI.md
`certgate audit verify`), with a real `certgate serve`:

- the chain holds across logrotate's rename + SIGUSR1, a restart, a
  rotation while the gateway is down (the state file) and a reload that
  moves the log; `certgate audit verify` passes over the series and says
  which line, and how, when one is edited, removed, inserted or moved, or
  a file of the series is left out;
- kill -9 in the middle of traffic: the file verifies (or reports only a
  torn last line), and after a restart the chain goes on; a torn last line
  is cut off at the restart and recorded in audit.repaired;
- GET /v1/status shows the chain's head (an anchor outside the file);
- with audit.chain off, verify says so; the chain cannot be switched by a
  reload under the same file.

Sessions go to a loopback upstream that greets (no PostgreSQL needed: the
chain does not care what a session carries)."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

from harness import BIN, SLOW, Fixture, HoldUpstream, certgate, free_port, run, tls_client, \
    wait_for

BANNER = b"upstream says hello\n"
RULES = [{"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"]}]


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


def start(fx, audit, wait=True, **extra):
    cfg = fx.config([{"name": "echo", "sni": ["localhost"],
                      "upstream": ["127.0.0.1:%d" % fx.upstream.port]}], RULES,
                    admin={"listen": "127.0.0.1:%d" % free_port()}, audit=audit, **extra)
    return fx.gateway(cfg, wait=wait)


def restart(fx, old):
    """A new gateway process with the old one's configuration (same ports,
    same audit log), ready once its own gateway.start is written."""
    path = old.config["audit"]["path"]
    before = sum(1 for e in lines_json(path) if e["event"] == "gateway.start")
    gw = fx.gateway(json.loads(json.dumps(old.config)), wait=False)

    def ready():
        if not gw.alive():
            raise AssertionError("certgate serve exited: " + gw.output())
        return sum(1 for e in lines_json(path) if e["event"] == "gateway.start") > before
    wait_for(ready, 20, "the restarted gateway")
    return gw


def session(fx, gw):
    """One session through the gateway: session.start and session.end."""
    sock = tls_client(gw.ports()[0], fx.alice, fx.ca.crt)
    try:
        assert sock.recv(len(BANNER)) == BANNER
        me = "%s:%d" % sock.getsockname()[:2]
    finally:
        sock.close()
    return me


def sessions(fx, gw, path, n):
    """n sessions, each until its session.end is in path."""
    for _ in range(n):
        me = session(fx, gw)
        wait_for(lambda: any(e["event"] == "session.end" and e.get("client") == me
                             for e in lines_json(path)), 5, "session.end of " + me)


def lines_json(path):
    """The complete lines of path, parsed (a torn tail is not one)."""
    try:
        with open(path, "rb") as f:
            return [json.loads(l) for l in f.read().split(b"\n")[:-1] if l.strip()]
    except FileNotFoundError:
        return []


def raw_lines(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")[:-1]


def verify(*paths, check=None):
    r = certgate("audit", "verify", *paths, check=False)
    if check is not None and r.returncode != check:
        raise AssertionError("audit verify %s: exit %d (wanted %d)\n%s%s" % (
            " ".join(paths), r.returncode, check, r.stdout, r.stderr))
    return r


def verified_count(r):
    m = re.match(r"(\d+) lines verified", r.stdout)
    assert m, r.stdout
    return int(m.group(1))


def api(gw, path):
    url = "http://%s%s" % (gw.config["admin"]["listen"], path)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5 * SLOW) as r:
        return json.loads(r.read().decode())


def write_lines(path, lines, tail=b"\n"):
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + tail)


# --- rotation, restart, reload ------------------------------------------------------

def test_chain_across_rotation_restart_and_reload(fx):
    d = fx.path(fx.unique("rot"))
    os.mkdir(d)
    cur = os.path.join(d, "audit.jsonl")
    gw = start(fx, {"path": cur})
    sessions(fx, gw, cur, 2)
    first = lines_json(cur)
    assert first[0]["event"] == "gateway.start" and first[0]["seq"] == 1, first[0]
    assert first[0]["prev"] == "0" * 64, first[0]
    assert os.path.exists(cur + ".state")

    # logrotate: rename, a line still lands in the renamed file, SIGUSR1
    r1 = os.path.join(d, "audit.jsonl.3")
    os.rename(cur, r1)
    sessions(fx, gw, r1, 1)
    gw.signal(signal.SIGUSR1)

    def reopened():
        session(fx, gw)
        return lines_json(cur)
    wait_for(reopened, 10, "lines in the new file after SIGUSR1")
    sessions(fx, gw, cur, 1)
    new = lines_json(cur)
    old_last = raw_lines(r1)[-1]
    assert new[0]["prev"] == hashlib.sha256(old_last).hexdigest(), new[0]
    assert new[0]["seq"] == json.loads(old_last)["seq"] + 1

    # the admin API shows the chain's head: the last line's seq and hash
    def head_matches():
        st = api(gw, "/v1/status")["audit"]
        last = raw_lines(cur)[-1]
        return st["chain"] and st["seq"] == json.loads(last)["seq"] and \
            st["hash"] == hashlib.sha256(last).hexdigest()
    wait_for(head_matches, 5, "/v1/status audit head = the file's last line")
    gw.stop()

    # rotated while the gateway is down: the new file starts from the state
    r2 = os.path.join(d, "audit.jsonl.2")
    os.rename(cur, r2)
    state = json.load(open(cur + ".state"))
    assert state["seq"] == json.loads(raw_lines(r2)[-1])["seq"], state
    gw = restart(fx, gw)
    sessions(fx, gw, cur, 1)
    start_line = lines_json(cur)[0]
    assert start_line["event"] == "gateway.start", start_line
    assert start_line["prev"] == hashlib.sha256(raw_lines(r2)[-1]).hexdigest()

    # a reload that moves the log to a new (empty) path: the chain goes on
    r3 = cur
    moved = os.path.join(d, "moved.jsonl")
    cfg = json.loads(json.dumps(gw.config))
    cfg["audit"]["path"] = moved
    gw.write_config(cfg)
    gw.reload()
    wait_for(lambda: lines_json(moved), 10, "the reload's line in the moved log")
    sessions(fx, gw, moved, 1)
    gw.stop()

    series = [r1, r2, r3, moved]
    r = verify(*series, check=0)
    total = sum(len(raw_lines(p)) for p in series)
    assert verified_count(r) == total, (r.stdout, total)
    note("audit verify over 4 files (rotated up, rotated down, reload-moved): %s",
         r.stdout.strip())
    assert hashlib.sha256(raw_lines(moved)[-1]).hexdigest() in r.stdout

    # a file of the series left out, or given out of order
    r = verify(r1, r3, moved, check=1)
    assert re.search(r"audit\.jsonl:1: removed: seq jumps from \d+ to \d+", r.stderr), r.stderr
    assert "a file of the series left out" in r.stderr, r.stderr
    r = verify(r2, r1, r3, moved, check=1)
    assert "audit.jsonl.3:1:" in r.stderr, r.stderr


def tampered(fx, path, lines, name):
    out = fx.path(fx.unique(name) + ".jsonl")
    write_lines(out, lines)
    return out


def test_verify_names_the_line(fx):
    d = fx.path(fx.unique("tamper"))
    os.mkdir(d)
    cur = os.path.join(d, "audit.jsonl")
    gw = start(fx, {"path": cur})
    sessions(fx, gw, cur, 4)
    gw.stop()
    lines = raw_lines(cur)
    assert len(lines) >= 10, lines
    verify(cur, check=0)

    # edited: a user name changed in line 4 (a session.start)
    i = next(k for k, l in enumerate(lines) if b'"session.start"' in l)
    edited = list(lines)
    edited[i] = edited[i].replace(b"alice@example.com", b"mallory@example.com")
    r = verify(tampered(fx, cur, edited, "edited"), check=1)
    assert re.search(r":%d: edited: line seq %d was changed" % (i + 1, i + 1), r.stderr), r.stderr
    note("edited line %d: %s", i + 1, r.stderr.splitlines()[0])

    # removed: line 5 gone
    r = verify(tampered(fx, cur, lines[:4] + lines[5:], "removed"), check=1)
    assert re.search(r":5: removed: seq jumps from 4 to 6: 1 line\(s\) missing", r.stderr), r.stderr

    # inserted: a copy of line 2 after line 6
    r = verify(tampered(fx, cur, lines[:6] + [lines[1]] + lines[6:], "inserted"), check=1)
    assert re.search(r":7: inserted: seq 2 again", r.stderr), r.stderr

    # a forged line with the right seq but no way to know the hash
    forged = json.loads(lines[4])
    forged["user"] = "mallory@example.com"
    fl = json.dumps(forged, separators=(",", ":")).encode()
    r = verify(tampered(fx, cur, lines[:4] + [fl] + lines[5:], "forged"), check=1)
    assert re.search(r":(5|6): edited:", r.stderr), r.stderr

    # reordered: lines 3 and 4 swapped
    sw = list(lines)
    sw[2], sw[3] = sw[3], sw[2]
    r = verify(tampered(fx, cur, sw, "reordered"), check=1)
    assert re.search(r":3: reordered: seq 4 comes before seq 3", r.stderr), r.stderr

    # torn: the last line cut in the middle
    torn = fx.path(fx.unique("torn") + ".jsonl")
    write_lines(torn, lines[:-1] + [lines[-1][:25]], tail=b"")
    r = verify(torn, check=1)
    assert re.search(r":%d: torn: a torn last line: 25 byte\(s\)" % len(lines), r.stderr), r.stderr
    assert "%d line(s) before it verified" % (len(lines) - 1) in r.stderr, r.stderr

    # not JSON, and the chain off
    r = verify(tampered(fx, cur, lines[:3] + [b"hello"] + lines[3:], "garbage"), check=1)
    assert ":4: not json:" in r.stderr, r.stderr

    # compressed rotations go through standard input
    gz = fx.path("whole.jsonl")
    write_lines(gz, lines)
    with open(gz, "rb") as f:
        import subprocess
        p = subprocess.run([BIN, "audit", "verify", "-"], stdin=f, capture_output=True,
                           text=True, timeout=30 * SLOW)
    assert p.returncode == 0 and p.stdout.startswith("%d lines verified" % len(lines)), p

    # usage
    assert verify(check=2).returncode == 2
    assert "No such file or directory" in verify(fx.path("missing.jsonl"), check=1).stderr


# --- kill -9 ---------------------------------------------------------------------------

def hammer(gw, stop):
    """Refused connections as fast as they go: a tls.rejected line each."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                s.recv(16)
        except OSError:
            pass


def test_kill9_mid_run_then_restart(fx):
    d = fx.path(fx.unique("kill"))
    os.mkdir(d)
    cur = os.path.join(d, "audit.jsonl")
    gw = start(fx, {"path": cur})
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(gw, stop), daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(raw_lines(cur)) >= 200, 20, "200 lines under load")
    gw.proc.kill()  # SIGKILL in the middle of it
    gw.proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    n = len(raw_lines(cur))
    r = verify(cur)
    assert r.returncode == 0 or (r.returncode == 1 and ": torn: " in r.stderr), (r.stdout,
                                                                              r.stderr)
    note("kill -9 after %d lines: verify exit %d: %s", n, r.returncode,
         (r.stdout or r.stderr).strip().splitlines()[0])

    # what a kill -9 inside a write(2) leaves: half a line
    whole = raw_lines(cur)
    half = json.dumps({"ts": "2026-12-01T10:00:00.000Z", "event": "tls.rejected",
                       "seq": json.loads(whole[-1])["seq"] + 1, "prev": "0" * 64,
                       "reason": "not tls"}, separators=(",", ":")).encode()[:40]
    with open(cur, "ab") as f:
        f.write(half)
    r = verify(cur, check=1)
    assert ": torn: a torn last line: 40 byte(s)" in r.stderr, r.stderr

    # the restart cuts it off, records it, and the chain goes on
    gw2 = restart(fx, gw)
    wait_for(lambda: "torn line" in gw2.output(), 5, "the warning about the torn line")
    events = lines_json(cur)
    repaired = [e for e in events if e["event"] == "audit.repaired"]
    assert len(repaired) == 1, repaired
    assert repaired[0]["torn_bytes"] == 40, repaired
    assert repaired[0]["torn_sha256"] == hashlib.sha256(half).hexdigest()
    assert repaired[0]["torn"] == half.decode(), repaired
    after = events[events.index(repaired[0]) + 1]
    assert after["event"] == "gateway.start" and after["seq"] == repaired[0]["seq"] + 1
    sessions(fx, gw2, cur, 1)
    gw2.stop()
    r = verify(cur, check=0)
    assert verified_count(r) == len(raw_lines(cur))
    note("after the restart: %s", r.stdout.strip())


# --- the chain off, and switching it --------------------------------------------------

def test_chain_off_and_no_switch_under_one_file(fx):
    d = fx.path(fx.unique("off"))
    os.mkdir(d)
    cur = os.path.join(d, "audit.jsonl")
    gw = start(fx, {"path": cur, "chain": False})
    sessions(fx, gw, cur, 1)
    assert all("seq" not in e and "prev" not in e for e in lines_json(cur))
    assert not os.path.exists(cur + ".state")
    assert "seq" not in api(gw, "/v1/status")["audit"]

    # turning it on under the same file needs a restart
    cfg = json.loads(json.dumps(gw.config))
    cfg["audit"]["chain"] = True
    gw.write_config(cfg)
    gw.reload()
    failed = wait_for(lambda: [e for e in lines_json(cur)
                               if e["event"] == "admin.reload" and not e["ok"]], 10,
                      "the refused reload")
    assert any("audit.chain: changed while audit.path stays" in err
               for err in failed[0]["errors"]), failed
    gw.stop()
    r = verify(cur, check=1)
    assert ":1: unchained: no seq and no prev: this log was written with audit.chain off" \
        in r.stderr, r.stderr

    # one writer per chained file: a second gateway on it refuses to start
    chained = os.path.join(d, "chained.jsonl")
    gw = start(fx, {"path": chained})
    other = start(fx, {"path": chained}, wait=False)
    assert other.wait(20) == 1
    assert "in use by another writer" in other.output(), other.output()
    gw.stop()
    verify(chained, check=0)


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
