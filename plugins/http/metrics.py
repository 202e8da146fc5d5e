"""The Prometheus metrics of `spamguard serve`, one registry per server (so tests can run several in one
process), filled by every front door through the `Observer` calls."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Scoring latency, queueing included: from a few ms (an SMS on a tiny model) to the default 10 s timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, queue_depth: Callable[[], float]) -> None:
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

    def scored(self, door: str, label: str, seconds: float) -> None:
        self.messages.labels(door, label).inc()
        self.latency.labels(door).observe(seconds)

    def failed(self, door: str, reason: str) -> None:
        self.errors.labels(door, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
