"""The HTTP front door: aiohttp on the same event loop as the other doors, scoring through the same pool.

    POST /v1/check   message/rfc822 or text/plain: the raw message; application/json: {"text": "..."} or
                     {"messages": ["...", ...]} -> {"label", "score", "threshold", "model", "kind", "stage"}
                     (a batch: {"results": [...]})
    GET  /healthz    {"status": "ok", "model": NAME} (no token needed: load balancers ask it)
    GET  /metrics    Prometheus text format

Bounded like the other doors: the body by `max_size` (413 past it, decided from Content-Length before anything
is read when the client sends one) and by `read_timeout` (408), a batch by `max_batch` messages, an idle
connection by aiohttp's keep-alive timeout. A pool failure is 503 with Retry-After, never a verdict."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from spamguard.errors import SpamguardError, one_line
from spamguard.plugins.frontdoor import InetAddress, NoObserver, Observer, Pool
from spamguard.plugins.headers import VerdictLike
from spamguard.plugins.pipe import DEFAULT_MAX_SIZE

log = logging.getLogger("spamguard.http")

DOOR = "http"
RAW_TYPES = ("message/rfc822", "text/plain")
DEFAULT_MAX_BATCH = 100


class BadRequest(Exception):
    pass


class HttpApi:
    def __init__(
        self,
        pool: Pool,
        *,
        model: str,
        max_size: int = DEFAULT_MAX_SIZE,
        max_batch: int = DEFAULT_MAX_BATCH,
        read_timeout: float = 30.0,
        token: str | None = None,
        observer: Observer | None = None,
        metrics: Any = None,  # a `Metrics` for /metrics (None: 404)
    ) -> None:
        self.pool = pool
        self.model = model
        self.max_size = max_size
        self.max_batch = max_batch
        self.read_timeout = read_timeout
        self.token = token
        self.observer = observer or NoObserver()
        self.metrics = metrics

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_size, middlewares=[self._guard])
        app.router.add_post("/v1/check", self.check)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The bearer token (every path but /healthz), and errors as one JSON line instead of HTML pages."""
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
        try:
            body = await asyncio.wait_for(request.read(), self.read_timeout)
        except TimeoutError:
            self.observer.failed(DOOR, "timeout")
            log.warning("request body not received within %g s", self.read_timeout)
            return _error(408, f"request body not received within {self.read_timeout:g} s")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.observer.failed(DOOR, "bad_request")
            log.warning("request body not received whole: %s", one_line(exc))
            return _error(400, "request body not received whole")
        try:
            messages, batch = _json_messages(body, self.max_batch) if kind == "application/json" else ([body], False)
        except BadRequest as exc:
            self.observer.failed(DOOR, "bad_request")
            return _error(400, str(exc))
        results = await asyncio.gather(*(self._one(m) for m in messages), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            exc = failures[0]
            status = 503 if isinstance(exc, SpamguardError) else 500
            return _error(status, one_line(exc), {"Retry-After": "1"} if status == 503 else None)
        return web.json_response({"results": results} if batch else results[0])

    async def _one(self, message: bytes) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            verdict: VerdictLike = await self.pool.classify(message)
        except Exception as exc:
            self.observer.failed(DOOR, "scoring")
            ms = (time.perf_counter() - start) * 1000
            log.info("door=http verdict=error ms=%.1f size=%d error=%r", ms, len(message), one_line(exc))
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
        }

    async def start(self, address: InetAddress) -> web.AppRunner:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, address.host, address.port, reuse_address=True, backlog=256)
        await site.start()
        return runner


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
