"""The connections of every server front door (milter, spamd, HTTP), in one table per process: the one place that
decides how many may be open, whom to close when a cap is reached, and how many bytes all of them may hold.

Descriptors and memory belong to the process, not to a door, so the caps are the process's: `--max-connections`
open connections and `--max-buffer` bytes held, whatever door they came through. Past the connection cap a new
connection is accepted and another one closed: one of the peer (a uid for a local peer, else an address) holding
the most, never one waiting for its verdict; of that peer's, first one that has not started its conversation,
else one that has brought no request to its end, else the one idle longest. A local user who opens connections
therefore closes their own, and the MTA (Postfix's processes share one uid) keeps being served: a local user
cannot stop mail by connecting, at any door. Past the buffer cap the largest holder is closed (a flood holds
more than any message a client sends).

The table also runs what a long-lived server needs beside its connections: the check that the connection cap
fits the descriptor limit, log lines about connections throttled to a few per kind every 10 s, asyncio's own
errors as one such line, and freed memory handed back to the system after a flood. The doors keep their
protocols and timeouts; they only admit, account and release their connections here."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from spamguard.plugins.server_guards import ThrottledLog, ensure_descriptors, peer_identity, release_free_memory

__all__ = ["Connection", "ConnectionTable", "ServerLimits", "identify"]

log = logging.getLogger("spamguard.connections")

TRIM_AFTER = 256 * 1024  # a connection that held this much: hand the freed memory back once it is gone
TRIM_AFTER_CLOSED = 100  # or this many connections closed since the last time
HOUSEKEEPING_INTERVAL = 1.0


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """What bounds the connections of every door (docs/limits.md, "Servers", says what each means per door)."""

    max_connections: int = 500  # open connections, all doors together
    max_buffer: int = 64 * 1024 * 1024  # bytes all connections hold together (requests being received)
    idle_timeout: float = 120.0  # silence allowed between two requests on a connection that carries several
    read_timeout: float = 10.0  # for a request to arrive once begun (and for our reply to drain)


class Connection:
    """What the table knows of one connection: who is behind it and how far it got, to choose whom to close."""

    __slots__ = ("abort", "busy", "closed_by_us", "door", "held", "last_active", "peak", "peer", "requests", "started")

    def __init__(self, door: str, peer: str, abort: Callable[[], None], now: float) -> None:
        self.door = door
        self.peer = peer  # "uid N" for a local peer, the address of a remote one: who holds how many
        self.abort = abort  # closes the connection at once (the transport's abort)
        self.started = False  # the peer has begun its conversation (milter: negotiated; spamd, HTTP: sent a byte)
        self.requests = 0  # requests brought to their end: a client's connection, closed last at the cap
        self.last_active = now  # accepted, or the last progress the door saw
        self.busy = False  # waiting for its verdict: never closed to make room
        self.held = 0  # bytes counted against max_buffer
        self.peak = 0
        self.closed_by_us = ""  # why the table closed it ("connection-limit", "buffer-limit"), else ""

    def standing(self) -> tuple[bool, bool, float]:
        """Orders a peer's connections at the cap: the lowest is closed first."""
        return (self.requests > 0, self.started, self.last_active)


def identify(sock: socket.socket | None) -> str:
    """Who is behind a connection (`server_guards.peer_identity`), or "unknown" when the socket is gone."""
    try:
        return peer_identity(sock) if sock is not None else "unknown"
    except OSError:  # gone already
        return "unknown"


