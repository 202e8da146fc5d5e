from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from spamguard.datasets import read_sms_tsv
from spamguard.training.data import (
    HAM,
    SPAM,
    Example,
    balance,
    deduplicate,
    split,
)
from spamguard.training.errors import DataError

from conftest import SMS_FILE


def label_counts(examples: list[Example]) -> Counter[int]:
    return Counter(e.label for e in examples)


def test_real_sms_slice_counts() -> None:
    """The committed slice of the UCI collection (tests/fixtures/README.md): 552 lines, 8 of them repeats, 54
    texts beginning with a double quote, which the reader keeps as they are."""
    examples = read_sms_tsv(SMS_FILE)
    assert label_counts(examples) == {HAM: 479, SPAM: 73}
    assert label_counts(deduplicate(examples)) == {HAM: 472, SPAM: 72}
    assert sum(e.text.startswith('"') for e in examples) == 54


def test_book_protocol_on_real_file_is_seeded_and_disjoint() -> None:
    data = balance(deduplicate(read_sms_tsv(SMS_FILE)), seed=123)
    assert label_counts(data) == {HAM: 72, SPAM: 72}
    a, b = split(data, seed=123), split(data, seed=123)
    assert a == b
    assert (len(a.train), len(a.validation), len(a.test)) == (100, 14, 30)
    texts = [{e.text for e in part} for part in (a.train, a.validation, a.test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert split(data, seed=7).test != a.test


def test_stratified_split_keeps_both_classes_everywhere() -> None:
    data = [Example(f"h{i}", HAM) for i in range(95)] + [Example(f"s{i}", SPAM) for i in range(5)]
    parts = split(data, seed=0, fractions=(0.6, 0.2, 0.2), stratify=True)
    assert [label_counts(p)[SPAM] for p in (parts.train, parts.validation, parts.test)] == [3, 1, 1]


def test_malformed_line_is_reported_with_its_number(tmp_path: Path) -> None:
    f = tmp_path / "sms.tsv"
    f.write_text("ham\tfine\nspam\talso fine\nhams without a tab\n")
    with pytest.raises(DataError, match=r"sms\.tsv:3: expected 'ham<TAB>text'"):
        read_sms_tsv(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file not found: .*nope\.tsv"):
        read_sms_tsv(tmp_path / "nope.tsv")


def test_balance_needs_both_classes() -> None:
    with pytest.raises(DataError, match="one class has no examples"):
        balance([Example("a", HAM)], seed=0)
