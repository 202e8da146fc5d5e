from __future__ import annotations

import json

import numpy as np
import pytest

from spamguard.metrics import threshold_for_fpr
from spamguard.thresholds import (
    ThresholdError,
    ThresholdOptions,
    check_unsure,
    choose_threshold,
    fallback,
    kind_options,
    parse_unsure,
    threshold_rule,
)
from spamguard.training.package import Split, choose_per_kind, fixed_threshold

# 1000 ham at 0.000, 0.001, ..., 0.999 and four spam: the answers below follow by counting.
HAM = np.round(np.arange(1000) / 1000, 3)
SPAM = np.array([0.9985, 0.9995, 0.5, 0.99])
LABELS = np.r_[np.zeros(1000, dtype=int), np.ones(4, dtype=int)]
SCORES = np.r_[HAM, SPAM]


def test_max_fpr_known_answer() -> None:
    # n = 1000 ham: k ham may pass while (k + 1) / 1001 <= 0.002, so one (0.999), not the two the validation FPR
    # alone would allow
    choice = choose_threshold(LABELS, SCORES, max_fpr=0.002)
    assert 0.998 < choice.threshold <= 0.999
    r = choice.record
    assert (r["method"], r["target_fpr"], r["n_ham"], r["n_spam"]) == ("max_fpr", 0.002, 1000, 4)
    assert (r["fp"], r["tp"]) == (1, 2) and r["fpr"] == pytest.approx(0.001) and r["recall"] == pytest.approx(0.5)
    assert r["expected_new_fpr"] == pytest.approx(2 / 1001)
    assert r["fpr_step"] == pytest.approx(0.001) and choice.warnings == [] and choice.unsure is None
    assert choice.describe() == (
        f"threshold {choice.threshold:.6g} (max FPR 0.002; on validation: FPR 0.001 on 1000 ham, recall 0.5 on 4 "
        "spam; on new ham: FPR at most 0.002 expected)"
    )
    json.dumps(choice.manifest_fields())  # the manifest is JSON: no numpy types may leak into it


def test_max_fpr_holds_on_new_ham_where_the_validation_rate_does_not() -> None:
    """123 validation ham (mail's part of the default split) and a 1% target: the validation FPR allows one
    false positive, and new ham then scores above the threshold 2/124 = 1.6% of the time; the new-ham rule
    allows none, and the rate on new ham stays under the target. Seeded draws of exchangeable ham scores."""
    rng = np.random.default_rng(7)
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(400):
        validation, new = rng.random(123), rng.random(2000)
        labels = np.zeros(123, dtype=int)
        for new_ham in rates:
            threshold = threshold_for_fpr(labels, validation, 0.01, new_ham=new_ham)
            rates[new_ham].append(float(np.mean(new >= threshold)))
    assert np.mean(rates[True]) <= 0.01 < 0.014 < np.mean(rates[False])
    assert choose_threshold(labels, validation, max_fpr=0.01).threshold == threshold_for_fpr(
        labels, validation, 0.01, new_ham=True
    )


def test_zero_fpr_sits_just_above_the_highest_ham() -> None:
    choice = choose_threshold(LABELS, SCORES, max_fpr=0.0)
    assert 0.999 < choice.threshold <= 0.9995
    assert (choice.record["fp"], choice.record["tp"]) == (0, 1)


def test_target_finer_than_the_validation_ham_can_measure_is_warned() -> None:
    labels = np.r_[np.zeros(100, dtype=int), np.ones(2, dtype=int)]
    scores = np.r_[np.linspace(0, 0.9, 100), [0.95, 0.2]]
    choice = choose_threshold(labels, scores, max_fpr=0.001)
    assert 0.9 < choice.threshold <= 0.95 and choice.record["fp"] == 0
    assert choice.warnings == choice.record["warnings"]
    assert choice.warnings[0].startswith("the validation split has 100 ham: even above every one of them, a new ham")
    assert "(it takes 999 ham to show 0.001)" in choice.warnings[0]


def test_a_ham_scoring_one_means_nothing_can_be_flagged() -> None:
    choice = choose_threshold([0, 1], [1.0, 1.0], max_fpr=0.0)
    assert choice.threshold > 1.0 and choice.record["tp"] == 0
    assert "no threshold meets the target" in choice.warnings[-1]


