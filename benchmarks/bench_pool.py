"""What isolating text extraction costs per message: the prepare stage (kind, text, tokens) in this process
against the same work in an extraction process (`plugins.extraction`: a frame over a pipe each way), and a whole
verdict through the pool (`await pool.classify`) against `Classifier.classify` in-process, with the tiny test
bundle so the model's own time does not hide the overhead.

Inputs: an SMS (a real one, 150 characters), a mail of typical size (the median of the sample, about 4 KB) and
a mail at the milter's --max-size (500 KB, a real mail padded with text lines).

    .venv/bin/python -m pytest benchmarks/bench_pool.py --benchmark-only --benchmark-columns=median,iqr,rounds
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator

import pytest

from spamguard import Classifier
from spamguard.plugins.extraction import ExtractionProcess, prepare
from spamguard.plugins.pool import PoolSettings, ScoringPool

from bundles import make_bundle
from conftest import MAIL_DIR, SMS_FILE


def _inputs() -> dict[str, bytes]:
    sms = next(line.split("\t", 1)[1] for line in SMS_FILE.read_text().splitlines() if len(line) > 150)
    mails = sorted((path.read_bytes() for path in sorted(MAIL_DIR.glob("*/*"))[::10]), key=len)
    typical = statistics.median_low([len(m) for m in mails])
    mail = next(m for m in mails if len(m) == typical)
    big = mail + b"".join(b"line %d of a long newsletter, to the milter's size cap\n" % i for i in range(10_000))
    return {"sms": sms.encode(), "mail-4KB": mail, "mail-500KB": big[: 500 * 1024]}


INPUTS = _inputs()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return Classifier.load(make_bundle(tmp_path_factory.mktemp("bundles") / "tiny"))


@pytest.fixture(scope="module")
def slot(classifier: Classifier) -> Iterator[ExtractionProcess]:
    process = ExtractionProcess(classifier.encoding, classifier.bundle.max_tokens)
    process.start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def pool(classifier: Classifier) -> Iterator[ScoringPool]:
    with ScoringPool(classifier, PoolSettings(extract_workers=1)) as running:
        yield running


@pytest.mark.parametrize("name", INPUTS)
def test_prepare_in_process(benchmark, classifier: Classifier, name: str) -> None:
    benchmark.group = f"prepare {name}"
    benchmark(prepare, INPUTS[name], classifier.encoding, classifier.bundle.max_tokens)


@pytest.mark.parametrize("name", INPUTS)
def test_prepare_in_extraction_process(benchmark, slot: ExtractionProcess, name: str) -> None:
    benchmark.group = f"prepare {name}"
    benchmark(slot.prepare, INPUTS[name], 30.0)


@pytest.mark.parametrize("name", INPUTS)
def test_classify_in_process(benchmark, classifier: Classifier, name: str) -> None:
    benchmark.group = f"verdict {name}"
    benchmark(classifier.classify, INPUTS[name])


@pytest.mark.parametrize("name", INPUTS)
def test_classify_through_the_pool(benchmark, pool: ScoringPool, name: str) -> None:
    benchmark.group = f"verdict {name}"
    loop = asyncio.new_event_loop()
    try:
        benchmark(lambda: loop.run_until_complete(pool.classify(INPUTS[name])))
    finally:
        loop.close()
