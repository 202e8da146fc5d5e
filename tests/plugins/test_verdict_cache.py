"""The verdict cache: bounded in entries and in bytes (least recently used out first), keyed so that it never
answers for another model, precision, cascade setting or threshold; in the pool, a hit skips the model but not
the extraction, and the hit rate reaches the log line and /metrics."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from spamguard import Classifier
from spamguard.classifier import Verdict
from spamguard.plugins.http.metrics import Metrics
from spamguard.plugins.pool import PoolSettings, ScoringPool
from spamguard.plugins.verdict_cache import VerdictCache, entry_bytes

from bundles import add_student, make_bundle
from conftest import MAIL_DIR

MAILS = [path.read_bytes() for path in sorted(MAIL_DIR.glob("*/*"))[:4]]
SMS = [b"Free entry in 2 a wkly comp to win FA Cup final tkts", b"Ok lar... Joking wif u oni..."]


def _verdict(score: float) -> Verdict:
    return Verdict("ham", score, 0.5, "tiny", "sms")


def test_entries_are_bounded_least_recently_used_first() -> None:
    cache = VerdictCache(max_entries=3, max_bytes=1 << 20)
    keys = [VerdictCache.key("model", "sms", [i]) for i in range(5)]
    for i, key in enumerate(keys[:3]):
        cache.put(key, _verdict(i / 10))
    assert cache.get(keys[0]) == _verdict(0.0)  # now the most recently used
    cache.put(keys[3], _verdict(0.3))
    cache.put(keys[4], _verdict(0.4))
    assert [cache.get(k) is not None for k in keys] == [True, False, False, True, True]
    stats = cache.stats()
    assert (stats.entries, stats.evictions, stats.hits, stats.misses) == (3, 2, 4, 2)


def test_bytes_are_bounded() -> None:
    one = entry_bytes(VerdictCache.key("m", "sms", [0]), _verdict(0.1))
    cache = VerdictCache(max_entries=1000, max_bytes=10 * one)
    for i in range(100):
        cache.put(VerdictCache.key("m", "sms", [i]), _verdict(i / 100))
        assert cache.stats().bytes <= 10 * one
    stats = cache.stats()
    assert 5 <= stats.entries <= 20 and stats.evictions == 100 - stats.entries
    assert 300 < one < 1000  # the measured cost of an entry (docs/cascade.md), not a guess of 50 bytes


def test_keys_separate_model_kind_and_tokens() -> None:
    keys = {
        VerdictCache.key("a", "sms", [1, 2]),
        VerdictCache.key("b", "sms", [1, 2]),
        VerdictCache.key("a", "mail", [1, 2]),
        VerdictCache.key("a", "sms", [1, 2, 0]),
        VerdictCache.key("a", "sms", [2, 1]),
        VerdictCache.key("a:", "sms", [1, 2]),
    }
    assert len(keys) == 6 and VerdictCache.key("a", "sms", [1, 2]) in keys


class Counting:
    """A classifier seen through the pool: counts the messages that reach the model."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.scored = 0

    def classify_tokens(self, token_lists: Any, kinds: Any, **kwargs: Any) -> list[Verdict]:
        self.scored += len(token_lists)
        return self.classifier.classify_tokens(token_lists, kinds, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.classifier, name)


def _classify(pool: ScoringPool, messages: list[bytes]) -> list[Verdict]:
    async def run() -> list[Verdict]:
        return [await pool.classify(m) for m in messages]  # one at a time: the second copy finds the first's

    return asyncio.run(run())


