"""What the server front doors (spamd, HTTP, and the milter through `spamguard serve`) share: where they
listen, and what they report about a verdict or a failure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from spamguard.errors import SpamguardError
from spamguard.plugins.headers import VerdictLike
from spamguard.plugins.pool import PoolError

# Seconds a door waits, after its reply to a request it refused or cut short, for the client to stop sending: unread
# bytes at the close would turn it into a reset that can eat the reply.
LINGER = 1.0

_HOST_PORT = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]*)):(\d{1,5})$")


@dataclass(frozen=True)
class InetAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_inet(spec: str, what: str) -> InetAddress:
    """`HOST:PORT`, `[IPv6]:PORT` or a bare `PORT`. No host means 127.0.0.1: a front door answers this machine
    unless an administrator names another address."""
    text = spec.strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    match = _HOST_PORT.match(text)
    if match is None or int(match.group(3)) > 65535:
        raise SpamguardError(f"bad {what} address {spec!r}: use HOST:PORT, [IPv6]:PORT or PORT (on 127.0.0.1)")
    host = match.group(1) or match.group(2) or "127.0.0.1"
    return InetAddress(host, int(match.group(3)))


def failure_reason(exc: BaseException) -> str:
    """The label of a scoring failure in metrics and log lines: the pool's own (`overload`, `timeout`,
    `extraction_timeout`, `failure`), or `internal` for anything else (a bug of ours)."""
    return exc.reason if isinstance(exc, PoolError) else "internal"


class Observer(Protocol):
    """Where front doors report each message and each failure (the Prometheus metrics of `spamguard serve`)."""

    def scored(self, door: str, label: str, seconds: float) -> None: ...

    def failed(self, door: str, reason: str) -> None: ...


class NoObserver:
    def scored(self, door: str, label: str, seconds: float) -> None:
        pass

    def failed(self, door: str, reason: str) -> None:
        pass


class Pool(Protocol):
    """The scoring pool as the front doors use it (`spamguard.plugins.pool.ScoringPool`)."""

    async def classify(self, message: bytes) -> VerdictLike: ...
