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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

import benchlib  # noqa: E402
from benchlib import (BINS, CLIENT_GROUP, CLIENT_OPENSSL_CONF, CLIENT_USER, CLK_TCK,  # noqa: E402
                      DIRECT_OPENSSL_CONF, HERE, MiB, PEERS, ROOT, SERVICE, Spawned, harness,
                      log, raise_nofile, settle, threads_of, tool)
from peers import PEER_CLASSES, Certgate  # noqa: E402
from pgpaths import PgPaths  # noqa: E402
from report import chart, markdown, summarize, write_report  # noqa: E402
from scaling import Scaling  # noqa: E402
from stock import StockClient, stime_available  # noqa: E402

PHASES = ["cpu", "stock", "workers", "idle", "pg", "policy", "reload"]

SIZES = {
    # handshakes per run, stream bytes per direction per run, idle session
    # counts, pgbench seconds/scale/clients, policy rules, reload sessions
    # (pg_points: pgbench clients and query protocol), seconds of each
    # openssl s_time variant
    "full": dict(hs=6000, hs_conc=16, hs_threads=2, stream=512 * MiB, idle=[1000, 10000],
                 pg_seconds=5, pg_scale=4,
                 pg_points=[(1, "simple"), (8, "simple"), (8, "prepared")], stime_seconds=10,
                 rules=10000, services=100, groups=2000, pol_seconds=1.0, reload_sessions=10000,
                 runs=5),
    "quick": dict(hs=800, hs_conc=16, hs_threads=2, stream=32 * MiB, idle=[200, 1000],
                  pg_seconds=2, pg_scale=1,
                  pg_points=[(1, "simple"), (8, "simple"), (8, "prepared")], stime_seconds=3,
                  rules=10000, services=100, groups=2000, pol_seconds=0.3, reload_sessions=1000,
                  runs=1),
    "smoke": dict(hs=60, hs_conc=8, hs_threads=2, stream=2 * MiB, idle=[50],
                  pg_seconds=1, pg_scale=1, pg_points=[(2, "prepared")], stime_seconds=1,
                  rules=1000, services=20, groups=200, pol_seconds=0.1, reload_sessions=50,
                  runs=1),
}



# --------------------------------------------------------------------------
# the bench


