"""Imbalance between labels and between kinds: a real mailbox holds far more ham than spam, the SMS collection
7 ham to 1 spam, and the two kinds need not come in equal numbers.

The choice (`spamguard train`, whatever the data): a split stratified by kind and label that keeps every kind's
real ham:spam ratio in every part and both labels in each, and a loss weighted per (kind, label) group
(`class_weights`, from the training split) instead of undersampling. Validation must keep its ham, because the
threshold of each kind is chosen there by false-positive rate, which 71 ham (the book's balanced SMS split)
measure only in steps of 1.4%; and the rare ham that looks like spam (newsletters, receipts: SpamAssassin's
hard_ham) is what an FPR-first filter must see, which undersampling throws away. The weights give every group
the same share of the loss, so neither the larger kind nor the larger label decides what the model learns.
`undersample` is here for a training split too large to be cheap per epoch. Why not sampling: docs/training.md,
"Mail and SMS together"."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from spamguard.datasets import HAM, LABEL_NAMES, SPAM, Example
from spamguard.errors import DataError
from spamguard.message_text import KINDS
from spamguard.training.data import Splits, split

ClassWeights = dict[str, tuple[float, float]]  # kind -> (ham weight, spam weight)


def class_weights(examples: Sequence[Example]) -> ClassWeights:
    """{kind: (ham weight, spam weight)} for a weighted cross-entropy, `n / (g * n_group)` over the g (kind,
    label) groups present: each group then carries 1/g of the loss, as after balancing every group, but no
    message is thrown away. Compute them on the training split only."""
    counts = Counter((e.kind, e.label) for e in examples)
    kinds = [kind for kind in KINDS if counts[kind, HAM] or counts[kind, SPAM]]
    for kind in kinds:
        if counts[kind, HAM] == 0 or counts[kind, SPAM] == 0:
            raise DataError(
                f"cannot weight classes: {counts[kind, HAM]} {kind} ham and {counts[kind, SPAM]} {kind} spam in "
                "the training split"
            )
    n, groups = len(examples), 2 * len(kinds)
    return {kind: (n / (groups * counts[kind, HAM]), n / (groups * counts[kind, SPAM])) for kind in kinds}


def example_weights(examples: Sequence[Example], weights: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Each example's loss weight, looked up by its kind and label."""
    return np.array([weights[e.kind][e.label] for e in examples], dtype=np.float32)


def describe_weights(weights: Mapping[str, Sequence[float]]) -> str:
    return ", ".join(f"{kind} ham {w[HAM]:.3f}, {kind} spam {w[SPAM]:.3f}" for kind, w in weights.items())


def undersample(examples: Sequence[Example], seed: int, max_ratio: float = 1.0) -> list[Example]:
    """Keep every message of the smaller class and at most `ceil(max_ratio * n_smaller)` of the larger one
    (seeded), in shuffled order. `max_ratio=1` is the book's balancing; a larger ratio keeps more ham variety
    while bounding the cost of an epoch. Meant for the training split only: validation and test keep the real
    ratio, or their false-positive rate would be measured on too few ham."""
    if max_ratio < 1.0:
        raise ValueError(f"max_ratio must be at least 1, got {max_ratio}")
    rng = random.Random(seed)
    by_label = {label: [e for e in examples if e.label == label] for label in (HAM, SPAM)}
    small, large = sorted(by_label.values(), key=len)
    if not small:
        raise DataError("cannot undersample: one class has no examples")
    keep = min(len(large), math.ceil(max_ratio * len(small)))
    chosen = list(small) + rng.sample(large, keep)
    rng.shuffle(chosen)
    return chosen


def require_both_labels(splits: Splits, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> None:
    """Fail before training, not after it, when a kind's part lacks a label: without that kind's ham in
    validation no threshold can be chosen for it by false-positive rate, without its spam in test no recall can
    be reported, and without both in training its class weights are undefined."""
    for kind in splits.kinds():
        parts = {name: [e for e in part if e.kind == kind] for name, part in splits.parts().items()}
        for (name, part), fraction in zip(parts.items(), fractions, strict=True):
            for label in (HAM, SPAM):
                if any(e.label == label for e in part):
                    continue
                label_name = LABEL_NAMES[label]
                total = sum(e.label == label for p in parts.values() for e in p)
                need = math.ceil(1 / fraction) if fraction > 0 else "more"
                raise DataError(
                    f"the {kind} {name} part has no {label_name}: {total} {kind} {label_name} in all, a "
                    f"{fraction:.0%} {name} part needs at least {need} (add {kind} {label_name}, or leave the "
                    f"{kind} messages out)"
                )


def stratified_splits(
    examples: Sequence[Example], seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> Splits:
    """The split for training: each (kind, label) group split on its own (so every part keeps each kind's real
    ham:spam ratio), checked to hold both labels of every kind in every part."""
    splits = split(examples, seed, fractions, stratify=True)
    require_both_labels(splits, fractions)
    return splits
