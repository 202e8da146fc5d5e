"""Class imbalance in the user's own mail: a real mailbox holds far more ham than spam.

The choice made for mail (`spamguard train --ham/--spam/--corpus`): a stratified split that keeps the real
ham:spam ratio in every part and both classes in each, and a weighted loss (`class_weights`, from the training
split) instead of undersampling. Validation must keep its ham, because the threshold is chosen there by
false-positive rate, which 100 ham measure only in steps of 1%; and the rare ham that looks like spam
(newsletters, receipts) is what an FPR-first filter must see, which undersampling throws away. The SMS-only
default keeps the book's balanced protocol (`spamguard.training.data.balance`)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from spamguard.datasets import HAM, LABELS, SPAM, Example
from spamguard.errors import DataError
from spamguard.training.data import Splits, split


def class_weights(examples: Sequence[Example]) -> tuple[float, float]:
    """(ham weight, spam weight) for a weighted cross-entropy, `n / (2 * n_class)`: each class then carries half
    of the loss, as after balancing, but no message is thrown away. Compute them on the training split only;
    index them by label (`torch.tensor(weights)[HAM]`)."""
    counts = Counter(e.label for e in examples)
    n = counts[HAM] + counts[SPAM]
    if counts[HAM] == 0 or counts[SPAM] == 0:
        raise DataError(f"cannot weight classes: {counts[HAM]} ham and {counts[SPAM]} spam in the training split")
    return n / (2 * counts[HAM]), n / (2 * counts[SPAM])


def require_both_classes(splits: Splits, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> None:
    """Fail before training, not after it, when a part lacks a class: without ham in validation no threshold
    can be chosen by false-positive rate, and without spam in test no recall can be reported."""
    parts = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    for (name, part), fraction in zip(parts.items(), fractions, strict=True):
        for label_name, label in LABELS.items():
            if any(e.label == label for e in part):
                continue
            total = sum(e.label == label for p in parts.values() for e in p)
            need = math.ceil(1 / fraction) if fraction > 0 else "more"
            raise DataError(
                f"the {name} split has no {label_name}: {total} {label_name} messages in all, "
                f"a {fraction:.0%} {name} split needs at least {need}"
            )


def stratified_splits(
    examples: Sequence[Example], seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> Splits:
    """The split for mail: each class split on its own (so every part keeps the real ham:spam ratio), checked
    to hold both classes in every part."""
    splits = split(examples, seed, fractions, stratify=True)
    require_both_classes(splits, fractions)
    return splits
