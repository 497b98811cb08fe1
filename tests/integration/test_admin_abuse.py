"""The admin API under abuse (security review, issue 12, findings 2 and 6).

Finding 2: idle and slowloris connections must not wedge the admin API.
Hundreds of connections are held open (silent, or trickling a byte of a
request head every 0.5 s) against the admin listener; while they are held,
a caller from another source address still gets /healthz answered (the
per-source limit), and once they are gone /healthz answers within 1 s
(the API used to stay wedged for good after its connection limit). A
trickling connection is cut at the exchange deadline although it never
falls silent.

Finding 6: refused admin requests (missing or wrong token) are audited as
admin.denied, rate-limited per source, and counted in /metrics; device ids
in paths are percent-decoded and checked against the claim grammar.

Clients are raw sockets bound to loopback source addresses (127.0.0.0/8
is all loopback on Linux), so "another source" needs no network setup."""

import errno
import json
import os
import re
import secrets
import select
import socket
import sys
import time

from harness import SLOW, Fixture, HoldUpstream, deadline, free_port, port_open, \
    refused_by_gateway, run, tls_client, wait_for

# the admin server's limits (gateway/admin/admin.c, docs/admin-api.md)
MAX_CONNECTIONS = 64
MAX_PER_SOURCE = 8
EXCHANGE_S = 10

# figures measured by the tests, printed at the end
FIGURES = []


def setup():
    fx = Fixture()
    fx.token = secrets.token_hex(24)
    fx.token_file = fx.path("admin.token")
    with open(fx.token_file, "w") as f:
        f.write(fx.token + "\n")
    os.chmod(fx.token_file, 0o600)
    return fx


def teardown(fx):
    fx.close()
    if FIGURES:
        print("# figures:")
        for what, value in FIGURES:
            print("#   %-62s %s" % (what, value))
        sys.stdout.flush()


def figure(what, value):
    FIGURES.append((what, value))
    print("# %s: %s" % (what, value), flush=True)


def new_gateway(fx, services=None, rules=None):
    port = free_port()
    cfg = fx.config(services or [{"name": "db", "upstream": ["127.0.0.1:%d" % free_port()]}],
                    rules or [],
                    admin={"listen": "127.0.0.1:%d" % port, "token_file": fx.token_file})
    gw = fx.gateway(cfg)
    gw.admin_port = port
    gw.token = fx.token
    wait_for(lambda: port_open(port), 10, "the admin listener")
    return gw


# --- raw clients -------------------------------------------------------------------------

def request(port, path, source="127.0.0.1", timeout=10.0, token=None, method="GET",
            headers=None, body=None):
    """One HTTP/1.1 request from source; returns (status, body) or None when no
    reply came within timeout. path is sent as is (escapes intact)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout * SLOW)
    try:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        head = "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % (method, path)
        if token is not None:
            head += "Authorization: Bearer %s\r\n" % token
        for k, v in (headers or {}).items():
            head += "%s: %s\r\n" % (k, v)
        if body is not None:
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        s.sendall((head + "\r\n").encode() + (body or b""))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        return None
    except OSError:
        return None
    finally:
        s.close()
    m = re.match(rb"HTTP/1\.1 (\d{3})", data)
    if not m:
        return None
    return int(m.group(1)), data.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


def api(gw, method, path, body=None, token="default", source="127.0.0.1"):
    """(status, JSON body) of one admin call; token "default" = the fixture's."""
    reply = request(gw.admin_port, path, source, token=gw.token if token == "default" else token,
                    method=method, body=json.dumps(body).encode() if body is not None else None)
    assert reply is not None, "no reply to %s %s" % (method, path)
    status, text = reply
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def healthz_after(port, t0, source="127.0.0.1", give_up=15.0):
    """Seconds from t0 until /healthz answers 200, or None when it did not
    within give_up s. Asks again when refused: a connection that comes in
    the same instant as the end of its address's others may be counted
    against the per-source limit before the server has read those ends."""
    end = t0 + give_up * SLOW
    while time.monotonic() < end:
        reply = request(port, "/healthz", source,
                        timeout=max(0.1, (end - time.monotonic()) / SLOW))
        if reply is not None and reply[0] == 200:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def open_many(port, n, sources):
    """n non-blocking connections to port, spread over sources (round robin);
    returns the sockets (connect may still be in progress)."""
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((sources[i % len(sources)], 0))
        rc = s.connect_ex(("127.0.0.1", port))
        assert rc in (0, errno.EINPROGRESS), os.strerror(rc)
        socks.append(s)
    return socks


