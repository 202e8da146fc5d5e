"""The milter daemon: an asyncio server for the protocol in front of the shared scoring pool.

The event loop only moves bytes and protocol state, so hundreds of idle or slow MTA connections cost little; the
model and the text extraction run in the pool (`spamguard.plugins.pool`). This is the only milter module with
sockets, and the place where every connection is bounded: how many there are (past the cap the connection idle
longest goes, so a local user holding connections cannot lock the MTA out), how long one may sit idle or leave
a packet unfinished, and how many bytes all of them together may hold before the largest holder is dropped.
Each such event is logged, at most a few lines per kind every 10 s however hard a peer floods."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import stat
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spamguard.errors import SpamguardError, one_line
from spamguard.plugins.milter import protocol as p
from spamguard.plugins.milter.address import ListenAddress
from spamguard.plugins.milter.session import CLOSE, MilterPolicy, MilterSession, Outcome, ScoreRequest
from spamguard.plugins.pool import PoolError, ScoringPool
from spamguard.plugins.server_guards import ThrottledLog, ensure_descriptors, peer_identity, release_free_memory

log = logging.getLogger("spamguard.milter")

DEFAULT_LISTEN = "inet:127.0.0.1:8894"
READ_SIZE = 64 * 1024
# asyncio buffers up to twice this per connection before it stops reading the socket (while a connection waits
# for its verdict, say): a milter packet is at most 64 KiB of body
STREAM_LIMIT = 64 * 1024
TRIM_AFTER = 256 * 1024  # a connection that held this much: hand the freed memory back once it is gone
TRIM_AFTER_CLOSED = 100  # or this many connections closed since the last time
HOUSEKEEPING_INTERVAL = 1.0


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    max_connections: int = 500  # open MTA connections; past it the one idle longest is closed
    max_buffer: int = 64 * 1024 * 1024  # bytes all connections hold (partial packets, messages not yet scored)
    idle_timeout: float = 120.0  # seconds without a packet, between messages, before the connection is closed
    read_timeout: float = 10.0  # seconds to negotiate, to finish a packet once started, to take our replies


class _Connection:
    """What the server tracks of one connection to pick whom to close at a cap."""

    __slots__ = ("busy", "closed_by_us", "held", "last_packet", "messages", "peak", "peer", "session", "writer")

    def __init__(self, writer: asyncio.StreamWriter, session: MilterSession, peer: str, now: float) -> None:
        self.writer = writer
        self.session = session
        self.peer = peer  # the uid behind a unix socket, the address behind TCP: who holds how many
        self.last_packet = now  # accepted, or the last complete packet
        self.busy = False  # waiting for its verdict: never closed to make room
        self.messages = 0  # messages it brought to the end: an MTA's connection, closed last at the cap
        self.held = 0  # bytes counted against max_buffer
        self.peak = 0
        self.closed_by_us = ""  # why we closed it (cap, buffer), for its own log line not to repeat it


def _peer(writer: asyncio.StreamWriter) -> str:
    sock = writer.get_extra_info("socket")
    try:
        return peer_identity(sock) if sock is not None else "unknown"
    except OSError:  # gone already
        return "unknown"


class _Closed(Exception):
    """We closed this connection ourselves (a cap): end its handler quietly, it was logged already."""


class _NotReading(Exception):
    """The peer stopped reading our replies: the socket's buffers are full and nothing moves."""


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class MilterServer:
    def __init__(self, pool: ScoringPool, policy: MilterPolicy, limits: ServerLimits | None = None) -> None:
        self.pool = pool
        self.policy = policy
        self.limits = limits or ServerLimits()
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self._held = 0  # sum of every connection's `held`
        self._notes = ThrottledLog(log)
        self._trim_due = False
        self._closed_since_trim = 0
        self._housekeeping_task: asyncio.Task[None] | None = None
        self.closed_at_cap: Counter[str] = Counter()  # connections we closed, by reason (for the stop line)

    # --- one connection -----------------------------------------------------------------------------------------

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio runs each connection's callback as a task
        loop = asyncio.get_running_loop()
        session = MilterSession(self.policy)
        conn = _Connection(writer, session, _peer(writer), loop.time())
        if len(self._connections) >= self.limits.max_connections and not self._make_room(conn):
            writer.transport.abort()
            return
        self._connections[task] = conn
        packets = p.PacketReader()
        try:
            while True:
                data = await asyncio.wait_for(reader.read(READ_SIZE), self._wait(conn, session, packets, loop))
                if conn.closed_by_us:
                    raise _Closed
                if not data:
                    if packets.pending:
                        self._notes.warning("cut", "connection closed inside a packet (%d bytes held)", packets.pending)
                    return
                for packet in packets.feed(data):
                    conn.last_packet = loop.time()
                    result = session.handle(p.decode_command(packet))
                    if result is CLOSE:
                        return
                    if isinstance(result, ScoreRequest):
                        self._account(conn, packets, session)
                        conn.busy = True
                        try:
                            result = (await self.decide(session, result)).replies
                        finally:
                            conn.busy = False
                        conn.messages += 1
                    writer.write(b"".join(result))  # type: ignore[arg-type]
                self._account(conn, packets, session)
                try:
                    await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
                except TimeoutError:
                    raise _NotReading from None
        except _Closed:
            pass
        except _NotReading:
            self._notes.warning(
                "not-reading", "closing connection: our replies unread for %g s", self.limits.read_timeout
            )
        except p.MilterProtocolError as exc:
            self._notes.warning("protocol", "closing connection: protocol error: %s", exc)
        except TimeoutError:
            self._notes.warning("timeout", "closing connection: %s", self._timeout_reason(session, packets))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the MTA went away (its own timeout, a restart) or we closed it at a cap: nothing to answer
        except Exception as exc:  # a bug: this connection ends (the MTA applies its default action), others go on
            self._notes.warning("internal", "closing connection: internal error: %s", one_line(exc))
        finally:
            writer.transport.abort()
            del self._connections[task]
            self._held -= conn.held
            self._closed_since_trim += 1
            if conn.peak >= TRIM_AFTER:
                self._trim_due = True

    def _wait(
        self, conn: _Connection, session: MilterSession, packets: p.PacketReader, loop: asyncio.AbstractEventLoop
    ) -> float:
        """Seconds the next read may take: a short limit while a packet is unfinished or the MTA has not yet
        negotiated (an MTA writes each packet at once, and negotiates as it connects), a long one between
        messages."""
        short = not session.negotiated or packets.pending
        limit = self.limits.read_timeout if short else self.limits.idle_timeout
        return max(conn.last_packet + limit - loop.time(), 0.0)

    def _timeout_reason(self, session: MilterSession, packets: p.PacketReader) -> str:
        if packets.pending:
            return f"a packet left unfinished for {self.limits.read_timeout:g} s ({packets.pending} bytes held)"
        if not session.negotiated:
            return f"no option negotiation within {self.limits.read_timeout:g} s"
        return f"idle for {self.limits.idle_timeout:g} s"

    # --- the caps ----------------------------------------------------------------------------------------------------

    def _make_room(self, newcomer: _Connection) -> bool:
        """At the connection cap: close one connection of the peer (uid or address) holding the most, never one
        waiting for its verdict: one that has not negotiated, else one that has brought no message to its end,
        else the one idle longest. False when there is none to close."""
        candidates = [c for c in self._connections.values() if not c.busy and not c.closed_by_us]
        if not candidates:
            self._notes.warning(
                "connection-limit", "connection limit (%d) reached, all busy: refused a connection from %s",
                self.limits.max_connections, newcomer.peer,
            )  # fmt: skip
            return False
        held_by = Counter(c.peer for c in candidates)
        most = max(held_by.values())
        victim = min(
            (c for c in candidates if held_by[c.peer] == most),
            key=lambda c: (c.messages > 0, c.session.negotiated, c.last_packet),
        )
        idle = asyncio.get_running_loop().time() - victim.last_packet
        self._close(victim, "connection-limit")
        self._notes.warning(
            "connection-limit",
            "connection limit (%d) reached: closed a connection from %s (%d open from there, idle %.1f s)",
            self.limits.max_connections, victim.peer, most, idle,
        )  # fmt: skip
        return True

    def _account(self, conn: _Connection, packets: p.PacketReader, session: MilterSession) -> None:
        """Count what this connection holds; past max_buffer in all, close the largest holder (this one or
        another: a flood is bigger than any message an MTA sends)."""
        held = packets.pending + session.held_bytes
        self._held += held - conn.held
        conn.held = held
        conn.peak = max(conn.peak, held)
        if self._held <= self.limits.max_buffer:
            return
        victim = max(self._connections.values(), key=lambda c: c.held)
        self._notes.warning(
            "buffer-limit",
            "connections hold %d bytes, over the cap of %d: closed the largest holder (%d bytes, from %s)",
            self._held, self.limits.max_buffer, victim.held, victim.peer,
        )  # fmt: skip
        self._close(victim, "buffer-limit")
        if victim is conn:
            raise _Closed

    def _close(self, conn: _Connection, reason: str) -> None:
        conn.closed_by_us = reason
        self.closed_at_cap[reason] += 1
        self._held -= conn.held
        conn.held = 0
        self._trim_due = True
        conn.writer.transport.abort()

    # --- scoring -------------------------------------------------------------------------------------------------

    async def decide(self, session: MilterSession, request: ScoreRequest) -> Outcome:
        start = time.perf_counter()
        error = ""
        if session.too_many_forged:
            error = f"more than {self.policy.max_headers} copies of spamguard's headers"
        else:
            try:
                verdict = await self.pool.classify(request.message)
            except PoolError as exc:
                error = str(exc)
        ms = (time.perf_counter() - start) * 1000
        extra = " truncated=yes" if request.truncated else ""
        if request.dropped_headers:
            extra += f" dropped_headers={request.dropped_headers}"
        if error:
            outcome = session.failure()
            log.info(
                "queue_id=%s verdict=error action=%s ms=%.1f size=%d%s error=%r",
                request.queue_id, outcome.action, ms, request.size, extra, error,
            )  # fmt: skip
        else:
            outcome = session.verdict(verdict)
            log.info(
                "queue_id=%s verdict=%s score=%.4f kind=%s stage=%s action=%s ms=%.1f size=%d%s",
                request.queue_id, verdict.label, verdict.score, verdict.kind, verdict.stage, outcome.action, ms,
                request.size, extra,
            )  # fmt: skip
        return outcome

    # --- the listener --------------------------------------------------------------------------------------------

    async def start(self, address: ListenAddress, *, socket_mode: int = 0o660) -> asyncio.base_events.Server:
        """Listen (a front door of `spamguard serve` calls this, then `stop()`): checks that the connection cap fits
        the descriptor limit, and starts the housekeeping (throttled log summaries, memory handed back)."""
        ensure_descriptors(self.limits.max_connections)
        server = await self._listen(address, socket_mode)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_error)
        self._housekeeping_task = asyncio.create_task(self._housekeeping())
        return server

    async def _listen(self, address: ListenAddress, socket_mode: int) -> asyncio.base_events.Server:
        try:
            if address.kind == "unix":
                path = Path(address.path)
                if path.exists() or path.is_symlink():
                    if not stat.S_ISSOCK(path.lstat().st_mode):
                        raise SpamguardError(f"cannot listen on {address}: {path} exists and is not a socket")
                    if _answers(path):
                        raise SpamguardError(f"cannot listen on {address}: another process is listening there")
                    path.unlink()  # a stale socket from a previous run
                server = await asyncio.start_unix_server(self.handle_connection, path=str(path), limit=STREAM_LIMIT)
                os.chmod(path, socket_mode)
                return server
            return await asyncio.start_server(
                self.handle_connection, host=address.host, port=address.port, limit=STREAM_LIMIT
            )
        except OSError as exc:
            raise SpamguardError(f"cannot listen on {address}: {exc.strerror or exc}") from exc

    @property
    def connections(self) -> set[asyncio.Task[Any]]:
        """The tasks of the open connections (to wait for, or cancel, at shutdown)."""
        return set(self._connections)

    async def stop(self, server: asyncio.base_events.Server, *, grace: float = 2.0) -> None:
        """Stop listening, give open conversations `grace` seconds (after which the MTA applies its
        milter_default_action to whatever they carried), then close the rest; one summary line."""
        server.close()
        if self._connections:
            await asyncio.wait(self.connections, timeout=grace)
        for task in self.connections:
            task.cancel()
        if self._housekeeping_task is not None:
            self._housekeeping_task.cancel()
        self._notes.flush(final=True)
        closed = " ".join(f"{reason}={count}" for reason, count in sorted(self.closed_at_cap.items()))
        log.info("connections closed at a cap: %s", closed or "none")

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's own errors (accept() out of descriptors, say) as throttled one-line warnings."""
        exc = context.get("exception")
        self._notes.warning("event-loop", "%s%s", context.get("message", "event loop error"), f": {exc}" if exc else "")

    async def _housekeeping(self) -> None:
        """Every second: the throttled log's summaries, and freed memory handed back after a flood. A trim runs
        when a connection that held much closed, or many closed (2,000 idle connections are tens of MB of
        small objects), and once more in the round after, for whatever closed while it ran."""
        trimmed_last_round = False
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            self._notes.flush()
            closed = self._closed_since_trim
            if self._trim_due or closed >= TRIM_AFTER_CLOSED or (trimmed_last_round and closed):
                self._trim_due, self._closed_since_trim = False, 0
                # a closed connection's buffers can sit in reference cycles (a cancelled read's exception and
                # its frames) until the collector's next full pass, which may be far off
                gc.collect()
                release_free_memory()
                trimmed_last_round = True
            else:
                trimmed_last_round = False

    async def serve(self, address: ListenAddress, *, socket_mode: int = 0o660) -> None:
        """`spamguard milter`: serve until SIGTERM or SIGINT, then stop (see `stop`) and log what the pool did."""
        server = await self.start(address, socket_mode=socket_mode)
        bound = address
        if address.kind == "inet":
            host, port = server.sockets[0].getsockname()[:2]
            bound = ListenAddress("inet", host=host, port=port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("listening on %s", bound)
        await stop.wait()
        log.info("stopping")
        await self.stop(server)
        if address.kind == "unix":
            with contextlib.suppress(OSError):
                Path(address.path).unlink()
        log.info("%s", self.pool.stats().line())
