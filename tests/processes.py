"""Stopping the processes a test started, one way for every test.

A server under test gets a polite signal and a grace period, then SIGKILL: a test that fails must not leave a
daemon behind on the next test's port, and one that hangs in shutdown must not hang the suite.
"""

from __future__ import annotations

import signal
import subprocess


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
