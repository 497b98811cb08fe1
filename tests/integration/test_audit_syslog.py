"""audit.syslog against a real syslog daemon (issue 17, CONFIG.md):
Debian's rsyslogd, started by this test with a configuration of its own that
listens on 127.0.0.1 (UDP and TCP) and on a unix datagram socket, and writes
what it receives, raw, to a file.

For each transport a gateway sends its audit lines; the test parses every
message rsyslog received as RFC 5424 (PRI, timestamp, host, app, procid,
msgid, the structured data with its escapes) and checks the message is the
file's line byte for byte, in order. Then rsyslog is stopped: the gateway
goes on (sessions, /readyz 200), the file keeps every line, and /metrics
and /v1/status count what syslog lost (UDP: the receiver's ICMP refusals;
unix: no socket; TCP: nothing lost, the lines wait in the queue); rsyslog
is started again and delivery resumes (TCP: the lines that waited arrive).
The delivery latency (rsyslog's reception time minus the line's ts) is
printed."""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import harness
from harness import SLOW, Fixture, HoldUpstream, free_port, run, tls_client, wait_for

BANNER = b"upstream says hello\n"
RULES = [{"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"]}]
# a user claim with every character RFC 5424 makes a PARAM-VALUE escape
ODD_USER = 'o"brien]\\ops'


def note(fmt, *args):
    print("# " + (fmt % args if args else fmt), flush=True)


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rsyslog:
    """rsyslogd in the foreground with a configuration of its own."""

    def __init__(self, folder):
        self.dir = folder
        os.makedirs(os.path.join(folder, "work"), exist_ok=True)
        self.udp = free_udp_port()
        self.tcp = free_port()
        self.sock = os.path.join(folder, "log.sock")
        self.out = os.path.join(folder, "received.log")
        self.conf = os.path.join(folder, "rsyslog.conf")
        self.pidfile = os.path.join(folder, "rsyslogd.pid")
        with open(self.conf, "w") as f:
            f.write('''global(workDirectory="%(dir)s/work" maxMessageSize="64k")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
template(name="raw" type="string"
         string="%%timegenerated:::date-rfc3339%%\\t%%inputname%%\\t%%msgid%%\\t%%rawmsg%%\\n")
ruleset(name="certgate") {
    action(type="omfile" file="%(out)s" template="raw")
}
input(type="imudp" address="127.0.0.1" port="%(udp)d" ruleset="certgate")
input(type="imtcp" address="127.0.0.1" port="%(tcp)d" ruleset="certgate")
input(type="imuxsock" socket="%(sock)s" ruleset="certgate" useSpecialParser="off"
      parseHostname="on")
''' % {"dir": folder, "out": self.out, "udp": self.udp, "tcp": self.tcp, "sock": self.sock})
        self.proc = None
        self.probes = 0

    def start(self):
        self.log = open(os.path.join(self.dir, "rsyslogd.log"), "a")
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", self.conf, "-i", self.pidfile],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        # ready when a probe on each input is in the file
        self.probes += 1
        tag = "probe-%d" % self.probes

        def probed():
            if self.proc.poll() is not None:
                raise AssertionError("rsyslogd exited %s" % self.proc.returncode)
            msg = "<13>1 - - probe - %s - -" % tag
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.sendto(msg.encode(), ("127.0.0.1", self.udp))
            try:
                with socket.create_connection(("127.0.0.1", self.tcp), timeout=1) as t:
                    t.sendall(b"%d %s" % (len(msg), msg.encode()))
            except OSError:
                pass
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as x:
                    x.sendto(msg.encode(), self.sock)
            except OSError:
                pass
            got = {r["input"] for r in self.received() if r["msgid"] == tag}
            return got >= {"imudp", "imtcp", "imuxsock"}
        wait_for(probed, 20, "rsyslogd to listen", interval=0.1)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20 * SLOW)
        self.proc = None
        self.log.close()

    def received(self):
        """Every message so far: reception time, input, msgid, raw message."""
        try:
            with open(self.out, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in data.split(b"\n")[:-1]:
            when, inp, msgid, raw = line.split(b"\t", 3)
            out.append({"time": when.decode(), "input": inp.decode(),
                        "msgid": msgid.decode(), "raw": raw})
        return out


# --- RFC 5424 --------------------------------------------------------------------------

HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


def parse_5424(raw):
    """(header dict, {sd-id: {name: value}}, msg bytes) of one message."""
    m = HEADER.match(raw)
    assert m, raw
    head = dict(zip(("pri", "ts", "host", "app", "procid", "msgid"),
                    [int(m.group(1))] + [g.decode() for g in m.groups()[1:]]))
    rest = raw[m.end():]
    sd = {}
    if rest.startswith(b"- "):
        return head, sd, rest[2:]
    i = 0
    while rest[i:i + 1] == b"[":
        j = i + 1
        while rest[j:j + 1] not in (b" ", b"]"):
            j += 1
        sd_id = rest[i + 1:j].decode()
        params = sd.setdefault(sd_id, {})
        while rest[j:j + 1] == b" ":
            k = rest.index(b'="', j)
            name = rest[j + 1:k].decode()
            k += 2
            value = bytearray()
            while rest[k:k + 1] != b'"':
                if rest[k:k + 1] == b"\\" and rest[k + 1:k + 2] in (b'"', b"\\", b"]"):
                    k += 1
                value += rest[k:k + 1]
                k += 1
            params[name] = value.decode()
            j = k + 1
        assert rest[j:j + 1] == b"]", rest
        i = j + 1
    assert rest[i:i + 1] == b" ", rest
    return head, sd, rest[i + 1:]


def rfc3339(text):
    """Seconds since the epoch of an RFC 3339 time (Z or +00:00)."""
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- the gateway ----------------------------------------------------------------------

def setup():
    if shutil.which("rsyslogd") is None:
        raise AssertionError("rsyslogd not found: deploy/install-deps installs rsyslog")
    fx = Fixture(with_postgres=False)
    fx.upstream = HoldUpstream(BANNER)
    fx.alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"], device_id="laptop-1",
                           trust="high")
    fx.odd = fx.ca.issue("odd", "odd@example.com", groups=["dba"],
                         extra=["--cn", ODD_USER, "--no-email"])
    fx.rsyslog = Rsyslog(fx.path("rsyslog"))
    fx.rsyslog.start()
    return fx


