"""Which epoch training keeps: the rule chosen from the threshold options and the validation part, the recall
figure it ranks by, and `train` keeping the epoch the rule ranks highest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spamguard.metrics import binary_metrics
from spamguard.thresholds import ThresholdOptions, kind_options, threshold_rule
from spamguard.training.epoch_choice import ACCURACY, EpochRule, epoch_rule, kept_epoch, recall_over_kinds
from spamguard.training.gpt2 import GPT2Classifier, GPTConfig
from spamguard.training.package import fixed_threshold
from spamguard.training.recipe import Evaluation, TokenData, TrainSettings, evaluate, parse_trainable, train

QUIET = {"log": lambda _line: None}
LABELS = np.array([0, 0, 0, 1, 1, 0, 0, 1, 1, 1])
KINDS = np.array(["mail"] * 5 + ["sms"] * 5)


def test_recall_needs_every_kinds_threshold_bounded_by_fpr() -> None:
    bounded = threshold_rule(ThresholdOptions(max_fpr=0.01), **QUIET)
    assert epoch_rule(bounded, LABELS, KINDS).name == "recall"
    # a fixed threshold on any kind present: recall at it would favour the epoch that flags the most ham
    mixed = threshold_rule(kind_options(max_fpr=["0.01"], threshold=["sms=0.6"]), **QUIET)
    assert epoch_rule(mixed, LABELS, KINDS) is ACCURACY
    assert epoch_rule(mixed, LABELS[:5], KINDS[:5]).name == "recall"  # mail only: its threshold is bounded
    for fixed in (None, fixed_threshold(), threshold_rule(ThresholdOptions(), **QUIET)):
        assert epoch_rule(fixed, LABELS, KINDS) is ACCURACY


def test_a_kind_without_ham_or_spam_in_validation_keeps_accuracy() -> None:
    bounded = threshold_rule(ThresholdOptions(max_fpr=0.01), **QUIET)
    no_sms_spam = np.where(KINDS == "sms", 0, LABELS)
    assert epoch_rule(bounded, no_sms_spam, KINDS) is ACCURACY
    assert epoch_rule(bounded, np.array([], dtype=int), np.array([], dtype=str)) is ACCURACY


def test_recall_is_the_mean_over_kinds_at_each_kinds_own_threshold() -> None:
    """Mail counts as much as SMS whatever their sizes: 2 of 2 mail spam and 2 of 3 SMS spam give 5/6, not the
    pooled 4/5; each kind's threshold comes from its own ham (the product's rule)."""
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.9, 0.7, 0.1, 0.6, 0.8, 0.95])
    rule = threshold_rule(ThresholdOptions(max_fpr=0.0), **QUIET)
    expected = []
    for kind in ("mail", "sms"):
        mask = np.equal(KINDS, kind)
        threshold = rule(kind, LABELS[mask], scores[mask])[0]
        expected.append(binary_metrics(LABELS[mask], scores[mask], threshold)["recall"])
    assert expected == [1.0, pytest.approx(2 / 3)]  # mail's threshold sits above 0.3, SMS's above 0.7
    assert recall_over_kinds(LABELS, KINDS, scores, rule) == pytest.approx(5 / 6)
    figure = epoch_rule(rule, LABELS, KINDS).figure
    assert figure(Evaluation(0.5, LABELS, scores)) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="9 validation scores for 10 messages"):
        figure(Evaluation(0.5, LABELS[:9], scores[:9]))


def test_kept_epoch_is_the_highest_key_then_the_earliest() -> None:
    assert kept_epoch([(0.5, -0.3), (0.9, -0.4), (0.9, -0.2), (0.9, -0.2)]) == 3
    assert kept_epoch([(0.5, -0.3)]) == 1


def test_train_keeps_the_epoch_its_rule_ranks_highest() -> None:
    """A rule whose figure is highest on epoch 2 (of 4): that epoch's weights are restored and recorded, though
    the accuracy rule may rank another first; the log shows each epoch's figure."""
    torch.manual_seed(0)
    model = GPT2Classifier(GPTConfig(n_layer=2, n_head=2, n_embd=16, n_positions=32))
    rng = np.random.default_rng(4)
    tokens = [rng.integers(0, 50256, int(n)).tolist() for n in rng.integers(1, 20, 24)]
    data = TokenData(tokens, rng.integers(0, 2, 24))
    figures = iter([0.2, 0.7, 0.4, 0.6])
    rule = EpochRule("test", "a figure that peaks at epoch 2", lambda _evaluation: next(figures))
    losses: list[float] = []
    logged: list[str] = []
    result = train(
        model, data, data, TrainSettings(trainable="last-block", epochs=4, batch_size=4, lr=3e-3, seed=0),
        parse_trainable("last-block", 2), log=logged.append, keep=rule,
        on_epoch=lambda _epoch, m: losses.append(evaluate(m, data).loss),
    )  # fmt: skip
    assert (result.best_epoch, result.epoch_rule) == (2, "test")
    assert evaluate(model, data).loss == pytest.approx(losses[1], abs=1e-6)
    assert result.validation.loss == pytest.approx(losses[1], abs=1e-6)
    assert logged[0] == "kept epoch: the best by a figure that peaks at epoch 2, then the lower validation loss"
    assert ", test 70.00% (" in logged[2] and logged[2].endswith(" *") and not logged[4].endswith(" *")
