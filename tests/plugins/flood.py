"""Another local user flooding a server's port: a process running as `nobody` (Debian's own python3: nobody cannot
run the venv's) that opens connections, optionally sends each the start of a request, and holds them, so tests
can check that the server's connection cap closes that user's connections, not the real clients'. Loopback only;
the process stops when the test closes its stdin, and by itself after 5 minutes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from processes import stop_process

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534

_CHILD = r"""
import signal, socket, sys
signal.alarm(300)
port, count, payload = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
socks = []
for _ in range(count):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if payload:
            sock.sendall(payload)
        socks.append(sock)
    except OSError:
        pass
print(len(socks), flush=True)
for _ in sys.stdin:  # each line asks: how many of them has the server closed?
    closed = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            while sock.recv(65536):
                pass
            closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    print(closed, flush=True)
"""


def require_nobody() -> None:
    if os.geteuid() != 0 or not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"connecting as another user needs root and {SYSTEM_PYTHON} (nobody cannot run the venv's)")


@dataclass
class Flood:
    process: subprocess.Popen
    opened: int

    def closed(self) -> int:
        """How many of the flood's connections the server has closed so far."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("?\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())


@contextmanager
def flood_as_nobody(port: int, count: int, payload: bytes = b"") -> Iterator[Flood]:
    """`count` connections to 127.0.0.1:`port` held by uid nobody, each sent `payload` (the start of a request
    that never ends); yields once all are connected (or refused)."""
    require_nobody()
    process = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", _CHILD, str(port), str(count), payload.hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        user=NOBODY,
        cwd="/",
    )
    try:
        assert process.stdout is not None
        yield Flood(process, int(process.stdout.readline()))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        stop_process(process, signum=None)  # closing its stdin is how it is told to stop