def teardown(fx):
    fx.rsyslog.stop()
    fx.upstream.stop()
    fx.close()


def start(fx, address, facility="auth"):
    cfg = fx.config([{"name": "echo", "sni": ["localhost"],
                      "upstream": ["127.0.0.1:%d" % fx.upstream.port]}], RULES,
                    admin={"listen": "127.0.0.1:%d" % free_port()},
                    audit={"path": fx.path(fx.unique("audit") + ".jsonl"),
                           "syslog": {"address": address, "facility": facility}})
    return fx.gateway(cfg)


def session(fx, gw, cert=None):
    sock = tls_client(gw.ports()[0], cert or fx.alice, fx.ca.crt)
    try:
        assert sock.recv(len(BANNER)) == BANNER
        me = "%s:%d" % sock.getsockname()[:2]
    finally:
        sock.close()
    wait_for(lambda: gw.events("session.end", client=me), 5, "session.end")
    return me


def file_lines(gw):
    with open(gw.audit_path, "rb") as f:
        return f.read().split(b"\n")[:-1]


def from_gateway(fx, gw):
    """The messages rsyslog received from this gateway (its procid)."""
    pid = str(gw.proc.pid).encode()
    return [r for r in fx.rsyslog.received()
            if HEADER.match(r["raw"]) and HEADER.match(r["raw"]).group(5) == pid]


def http(gw, path):
    url = "http://%s%s" % (gw.config["admin"]["listen"], path)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5 * SLOW) as r:
        return r.status, r.read().decode()


def metric(gw, name):
    m = re.search(r"^%s (\d+)$" % name, http(gw, "/metrics")[1], re.M)
    assert m, name
    return int(m.group(1))


