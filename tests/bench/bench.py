#!/usr/bin/env python3
"""certgate's side-by-side benchmark against HAProxy, nginx (stream) and
stunnel4 (issue 5). docs/performance.md explains every measurement.

    python3 tests/bench/bench.py [--quick] [--runs N] [--out DIR] [--only P,P]
    python3 tests/bench/bench.py --smoke        (CI: seconds, TAP, no files kept)

One run sets up everything on this machine: a test CA (certgate ca), ECDSA
P-256 server and client certificates, the C upstream (tests/bench/upstream.c),
the four proxies configured alike (TLS 1.3 only, TLS_AES_128_GCM_SHA256,
X25519, client certificate required and verified against the CA, no session
tickets, one worker), a PostgreSQL 15 cluster; then measures, repeats --runs
times and writes the medians (results.md), the raw data (results.json) and a
chart of the ratios to HAProxy (ratios.png) to --out
(default tests/bench/results/<date>/).

Binaries: certgate and the helpers come from a release build that the script
configures and brings up to date itself (--build, default build-release), so
re-running after changing gateway/ is one command. Under meson (the smoke
test) they come from CERTGATE_BIN / BENCH_UPSTREAM / BENCH_LOADGEN /
BENCH_POLBENCH.
"""

import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402  (CA, Postgres, Gateway, free_port, wait_for)

PEERS = ["haproxy", "nginx", "stunnel", "certgate"]
CLIENT_USER = "bench@example.com"
CLIENT_GROUP = "bench"
SERVICE = "bench"
MiB = 1 << 20

# Every TLS client of the benchmark (loadgen, and `certgate connect` through
# this file) offers only these, so all four proxies negotiate the same.
CLIENT_OPENSSL_CONF = """openssl_conf = bench_conf
[bench_conf]
ssl_conf = bench_ssl
[bench_ssl]
system_default = bench_client
[bench_client]
MinProtocol = TLSv1.3
Ciphersuites = TLS_AES_128_GCM_SHA256
Groups = X25519
"""
# pgbench straight to PostgreSQL: PostgreSQL 15 offers one ECDH group
# (ssl_ecdh_curve, prime256v1 by default; X25519 cannot be set there)
DIRECT_OPENSSL_CONF = CLIENT_OPENSSL_CONF.replace("Groups = X25519\n", "")

SIZES = {
    # handshakes per run, stream bytes per direction per run, idle session
    # counts, pgbench seconds/scale/clients, policy rules, reload sessions
    "full": dict(hs=6000, hs_conc=16, hs_threads=2, stream=512 * MiB, idle=[1000, 10000],
                 pg_seconds=5, pg_scale=4, pg_clients=[1, 8], rules=10000, services=100,
                 groups=2000, pol_seconds=1.0, reload_sessions=10000, runs=5),
    "quick": dict(hs=800, hs_conc=16, hs_threads=2, stream=32 * MiB, idle=[200, 1000],
                  pg_seconds=2, pg_scale=1, pg_clients=[1, 8], rules=10000, services=100,
                  groups=2000, pol_seconds=0.3, reload_sessions=1000, runs=1),
    "smoke": dict(hs=60, hs_conc=8, hs_threads=2, stream=2 * MiB, idle=[50],
                  pg_seconds=1, pg_scale=1, pg_clients=[1], rules=1000, services=20,
                  groups=200, pol_seconds=0.1, reload_sessions=50, runs=1),
}


def log(msg):
    print("# " + msg if SMOKE else msg, file=sys.stderr if not SMOKE else sys.stdout, flush=True)


SMOKE = False


# --------------------------------------------------------------------------
# processes and /proc


def proc_tree(root):
    """root and all its descendants (nginx: master + worker)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """utime + stime of every process (each covers all of its threads)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def threads_of(pids):
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir("/proc/%d/task" % pid))
        except OSError:
            pass
    return n


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    want = 1 << 16
    if hard < want:
        try:  # needs CAP_SYS_RESOURCE; this sandbox does not have it
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


class Spawned:
    """A process of ours with its output in a file."""

    def __init__(self, args, log_path, env=None, stdin=None, stdout=None):
        self.args = [str(a) for a in args]
        self.log_path = log_path
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen(self.args, stdout=stdout or self.log, stderr=self.log,
                                     stdin=stdin, env=env, text=True)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def wait_port(port, proc, what):
    def ready():
        if not proc.alive():
            raise AssertionError("%s exited (%s): %s" % (what, proc.proc.returncode,
                                                         proc.output()[-2000:]))
        return harness.port_open(port)
    harness.wait_for(ready, 20, what + " to listen")


# --------------------------------------------------------------------------
# the proxies


class Peer:
    name = "?"
    label = "?"

    def __init__(self, bench, upstream_port, tag):
        self.bench = bench
        self.dir = os.path.join(bench.dir, "%s-%s" % (self.name, tag))
        os.makedirs(self.dir, exist_ok=True)
        self.port = harness.free_port()
        self.upstream_port = upstream_port
        self.proc = None

    def pids(self):
        return proc_tree(self.proc.pid)

    def cpu(self):
        return cpu_seconds(self.pids())

    def rss(self):
        return rss_kib(self.pids())

    def stop(self):
        if self.proc:
            code = self.proc.stop()
            self.proc = None
            return code
        return 0


class HAProxy(Peer):
    name, label = "haproxy", "HAProxy"

    def start(self):
        b = self.bench
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("""global
    nbthread 1
    maxconn %(maxconn)d
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe
    bind 127.0.0.1:%(port)d ssl crt %(pem)s ca-file %(ca)s verify required ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256 curves X25519 no-tls-tickets
    default_backend be
backend be
    server up 127.0.0.1:%(up)d
""" % dict(maxconn=b.max_sessions + 50, port=self.port, pem=b.server_pem, ca=b.ca.crt,
                 up=self.upstream_port))
        self.proc = Spawned([tool("haproxy"), "-f", cfg, "-db"], os.path.join(self.dir, "haproxy.log"))
        wait_port(self.port, self.proc, "haproxy")

    @staticmethod
    def version():
        out = subprocess.run([tool("haproxy"), "-v"], capture_output=True, text=True).stdout
        m = re.search(r"HAProxy version (\S+)", out)
        return "HAProxy " + (m.group(1) if m else out.splitlines()[0])