def test_fixed_and_default_thresholds_report_their_validation_figures() -> None:
    fixed = choose_threshold(LABELS, SCORES, threshold=0.95)
    assert fixed.threshold == 0.95 and fixed.record["method"] == "threshold"
    assert (fixed.record["fp"], fixed.record["tp"]) == (50, 3)  # ham 0.950..0.999, all spam but 0.5
    default = choose_threshold(LABELS, SCORES)
    assert default.threshold == 0.5 and default.record["method"] == "default" and default.record["fp"] == 500
    assert fixed.describe().startswith("threshold 0.95 (given; on validation: FPR 0.05 on 1000 ham, recall 0.75 on 4")
    assert default.describe().startswith("threshold 0.5 (default; on validation: FPR 0.5 on 1000 ham")


def test_unsure_band_counts_what_falls_inside() -> None:
    choice = choose_threshold(LABELS, SCORES, max_fpr=0.002, unsure=(0.9, 0.999))
    assert choice.unsure == (0.9, 0.999)
    band = choice.record["unsure"]
    assert (band["ham_unsure"], band["spam_unsure"]) == (99, 2)  # ham 0.900..0.998, spam 0.99 and 0.9985
    assert band["fpr_spam_verdict"] == pytest.approx(0.001) and band["recall_spam_verdict"] == pytest.approx(0.25)
    assert choice.manifest_fields()["unsure"] == [0.9, 0.999]
    assert choice.describe().endswith(", unsure 0.9-0.999 (99 ham and 2 spam of validation fall in it)")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_fpr": 0.01, "threshold": 0.5}, "give --max-fpr or --threshold, not both"),
        ({"max_fpr": 1.0}, "--max-fpr must be at least 0 and below 1, got 1"),
        ({"max_fpr": -0.1}, "--max-fpr must be at least 0 and below 1, got -0.1"),
        ({"threshold": 1.5}, "--threshold must be between 0 and 1, got 1.5"),
        ({"threshold": 0.5, "unsure": (0.6, 0.9)}, "the threshold 0.5 lies outside the unsure band 0.6,0.9: choose"),
        ({"unsure": (0.9, 0.2)}, "the unsure band needs 0 <= LOW < HIGH <= 1, got 0.9,0.2"),
    ],
)
def test_inconsistent_options_are_one_clear_error(options: dict, message: str) -> None:
    with pytest.raises(ThresholdError) as info:
        choose_threshold(LABELS, SCORES, **options)
    assert str(info.value).startswith(message)


def test_no_validation_ham_cannot_choose_by_fpr() -> None:
    with pytest.raises(ThresholdError, match=r"^cannot choose a threshold by false-positive rate: the validation"):
        choose_threshold([1, 1], [0.2, 0.9], max_fpr=0.01)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.9", "--unsure expects LOW,HIGH (two numbers such as 0.3,0.9), got '0.9'"),
        ("a,b", "--unsure expects LOW,HIGH (two numbers such as 0.3,0.9), got 'a,b'"),
        ("0.1,0.2,0.3", "--unsure expects LOW,HIGH (two numbers such as 0.3,0.9), got '0.1,0.2,0.3'"),
        ("0.5,0.5", "the unsure band needs 0 <= LOW < HIGH <= 1, got 0.5,0.5"),
        ("-0.1,0.5", "the unsure band needs 0 <= LOW < HIGH <= 1, got -0.1,0.5"),
        ("0.2,1.1", "the unsure band needs 0 <= LOW < HIGH <= 1, got 0.2,1.1"),
    ],
)
def test_parse_unsure_errors(text: str, message: str) -> None:
    with pytest.raises(ThresholdError) as info:
        parse_unsure(text)
    assert str(info.value) == message


def test_parse_unsure_accepts_a_valid_band() -> None:
    assert parse_unsure(" 0.3, 0.95") == (0.3, 0.95)
    assert check_unsure(0.0, 1.0, threshold=1.0) == (0.0, 1.0)


def test_band_missing_the_fpr_threshold_is_widened_not_fatal() -> None:
    choice = choose_threshold(LABELS, SCORES, max_fpr=0.002, unsure=(0.3, 0.9))
    assert choice.unsure == (0.3, choice.threshold) and 0.998 < choice.threshold <= 0.999
    assert choice.warnings[-1].startswith(f"the threshold {choice.threshold:.6g} chosen for --max-fpr lies outside")
    with_band_at_one = choose_threshold([0, 1], [1.0, 1.0], max_fpr=0.0, unsure=(0.5, 0.9))
    assert with_band_at_one.unsure == (0.5, 0.9) and with_band_at_one.threshold > 1.0


