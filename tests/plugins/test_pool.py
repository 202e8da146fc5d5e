"""The shared scoring pool with the real tiny model and real extraction processes: verdicts equal to the
in-process classifier's, batching, the bounds (overload, timeout), and isolation: an extraction process that
hangs or dies costs its own message at most, never the others', and is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spamguard import Classifier
from spamguard.plugins.extraction import Prepared, prepare
from spamguard.plugins.pool import (
    LATENCY_BUCKETS,
    ExtractionTimeout,
    Overloaded,
    PoolSettings,
    PoolTimeout,
    ScoringFailed,
    ScoringPool,
)

from conftest import MAIL_DIR

MAILS = [path.read_bytes() for path in sorted(MAIL_DIR.glob("*/*"))[:6]]
SMS = [b"Free entry in 2 a wkly comp to win FA Cup final tkts", b"Ok lar... Joking wif u oni..."]


@pytest.fixture(scope="module")
def classifier(tiny_bundle: Path) -> Classifier:
    return Classifier.load(tiny_bundle)


@pytest.fixture
def pool(classifier: Classifier) -> Iterator[ScoringPool]:
    with ScoringPool(classifier, PoolSettings(extract_workers=1, extract_timeout=2)) as running:
        yield running


async def _all(pool: ScoringPool, messages: list[bytes]) -> list[object]:
    return await asyncio.gather(*(pool.classify(m) for m in messages), return_exceptions=True)


def _wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _dead(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def _wait_dead(pid: int) -> None:
    _wait_until(lambda: _dead(pid))


def test_prepare_is_what_the_classifier_reads(classifier: Classifier) -> None:
    for message in [*MAILS, *SMS]:
        prepared = prepare(message, classifier.encoding, classifier.bundle.max_tokens)
        assert prepared.tokens == classifier.tokens(message)
    assert prepare(MAILS[0], classifier.encoding, 128).kind == "mail"
    assert prepare(SMS[0], classifier.encoding, 128) == Prepared("sms", classifier.tokens(SMS[0]))


def test_verdicts_equal_the_classifiers_and_are_counted(classifier: Classifier, pool: ScoringPool) -> None:
    messages = [*MAILS, *SMS]
    verdicts = asyncio.run(_all(pool, messages))
    alone = [classifier.classify(message) for message in messages]
    assert [v.label for v in verdicts] == [v.label for v in alone]  # type: ignore[attr-defined]
    assert [v.score for v in verdicts] == pytest.approx([v.score for v in alone], abs=1e-5)  # type: ignore[attr-defined]
    stats = pool.stats()
    by_kind = {kind: sum(n for (k, _), n in stats.verdicts.items() if k == kind) for kind in ("mail", "sms")}
    assert by_kind == {"mail": len(MAILS), "sms": len(SMS)} and stats.errors == {}
    assert stats.latency_count == len(messages) and stats.latency_sum > 0 and stats.pending == 0
    assert [bound for bound, _ in stats.latency_buckets] == [*LATENCY_BUCKETS, float("inf")]
    counts = [count for _, count in stats.latency_buckets]
    assert counts == sorted(counts) and counts[-1] == len(messages)  # cumulative, Prometheus style


def test_past_max_pending_a_message_is_refused_at_once(classifier: Classifier) -> None:
    with ScoringPool(classifier, PoolSettings(max_pending=2, extract_workers=1)) as small:
        results = asyncio.run(_all(small, MAILS))
        assert [type(r).__name__ for r in results] == ["Verdict", "Verdict"] + ["Overloaded"] * 4
        assert str(results[2]) == "2 messages already waiting for the model" and isinstance(results[2], Overloaded)
        assert small.stats().errors == {"overload": 4}


def test_no_verdict_in_time_is_a_timeout(classifier: Classifier) -> None:
    with ScoringPool(classifier, PoolSettings(timeout=1e-6, extract_workers=1)) as hasty:
        (result,) = asyncio.run(_all(hasty, MAILS[:1]))
        assert isinstance(result, PoolTimeout) and str(result) == "scoring timed out after 1e-06 s"
        assert hasty.stats().errors == {"timeout": 1}
        _wait_until(lambda: hasty.stats().pending == 0)  # let go of once a stage finds its waiter gone


def test_a_hung_extraction_holds_up_only_its_own_message(classifier: Classifier) -> None:
    """One of two extraction processes stops (as a parser stuck in C would): the message it holds gets the
    failure policy once its deadline passes, every other message is scored by the other process meanwhile,
    and the stuck process is killed and replaced."""
    settings = PoolSettings(extract_workers=2, extract_timeout=3)
    with ScoringPool(classifier, settings) as pool:
        stuck = pool.extraction_pids[0]
        os.kill(stuck, signal.SIGSTOP)
        finished: list[tuple[float, object]] = []

        async def timed(message: bytes) -> None:
            start = time.monotonic()
            try:
                result: object = await pool.classify(message)
            except Exception as exc:
                result = exc
            finished.append((time.monotonic() - start, result))

        async def run() -> None:
            await asyncio.gather(*(timed(m) for m in [*MAILS, *SMS, *MAILS]))

        asyncio.run(run())
        timed_out = [(s, r) for s, r in finished if isinstance(r, ExtractionTimeout)]
        scored = [(s, r) for s, r in finished if type(r).__name__ == "Verdict"]
        assert len(timed_out) == 1 and len(scored) == len(finished) - 1
        assert str(timed_out[0][1]) == "text extraction timed out after 3 s"
        assert timed_out[0][0] >= 3 and max(seconds for seconds, _ in scored) < timed_out[0][0]
        _wait_dead(stuck)
        _wait_until(lambda: len(pool.extraction_pids) == 2)  # the replacement starts once the message is answered
        assert stuck not in pool.extraction_pids
        assert pool.stats().extraction_restarts == 1 and pool.stats().errors == {"extraction_timeout": 1}
        assert all(type(r).__name__ == "Verdict" for r in asyncio.run(_all(pool, MAILS)))


def test_an_extraction_process_that_dies(pool: ScoringPool) -> None:
    """Killed while idle: replaced before the next message, which is scored. Killed with a message in hand:
    that message fails (one line naming the signal), the next one is scored by the replacement."""
    (idle,) = pool.extraction_pids
    os.kill(idle, signal.SIGKILL)
    _wait_dead(idle)
    assert type(asyncio.run(_all(pool, MAILS[:1]))[0]).__name__ == "Verdict"
    (busy,) = pool.extraction_pids
    assert busy != idle
    os.kill(busy, signal.SIGSTOP)

    async def killed_midway() -> object:
        task = asyncio.ensure_future(pool.classify(MAILS[1]))
        await asyncio.sleep(0.3)  # the message is now in the stopped process's pipe
        os.kill(busy, signal.SIGKILL)
        return (await asyncio.gather(task, return_exceptions=True))[0]

    result = asyncio.run(killed_midway())
    assert isinstance(result, ScoringFailed) and str(result) == "text extraction process died (SIGKILL)"
    assert type(asyncio.run(_all(pool, MAILS[2:3]))[0]).__name__ == "Verdict"
    assert pool.stats().extraction_restarts == 2 and pool.stats().errors == {"failure": 1}


def test_a_stopped_pool_refuses_and_leaves_no_process(classifier: Classifier) -> None:
    pool = ScoringPool(classifier, PoolSettings(extract_workers=2))
    pids = pool.extraction_pids
    pool.close()
    for pid in pids:
        _wait_dead(pid)
    with pytest.raises(ScoringFailed, match=r"^the scoring pool is stopped$"):
        asyncio.run(pool.classify(MAILS[0]))


def test_messages_given_up_on_still_count_until_a_stage_lets_go(classifier: Classifier) -> None:
    """With the only extraction process stuck, four messages time out for their waiters but stay in the pool
    (their bytes too) until a stage lets go of them: a fifth is refused, so what the pool holds stays bounded
    however long a stage is stuck. Once the stuck process is replaced the four are dropped unscored."""
    settings = PoolSettings(extract_workers=1, extract_timeout=3, timeout=0.5, max_pending=4)
    with ScoringPool(classifier, settings) as pool:
        os.kill(pool.extraction_pids[0], signal.SIGSTOP)
        results = asyncio.run(_all(pool, MAILS[:4]))
        assert [type(r).__name__ for r in results] == ["PoolTimeout"] * 4
        assert pool.stats().pending == 4
        assert isinstance(asyncio.run(_all(pool, MAILS[4:5]))[0], Overloaded)
        _wait_until(lambda: pool.stats().pending == 0)
        assert type(asyncio.run(_all(pool, MAILS[5:6]))[0]).__name__ == "Verdict"
        assert sum(pool.stats().verdicts.values()) == 1 and pool.stats().extraction_restarts == 1