class ConnectionTable:
    """One per process, shared by its doors. `admit` each connection as it is accepted, `hold` what it buffers as
    that changes, `waiting` around its scoring, `release` it when it ends; `start` before the first door listens
    and `stop` after the last one closed."""

    def __init__(self, limits: ServerLimits | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or ServerLimits()
        self.notes = ThrottledLog(log)
        self.closed_at_cap: Counter[str] = Counter()  # connections closed at a cap, by reason (for the stop line)
        self._clock = clock
        self._open: dict[Connection, None] = {}  # insertion-ordered set
        self._held = 0  # sum of every open connection's `held`
        self._trim_due = False
        self._closed_since_trim = 0
        self._housekeeping_task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._open)

    @property
    def held(self) -> int:
        return self._held

    def now(self) -> float:
        return self._clock()

    # --- admission -----------------------------------------------------------------------------------------------

    def admit(self, door: str, peer: str, abort: Callable[[], None]) -> Connection | None:
        """Track a connection just accepted from `peer` (`identify(its socket)`); at the cap close another one to
        make room. None when every open connection is waiting for its verdict: the caller closes this one
        instead."""
        conn = Connection(door, peer, abort, self._clock())
        if len(self._open) >= self.limits.max_connections and not self._make_room(conn):
            return None
        self._open[conn] = None
        return conn

    def release(self, conn: Connection) -> None:
        """The connection ended (a no-op for one the table closed itself: it left the table then)."""
        if conn not in self._open:
            return
        del self._open[conn]
        self._held -= conn.held
        conn.held = 0
        self._closed_since_trim += 1
        if conn.peak >= TRIM_AFTER:
            self._trim_due = True

    def _make_room(self, newcomer: Connection) -> bool:
        candidates = [c for c in self._open if not c.busy]
        if not candidates:
            self.notes.warning(
                "connection-limit", "connection limit (%d) reached, all busy: refused a %s connection from %s",
                self.limits.max_connections, newcomer.door, newcomer.peer,
            )  # fmt: skip
            return False
        held_by = Counter(c.peer for c in candidates)
        held_by[newcomer.peer] += 1  # the newcomer counts for its peer: opening one more never tips it the other way
        most = max(held_by[c.peer] for c in candidates)
        victim = min((c for c in candidates if held_by[c.peer] == most), key=Connection.standing)
        idle = self._clock() - victim.last_active
        self._close(victim, "connection-limit")
        self.notes.warning(
            "connection-limit",
            "connection limit (%d) reached: closed a %s connection from %s (%d open from there, idle %.1f s)",
            self.limits.max_connections, victim.door, victim.peer, most, idle,
        )  # fmt: skip
        return True

    # --- bytes held ----------------------------------------------------------------------------------------------

    def hold(self, conn: Connection, nbytes: int) -> bool:
        """The connection now holds `nbytes` (its unfinished request). Past max_buffer in all, the largest holder
        is closed, this one or another; False when it was this one (the caller stops serving it)."""
        if conn.closed_by_us:
            return False
        self._held += nbytes - conn.held
        conn.held = nbytes
        conn.peak = max(conn.peak, nbytes)
        if self._held <= self.limits.max_buffer:
            return True
        victim = max(self._open, key=lambda c: c.held)
        self.notes.warning(
            "buffer-limit",
            "connections hold %d bytes, over the cap of %d: closed the largest holder (a %s connection, %d bytes, "
            "from %s)",
            self._held, self.limits.max_buffer, victim.door, victim.held, victim.peer,
        )  # fmt: skip
        self._close(victim, "buffer-limit")
        return victim is not conn

    @contextlib.contextmanager
    def waiting(self, conn: Connection | None) -> Iterator[None]:
        """Around a connection's wait for its verdict: it is not closed to make room meanwhile."""
        if conn is None:
            yield
            return
        conn.busy = True
        try:
            yield
        finally:
            conn.busy = False

    def _close(self, conn: Connection, reason: str) -> None:
        conn.closed_by_us = reason
        self.closed_at_cap[reason] += 1
        self.release(conn)
        self._trim_due = True
        conn.abort()

    # --- the process around the doors ----------------------------------------------------------------------------

    def start(self) -> None:
        """Before the first door listens (again for each door: only the first call does anything): the cap must fit
        the descriptor limit, asyncio's own errors become throttled lines, and the housekeeping starts."""
        ensure_descriptors(self.limits.max_connections)
        if self._housekeeping_task is not None:
            return
        asyncio.get_running_loop().set_exception_handler(self._loop_error)
        self._housekeeping_task = asyncio.create_task(self._housekeeping())

    def stop(self) -> None:
        """After the doors closed: what the throttled log held back, and one line of connections closed at a cap."""
        if self._housekeeping_task is not None:
            self._housekeeping_task.cancel()
            self._housekeeping_task = None
        self.notes.flush(final=True)
        closed = " ".join(f"{reason}={count}" for reason, count in sorted(self.closed_at_cap.items()))
        log.info("connections closed at a cap: %s", closed or "none")

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's own errors (accept() out of descriptors, say) as throttled one-line warnings."""
        exc = context.get("exception")
        self.notes.warning("event-loop", "%s%s", context.get("message", "event loop error"), f": {exc}" if exc else "")

    async def _housekeeping(self) -> None:
        """Every second: the throttled log's summaries, and freed memory handed back after a flood. A trim runs
        when a connection that held much closed, or many closed (2,000 idle connections are tens of MB of small
        objects), and once more in the round after, for whatever closed while it ran."""
        trimmed_last_round = False
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            self.notes.flush()
            closed = self._closed_since_trim
            if self._trim_due or closed >= TRIM_AFTER_CLOSED or (trimmed_last_round and closed):
                self._trim_due, self._closed_since_trim = False, 0
                # a closed connection's buffers can sit in reference cycles (a cancelled read's exception and its
                # frames) until the collector's next full pass, which may be far off
                gc.collect()
                release_free_memory()
                trimmed_last_round = True
            else:
                trimmed_last_round = False
