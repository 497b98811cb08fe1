"""pgbench -S through each path to one PostgreSQL 15 (issues 5 and 16), and
where each path's CPU goes. docs/performance.md, "pgbench", says why these
paths are the comparable ones.

Every pgbench speaks PostgreSQL's own TLS with the login certificate
(sslmode=require); PostgreSQL admits only `hostssl ... cert`:

  direct       pgbench → PostgreSQL (the baseline)
  tunnel       pgbench → certgate connect → mTLS → PEER → PostgreSQL: the
               connector is the same for every peer; pgbench's TLS runs end
               to end inside the tunnel (PostgreSQL checks the login
               certificate itself); certgate's service has
               require_inner_tls. Every peer stands in the same place.
  postgres     pgbench → certgate (postgres mode: answers the SSLRequest,
               terminates pgbench's TLS, decides) → TLS with a certificate
               minted for the database user → PostgreSQL. No other peer can
               stand there (none answers PostgreSQL's SSLRequest); it is
               compared with HAProxy's tunnel, the deployment that gives the
               same guarantees with HAProxy.

Each point (clients, protocol) runs every path back to back in a shuffled
order. For each: TPS, latency, and the CPU per transaction of pgbench, the
connector, the proxy and PostgreSQL (its backends included)."""

import os
import random
import re
import subprocess
import tempfile
import threading
import time

from benchlib import SERVICE, cpu_seconds, harness, log, proc_tree, reaped_cpu_seconds


def point_key(clients, protocol):
    return "c%d%s" % (clients, "" if protocol == "simple" else "_" + protocol)


