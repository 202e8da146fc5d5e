"""The HTTP front door: aiohttp on the same event loop as the other doors, scoring through the same pool.

    POST /v1/check   message/rfc822 or text/plain: the raw message; application/json: {"text": "..."} or
                     {"messages": ["...", ...]} -> {"label", "score", "threshold", "model", "kind", "stage", "reason"}
                     (a batch: {"results": [...]})
    GET  /healthz    {"status": "ok", "model": NAME} (no token needed: load balancers ask it)
    GET  /metrics    Prometheus text format

Bounded like the other doors. Connections are admitted through the process's connection table
(`spamguard.plugins.connections`, shared with the milter and spamd doors): aiohttp's own protocol object is
wrapped in `_Admitted`, which counts each connection there before aiohttp sees a byte, so past the cap one
connection of whoever holds the most is closed (never one waiting for its verdict) and the body bytes read so
far count against the buffer cap. Time: aiohttp's keep-alive timer, which runs from the moment a connection is
accepted and from the end of each response until a complete request head arrives (aiohttp 3.14.5, the version
required), is `read_timeout`, so a client sending its head a byte at a time (slowloris), or nothing at all, is
closed `read_timeout` after it connected; the whole request must then have arrived `read_timeout` after its
first byte (408). The head by aiohttp's parser limits (`max_line_size`, `max_field_size`, `MAX_HEADERS`), the body by
`max_size` (413 past it, decided from Content-Length before anything is read when the client sends one), a
batch by `max_batch` messages. A pool failure is 503 with Retry-After, never a verdict; aiohttp's own error
reports (a malformed request, with a traceback) become one throttled line."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from spamguard.errors import SpamguardError, one_line
from spamguard.plugins.connections import Connection, ConnectionTable, identify
from spamguard.plugins.frontdoor import LINGER, InetAddress, NoObserver, Observer, Pool, failure_reason
from spamguard.plugins.headers import VerdictLike
from spamguard.plugins.pipe import DEFAULT_MAX_SIZE
from spamguard.plugins.server_guards import ThrottledLog

log = logging.getLogger("spamguard.http")

DOOR = "http"
RAW_TYPES = ("message/rfc822", "text/plain")
DEFAULT_MAX_BATCH = 100
MAX_HEADERS = 32  # header lines of a request (aiohttp's default is 128; a client of this API sends about 6)
GRACE = 2.0  # seconds open requests get at shutdown, as on the other doors


class BadRequest(Exception):
    pass


class _Closed(Exception):
    """The connection table closed this connection (the buffer cap)."""


class _Admitted(asyncio.Protocol):
    """aiohttp's protocol for one connection (its `RequestHandler`), admitted through the connection table first
    and kept up to date there: a refused connection never reaches aiohttp. Everything else is handed on as is."""

    def __init__(self, handler: asyncio.Protocol, api: HttpApi) -> None:
        self.handler = handler
        self.api = api
        self.conn: Connection | None = None
        self.request_began: float | None = None  # first byte of the request being received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        self.conn = self.api.table.admit(DOOR, identify(stream.get_extra_info("socket")), stream.abort)
        if self.conn is None:  # every open connection is waiting for its verdict (logged by the table)
            stream.abort()
            return
        self.api.admitted[self.handler] = self
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.conn is None:
            return
        self.conn.started = True
        self.conn.last_active = self.api.table.now()
        if self.request_began is None:
            self.request_began = self.conn.last_active
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.conn is None else self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is None:
            return
        self.api.table.release(self.conn)
        self.api.admitted.pop(self.handler, None)
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class _OneLineLog:
    """What aiohttp's request handler logs (each malformed request with its traceback at `exception`), as one
    throttled line per event: a client sending garbage cannot grow the log faster than a few lines per 10 s."""

    def __init__(self, notes: ThrottledLog) -> None:
        self.notes = notes

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    def exception(self, message: str, *args: Any, exc_info: BaseException | None = None, **kwargs: Any) -> None:
        text = message % args if args else message
        self.notes.warning("http-error", "http: %s%s", text, f": {one_line(exc_info)}" if exc_info else "")

    warning = error = exception


class HttpApi:
    def __init__(
        self,
        pool: Pool,
        *,
        model: str,
        table: ConnectionTable | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        max_batch: int = DEFAULT_MAX_BATCH,
        token: str | None = None,
        observer: Observer | None = None,
        metrics: Any = None,  # a `Metrics` for /metrics (None: 404)
    ) -> None:
        self.pool = pool
        self.model = model
        self.table = table if table is not None else ConnectionTable()
        self.read_timeout = self.table.limits.read_timeout
        self.max_size = max_size
        self.max_batch = max_batch
        self.token = token
        self.observer = observer or NoObserver()
        self.metrics = metrics
        self.admitted: dict[asyncio.Protocol, _Admitted] = {}  # aiohttp's handler -> its admission
        self._runner: web.AppRunner | None = None
        self._server: asyncio.base_events.Server | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_size, middlewares=[self._guard])
        app.router.add_post("/v1/check", self.check)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The bearer token (every path but /healthz), errors as one JSON line instead of HTML pages, and the
        connection's progress for the table."""
        admitted = self.admitted.get(request.protocol)
        try:
            return await self._guarded(request, handler)
        finally:
            if admitted is not None and admitted.conn is not None:
                admitted.request_began = None
                admitted.conn.requests += 1
                self.table.hold(admitted.conn, 0)

    async def _guarded(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token is not None and request.path != "/healthz":
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                self.observer.failed(DOOR, "unauthorized")
                return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                self.observer.failed(DOOR, "too_large")
                return _error(413, f"body over the size limit of {self.max_size} bytes")
            return _error(exc.status, exc.reason)
        except _Closed:  # at the buffer cap: the connection is gone already, nobody reads this
            return _error(503, "connection closed at the buffer cap")
        except Exception as exc:  # a bug: one line, a JSON 500, the server goes on
            self.table.notes.warning("internal", "http: internal error: %s", one_line(exc))
            return _error(500, "internal error")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": self.model})

    async def prometheus(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            raise web.HTTPNotFound()
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def check(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self.max_size:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_size, actual_size=request.content_length)
        kind = request.content_type
        if kind not in (*RAW_TYPES, "application/json"):
            self.observer.failed(DOOR, "unsupported_type")
            return _error(415, f"content type {kind!r}: send message/rfc822, text/plain or application/json")
        admitted = self.admitted.get(request.protocol)
        began = admitted.request_began if admitted is not None else None
        remaining = self.read_timeout - (self.table.now() - began) if began is not None else self.read_timeout
        try:
            body = await asyncio.wait_for(self._body(request, admitted), max(remaining, 0.0))
        except TimeoutError:
            self.observer.failed(DOOR, "read_timeout")
            self.table.notes.warning("timeout", "http: request not received whole within %g s", self.read_timeout)
            return _error(408, f"request not received whole within {self.read_timeout:g} s")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.observer.failed(DOOR, "bad_request")
            self.table.notes.warning("cut", "http: request body not received whole: %s", one_line(exc))
            return _error(400, "request body not received whole")
        try:
            messages, batch = _json_messages(body, self.max_batch) if kind == "application/json" else ([body], False)
        except BadRequest as exc:
            self.observer.failed(DOOR, "bad_request")
            return _error(400, str(exc))
        with self.table.waiting(admitted.conn if admitted is not None else None):
            results = await asyncio.gather(*(self._one(m) for m in messages), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            exc = failures[0]
            status = 503 if isinstance(exc, SpamguardError) else 500
            return _error(status, one_line(exc), {"Retry-After": "1"} if status == 503 else None)
        return web.json_response({"results": results} if batch else results[0])

    async def _body(self, request: web.Request, admitted: _Admitted | None) -> bytes:
        """The body, read as it arrives and counted against the table's buffer cap as it grows; past `max_size`
        413 (a chunked body has no Content-Length to refuse it by)."""
        body = bytearray()
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > self.max_size:
                raise web.HTTPRequestEntityTooLarge(max_size=self.max_size, actual_size=len(body))
            if admitted is not None and admitted.conn is not None and not self.table.hold(admitted.conn, len(body)):
                raise _Closed
        return bytes(body)

    async def _one(self, message: bytes) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            verdict: VerdictLike = await self.pool.classify(message)
        except Exception as exc:
            reason = failure_reason(exc)
            self.observer.failed(DOOR, reason)
            ms = (time.perf_counter() - start) * 1000
            log.info(
                "door=http verdict=error reason=%s ms=%.1f size=%d error=%r", reason, ms, len(message), one_line(exc)
            )
            raise
        seconds = time.perf_counter() - start
        self.observer.scored(DOOR, verdict.label, seconds)
        kind = verdict.kind
        log.info(
            "door=http verdict=%s score=%.4f kind=%s stage=%s ms=%.1f size=%d",
            verdict.label, verdict.score, kind, verdict.stage, seconds * 1000, len(message),
        )  # fmt: skip
        return {
            "label": verdict.label,
            "score": verdict.score,
            "threshold": verdict.threshold,
            "model": verdict.model,
            "kind": kind,
            "stage": verdict.stage,
            "reason": verdict.reason,
        }

    async def start(self, address: InetAddress) -> asyncio.base_events.Server:
        """Listen, with the connection table started. aiohttp's handler gets the limits (its keep-alive timer is
        the head's deadline); the listening socket is ours, so that every connection is admitted by the table."""
        self.table.start()
        runner = web.AppRunner(
            self.app(),
            handle_signals=False,
            shutdown_timeout=GRACE,
            access_log=None,
            logger=_OneLineLog(self.table.notes),
            keepalive_timeout=self.read_timeout,
            lingering_time=LINGER,  # to read what is left of a refused body, so the reply is not lost in a reset
            max_headers=MAX_HEADERS,
        )
        await runner.setup()
        factory = runner.server
        assert factory is not None
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: _Admitted(factory(), self), address.host, address.port, reuse_address=True, backlog=256
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._server = runner, server
        return server

    async def stop(self) -> None:
        """Stop listening; open requests get `GRACE` seconds to finish."""
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()


def _json_messages(body: bytes, max_batch: int) -> tuple[list[bytes], bool]:
    """`{"text": str}` -> one message; `{"messages": [str, ...]}` -> a batch."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("body is not JSON") from None
    if isinstance(document, dict) and isinstance(document.get("text"), str) and "messages" not in document:
        return [document["text"].encode("utf-8", "surrogatepass")], False
    if isinstance(document, dict) and isinstance(document.get("messages"), list) and "text" not in document:
        texts = document["messages"]
        if not texts or len(texts) > max_batch or not all(isinstance(t, str) for t in texts):
            raise BadRequest(f'"messages" must be a list of 1 to {max_batch} strings')
        return [t.encode("utf-8", "surrogatepass") for t in texts], True
    raise BadRequest('send {"text": "..."} or {"messages": ["...", ...]}')


def _error(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": text}, status=status, headers=headers)
