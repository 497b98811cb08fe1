"""PROXY protocol v1/v2 in front of the gateway (gateway.proxy_protocol_from,
CONFIG.md; issue 6): accepted only from the listed networks, the audited
client address (and the address `sources` rules match) is the one in the
header; UNKNOWN / LOCAL keep the connection's own peer; malformed headers
are refused and audited; postgres-mode listeners take the header before the
SSLRequest. The clients here are plain sockets that write the header
themselves, then Python's ssl (or the PostgreSQL wire protocol), all on
loopback, so 127.0.0.0/8 plays the load balancer's network."""

import copy
import os
import socket
import ssl
import struct
import sys
import time

from harness import HoldUpstream, CA, SLOW, Fixture, Postgres, free_port, run

BANNER = b"upstream says hello\n"

RULES = [
    {"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"], "min_trust": "high"},
]

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
SSL_REQUEST = struct.pack("!II", 8, 80877103)
PROTOCOL_3 = 196608


def note(fmt, *args):
    print("# " + (fmt % args if args else fmt), flush=True)


# --- headers ---------------------------------------------------------------------

def v1(proto, src=None, dst=None, sport=None, dport=None):
    if proto == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n"
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def v2(cmd=1, fam=0x11, body=b""):
    """cmd 1 PROXY / 0 LOCAL; fam 0x11 TCP4, 0x21 TCP6, 0x00 UNSPEC."""
    return V2_SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src, dst, sport, dport, tlvs=b""):
    body = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
    return v2(1, 0x11, body + struct.pack("!HH", sport, dport) + tlvs)


def v2_tcp6(src, dst, sport, dport):
    body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return v2(1, 0x21, body + struct.pack("!HH", sport, dport))


def tlv(kind, value):
    return struct.pack("!BH", kind, len(value)) + value


# --- fixture ------------------------------------------------------------------------

def setup():
    fx = Fixture(with_postgres=False)
    fx.upstream = HoldUpstream(BANNER)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high")
    # postgres mode: the database trusts the "db ca" that signs minted certificates
    fx.dbca = CA(fx.path("dbca"), name="db ca")
    os.chmod(fx.dbca.dir, 0o755)
    pg_cert = fx.ca.server("pg", dns=("db.internal",), ips=("127.0.0.1",))
    fx.pg = Postgres(fx.path("pg"), pg_cert, fx.dbca.crt,
                     hba_lines=["local all all trust", "hostssl all all 127.0.0.1/32 cert"],
                     ident_lines=[""])
    fx.pg.sql("CREATE ROLE alice LOGIN")
    return fx


def teardown(fx):
    fx.upstream.stop()
    fx.close()


def echo_service(fx):
    return {"name": "echo", "sni": ["localhost"], "upstream": ["127.0.0.1:%d" % fx.upstream.port]}


def start(fx, proxy_from=("127.0.0.0/8",), services=None, rules=RULES):
    gw = {"proxy_protocol_from": list(proxy_from)}
    return fx.gateway(fx.config(services or [echo_service(fx)], copy.deepcopy(rules),
                                gateway=gw))


def ctx_for(fx, cert=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=fx.ca.crt)
    ctx.load_cert_chain((cert or fx.alice).crt, (cert or fx.alice).key)
    return ctx


def peer(sock):
    return "%s:%d" % sock.getsockname()[:2]


def read_banner(sock):
    data = b""
    while len(data) < len(BANNER):
        chunk = sock.recv(len(BANNER) - len(data))
        if not chunk:
            break
        data += chunk
    return data