class Nginx(Peer):
    name, label = "nginx", "nginx"

    def start(self):
        b = self.bench
        cfg = os.path.join(self.dir, "nginx.conf")
        with open(cfg, "w") as f:
            f.write("""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
events { worker_connections %(wc)d; }
stream {
    server {
        listen 127.0.0.1:%(port)d ssl;
        ssl_certificate %(crt)s;
        ssl_certificate_key %(key)s;
        ssl_client_certificate %(ca)s;
        ssl_verify_client on;
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
        ssl_ecdh_curve X25519;
        ssl_session_tickets off;
        ssl_session_cache off;
        proxy_pass 127.0.0.1:%(up)d;
        proxy_timeout 1h;
    }
}
""" % dict(dir=self.dir, wc=2 * b.max_sessions + 100, port=self.port, crt=b.server.crt,
                 key=b.server.key, ca=b.ca.crt, up=self.upstream_port))
        self.proc = Spawned([tool("nginx"), "-c", cfg, "-p", self.dir, "-e", "stderr"],
                            os.path.join(self.dir, "nginx.log"))
        wait_port(self.port, self.proc, "nginx")

    @staticmethod
    def version():
        out = subprocess.run([tool("nginx"), "-v"], capture_output=True, text=True).stderr
        m = re.search(r"nginx/(\S+)", out)
        return "nginx " + (m.group(1) if m else out.strip()) + " (Debian " + \
            dpkg_version("nginx") + ", stream module " + dpkg_version("libnginx-mod-stream") + ")"


class Stunnel(Peer):
    name, label = "stunnel", "stunnel"

    def start(self):
        b = self.bench
        cfg = os.path.join(self.dir, "stunnel.conf")
        with open(cfg, "w") as f:
            f.write("""foreground = yes
pid =
syslog = no
debug = warning
output = %(dir)s/stunnel-output.log
[bench]
accept = 127.0.0.1:%(port)d
connect = 127.0.0.1:%(up)d
cert = %(crt)s
key = %(key)s
CAfile = %(ca)s
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
curves = X25519
options = NO_TICKET
sessionCacheSize = 1
""" % dict(dir=self.dir, port=self.port, up=self.upstream_port, crt=b.server.crt,
                 key=b.server.key, ca=b.ca.crt))
        self.proc = Spawned([tool("stunnel4"), cfg],
                            os.path.join(self.dir, "stunnel.log"))
        wait_port(self.port, self.proc, "stunnel")

    @staticmethod
    def version():
        out = subprocess.run([tool("stunnel4"), "-version"],
                             capture_output=True, text=True)
        text = out.stdout + out.stderr
        m = re.search(r"stunnel (\S+)", text)
        return "stunnel " + (m.group(1) if m else "?") + " (Debian " + dpkg_version("stunnel4") + \
            ", thread per connection)"


class Certgate(Peer):
    name, label = "certgate", "certgate"

    def __init__(self, bench, upstream_port, tag, config=None, admin=False, gateway=None):
        super().__init__(bench, upstream_port, tag)
        self.config = config
        self.gateway_extra = gateway or {}  # extra "gateway" keys
        self.admin_port = harness.free_port() if admin else None
        self.gw = None

    def make_config(self):
        b = self.bench
        cfg = {
            "gateway": {
                "listen": ["127.0.0.1:%d" % self.port],
                "cert": b.server.crt, "key": b.server.key, "client_ca": b.ca.crt,
                "max_connections": 2 * b.max_sessions + 100,
            },
            "audit": {"path": os.path.join(self.dir, "certgate.audit")},
            "services": [{"name": SERVICE, "upstream": ["127.0.0.1:%d" % self.upstream_port]}],
            "rules": [{"name": "bench", "effect": "allow", "services": [SERVICE],
                       "groups": [CLIENT_GROUP]}],
        }
        if self.admin_port:
            cfg["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
        return cfg

    def start(self):
        cfg = self.config or self.make_config()
        cfg["gateway"]["listen"] = ["127.0.0.1:%d" % self.port]
        cfg["gateway"].update(self.gateway_extra)
        cfg.setdefault("audit", {})["path"] = os.path.join(self.dir, "certgate.audit")
        if self.admin_port:
            cfg["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
        self.gw = harness.Gateway(self.dir, cfg, name="certgate")
        self.proc = self.gw

    def pids(self):
        return proc_tree(self.gw.proc.pid)

    def count_events(self, name):
        needle = '"event":"%s"' % name
        try:
            with open(self.gw.audit_path) as f:
                return sum(1 for line in f if needle in line.replace(" ", ""))
        except FileNotFoundError:
            return 0

    def stop(self):
        if self.gw:
            code = self.gw.stop(expect=None)
            out = self.gw.output()
            self.gw = self.proc = None
            for line in out.splitlines():
                if (": error:" in line or ": warn:" in line) and \
                        not any(line[:200] in p for p in self.bench.problems) and \
                        len(self.bench.problems) < 20:
                    self.bench.problems.append("certgate logged: " + line[:200])
            if code != 0:
                self.bench.problems.append("certgate serve exited %s on SIGTERM: %s"
                                           % (code, out[-1500:]))
            return code
        return 0

    @staticmethod
    def version():
        out = harness.certgate("version").stdout.splitlines()
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        # what the binary is built from: uncommitted changes to the code count
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "gateway",
                                "policy", "common", "meson.build"],
                               capture_output=True, text=True).stdout.strip()
        return "%s (%s; git %s%s)" % (out[0], out[1] if len(out) > 1 else "", commit or "?",
                                      " + uncommitted changes" if dirty else "")


PEER_CLASSES = {"haproxy": HAProxy, "nginx": Nginx, "stunnel": Stunnel, "certgate": Certgate}