def test_a_hit_skips_the_model_and_equals_the_first_verdict(tiny_bundle: Path) -> None:
    counting = Counting(Classifier.load(tiny_bundle))
    with ScoringPool(counting, PoolSettings(extract_workers=1)) as pool:  # type: ignore[arg-type]
        first = _classify(pool, [*MAILS, *SMS])
        again = _classify(pool, [*SMS, *MAILS, MAILS[0]])
        assert counting.scored == len(MAILS) + len(SMS)
        assert again == [*first[-2:], *first[:-2], first[0]]
        stats = pool.stats()
        assert (stats.cache.hits, stats.cache.misses) == (7, 6)  # type: ignore[union-attr]
        assert sum(stats.verdicts.values()) == 13 and stats.stages == {"full": 13}
        line = stats.line()
        assert "cache_hits=7 cache_misses=6 cache_hit_rate=0.538 cache_entries=6" in line


def test_no_cache_when_asked(tiny_bundle: Path) -> None:
    counting = Counting(Classifier.load(tiny_bundle))
    with ScoringPool(counting, PoolSettings(extract_workers=1, cache_entries=0)) as pool:  # type: ignore[arg-type]
        _classify(pool, [SMS[0], SMS[0]])
        assert counting.scored == 2 and pool.cache is None and pool.stats().cache is None


def test_a_shared_cache_never_answers_across_models_or_thresholds(tiny_bundle: Path, tmp_path: Path) -> None:
    """One cache, five pools: the same bundle at another threshold, in fp32, with its student (cascade on and
    off), and another model at the same path after a reinstall. Each must score the message itself: an answer
    from another's entry would be a verdict of a model (or threshold) this server does not run."""
    other = make_bundle(tmp_path / "other", name="tiny", seed=7)
    student = add_student(Path(shutil.copytree(tiny_bundle, tmp_path / "student")), {"sms": (0.5, 0.5)})
    cache = VerdictCache()
    setups: list[tuple[Path, dict[str, Any], float | None]] = [
        (tiny_bundle, {}, None),
        (tiny_bundle, {}, 0.2),
        (tiny_bundle, {"precision": "fp32"}, None),
        (student, {}, None),
        (student, {"cascade": False}, None),
        (other, {}, None),
    ]
    seen = []
    for bundle, load, threshold in setups:
        counting = Counting(Classifier.load(bundle, **load))
        settings = PoolSettings(extract_workers=1, threshold=threshold)
        with ScoringPool(counting, settings, cache=cache) as pool:  # type: ignore[arg-type]
            (verdict,) = _classify(pool, [SMS[0]])
            assert counting.scored == 1, (bundle, load, threshold)
            assert _classify(pool, [SMS[0]]) == [verdict] and counting.scored == 1  # its own entry: a hit
            seen.append(verdict)
    assert cache.stats().entries == len(setups)
    assert seen[1].threshold == 0.2 and seen[0].threshold == 0.5
    assert seen[3].stage == "student" and seen[4].stage == "full"


def test_the_model_at_a_path_changes_and_the_key_with_it(tiny_bundle: Path, tmp_path: Path) -> None:
    """A bundle replaced in place (a new version: `spamguard distill`, a reinstall) has a new manifest, so a
    server restarted on it with a cache kept elsewhere cannot be answered from the old model's entries."""
    path = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    before = Classifier.load(path).identity
    add_student(path, {"sms": (0.0, 0.99)})
    assert Classifier.load(path, cascade=False).identity != before


def test_the_hit_rate_reaches_metrics_and_the_log(tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = PoolSettings(extract_workers=1, log_interval=1e-9)
    with ScoringPool(Classifier.load(tiny_bundle), settings) as pool:
        with caplog.at_level(logging.INFO, logger="spamguard.pool"):
            _classify(pool, [SMS[0], SMS[0], SMS[1], SMS[0]])
        metrics = Metrics(lambda: pool.pending, pool.stats).exposition().decode()
    assert "spamguard_cache_hits_total 2.0" in metrics and "spamguard_cache_misses_total 2.0" in metrics
    assert "spamguard_cache_hit_ratio 0.5" in metrics and 'spamguard_stage_verdicts_total{stage="full"} 4.0' in metrics
    assert "cache_hits=2 cache_misses=2 cache_hit_rate=0.500" in caplog.records[-1].getMessage()
