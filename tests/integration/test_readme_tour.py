"""The README's "five-minute tour", run as written: every ```sh block of
that section, in order, in one bash (so `cd`, `export` and the background
jobs carry over from block to block, as in the user's terminal), with
`set -e -o pipefail`: any command that fails fails the test.

What differs from a user's terminal, and nothing else:
  - the tour runs in a throwaway directory laid out like a clone, under a
    parent only root may enter (like /root): deploy/quickstart and
    deploy/install-deps copied from this tree, and build/gateway/certgate a
    symbolic link to the binary under test; CERTGATE_QUICKSTART_BIN makes
    the quickstart use that binary instead of installing packages and
    building (so the tour's `export PATH="$PWD/build/gateway:$PATH"` finds
    the binary under test);
  - ports: in the blocks after the first (which starts the quickstart),
    8443 (the tour's gateway) and 5433 (its connector) are replaced by free
    ports, and 15432 by the port the quickstart's PostgreSQL got (it prints
    it); each of the three must occur in the tour;
  - psql is a shell function that first waits (polling `ss`, no connection)
    until the tour's gateway and connector listen, then runs psql: a user
    typing the commands is slower than a script.
The test then checks what the tour promises: psql's row from pg_stat_ssl
(alice, TLS, her login certificate's DN), the tour's audit log, and that
`deploy/quickstart --stop` at the end leaves nothing running."""

import fcntl
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from harness import BIN, SLOW, free_port, run, wait_for

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(SRC, "README.md")
TOUR_HEADING = "## A five-minute tour"
DONE = "@@certgate-tour-block-done@@"
# deploy/quickstart picks its ports from 15432, 18443, 15433 upwards: two
# quickstarts started at once (test_deploy's) could pick the same ones, so
# both take this lock around their run
QUICKSTART_LOCK = os.path.join(tempfile.gettempdir(), "certgate-quickstart-test.lock")


def tour_blocks(text):
    """The ```sh blocks of the tour section, in order."""
    start = text.index(TOUR_HEADING)
    end = text.find("\n## ", start + len(TOUR_HEADING))
    section = text[start:end if end > 0 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)


def substitute(block, ports):
    for old, new in ports.items():
        block = re.sub(r"\b%s\b" % old, str(new), block)
    return block


