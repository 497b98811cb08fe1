"""What every part of the benchmark shares: names, the TLS client settings,
the processes it starts and what /proc says about them, where the binaries
are. bench.py is the entry point; docs/performance.md explains the figures."""

import os
import resource
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402,F401  (CA, Postgres, Gateway, free_port, wait_for)

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

def log(msg):
    print("# " + msg if SMOKE else msg, file=sys.stderr if not SMOKE else sys.stdout, flush=True)



SMOKE = False  # bench.py --smoke sets it: TAP output, phases fail the run


def settle(seconds):
    """Lets a proxy finish its work before its CPU or memory is read; the
    smoke run only checks that figures come out, so it waits a fifth."""
    time.sleep(seconds / 5 if SMOKE else seconds)


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


def reaped_cpu_seconds(pid):
    """cutime + cstime: the CPU of pid's children that have exited and been
    waited for (PostgreSQL's backends, once the postmaster reaps them)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


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



def tool(name):
    """A program's full path; /usr/sbin too (haproxy, nginx), whatever PATH says."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin")


def dpkg_version(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"



# the binaries: bench.find_binaries fills it
BINS = {}
