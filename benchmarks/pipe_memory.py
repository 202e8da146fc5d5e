"""Peak resident memory of the `spamguard pipe` process (the parent that holds the message, not the forked
scorer) for one big message, against the message's size: the pipe should hold the message about once.

    .venv/bin/python benchmarks/pipe_memory.py [--size-mb 270] [--model PATH]

Without --model a tiny random bundle is built first (needs the training extra), so the message really is scored
and rewritten (a forged X-Spam-Flag is removed, our headers added), not passed through on a failure. The pipe
runs in a fresh interpreter that reports its own VmHWM (peak RSS) from /proc at exit; the baseline is the same
interpreter after importing the CLI, with no message."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# Runs in a child: a spamguard command in-process, then this process's own peak RSS (bytes) on stderr's last line.
_RUN = """
import atexit, sys
def peak():
    status = dict(line.split(':', 1) for line in open('/proc/self/status'))
    print('peak', int(status['VmHWM'].split()[0]) * 1024, file=sys.stderr)
atexit.register(peak)
from spamguard.cli import main
main(sys.argv[1:])
"""


def _message(path: Path, size: int) -> None:
    line = b"The quarterly numbers are attached below, as discussed in the meeting on Tuesday.\n"
    with open(path, "wb") as f:
        f.write(b"From: boss@example.com\nX-Spam-Flag: NO\nSubject: Q3 numbers\n\n")
        block = line * ((1 << 20) // len(line))
        while f.tell() < size:
            f.write(block)


def peak_rss(args: list[str], stdin: Path | None) -> tuple[int, bytes, bytes]:
    """`spamguard ARGS < stdin` in a fresh interpreter: its own peak RSS in bytes (a forked scorer not
    included), its stdout and its stderr."""
    with open(stdin or os.devnull, "rb") as source:
        done = subprocess.run([sys.executable, "-c", _RUN, *args], stdin=source, capture_output=True, timeout=600)
    *stderr, last = done.stderr.splitlines(keepends=True)
    return int(last.split()[1]), done.stdout, b"".join(stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=270)
    parser.add_argument("--model", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spamguard-pipe-memory-") as work:
        work_dir = Path(work)
        model = options.model
        if model is None:
            from bundles import make_bundle

            model = make_bundle(work_dir / "tiny")
        message = work_dir / "message.eml"
        _message(message, options.size_mb << 20)
        size = message.stat().st_size
        idle, _, _ = peak_rss(["pipe", "--help"], None)
        start = time.perf_counter()
        peak, out, stderr = peak_rss(["pipe", "--model", str(model)], message)
        seconds = time.perf_counter() - start
        if len(out) <= size - 100:
            raise SystemExit(f"the pipe wrote {len(out)} bytes for {size}: {stderr.decode()[-500:]}")
        mib = 1 << 20
        print(f"message {size / mib:.1f} MiB, written {len(out) / mib:.1f} MiB in {seconds:.1f} s")
        print(f"pipe process peak RSS {peak / mib:.1f} MiB; without a message {idle / mib:.1f} MiB")
        print(f"held per message byte: {(peak - idle) / size:.2f}")


if __name__ == "__main__":
    main()
