"""Imbalance between labels and kinds: class weights per kind and label, undersampling, the split stratified by
kind and label that keeps both labels of every kind everywhere."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from spamguard.datasets import HAM, SPAM, Example
from spamguard.errors import DataError
from spamguard.message_text import MAIL, SMS
from spamguard.training.data import Splits
from spamguard.training.imbalance import (
    class_weights,
    example_weights,
    require_both_labels,
    stratified_splits,
    undersample,
)


def _examples(n_ham: int, n_spam: int, kind: str = SMS) -> list[Example]:
    return [Example(f"{kind} ham {i}", HAM, kind=kind) for i in range(n_ham)] + [
        Example(f"{kind} spam {i}", SPAM, kind=kind) for i in range(n_spam)
    ]


def test_class_weights_known_answer() -> None:
    assert class_weights(_examples(90, 10)) == {SMS: pytest.approx((100 / 180, 100 / 20))}
    assert class_weights(_examples(10, 10)) == {SMS: pytest.approx((1.0, 1.0))}
    with pytest.raises(DataError, match=r"^cannot weight classes: 5 sms ham and 0 sms spam in the training split$"):
        class_weights(_examples(5, 0))


def test_class_weights_give_every_kind_and_label_the_same_share_of_the_loss() -> None:
    data = _examples(900, 100, SMS) + _examples(300, 200, MAIL)
    weights = class_weights(data)
    assert weights == {
        MAIL: pytest.approx((1500 / (4 * 300), 1500 / (4 * 200))),
        SMS: pytest.approx((1500 / (4 * 900), 1500 / (4 * 100))),
    }
    per_example = example_weights(data, weights)
    for kind in (SMS, MAIL):
        for label in (HAM, SPAM):
            share = per_example[[e.kind == kind and e.label == label for e in data]].sum() / per_example.sum()
            assert share == pytest.approx(0.25)
    assert per_example.dtype == np.float32 and len(per_example) == len(data)


def test_undersample_caps_the_larger_class_and_is_seeded() -> None:
    data = _examples(90, 10)
    kept = undersample(data, seed=1, max_ratio=3)
    counts = Counter(e.label for e in kept)
    assert counts == {HAM: 30, SPAM: 10}
    assert kept == undersample(data, seed=1, max_ratio=3) and kept != undersample(data, seed=2, max_ratio=3)
    assert Counter(e.label for e in undersample(data, seed=1, max_ratio=100)) == {HAM: 90, SPAM: 10}
    assert Counter(e.label for e in undersample(_examples(4, 12), seed=1)) == {HAM: 4, SPAM: 4}


def test_stratified_splits_keep_both_classes_and_the_real_ratio() -> None:
    splits = stratified_splits(_examples(1000, 30), seed=3)
    for part in (splits.train, splits.validation, splits.test):
        counts = Counter(e.label for e in part)
        assert counts[SPAM] >= 3 and counts[HAM] / counts[SPAM] == pytest.approx(1000 / 30, rel=0.15)


def test_split_by_kind_and_label_holds_both_labels_of_each_kind_everywhere() -> None:
    data = _examples(400, 60, SMS) + _examples(120, 40, MAIL)
    splits = stratified_splits(data, seed=5)
    assert splits.kinds() == [MAIL, SMS]
    assert splits.counts_by_kind() == {
        MAIL: {"train": {"ham": 84, "spam": 28}, "validation": {"ham": 12, "spam": 4}, "test": {"ham": 24, "spam": 8}},
        SMS: {"train": {"ham": 280, "spam": 42}, "validation": {"ham": 40, "spam": 6}, "test": {"ham": 80, "spam": 12}},
    }
    texts = [{e.text for e in part} for part in splits.parts().values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert sum(map(len, texts)) == len(data)
    assert splits == stratified_splits(data, seed=5) and splits.test != stratified_splits(data, seed=6).test


def test_each_kind_is_split_the_same_with_or_without_the_other() -> None:
    """So a model of one kind and a model of both are tested on the same messages of that kind."""
    sms, mail = _examples(300, 50, SMS), _examples(100, 30, MAIL)
    both = stratified_splits(sms + mail, seed=9)
    alone = stratified_splits(sms, seed=9)
    for part_both, part_alone in zip(both.of_kind(SMS).parts().values(), alone.parts().values(), strict=True):
        assert sorted(e.text for e in part_both) == sorted(e.text for e in part_alone)


def test_split_without_spam_in_validation_is_refused_before_training() -> None:
    with pytest.raises(DataError, match=r"^the sms validation part has no spam: 9 sms spam in all, a 10% "):
        stratified_splits(_examples(100, 9), seed=0)
    with pytest.raises(DataError, match=r"^the sms test part has no ham: 2 sms ham in all, a 20% test part"):
        require_both_labels(Splits(_examples(1, 1), _examples(1, 1), _examples(0, 1)))


def test_a_kind_whose_part_lacks_a_label_stops_with_one_line() -> None:
    """Plenty of mail, but the SMS have too little spam for a validation part: one line, naming the kind."""
    data = _examples(200, 80, MAIL) + _examples(50, 5, SMS)
    with pytest.raises(DataError) as error:
        stratified_splits(data, seed=1)
    assert str(error.value) == (
        "the sms validation part has no spam: 5 sms spam in all, a 10% validation part needs at least 10 (add sms "
        "spam, or leave the sms messages out)"
    )
