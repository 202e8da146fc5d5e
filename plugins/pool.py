"""The scoring pool every server front door shares (milter, spamd, HTTP): `await pool.classify(message)` gives a
`Verdict` or raises a `PoolError`, on which the front door applies its failure policy (accept unscored,
tempfail, an error status).

A message passes two stages:
1. prepare (`plugins.extraction`): its kind and the token ids the model reads, in one of `extract_workers`
   processes, each message within `extract_timeout`. A message that makes the mail or HTML parser slow holds
   its own slot until the deadline kills that process; the other slots go on serving everybody else.
2. score: `workers` threads in this process, each taking whatever prepared messages are waiting (up to
   `max_batch`) as one batch (`Classifier.classify_tokens`: with a cascade, the student scores the batch and
   only the messages it is unsure of go on to the full model); onnxruntime releases the GIL, so the event loop
   stays responsive.
Between the two, the verdict cache (`plugins.verdict_cache`): a message whose kind and tokens were scored
before by this model at this threshold is answered from it at once, without queueing for the model.

Every message is bounded: at most `max_pending` are admitted at a time (queued or in progress; past that
`Overloaded` at once instead of a queue that grows), each gets at most `timeout` seconds from admission to
verdict (`PoolTimeout`), its text extraction at most `extract_timeout` (`ExtractionTimeout`); anything else
that goes wrong is `ScoringFailed`. `stats()` counts all of it for logs and metrics, and the pool logs its
`stats().line()` every `log_interval` seconds while messages come."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spamguard.errors import SpamguardError, one_line
from spamguard.message_text import MAX_PARSE_BYTES
from spamguard.plugins.extraction import ExtractionError, ExtractionProcess, Prepared
from spamguard.plugins.verdict_cache import DEFAULT_BYTES, DEFAULT_ENTRIES, CacheStats, VerdictCache

if TYPE_CHECKING:
    from spamguard.classifier import Classifier, Verdict

log = logging.getLogger("spamguard.pool")

# Seconds from admission to answer. Prometheus' default buckets, with 30 s for a long --timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PoolError(SpamguardError):
    """No verdict for this message; `reason` names the kind of failure for counters and metric labels."""

    reason = "failure"


class Overloaded(PoolError):
    """`max_pending` messages are already admitted: this one is refused at once instead of queueing."""

    reason = "overload"


class PoolTimeout(PoolError):
    """No verdict within `timeout` seconds of admission (queueing included)."""

    reason = "timeout"


class ExtractionTimeout(PoolTimeout):
    """The message's text extraction outlasted `extract_timeout`; its process was killed and replaced."""

    reason = "extraction_timeout"


class ScoringFailed(PoolError):
    """Text extraction or the model raised, or an extraction process died, on this message."""

    reason = "failure"


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    threshold: float | None = None  # None: the bundle's
    workers: int = 1  # scoring threads (give each about cores/workers onnxruntime threads)
    max_batch: int = 16  # prepared messages per onnxruntime run
    max_pending: int = 64  # messages admitted at a time
    timeout: float = 10.0  # seconds from admission to verdict
    extract_workers: int = 2  # text extraction processes
    extract_timeout: float = 2.0  # seconds for one message's text extraction and tokenization
    extract_memory: int | None = 512 * 1024**2  # address-space limit of each extraction process (bytes)
    cache_entries: int = DEFAULT_ENTRIES  # verdicts the cache keeps (0: no cache)
    cache_bytes: int = DEFAULT_BYTES  # memory the cache's entries may take
    log_interval: float = 300.0  # seconds between two stats lines in the log (0: none but at the end)


@dataclass(frozen=True)
class PoolStats:
    """A snapshot for logs and metrics (counters since start; the HTTP front door exports them to Prometheus)."""

    pending: int  # admitted and not let go yet: queued, in progress, or given up on but still in a stage (a gauge)
    max_pending: int
    waiting_extraction: int  # admitted, waiting for an extraction process
    waiting_scoring: int  # prepared, waiting for a scoring thread
    verdicts: dict[tuple[str, str], int]  # (kind, label) -> messages answered with a verdict
    stages: dict[str, int]  # Verdict.stage -> verdicts decided by it ("student", "full"), cache hits included
    errors: dict[str, int]  # PoolError.reason -> messages answered with that error
    extraction_restarts: int  # extraction processes killed (timeout) or found dead, and replaced
    latency_buckets: tuple[tuple[float, int], ...]  # (upper bound in s, answers at or under it), cumulative, inf last
    latency_sum: float  # seconds, over every admitted message answered
    latency_count: int
    cache: CacheStats | None  # None: no cache

    def line(self) -> str:
        """One log line: answers by kind and label and by stage, errors by reason, restarts, mean latency, the
        cache's hit rate."""
        parts = [f"{kind}/{label}={count}" for (kind, label), count in sorted(self.verdicts.items())]
        parts += [f"stage_{stage}={count}" for stage, count in sorted(self.stages.items())]
        parts += [f"error_{reason}={count}" for reason, count in sorted(self.errors.items())]
        parts.append(f"extraction_restarts={self.extraction_restarts}")
        if self.latency_count:
            parts.append(f"mean_ms={1000 * self.latency_sum / self.latency_count:.1f}")
        if self.cache is not None:
            c = self.cache
            parts.append(
                f"cache_hits={c.hits} cache_misses={c.misses} cache_hit_rate={c.hit_rate:.3f} "
                f"cache_entries={c.entries} cache_bytes={c.bytes} cache_evictions={c.evictions}"
            )
        return "scoring pool: " + " ".join(parts)