class Bench(StockClient, PgPaths, Scaling):
    def __init__(self, args, sizes):
        self.args = args
        self.s = sizes
        self.runs = args.runs if args.runs else sizes["runs"]
        self.peers = args.only.split(",") if args.only else list(PEERS)
        self.workers = args.workers  # every peer's event loops in every phase
        self.scale_workers = max(2, self.workers)  # the N of "1 -> N workers"
        self.certgate_workers = False  # does certgate know gateway.workers? (setup)
        self.notes = []
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
        if "certgate" in self.peers:
            self.certgate_workers = self.detect_certgate_workers()
            if self.workers > 1 and not self.certgate_workers:
                self.notes.append("certgate has no gateway.workers yet: certgate was left out "
                                  "of this run at %d workers" % self.workers)
                log("  " + self.notes[-1])
                self.peers.remove("certgate")

    def detect_certgate_workers(self):
        """`certgate check` on a configuration with gateway.workers: False
        while certgate does not know the key (it refuses unknown keys)."""
        probe = Certgate(self, self.upstream_port, "workers-check")
        cfg = probe.make_config()
        cfg["gateway"]["workers"] = 2
        path = os.path.join(probe.dir, "workers-check.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        r = subprocess.run([harness.BIN, "check", "--config", path], capture_output=True,
                           text=True, timeout=60)
        out = r.stdout + r.stderr
        if r.returncode == 0:
            return True
        if "gateway.workers: unknown key" in out:
            log("  certgate has no gateway.workers yet: its rows with more than one worker "
                "are skipped")
            return False
        raise AssertionError("certgate check failed on the bench configuration: " + out[-800:])

    def spawn(self, args, name, **kw):
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        p = Spawned(args, os.path.join(self.dir, name), env=kw.pop("env", env), **kw)
        self.spawned.append(p)
        return p

    def close(self):
        if getattr(self, "pg_setup_thread", None):
            self.pg_setup_thread.join(timeout=120)
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
            peer = self.start_peer(name, self.upstream_port, "probe", workers=self.workers)
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
                peer = self.start_peer(name, self.upstream_port, "cpu%d" % run,
                                       workers=self.workers)
                try:
                    self.handshakes(peer, name)
                    for conns in (1, 8):
                        self.stream(peer, name, conns)
                    self.keep_for_scaling(name)
                finally:
                    peer.stop()
                if "workers" not in self.args.skip:  # scaling.py
                    self.workers_at(name, run, self.other_count())
                if name == "certgate":
                    # the same without remembered chains: every handshake
                    # verifies the client chain, as a first-time client's does
                    peer = self.start_peer(name, self.upstream_port, "cpu%d-nocache" % run,
                                           gateway={"verify_cache": False}, workers=self.workers)
                    try:
                        self.handshakes(peer, name, suffix="_nocache")
                    finally:
                        peer.stop()
            log("  run %d/%d: handshakes and throughput done" % (run + 1, self.runs))

    def handshakes(self, peer, name, suffix=""):
        s = self.s
        self.loadgen("handshake", peer.port, "--count", 20, "--concurrency", 4)  # warm up
        settle(0.2)
        c0 = peer.cpu()
        r = self.loadgen("handshake", peer.port, "--count", s["hs"], "--concurrency",
                         s["hs_conc"], "--threads", s["hs_threads"], "--src-ips", 8)
        settle(0.3)  # the proxy's closing work for the last connections
        c1 = peer.cpu()
        if r["failed"] or r["ok"] != s["hs"]:
            raise AssertionError("%s: %d of %d handshakes failed: %s"
                                 % (name, r["failed"], s["hs"], r["stderr"][-500:]))
        self.record(name, "hs_cpu_us" + suffix, (c1 - c0) / r["ok"] * 1e6)
        self.record(name, "hs_per_s" + suffix, r["ok"] / r["seconds"])

    def stream(self, peer, name, conns, suffix=""):
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
        settle(0.2)
        c1 = peer.cpu()
        self.record(name, "mb_per_cpu_s_%d%s" % (conns, suffix),
                    moved / 1e6 / max(c1 - c0, 1.0 / CLK_TCK))
        self.record(name, "mb_per_s_%d%s" % (conns, suffix), moved / 1e6 / secs)

    # -- 3. memory per idle session --------------------------------------------

    def idle_sizes(self):
        return sorted(set(min(n, self.max_sessions) for n in self.s["idle"]))

    def bench_idle(self):
        for run in range(self.runs):
            for n in self.idle_sizes():
                order = list(self.peers)
                random.Random(100 + run).shuffle(order)
                for name in order:
                    peer = self.start_peer(name, self.upstream_port, "idle%d-%d" % (n, run),
                                           workers=self.workers)
                    try:
                        self.idle(peer, name, n)
                    finally:
                        peer.stop()
            self.idle_workers(run, max(self.idle_sizes()))
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

    def idle(self, peer, name, n, suffix=""):
        self.loadgen("handshake", peer.port, "--count", 20, "--concurrency", 4)
        settle(0.3)
        before = peer.rss()
        p, _ = self.open_sessions(peer.port, n)
        try:
            settle(0.5)
            after = peer.rss()
            threads = threads_of(peer.pids())
            alive, dropped = self.ping_sessions(p)
            if alive != n:
                raise AssertionError("%s: %d of %d idle sessions answered (%d dropped)"
                                     % (name, alive, n, dropped))
        finally:
            self.close_sessions(p)
        self.record(name, "rss_kib_per_session_%d%s" % (n, suffix), (after - before) / n)
        self.record(name, "threads_at_%d%s" % (n, suffix), threads)

    # -- 4. pgbench: pgpaths.py

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
        peer = Certgate(self, self.upstream_port, "reload", config=cfg, admin=True,
                        workers=self.workers)
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
        if benchlib.SMOKE and "pg" not in self.args.skip:
            # the smoke run's figures mean nothing: PostgreSQL's initdb
            # overlaps the first phases instead of adding seconds to CI
            self.start_pg_setup()
        log("checking the peers negotiate alike")
        self.check_alike()
        phases = [("cpu", "handshakes and throughput", self.bench_cpu),
                  ("workers", "1 and %d workers" % self.scale_workers, self.bench_workers),
                  ("stock", "stock client (openssl s_time)", self.bench_stock),
                  ("idle", "idle sessions", self.bench_idle),
                  ("pg", "pgbench", self.bench_pgbench)]
        if "certgate" in self.peers:
            phases += [("policy", "policy decisions", self.bench_policy),
                       ("reload", "reload with live sessions", self.bench_reload)]
        versions = self.versions()  # now: the tree may change during a long run
        self.extra["loadavg_start"] = loadavg()
        self.extra["crypto_floor"] = None if benchlib.SMOKE else crypto_floor()
        for key, title, fn in phases:
            if key in self.args.skip:
                continue
            log("%s (%d run%s)" % (title, self.runs, "s" if self.runs > 1 else ""))
            try:
                fn()
            except Exception as e:  # noqa: BLE001 — keep what the other phases measure
                if benchlib.SMOKE:
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
            "workers": self.workers,
            "scale_workers": self.scale_workers,
            "certgate_workers": self.certgate_workers,
            "pg_inner_tls": True,
            "notes": self.notes,
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
# binaries




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
    if not stime_available():
        missing.append("openssl s_time")
    return missing


# --------------------------------------------------------------------------
# main