def closed_by_server(s):
    """True when the server has closed s (EOF or reset), without blocking."""
    try:
        r, _, _ = select.select([s], [], [], 0)
        if not r:
            return False
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def split(socks, settle=2.0):
    """Waits until the server has either closed a connection or let it be
    for `settle` s after the last close; returns (held, closed)."""
    held, closed = list(socks), []
    last = time.monotonic()
    end = deadline(30)
    while time.monotonic() - last < settle * SLOW and time.monotonic() < end:
        for s in list(held):
            if closed_by_server(s):
                held.remove(s)
                closed.append(s)
                last = time.monotonic()
        time.sleep(0.05)
    return held, closed


def close_all(socks):
    for s in socks:
        s.close()


HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "


def trickle(socks, until, start, step=0.5):
    """Slowloris: every `step` s, one more byte of a never-ending header on
    every open connection, until until() is true or every connection was
    cut. Returns {socket: seconds from start (when they were opened) until
    the server cut it}."""
    sent = {s: 0 for s in socks}
    cut = {}
    while len(cut) < len(socks) and not until():
        for s in socks:
            if s in cut:
                continue
            if closed_by_server(s):
                cut[s] = time.monotonic() - start
                continue
            try:
                n = sent[s]
                s.send(HEAD if n == 0 else b"a")
                sent[s] = n + 1
            except BlockingIOError:
                pass  # connect still in progress
            except OSError:
                cut[s] = time.monotonic() - start
        time.sleep(step)
    return cut


# --- finding 2: connection limits ---------------------------------------------------------

def test_idle_flood_from_one_source(fx):
    """200 silent connections from one address: all but MAX_PER_SOURCE are
    refused at once; another address is served while they are held; once
    they go, /healthz answers within 1 s."""
    gw = new_gateway(fx)
    port = gw.admin_port
    socks = open_many(port, 200, ["127.0.0.1"])
    held, closed = split(socks)
    figure("idle flood, one source: connections held / refused", "%d / %d"
           % (len(held), len(closed)))
    assert len(held) == MAX_PER_SOURCE, (len(held), len(closed))
    t = time.monotonic()
    reply = request(port, "/healthz", "127.0.0.2", timeout=5)
    assert reply is not None and reply[0] == 200, "another source is not served: %r" % (reply,)
    figure("idle flood, one source: /healthz from 127.0.0.2 while held",
           "%.0f ms" % ((time.monotonic() - t) * 1000))
    close_all(socks)
    t0 = time.monotonic()
    took = healthz_after(port, t0)
    figure("idle flood, one source: /healthz after they go",
           "%.0f ms" % (took * 1000) if took is not None else "no answer in 15 s")
    assert took is not None and took <= 1.0 * SLOW, took
    assert gw.alive()
    gw.stop()


def wait_cut(socks, give_up):
    """Waits (silently) until the server has closed every socket; returns
    {socket: seconds from now until it was closed}."""
    start = time.monotonic()
    cut = {}
    while len(cut) < len(socks) and time.monotonic() - start < give_up:
        for s in socks:
            if s not in cut and closed_by_server(s):
                cut[s] = time.monotonic() - start
        time.sleep(0.02)
    return cut


