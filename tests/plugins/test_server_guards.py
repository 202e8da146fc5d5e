"""The guards every server front door shares: throttled log lines (a flood costs a few lines per window and one
summary), a connection cap checked against the file descriptor limit, and who is behind a connection."""

from __future__ import annotations

import logging
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from spamguard.plugins.server_guards import RESERVED_DESCRIPTORS, ThrottledLog, peer_identity

SYSTEM_PYTHON = "/usr/bin/python3"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_is_a_few_lines_and_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    notes = ThrottledLog(logging.getLogger("test.throttle"), burst=3, period=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        for number in range(1000):
            notes.warning("idle", "closing connection %d", number)
            notes.warning("protocol", "bad packet %d", number)
            clock.now += 0.001
        notes.flush()  # the window is still open: nothing to add yet
        assert [r.getMessage() for r in caplog.records] == [
            "closing connection 0", "bad packet 0", "closing connection 1", "bad packet 1",
            "closing connection 2", "bad packet 2",
        ]  # fmt: skip
        caplog.clear()
        clock.now = 11
        notes.flush()
        assert sorted(r.getMessage() for r in caplog.records) == [
            "997 more idle events in 10 s (not logged one by one)",
            "997 more protocol events in 10 s (not logged one by one)",
        ]
        caplog.clear()
        for _ in range(5):
            notes.warning("idle", "closing connection again")  # a new window
        notes.flush(final=True)  # stopping: whatever was held back is said now
        assert [r.getMessage() for r in caplog.records] == [
            *["closing connection again"] * 3, "2 more idle events in 10 s (not logged one by one)",
        ]  # fmt: skip


def _in_child(soft: int, hard: int, connections: int) -> subprocess.CompletedProcess[str]:
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from spamguard.errors import SpamguardError\n"
        "from spamguard.plugins.server_guards import ensure_descriptors\n"
        "try:\n"
        f"    print(ensure_descriptors({connections}), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "except SpamguardError as exc:\n"
        "    print(exc)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)


def test_the_connection_cap_must_fit_the_descriptor_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard descriptor limit here is {hard}")
    assert _in_child(512, 1024, 100).stdout == "512 512\n"  # fits: left alone
    assert _in_child(512, 1024, 900).stdout == f"{900 + RESERVED_DESCRIPTORS} {900 + RESERVED_DESCRIPTORS}\n"
    assert _in_child(512, 1024, 2000).stdout == (
        f"2000 connections need {2000 + RESERVED_DESCRIPTORS} file descriptors, but the limit is 1024: lower "
        "--max-connections or raise the limit (LimitNOFILE= in the systemd unit, ulimit -n)\n"
    )


def test_peer_identity_names_the_uid_of_a_local_peer() -> None:
    """A loopback TCP peer and a unix socket peer are told apart by uid (the MTA's connections from a local
    user's), here a client running as nobody; a peer's identity is read from the kernel, not from the peer."""
    if os.geteuid() != 0 or not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"connecting as another user needs root and {SYSTEM_PYTHON} (nobody cannot run the venv's)")
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "s.sock"
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(str(path))
        os.chmod(path, 0o777)
        for server, target in ((socket.create_server(("127.0.0.1", 0)), None), (unix, str(path))):
            with server:
                server.listen()
                address = target or server.getsockname()
                client = subprocess.Popen(
                    [SYSTEM_PYTHON, "-c", f"import socket, time\ns = socket.socket({int(server.family)})\n"
                     f"s.connect({address!r})\ntime.sleep(5)"],
                    user=65534,
                )  # fmt: skip
                try:
                    accepted, _ = server.accept()
                    with accepted:
                        assert peer_identity(accepted) == "uid 65534"
                finally:
                    client.kill()
                    client.wait()
        with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()):
            accepted, _ = server.accept()
            with accepted:
                assert peer_identity(accepted) == f"uid {os.getuid()}"
