"""Leetspeak copies for training (`--augment-leetspeak`): what the runtime would read of a disguised message,
under the message's label, for a seeded share of the training split only."""

from __future__ import annotations

import re

import pytest

from spamguard.datasets import HAM, SPAM, Example
from spamguard.normalize import LEET_DIGITS, RUN, normalize_text
from spamguard.training.augment import leetspeak_copies
from spamguard.training.errors import TrainingError

from conftest import SMS_FILE

LABELS = {"ham": HAM, "spam": SPAM}
LINES = SMS_FILE.read_text(encoding="utf-8").splitlines()[:200]
EXAMPLES = [  # each message's line number as its source: a copy names its original
    Example(normalize_text(text), LABELS[label], f"sms.tsv:{i}", "sms")
    for i, (label, _, text) in enumerate(line.partition("\t") for line in LINES)
]


def test_copies_are_what_the_runtime_reads_under_the_same_label() -> None:
    copies = leetspeak_copies(EXAMPLES, 1.0, seed=1)
    originals = {e.text: e for e in EXAMPLES}
    # 101 of the 200: a message the text function reads back whole gives no copy
    assert len(copies) > 80
    digits = set(LEET_DIGITS)
    for copy in copies:
        assert copy.text not in originals and normalize_text(copy.text) == copy.text
        original = EXAMPLES[int(copy.source.rpartition(":")[2])]
        assert (copy.kind, copy.label) == (original.kind, original.label)
        assert len(copy.text.split()) == len(original.text.split())
        # what the text function cannot give back: a word whose every letter became a digit ("533"), a "1" read
        # as the other letter ("iike"), a capital written as a digit ("7ext" came back as "text")
        for word, read in zip(_RUN.findall(original.text), _RUN.findall(copy.text), strict=True):
            assert read == word or not any(c.isalpha() for c in read) or _fold(read) == _fold(word), (word, read)
    assert {c.label for c in copies} == {HAM, SPAM}
    assert any(any(c in digits for c in copy.text) for copy in copies)


_RUN = re.compile(RUN)  # the text function's unit: a digit imitates a letter within a run


def _fold(word: str) -> str:
    return word.lower().replace("l", "i")


def test_share_and_seed() -> None:
    assert leetspeak_copies(EXAMPLES, 0.0, seed=1) == []
    half = leetspeak_copies(EXAMPLES, 0.5, seed=1)
    assert 35 <= len(half) <= 70
    assert half == leetspeak_copies(EXAMPLES, 0.5, seed=1)
    assert half != leetspeak_copies(EXAMPLES, 0.5, seed=2)
    for share in (-0.1, 1.5):
        with pytest.raises(TrainingError, match="--augment-leetspeak must be between 0 and 1"):
            leetspeak_copies(EXAMPLES, share, seed=1)