class PgPaths:
    """A mixin of bench.Bench."""

    def setup_pg(self):
        pg_cert = self.ca.server("postgres", dns=("localhost",), ips=("127.0.0.1",))
        # postgres mode logs in with certificates minted by the gateway and
        # signed by its "db CA"; the others with the login certificate
        self.dbca = harness.CA(os.path.join(self.dir, "dbca"), name="certgate bench db CA")
        os.chmod(self.dbca.dir, 0o755)
        bundle = os.path.join(self.dir, "pg-client-cas.crt")
        with open(bundle, "w") as out:
            for path in (self.ca.crt, self.dbca.crt):
                with open(path) as f:
                    out.write(f.read())
        self.pg = harness.Postgres(
            os.path.join(self.dir, "pg"), pg_cert, bundle,
            hba_lines=["local all all trust",
                       # TLS and a client certificate on every path
                       "hostssl all all 127.0.0.1/32 cert map=login"],
            ident_lines=["login /^([^@]+)@.*$ \\1",  # the login certificate
                         "login bench bench"])       # the minted one (CN=bench)
        self.pg.sql("CREATE ROLE bench LOGIN SUPERUSER")
        self.pg.sql("CREATE DATABASE bench OWNER bench")
        r = subprocess.run(["pgbench", "-i", "-q", "-s", str(self.s["pg_scale"]), "-h",
                            self.pg.dir, "-p", str(self.pg.port), "-U", "bench", "bench"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("pgbench -i failed: " + r.stderr)
        with open(os.path.join(self.pg.data, "postmaster.pid")) as f:
            self.pg_pid = int(f.readline())
        self.extra["postgres"] = subprocess.run([harness.pg_bin("postgres"), "--version"],
                                                capture_output=True, text=True).stdout.strip()

    def start_pg_setup(self):
        """setup_pg in a thread; bench_pgbench waits for it."""
        def run():
            try:
                self.setup_pg()
            except Exception as e:  # noqa: BLE001 — re-raised by bench_pgbench
                self.pg_setup_error = e
        self.pg_setup_error = None
        self.pg_setup_thread = threading.Thread(target=run, daemon=True)
        self.pg_setup_thread.start()

    def pg_cpu(self):
        """PostgreSQL's CPU: every live process, and the backends reaped."""
        return cpu_seconds(proc_tree(self.pg_pid)) + reaped_cpu_seconds(self.pg_pid)

    def pg_env(self, path):
        env = dict(os.environ, PGCONNECT_TIMEOUT="10", PGSSLMODE="require",
                   PGSSLCERT=self.client.crt, PGSSLKEY=self.client.key)
        # pgbench's TLS to PostgreSQL: TLS 1.3, AES-128-GCM (PostgreSQL 15
        # offers P-256 only); to certgate's postgres mode: what the
        # connectors offer the peers (X25519 too)
        env["OPENSSL_CONF"] = self.openssl_conf if path == "postgres" else \
            self.direct_openssl_conf
        return env

    def pgbench(self, port, clients, protocol, path):
        """One pgbench run: (tps, latency ms, transactions, pgbench CPU s)."""
        args = ["pgbench", "-n", "-S", "-M", protocol, "-c", str(clients),
                "-j", str(min(clients, 2)), "-T", str(self.s["pg_seconds"]), "-h", "127.0.0.1",
                "-p", str(port), "-U", "bench", "bench"]
        with tempfile.TemporaryFile(mode="w+") as out:
            p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, text=True,
                                 env=self.pg_env(path))
            deadline = time.monotonic() + self.s["pg_seconds"] * 10 + 60
            while True:  # wait4: pgbench's own CPU time (rusage)
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    p.kill()
                    os.wait4(p.pid, 0)
                    p.returncode = -9
                    raise AssertionError("pgbench (%s) did not finish" % path)
                time.sleep(0.05)
            p.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            text = out.read()
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
        lat = re.search(r"latency average = ([\d.]+) ms", text)
        txns = re.search(r"number of transactions actually processed: (\d+)", text)
        failed = re.search(r"number of failed transactions: (\d+)", text)
        if p.returncode != 0 or not tps or not lat or not txns:
            raise AssertionError("pgbench (%s) failed (%d): %s" % (path, p.returncode,
                                                                  text[-1200:]))
        if failed and int(failed.group(1)):
            raise AssertionError("pgbench (%s): %s failed transactions" % (path, failed.group(1)))
        return (float(tps.group(1)), float(lat.group(1)), int(txns.group(1)),
                ru.ru_utime + ru.ru_stime)

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

    def pgmode_service(self):
        return {"mode": "postgres",
                "upstream_tls": {"ca": self.ca.crt, "server_name": "localhost",
                                 "client_ca_cert": self.dbca.crt,
                                 "client_ca_key": self.dbca.key}}

    def pg_tls_of(self, port, path):
        """What PostgreSQL sees of this path's connection (pg_stat_ssl)."""
        r = subprocess.run(
            ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "host=127.0.0.1 port=%d user=bench dbname=bench" % port, "-c",
             "SELECT version || ' ' || cipher || ', client ' || client_dn FROM pg_stat_ssl "
             "WHERE pid = pg_backend_pid()"],
            capture_output=True, text=True, env=self.pg_env(path), timeout=30)
        if r.returncode != 0 or not r.stdout.strip():
            raise AssertionError("psql through the %s path failed: %s" % (path, r.stderr))
        return r.stdout.strip()

    def wait_backends_gone(self, before):
        """After a pgbench: its backends exit (their CPU moves to the
        postmaster's reaped time) before PostgreSQL's CPU is read."""
        end = time.monotonic() + 5
        while len(proc_tree(self.pg_pid)) > before and time.monotonic() < end:
            time.sleep(0.05)

    def measure_path(self, path, label, port, clients, protocol, proxy=None, conn=None):
        key = point_key(clients, protocol)
        n0 = len(proc_tree(self.pg_pid))
        pg0 = self.pg_cpu()
        px0 = proxy.cpu() if proxy else 0.0
        cn0 = cpu_seconds(proc_tree(conn.pid)) if conn else 0.0
        tps, lat, txns, bench_cpu = self.pgbench(port, clients, protocol, path)
        px1 = proxy.cpu() if proxy else 0.0
        cn1 = cpu_seconds(proc_tree(conn.pid)) if conn else 0.0
        self.wait_backends_gone(n0)
        pg1 = self.pg_cpu()
        prefix = "pgmode_" if path == "postgres" else "pg_"
        who = "direct" if path == "direct" else label
        self.record(who, prefix + "tps_" + key, tps)
        self.record(who, prefix + "lat_ms_" + key, lat)
        if proxy:
            self.record(who, prefix + "cpu_us_per_txn_" + key, (px1 - px0) / txns * 1e6)
        bd = "breakdown:" + ("certgate-pg" if path == "postgres" else who)
        self.record(bd, "pgbench_us_" + key, bench_cpu / txns * 1e6)
        self.record(bd, "connector_us_" + key, (cn1 - cn0) / txns * 1e6)
        self.record(bd, "proxy_us_" + key, (px1 - px0) / txns * 1e6)
        self.record(bd, "postgres_us_" + key, (pg1 - pg0) / txns * 1e6)
        self.record(bd, "tps_" + key, tps)

    def bench_pgbench(self):
        """Every path is up at once; each point runs the paths back to back
        in a shuffled order, so that other work on the machine weighs on
        all of them alike."""
        if getattr(self, "pg_setup_thread", None):
            self.pg_setup_thread.join()
            if self.pg_setup_error:
                raise self.pg_setup_error
        else:
            self.setup_pg()
        with_pgmode = "certgate" in self.peers
        for run in range(self.runs):
            peers, conns = {}, {}
            pgmode = None
            try:
                for name in self.peers:
                    kw = {"service": {"require_inner_tls": True}} if name == "certgate" else {}
                    peers[name] = self.start_peer(name, self.pg.port, "pg%d" % run,
                                                  workers=self.workers, **kw)
                    conns[name], peers[name].tunnel_port = self.connector(peers[name])
                if with_pgmode:
                    pgmode = self.start_peer("certgate", self.pg.port, "pgmode%d" % run,
                                             workers=self.workers, own_listen=True,
                                             service=self.pgmode_service())
                if run == 0:  # what PostgreSQL sees of each path's TLS
                    seen = {"direct": self.pg_tls_of(self.pg.port, "direct")}
                    for name in self.peers:
                        seen["tunnel via " + name] = self.pg_tls_of(peers[name].tunnel_port,
                                                                    "tunnel")
                    if pgmode:
                        seen["certgate postgres mode"] = self.pg_tls_of(pgmode.port, "postgres")
                    self.extra["pg_tls_seen_by_postgres"] = seen
                for clients, protocol in self.s["pg_points"]:
                    order = ["direct"] + list(self.peers) + (["postgres"] if pgmode else [])
                    random.Random(200 + 10 * run + clients + len(protocol)).shuffle(order)
                    for name in order:
                        if name == "direct":
                            self.measure_path("direct", "direct", self.pg.port, clients,
                                              protocol)
                        elif name == "postgres":
                            self.measure_path("postgres", "certgate", pgmode.port, clients,
                                              protocol, proxy=pgmode)
                        else:
                            self.measure_path("tunnel", name, peers[name].tunnel_port, clients,
                                              protocol, proxy=peers[name], conn=conns[name])
            finally:
                for c in conns.values():
                    c.stop()
                for peer in list(peers.values()) + ([pgmode] if pgmode else []):
                    peer.stop()
            log("  run %d/%d: pgbench done" % (run + 1, self.runs))

