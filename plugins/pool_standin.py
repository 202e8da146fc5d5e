"""Stand-in for `spamguard.plugins.pool` (the shared scoring pool, written on the `milter` branch), with the
entry point every front door uses: `await pool.classify(message) -> Verdict`, raising a `SpamguardError`
subclass on overload, timeout or failure. It wraps today's `BatchScorer`; at merge the front doors' one import
of `ScoringPool` moves to `spamguard.plugins.pool` and this file goes."""

from __future__ import annotations

import asyncio

from spamguard.errors import SpamguardError, one_line
from spamguard.plugins.headers import VerdictLike
from spamguard.plugins.milter_server import BatchScorer


class ScoringTimeout(SpamguardError):
    """The verdict did not come within the pool's timeout (queueing included)."""


class ScoringFailed(SpamguardError):
    """The model raised while scoring this message."""


class ScoringPool:
    def __init__(self, scorer: BatchScorer, *, timeout: float) -> None:
        self.scorer = scorer
        self.timeout = timeout
        self.pending = 0  # messages waiting for a verdict, all front doors together (the queue depth)

    async def classify(self, message: bytes) -> VerdictLike:
        self.pending += 1
        try:
            return await asyncio.wait_for(self.scorer.classify(message), self.timeout)
        except TimeoutError:
            raise ScoringTimeout(f"scoring timed out after {self.timeout:g} s") from None
        except SpamguardError:
            raise
        except Exception as exc:
            raise ScoringFailed(f"scoring failed: {one_line(exc)}") from exc
        finally:
            self.pending -= 1

    def close(self) -> None:
        self.scorer.close()
