"""Integration test harness: real processes on loopback, TAP output.

Everything a test needs is created at run time in a temporary folder:
a development CA (through `certgate ca`), a throwaway PostgreSQL cluster
(run as the postgres user, port chosen at run time, socket in the folder),
certgate serve / connect processes, and clients (psql, Python ssl).

Nothing sleeps a fixed time waiting for readiness: ports, files and audit
events are polled with a deadline.

Environment:
  CERTGATE_BIN      the certgate binary (set by meson)
  CERTGATE_WRAPPER  command prefix for certgate serve (e.g. valgrind ...)
  CERTGATE_SLOW     multiplier for every deadline (sanitizers, valgrind)
  CERTGATE_KEEP     keep the temporary folder for inspection
  CERTGATE_WORKERS  gateway.workers for every gateway whose configuration
                    does not name it (the suite runs with 1, 2 and 4)
"""

import glob
import json
import os
import pwd
import shlex
import shutil
import signal
import random
import socket
import socketserver
import ssl
import subprocess
import threading
import sys
import tempfile
import time
import traceback

BIN = os.environ.get("CERTGATE_BIN", "certgate")
WRAPPER = shlex.split(os.environ.get("CERTGATE_WRAPPER", ""))
SLOW = float(os.environ.get("CERTGATE_SLOW", "1"))
WORKERS = os.environ.get("CERTGATE_WORKERS")


def deadline(seconds):
    return time.monotonic() + seconds * SLOW


def wait_for(predicate, timeout=10.0, what="condition", interval=0.02):
    """Polls predicate until it returns a truthy value; returns that value."""
    end = deadline(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout * SLOW, what))
        time.sleep(interval)


def whole_lines(text):
    """The complete lines of a file being appended to: a line being written
    may be read half-way, so a last line without its newline is left out.
    Split on "\n" only: str.splitlines() also breaks at U+0085, U+2028 and
    U+001C-U+001E, which a JSON line may hold as they are (a client's
    db user, say)."""
    end = text.rfind("\n") + 1
    return text[:end].split("\n")[:-1] if end else []


def _ephemeral_start():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS_GIVEN = set()


def free_port():
    """A port free now, chosen below the kernel's ephemeral range: a port
    the kernel handed out (bind to 0) is the next outgoing connection's
    too, and another test running meanwhile took one before its gateway
    bound it ("address already in use"). Never the same twice here."""
    top = _ephemeral_start()
    low = max(1024, top - 12000)
    rnd = random.SystemRandom()
    for _ in range(200):
        port = rnd.randrange(low, top)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def certgate(*args, check=True, timeout=60, env=None):
    """Runs a certgate subcommand to completion."""
    proc = subprocess.run([BIN] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout * SLOW, env=env)
    if check and proc.returncode != 0:
        raise AssertionError("certgate %s failed (%d): %s" % (
            " ".join(map(str, args)), proc.returncode, proc.stderr.strip()))
    return proc


class CA:
    """A development CA made with `certgate ca`."""

    def __init__(self, folder, name="certgate test CA", parent=None):
        self.dir = folder
        args = ["ca", "init", "--dir", folder, "--name", name]
        if parent is not None:
            args += ["--parent", parent.dir]
        certgate(*args)
        self.crt = os.path.join(folder, "ca.crt")
        self.key = os.path.join(folder, "ca.key")
        self.crl = os.path.join(folder, "ca.crl")

    def issue(self, prefix, user, groups=(), device_id=None, trust=None, ttl=None, extra=()):
        out = os.path.join(self.dir, prefix)
        args = ["ca", "issue", "--dir", self.dir, "--out", out, "--user", user]
        for g in groups:
            args += ["--group", g]
        if device_id is not None:
            args += ["--device-id", device_id]
        if trust is not None:
            args += ["--device-trust", trust]
        if ttl is not None:
            args += ["--ttl", ttl]
        args += list(extra)
        certgate(*args)
        return Cert(out + ".crt", out + ".key")

    def server(self, prefix, dns=("localhost",), ips=("127.0.0.1",), extra=()):
        out = os.path.join(self.dir, prefix)
        args = ["ca", "server", "--dir", self.dir, "--out", out]
        for d in dns:
            args += ["--dns", d]
        for ip in ips:
            args += ["--ip", ip]
        args += list(extra)
        certgate(*args)
        return Cert(out + ".crt", out + ".key")

    def revoke(self, *certs):
        args = ["ca", "revoke", "--dir", self.dir]
        for c in certs:
            args += ["--cert", c.crt]
        certgate(*args)
        return self.crl

    def write_crl(self, extra=()):
        certgate("ca", "crl", "--dir", self.dir, *extra)
        return self.crl