def tool(name):
    """A program's full path; /usr/sbin too (haproxy, nginx), whatever PATH says."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin")


def dpkg_version(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"


# --------------------------------------------------------------------------
# the bench


class Bench:
    def __init__(self, args, sizes):
        self.args = args
        self.s = sizes
        self.runs = args.runs if args.runs else sizes["runs"]
        self.peers = args.only.split(",") if args.only else list(PEERS)
        self.dir = tempfile.mkdtemp(prefix="certgate-bench-")
        os.chmod(self.dir, 0o755)
        self.spawned = []
        self.problems = []
        self.hard_nofile = raise_nofile()
        # A proxy holds two descriptors per session (client and upstream
        # side), and stunnel admits at most 125/256 of its descriptor limit
        # as clients: the same cap for every peer, in hundreds.
        cap = min((self.hard_nofile - 200) // 2, self.hard_nofile * 125 // 256 - 50) // 100 * 100
        self.max_sessions = min(max(sizes["idle"] + [sizes["reload_sessions"]]), cap)
        self.raw = {p: {} for p in self.peers}
        self.extra = {}

    # -- setup ---------------------------------------------------------------

    def setup(self):
        log("setting up in %s" % self.dir)
        self.ca = harness.CA(os.path.join(self.dir, "ca"), name="certgate bench CA")
        os.chmod(self.ca.dir, 0o755)
        self.server = self.ca.server("server", dns=("localhost",), ips=("127.0.0.1",))
        self.server_pem = os.path.join(self.dir, "server.pem")
        with open(self.server_pem, "w") as out:
            for path in (self.server.crt, self.server.key):
                with open(path) as f:
                    out.write(f.read())
        # 12h: a full run lasts far longer than `ca issue`'s default 15m, and
        # certgate refuses lifetimes over max_cert_lifetime (24h by default)
        self.client = self.ca.issue("client", CLIENT_USER, groups=[CLIENT_GROUP],
                                    device_id="bench-1", trust="high", ttl="12h")
        self.openssl_conf = os.path.join(self.dir, "client-openssl.cnf")
        with open(self.openssl_conf, "w") as f:
            f.write(CLIENT_OPENSSL_CONF)
        self.direct_openssl_conf = os.path.join(self.dir, "direct-openssl.cnf")
        with open(self.direct_openssl_conf, "w") as f:
            f.write(DIRECT_OPENSSL_CONF)
        self.upstream = self.spawn([BINS["upstream"]], "upstream.log", stdout=subprocess.PIPE)
        line = self.upstream.proc.stdout.readline()
        self.upstream_port = int(line.split()[1])

    def spawn(self, args, name, **kw):
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        p = Spawned(args, os.path.join(self.dir, name), env=kw.pop("env", env), **kw)
        self.spawned.append(p)
        return p

    def close(self):
        for p in reversed(self.spawned):
            p.stop(signal.SIGKILL if p.proc.poll() is None and "loadgen" in p.args[0] else
                   signal.SIGTERM, timeout=10)
        if getattr(self, "pg", None):
            self.pg.stop()
        if self.args.keep:
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def record(self, peer, metric, value):
        self.raw.setdefault(peer, {}).setdefault(metric, []).append(value)

    # -- load generator ------------------------------------------------------

    def loadgen(self, mode, port, *extra, timeout=600, cert=True):
        args = [BINS["loadgen"], mode, "--port", port, "--sni", SERVICE]
        if cert:
            args += ["--cert", self.client.crt, "--key", self.client.key]
        args += list(extra)
        env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
        proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              timeout=timeout * harness.SLOW, env=env)
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise AssertionError("loadgen %s failed (%d): %s %s" % (
                mode, proc.returncode, proc.stdout, proc.stderr))
        result["stderr"] = proc.stderr.strip()
        result["returncode"] = proc.returncode
        return result

    def start_peer(self, name, upstream_port, tag, **kw):
        peer = PEER_CLASSES[name](self, upstream_port, tag, **kw)
        peer.start()
        return peer

    # -- 0. the peers are configured alike ------------------------------------

    def check_alike(self):
        self.extra["negotiated"] = {}
        for name in self.peers:
            peer = self.start_peer(name, self.upstream_port, "probe")
            try:
                good = self.loadgen("probe", peer.port, "--ca", self.ca.crt)
                bad = self.loadgen("probe", peer.port, "--no-cert", cert=False)
            finally:
                peer.stop()
            if not good["ok"]:
                raise AssertionError("%s: an mTLS client was not served: %s" % (name, good))
            want = ("TLSv1.3", "TLS_AES_128_GCM_SHA256", "X25519")
            got = (good["version"], good["cipher"], good["group"])
            if got != want:
                raise AssertionError("%s negotiated %s, not %s" % (name, got, want))
            if bad["ok"]:
                raise AssertionError("%s served a client without a certificate" % name)
            self.extra["negotiated"][name] = {"version": got[0], "cipher": got[1],
                                              "group": got[2], "no_cert_refused": True}
            log("  %-8s TLS 1.3 / %s / %s, client without certificate refused"
                % (name, got[1], got[2]))

    # -- 1 and 2: handshakes and throughput -------------------------------------

    def bench_cpu(self):
        for run in range(self.runs):
            order = list(self.peers)
            random.Random(run).shuffle(order)  # no peer always first or last
            for name in order:
                peer = self.start_peer(name, self.upstream_port, "cpu%d" % run)
                try:
                    self.handshakes(peer, name)
                    for conns in (1, 8):
                        self.stream(peer, name, conns)
                finally:
                    peer.stop()
                if name == "certgate":
                    # the same without remembered chains: every handshake
                    # verifies the client chain, as a first-time client's does
                    peer = self.start_peer(name, self.upstream_port, "cpu%d-nocache" % run,
                                           gateway={"verify_cache": False})
                    try:
                        self.handshakes(peer, name, suffix="_nocache")
                    finally:
                        peer.stop()
            log("  run %d/%d: handshakes and throughput done" % (run + 1, self.runs))

    def handshakes(self, peer, name, suffix=""):
        s = self.s
        self.loadgen("handshake", peer.port, "--count", 20, "--concurrency", 4)  # warm up
        time.sleep(0.2)
        c0 = peer.cpu()
        r = self.loadgen("handshake", peer.port, "--count", s["hs"], "--concurrency",
                         s["hs_conc"], "--threads", s["hs_threads"], "--src-ips", 8)
        time.sleep(0.3)  # the proxy's closing work for the last connections
        c1 = peer.cpu()
        if r["failed"] or r["ok"] != s["hs"]:
            raise AssertionError("%s: %d of %d handshakes failed: %s"
                                 % (name, r["failed"], s["hs"], r["stderr"][-500:]))
        self.record(name, "hs_cpu_us" + suffix, (c1 - c0) / r["ok"] * 1e6)
        self.record(name, "hs_per_s" + suffix, r["ok"] / r["seconds"])

    def stream(self, peer, name, conns):
        total = self.s["stream"]
        c0 = peer.cpu()
        moved, secs = 0, 0.0
        for direction in ("up", "down"):
            r = self.loadgen("stream", peer.port, "--conns", conns, "--bytes", total,
                             "--dir", direction)
            if r["failed"] or r["bytes"] < total - total % conns:
                raise AssertionError("%s: stream %s x%d failed: %s" % (
                    name, direction, conns, r))
            moved += r["bytes"]
            secs += r["seconds"]
        time.sleep(0.2)
        c1 = peer.cpu()
        self.record(name, "mb_per_cpu_s_%d" % conns, moved / 1e6 / max(c1 - c0, 1.0 / CLK_TCK))
        self.record(name, "mb_per_s_%d" % conns, moved / 1e6 / secs)

    # -- 3. memory per idle session --------------------------------------------

    def idle_sizes(self):
        return sorted(set(min(n, self.max_sessions) for n in self.s["idle"]))

    def bench_idle(self):
        for run in range(self.runs):
            for n in self.idle_sizes():
                order = list(self.peers)
                random.Random(100 + run).shuffle(order)
                for name in order:
                    peer = self.start_peer(name, self.upstream_port, "idle%d-%d" % (n, run))
                    try:
                        self.idle(peer, name, n)
                    finally:
                        peer.stop()
            log("  run %d/%d: idle sessions done" % (run + 1, self.runs))

    def open_sessions(self, port, n, sni=SERVICE):
        """A loadgen holding n sessions; returns (process, its result line)."""
        args = [BINS["loadgen"], "idle", "--port", port, "--cert", self.client.crt,
                "--key", self.client.key, "--conns", n, "--concurrency", 64, "--src-ips", 8,
                "--sni", sni]
        p = self.spawn(args, "loadgen-idle.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = p.proc.stdout.readline()
        if not line:
            raise AssertionError("loadgen idle exited: %s" % p.output()[-1000:])
        result = json.loads(line)
        if result["ok"] != n:
            p.stop(signal.SIGKILL)
            raise AssertionError("only %d of %d sessions opened: %s"
                                 % (result["ok"], n, p.output()[-1000:]))
        return p, result

    def ping_sessions(self, p):
        p.proc.stdin.write("ping\n")
        p.proc.stdin.flush()
        line = p.proc.stdout.readline().split()
        return int(line[1]), int(line[3])  # alive, dropped

    def close_sessions(self, p):
        try:
            p.proc.stdin.write("quit\n")
            p.proc.stdin.flush()
        except OSError:
            pass
        try:
            p.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.proc.kill()
        p.stop()

    def idle(self, peer, name, n):
        self.loadgen("handshake", peer.port, "--count", 20, "--concurrency", 4)
        time.sleep(0.3)
        before = peer.rss()
        p, _ = self.open_sessions(peer.port, n)
        try:
            time.sleep(0.5)
            after = peer.rss()
            threads = threads_of(peer.pids())
            alive, dropped = self.ping_sessions(p)
            if alive != n:
                raise AssertionError("%s: %d of %d idle sessions answered (%d dropped)"
                                     % (name, alive, n, dropped))
        finally:
            self.close_sessions(p)
        self.record(name, "rss_kib_per_session_%d" % n, (after - before) / n)
        self.record(name, "threads_at_%d" % n, threads)

    # -- 4. pgbench --------------------------------------------------------------

    def setup_pg(self):
        pg_cert = self.ca.server("postgres", dns=("localhost",), ips=("127.0.0.1",))
        self.pg = harness.Postgres(os.path.join(self.dir, "pg"), pg_cert, self.ca.crt, hba_lines=[
            "local all all trust",
            "hostssl all all 127.0.0.1/32 cert map=login",   # direct: the login certificate
            "hostnossl all all 127.0.0.1/32 trust",          # through a proxy (tunnel)
        ])
        self.pg.sql("CREATE ROLE bench LOGIN SUPERUSER")
        self.pg.sql("CREATE DATABASE bench OWNER bench")
        r = subprocess.run(["pgbench", "-i", "-q", "-s", str(self.s["pg_scale"]), "-h",
                            self.pg.dir, "-p", str(self.pg.port), "-U", "bench", "bench"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("pgbench -i failed: " + r.stderr)
        self.extra["postgres"] = subprocess.run([harness.pg_bin("postgres"), "--version"],
                                                capture_output=True, text=True).stdout.strip()

    def pgbench(self, port, clients, direct=False):
        env = dict(os.environ, OPENSSL_CONF=self.openssl_conf, PGCONNECT_TIMEOUT="10")
        if direct:
            env.update(OPENSSL_CONF=self.direct_openssl_conf, PGSSLMODE="require", PGSSLCERT=self.client.crt, PGSSLKEY=self.client.key)
        else:
            env.update(PGSSLMODE="disable")
        args = ["pgbench", "-n", "-S", "-c", str(clients), "-j", str(min(clients, 2)),
                "-T", str(self.s["pg_seconds"]), "-h", "127.0.0.1", "-p", str(port),
                "-U", "bench", "bench"]
        r = subprocess.run(args, capture_output=True, text=True, env=env,
                           timeout=self.s["pg_seconds"] * 10 + 60)
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", r.stdout)
        lat = re.search(r"latency average = ([\d.]+) ms", r.stdout)
        txns = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
        failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
        if r.returncode != 0 or not tps or not lat:
            raise AssertionError("pgbench failed (%d): %s %s" % (r.returncode, r.stdout[-800:],
                                                                 r.stderr[-800:]))
        if failed and int(failed.group(1)):
            raise AssertionError("pgbench: %s failed transactions" % failed.group(1))
        return float(tps.group(1)), float(lat.group(1)), int(txns.group(1)) if txns else 0

    def connector(self, peer):
        """certgate connect, the same client-side connector for every peer."""
        port = harness.free_port()
        env = dict(os.environ, OPENSSL_CONF=self.openssl_conf)
        c = self.spawn([harness.BIN, "connect", "--gateway", "127.0.0.1:%d" % peer.port,
                        "--service", SERVICE, "--listen", "127.0.0.1:%d" % port,
                        "--cert", self.client.crt, "--key", self.client.key, "--ca", self.ca.crt],
                       "connect-%s.log" % peer.name, env=env)
        harness.wait_for(lambda: "listening on" in c.output() or not c.alive(), 10,
                         "the connector")
        if not c.alive():
            raise AssertionError("certgate connect exited: " + c.output())
        return c, port

    def bench_pgbench(self):
        """Every path is up at once; each point runs the paths back to back
        in a shuffled order, so that other work on the machine weighs on
        all of them alike."""
        self.setup_pg()
        for run in range(self.runs):
            peers, conns = {}, []
            try:
                for name in self.peers:
                    peers[name] = self.start_peer(name, self.pg.port, "pg%d" % run)
                    c, port = self.connector(peers[name])
                    conns.append(c)
                    peers[name].tunnel_port = port
                for clients in self.s["pg_clients"]:
                    order = ["direct"] + list(self.peers)
                    random.Random(200 + 10 * run + clients).shuffle(order)
                    for name in order:
                        if name == "direct":
                            tps, lat, _ = self.pgbench(self.pg.port, clients, direct=True)
                        else:
                            peer = peers[name]
                            c0 = peer.cpu()
                            tps, lat, txns = self.pgbench(peer.tunnel_port, clients)
                            c1 = peer.cpu()
                            if txns:
                                self.record(name, "pg_cpu_us_per_txn_c%d" % clients,
                                            (c1 - c0) / txns * 1e6)
                        self.record(name, "pg_tps_c%d" % clients, tps)
                        self.record(name, "pg_lat_ms_c%d" % clients, lat)
            finally:
                for c in conns:
                    c.stop()
                for peer in peers.values():
                    peer.stop()
            log("  run %d/%d: pgbench done" % (run + 1, self.runs))

    # -- 5. certgate only: policy decision and reload ---------------------------

    def policy_config(self, upstream_port):
        """n rules over many services and groups; the bench client's allow
        rule is the last one, so its decision walks everything it can."""
        s = self.s
        rnd = random.Random(5)
        services = [{"name": "svc-%04d" % i, "upstream": ["127.0.0.1:%d" % upstream_port]}
                    for i in range(s["services"])]
        rules = []
        n = s["rules"] - 1
        for i in range(n):
            rule = {"name": "r%05d" % i}
            if i % 500 == 0:  # a few "*" rules: contractors are denied everywhere
                rule.update(effect="deny", services=["*"],
                            users=["*@contractor%d.example" % (i // 500)])
            elif i % 20 == 7:
                rule.update(effect="deny", services=[services[rnd.randrange(len(services))]["name"]],
                            users=["*@contractor%d.example" % rnd.randrange(50)])
            else:
                svcs = rnd.sample(services, 1 if rnd.random() < 0.8 else 2)
                rule.update(effect="allow", services=[x["name"] for x in svcs],
                            groups=["g-%04d" % rnd.randrange(s["groups"])
                                    for _ in range(rnd.randint(1, 3))])
                if rnd.random() < 0.25:
                    rule["users"] = ["*@team%d.example" % rnd.randrange(100)]
                if rnd.random() < 0.25:
                    rule["min_trust"] = rnd.choice(["low", "medium", "high"])
                if rnd.random() < 0.1:
                    rule["sources"] = ["127.0.0.0/8", "10.%d.0.0/16" % rnd.randrange(256)]
            rules.append(rule)
        rules.append({"name": "bench", "effect": "allow", "services": ["*"],
                      "groups": [CLIENT_GROUP]})
        return {
            "gateway": {"listen": [], "cert": self.server.crt, "key": self.server.key,
                        "client_ca": self.ca.crt, "max_connections": 2 * self.max_sessions + 100},
            "services": services,
            "rules": rules,
        }

    def bench_policy(self):
        cfg = self.policy_config(self.upstream_port)
        cfg["gateway"]["listen"] = ["127.0.0.1:1"]
        path = os.path.join(self.dir, "policy-bench.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        for run in range(self.runs):
            r = subprocess.run([BINS["polbench"], path, str(self.s["pol_seconds"])],
                               capture_output=True, text=True, timeout=120 * harness.SLOW,
                               env=dict(os.environ, ASAN_OPTIONS=os.environ.get(
                                   "ASAN_OPTIONS", "") + ":detect_leaks=0"))
            if r.returncode != 0:
                raise AssertionError("polbench failed: " + r.stderr)
            res = json.loads(r.stdout)
            self.record("certgate", "decision_ns", res["ns_per_decision"])
            self.record("certgate", "policy_load_ms", res["load_ms"])
            self.extra["polbench"] = res
        log("  policy: %.0f ns per decision over %d rules" % (
            statistics.median(self.raw["certgate"]["decision_ns"]), self.s["rules"]))

    def reload(self, peer, marker):
        """Rewrites the config (one more rule) and reloads through the admin
        API; returns the time to the HTTP reply in ms."""
        cfg = json.loads(json.dumps(peer.gw.config))
        cfg["rules"].insert(0, {"name": "reload-%s" % marker, "effect": "deny", "services": ["*"],
                                "users": ["nobody-%s@nowhere.example" % marker]})
        peer.gw.write_config(cfg)
        url = "http://127.0.0.1:%d/v1/reload" % peer.admin_port
        req = urllib.request.Request(url, data=b"", method="POST")
        t0 = time.monotonic()
        with urllib.request.urlopen(req, timeout=120) as resp:
            body = resp.read()
            status = resp.status
        ms = (time.monotonic() - t0) * 1e3
        if status != 200:
            raise AssertionError("reload answered %d: %s" % (status, body))
        return ms

    def bench_reload(self):
        n = min(self.s["reload_sessions"], self.max_sessions)
        cfg = self.policy_config(self.upstream_port)
        peer = Certgate(self, self.upstream_port, "reload", config=cfg, admin=True)
        peer.start()
        p = None
        try:
            for run in range(self.runs):  # the rules alone, no session
                self.record("certgate", "reload_ms_0", self.reload(peer, "empty%d" % run))
            sni = ",".join(s["name"] for s in cfg["services"])
            p, _ = self.open_sessions(peer.port, n, sni=sni)
            time.sleep(0.5)
            starts = peer.count_events("session.start")
            ends0 = peer.count_events("session.end")
            for run in range(self.runs):
                self.record("certgate", "reload_ms_live", self.reload(peer, "live%d" % run))
            ok_reloads = peer.count_events("admin.reload")
            time.sleep(0.3)
            ends1 = peer.count_events("session.end")
            alive, dropped = self.ping_sessions(p)
            self.extra["reload"] = {"sessions": n, "session_start_events": starts,
                                    "session_end_during_reloads": ends1 - ends0,
                                    "alive_after": alive, "dropped_after": dropped,
                                    "admin_reload_events": ok_reloads}
            self.record("certgate", "reload_sessions_dropped", (ends1 - ends0) + (n - alive))
            log("  reload: %.1f ms with %d rules and %d live sessions (%.1f ms with none); "
                "%d of %d sessions alive after %d reloads"
                % (statistics.median(self.raw["certgate"]["reload_ms_live"]), len(cfg["rules"]),
                   n, statistics.median(self.raw["certgate"]["reload_ms_0"]), alive, n,
                   self.runs))
        finally:
            if p:
                self.close_sessions(p)
            peer.stop()

    # -- all ------------------------------------------------------------------

    def versions(self):
        v = {}
        for name in self.peers:
            try:
                v[name] = PEER_CLASSES[name].version()
            except Exception as e:  # noqa: BLE001 — a version is informative only
                v[name] = "? (%s)" % e
        v["openssl"] = subprocess.run(["openssl", "version"], capture_output=True,
                                      text=True).stdout.strip()
        v["kernel"] = platform.release()
        v["cpu"] = cpu_model()
        v["cores"] = os.cpu_count()
        return v

    def run(self):
        t0 = time.monotonic()
        self.setup()
        log("checking the peers negotiate alike")
        self.check_alike()
        phases = [("cpu", "handshakes and throughput", self.bench_cpu),
                  ("idle", "idle sessions", self.bench_idle),
                  ("pg", "pgbench", self.bench_pgbench)]
        if "certgate" in self.peers:
            phases += [("policy", "policy decisions", self.bench_policy),
                       ("reload", "reload with live sessions", self.bench_reload)]
        versions = self.versions()  # now: the tree may change during a long run
        self.extra["loadavg_start"] = loadavg()
        self.extra["crypto_floor"] = None if SMOKE else crypto_floor()
        for key, title, fn in phases:
            if key in self.args.skip:
                continue
            log("%s (%d run%s)" % (title, self.runs, "s" if self.runs > 1 else ""))
            try:
                fn()
            except Exception as e:  # noqa: BLE001 — keep what the other phases measure
                if SMOKE:
                    raise
                log(traceback.format_exc())
                self.problems.append("phase %s failed: %s" % (key, str(e)[:600]))
        self.extra["loadavg_end"] = loadavg()
        return {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": self.args.mode,
            "runs": self.runs,
            "sizes": self.s,
            "max_sessions": self.max_sessions,
            "nofile_hard_limit": self.hard_nofile,
            "peers": self.peers,
            "versions": versions,
            "raw": self.raw,
            "extra": self.extra,
            "problems": self.problems,
            "seconds": round(time.monotonic() - t0, 1),
        }


def crypto_floor():
    """OpenSSL's own cost of the server side of one full mTLS handshake here:
    one ECDSA P-256 sign (CertificateVerify), two verifies (the client
    certificate's signature, the client's CertificateVerify) and two X25519
    operations (`openssl speed`, CPU time per operation)."""
    r = subprocess.run(["openssl", "speed", "-seconds", "1", "ecdsap256", "ecdhx25519"],
                       capture_output=True, text=True, timeout=60)
    ecdsa = re.search(r"256 bits ecdsa \(nistp256\)\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)\s+([\d.]+)",
                      r.stdout)
    x25519 = re.search(r"253 bits ecdh \(X25519\)\s+([\d.]+)s\s+([\d.]+)", r.stdout)
    if not ecdsa or not x25519:
        return None
    sign, verify = 1e6 / float(ecdsa.group(3)), 1e6 / float(ecdsa.group(4))
    dh = 1e6 / float(x25519.group(2))
    return {"sign_us": round(sign, 1), "verify_us": round(verify, 1), "x25519_us": round(dh, 1),
            "handshake_floor_us": round(sign + 2 * verify + 2 * dh, 1)}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# --------------------------------------------------------------------------
# report


def median(values):
    return statistics.median(values) if values else None


def fmt(v, digits=None):
    if v is None:
        return "—"
    if isinstance(v, int):
        return "{:,}".format(v)
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return "{:,.{d}f}".format(v, d=digits)


def table_rows(res):
    """(label, metric, lower_is_better, target text, target ratio) per line;
    SHORT holds the chart's label of each metric."""
    sizes = sorted(set(min(n, res["max_sessions"]) for n in res["sizes"]["idle"]))
    rows = [
        ("proxy CPU µs per full mTLS handshake", "hs_cpu_us", True, "≤ 0.8×", 0.8),
        ("… certgate with `verify_cache: false` (chain verified every time)",
         "hs_cpu_us_nocache", True, "≤ 0.8×", 0.8),
        ("handshakes per second (wall, %d in flight)" % res["sizes"]["hs_conc"], "hs_per_s",
         False, "", None),
        ("MB forwarded per proxy CPU-second, 1 connection", "mb_per_cpu_s_1", False, "≥ 1.5×", 1.5),
        ("MB forwarded per proxy CPU-second, 8 connections", "mb_per_cpu_s_8", False, "≥ 1.5×",
         1.5),
        ("MB/s forwarded (wall), 1 connection", "mb_per_s_1", False, "", None),
        ("MB/s forwarded (wall), 8 connections", "mb_per_s_8", False, "", None),
    ]
    for n in sizes:
        rows.append(("RSS KiB per idle session, %s sessions" % "{:,}".format(n),
                     "rss_kib_per_session_%d" % n, True, "≤ 0.5×", 0.5))
    for c in res["sizes"]["pg_clients"]:
        rows.append(("pgbench -S TPS, c=%d" % c, "pg_tps_c%d" % c, False, "≥ 1.0×", 1.0))
        rows.append(("pgbench -S latency ms, c=%d" % c, "pg_lat_ms_c%d" % c, True, "", None))
        rows.append(("proxy CPU µs per pgbench transaction, c=%d" % c, "pg_cpu_us_per_txn_c%d" % c,
                     True, "", None))
    return rows


