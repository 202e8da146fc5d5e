"""The spamd front door: an asyncio server that moves bytes between clients and the session state machine and
sends complete messages to the shared scoring pool.

Every connection is bounded: `read_timeout` for the whole request from the moment it connects (a spamd
connection carries one request, which a client sends at once) and for our reply to drain, the session's
`max_size` for what one request holds. How many connections are open, and how many bytes all of them hold, is
the process's connection table's business (`spamguard.plugins.connections`, shared with the other doors): past
its cap it closes one connection of whoever holds the most, never one waiting for its verdict, so a local user
holding connections open closes their own and spamc, Exim and rspamd go on being answered. A reply is written
with one `write` (rspamd reads only the first segment it receives), then the server half-closes and waits
briefly for the client to close, so unread bytes of a refused request never turn the close into a reset that
eats the reply. Events about connections (timeouts, refusals, a bug) are one line each, throttled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from spamguard.errors import one_line
from spamguard.plugins.connections import Connection, ConnectionTable, identify
from spamguard.plugins.frontdoor import LINGER, InetAddress, NoObserver, Observer, Pool, failure_reason
from spamguard.plugins.spamd import protocol as p
from spamguard.plugins.spamd.session import Reply, ScoreRequest, SpamdSession, SpamdSettings

log = logging.getLogger("spamguard.spamd")

DOOR = "spamd"
READ_SIZE = 1 << 16


class RequestTimeout(Exception):
    """The client is too slow: its text goes into spamd's `Timeout:` reply."""


class _Closed(Exception):
    """The connection table closed this connection (a cap): end its handler quietly, it was logged already."""


class SpamdServer:
    def __init__(
        self,
        pool: Pool,
        settings: SpamdSettings,
        table: ConnectionTable | None = None,
        *,
        observer: Observer | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.table = table if table is not None else ConnectionTable()
        self.limits = self.table.limits
        self.observer = observer or NoObserver()
        self.connections: set[asyncio.Task[Any]] = set()

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.table.admit(DOOR, identify(writer.get_extra_info("socket")), writer.transport.abort)
        if conn is None:  # every open connection is waiting for its verdict (logged by the table)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            await self._converse(reader, writer, conn)
        except (_Closed, ConnectionError, asyncio.IncompleteReadError):
            pass  # closed at a cap, or the client went away: nothing to answer
        except Exception as exc:  # a bug: this connection ends (its client applies its own policy), others go on
            self.table.notes.warning("internal", "spamd: closing connection: internal error: %s", one_line(exc))
        finally:
            writer.close()  # a no-op when aborted already
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.table.release(conn)
            if task is not None:
                self.connections.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Connection) -> None:
        session = SpamdSession(self.settings)
        deadline = time.monotonic() + self.limits.read_timeout
        action: Reply | ScoreRequest | None = None
        try:
            while action is None:
                data = await self._read(reader, deadline)
                if conn.closed_by_us:
                    raise _Closed
                conn.started = conn.started or bool(data)
                conn.last_active = self.table.now()
                action = session.feed(data) if data else session.eof()
                if not self.table.hold(conn, session.reader.held):
                    raise _Closed
        except RequestTimeout as exc:
            self.table.notes.warning(
                "timeout", "spamd: closing connection: %s (%d bytes received)", exc, session.reader.pending
            )
            self.observer.failed(DOOR, "read_timeout")
            await self._finish(reader, writer, p.error_reply(p.EX_TIMEOUT, f"Timeout: ({exc})"))
            return
        self.table.hold(conn, 0)  # the request is complete: the pool holds its message now (up to --max-pending)
        if isinstance(action, Reply):
            if action.outcome == "refused":
                text = action.data.decode("ascii", "replace").strip()
                self.table.notes.warning("refused", "spamd: refused a request: %s", text)
                self.observer.failed(DOOR, "bad_request")
            await self._finish(reader, writer, action.data)
            return
        with self.table.waiting(conn):
            reply = await self.score(session, action)
        conn.requests += 1
        await self._finish(reader, writer, reply)

    async def _read(self, reader: asyncio.StreamReader, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout(f"request not complete after {self.limits.read_timeout:g} s")
        try:
            return await asyncio.wait_for(reader.read(READ_SIZE), remaining)
        except TimeoutError:
            raise RequestTimeout(f"request not complete after {self.limits.read_timeout:g} s") from None

    async def score(self, session: SpamdSession, action: ScoreRequest) -> bytes:
        request = action.request
        start = time.perf_counter()
        try:
            verdict = await self.pool.classify(request.message)
        except Exception as exc:
            seconds = time.perf_counter() - start
            reply = session.failure(exc)
            reason = failure_reason(exc)
            self.observer.failed(DOOR, reason)
            log.info(
                "door=spamd verb=%s user=%r verdict=error reason=%s reply=%s ms=%.1f size=%d error=%r",
                request.verb,
                request.user,
                reason,
                reply.split(b" ")[1].decode(),
                seconds * 1000,
                request.size,
                one_line(exc),
            )
            return reply
        seconds = time.perf_counter() - start
        self.observer.scored(DOOR, verdict.label, seconds)
        reply = session.verdict(verdict)
        log.info(
            "door=spamd verb=%s user=%r verdict=%s score=%.4f points=%s kind=%s stage=%s ms=%.1f size=%d%s",
            request.verb,
            request.user,
            verdict.label,
            verdict.score,
            session.points(verdict).score_text,
            verdict.kind,
            verdict.stage,
            seconds * 1000,
            request.size,
            " truncated=yes" if request.truncated else "",
        )
        return reply

    async def _finish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bytes) -> None:
        """Send the reply in one write (a client that does not read it has `read_timeout` to start), half-close,
        and give the client a moment to close its side."""
        if reply:
            writer.write(reply)
            try:
                await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
            except TimeoutError:
                self.table.notes.warning(
                    "not-reading", "spamd: closing connection: our reply unread for %g s", self.limits.read_timeout
                )
                writer.transport.abort()  # close() would wait for the unread reply to drain
                return
        if writer.can_write_eof():
            writer.write_eof()
        deadline = time.monotonic() + LINGER
        with contextlib.suppress(TimeoutError, ConnectionError):
            while (remaining := deadline - time.monotonic()) > 0:
                if not await asyncio.wait_for(reader.read(READ_SIZE), remaining):
                    break

    async def start(self, address: InetAddress) -> asyncio.base_events.Server:
        """Listen, with the connection table started (its cap checked against the descriptor limit)."""
        self.table.start()
        return await asyncio.start_server(
            self.handle_connection, host=address.host, port=address.port, reuse_address=True, backlog=256
        )