def smoke(args):
    """CI: the script works end to end with tiny counts (numbers > 0), TAP."""
    benchlib.SMOKE = True
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
    pk = "c%d%s" % (res["sizes"]["pg_points"][0][0], "_prepared")
    wn = res["scale_workers"]
    no_workers = any("certgate has no gateway.workers yet" in n for n in res["notes"])
    for p in res["peers"]:
        m = med[p]
        v = "drop" if p == "certgate" else "whole"  # StockClient.stock_variants
        checks.append(("%s: stock client (%s): CPU per handshake > 0, upstream counted"
                       % (p, v), (m.get("stock_cpu_us_" + v) or 0) > 0 and
                       m.get("stock_upstream_per_hs_" + v) is not None))
        if v == "whole":  # the upstream answered every one
            checks.append(("%s: stock client whole sessions reached the upstream" % p,
                           (m.get("stock_upstream_per_hs_whole") or 0) > 0.9))
        if p == "certgate" and no_workers:
            checks.append(("certgate: %d-worker rows skipped with a note" % wn,
                           m.get("hs_per_s_w%d" % wn) is None))
        else:
            checks.append(("%s: %d workers: handshakes/s, MB/s with 8 connections, idle "
                           "sessions measured" % (p, wn),
                           (m.get("hs_per_s_w%d" % wn) or 0) > 0 and
                           (m.get("mb_per_s_8_w%d" % wn) or 0) > 0 and
                           m.get("rss_kib_per_session_%d_w%d" % (max(res["sizes"]["idle"]), wn))
                           is not None))
        checks.append(("%s: 1 worker: figures kept for the scaling" % p,
                       (m.get("hs_per_s_w1") or 0) > 0 and (m.get("mb_per_s_8_w1") or 0) > 0))
        checks.append(("%s: CPU per handshake > 0" % p, (m.get("hs_cpu_us") or 0) > 0))
        checks.append(("%s: handshakes per second > 0" % p, (m.get("hs_per_s") or 0) > 0))
        checks.append(("%s: MB per CPU-second > 0 (1 and 8 connections)" % p,
                       (m.get("mb_per_cpu_s_1") or 0) > 0 and (m.get("mb_per_cpu_s_8") or 0) > 0))
        n = min(res["sizes"]["idle"])
        checks.append(("%s: idle sessions measured" % p,
                       m.get("rss_kib_per_session_%d" % n) is not None))
        checks.append(("%s: pgbench TPS through the tunnel > 0, CPU per transaction "
                       "broken down" % p, (m.get("pg_tps_" + pk) or 0) > 0 and
                       (med["breakdown:" + p].get("connector_us_" + pk) or 0) > 0 and
                       (med["breakdown:" + p].get("postgres_us_" + pk) or 0) > 0))
    checks.append(("direct TLS pgbench TPS > 0", (med["direct"].get("pg_tps_" + pk) or 0) > 0))
    checks.append(("certgate postgres mode pgbench TPS > 0",
                   (med["certgate"].get("pgmode_tps_" + pk) or 0) > 0))
    seen = res["extra"].get("pg_tls_seen_by_postgres", {})
    checks.append(("PostgreSQL saw TLS and the expected client on every path: %s" % seen,
                   all("TLSv1.3" in v for v in seen.values()) and len(seen) == 4 and
                   seen["certgate postgres mode"].endswith("/CN=bench") and
                   "bench@example.com" in seen["direct"]))
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
                    "and throughput), stock (openssl s_time), workers (2 workers), idle (memory "
                    "per idle session), pg (pgbench), policy (decision time), reload (certgate "
                    "reload with live sessions)")
    ap.add_argument("--workers", type=int, default=1, help="event loops of every peer in every "
                    "phase (certgate gateway.workers, HAProxy nbthread, nginx worker_processes; "
                    "default 1); the workers phase adds max(2, N) or 1")
    ap.add_argument("--build", help="build folder to use and update (default build-release)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (configs, logs)")
    ap.add_argument("--count-openssl", action="store_true", help="stock phase: count each "
                    "peer's client certificates decoded and chains verified per handshake "
                    "(perf uprobes on libcrypto; root)")
    ap.add_argument("--report", metavar="DIR", help="only rewrite DIR/results.md and the chart "
                    "from DIR/results.json (no measurement)")
    args = ap.parse_args()
    if args.report:
        with open(os.path.join(args.report, "results.json")) as f:
            res = summarize(json.load(f))
        write_report(res, args.report)
        return 0
    args.skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    if set(args.skip) - set(PHASES):
        ap.error("--skip takes " + ", ".join(PHASES))
    if args.workers < 1:
        ap.error("--workers takes a count of 1 or more")
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
    partial = args.only or args.skip or args.workers != 1 or \
        (args.runs and args.runs != SIZES["full"]["runs"])
    suffix = "-quick" if args.quick else "-partial" if partial else ""
    out = args.out or os.path.join(HERE, "results", datetime.date.today().isoformat() + suffix)
    write_report(res, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())