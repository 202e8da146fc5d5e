"""Stopping the processes a test started, one way for every test.

A server under test gets a polite signal and a grace period, then SIGKILL: a test that fails must not leave a
daemon behind on the next test's port, and one that hangs in shutdown must not hang the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def stop_process(process: subprocess.Popen, signum: int | None = signal.SIGTERM, grace: float = 10) -> None:
    """Ask `process` to stop (`signum`; None when it was asked another way, e.g. its stdin closed), wait up to
    `grace` seconds, then kill it; always reaped."""
    if signum is not None and process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def children(parent: int) -> list[int]:
    """The processes whose parent is `parent`, from /proc (a process gone while it is read is left out)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat_file.parent.name))
    return found


@contextmanager
def children_stopped(parent: int) -> Iterator[list[int]]:
    """Every child of `parent` stopped (SIGSTOP) for the duration, then continued: a server's text extraction
    processes frozen as if stuck in a parser, so a scoring deadline is certain to pass however fast the machine
    (a deadline of a microsecond is not: the verdict can win the race)."""
    pids = children(parent)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
