"""The fences of docs/postgres-setup.md, "Only the gateway reaches
PostgreSQL", run for real in network namespaces the test creates: in tunnel
mode PostgreSQL trusts the login CA itself, so anyone with a login
certificate who reaches its port directly bypasses the gateway's policy and
audit.

  - the loopback rule (the gateway on the database host): the nftables
    ruleset of the guide, loaded as written except for the user name
    ("certgate" becomes a test uid, since the test creates no system
    user), admits a process running as the gateway's user to port 5432
    and refuses another user's, and root's;
  - under that rule, `certgate serve` running as the gateway's user still
    tunnels to the port, while the user whose certificate it admitted
    cannot reach the port directly;
  - the database host's firewall of the guide admits PostgreSQL's port from
    the gateway's address (10.0.0.10) only, over a veth pair between two
    namespaces.
The port's listener is a stand-in for PostgreSQL (it greets and closes):
the rules act on TCP connections, whatever listens.

Needs root, `ip netns add`, nsenter, and nftables in a namespace. Where the machine
refuses a namespace or nftables (a container without CAP_NET_ADMIN, a
kernel without nf_tables), every test reports a TAP skip with the reason;
a missing `nft` command is a failure (deploy/install-deps installs it)."""

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import textwrap
import time
import traceback

from harness import BIN, SLOW, Fixture, wait_for, whole_lines

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUIDE = os.path.join(SRC, "docs/postgres-setup.md")
PG_PORT = 5432  # the guide's rules name PostgreSQL's default port; each namespace has its own
GW_PORT = 8443
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

LISTENER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(b"postgres stand-in\n")
    c.close()
"""

CLIENT = r"""
import errno, os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
source = (sys.argv[3], 0) if len(sys.argv) > 3 else None
try:
    s = socket.create_connection((host, port), timeout=5, source_address=source)
    print("connected uid %d: %r" % (os.getuid(), s.recv(100)))
except OSError as e:
    print("refused uid %d: %s" % (os.getuid(), errno.errorcode.get(e.errno, e)))
    sys.exit(1)
"""

TLS_CLIENT = r"""
import socket, ssl, sys
port, ca, crt, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(crt, key)
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="orders-db") as s:  # SNI = the service
        data = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
print("through the gateway: %r" % data)
sys.exit(0 if data == b"postgres stand-in\n" else 1)
"""


# what nft prints when the kernel (or the container) will not have it
REFUSED = re.compile(r"Operation not permitted|Protocol not supported|Could not process rule|"
                     r"No such file or directory|not supported")
PROBE = """table inet certgate_probe {
    chain c {
        type filter hook output priority filter; policy accept;
    }
}
"""


class Skip(Exception):
    pass


def sh(args, check=True, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60 * SLOW, **kw)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (" ".join(map(str, args)), proc.returncode,
                                                      proc.stdout, proc.stderr))
    return proc


def guide_block(marker):
    """The guide's fenced code block that contains marker, dedented."""
    with open(GUIDE) as f:
        text = f.read()
    for indent, body in re.findall(r"^( *)```[a-z]*\n(.*?)^\1```[ \t]*$", text, re.M | re.S):
        if marker in body:
            return textwrap.dedent(body)
    raise AssertionError("no code block with %r in %s" % (marker, GUIDE))


def unused_uids(n, start=64100):
    out, uid = [], start
    while len(out) < n:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            out.append(uid)
        uid += 1
    return out


GATEWAY_UID, OTHER_UID = unused_uids(2)