def short_label(metric):
    fixed = {"hs_cpu_us": "CPU per\\nhandshake ↓",
             "hs_cpu_us_nocache": "CPU per handshake\\nverify cache off ↓", "hs_per_s": "handshakes\\nper second",
             "mb_per_cpu_s_1": "MB per CPU-s\\n1 connection", "mb_per_cpu_s_8":
             "MB per CPU-s\\n8 connections"}
    if metric in fixed:
        return fixed[metric]
    m = re.match(r"rss_kib_per_session_(\d+)$", metric)
    if m:
        return "RSS per idle\\nsession, %s ↓" % "{:,}".format(int(m.group(1)))
    m = re.match(r"pg_tps_c(\d+)$", metric)
    if m:
        return "pgbench TPS\\nc=%s" % m.group(1)
    return metric


def summarize(res):
    """Medians, ratios to HAProxy, and the target verdicts."""
    med = {p: {m: median(v) for m, v in d.items()} for p, d in res["raw"].items()}
    res["medians"] = med
    lines = []
    for label, metric, lower, target, ratio_target in table_rows(res):
        # a certgate-only variant compares with HAProxy's figure of the same thing
        base = med.get("haproxy", {}).get(metric.replace("_nocache", ""))
        line = {"label": label, "metric": metric, "lower_is_better": lower, "target": target,
                "values": {}, "ratios": {}}
        for p in ["direct"] + res["peers"]:
            v = med.get(p, {}).get(metric)
            if v is None:
                continue
            line["values"][p] = v
            if base:
                line["ratios"][p] = v / base
        if not line["values"]:
            continue
        r = line["ratios"].get("certgate")
        if ratio_target is not None and r is not None:
            line["met"] = r <= ratio_target if lower else r >= ratio_target
        lines.append(line)
    res["lines"] = lines
    cg = med.get("certgate", {})
    only = []
    if cg.get("decision_ns") is not None:
        only.append({"label": "policy decision, %s rules (ns)" % "{:,}".format(res["sizes"]["rules"]),
                     "value": cg["decision_ns"], "target": "≤ 2,000 ns",
                     "met": cg["decision_ns"] <= 2000})
        only.append({"label": "policy load, %s rules (ms, polbench)" % "{:,}".format(
            res["sizes"]["rules"]), "value": cg.get("policy_load_ms"), "target": "", "met": None})
    if cg.get("reload_ms_live") is not None:
        n = res["extra"].get("reload", {}).get("sessions", 0)
        only.append({"label": "reload, %s rules, %s live sessions (ms to the HTTP reply)" % (
            "{:,}".format(res["sizes"]["rules"]), "{:,}".format(n)),
            "value": cg["reload_ms_live"], "target": "≤ 100 ms", "met": cg["reload_ms_live"] <= 100})
        only.append({"label": "reload, %s rules, no session (ms)" % "{:,}".format(
            res["sizes"]["rules"]), "value": cg.get("reload_ms_0"), "target": "", "met": None})
        if cg.get("reload_ms_0") is not None and n:
            only.append({"label": "reload: added time per live session (µs)",
                         "value": (cg["reload_ms_live"] - cg["reload_ms_0"]) / n * 1e3,
                         "target": "", "met": None})
        dropped = int(max(res["raw"]["certgate"].get("reload_sessions_dropped", [0])))
        only.append({"label": "sessions wrongly dropped by %d reloads (session.end + failed pings)"
                     % res["runs"], "value": dropped, "target": "0", "met": dropped == 0})
    res["certgate_only"] = only
    return res