class Cert:
    def __init__(self, crt, key):
        self.crt = crt
        self.key = key


def pg_bin(name):
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/" + name))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return found[-1]


class Postgres:
    """A throwaway PostgreSQL cluster configured the way the seed document
    intends: TLS on, ssl_ca_file = the login CA, hostssl ... cert."""

    def __init__(self, folder, server_cert, login_ca, hba_lines=None, ident_lines=None):
        self.dir = folder
        self.port = free_port()
        pw = pwd.getpwnam("postgres")
        os.makedirs(folder, exist_ok=True)
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(folder, "data")
        for src, name in ((server_cert.crt, "server.crt"), (server_cert.key, "server.key"),
                          (login_ca, "login-ca.crt")):
            dst = os.path.join(folder, name)
            shutil.copy(src, dst)
            os.chown(dst, pw.pw_uid, pw.pw_gid)
            os.chmod(dst, 0o600)
        self._as_postgres(pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8", "--locale", "C")
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "'%s'" % folder,
            "ssl": "on",
            "ssl_cert_file": "'%s/server.crt'" % folder,
            "ssl_key_file": "'%s/server.key'" % folder,
            "ssl_ca_file": "'%s/login-ca.crt'" % folder,
            "fsync": "off",
            "max_connections": "100",
            "log_connections": "on",
        }
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        hba = hba_lines or [
            "local all all trust",
            # the seed's flow, done right for PostgreSQL 14+: the login
            # certificate is verified by PostgreSQL itself, its CN mapped to a role
            "hostssl all all 127.0.0.1/32 cert map=login",
        ]
        ident = ident_lines or ["login /^([^@]+)@.*$ \\1"]
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("\n".join(hba) + "\n")
        with open(os.path.join(self.data, "pg_ident.conf"), "w") as f:
            f.write("\n".join(ident) + "\n")
        self._as_postgres(pg_bin("pg_ctl"), "-D", self.data, "-l",
                          os.path.join(folder, "postgres.log"), "-w", "-t", "60", "start")

    def _as_postgres(self, *args):
        proc = subprocess.run(["runuser", "-u", "postgres", "--"] + list(args),
                              capture_output=True, text=True, cwd=self.dir)
        if proc.returncode != 0:
            raise RuntimeError("%s failed: %s %s" % (args[0], proc.stdout, proc.stderr))
        return proc

    def sql(self, statement, db="postgres"):
        """Runs SQL as the postgres superuser over the unix socket."""
        proc = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.dir,
                               "-p", str(self.port), "-U", "postgres", "-d", db, "-c", statement],
                              capture_output=True, text=True, timeout=30 * SLOW)
        if proc.returncode != 0:
            raise AssertionError("sql %r failed: %s" % (statement, proc.stderr))
        return proc.stdout.strip()

    def stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", pg_bin("pg_ctl"), "-D", self.data,
                        "-m", "immediate", "-w", "stop"], capture_output=True, cwd=self.dir)


def psql(port, cert, sslrootcert, sql, user="alice", db="postgres", host="127.0.0.1",
         timeout=30, sslmode="verify-full", extra_env=None, background=False):
    """psql through whatever listens on port, with a login certificate."""
    conn = ("host=%s port=%d user=%s dbname=%s sslmode=%s sslrootcert=%s connect_timeout=10"
            % (host, port, user, db, sslmode, sslrootcert))
    if cert is not None:
        conn += " sslcert=%s sslkey=%s" % (cert.crt, cert.key)
    env = dict(os.environ, PGAPPNAME="certgate-test")
    env.pop("PGPASSWORD", None)
    if extra_env:
        env.update(extra_env)
    args = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", conn, "-c", sql]
    if background:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout * SLOW, env=env)


