"""Imbalanced mail: class weights and the stratified split that keeps both classes everywhere."""

from __future__ import annotations

from collections import Counter

import pytest

from spamguard.datasets import HAM, SPAM, Example
from spamguard.errors import DataError
from spamguard.training.data import Splits
from spamguard.training.imbalance import class_weights, require_both_classes, stratified_splits


def _examples(n_ham: int, n_spam: int) -> list[Example]:
    return [Example(f"ham {i}", HAM) for i in range(n_ham)] + [Example(f"spam {i}", SPAM) for i in range(n_spam)]


def test_class_weights_known_answer() -> None:
    assert class_weights(_examples(90, 10)) == pytest.approx((100 / 180, 100 / 20))
    assert class_weights(_examples(10, 10)) == pytest.approx((1.0, 1.0))
    with pytest.raises(DataError, match=r"^cannot weight classes: 5 ham and 0 spam in the training split$"):
        class_weights(_examples(5, 0))


def test_stratified_splits_keep_both_classes_and_the_real_ratio() -> None:
    splits = stratified_splits(_examples(1000, 30), seed=3)
    for part in (splits.train, splits.validation, splits.test):
        counts = Counter(e.label for e in part)
        assert counts[SPAM] >= 3 and counts[HAM] / counts[SPAM] == pytest.approx(1000 / 30, rel=0.15)


def test_split_without_spam_in_validation_is_refused_before_training() -> None:
    with pytest.raises(DataError, match=r"^the validation split has no spam: 9 spam messages in all, a 10% "):
        stratified_splits(_examples(100, 9), seed=0)
    with pytest.raises(DataError, match=r"^the test split has no ham: 2 ham messages in all, a 20% test split"):
        require_both_classes(Splits(_examples(1, 1), _examples(1, 1), _examples(0, 1)))