def through_proxy(fx, gw, header, pieces=1, port=None):
    """Connects, writes the header (in `pieces` writes), then TLS with
    alice's certificate; returns (banner or the error, real peer address)."""
    raw = socket.create_connection(("127.0.0.1", port or gw.ports()[0]), timeout=10 * SLOW)
    me = peer(raw)
    step = max(1, -(-len(header) // pieces))
    for i in range(0, len(header), step):
        raw.sendall(header[i:i + step])
        if pieces > 1:
            time.sleep(0.05)  # separate reads on the gateway's side
    try:
        sock = ctx_for(fx).wrap_socket(raw, server_hostname="localhost")
        data = read_banner(sock)
        sock.close()
    except (ssl.SSLError, OSError) as e:
        raw.close()
        data = repr(e)
    return data, me


def header_then_hello_in_one_write(fx, gw, header):
    """The header and the ClientHello in one segment (a proxy that forwards
    everything it has at once): the bytes after the header must go on to
    TLS."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx_for(fx).wrap_bio(inc, out, server_hostname="localhost")
    raw = socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=10 * SLOW)
    me = peer(raw)
    first = True
    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = out.read()
                raw.sendall(header + data if first else data)
                first = False
                chunk = raw.recv(65536)
                if not chunk:
                    return b"EOF during the handshake", me
                inc.write(chunk)
        raw.sendall(out.read())
        got = b""
        while len(got) < len(BANNER):
            try:
                got += obj.read(64)
            except ssl.SSLWantReadError:
                chunk = raw.recv(65536)
                if not chunk:
                    break
                inc.write(chunk)
        return got, me
    finally:
        raw.close()


def expect_closed(sock):
    try:
        data = sock.recv(64)
    except ConnectionResetError:
        data = b""
    finally:
        sock.close()
    assert data == b"", data


# --- accepted headers ------------------------------------------------------------------

def test_v1_tcp4_header_is_the_audited_client(fx):
    gw = start(fx)
    port = gw.ports()[0]
    cases = [
        ("one write", lambda h: through_proxy(fx, gw, h), 40000),
        ("three writes", lambda h: through_proxy(fx, gw, h, pieces=3), 40001),
        ("header and ClientHello in one write",
         lambda h: header_then_hello_in_one_write(fx, gw, h), 40002),
    ]
    for what, connect, sport in cases:
        data, me = connect(v1("TCP4", "203.0.113.7", "127.0.0.1", sport, port))
        assert data == BANNER, (what, data, gw.events("tls.rejected"))
        start_ev = gw.wait_event("session.start", client="203.0.113.7:%d" % sport)
        assert start_ev["user"] == "alice@example.com", start_ev
        assert not gw.events(client=me), (what, gw.events(client=me))
        gw.wait_event("session.end", session=start_ev["session"])
    gw.stop()


def test_v2_headers_are_the_audited_client(fx):
    gw = start(fx)
    port = gw.ports()[0]
    data, _ = through_proxy(fx, gw, v2_tcp6("2001:db8::1", "2001:db8::2", 40010, port))
    assert data == BANNER, (data, gw.events("tls.rejected"))
    ev = gw.wait_event("session.start", client="[2001:db8::1]:40010")
    assert ev["service"] == "echo", ev
    # TCP4 with TLVs after the addresses (authority, a NOOP, a unique id)
    tlvs = tlv(0x02, b"lb.example") + tlv(0x04, b"") + tlv(0x05, b"\x01\x02\x03\x04")
    data, _ = through_proxy(fx, gw, v2_tcp4("198.51.100.23", "127.0.0.1", 40011, port, tlvs),
                            pieces=2)
    assert data == BANNER, (data, gw.events("tls.rejected"))
    gw.wait_event("session.start", client="198.51.100.23:40011")
    gw.stop()


def test_unknown_and_local_keep_the_peer_address(fx):
    gw = start(fx)
    for what, header in (("v1 UNKNOWN", v1("UNKNOWN")),
                         ("v1 UNKNOWN with addresses", b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"),
                         ("v2 LOCAL", v2(cmd=0, fam=0x00)),
                         ("v2 LOCAL with an address block", v2(cmd=0, fam=0x11, body=bytes(12))),
                         ("v2 PROXY UNSPEC", v2(cmd=1, fam=0x00))):
        data, me = through_proxy(fx, gw, header)
        assert data == BANNER, (what, data, gw.events("tls.rejected"))
        ev = gw.wait_event("session.start", client=me)
        assert ev["client"].startswith("127.0.0.1:"), (what, ev)
    gw.stop()


# --- refused headers ---------------------------------------------------------------------

MALFORMED = [
    ("v1 missing the ports", b"PROXY TCP4 203.0.113.7 127.0.0.1\r\n"),
    ("v1 bad address", b"PROXY TCP4 203.0.113.300 127.0.0.1 40000 443\r\n"),
    ("v1 port out of range", b"PROXY TCP4 203.0.113.7 127.0.0.1 70000 443\r\n"),
    ("v1 leading zero port", b"PROXY TCP4 203.0.113.7 127.0.0.1 040000 443\r\n"),
    ("v1 double space", b"PROXY TCP4  203.0.113.7 127.0.0.1 40000 443\r\n"),
    ("v1 IPv6 address as TCP4", b"PROXY TCP4 2001:db8::1 127.0.0.1 40000 443\r\n"),
    ("v1 unknown protocol", b"PROXY UDP4 203.0.113.7 127.0.0.1 40000 443\r\n"),
    ("v1 LF without CR", b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\n"),
    ("v1 too long", b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n"),
    ("v2 bad version", V2_SIG + b"\x31\x11\x00\x0c" + bytes(12)),
    ("v2 bad command", V2_SIG + b"\x22\x11\x00\x0c" + bytes(12)),
    ("v2 UDP", V2_SIG + b"\x21\x12\x00\x0c" + bytes(12)),
    ("v2 address block too short", V2_SIG + b"\x21\x11\x00\x08" + bytes(8)),
    ("v2 broken TLV", v2(1, 0x11, bytes(12) + b"\x02\x00\x09abc")),
    ("v2 over the size limit", V2_SIG + b"\x21\x11\xff\xff"),
    ("TLS with no header from a proxy network", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    ("not a header at all", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
]


def test_malformed_headers_are_refused(fx):
    gw = start(fx)
    for what, header in MALFORMED:
        sock = socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=10 * SLOW)
        me = peer(sock)
        sock.sendall(header)
        expect_closed(sock)
        ev = gw.wait_event("tls.rejected", client=me)  # the real peer: no address was taken
        assert ev["reason"] == "invalid proxy protocol header", (what, ev)
        assert ev.get("detail"), (what, ev)
        note("%-40s -> %s", what, ev["detail"])
    assert not gw.events("session.start")
    # a partial header is not judged early: it waits for more, up to the
    # handshake timeout like any slow client
    data, _ = through_proxy(fx, gw, v1("TCP4", "203.0.113.9", "127.0.0.1", 40020, 443),
                            pieces=8)
    assert data == BANNER, data
    gw.stop()


def test_header_from_unlisted_network_is_refused(fx):
    gw = start(fx, proxy_from=("10.0.0.0/8",))  # loopback is not a proxy here
    header = v1("TCP4", "203.0.113.7", "127.0.0.1", 40030, gw.ports()[0])
    sock = socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=10 * SLOW)
    me = peer(sock)
    sock.sendall(header)
    expect_closed(sock)
    ev = gw.wait_event("tls.rejected", client=me)
    assert ev["reason"].startswith("proxy protocol header from an address not in"), ev
    assert not gw.events(client="203.0.113.7:40030")
    # a plain TLS client from the same address is served, under its own address
    raw = socket.create_connection(("127.0.0.1", gw.ports()[0]), timeout=10 * SLOW)
    me = peer(raw)
    sock = ctx_for(fx).wrap_socket(raw, server_hostname="localhost")
    assert read_banner(sock) == BANNER
    sock.close()
    gw.wait_event("session.start", client=me)
    gw.stop()


# --- policy sees the original address ------------------------------------------------------

def test_sources_rule_matches_the_header_address(fx):
    rules = [{"name": "lb-net", "effect": "allow", "services": ["echo"], "groups": ["dba"],
              "sources": ["203.0.113.0/24"]}]
    gw = start(fx, rules=rules)
    port = gw.ports()[0]
    data, _ = through_proxy(fx, gw, v1("TCP4", "203.0.113.7", "127.0.0.1", 40040, port))
    assert data == BANNER, (data, gw.events("authz.denied"))
    ev = gw.wait_event("session.start", client="203.0.113.7:40040")
    assert ev["rule"] == "lb-net", ev
    # the real peer (127.0.0.1) is not in sources: UNKNOWN keeps it, and is denied
    data, me = through_proxy(fx, gw, v1("UNKNOWN"))
    assert data != BANNER, data
    denied = gw.wait_event("authz.denied", client=me)
    assert denied["rule"] == "default-deny", denied
    # another original address, outside the rule's network
    data, _ = through_proxy(fx, gw, v2_tcp4("198.51.100.9", "127.0.0.1", 40041, port))
    assert data != BANNER, data
    denied = gw.wait_event("authz.denied", client="198.51.100.9:40041")
    assert denied["rule"] == "default-deny", denied
    assert len(gw.events("session.start")) == 1
    gw.stop()


# --- postgres mode -------------------------------------------------------------------------

def startup_message(user, database):
    body = struct.pack("!I", PROTOCOL_3)
    for k, v in (("user", user), ("database", database)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def read_message(sock):
    head = b""
    while len(head) < 5:
        chunk = sock.recv(5 - len(head))
        if not chunk:
            return None
        head += chunk
    n = struct.unpack("!I", head[1:])[0] - 4
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return head[:1], body


def read_until(sock, kinds):
    msgs = []
    while True:
        m = read_message(sock)
        if m is None:
            return msgs
        msgs.append(m)
        if m[0] in kinds:
            return msgs


def postgres_mode(fx, pg_port):
    """A postgres-mode service on its own listener, and a rule admitting
    alice as her local part from the headers' 203.0.113.0/24 only."""
    svc = {"name": "billing-db", "listen": "127.0.0.1:%d" % pg_port, "mode": "postgres",
           "upstream": ["127.0.0.1:%d" % fx.pg.port],
           "upstream_tls": {"ca": fx.ca.crt, "server_name": "db.internal",
                            "client_ca_cert": fx.dbca.crt, "client_ca_key": fx.dbca.key}}
    rules = [{"name": "self", "effect": "allow", "services": ["billing-db"],
              "db_users": ["{user.local}"], "db_names": ["postgres"],
              "sources": ["203.0.113.0/24"]}]
    return svc, rules


def test_postgres_mode_listener_with_proxy_header(fx):
    pg_port = free_port()
    svc, rules = postgres_mode(fx, pg_port)
    gw = start(fx, services=[svc], rules=rules)
    for what, header, client, together in (
            ("v1, then SSLRequest", v1("TCP4", "203.0.113.7", "127.0.0.1", 40050, pg_port),
             "203.0.113.7:40050", False),
            ("v2 and SSLRequest in one write",
             v2_tcp4("203.0.113.8", "127.0.0.1", 40051, pg_port), "203.0.113.8:40051", True)):
        raw = socket.create_connection(("127.0.0.1", pg_port), timeout=10 * SLOW)
        if together:
            raw.sendall(header + SSL_REQUEST)
        else:
            raw.sendall(header)
            time.sleep(0.05)
            raw.sendall(SSL_REQUEST)
        assert raw.recv(1) == b"S", what
        tls = ctx_for(fx).wrap_socket(raw, server_hostname="localhost")
        tls.sendall(startup_message("alice", "postgres"))
        msgs = read_until(tls, (b"Z", b"E"))
        assert msgs and msgs[-1][0] == b"Z", (what, msgs[-3:], gw.events("authz.denied"))
        body = b"select inet_client_addr() is not null\0"
        tls.sendall(b"Q" + struct.pack("!I", len(body) + 4) + body)
        msgs = read_until(tls, (b"Z", b"E"))
        assert [m for m in msgs if m[0] == b"D"], (what, msgs)
        tls.sendall(b"X\0\0\0\4")
        tls.close()
        ev = gw.wait_event("session.start", client=client)
        assert ev["db_user"] == "alice" and ev["db_name"] == "postgres", ev
        assert ev["rule"] == "self", ev
        gw.wait_event("session.end", session=ev["session"])
    # without the header's address the sources condition fails
    raw = socket.create_connection(("127.0.0.1", pg_port), timeout=10 * SLOW)
    me = peer(raw)
    raw.sendall(v1("UNKNOWN") + SSL_REQUEST)
    assert raw.recv(1) == b"S"
    tls = ctx_for(fx).wrap_socket(raw, server_hostname="localhost")
    tls.sendall(startup_message("alice", "postgres"))
    msgs = read_until(tls, (b"Z", b"E"))
    tls.close()
    assert msgs and msgs[-1][0] == b"E", msgs
    denied = gw.wait_event("authz.denied", client=me)
    assert denied["rule"] == "default-deny", denied
    gw.stop()


def test_postgres_mode_header_and_direct_tls_hello_in_one_write(fx):
    """A balancer that forwards all it has at once: the PROXY header and
    PostgreSQL 17's direct-TLS ClientHello (ALPN "postgresql") in one
    write, together longer than the header buffer (536 bytes). All of the
    ClientHello must reach the handshake (what the 536-byte buffer did not
    hold was dropped: the handshake timed out)."""
    pg_port = free_port()
    svc, rules = postgres_mode(fx, pg_port)
    gw = fx.gateway(fx.config([svc], rules, gateway={
        "proxy_protocol_from": ["127.0.0.2/32"], "handshake_timeout": "2s"}))
    for what, header, client in (
            ("v1", v1("TCP4", "203.0.113.7", "127.0.0.1", 40060, pg_port), "203.0.113.7:40060"),
            ("v2", v2_tcp4("203.0.113.8", "127.0.0.1", 40061, pg_port), "203.0.113.8:40061")):
        ctx = ctx_for(fx)
        ctx.set_alpn_protocols(["postgresql", "x-padding-" + "p" * 100])
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        raw = socket.socket()
        raw.settimeout(10 * SLOW)
        raw.bind(("127.0.0.2", 0))
        raw.connect(("127.0.0.1", pg_port))
        first = True
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    data = out.read()
                    if first:
                        assert len(header + data) > 536, len(header + data)
                        data = header + data
                        first = False
                    if data:
                        raw.sendall(data)
                    chunk = raw.recv(65536)
                    if not chunk:
                        ev = gw.wait_event("tls.rejected", client=client)
                        raise AssertionError("%s: closed during the handshake: %s" % (what, ev))
                    inc.write(chunk)
            assert obj.selected_alpn_protocol() == "postgresql", what
            raw.sendall(out.read())
            obj.write(startup_message("alice", "postgres"))
            raw.sendall(out.read())
            plain, kinds = b"", []
            while not kinds or kinds[-1] not in (b"Z", b"E"):
                try:
                    plain += obj.read(65536)
                except ssl.SSLWantReadError:
                    chunk = raw.recv(65536)
                    assert chunk, (what, kinds)
                    inc.write(chunk)
                # whole messages: type, length, body
                while len(plain) >= 5 and len(plain) >= 1 + struct.unpack("!I", plain[1:5])[0]:
                    kinds.append(plain[:1])
                    plain = plain[1 + struct.unpack("!I", plain[1:5])[0]:]
            assert kinds[-1] == b"Z", (what, kinds, gw.events("authz.denied"))
        finally:
            raw.close()
        ev = gw.wait_event("session.start", client=client)
        assert ev["rule"] == "self" and ev["db_user"] == "alice", ev
    assert not gw.events("tls.rejected"), gw.events("tls.rejected")
    gw.stop()


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
