"""The milter daemon: an asyncio server for the protocol in front of the shared scoring pool.

The event loop only moves bytes and protocol state, so hundreds of idle or slow MTA connections cost little; the
model and the text extraction run in the pool (`spamguard.plugins.pool`). This is the only milter module with
sockets, and the place where every milter connection is bounded in time: how long one may sit idle or leave a
packet unfinished. How many there are and how many bytes they hold are counted in the process's connection table
(`spamguard.plugins.connections`, shared with the other doors), which closes one of whoever holds the most at
the cap, so a local user holding connections cannot lock the MTA out. Each such event is logged, at most a few
lines per kind every 10 s however hard a peer floods."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

from spamguard.errors import SpamguardError, one_line
from spamguard.plugins.connections import Connection, ConnectionTable, identify
from spamguard.plugins.frontdoor import Pool, failure_reason
from spamguard.plugins.milter import protocol as p
from spamguard.plugins.milter.address import ListenAddress
from spamguard.plugins.milter.session import CLOSE, MilterPolicy, MilterSession, Outcome, ScoreRequest
from spamguard.plugins.pool import PoolError

log = logging.getLogger("spamguard.milter")

DEFAULT_LISTEN = "inet:127.0.0.1:8894"
READ_SIZE = 64 * 1024
# asyncio buffers up to twice this per connection before it stops reading the socket (while a connection waits
# for its verdict, say): a milter packet is at most 64 KiB of body
STREAM_LIMIT = 64 * 1024


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


DOOR = "milter"


class MilterServer:
    def __init__(self, pool: Pool, policy: MilterPolicy, table: ConnectionTable | None = None) -> None:
        self.pool = pool
        self.policy = policy
        # the process's connection table: shared with the other doors of `spamguard serve`
        self.table = table if table is not None else ConnectionTable()
        self.limits = self.table.limits
        self._notes = self.table.notes
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- one connection -----------------------------------------------------------------------------------------

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio runs each connection's callback as a task
        conn = self.table.admit(DOOR, identify(writer.get_extra_info("socket")), writer.transport.abort)
        if conn is None:
            writer.transport.abort()
            return
        self._tasks.add(task)
        session = MilterSession(self.policy)
        packets = p.PacketReader()
        try:
            while True:
                data = await asyncio.wait_for(reader.read(READ_SIZE), self._wait(conn, session, packets))
                if conn.closed_by_us:
                    raise _Closed
                if not data:
                    if packets.pending:
                        self._notes.warning("cut", "connection closed inside a packet (%d bytes held)", packets.pending)
                    return
                for packet in packets.feed(data):
                    conn.last_active = self.table.now()
                    result = session.handle(p.decode_command(packet))
                    conn.started = session.negotiated
                    if result is CLOSE:
                        return
                    if isinstance(result, ScoreRequest):
                        self._account(conn, packets, session)
                        with self.table.waiting(conn):
                            result = (await self.decide(session, result)).replies
                        conn.requests += 1
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
            self.table.release(conn)
            self._tasks.discard(task)

    def _wait(self, conn: Connection, session: MilterSession, packets: p.PacketReader) -> float:
        """Seconds the next read may take: a short limit while a packet is unfinished or the MTA has not yet
        negotiated (an MTA writes each packet at once, and negotiates as it connects), a long one between
        messages."""
        short = not session.negotiated or packets.pending
        limit = self.limits.read_timeout if short else self.limits.idle_timeout
        return max(conn.last_active + limit - self.table.now(), 0.0)

    def _timeout_reason(self, session: MilterSession, packets: p.PacketReader) -> str:
        if packets.pending:
            return f"a packet left unfinished for {self.limits.read_timeout:g} s ({packets.pending} bytes held)"
        if not session.negotiated:
            return f"no option negotiation within {self.limits.read_timeout:g} s"
        return f"idle for {self.limits.idle_timeout:g} s"

    def _account(self, conn: Connection, packets: p.PacketReader, session: MilterSession) -> None:
        """Count what this connection holds (unfinished packets, headers and body kept) in the process's table;
        past its buffer cap the table closes the largest holder, which may be this one."""
        if not self.table.hold(conn, packets.pending + session.held_bytes):
            raise _Closed

    # --- scoring -------------------------------------------------------------------------------------------------

    async def decide(self, session: MilterSession, request: ScoreRequest) -> Outcome:
        start = time.perf_counter()
        error = reason = ""
        if session.too_many_forged:
            error, reason = f"more than {self.policy.max_headers} copies of spamguard's headers", "forged_headers"
        else:
            try:
                verdict = await self.pool.classify(request.message)
            except PoolError as exc:
                error, reason = str(exc), failure_reason(exc)
        ms = (time.perf_counter() - start) * 1000
        extra = " truncated=yes" if request.truncated else ""
        if request.dropped_headers:
            extra += f" dropped_headers={request.dropped_headers}"
        if error:
            outcome = session.failure()
            log.info(
                "queue_id=%s verdict=error action=%s reason=%s ms=%.1f size=%d%s error=%r",
                request.queue_id, outcome.action, reason, ms, request.size, extra, error,
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
        """Listen (a front door of `spamguard serve` calls this, then `stop()`), with the connection table started:
        its cap checked against the descriptor limit, its housekeeping running."""
        self.table.start()
        return await self._listen(address, socket_mode)

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
        return set(self._tasks)

    async def stop(self, server: asyncio.base_events.Server, *, grace: float = 2.0) -> None:
        """Stop listening, give open conversations `grace` seconds (after which the MTA applies its
        milter_default_action to whatever they carried), then close the rest."""
        server.close()
        if self._tasks:
            await asyncio.wait(self.connections, timeout=grace)
        for task in self.connections:
            task.cancel()

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
        self.table.stop()
        if address.kind == "unix":
            with contextlib.suppress(OSError):
                Path(address.path).unlink()
        log.info("%s", self.pool.stats().line())
