"""`--max-fpr` chooses each kind's threshold on the validation scores of the model the bundle serves
(`precision=auto`: int8 when it is included), not on fp32's: int8's rounding moves scores, and a threshold one step
above the highest allowed fp32 ham score lets that ham through as spam if int8 rounds it up."""

from __future__ import annotations

import numpy as np

from spamguard.datasets import HAM, SPAM
from spamguard.message_text import MAIL, SMS
from spamguard.metrics import binary_metrics, threshold_for_fpr
from spamguard.thresholds import ThresholdOptions, threshold_rule
from spamguard.training.package import KindThreshold, Split, ThresholdRule, served_thresholds

LABELS = np.array([HAM, HAM, HAM, SPAM, SPAM])
FP32 = np.array([0.10, 0.40, 0.70, 0.75, 0.95])
NO_FP = threshold_rule(ThresholdOptions(max_fpr=0.0), log=lambda _: None)


def _split(labels: np.ndarray, kind: str = SMS) -> Split:
    return Split([[1]] * len(labels), labels, np.array([kind] * len(labels)))


def served_on(
    int8: np.ndarray, rule: ThresholdRule = NO_FP, test: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[str, KindThreshold, float]:
    """`served_thresholds` with these int8 validation scores (all SMS), on a test split where both precisions
    agree unless `test` gives the two precisions' test scores."""
    same = np.linspace(0.0, 1.0, 50)
    test_fp32, test_int8 = test if test is not None else (same, same)
    served, thresholds, agreement = served_thresholds(
        rule,
        _split(LABELS),
        {"fp32": FP32, "int8": int8},
        _split(np.zeros(len(test_fp32), dtype=np.int64)),
        {"fp32": test_fp32, "int8": test_int8},
    )
    return served, thresholds[SMS], agreement


def test_threshold_follows_the_int8_scores_served() -> None:
    int8 = np.array([0.10, 0.40, 0.7000005, 0.75, 0.95])  # the highest ham rounded up
    served, chosen, agreement = served_on(int8)
    assert (served, agreement) == ("int8", 1.0)
    assert chosen.threshold == np.nextafter(0.7000005, np.inf) and chosen.choice is not None
    assert chosen.choice["fp"] == 0
    assert binary_metrics(LABELS, int8, chosen.threshold)["fp"] == 0
    # the rule on fp32's scores, as before: the same ham is spam at run time
    assert binary_metrics(LABELS, int8, threshold_for_fpr(LABELS, FP32, 0.0))["fp"] == 1


def test_a_spam_tied_with_the_highest_ham_in_int8_stays_below_the_threshold() -> None:
    """int8's coarser scores can make a spam and a ham equal: no threshold flags one and not the other, so with
    no false positive allowed the tied spam is missed rather than the ham flagged."""
    int8 = np.array([0.10, 0.40, 0.71, 0.71, 0.95])
    _, chosen, _ = served_on(int8)
    assert chosen.threshold == np.nextafter(0.71, np.inf)
    assert (chosen.choice["fp"], chosen.choice["tp"], chosen.choice["fn"]) == (0, 1, 1)  # type: ignore[index]
    # ties among ham: with one of three ham allowed through, two tied at the top cannot be split either
    ham_tie = np.array([0.10, 0.71, 0.71, 0.75, 0.95])
    one_fp = threshold_rule(ThresholdOptions(max_fpr=0.34), log=lambda _: None)
    _, chosen, _ = served_on(ham_tie, one_fp)
    assert chosen.threshold == np.nextafter(0.71, np.inf) and chosen.choice["fp"] == 0  # type: ignore[index]


def test_int8_left_out_means_the_threshold_is_chosen_on_fp32() -> None:
    """When int8's test verdicts disagree with fp32's too often the bundle ships fp32 alone, and the rule runs
    again on fp32's validation scores."""
    int8_val = np.array([0.10, 0.40, 0.80, 0.85, 0.95])
    test_fp32 = np.linspace(0.0, 1.0, 200)
    served, chosen, agreement = served_on(int8_val, test=(test_fp32, 1.0 - test_fp32))  # every verdict flipped
    assert served == "fp32" and agreement < 0.995
    assert chosen.threshold == np.nextafter(0.70, np.inf)


def test_each_kind_is_chosen_on_its_own_served_scores() -> None:
    """Two kinds in one validation split: each kind's threshold comes from its own messages' int8 scores."""
    labels = np.concatenate([LABELS, LABELS])
    kinds = np.array([SMS] * 5 + [MAIL] * 5)
    int8 = np.concatenate([FP32, FP32 * 0.5])
    served, thresholds, _ = served_thresholds(
        NO_FP,
        Split([[1]] * 10, labels, kinds),
        {"fp32": np.concatenate([FP32, FP32]), "int8": int8},
        _split(np.zeros(4, dtype=np.int64)),
        {"fp32": np.zeros(4), "int8": np.zeros(4)},
    )
    assert served == "int8"
    assert thresholds[SMS].threshold == np.nextafter(0.70, np.inf)
    assert thresholds[MAIL].threshold == np.nextafter(0.35, np.inf)
