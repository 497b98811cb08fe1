#!/usr/bin/env python3
"""Runs one libFuzzer target for a bounded time, the way `meson test --suite
fuzz` does, without ever writing into the repository.

libFuzzer adds the new inputs it finds to the first corpus directory it is
given and writes crash files to the current directory unless told otherwise.
So each run starts from a fresh scratch corpus under WORK/NAME/corpus (the
repository's seed corpus comes second, read-only in effect) and writes any
crash, leak, timeout or out-of-memory input to WORK/NAME/artifacts/.

    run_fuzzer.py --name NAME --fuzzer EXE --seeds DIR --work DIR
                  [--seconds N] [--dict FILE] [--max-len N] [-- LIBFUZZER-ARGS...]

CERTGATE_FUZZ_SECONDS overrides --seconds (for longer runs by hand). Exits
with the fuzzer's status; prints one summary line with the run count and
executions per second."""

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--fuzzer", required=True)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--dict")
    ap.add_argument("--max-len", type=int)
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    # the fuzzer runs in its work dir: make every path absolute first
    args.fuzzer = os.path.abspath(args.fuzzer)
    args.seeds = os.path.abspath(args.seeds)
    if args.dict:
        args.dict = os.path.abspath(args.dict)

    seconds = int(os.environ.get("CERTGATE_FUZZ_SECONDS", args.seconds))
    work = Path(args.work).resolve() / args.name
    corpus = work / "corpus"
    artifacts = work / "artifacts"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())

    cmd = [
        args.fuzzer,
        "-max_total_time=%d" % seconds,
        "-rss_limit_mb=2048",
        "-timeout=10",
        "-print_final_stats=1",
        "-artifact_prefix=%s/" % artifacts,
    ]
    if args.dict:
        cmd.append("-dict=%s" % args.dict)
    if args.max_len:
        cmd.append("-max_len=%d" % args.max_len)
    cmd += args.extra + [str(corpus), args.seeds]

    env = dict(os.environ)
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, cwd=str(work))
    out = proc.stdout.decode("utf-8", "replace")
    lines = out.splitlines()

    seeds = len([p for p in Path(args.seeds).iterdir() if p.is_file()])
    found = len(list(corpus.iterdir()))
    m = re.search(r"Done (\d+) runs in (\d+) second", out)
    speed = re.search(r"stat::average_exec_per_sec:\s*(\d+)", out)
    crashes = sorted(set(artifacts.iterdir()) - before)

    if proc.returncode == 0:
        # The fuzzer's own log is long; its end has the final stats.
        print("\n".join(lines[-25:]))
    else:
        print(out)
        for c in crashes:
            print("artifact: %s" % c)
            print("reproduce: %s %s" % (args.fuzzer, c))
    print("%s: %s runs in %s s, %s exec/s, %d seeds + %d new inputs, %s"
          % (args.name, m.group(1) if m else "?", m.group(2) if m else "?",
             speed.group(1) if speed else "?", seeds, found,
             "no crash" if proc.returncode == 0 else "FAILED (status %d)" % proc.returncode))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
