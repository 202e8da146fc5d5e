"""The spamd front door: an asyncio server that moves bytes between clients and the session state machine and
sends complete messages to the shared scoring pool.

Every connection is bounded: `idle_timeout` between two reads, `read_timeout` for the whole request, the
session's `max_size` for what is held, and `max_connections` for how many are served at once (one more is
answered EX_TEMPFAIL at once, so a client fails over instead of waiting). A reply is written with one `write`
(rspamd reads only the first segment it receives), then the server half-closes and waits briefly for the
client to close, so unread bytes of a refused request never turn the close into a reset that eats the reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from spamguard.errors import one_line
from spamguard.plugins.frontdoor import InetAddress, NoObserver, Observer, Pool
from spamguard.plugins.spamd import protocol as p
from spamguard.plugins.spamd.session import Reply, ScoreRequest, SpamdSession, SpamdSettings

log = logging.getLogger("spamguard.spamd")

DOOR = "spamd"
READ_SIZE = 1 << 16
DEFAULT_READ_TIMEOUT = 30.0  # seconds for a whole request to arrive
DEFAULT_IDLE_TIMEOUT = 10.0  # seconds a client may stay silent mid-request
DEFAULT_MAX_CONNECTIONS = 200
LINGER = 1.0  # seconds to wait for the client to close after our reply


class RequestTimeout(Exception):
    """The client is too slow: its text goes into spamd's `Timeout:` reply."""


class SpamdServer:
    def __init__(
        self,
        pool: Pool,
        settings: SpamdSettings,
        *,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        observer: Observer | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.observer = observer or NoObserver()
        self.connections: set[asyncio.Task[Any]] = set()

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        busy = len(self.connections) >= self.max_connections
        if task is not None:
            self.connections.add(task)
        try:
            if busy:
                log.warning("refusing a connection: %d connections open", self.max_connections)
                self.observer.failed(DOOR, "busy")
                text = f"Temporary failure: {self.max_connections} connections already open"
                await self._finish(reader, writer, p.error_reply(p.EX_TEMPFAIL, text))
                return
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        except Exception:
            log.exception("closing connection: internal error")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self.connections.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = SpamdSession(self.settings)
        deadline = time.monotonic() + self.read_timeout
        action: Reply | ScoreRequest | None = None
        try:
            while action is None:
                data = await self._read(reader, deadline)
                action = session.feed(data) if data else session.eof()
        except RequestTimeout as exc:
            log.warning("closing connection: %s (%d bytes received)", exc, session.reader.pending)
            self.observer.failed(DOOR, "timeout")
            await self._finish(reader, writer, p.error_reply(p.EX_TIMEOUT, f"Timeout: ({exc})"))
            return
        if isinstance(action, Reply):
            if action.outcome == "refused":
                log.warning("refused a request: %s", action.data.decode("ascii", "replace").strip())
                self.observer.failed(DOOR, "bad_request")
            await self._finish(reader, writer, action.data)
            return
        await self._finish(reader, writer, await self.score(session, action))

    async def _read(self, reader: asyncio.StreamReader, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        wait = min(self.idle_timeout, remaining)
        if wait <= 0:
            raise RequestTimeout(f"request not complete after {self.read_timeout:g} s")
        try:
            return await asyncio.wait_for(reader.read(READ_SIZE), wait)
        except TimeoutError:
            if wait < self.idle_timeout:
                raise RequestTimeout(f"request not complete after {self.read_timeout:g} s") from None
            raise RequestTimeout(f"client silent for {self.idle_timeout:g} s") from None

    async def score(self, session: SpamdSession, action: ScoreRequest) -> bytes:
        request = action.request
        start = time.perf_counter()
        try:
            verdict = await self.pool.classify(request.message)
        except Exception as exc:
            seconds = time.perf_counter() - start
            reply = session.failure(exc)
            self.observer.failed(DOOR, "scoring")
            log.info(
                "door=spamd verb=%s user=%r verdict=error reply=%s ms=%.1f size=%d error=%r",
                request.verb,
                request.user,
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
        """Send the reply in one write, half-close, and give the client a moment to close its side."""
        if reply:
            writer.write(reply)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        deadline = time.monotonic() + LINGER
        with contextlib.suppress(TimeoutError, ConnectionError):
            while (remaining := deadline - time.monotonic()) > 0:
                if not await asyncio.wait_for(reader.read(READ_SIZE), remaining):
                    break

    async def start(self, address: InetAddress) -> asyncio.base_events.Server:
        return await asyncio.start_server(
            self.handle_connection, host=address.host, port=address.port, reuse_address=True, backlog=256
        )
