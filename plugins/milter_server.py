"""The milter daemon: an asyncio server for the protocol, a bounded scoring pool beside it.

The event loop only moves bytes and protocol state, so hundreds of idle or slow MTA connections cost nothing.
Scoring runs in a few worker threads that take whatever messages are waiting as one batch (onnxruntime scores a
batch of 8 far faster than 8 single messages on a CPU), with a cap on how many may wait: past the cap, or past
the scoring timeout, a message is accepted unscored (or tempfailed) instead of piling up behind a slow model.
Postfix's own milter timeouts are minutes long; ours answers in seconds either way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import socket
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from spamguard.errors import SpamguardError, one_line
from spamguard.plugins import milter_protocol as p
from spamguard.plugins.headers import VerdictLike
from spamguard.plugins.milter_address import ListenAddress
from spamguard.plugins.milter_session import CLOSE, MilterPolicy, MilterSession, Outcome, ScoreRequest

log = logging.getLogger("spamguard.milter")

DEFAULT_LISTEN = "inet:127.0.0.1:8894"
DEFAULT_TIMEOUT = 10.0  # seconds from end of message to verdict, queueing included
IDLE_TIMEOUT = 600.0  # an MTA connection silent this long is dropped (Postfix's own limits are shorter)
READ_SIZE = 1 << 17


class Scorer(Protocol):
    """What the pool needs from `spamguard.Classifier`."""

    def classify_batch(self, messages: Sequence[bytes], *, threshold: float | None = None) -> list[Any]: ...


class Overloaded(SpamguardError):
    """More messages are waiting to be scored than the pool allows."""


class BatchScorer:
    """`workers` threads, each scoring up to `max_batch` waiting messages at a time; at most `max_pending`
    messages queued or in progress. Thread-safe towards the model (one shared onnxruntime session)."""

    def __init__(
        self,
        classifier: Scorer,
        *,
        threshold: float | None = None,
        workers: int = 1,
        max_batch: int = 16,
        max_pending: int = 64,
    ) -> None:
        self._classifier = classifier
        self._threshold = threshold
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending = 0  # touched only on the event loop's thread
        self._queue: queue.SimpleQueue[tuple[bytes, asyncio.Future[Any], asyncio.AbstractEventLoop] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._work, name=f"spamguard-score-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    async def classify(self, message: bytes) -> VerdictLike:
        if self._pending >= self._max_pending:
            raise Overloaded(f"{self._pending} messages already waiting for the model")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending += 1
        future.add_done_callback(self._done)
        self._queue.put((message, future, loop))
        return await future

    def _done(self, _: asyncio.Future[Any]) -> None:
        self._pending -= 1

    def _take_batch(self) -> list[tuple[bytes, asyncio.Future[Any], asyncio.AbstractEventLoop]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # let this thread finish its batch, then stop
                break
            batch.append(item)
        # a message whose waiter gave up (timeout) is not worth scoring any more
        return [item for item in batch if not item[1].done()]

    def _work(self) -> None:
        while (batch := self._take_batch()) is not None:
            if not batch:
                continue
            try:
                results: list[Any] = self._classifier.classify_batch(
                    [m for m, _, _ in batch], threshold=self._threshold
                )
            except BaseException:
                # one bad message must not fail the messages batched with it: score them one by one
                results = [self._one(message) for message, _, _ in batch]
            for (_, future, loop), result in zip(batch, results, strict=True):
                loop.call_soon_threadsafe(_resolve, future, result)

    def _one(self, message: bytes) -> Any:
        try:
            return self._classifier.classify_batch([message], threshold=self._threshold)[0]
        except BaseException as exc:  # MemoryError included: it is this message's failure, not the server's
            return exc

    def close(self) -> None:
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class MilterServer:
    def __init__(self, scorer: BatchScorer, policy: MilterPolicy, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.scorer = scorer
        self.policy = policy
        self.timeout = timeout
        self._connections: set[asyncio.Task[Any]] = set()

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        session = MilterSession(self.policy)
        packets = p.PacketReader()
        try:
            while True:
                data = await asyncio.wait_for(reader.read(READ_SIZE), IDLE_TIMEOUT)
                if not data:
                    if packets.pending:
                        log.warning("connection closed inside a packet (%d bytes held)", packets.pending)
                    return
                for packet in packets.feed(data):
                    result = session.handle(p.decode_command(packet))
                    if result is CLOSE:
                        return
                    if isinstance(result, ScoreRequest):
                        result = (await self.decide(session, result)).replies
                    writer.write(b"".join(result))  # type: ignore[arg-type]
                await writer.drain()
        except p.MilterProtocolError as exc:
            log.warning("closing connection: protocol error: %s", exc)
        except TimeoutError:
            log.warning("closing connection: idle for %g s", IDLE_TIMEOUT)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the MTA went away (its own timeout, a restart): nothing to answer
        except Exception:
            log.exception("closing connection: internal error")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def decide(self, session: MilterSession, request: ScoreRequest) -> Outcome:
        start = time.perf_counter()
        error = ""
        try:
            verdict = await asyncio.wait_for(self.scorer.classify(request.message), self.timeout)
        except TimeoutError:
            error = f"scoring timed out after {self.timeout:g} s"
        except Exception as exc:
            error = one_line(exc)
        ms = (time.perf_counter() - start) * 1000
        extra = " truncated=yes" if request.truncated else ""
        if error:
            outcome = session.failure()
            log.info(
                "queue_id=%s verdict=error action=%s ms=%.1f size=%d%s error=%r",
                request.queue_id,
                outcome.action,
                ms,
                request.size,
                extra,
                error,
            )
        else:
            outcome = session.verdict(verdict)
            log.info(
                "queue_id=%s verdict=%s score=%.4f action=%s ms=%.1f size=%d%s",
                request.queue_id,
                verdict.label,
                verdict.score,
                outcome.action,
                ms,
                request.size,
                extra,
            )
        return outcome

    async def start(self, address: ListenAddress, *, socket_mode: int = 0o660) -> asyncio.base_events.Server:
        if address.kind == "unix":
            path = Path(address.path)
            if path.exists() or path.is_symlink():
                if not stat.S_ISSOCK(path.lstat().st_mode):
                    raise SpamguardError(f"cannot listen on {address}: {path} exists and is not a socket")
                if _answers(path):
                    raise SpamguardError(f"cannot listen on {address}: another process is listening there")
                path.unlink()  # a stale socket from a previous run
            server = await asyncio.start_unix_server(self.handle_connection, path=str(path))
            os.chmod(path, socket_mode)
            return server
        return await asyncio.start_server(self.handle_connection, host=address.host, port=address.port)

    async def serve(self, address: ListenAddress, *, socket_mode: int = 0o660) -> None:
        """Serve until SIGTERM or SIGINT; connections in progress get a short grace period, after which Postfix
        applies its milter_default_action to whatever they carried."""
        try:
            server = await self.start(address, socket_mode=socket_mode)
        except OSError as exc:
            raise SpamguardError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
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
        server.close()
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=2)
        for task in list(self._connections):
            task.cancel()
        if address.kind == "unix":
            with contextlib.suppress(OSError):
                Path(address.path).unlink()