def markdown(res):
    peers = res["peers"]
    out = []
    out.append("# certgate benchmark, %s" % res["date"])
    out.append("")
    out.append("Medians of %d run%s (`%s` sizes); in brackets each figure's ratio to HAProxy."
               % (res["runs"], "s" if res["runs"] > 1 else "", res["mode"]))
    out.append("")
    heads = ["measurement", "direct TLS"] + [PEER_CLASSES[p].label for p in peers] + \
        ["certgate target", "met"]
    out.append("| " + " | ".join(heads) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(heads) - 3) + ["---", "---"]) + "|")
    for line in res["lines"]:
        cells = [line["label"] + (" ↓" if line["lower_is_better"] else " ↑")]
        d = line["values"].get("direct")
        cells.append(fmt(d) if d is not None else "")
        for p in peers:
            v = line["values"].get(p)
            r = line["ratios"].get(p)
            if v is None:
                cells.append("—")
            elif p == "haproxy" or r is None:
                cells.append(fmt(v))
            else:
                cells.append("%s (%.2f×)" % (fmt(v), r))
        cells.append(line["target"])
        met = line.get("met")
        cells.append("" if met is None else ("yes" if met else "**no**"))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("↓ lower is better, ↑ higher is better. \"direct TLS\" is pgbench straight to "
               "PostgreSQL with its own TLS (sslmode=require, the same client certificate).")
    if res.get("certgate_only"):
        out.append("")
        out.append("| certgate only | median | target | met |")
        out.append("|---|---:|---|---|")
        for row in res["certgate_only"]:
            met = row["met"]
            out.append("| %s | %s | %s | %s |" % (
                row["label"], fmt(row["value"]), row["target"],
                "" if met is None else ("yes" if met else "**no**")))
    out.append("")
    out.append("Versions:")
    out.append("")
    order = [p for p in PEERS if p in res["versions"]] + ["openssl", "kernel", "cpu", "cores"]
    for k in order + sorted(set(res["versions"]) - set(order)):
        if k in res["versions"]:
            out.append("- %s: %s" % (k, res["versions"][k]))
    if res["extra"].get("postgres"):
        out.append("- postgres: %s" % res["extra"]["postgres"])
    out.append("")
    notes = ["Every peer negotiated TLS 1.3 / TLS_AES_128_GCM_SHA256 / X25519 with the client "
             "certificate verified, and refused a client without one (checked each run).",
             "Sizes: %s handshakes per run (%d in flight, %d client threads); %d MiB each way "
             "per stream measurement; pgbench %d s per point, scale %d; policy %s rules over %d "
             "services." % ("{:,}".format(res["sizes"]["hs"]), res["sizes"]["hs_conc"],
                            res["sizes"]["hs_threads"], res["sizes"]["stream"] // MiB,
                            res["sizes"]["pg_seconds"], res["sizes"]["pg_scale"],
                            "{:,}".format(res["sizes"]["rules"]), res["sizes"]["services"])]
    if res["max_sessions"] < max(res["sizes"]["idle"]):
        notes.append("Idle sessions capped at %s for every peer: this machine's hard "
                     "RLIMIT_NOFILE is %s (raising it needs CAP_SYS_RESOURCE, which this sandbox "
                     "does not grant); a proxy holds two descriptors per session and stunnel "
                     "admits at most 125/256 of its limit as clients."
                     % ("{:,}".format(res["max_sessions"]), "{:,}".format(
                         res["nofile_hard_limit"])))
    thr = {p: res["medians"].get(p, {}).get("threads_at_%d" % res["max_sessions"])
           for p in peers}
    if any(thr.values()):
        notes.append("Threads at %s sessions: %s." % ("{:,}".format(res["max_sessions"]), ", ".join(
            "%s %d" % (p, t) for p, t in thr.items() if t)))
    if res["problems"]:
        notes.append("Problems seen: " + "; ".join(res["problems"]))
    floor = res["extra"].get("crypto_floor")
    if floor:
        notes.append("OpenSSL's crypto floor for the server side of one full handshake, measured "
                     "at the start (`openssl speed`): %.0f µs (ECDSA P-256 sign %.0f + 2 × verify "
                     "%.0f + 2 × X25519 %.0f)." % (floor["handshake_floor_us"], floor["sign_us"],
                                                   floor["verify_us"], floor["x25519_us"]))
    notes.append("Whole run: %.0f s; load average %s at the start, %s at the end (other "
                 "work on the machine inflates CPU times and lowers rates: compare ratios "
                 "within one run)." % (res["seconds"], res["extra"].get("loadavg_start", "?"),
                                       res["extra"].get("loadavg_end", "?")))
    for n in notes:
        out.append("- " + n)
    out.append("")
    return "\n".join(out)