class Process:
    """A long-running certgate process with its stderr kept in a file."""

    def __init__(self, args, log_path, wrapper=()):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(list(wrapper) + [BIN] + [str(a) for a in args],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def signal(self, signum):
        self.proc.send_signal(signum)

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout=20):
        try:
            return self.proc.wait(timeout=timeout * SLOW)
        finally:
            self.log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Gateway(Process):
    """certgate serve with a configuration written from a dict."""

    def __init__(self, folder, config, name="gateway", wait=True):
        self.folder = folder
        self.config_path = os.path.join(folder, name + ".json")
        self.audit_path = config.get("audit", {}).get("path", os.path.join(folder, name + ".audit"))
        config.setdefault("audit", {})["path"] = self.audit_path
        self.config = config
        self.write_config(config)
        super().__init__(["serve", "--config", self.config_path],
                         os.path.join(folder, name + ".log"), WRAPPER)
        if wait:
            self.wait_ready()

    def write_config(self, config):
        gw = config.get("gateway")
        if WORKERS and isinstance(gw, dict) and "workers" not in gw:
            gw["workers"] = int(WORKERS)
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=2)
        os.replace(tmp, self.config_path)
        self.config = config

    def ports(self):
        ports = [int(a.rsplit(":", 1)[1]) for a in self.config["gateway"].get("listen", [])]
        ports += [int(s["listen"].rsplit(":", 1)[1]) for s in self.config["services"]
                  if "listen" in s]
        return ports

    def wait_ready(self):
        def ready():
            if not self.alive():
                raise AssertionError("certgate serve exited (%s): %s"
                                     % (self.proc.returncode, self.output()))
            # gateway.start is written once every listener is bound: no probe
            # connection needed (it would show up in connection counts)
            return self.events("gateway.start")
        wait_for(ready, 20, "the gateway to listen")

    def events(self, name=None, **match):
        """Audit events so far (every line must parse), optionally filtered."""
        try:
            with open(self.audit_path) as f:
                text = f.read()
        except FileNotFoundError:
            return []
        events = [json.loads(line) for line in whole_lines(text) if line]
        return [e for e in events
                if (name is None or e["event"] == name)
                and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, name, timeout=10, **match):
        found = wait_for(lambda: self.events(name, **match), timeout,
                         "audit event %s %s" % (name, match or ""))
        return found[-1]

    def reload(self):
        self.signal(signal.SIGHUP)

    def stop(self, expect=0):
        """SIGTERM; the exit code must be `expect` (0: a clean drain; also no
        memory errors under valgrind/ASan)."""
        if not self.alive():
            code = self.proc.returncode
        else:
            self.signal(signal.SIGTERM)
            code = self.wait(30)
        if expect is not None and code != expect:
            raise AssertionError("certgate serve exited %s, expected %s:\n%s"
                                 % (code, expect, self.output()[-4000:]))
        return code


class Connector(Process):
    """certgate connect: the client-side tunnel."""

    def __init__(self, folder, gateway_port, service, cert, ca, name="connect", host="localhost"):
        self.port = free_port()
        super().__init__(["connect", "--gateway", "%s:%d" % (host, gateway_port),
                          "--service", service, "--listen", "127.0.0.1:%d" % self.port,
                          "--cert", cert.crt, "--key", cert.key, "--ca", ca],
                         os.path.join(folder, name + ".log"))
        # its "listening on" line, not a probe connection: a probe would be
        # tunnelled to the gateway and show up in its audit log
        wait_for(lambda: "listening on" in self.output() or not self.alive(), 10,
                 "the connector")
        if not self.alive():
            raise AssertionError("certgate connect exited: " + self.output())

    def stop(self):
        if self.alive():
            self.signal(signal.SIGTERM)
            return self.wait(15)
        return self.proc.returncode


