"""The proxies under test, each configured alike (or, with default_tls,
with its own default TLS settings), forwarding to one upstream: HAProxy,
nginx (stream), stunnel and certgate. `workers` sets each one's number of
event loops (HAProxy nbthread, nginx worker_processes, certgate
gateway.workers; stunnel has a thread per connection whatever it is)."""

import os
import re
import subprocess

from benchlib import (CLIENT_GROUP, ROOT, SERVICE, Spawned, dpkg_version, harness, proc_tree,
                      rss_kib, cpu_seconds, tool, wait_port)

# --------------------------------------------------------------------------
# the proxies


class Peer:
    name = "?"
    label = "?"

    def __init__(self, bench, upstream_port, tag, workers=1, default_tls=False):
        self.bench = bench
        self.workers = workers          # event loops (threads / processes)
        self.default_tls = default_tls  # the program's own TLS defaults, not the bench's
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
    BENCH_TLS = ("ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256 curves X25519 "
                 "no-tls-tickets")

    def start(self):
        b = self.bench
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("""global
    nbthread %(workers)d
    maxconn %(maxconn)d
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe
    bind 127.0.0.1:%(port)d ssl crt %(pem)s ca-file %(ca)s verify required%(tls)s
    default_backend be
backend be
    server up 127.0.0.1:%(up)d
""" % dict(maxconn=b.max_sessions + 50, port=self.port, pem=b.server_pem, ca=b.ca.crt,
                 up=self.upstream_port, workers=self.workers,
                 tls="" if self.default_tls else " " + self.BENCH_TLS))
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
worker_processes %(workers)d;
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
                 key=b.server.key, ca=b.ca.crt, up=self.upstream_port, workers=self.workers))
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


class NoWorkers(Exception):
    """certgate was asked for N > 1 workers and does not have them."""


class Certgate(Peer):
    name, label = "certgate", "certgate"

    def __init__(self, bench, upstream_port, tag, config=None, admin=False, gateway=None,
                 own_listen=False, service=None, **kw):
        super().__init__(bench, upstream_port, tag, **kw)
        self.config = config
        self.gateway_extra = gateway or {}  # extra "gateway" keys
        self.service_extra = service or {}  # extra keys of the first service
        # the first service listens on the port itself (no SNI needed:
        # openssl s_time sends none; postgres mode), not gateway.listen
        self.own_listen = own_listen
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
        if self.own_listen:
            cfg["gateway"]["listen"] = []
            cfg["services"][0]["listen"] = "127.0.0.1:%d" % self.port
        else:
            cfg["gateway"]["listen"] = ["127.0.0.1:%d" % self.port]
        cfg["gateway"].update(self.gateway_extra)
        cfg["services"][0].update(self.service_extra)
        # gateway.workers (issue 16): written whenever this certgate knows
        # it (its default is the number of CPUs, not 1); a certgate without
        # it runs one loop, which only the 1-worker case may stand for
        if self.bench.certgate_workers:
            cfg["gateway"]["workers"] = self.workers
        elif self.workers != 1:
            raise NoWorkers("certgate has no gateway.workers yet")
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