def test_threshold_rule_checks_options_before_training() -> None:
    with pytest.raises(ThresholdError, match=r"^the threshold 0.5 lies outside the unsure band 0.6,0.9"):
        threshold_rule(ThresholdOptions(unsure=(0.6, 0.9)))  # the default threshold is known before training
    with pytest.raises(ThresholdError, match=r"^give --max-fpr or --threshold, not both$"):
        threshold_rule(ThresholdOptions(max_fpr=0.1, threshold=0.5))
    logged: list[str] = []
    rule = threshold_rule(ThresholdOptions(max_fpr=0.002, unsure=(0.6, 0.999)), log=logged.append)
    threshold, record = rule("mail", LABELS, SCORES)
    assert 0.998 < threshold <= 0.999 and record["unsure"]["low"] == 0.6 and record["fp"] == 1
    assert record["kind"] == "mail"
    assert logged == ["mail: " + choose_threshold(LABELS, SCORES, max_fpr=0.002, unsure=(0.6, 0.999)).describe()]


def test_options_per_kind_resolve_the_most_specific_value() -> None:
    options = kind_options(max_fpr=["0.01"], threshold=["sms=0.7"], unsure=["0.2,0.9", "mail=0.001,0.999"])
    assert options == {
        "mail": ThresholdOptions(max_fpr=0.01, threshold=None, unsure=(0.001, 0.999)),
        "sms": ThresholdOptions(max_fpr=None, threshold=0.7, unsure=(0.2, 0.9)),
    }
    assert kind_options() == dict.fromkeys(("mail", "sms"), ThresholdOptions())
    assert kind_options(max_fpr=["mail=0.001", "0.01"])["sms"] == ThresholdOptions(max_fpr=0.01)


def test_each_kind_gets_the_threshold_its_own_validation_part_gives() -> None:
    """--max-fpr holds on each kind's own validation ham: mail ham scores high, SMS ham low, so a threshold
    chosen on the two pooled would pass more mail ham than the target allows."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(400), np.ones(100), np.zeros(400), np.ones(100)].astype(int)
    scores = np.r_[
        rng.uniform(0.3, 0.8, 400), rng.uniform(0.7, 1, 100), rng.uniform(0, 0.4, 400), rng.uniform(0.5, 1, 100)
    ]
    kinds = np.array(["mail"] * 500 + ["sms"] * 500)
    validation = Split([[1]] * 1000, labels, kinds)
    chosen = choose_per_kind(threshold_rule(ThresholdOptions(max_fpr=0.01), log=lambda _: None), validation, scores)
    for kind in ("mail", "sms"):
        mask = kinds == kind
        assert chosen[kind].threshold == threshold_for_fpr(labels[mask], scores[mask], 0.01, new_ham=True)
        assert chosen[kind].choice["n_ham"] == 400 and chosen[kind].choice["fp"] <= 3  # (3 + 1) / 401 <= 1%
    assert chosen["mail"].threshold > 0.75 > 0.45 > chosen["sms"].threshold
    pooled = threshold_for_fpr(labels, scores, 0.01)
    mail_ham = scores[(kinds == "mail") & (labels == 0)]
    assert np.mean(mail_ham >= pooled) > 0.01  # one threshold for both: mail ham spends the FPR budget of both
    fixed = choose_per_kind(fixed_threshold(0.6), validation, scores)
    assert {k: (t.threshold, t.unsure, t.choice) for k, t in fixed.items()} == {
        "mail": (0.6, None, None),
        "sms": (0.6, None, None),
    }


def test_fallback_is_the_strictest_kind() -> None:
    assert fallback({"mail": (0.9, None), "sms": (0.5, None)}) == (0.9, None)
    assert fallback({"mail": (0.9, None), "sms": (0.5, (0.2, 0.8))}) == (0.9, (0.2, 0.9))
    assert fallback({"mail": (0.7, (0.5, 0.95)), "sms": (0.5, (0.2, 0.8))}) == (0.7, (0.2, 0.95))
    assert fallback({"sms": (0.4, None)}) == (0.4, None)