def check_messages(fx, gw, got, facility):
    """Every message: a well-formed RFC 5424 message whose MSG is a line of
    the file, whose SD repeats its fields, in the file's order. Returns the
    delivery latencies (seconds)."""
    lines = file_lines(gw)
    index = {line: i for i, line in enumerate(lines)}
    last = -1
    latencies = []
    for r in got:
        head, sd, msg = parse_5424(r["raw"])
        assert msg in index, msg
        assert index[msg] > last, "out of order: %s" % msg
        last = index[msg]
        obj = json.loads(msg)
        sev = 4 if obj["event"] in ("tls.rejected", "authz.denied", "upstream.failed") else 6
        assert head["pri"] == facility * 8 + sev, (head, obj["event"])
        assert head["ts"] == obj["ts"] and head["app"] == "certgate", head
        assert head["msgid"] == obj["event"] == r["msgid"], (head, r)  # rsyslog parsed it
        params = sd["certgate@32473"]
        assert params["event"] == obj["event"]
        assert params["seq"] == str(obj["seq"]), (params, obj)
        for k in ("user", "service", "reason"):
            if isinstance(obj.get(k), str):
                assert params[k] == obj[k], (k, params, obj)
            else:
                assert k not in params, (k, params)
        latencies.append(rfc3339(r["time"]) - rfc3339(obj["ts"]))
    return latencies


def outage(fx, gw, n_sessions):
    """rsyslog stops; the gateway serves n sessions (the file has them all,
    /readyz stays 200); returns the file's line count before and after."""
    before = len(file_lines(gw))
    fx.rsyslog.stop()
    for _ in range(n_sessions):
        session(fx, gw)
        assert http(gw, "/readyz")[0] == 200
    after = len(file_lines(gw))
    assert after >= before + 2 * n_sessions
    return before, after


def run_transport(fx, address, facility_name, facility, lossy):
    gw = start(fx, address, facility_name)
    session(fx, gw)
    session(fx, gw, fx.odd)
    # a refusal: tls.rejected with a reason, as a warning
    with socket.create_connection(("127.0.0.1", gw.ports()[0])) as s:
        s.sendall(b"not tls\r\n")
        s.recv(16)
    wait_for(lambda: gw.events("tls.rejected"), 5, "tls.rejected")
    wait_for(lambda: len(from_gateway(fx, gw)) == len(file_lines(gw)), 10,
             "every line at rsyslog (%s)" % address)
    got = from_gateway(fx, gw)
    lat = check_messages(fx, gw, got, facility)
    odd = [parse_5424(r["raw"]) for r in got if b"session.start" in r["raw"]][-1]
    assert odd[1]["certgate@32473"]["user"] == ODD_USER, odd
    assert rb'user="o\"brien\]\\ops"' in [r["raw"] for r in got
                                           if b"session.start" in r["raw"]][-1]
    st = json.loads(http(gw, "/v1/status")[1])
    assert st["audit"]["syslog"]["address"] == address, st
    assert st["audit"]["syslog"]["sent"] >= len(got), st
    assert metric(gw, "certgate_audit_syslog_lost_total") == 0

    before, after = outage(fx, gw, 3)
    if lossy:
        wait_for(lambda: metric(gw, "certgate_audit_syslog_lost_total") >= 1, 5,
                 "syslog losses counted")
    lost = metric(gw, "certgate_audit_syslog_lost_total")
    assert json.loads(http(gw, "/v1/status")[1])["counts"]["audit_syslog_lost"] == lost
    queued = metric(gw, "certgate_audit_syslog_queued")
    note("%s: rsyslog down: %d lines in the file, %d counted lost, %d queued", address,
         after - before, lost, queued)

    fx.rsyslog.start()
    t0 = time.monotonic()
    me = session(fx, gw)
    wait_for(lambda: any(me.encode() in r["raw"] and b"session.end" in r["raw"]
                         for r in from_gateway(fx, gw)), 15,
             "delivery to resume (%s)" % address)
    resumed = time.monotonic() - t0
    got = from_gateway(fx, gw)
    waited = check_messages(fx, gw, got, facility)[len(lat):]
    delivered = {parse_5424(r["raw"])[2] for r in got}
    missing = [l for l in file_lines(gw) if l not in delivered]
    lost = metric(gw, "certgate_audit_syslog_lost_total")
    if address.startswith("unix:"):
        # every sendto to a missing socket fails at once: counted exactly
        assert len(missing) == lost >= 1, (len(missing), lost)
    elif lossy:
        # UDP: a loss shows as the receiver's ICMP refusal, on the next send
        assert len(missing) >= 1 and lost >= 1, (len(missing), lost)
    else:
        # TCP: the lines of the outage waited in the queue and came after
        assert missing == [] and lost == 0, (missing, lost)
    note("%s: delivery resumed %.2f s after rsyslog came back; %d line(s) missing at "
         "rsyslog, %d counted lost; lines of the outage and after it delivered within "
         "%.0f ms of their ts", address, resumed, len(missing), lost, max(waited) * 1000)
    gw.stop()
    if not lossy:
        wait_for(lambda: any(b"gateway.stop" in r["raw"] for r in from_gateway(fx, gw)), 5,
                 "gateway.stop at rsyslog")
    return lat