class Netns:
    """A network namespace with its loopback up; processes run in it, as root
    or, with uid=, as that user (setpriv, no groups)."""
    count = 0

    def __init__(self, tag):
        Netns.count += 1
        self.name = "certgate-t%d-%d-%s" % (os.getpid(), Netns.count, tag)
        proc = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if proc.returncode != 0:
            raise Skip("the machine refuses a network namespace (ip netns add: %s)"
                       % proc.stderr.strip())
        self.procs = []
        proc = self.sh(["ip", "link", "set", "lo", "up"], check=False)
        if proc.returncode != 0:
            self.close()
            raise Skip("the machine refuses to enter a network namespace (%s)"
                       % proc.stderr.strip())

    def cmd(self, args, uid=None):
        # nsenter, not `ip netns exec`: only the network namespace is needed,
        # and ip's private mount namespace fails where / is no mount point
        # (a chroot)
        prefix = ["nsenter", "--net=/run/netns/" + self.name, "--"]
        if uid is not None:
            prefix += ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"]
        return prefix + [str(a) for a in args]

    def sh(self, args, uid=None, check=True, **kw):
        return sh(self.cmd(args, uid), check=check, **kw)

    def spawn(self, args, uid=None, **kw):
        p = subprocess.Popen(self.cmd(args, uid), **kw)
        self.procs.append(p)
        return p

    def nft(self, ruleset):
        """Loads a ruleset; a kernel that refuses nftables here is a skip."""
        if not shutil.which("nft"):
            raise AssertionError("nft is not installed (deploy/install-deps installs nftables)")
        proc = self.sh(["nft", "-f", "-"], check=False, input=ruleset)
        if proc.returncode != 0:
            if REFUSED.search(proc.stderr):
                raise Skip("the machine refuses nftables in a network namespace: %s"
                           % proc.stderr.strip().splitlines()[-1])
            raise AssertionError("nft -f refused the guide's ruleset:\n%s\n%s"
                                 % (ruleset, proc.stderr))

    def listen(self, host, port):
        self.spawn([PYTHON, "-c", LISTENER, host, port], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
        wait_for(lambda: self.sh(["ss", "-Hltn", "sport = :%d" % port]).stdout.strip(), 10,
                 "the stand-in to listen on %s:%d" % (host, port))

    def connect(self, host, port, uid=None, source=None):
        """(connected?, what the client printed)"""
        args = [PYTHON, "-c", CLIENT, host, port] + ([source] if source else [])
        proc = self.sh(args, uid=uid, check=False)
        return proc.returncode == 0, (proc.stdout + proc.stderr).strip()

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def loopback_ruleset():
    rules = guide_block("table inet certgate_pg")
    assert 'meta skuid != "certgate"' in rules, rules
    assert "dport %d" % PG_PORT in rules, rules
    return rules.replace('"certgate"', str(GATEWAY_UID))


def test_loopback_rule_admits_only_the_gateway_user(fx):
    ns = Netns("lo")
    try:
        ns.listen("127.0.0.1", PG_PORT)
        ok, out = ns.connect("127.0.0.1", PG_PORT, uid=OTHER_UID)
        assert ok, "without the rule every local user reaches the port: " + out
        ns.nft(loopback_ruleset())
        ok, out = ns.connect("127.0.0.1", PG_PORT, uid=GATEWAY_UID)
        assert ok, "the gateway's user is refused: " + out
        print("# gateway's user (uid %d): %s" % (GATEWAY_UID, out))
        for uid in (OTHER_UID, 0):
            ok, out = ns.connect("127.0.0.1", PG_PORT, uid=uid)
            assert not ok and "ECONNREFUSED" in out, "uid %d: %s" % (uid, out)
            print("# another user (uid %d): %s" % (uid, out))
    finally:
        ns.close()


def test_gateway_user_tunnels_under_the_rule(fx):
    """certgate serve, as the gateway's user, reaches the port for a user
    whose own process, as another uid, cannot."""
    ns = Netns("gw")
    home = fx.path("gw-home")
    user_home = fx.path("user-home")
    try:
        ns.listen("127.0.0.1", PG_PORT)
        ns.nft(loopback_ruleset())
        # the gateway's files, owned by its user
        os.makedirs(home)
        cert = fx.ca.server("gateway-orders-db", dns=("orders-db",), ips=())
        for src, name in ((cert.crt, "gateway.crt"), (cert.key, "gateway.key"),
                          (fx.ca.crt, "login-ca.crt")):
            shutil.copy(src, os.path.join(home, name))
        config = {
            "gateway": {"listen": ["127.0.0.1:%d" % GW_PORT], "cert": "gateway.crt",
                        "key": "gateway.key", "client_ca": "login-ca.crt"},
            "audit": {"path": "audit.jsonl"},
            "services": [{"name": "orders-db", "upstream": ["127.0.0.1:%d" % PG_PORT]}],
            "rules": [{"name": "dba", "effect": "allow", "services": ["*"], "groups": ["dba"]}],
        }
        with open(os.path.join(home, "certgate.json"), "w") as f:
            json.dump(config, f)
        for name in os.listdir(home) + [""]:
            os.chown(os.path.join(home, name), GATEWAY_UID, GATEWAY_UID)
        os.chmod(home, 0o700)
        # the user's login certificate, owned by the user
        alice = fx.ca.issue("alice", "alice@example.com", groups=["dba"])
        os.makedirs(user_home)
        for src, name in ((alice.crt, "alice.crt"), (alice.key, "alice.key"),
                          (fx.ca.crt, "ca.crt")):
            shutil.copy(src, os.path.join(user_home, name))
            os.chown(os.path.join(user_home, name), OTHER_UID, OTHER_UID)
        os.chown(user_home, OTHER_UID, OTHER_UID)

        log = open(fx.path("gw-serve.log"), "w")
        serve = ns.spawn([BIN, "serve", "--config", os.path.join(home, "certgate.json")],
                         uid=GATEWAY_UID, stdout=log, stderr=subprocess.STDOUT)
        audit = os.path.join(home, "audit.jsonl")

        def events():
            if serve.poll() is not None:
                with open(fx.path("gw-serve.log")) as f:
                    raise AssertionError("certgate serve exited %s: %s" % (serve.returncode,
                                                                           f.read()))
            try:
                with open(audit) as f:
                    return [json.loads(l) for l in whole_lines(f.read()) if l.strip()]
            except FileNotFoundError:
                return []
        wait_for(lambda: [e for e in events() if e["event"] == "gateway.start"], 20,
                 "the gateway to start")

        u = lambda n: os.path.join(user_home, n)
        proc = ns.sh([PYTHON, "-c", TLS_CLIENT, GW_PORT, u("ca.crt"), u("alice.crt"),
                      u("alice.key")], uid=OTHER_UID, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        print("# uid %d via certgate serve (uid %d): %s" % (OTHER_UID, GATEWAY_UID,
                                                           proc.stdout.strip()))
        start = wait_for(lambda: [e for e in events() if e["event"] == "session.start"], 10,
                         "session.start")
        assert start[0]["user"] == "alice@example.com", start
        ok, out = ns.connect("127.0.0.1", PG_PORT, uid=OTHER_UID)
        assert not ok and "ECONNREFUSED" in out, out
        print("# uid %d straight to the port: %s" % (OTHER_UID, out))
        serve.terminate()
        assert serve.wait(20 * SLOW) == 0
        log.close()
    finally:
        ns.close()


def test_database_host_firewall_admits_only_the_gateway_address(fx):
    """The guide's input rule on the database host (10.1.0.5), a network
    namespace of its own joined by a veth pair to one holding the gateway's
    address (10.0.0.10) and another (10.0.0.11)."""
    rules = guide_block("table inet postgres_from_gateway")
    assert "ip saddr 10.0.0.10 accept" in rules, rules
    db = Netns("db")
    net = None
    try:
        net = Netns("net")
        proc = db.sh(["ip", "link", "add", "cg0", "type", "veth", "peer", "name", "cg1",
                      "netns", net.name], check=False)
        if proc.returncode != 0:
            raise Skip("the machine refuses a veth pair: %s" % proc.stderr.strip())
        db.sh(["ip", "addr", "add", "10.1.0.5/8", "dev", "cg0"])
        db.sh(["ip", "link", "set", "cg0", "up"])
        for addr in ("10.0.0.10/8", "10.0.0.11/8"):
            net.sh(["ip", "addr", "add", addr, "dev", "cg1"])
        net.sh(["ip", "link", "set", "cg1", "up"])
        db.listen("0.0.0.0", PG_PORT)
        wait_for(lambda: net.connect("10.1.0.5", PG_PORT, source="10.0.0.11")[0], 10,
                 "the veth link (without the rule, any address connects)")
        db.nft(rules)
        ok, out = net.connect("10.1.0.5", PG_PORT, source="10.0.0.10")
        assert ok, "the gateway's address is refused: " + out
        print("# from 10.0.0.10 (the gateway): %s" % out)
        ok, out = net.connect("10.1.0.5", PG_PORT, source="10.0.0.11")
        assert not ok and "ECONNREFUSED" in out, out
        print("# from 10.0.0.11: %s" % out)
        ok, out = db.connect("127.0.0.1", PG_PORT)
        assert ok, "the database host's own loopback: " + out
    finally:
        db.close()
        if net is not None:
            net.close()


def unavailable():
    """Why no test can run here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns, nft, setpriv)"
    for tool in ("ip", "nsenter", "setpriv"):
        if not shutil.which(tool):
            return "needs ip (iproute2), nsenter and setpriv (util-linux)"
    try:
        ns = Netns("probe")
    except Skip as e:
        return str(e)
    try:
        if shutil.which("nft"):
            proc = ns.sh(["nft", "-f", "-"], check=False, input=PROBE)
            if proc.returncode != 0:
                if REFUSED.search(proc.stderr):
                    return ("the machine refuses nftables in a network namespace: %s"
                            % proc.stderr.strip().splitlines()[-1])
                raise AssertionError("nft -f of a minimal ruleset failed: " + proc.stderr)
    finally:
        ns.close()
    return None


def main(tests):
    """TAP, with "ok N - name # SKIP reason" for what the machine refuses."""
    print("1..%d" % len(tests), flush=True)
    why = unavailable()
    if why:
        for i, t in enumerate(tests, 1):
            print("ok %d - %s # SKIP %s" % (i, t.__name__, why), flush=True)
        return 0
    fx = Fixture()
    failed = 0
    try:
        for i, t in enumerate(tests, 1):
            start = time.monotonic()
            try:
                t(fx)
                print("ok %d - %s (%.2fs)" % (i, t.__name__, time.monotonic() - start),
                      flush=True)
            except Skip as e:
                print("ok %d - %s # SKIP %s" % (i, t.__name__, e), flush=True)
            except Exception:
                failed += 1
                print("not ok %d - %s" % (i, t.__name__))
                for line in traceback.format_exc().splitlines():
                    print("# " + line)
                sys.stdout.flush()
    finally:
        fx.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main([test_loopback_rule_admits_only_the_gateway_user,
                   test_gateway_user_tunnels_under_the_rule,
                   test_database_host_firewall_admits_only_the_gateway_address]))
