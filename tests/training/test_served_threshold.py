"""`--max-fpr` chooses the threshold on the validation scores of the model the bundle serves (`precision=auto`:
int8 when it is included), not on fp32's: int8's rounding moves scores, and a threshold one step above the
highest allowed fp32 ham score lets that ham through as spam if int8 rounds it up."""

from __future__ import annotations

import numpy as np

from spamguard.datasets import HAM, SPAM
from spamguard.metrics import binary_metrics, threshold_for_fpr
from spamguard.thresholds import threshold_rule
from spamguard.training.package import ThresholdRule, served_threshold

LABELS = np.array([HAM, HAM, HAM, SPAM, SPAM])
FP32 = np.array([0.10, 0.40, 0.70, 0.75, 0.95])
NO_FP = threshold_rule(max_fpr=0.0, log=lambda _: None)


def served_on(int8: np.ndarray, rule: ThresholdRule = NO_FP) -> tuple[str, float, dict, float]:
    """`served_threshold` with these int8 validation scores, on a test split where both precisions agree."""
    same = np.linspace(0.0, 1.0, 50)
    return served_threshold(LABELS, {"fp32": FP32, "int8": int8}, {"fp32": same, "int8": same}, rule)  # type: ignore[return-value]


def test_threshold_follows_the_int8_scores_served() -> None:
    int8 = np.array([0.10, 0.40, 0.7000005, 0.75, 0.95])  # the highest ham rounded up
    served, threshold, choice, agreement = served_on(int8)
    assert (served, agreement) == ("int8", 1.0)
    assert threshold == np.nextafter(0.7000005, np.inf) and choice is not None and choice["fp"] == 0
    assert binary_metrics(LABELS, int8, threshold)["fp"] == 0
    # the rule on fp32's scores, as before: the same ham is spam at run time
    assert binary_metrics(LABELS, int8, threshold_for_fpr(LABELS, FP32, 0.0))["fp"] == 1


def test_a_spam_tied_with_the_highest_ham_in_int8_stays_below_the_threshold() -> None:
    """int8's coarser scores can make a spam and a ham equal: no threshold flags one and not the other, so with
    no false positive allowed the tied spam is missed rather than the ham flagged."""
    int8 = np.array([0.10, 0.40, 0.71, 0.71, 0.95])
    _, threshold, choice, _ = served_on(int8)
    assert threshold == np.nextafter(0.71, np.inf)
    assert (choice["fp"], choice["tp"], choice["fn"]) == (0, 1, 1)  # type: ignore[index]
    # ties among ham: with one of three ham allowed through, two tied at the top cannot be split either
    ham_tie = np.array([0.10, 0.71, 0.71, 0.75, 0.95])
    one_fp = threshold_rule(max_fpr=0.34, log=lambda _: None)
    _, threshold, choice, _ = served_on(ham_tie, one_fp)
    assert threshold == np.nextafter(0.71, np.inf) and choice["fp"] == 0  # type: ignore[index]


def test_int8_left_out_means_the_threshold_is_chosen_on_fp32() -> None:
    """When int8's test verdicts disagree with fp32's too often the bundle ships fp32 alone, and the rule runs
    again on fp32's validation scores."""
    int8_val = np.array([0.10, 0.40, 0.80, 0.85, 0.95])
    test_fp32 = np.linspace(0.0, 1.0, 200)
    test_int8 = 1.0 - test_fp32  # every verdict flipped
    served, threshold, _, agreement = served_threshold(
        LABELS, {"fp32": FP32, "int8": int8_val}, {"fp32": test_fp32, "int8": test_int8}, NO_FP
    )
    assert served == "fp32" and agreement < 0.995
    assert threshold == np.nextafter(0.70, np.inf)
