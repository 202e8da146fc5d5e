"""Resident memory after loading the int8 GPT-2-124M bundle, and process start to first verdict of
`spamguard check` on one SMS: the two costs a mail host pays per filter process.

    .venv/bin/python benchmarks/runtime_startup.py [--runs 7]

Each measurement runs in a fresh process; the script prints medians and the machine's load average, because
on a shared machine the load decides these figures more than the code does."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bundles import gpt2_124m_bundle  # noqa: E402

SMS = "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121 to receive entry"

# Runs in a child: memory and time of each phase of one verdict, as the process sees them.
_PHASES = """
import json, sys, time
t0 = time.perf_counter()
def status():
    fields = dict(line.split(':', 1) for line in open('/proc/self/status'))
    return {k: int(fields[k].split()[0]) / 1024 for k in ('VmRSS', 'VmHWM')}
from spamguard import Classifier
t1 = time.perf_counter()
clf = Classifier.load(sys.argv[1], threads=int(sys.argv[2]))
t2 = time.perf_counter()
loaded = status()
clf.classify(sys.argv[3])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_verdict_s": t3 - t2, "precision": clf.precision,
                  "rss_after_load_mb": loaded["VmRSS"], "rss_after_verdict_mb": status()["VmRSS"],
                  "peak_rss_mb": status()["VmHWM"]}))
"""


def _phases(bundle: Path, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PHASES, str(bundle), str(threads), SMS], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def _start_to_verdict(bundle: Path, threads: int) -> float:
    """Wall time of the whole command, interpreter start included, as procmail would run it."""
    spamguard = Path(sys.executable).with_name("spamguard")  # the console script of this environment
    command = [str(spamguard), "check", "--model", str(bundle), "--threads", str(threads)]
    start = time.perf_counter()
    result = subprocess.run(command, input=SMS, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 1, 2):
        raise SystemExit(f"spamguard check failed: {result.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    bundle = gpt2_124m_bundle()
    _start_to_verdict(bundle, args.threads)  # warm the page cache: a mail host has run it before
    load_before = os.getloadavg()[0]
    runs = [_phases(bundle, args.threads) for _ in range(args.runs)]
    starts = [_start_to_verdict(bundle, args.threads) for _ in range(args.runs)]
    load_after = os.getloadavg()[0]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"bundle: {bundle.name} ({runs[0]['precision']}), {args.threads} threads, {args.runs} fresh processes each")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs")
    print(f"resident memory after loading: {median('rss_after_load_mb'):.0f} MB (median)")
    print(
        f"resident memory after the first verdict: {median('rss_after_verdict_mb'):.0f} MB, "
        f"peak {median('peak_rss_mb'):.0f} MB"
    )
    print(
        f"phases (median): import spamguard {median('import_s'):.2f} s, load {median('load_s'):.2f} s, "
        f"first verdict {median('first_verdict_s'):.3f} s"
    )
    print(
        f"process start to first verdict (`spamguard check`, one SMS): median {statistics.median(starts):.2f} s, "
        f"best {min(starts):.2f} s"
    )


if __name__ == "__main__":
    main()