class HoldUpstream(socketserver.ThreadingTCPServer):
    """A loopback upstream that sends banner (if any) on every connection,
    then holds it until the peer closes, and remembers what each finished
    connection received (in .received)."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, banner=b""):
        outer = self

        class Hold(socketserver.BaseRequestHandler):
            def handle(self):
                outer.accepted += 1
                got = b""
                try:
                    if banner:
                        self.request.sendall(banner)
                    while True:
                        chunk = self.request.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                except OSError:
                    pass
                outer.received.append(got)

        super().__init__(("127.0.0.1", 0), Hold)
        self.received = []
        self.accepted = 0
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


def tls_client(port, cert, ca, server_name="localhost", host="127.0.0.1", timeout=5):
    """A standard TLS client (Python's ssl) with an optional client certificate.
    Returns the connected SSLSocket (handshake done on the client's side)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.check_hostname = server_name is not None
    if cert is not None:
        ctx.load_cert_chain(cert.crt, cert.key)
    raw = socket.create_connection((host, port), timeout=timeout * SLOW)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_name)
    except Exception:
        raw.close()
        raise


def refused_by_gateway(sock):
    """After a client-side handshake: True if the gateway ends the connection
    (TLS 1.3 reports a client-certificate refusal on the first read)."""
    try:
        data = sock.recv(1)
        return data == b""
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    finally:
        sock.close()


class Fixture:
    """Per test-file resources: temp folder, CA, gateway certificate and,
    when asked for, a PostgreSQL cluster."""

    def __init__(self, with_postgres=False):
        self.dir = tempfile.mkdtemp(prefix="certgate-it-")
        os.chmod(self.dir, 0o755)  # postgres must traverse it
        self.ca = CA(os.path.join(self.dir, "ca"))
        os.chmod(self.ca.dir, 0o755)
        self.gateway_cert = self.ca.server("gateway", dns=("localhost",), ips=("127.0.0.1",))
        self.pg = None
        self.procs = []
        if with_postgres:
            pg_cert = self.ca.server("postgres", dns=("localhost",), ips=("127.0.0.1",))
            self.pg = Postgres(os.path.join(self.dir, "pg"), pg_cert, self.ca.crt)
        self.counter = 0

    def path(self, name):
        return os.path.join(self.dir, name)

    def unique(self, base):
        self.counter += 1
        return "%s%d" % (base, self.counter)

    def config(self, services, rules, gateway=None, **extra):
        port = free_port()
        gw = {
            "listen": ["127.0.0.1:%d" % port],
            "cert": self.gateway_cert.crt,
            "key": self.gateway_cert.key,
            "client_ca": self.ca.crt,
        }
        gw.update(gateway or {})
        cfg = {"gateway": gw, "services": services, "rules": rules}
        cfg.update(extra)
        return cfg

    def gateway(self, config, **kw):
        gw = Gateway(self.dir, config, name=self.unique("gw"), **kw)
        self.procs.append(gw)
        return gw

    def connector(self, gateway_port, service, cert, **kw):
        c = Connector(self.dir, gateway_port, service, cert, self.ca.crt,
                      name=self.unique("connect"), **kw)
        self.procs.append(c)
        return c

    def reap(self):
        """Kills what a test left running (a failed test's processes)."""
        for p in self.procs:
            p.kill()
        self.procs = []

    def close(self):
        if self.pg is not None:
            self.pg.stop()
        if not os.environ.get("CERTGATE_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("# kept %s" % self.dir)


def failure_context(fixture):
    """What a failed test's gateways and connectors said last, whole
    sanitizer reports first: a process that a sanitizer stopped looks to
    the test like one that just closed its connections."""
    lines = []
    for proc in getattr(fixture, "procs", []):
        if not isinstance(proc, Process):
            continue
        try:
            out = proc.output()
        except Exception:
            continue
        name = "%s (pid %s%s)" % (os.path.basename(proc.log_path), proc.proc.pid,
                                  "" if proc.proc.poll() is None
                                  else ", exited %s" % proc.proc.returncode)
        at = out.find("Sanitizer")
        if at >= 0:
            report = out[out.rfind("\n", 0, at) + 1:].splitlines()
            lines.append("%s was stopped by a sanitizer:" % name)
            lines.extend("  " + l for l in report[:80])
        elif out.strip():
            lines.append("%s, its last lines:" % name)
            lines.extend("  " + l for l in out.splitlines()[-8:])
    return lines


def run(tests, setup=None, teardown=None):
    """Runs test functions, printing TAP. setup() returns the fixture passed
    to every test; a test takes (fixture) and raises on failure."""
    print("1..%d" % len(tests), flush=True)
    fixture = None
    failed = 0
    try:
        fixture = setup() if setup else None
    except Exception:
        for i, t in enumerate(tests, 1):
            print("not ok %d - %s # setup failed" % (i, t.__name__))
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        return 1
    try:
        for i, t in enumerate(tests, 1):
            start = time.monotonic()
            try:
                t(fixture)
                print("ok %d - %s (%.2fs)" % (i, t.__name__, time.monotonic() - start),
                      flush=True)
            except Exception:
                failed += 1
                print("not ok %d - %s" % (i, t.__name__))
                for line in traceback.format_exc().splitlines():
                    print("# " + line)
                for line in failure_context(fixture):
                    print("# " + line)
                sys.stdout.flush()
            finally:
                if fixture is not None and hasattr(fixture, "reap"):
                    fixture.reap()
    finally:
        if teardown and fixture is not None:
            teardown(fixture)
    return 1 if failed else 0