class Shell:
    """One bash reading commands from a pipe; its output (stdout and stderr
    together) is collected by a thread."""

    def __init__(self, cwd, env):
        self.proc = subprocess.Popen(["bash"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines = queue.Queue()
        self.transcript = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, commands, timeout):
        """Sends commands, returns their output; raises if the shell exits
        (set -e: a command failed) or does not finish in time."""
        self.proc.stdin.write(commands.rstrip("\n") + "\necho " + DONE + "\n")
        self.proc.stdin.flush()
        out = []
        end = time.monotonic() + timeout * SLOW
        while True:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                # set -e: a failed command ends the shell (its background
                # jobs may still hold the output pipe open: no EOF then)
                if self.proc.poll() is not None:
                    raise AssertionError("the shell exited %s (a command failed):\n%s\n"
                                         "--- output:\n%s" % (self.proc.returncode, commands,
                                                             "".join(out)))
                if time.monotonic() > end:
                    raise AssertionError("timed out after %ss:\n%s\n--- output:\n%s"
                                         % (timeout, commands, "".join(out)))
                continue
            if line is None:
                continue
            if line.rstrip("\n") == DONE:
                self.transcript.append("".join(out))
                return "".join(out)
            out.append(line)

    def close(self):
        """Ends the shell (EOF), then whatever it left running."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10 * SLOW)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its background jobs, if any
        except ProcessLookupError:
            pass
        self.proc.wait()


def psql_wrapper(ports):
    """psql, once everything the tour starts in the background listens."""
    wait = " ".join(str(p) for p in ports)
    return r'''psql() {
	local p n
	for p in %s; do
		n=0
		until ss -Hltn "sport = :$p" | grep -q .; do
			n=$((n + 1))
			if [ $n -gt %d ]; then echo "tour test: nothing listens on port $p" >&2; return 1; fi
			sleep 0.05
		done
	done
	command psql "$@"
}
''' % (wait, int(400 * SLOW))


def pids_alive(pids):
    return [p for p in pids if os.path.exists("/proc/%s" % p)
            and "zombie" not in open("/proc/%s/status" % p).read().lower()]


def test_tour_runs_as_written(_):
    with open(README) as f:
        blocks = tour_blocks(f.read())
    assert len(blocks) >= 3, "the tour has %d sh blocks" % len(blocks)
    assert blocks[0].strip() == "deploy/quickstart --keep", \
        "the tour must start the quickstart's demo first: %r" % blocks[0]
    rest = "".join(blocks[1:])
    for port in ("8443", "5433", "15432"):
        assert re.search(r"\b%s\b" % port, rest), \
            "port %s is not in the tour: update the substitutions of this test" % port

    root = tempfile.mkdtemp(prefix="certgate-tour-")
    os.chmod(root, 0o700)  # like /root: the postgres user cannot enter the clone
    top = os.path.join(root, "certgate")
    for f in ("deploy/quickstart", "deploy/install-deps"):
        os.makedirs(os.path.dirname(os.path.join(top, f)), exist_ok=True)
        shutil.copy2(os.path.join(SRC, f), os.path.join(top, f))
    os.makedirs(os.path.join(top, "build/gateway"))
    os.symlink(os.path.abspath(BIN), os.path.join(top, "build/gateway/certgate"))
    env = dict(os.environ, CERTGATE_QUICKSTART_BIN=os.path.abspath(BIN), LANG="C.UTF-8")
    for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE", "PGSERVICE"):
        env.pop(k, None)
    shell = None
    lock = open(QUICKSTART_LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shell = Shell(top, env)
        shell.run("set -e -o pipefail", 10)
        out = shell.run(blocks[0], 120)
        m = re.search(r"PostgreSQL on 127\.0\.0\.1:(\d+) \(its files: (/\S+)\)", out)
        assert m, "the quickstart did not say where its PostgreSQL runs:\n" + out[-4000:]
        pg_port, pgdir = int(m.group(1)), m.group(2)
        assert not pgdir.startswith(root + "/"), pgdir
        qs_pids = open(os.path.join(top, "demo/pids")).read().split()
        ports = {"8443": free_port(), "5433": free_port(), "15432": pg_port}
        shell.run(psql_wrapper([ports["8443"], ports["5433"]]), 10)
        outs = [shell.run(substitute(b, ports), 60) for b in blocks[1:]]
        everything = "".join(outs)
        print("# tour output:")
        for line in everything.splitlines():
            print("#   " + line)

        # psql's row: alice, over TLS, authenticated by her login certificate
        assert re.search(r"^\s*alice\s*\|\s*t\s*\|\s*/CN=alice@example\.com/OU=dba\s*$",
                         everything, re.M), everything
        assert "decision: allow (rule dba)" in everything, everything
        assert re.search(r": ok \(1 services, 2 rules", everything), everything
        tour = os.path.join(top, "demo/tour")
        with open(os.path.join(tour, "audit.jsonl")) as f:
            events = [json.loads(l) for l in f if l.strip()]
        kinds = [e["event"] for e in events]
        start = [e for e in events if e["event"] == "session.start"]
        assert len(start) == 1 and start[0]["user"] == "alice@example.com" \
            and start[0]["rule"] == "dba" \
            and start[0]["upstream"] == "127.0.0.1:%d" % pg_port, events
        assert kinds[-1] == "gateway.stop" and "session.end" in kinds, kinds
        # the tour's last block stopped the demo: PostgreSQL's files are gone,
        # and the quickstart's gateway and connectors have exited
        assert not os.path.exists(pgdir), "%s is left behind" % pgdir
        wait_for(lambda: not pids_alive(qs_pids), 10, "the quickstart's processes to exit")
        shell.close()
        assert shell.proc.returncode == 0, shell.proc.returncode
        shell = None
    finally:
        if shell is not None:
            shell.close()
        if os.path.exists(os.path.join(top, "demo")):
            subprocess.run([os.path.join(top, "deploy/quickstart"), "--stop"], cwd=top,
                           capture_output=True, timeout=60, env=env)
        lock.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run([test_tour_runs_as_written]))
