"""The Prometheus metrics of `spamguard serve`, one registry per server (so tests can run several in one
process), filled by every front door through the `Observer` calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from spamguard.plugins.pool import PoolStats

# Scoring latency, queueing included: from a few ms (an SMS on a tiny model) to the default 10 s timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PoolCollector:
    """The pool's own counts, read from `pool.stats()` at each scrape: verdicts by deciding stage (the share the
    full model decides, with a cascade) and the verdict cache (hits, misses, hit ratio, entries, bytes)."""

    def __init__(self, stats: Callable[[], PoolStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        stages = CounterMetricFamily("spamguard_stage_verdicts", "Verdicts by the model that decided", labels=["stage"])
        for stage, count in sorted(stats.stages.items()):
            stages.add_metric([stage], count)
        yield stages
        cache = stats.cache
        if cache is None:
            return
        yield CounterMetricFamily("spamguard_cache_hits", "Messages answered from the verdict cache", value=cache.hits)
        yield CounterMetricFamily(
            "spamguard_cache_misses", "Messages the verdict cache did not hold", value=cache.misses
        )
        yield GaugeMetricFamily("spamguard_cache_hit_ratio", "Cache hits / lookups since start", value=cache.hit_rate)
        yield GaugeMetricFamily("spamguard_cache_entries", "Verdicts in the cache", value=cache.entries)
        yield GaugeMetricFamily("spamguard_cache_bytes", "Memory the cached verdicts take", value=cache.bytes)
        yield CounterMetricFamily(
            "spamguard_cache_evictions", "Verdicts dropped to stay bounded", value=cache.evictions
        )


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], pool_stats: Callable[[], PoolStats] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "spamguard_messages", "Messages scored, by front door and verdict", ["door", "verdict"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "spamguard_scoring_seconds", "Time from a complete message to its verdict (queueing included)",
            ["door"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "spamguard_errors", "Requests not scored, by front door and reason", ["door", "reason"],
            registry=self.registry,
        )  # fmt: skip
        self.queue = Gauge("spamguard_queue_depth", "Messages waiting for a verdict", registry=self.registry)
        self.queue.set_function(queue_depth)
        if pool_stats is not None:
            self.registry.register(PoolCollector(pool_stats))

    def scored(self, door: str, label: str, seconds: float) -> None:
        self.messages.labels(door, label).inc()
        self.latency.labels(door).observe(seconds)

    def failed(self, door: str, reason: str) -> None:
        self.errors.labels(door, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
