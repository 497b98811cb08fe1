"""The stock-client measurement (issue 16): `openssl s_time -new` with the
client certificate, three clients in parallel, the client's default groups
and ciphersuites, against HAProxy and certgate each with its own default
TLS settings. Two variants on the same fresh peer:

  drop   s_time as it is: handshake, then the socket is closed at once (no
         request, no close_notify) — TLS health checks, scanners, clients
         that give up;
  whole  s_time -www /: the same client sends an HTTP/1.0 GET, the upstream
         (upstream.c) answers and closes, the client reads to the close.

Per variant and peer: the peer's CPU over the load divided by the
handshakes the clients completed, the handshakes per second (wall), and the
upstream connections the peer opened (upstream.c's counter) per handshake.
For certgate also its session.start / session.abandoned audit lines.

With --count-openssl (root, perf): how many client certificates each peer
decoded (d2i_X509) and chains it verified (X509_verify_cert) per handshake,
counted with perf uprobes on libcrypto while the clients run. It shows
whether a peer did the whole handshake's work for every client: for
dropping clients HAProxy frees most connections before reading the
client's last flight (docs/performance.md). The probes add a few µs per
counted call to the CPU figures of that run."""

import collections
import os
import random
import re
import signal
import subprocess
import time

import benchlib
from benchlib import log, settle

STOCK_PEERS = ("haproxy", "certgate")
PROBED = ("d2i_X509", "X509_verify_cert")  # per handshake: certificates decoded, chains verified


def libcrypto_path():
    """The libcrypto the peers load (both link the system OpenSSL)."""
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name, _, path = line.strip().partition(" => ")
        if name.startswith("libcrypto.so.3 ") and path:
            return path
    raise AssertionError("--count-openssl: ldconfig -p lists no libcrypto.so.3")


