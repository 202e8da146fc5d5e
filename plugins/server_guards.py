"""What every long-running front door needs against a peer that floods it: log lines that cannot outgrow the
disk, a connection cap that fits the process's file descriptors, and freed memory handed back to the system."""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable

from spamguard.classifier import _release_free_memory as release_free_memory
from spamguard.errors import SpamguardError

__all__ = ["RESERVED_DESCRIPTORS", "ThrottledLog", "ensure_descriptors", "release_free_memory"]

# Descriptors a server needs besides its connections: the listening socket, the model and tokenizer files while
# loading, two pipes per text extraction process, the event loop's own, the log, and room for a spike.
RESERVED_DESCRIPTORS = 64


class ThrottledLog:
    """At most `burst` lines per `period` seconds for each kind of event; the rest are counted and reported in one
    summary line when the window closes (at the next event of that kind or the next `flush()`). A flood of bad
    connections then costs a few lines every `period` instead of a line per connection or packet."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        period: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # kind -> (window start, events in it)

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = self._clock()
        start, count = self._windows.get(kind, (now, 0))
        if now - start >= self._period:
            self._summary(kind, count)
            start, count = now, 0
        self._windows[kind] = (start, count + 1)
        if count < self._burst:
            self._logger.warning(message, *args)

    def _summary(self, kind: str, count: int) -> None:
        if count > self._burst:
            self._logger.warning(
                "%d more %s events in %g s (not logged one by one)", count - self._burst, kind, self._period
            )

    def flush(self) -> None:
        """Report and close the windows that are over (call it every few seconds)."""
        now = self._clock()
        for kind, (start, count) in list(self._windows.items()):
            if now - start >= self._period:
                self._summary(kind, count)
                del self._windows[kind]


def ensure_descriptors(connections: int, reserved: int = RESERVED_DESCRIPTORS) -> int:
    """Make sure `connections` sockets plus `reserved` fit under RLIMIT_NOFILE, raising the soft limit up to the
    hard one if needed (what an unprivileged process may do); returns the soft limit in force. A server whose cap
    is above its limit would fail in accept() under load instead of applying its cap."""
    need = connections + reserved
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SpamguardError(
                f"{connections} connections need {need} file descriptors, but the limit is {hard}: "
                f"lower --max-connections or raise the limit (LimitNOFILE= in the systemd unit, ulimit -n)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        soft = need
    return soft