def summary(address, lat):
    lat = sorted(lat)
    note("%s: delivery latency over %d messages: median %.1f ms, max %.1f ms", address,
         len(lat), statistics.median(lat) * 1000, lat[-1] * 1000)


def test_udp(fx):
    address = "udp:127.0.0.1:%d" % fx.rsyslog.udp
    summary(address, run_transport(fx, address, "auth", 4, lossy=True))


def test_tcp(fx):
    address = "tcp:127.0.0.1:%d" % fx.rsyslog.tcp
    summary(address, run_transport(fx, address, "local3", 19, lossy=False))


def test_unix(fx):
    address = "unix:" + fx.rsyslog.sock
    summary(address, run_transport(fx, address, "authpriv", 10, lossy=True))


def test_tcp_names_and_reload(fx):
    """A host name is resolved; a reload moves syslog elsewhere and off."""
    gw = start(fx, "tcp:localhost:%d" % fx.rsyslog.tcp)
    wait_for(lambda: from_gateway(fx, gw), 10, "gateway.start at rsyslog by name")
    cfg = json.loads(json.dumps(gw.config))
    cfg["audit"]["syslog"] = {"address": "udp:127.0.0.1:%d" % fx.rsyslog.udp}
    gw.write_config(cfg)
    gw.reload()
    wait_for(lambda: any(r["input"] == "imudp" and b"admin.reload" in r["raw"]
                         for r in from_gateway(fx, gw)), 10, "the reload's line over UDP")
    del cfg["audit"]["syslog"]
    gw.write_config(cfg)
    gw.reload()
    wait_for(lambda: len([e for e in gw.events("admin.reload") if e["ok"]]) == 2, 10,
             "the second reload")
    me = session(fx, gw)
    # a probe sent after the session arrives after anything the session
    # would have sent: then nothing of the session is there
    tag = "after-off-%d" % gw.proc.pid
    msg = "<13>1 - - probe - %s - -" % tag
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(msg.encode(), ("127.0.0.1", fx.rsyslog.udp))
    wait_for(lambda: any(r["msgid"] == tag for r in fx.rsyslog.received()), 10, "the probe")
    assert not any(me.encode() in r["raw"] for r in from_gateway(fx, gw))
    assert "syslog" not in json.loads(http(gw, "/v1/status")[1])["audit"]
    gw.stop()


def private_hosts_wrapper(fx, hosts):
    """A command prefix that runs a program with its own /etc/hosts (a
    private mount namespace), or None where the machine refuses one."""
    path = fx.path(fx.unique("hosts"))
    with open(path, "w") as f:
        f.write(hosts)
    prefix = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
              'mount --bind "$0" /etc/hosts && exec "$@"', path]
    if subprocess.run(prefix + ["true"], capture_output=True).returncode != 0:
        return None
    return prefix


def test_tcp_name_tries_each_address(fx):
    """A name with several addresses: the first refuses, the next is
    connected at once. On a stock Debian "localhost" is ::1 and then
    127.0.0.1, and a daemon listening on 127.0.0.1 alone (as this rsyslog)
    was never reached."""
    prefix = private_hosts_wrapper(fx, "::1 syslog.test\n127.0.0.1 syslog.test\n")
    if prefix is None:
        print("# skipped: no private mount namespace here")
        return
    order = subprocess.run(prefix + [sys.executable, "-c",
                                     "import socket; print([a[4][0] for a in socket."
                                     "getaddrinfo('syslog.test', 1, type=socket.SOCK_STREAM)])"],
                           capture_output=True, text=True)
    assert order.stdout.strip() == "['::1', '127.0.0.1']", (order.stdout, order.stderr)
    saved = harness.WRAPPER
    harness.WRAPPER = prefix + list(saved)
    try:
        gw = start(fx, "tcp:syslog.test:%d" % fx.rsyslog.tcp)
    finally:
        harness.WRAPPER = saved
    wait_for(lambda: from_gateway(fx, gw), 10, "gateway.start at rsyslog over its second address")
    assert "cannot connect" not in gw.output(), gw.output()
    gw.stop()


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