@dataclass
class _Job:
    message: bytes
    future: asyncio.Future[Verdict]
    loop: asyncio.AbstractEventLoop
    prepared: Prepared | None = None
    key: bytes | None = None  # its verdict cache key, once prepared


def _settle(future: asyncio.Future[Verdict], result: Verdict | PoolError) -> None:
    if future.done():  # the waiter gave up (timeout, cancelled)
        return
    if isinstance(result, PoolError):
        future.set_exception(result)
    else:
        future.set_result(result)


class ScoringPool:
    """One loaded model behind a bounded, batched, isolated queue. Create it once per process (it starts its
    threads and extraction processes), share it between front doors, `close()` it at the end. `cache`: a
    verdict cache to use (one may be shared by pools of different models: its keys tell them apart); None makes
    one from the settings' `cache_entries` and `cache_bytes`, or none when `cache_entries` is 0."""

    def __init__(
        self, classifier: Classifier, settings: PoolSettings | None = None, *, cache: VerdictCache | None = None
    ) -> None:
        self.classifier = classifier
        self.settings = settings = settings or PoolSettings()
        if cache is None and settings.cache_entries > 0:
            cache = VerdictCache(settings.cache_entries, settings.cache_bytes)
        self.cache = cache
        # whose verdicts this pool gives: the model, and the threshold the settings apply to every kind
        self._identity = f"{classifier.identity}:threshold={settings.threshold!r}"
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        self._verdicts: Counter[tuple[str, str]] = Counter()
        self._stages: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._logged_at = time.monotonic()
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._extract_queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._score_queue: queue.SimpleQueue[tuple[_Job, Prepared] | None] = queue.SimpleQueue()
        bundle = classifier.bundle
        self._slots = [
            ExtractionProcess(classifier.encoding, bundle.max_tokens, memory_limit=settings.extract_memory)
            for _ in range(settings.extract_workers)
        ]
        try:
            for slot in self._slots:
                slot.start()
        except ExtractionError:
            for slot in self._slots:
                slot.close()
            raise
        self._threads = [
            threading.Thread(target=self._extract, args=(slot,), name=f"spamguard-extract-{i}", daemon=True)
            for i, slot in enumerate(self._slots)
        ] + [
            threading.Thread(target=self._score, name=f"spamguard-score-{i}", daemon=True)
            for i in range(settings.workers)
        ]
        for thread in self._threads:
            thread.start()

    # --- the front doors' side (event loop) ----------------------------------------------------------------

    async def classify(self, message: bytes) -> Verdict:
        """The verdict on one message (raw mail bytes or SMS text as bytes), or a PoolError saying why not."""
        with self._lock:
            if self._closed:
                raise ScoringFailed("the scoring pool is stopped")
            if self._pending >= self.settings.max_pending:
                self._errors[Overloaded.reason] += 1
                raise Overloaded(f"{self._pending} messages already waiting for the model")
            self._pending += 1
        start = time.monotonic()
        loop = asyncio.get_running_loop()
        # message_text reads no further than MAX_PARSE_BYTES: the extraction process gets no more than that
        job = _Job(bytes(message[:MAX_PARSE_BYTES]), loop.create_future(), loop)
        self._extract_queue.put(job)
        try:
            verdict = await asyncio.wait_for(job.future, self.settings.timeout)
        except TimeoutError:
            self._answered(start, error=PoolTimeout.reason)
            raise PoolTimeout(f"scoring timed out after {self.settings.timeout:g} s") from None
        except PoolError as exc:
            self._answered(start, error=exc.reason)
            raise
        self._answered(start, verdict=verdict)
        return verdict

    def _answered(self, start: float, *, verdict: Verdict | None = None, error: str = "") -> None:
        now = time.monotonic()
        seconds = now - start
        with self._lock:
            if verdict is not None:
                self._verdicts[verdict.kind, verdict.label] += 1
                self._stages[verdict.stage] += 1
            else:
                self._errors[error] += 1
            self._latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._latency_sum += seconds
            due = self.settings.log_interval > 0 and now - self._logged_at >= self.settings.log_interval
            if due:
                self._logged_at = now
        if due:
            log.info("%s", self.stats().line())

    def stats(self) -> PoolStats:
        with self._lock:
            cumulative, total = [], 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self._latency_counts, strict=True):
                total += count
                cumulative.append((bound, total))
            return PoolStats(
                pending=self._pending,
                max_pending=self.settings.max_pending,
                waiting_extraction=self._extract_queue.qsize(),
                waiting_scoring=self._score_queue.qsize(),
                verdicts=dict(self._verdicts),
                stages=dict(self._stages),
                errors=dict(self._errors),
                extraction_restarts=sum(slot.restarts for slot in self._slots),
                latency_buckets=tuple(cumulative),
                latency_sum=self._latency_sum,
                latency_count=total,
                cache=self.cache.stats() if self.cache is not None else None,
            )

    @property
    def pending(self) -> int:
        """Messages the pool holds, all front doors together (the queue depth gauge; see PoolStats.pending)."""
        return self._pending

    @property
    def extraction_pids(self) -> list[int]:
        """Process ids of the extraction processes now running (for `ps` and for the tests)."""
        return [pid for pid in (slot.pid for slot in self._slots) if pid is not None]

    # --- worker threads -----------------------------------------------------------------------------------------

    def _resolve(self, job: _Job, result: Verdict | PoolError) -> None:
        """Answer a job and let go of it. A job counts against max_pending until here, not until its waiter
        gives up: the messages the pool holds (their bytes included) stay bounded even while a stage is stuck."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            job.loop.call_soon_threadsafe(_settle, job.future, result)
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    def _abandoned(self, job: _Job) -> bool:
        """Its waiter gave up (timeout, a closed connection): not worth any more work; let go of it."""
        if job.future.done():
            self._release()
            return True
        return False

    def _extract(self, slot: ExtractionProcess) -> None:
        """One extraction process's thread: prepare a message, hand it to the scorers; on a timeout or a death
        answer the message, then start the replacement before taking the next one."""
        while (job := self._extract_queue.get()) is not None:
            if self._abandoned(job):
                continue
            try:
                prepared = slot.prepare(job.message, self.settings.extract_timeout)
            except ExtractionError as exc:
                self._resolve(job, ExtractionTimeout(str(exc)) if exc.timed_out else ScoringFailed(str(exc)))
                try:
                    slot.start()
                except ExtractionError as start_failed:
                    log.warning("%s", start_failed)  # the next message tries again, and fails if it must
                continue
            job.prepared = prepared
            if self.cache is not None:
                job.key = self.cache.key(self._identity, prepared.kind, prepared.tokens)
                cached = self.cache.get(job.key)
                if cached is not None:
                    self._resolve(job, cached)  # the same text from the same model: no need to run it again
                    continue
            self._score_queue.put((job, prepared))

    def _take_batch(self) -> list[tuple[_Job, Prepared]] | None:
        first = self._score_queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.settings.max_batch:
            try:
                item = self._score_queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._score_queue.put(None)  # finish this batch, then stop
                break
            batch.append(item)
        return [item for item in batch if not self._abandoned(item[0])]

    def _score(self) -> None:
        while (batch := self._take_batch()) is not None:
            if not batch:
                continue
            prepared = [item for _, item in batch]
            try:
                results: list[Verdict | PoolError] = self._verdicts_for(prepared)
            except Exception:
                # one bad message must not fail the messages batched with it: score them one by one
                results = [self._one(item) for item in prepared]
            for (job, _), result in zip(batch, results, strict=True):
                if self.cache is not None and job.key is not None and not isinstance(result, PoolError):
                    self.cache.put(job.key, result)
                self._resolve(job, result)

    def _one(self, prepared: Prepared) -> Verdict | PoolError:
        try:
            return self._verdicts_for([prepared])[0]
        except Exception as exc:  # MemoryError included: this message's failure, not the server's
            return ScoringFailed(one_line(exc))

    def _verdicts_for(self, prepared: list[Prepared]) -> list[Verdict | PoolError]:
        return list(
            self.classifier.classify_tokens(
                [item.tokens for item in prepared], [item.kind for item in prepared], threshold=self.settings.threshold
            )
        )

    # --- shutdown -------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the threads and the extraction processes; messages still queued get ScoringFailed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._slots:
            self._extract_queue.put(None)
        for _ in range(self.settings.workers):
            self._score_queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        for slot in self._slots:
            slot.close()
        stopped = ScoringFailed("the scoring pool is stopped")
        for stage in (self._extract_queue, self._score_queue):
            while True:
                try:
                    item = stage.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._resolve(item[0] if isinstance(item, tuple) else item, stopped)

    def __enter__(self) -> ScoringPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
