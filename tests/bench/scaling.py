"""Workers (issue 16): the peers with N event loops — certgate
gateway.workers N, HAProxy nbthread N, nginx worker_processes N (stunnel
has a thread per connection whatever the setting, so it is left out) —
measured like the 1-worker case: full handshakes per second (wall, the same
concurrent loadgen), MB/s with 8 connections, and memory per idle session.

The cpu phase measures every peer at --workers (1 by default); right after
each peer's turn, the same peer is measured at the other count, so both
counts of a run see the same load on the machine. Until certgate
has gateway.workers (an unknown key today: certgate refuses to start), its
rows with more than one worker are skipped and the report says so."""

import random

from benchlib import log

SCALING_PEERS = ("haproxy", "nginx", "certgate")
NO_WORKERS = "certgate has no gateway.workers yet: its rows with %d workers are skipped"


class Scaling:
    """A mixin of bench.Bench."""

    def can_run(self, name, workers):
        """False (and a note in the report, once) for certgate with more
        than one worker when it has no gateway.workers."""
        if name != "certgate" or workers == 1 or self.certgate_workers:
            return True
        note = NO_WORKERS % workers
        if note not in self.notes:
            self.notes.append(note)
            log("  " + note)
        return False

    def scaling_peers(self):
        return [p for p in self.peers if p in SCALING_PEERS]

    def keep_for_scaling(self, name):
        """The cpu phase's figures are also the ones at self.workers workers."""
        if name not in SCALING_PEERS:
            return
        for metric in ("hs_per_s", "hs_cpu_us", "mb_per_s_8"):
            self.record(name, "%s_w%d" % (metric, self.workers), self.raw[name][metric][-1])

    def workers_at(self, name, run, w):
        """Handshakes and 8-connection throughput of one peer at w workers."""
        if name not in SCALING_PEERS or not self.can_run(name, w):
            return
        peer = self.start_peer(name, self.upstream_port, "w%d-%d" % (w, run), workers=w)
        try:
            self.handshakes(peer, name, suffix="_w%d" % w)
            self.stream(peer, name, 8, suffix="_w%d" % w)
        finally:
            peer.stop()

    def other_count(self):
        """The worker count of 1 -> N that the cpu phase does not run at."""
        return 1 if self.workers != 1 else self.scale_workers

    def bench_workers(self):
        """Runs inside the cpu phase (right after each peer's measurement at
        self.workers, so that both counts of a run see the same machine);
        alone, with --skip cpu, it measures both counts."""
        if "cpu" not in self.args.skip:
            log("  (measured with the cpu phase)")
            return
        for run in range(self.runs):
            order = self.scaling_peers()
            random.Random(400 + run).shuffle(order)
            for name in order:
                for w in (1, self.scale_workers):
                    self.workers_at(name, run, w)
            log("  run %d/%d: workers done" % (run + 1, self.runs))

    def idle_workers(self, run, n):
        """The largest idle case again with scale_workers workers."""
        w = self.scale_workers
        if w == self.workers:
            return  # the idle phase ran at that count
        order = self.scaling_peers()
        random.Random(500 + run).shuffle(order)
        for name in order:
            if not self.can_run(name, w):
                continue
            peer = self.start_peer(name, self.upstream_port, "idle%d-w%d-%d" % (n, w, run),
                                   workers=w)
            try:
                self.idle(peer, name, n, suffix="_w%d" % w)
            finally:
                peer.stop()