COLORS = {"nginx": "#2e8b57", "stunnel": "#e69f00", "certgate": "#8a2be2"}


def chart(res, out_dir):
    """ratios.png: each peer's ratio to HAProxy per measurement (log scale)."""
    gnuplot = tool("gnuplot")
    if not gnuplot:
        return None
    others = [p for p in res["peers"] if p != "haproxy"]
    lines = [ln for ln in res["lines"] if not ln["metric"].startswith(("mb_per_s", "pg_lat",
                                                                       "pg_cpu"))]
    if not others or not lines:
        return None
    targets = {ln["metric"]: t for _, m, _, _, t in table_rows(res) for ln in lines
               if ln["metric"] == m}
    dat = os.path.join(out_dir, "ratios.dat")
    with open(dat, "w") as f:
        f.write("# measurement " + " ".join(others) + " certgate-target\n")
        for ln in lines:
            vals = ["%.4f" % ln["ratios"][p] if p in ln["ratios"] else "NaN" for p in others]
            t = targets.get(ln["metric"])
            vals.append("%.2f" % t if t and "certgate" in others else "NaN")
            f.write('"%s" %s\n' % (short_label(ln["metric"]), " ".join(vals)))
    png = os.path.join(out_dir, "ratios.png")
    gp = os.path.join(out_dir, "ratios.gp")
    with open(gp, "w") as f:
        f.write("""set terminal pngcairo size 1400,700 font "DejaVu Sans,10"
set output '%(png)s'
set title "Ratio to HAProxy (1 = HAProxy; log scale), medians of %(runs)d run(s), %(date)s\\n↓ = lower is better; hatched: certgate's target"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set yrange [0.0625:16]
set ytics ("1/16" 0.0625, "1/8" 0.125, "1/4" 0.25, "1/2" 0.5, "1" 1, "2" 2, "4" 4, "8" 8, "16" 16)
set grid ytics
set key top left
set xtics font ",10"
set bmargin 5
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb "black"
plot %(plots)s
""" % dict(png=png, runs=res["runs"], date=res["date"], plots=", ".join(
            ["'%s' using %d:xtic(1) title '%s' lc rgb '%s'" % (dat, i + 2, p, COLORS.get(p, "gray"))
             for i, p in enumerate(others)] +
            (["'%s' using %d title 'certgate target' fill pattern 4 lc rgb '%s'"
              % (dat, len(others) + 2, COLORS["certgate"])] if "certgate" in others else []))))
    r = subprocess.run([gnuplot, gp], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("gnuplot failed: " + r.stderr)
    return png


# --------------------------------------------------------------------------
# binaries


BINS = {}


def find_binaries(args):
    env = {"certgate": "CERTGATE_BIN", "upstream": "BENCH_UPSTREAM", "loadgen": "BENCH_LOADGEN",
           "polbench": "BENCH_POLBENCH"}
    if all(os.environ.get(v) for v in env.values()) and not args.build:
        for k, v in env.items():
            BINS[k] = os.environ[v]
    else:
        build = os.path.abspath(args.build or os.path.join(ROOT, "build-release"))
        if not os.path.exists(os.path.join(build, "build.ninja")):
            log("configuring a release build in %s" % build)
            subprocess.run(["meson", "setup", build, ROOT, "--buildtype=release"], check=True,
                           stdout=subprocess.DEVNULL)
        subprocess.run(["ninja", "-C", build], check=True, stdout=subprocess.DEVNULL)
        BINS.update(certgate=os.path.join(build, "gateway", "certgate"),
                    upstream=os.path.join(build, "tests", "bench", "bench-upstream"),
                    loadgen=os.path.join(build, "tests", "bench", "bench-loadgen"),
                    polbench=os.path.join(build, "tests", "bench", "bench-polbench"))
    harness.BIN = BINS["certgate"]


def missing_tools(peers):
    need = {"haproxy": "haproxy", "nginx": "nginx", "stunnel": "stunnel4", "certgate": None}
    missing = [p for p in peers if need[p] and not tool(need[p])]
    if "nginx" in peers and "nginx" not in missing and \
            not os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
        missing.append("nginx (libnginx-mod-stream)")
    for name in ("pgbench",):
        if not tool(name):
            missing.append(name)
    return missing


# --------------------------------------------------------------------------
# main


def smoke(args):
    """CI: the script works end to end with tiny counts (numbers > 0), TAP."""
    global SMOKE
    SMOKE = True
    args.only = args.only or "haproxy,certgate"
    missing = missing_tools(args.only.split(","))
    if missing:
        print("1..0 # SKIP not installed: %s (deploy/install-deps)" % ", ".join(missing))
        return 0
    checks = []
    res = None
    bench = None
    error = None
    try:
        find_binaries(args)
        bench = Bench(args, SIZES["smoke"])
        res = summarize(bench.run())
        out = tempfile.mkdtemp(prefix="certgate-bench-out-")
        try:
            md = markdown(res)
            with open(os.path.join(out, "results.md"), "w") as f:
                f.write(md)
            png = chart(res, out)
            checks.append(("results.md written", "certgate" in md and "HAProxy" in md))
            checks.append(("chart drawn", png is None or os.path.getsize(png) > 1000))
        finally:
            shutil.rmtree(out, ignore_errors=True)
    except Exception:
        error = traceback.format_exc()
    finally:
        if bench:
            bench.close()
    if error:
        print("1..1")
        print("not ok 1 - bench.py --smoke ran")
        for line in error.splitlines():
            print("# " + line)
        return 1
    med = res["medians"]
    for p in res["peers"]:
        m = med[p]
        checks.append(("%s: CPU per handshake > 0" % p, (m.get("hs_cpu_us") or 0) > 0))
        checks.append(("%s: handshakes per second > 0" % p, (m.get("hs_per_s") or 0) > 0))
        checks.append(("%s: MB per CPU-second > 0 (1 and 8 connections)" % p,
                       (m.get("mb_per_cpu_s_1") or 0) > 0 and (m.get("mb_per_cpu_s_8") or 0) > 0))
        n = min(res["sizes"]["idle"])
        checks.append(("%s: idle sessions measured" % p,
                       m.get("rss_kib_per_session_%d" % n) is not None))
        checks.append(("%s: pgbench TPS > 0" % p, (m.get("pg_tps_c1") or 0) > 0))
    checks.append(("direct TLS pgbench TPS > 0", (med["direct"].get("pg_tps_c1") or 0) > 0))
    checks.append(("policy decision time > 0", (med["certgate"].get("decision_ns") or 0) > 0))
    checks.append(("reload time > 0", (med["certgate"].get("reload_ms_live") or 0) > 0))
    checks.append(("no session dropped by reloads",
                   med["certgate"].get("reload_sessions_dropped") == 0))
    checks.append(("certgate stopped cleanly", not res["problems"]))
    print("1..%d" % len(checks))
    failed = 0
    for i, (name, ok) in enumerate(checks, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
        failed += not ok
    if failed:
        print("# " + json.dumps(res["medians"]))
        for p in res["problems"]:
            print("# problem: " + p)
    print("# smoke run took %.1f s" % res["seconds"])
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 run, small sizes (about 2 minutes)")
    ap.add_argument("--smoke", action="store_true", help="CI: seconds, TAP output, no files kept")
    ap.add_argument("--runs", type=int, help="repetitions (default 5; --quick: 1)")
    ap.add_argument("--out", help="results folder (default tests/bench/results/<date>, "
                    "<date>-quick for --quick, <date>-partial with --only/--skip/other --runs)")
    ap.add_argument("--only", help="comma-separated peers (default all: %s)" % ",".join(PEERS))
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: cpu (handshakes "
                    "and throughput), idle (memory per idle session), pg (pgbench), policy "
                    "(decision time), reload (certgate reload with live sessions)")
    ap.add_argument("--build", help="build folder to use and update (default build-release)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (configs, logs)")
    ap.add_argument("--report", metavar="DIR", help="only rewrite DIR/results.md and the chart "
                    "from DIR/results.json (no measurement)")
    args = ap.parse_args()
    if args.report:
        with open(os.path.join(args.report, "results.json")) as f:
            res = summarize(json.load(f))
        write_report(res, args.report)
        return 0
    args.skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    if set(args.skip) - {"cpu", "idle", "pg", "policy", "reload"}:
        ap.error("--skip takes cpu, idle, pg, policy, reload")
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.only:
        bad = [p for p in args.only.split(",") if p not in PEERS]
        if bad or "haproxy" not in args.only.split(","):
            ap.error("--only takes peers among %s and must include haproxy (the reference)"
                     % ",".join(PEERS))
    if args.smoke:
        return smoke(args)

    missing = missing_tools(args.only.split(",") if args.only else PEERS)
    if missing:
        print("bench: not installed: %s (run deploy/install-deps)" % ", ".join(missing),
              file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench: run as root (PostgreSQL runs as the postgres user)", file=sys.stderr)
        return 2
    find_binaries(args)
    bench = Bench(args, SIZES[args.mode])
    try:
        res = summarize(bench.run())
    finally:
        bench.close()
    partial = args.only or args.skip or (args.runs and args.runs != SIZES["full"]["runs"])
    suffix = "-quick" if args.quick else "-partial" if partial else ""
    out = args.out or os.path.join(HERE, "results", datetime.date.today().isoformat() + suffix)
    write_report(res, out)
    return 0


def write_report(res, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    md = markdown(res)
    png = chart(res, out)
    if png:
        md += "\n![ratios to HAProxy](ratios.png)\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md)
    print(md)
    print("written: %s" % out, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