def test_idle_at_the_connection_limit(fx):
    """MAX_CONNECTIONS silent connections from 8 addresses fill the limit
    until the server's idle timeout cuts them (in one batch: the case that
    wedged the API for good); /healthz answers within 1 s of the cut. Then
    200 from 25 addresses, closed by the client: the same."""
    gw = new_gateway(fx)
    port = gw.admin_port
    sources = ["127.0.3.%d" % i for i in range(1, MAX_CONNECTIONS // MAX_PER_SOURCE + 1)]
    socks = open_many(port, MAX_CONNECTIONS, sources)
    cut = wait_cut(socks, 3 * EXCHANGE_S * SLOW)
    t0 = time.monotonic()
    figure("idle, %d connections from 8 sources: cut by the server" % MAX_CONNECTIONS,
           "%d after %.1f-%.1f s" % (len(cut), min(cut.values()), max(cut.values()))
           if cut else "none in %d s" % (3 * EXCHANGE_S))
    assert len(cut) == len(socks), "%d of %d cut" % (len(cut), len(socks))
    took = healthz_after(port, t0)
    figure("idle, 8 sources: /healthz after the server cut them",
           "%.0f ms" % (took * 1000) if took is not None else "no answer in 15 s")
    close_all(socks)
    assert took is not None and took <= 1.0 * SLOW, took

    sources = ["127.0.1.%d" % i for i in range(1, 26)]
    socks = open_many(port, 200, sources)
    held, closed = split(socks)
    figure("idle flood, 25 sources: connections held by the server or queued / refused",
           "%d / %d" % (len(held), len(closed)))
    assert len(held) >= MAX_CONNECTIONS, (len(held), len(closed))
    close_all(socks)
    t0 = time.monotonic()
    took = healthz_after(port, t0)
    figure("idle flood, 25 sources: /healthz after the client closed them",
           "%.0f ms" % (took * 1000) if took is not None else "no answer in 15 s")
    assert took is not None and took <= 1.0 * SLOW, took
    gw.stop()


def test_slowloris_from_one_source(fx):
    """200 trickling connections from one address: MAX_PER_SOURCE held, the
    rest refused, another address served meanwhile; the held ones are cut at
    the exchange deadline although they never fall silent; /healthz answers
    within 1 s of the last cut."""
    gw = new_gateway(fx)
    port = gw.admin_port
    start = time.monotonic()
    socks = open_many(port, 200, ["127.0.0.1"])
    held, closed = split(socks)
    assert len(held) == MAX_PER_SOURCE, (len(held), len(closed))
    other = []

    def served_meanwhile():
        if not other:
            reply = request(port, "/healthz", "127.0.0.2", timeout=5)
            other.append(reply)
        return False
    cut = trickle(held, served_meanwhile, start)
    assert other and other[0] is not None and other[0][0] == 200, other
    t0 = time.monotonic()
    assert len(cut) == len(held), "not every slowloris was cut"
    latest = max(cut.values())
    figure("slowloris, one source: held connections cut after",
           "%.1f-%.1f s" % (min(cut.values()), latest))
    # cut at the deadline (not before it), although bytes kept coming
    assert min(cut.values()) >= EXCHANGE_S - 1, cut.values()
    assert latest <= (EXCHANGE_S + 3) * SLOW, cut.values()
    took = healthz_after(port, t0)
    figure("slowloris, one source: /healthz after the last cut",
           "%.0f ms" % (took * 1000) if took is not None else "no answer in 15 s")
    assert took is not None and took <= 1.0 * SLOW, took
    close_all(socks)
    gw.stop()


def test_slowloris_at_the_connection_limit(fx):
    """MAX_CONNECTIONS trickling connections from 8 addresses fill the
    limit; each is cut at the exchange deadline, and /healthz answers within
    1 s of the last cut."""
    gw = new_gateway(fx)
    port = gw.admin_port
    sources = ["127.0.2.%d" % i for i in range(1, MAX_CONNECTIONS // MAX_PER_SOURCE + 1)]
    start = time.monotonic()
    socks = open_many(port, MAX_CONNECTIONS, sources)
    # give up after 3 deadlines: without the cut they would trickle forever
    cut = trickle(socks, lambda: time.monotonic() - start > 3 * EXCHANGE_S * SLOW, start)
    t0 = time.monotonic()
    figure("slowloris, %d connections from 8 sources: cut" % MAX_CONNECTIONS,
           "%d after %.1f-%.1f s" % (len(cut), min(cut.values()), max(cut.values()))
           if cut else "none in %d s" % (3 * EXCHANGE_S))
    assert len(cut) == len(socks), "%d of %d cut" % (len(cut), len(socks))
    assert max(cut.values()) <= (EXCHANGE_S + 3) * SLOW, sorted(cut.values())
    took = healthz_after(port, t0)
    figure("slowloris, 8 sources: /healthz after the last cut",
           "%.0f ms" % (took * 1000) if took is not None else "no answer in 15 s")
    assert took is not None and took <= 1.0 * SLOW, took
    close_all(socks)
    gw.stop()


def test_a_slow_request_still_completes(fx):
    """The deadline is for a whole exchange, not per byte: a request sent in
    pieces over 2 s is answered."""
    gw = new_gateway(fx)
    port = gw.admin_port
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as s:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n",
                      b"\r\n"):
            s.sendall(piece)
            time.sleep(0.5)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    gw.stop()

# --- finding 6: refused requests leave a trace; ids in paths -----------------------------

def metric(gw, name, **labels):
    status, text = api(gw, "GET", "/metrics", source="127.0.0.250")
    assert status == 200, text
    want = name + ("{%s}" % ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
                   if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return int(line.split()[-1])
    raise AssertionError("no %s in /metrics" % want)


def test_denied_requests_are_audited_and_counted(fx):
    gw = new_gateway(fx)
    assert metric(gw, "certgate_admin_denied_total", reason="missing token") == 0
    # one refusal from each of three addresses: each written at once
    assert api(gw, "GET", "/v1/status", token=None, source="127.0.4.1")[0] == 401
    assert api(gw, "POST", "/v1/locks", {"user": "alice@example.com"},
               token="wrong-token-0123456789", source="127.0.4.2")[0] == 401
    r = request(gw.admin_port, "/v1/reload", "127.0.4.3", method="POST",
                headers={"Authorization": "Basic " + fx.token})
    assert r is not None and r[0] == 401, r
    # a hostile path is shown escaped, never dropped
    assert api(gw, "PUT", "/v1/devices/%FF\x01/trust", {"level": "low"}, token=None,
               source="127.0.4.4")[0] == 401
    for source, method, path, reason in (
            ("127.0.4.1", "GET", "/v1/status", "missing token"),
            ("127.0.4.2", "POST", "/v1/locks", "wrong token"),
            ("127.0.4.3", "POST", "/v1/reload", "wrong token"),
            ("127.0.4.4", "PUT", "/v1/devices/%FF%01/trust", "missing token")):
        ev = gw.wait_event("admin.denied", 5, method=method, path=path)
        assert ev["by"].startswith(source + ":"), ev
        assert ev["reason"] == reason and ev["suppressed"] == 0, ev
    # nothing was done, and the token never shows
    assert not gw.events("admin.lock") and not gw.events("admin.reload")
    with open(gw.audit_path) as f:
        assert fx.token not in f.read()
    # the open paths need no token, and a wrong one there is no refusal
    assert api(gw, "GET", "/healthz", token="wrong-token-0123456789")[0] == 200
    assert api(gw, "GET", "/readyz", token=None)[0] == 200
    assert len(gw.events("admin.denied")) == 4
    assert metric(gw, "certgate_admin_denied_total", reason="missing token") == 2
    assert metric(gw, "certgate_admin_denied_total", reason="wrong token") == 2

    # 60 refusals from one address as fast as they come: at most one line a
    # second, and the lines' counts add up to every refusal
    t0 = time.monotonic()
    for i in range(60):
        assert api(gw, "GET", "/v1/sessions", token="wrong-%02d-0123456789" % i,
                   source="127.0.4.9")[0] == 401
    took = time.monotonic() - t0

    def all_told():
        evs = gw.events("admin.denied", method="GET", path="/v1/sessions")
        return evs if sum(1 + e["suppressed"] for e in evs) >= 60 else None
    evs = wait_for(all_told, 5, "the suppressed refusals to be written")
    assert sum(1 + e["suppressed"] for e in evs) == 60, evs
    assert len(evs) <= took + 2, (len(evs), took)
    stamps = [time.mktime(time.strptime(e["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
              + int(e["ts"][20:23]) / 1000 for e in evs]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(g >= 0.9 for g in gaps), gaps
    figure("60 refused requests from one address in %.2f s: audit lines" % took,
           "%d (suppressed %s)" % (len(evs), [e["suppressed"] for e in evs]))
    assert metric(gw, "certgate_admin_denied_total", reason="wrong token") == 62
    gw.stop()


def test_device_ids_in_paths(fx):
    upstream = HoldUpstream()
    try:
        gw = new_gateway(fx, services=[{"name": "db", "sni": ["localhost"],
                                        "upstream": ["127.0.0.1:%d" % upstream.port]}],
                         rules=[{"name": "all", "effect": "allow", "services": ["*"],
                                 "users": ["*"]}])
        # not UTF-8, NUL, control characters, bad escapes, too long: 400, nothing set
        for raw, why in (("%FF", "device id: expected"), ("a%00b", "device id: expected"),
                         ("a%0Ab", "device id: expected"), ("%C2%85", "device id: expected"),
                         ("a%G1", "invalid percent-encoding"), ("a%2", "invalid percent"),
                         ("x" * 1025, "device id: expected")):
            for method in ("PUT", "GET", "DELETE"):
                status, body = api(gw, method, "/v1/devices/%s/trust" % raw, {"level": "low"}
                                   if method == "PUT" else None)
                assert status == 400 and why in body["error"], (raw, method, status, body)
        assert not gw.events("admin.trust")
        status, body = api(gw, "POST", "/v1/locks", {"device": "a\u0001b"})
        assert status == 400 and "device" in body["error"], body
        status, body = api(gw, "POST", "/v1/locks", {"user": "bob\u0085@example.com"})
        assert status == 400 and "user" in body["error"], body
        assert not gw.events("admin.lock")
        # the longest id there can be, and UTF-8 text
        for raw, device in (("y" * 1024, "y" * 1024), ("Zo%C3%AB", "Zo\u00eb")):
            status, body = api(gw, "PUT", "/v1/devices/%s/trust" % raw, {"level": "medium"})
            assert status == 200 and body["device"] == device, (status, body)
            assert gw.wait_event("admin.trust", 5, device=device)["level"] == "medium"
        # "/" in an id, as %2F: set, read, applied to the certificate, cleared
        cert = fx.ca.issue("rack", "rack@example.com", device_id="rack/7")
        status, body = api(gw, "PUT", "/v1/devices/rack%2F7/trust", {"level": "always_deny"})
        assert status == 200 and body["device"] == "rack/7", (status, body)
        assert gw.wait_event("admin.trust", 5, device="rack/7")["level"] == "always_deny"
        status, body = api(gw, "GET", "/v1/devices/rack%2f7/trust")
        assert status == 200 and body["level"] == "always_deny", body
        assert api(gw, "GET", "/v1/devices/rack/7/trust")[0] == 404  # two segments
        assert refused_by_gateway(tls_client(gw.ports()[0], cert, fx.ca.crt))
        ev = gw.wait_event("authz.denied", 5, device_id="rack/7")
        assert ev["device_trust"] == "always_deny", ev
        status, body = api(gw, "DELETE", "/v1/devices/rack%2F7/trust")
        assert status == 200 and body["device"] == "rack/7", body
        sock = tls_client(gw.ports()[0], cert, fx.ca.crt)
        gw.wait_event("session.start", 5, device_id="rack/7")
        sock.close()
        # escaped literal segments route like plain ones; the token is still needed
        assert api(gw, "GET", "/v1/%73tatus")[0] == 200
        assert api(gw, "GET", "/v1/%73tatus", token=None)[0] == 401
        assert api(gw, "GET", "/%68ealthz", token=None)[0] == 200
        assert api(gw, "GET", "/v1%2Fstatus")[0] == 404
        gw.stop()
    finally:
        upstream.stop()


# --- error replies quote what was asked, cut between characters (commit 27705c3) -------

def test_error_replies_never_cut_a_character(fx):
    """A 404 or 400 that quotes a long non-ASCII id or key is cut to fit its
    512-byte message between two characters: the reply is its 404/400 with a
    JSON body. Cut inside one, json_pack refused it and the reply was 500
    {"error": "no reply"}. Every offset of the cut inside a 2- and a 4-byte
    character is tried."""
    gw = new_gateway(fx)
    ids = ["\u00e9" * 511, "x" + "\u00e9" * 510] + \
        [pad + "\U0001f600" * 255 for pad in ("", "x", "xx", "xxx")]
    for rid in ids:
        escaped = "".join("%%%02X" % b for b in rid.encode())
        for method, path, said in (
                ("GET", "/v1/access-requests/%s", "no access request "),
                ("DELETE", "/v1/locks/%s", "no lock "),
                ("DELETE", "/v1/sessions/%s", "no live session "),
                ("GET", "/v1/devices/%s/trust", "no trust feed value for device ")):
            status, body = api(gw, method, path % escaped)
            assert status == 404, (method, path, len(rid.encode()), status, body)
            assert isinstance(body, dict) and body["error"].startswith(said), body
            quoted = body["error"][len(said):]
            # a whole-character prefix of the id, and the message within 511 bytes
            assert len(quoted) >= 100 and rid.startswith(quoted), (method, path, body)
            assert len(body["error"].encode()) <= 511, body
    key = "a" + "\u00e9" * 300
    for method, path in (("POST", "/v1/locks"), ("POST", "/v1/access-requests"),
                         ("PUT", "/v1/devices/d1/trust"),
                         ("POST", "/v1/access-requests/req-1/approve")):
        status, body = api(gw, method, path, {key: 1})
        assert status == 400, (method, path, status, body)
        assert body["error"].startswith('unknown field "a\u00e9\u00e9'), body
        assert "\ufffd" not in body["error"], body
    assert gw.alive()
    gw.stop()


# --- the admin API answers programs, not web pages (commit 211bae0) --------------------

def exchange(port, method, path, headers, body=None, version="HTTP/1.1"):
    """One request with exactly these header lines (no Host unless given);
    returns (status, JSON body or text)."""
    head = "%s %s %s\r\n" % (method, path, version)
    head += "".join("%s: %s\r\n" % kv for kv in headers)
    head += "Connection: close\r\n"
    if body is not None:
        head += "Content-Length: %d\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as s:
        s.sendall((head + "\r\n").encode() + (body or b""))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    assert m, data[:200]
    text = data.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
    try:
        return int(m.group(1)), json.loads(text)
    except ValueError:
        return int(m.group(1)), text


def test_requests_made_by_web_pages_are_refused(fx):
    """A browser adds Origin (every cross-site POST) or Sec-Fetch-Site to
    what a page makes it send: refused (403) even with the right token, and
    nothing done. Sec-Fetch-Site: none (typed in the address bar) is fine."""
    gw = new_gateway(fx)
    port = gw.admin_port
    auth = ("Authorization", "Bearer " + fx.token)
    host = ("Host", "127.0.0.1:%d" % port)
    lock = json.dumps({"user": "ceo@example.com"}).encode()
    for extra in ([("Origin", "http://evil.example")], [("Origin", "null")],
                  [("Sec-Fetch-Site", "cross-site")], [("Sec-Fetch-Site", "same-site")],
                  [("Sec-Fetch-Site", "same-origin")],
                  [("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site"),
                   ("Sec-Fetch-Mode", "no-cors")]):
        status, body = exchange(port, "GET", "/v1/status", [host, auth] + extra)
        assert status == 403, (extra, status, body)
        assert "requests made by web pages" in body["error"], body
        status, body = exchange(port, "POST", "/v1/locks",
                                [host, auth, ("Content-Type", "text/plain;charset=UTF-8")]
                                + extra, lock)
        assert status == 403, (extra, status, body)
    assert not gw.events("admin.lock")
    assert api(gw, "GET", "/v1/locks") == (200, {"locks": []})
    for site in ("none", "None"):
        status, body = exchange(port, "GET", "/v1/status", [host, auth,
                                                            ("Sec-Fetch-Site", site)])
        assert status == 200 and "counts" in body, (site, status, body)
    # with a token the Host is not looked at: a rebound name has no token
    status, body = exchange(port, "GET", "/v1/status", [("Host", "rebind.evil.example"), auth])
    assert status == 200, (status, body)
    # every refusal is audited and counted, like a wrong token
    status, metrics = exchange(port, "GET", "/metrics", [host, auth])
    assert 'certgate_admin_denied_total{reason="web page"} 12' in metrics, metrics
    lines = wait_for(lambda: [e for e in gw.events("admin.denied") if e["reason"] == "web page"],
                     10, "admin.denied lines for the web pages")
    assert lines[0]["by"].startswith("127.0.0.1:") and lines[0]["path"] == "/v1/status", lines
    assert sum(1 + e["suppressed"] for e in lines) <= 12, lines
    gw.stop()


def test_rebound_host_refused_without_token(fx):
    """Without admin.token_file (loopback only) the Host must be an address or
    localhost: a page's own name rebound to 127.0.0.1 (DNS rebinding) is
    refused (403) and changes nothing; what a local client sends is fine."""
    port = free_port()
    cfg = fx.config([{"name": "db", "upstream": ["127.0.0.1:%d" % free_port()]}], [],
                    admin={"listen": "127.0.0.1:%d" % port})
    gw = fx.gateway(cfg)
    wait_for(lambda: port_open(port), 10, "the admin listener")
    for name in ("rebind.evil.example", "rebind.evil.example:%d" % port,
                 "localhost.evil.example:%d" % port, "127.0.0.1.nip.io:%d" % port,
                 "evil:%d" % port, ""):
        status, body = exchange(port, "GET", "/v1/status", [("Host", name)])
        assert status == 403, (name, status, body)
        assert "the Host header must be an address or localhost" in body["error"], body
        status, body = exchange(port, "POST", "/v1/locks", [("Host", name), (
            "Content-Type", "application/json")], json.dumps({"user": "ceo@example.com"})
            .encode())
        assert status == 403, (name, status, body)
    for name in ("127.0.0.1:%d" % port, "127.0.0.1", "localhost:%d" % port, "localhost",
                 "LOCALHOST:%d" % port, "[::1]:%d" % port, "[::1]"):
        status, body = exchange(port, "GET", "/v1/status", [("Host", name)])
        assert status == 200 and "counts" in body, (name, status, body)
    # HTTP/1.0 without a Host: no name to rebind
    status, body = exchange(port, "GET", "/v1/status", [], version="HTTP/1.0")
    assert status == 200, (status, body)
    assert not gw.events("admin.lock")
    status, body = exchange(port, "GET", "/v1/locks", [("Host", "127.0.0.1:%d" % port)])
    assert status == 200 and body["locks"] == [], body
    # a local name does not excuse a web page
    status, body = exchange(port, "POST", "/v1/locks", [
        ("Host", "127.0.0.1:%d" % port), ("Origin", "http://127.0.0.1:%d" % port),
        ("Content-Type", "application/json")], json.dumps({"user": "ceo@example.com"}).encode())
    assert status == 403 and "web pages" in body["error"], (status, body)
    status, body = exchange(port, "POST", "/v1/locks", [("Host", "localhost:%d" % port),
                                                        ("Content-Type", "application/json")],
                            json.dumps({"user": "ceo@example.com"}).encode())
    assert status == 201, (status, body)
    status, metrics = exchange(port, "GET", "/metrics", [("Host", "127.0.0.1:%d" % port)])
    assert 'certgate_admin_denied_total{reason="host not local"} 12' in metrics, metrics
    assert 'certgate_admin_denied_total{reason="web page"} 1' in metrics, metrics
    gw.stop()


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")
             and (len(sys.argv) < 2 or any(a in k for a in sys.argv[1:]))]
    sys.exit(run(tests, setup=setup, teardown=teardown))