class OpensslCalls:
    """perf uprobes on a few libcrypto functions, counted per process."""

    def __init__(self, folder):
        self.lib = libcrypto_path()
        self.data = os.path.join(folder, "openssl-calls.data")
        self.added = []
        listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
        for f in PROBED:
            if "probe_libcrypto:%s " % f in listed:
                continue
            r = subprocess.run(["perf", "probe", "-q", "-x", self.lib, "-a", f],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise AssertionError("--count-openssl: perf probe %s: %s" % (f, r.stderr.strip()))
            self.added.append(f)
        self.proc = None

    def start(self, pids):
        args = ["perf", "record", "-q", "-o", self.data, "-p", ",".join(str(p) for p in pids)]
        for f in PROBED:
            args += ["-e", "probe_libcrypto:" + f]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # perf attaches

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        out = subprocess.run(["perf", "script", "-i", self.data, "-F", "event"],
                             capture_output=True, text=True).stdout
        counts = collections.Counter(l.strip().rstrip(":").split(":")[-1]
                                     for l in out.splitlines() if l.strip())
        return {f: counts.get(f, 0) for f in PROBED}

    def close(self):
        for f in self.added:
            subprocess.run(["perf", "probe", "-q", "-d", "probe_libcrypto:" + f],
                           capture_output=True)
STOCK_CLIENTS = 3
HTTP_ANSWER_BYTES = 213  # upstream.c's answer: 85-byte head + 128-byte body


class StockClient:
    """A mixin of bench.Bench."""

    def upstream_count(self):
        """Connections the upstream has accepted so far (upstream.c, SIGUSR1)."""
        self.upstream.proc.send_signal(signal.SIGUSR1)
        line = self.upstream.proc.stdout.readline().split()
        if len(line) != 4 or line[0] != "accepted":
            raise AssertionError("the upstream did not report its count: %r" % line)
        return int(line[1])

    def stock_variants(self, name):
        """Both, except in the smoke run (each s_time lasts one to two
        seconds, whatever -time says): there one each, certgate's clients
        dropping and HAProxy's whole sessions, so both paths of stime() run."""
        if benchlib.SMOKE:
            return ["drop"] if name == "certgate" else ["whole"]
        return ["drop", "whole"]

    def bench_stock(self):
        self.openssl_calls = OpensslCalls(self.dir) if self.args.count_openssl else None
        try:
            self.stock_runs()
        finally:
            if self.openssl_calls is not None:
                self.openssl_calls.close()

    def stock_runs(self):
        peers = [p for p in STOCK_PEERS if p in self.peers]
        for run in range(self.runs):
            order = list(peers)
            random.Random(300 + run).shuffle(order)
            for name in order:
                kw = {"own_listen": True} if name == "certgate" else {}
                peer = self.start_peer(name, self.upstream_port, "stock%d" % run,
                                       default_tls=True, workers=self.workers, **kw)
                try:
                    for variant in self.stock_variants(name):
                        self.stime(peer, name, variant)
                finally:
                    peer.stop()
            log("  run %d/%d: stock client (openssl s_time) done" % (run + 1, self.runs))

    def stime(self, peer, name, variant):
        secs = self.s["stime_seconds"]
        args = ["openssl", "s_time", "-connect", "127.0.0.1:%d" % peer.port, "-new",
                "-cert", self.client.crt, "-key", self.client.key, "-time", str(secs)]
        if variant == "whole":
            args += ["-www", "/"]
        # the client's defaults: no OPENSSL_CONF of the benchmark's
        env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
        starts0 = peer.count_events("session.start") if name == "certgate" else 0
        abandoned0 = peer.count_events("session.abandoned") if name == "certgate" else 0
        up0 = self.upstream_count()
        if self.openssl_calls is not None:
            self.openssl_calls.start(peer.pids())
        c0 = peer.cpu()
        t0 = time.monotonic()
        procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True, env=env)
                 for _ in range(STOCK_CLIENTS)]
        outs = [p.communicate(timeout=secs * 4 + 60) for p in procs]
        wall = time.monotonic() - t0
        settle(0.3)  # the peer's closing work for the last connections
        c1 = peer.cpu()
        calls = self.openssl_calls.stop() if self.openssl_calls is not None else None
        up1 = self.upstream_count()
        hs, read = 0, 0
        for p, (out, err) in zip(procs, outs):
            m = re.search(r"(\d+) connections in [\d.]+s;.*bytes read (\d+)", out)
            if p.returncode != 0 or not m:
                raise AssertionError("%s: openssl s_time (%s) failed (%s): %s %s" % (
                    name, variant, p.returncode, out[-400:], err[-400:]))
            hs += int(m.group(1))
            read += int(m.group(2))
        if hs == 0:
            raise AssertionError("%s: openssl s_time (%s) made no connection" % (name, variant))
        if variant == "whole" and read < hs * HTTP_ANSWER_BYTES:
            raise AssertionError("%s: s_time -www read %d bytes for %d sessions, not the "
                                 "upstream's answer each time" % (name, read, hs))
        self.record(name, "stock_cpu_us_" + variant, (c1 - c0) / hs * 1e6)
        self.record(name, "stock_hs_per_s_" + variant, hs / wall)
        self.record(name, "stock_upstream_per_hs_" + variant, (up1 - up0) / hs)
        detail = {"handshakes": hs, "upstream_connections": up1 - up0,
                  "cpu_s": round(c1 - c0, 3), "wall_s": round(wall, 2)}
        if calls is not None:
            for f, n in calls.items():
                self.record(name, "stock_%s_per_hs_%s" % (f, variant), n / hs)
            detail["openssl_calls"] = calls
        if name == "certgate":
            settle(0.2)
            detail["session_start"] = peer.count_events("session.start") - starts0
            detail["session_abandoned"] = peer.count_events("session.abandoned") - abandoned0
        self.extra.setdefault("stock", {}).setdefault(name, {}).setdefault(
            variant, []).append(detail)


def stime_available():
    """openssl s_time is part of the openssl command line tool."""
    r = subprocess.run(["openssl", "s_time", "-help"], capture_output=True, text=True)
    return "-www" in r.stdout + r.stderr

