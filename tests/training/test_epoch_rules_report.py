"""`benchmarks/epoch_rules.py` scores its "recall" rule with training's own definition, so the epoch it says a rule
keeps is the one `spamguard train` keeps; a run whose kept epoch disagrees with its recorded rule is a warning,
and an unknown rule is one error line. A made-up split and run: no data set is read."""

from __future__ import annotations

from typing import Any

import numpy as np
from epoch_rules import RULES, malformed, report, validation_figures

from spamguard.datasets import Example
from spamguard.thresholds import ThresholdOptions, threshold_rule
from spamguard.training.data import Splits
from spamguard.training.epoch_choice import epoch_rule, kept_epoch
from spamguard.training.recipe import Evaluation

MAX_FPR = 0.0
# validation in split order, kinds interleaved as a real split's are: (kind, label); 2 mail spam, 4 SMS spam
VALIDATION = [("mail", 0), ("sms", 0), ("mail", 1), ("sms", 1), ("mail", 0), ("sms", 1), ("sms", 1), ("sms", 0)]
VALIDATION += [("mail", 0), ("sms", 0), ("sms", 1), ("mail", 1), ("sms", 0)]
# each epoch's P(spam) of the spam (kinds: mail, sms, sms, sms, sms, mail), every ham 0.1. At each kind's threshold
# epoch 1 catches 1 of 2 mail and 1 of 4 SMS (mean recall 0.375), epoch 2 0 and 4 (0.5; pooled, the most: 4 of 6),
# epoch 3 2 and 1 (0.625): only the mean over the kinds keeps epoch 3, and the loss would keep epoch 1
SPAM_SCORES = {
    1: [0.9, 0.9, 0.05, 0.05, 0.05, 0.05],
    2: [0.05, 0.9, 0.9, 0.9, 0.9, 0.05],
    3: [0.9, 0.9, 0.05, 0.05, 0.05, 0.9],
}
LOSSES = {1: 0.20, 2: 0.25, 3: 0.30}


def splits() -> Splits:
    validation = [Example(f"v{i}", label, kind=kind) for i, (kind, label) in enumerate(VALIDATION)]
    test = [Example(f"t{i}", label, kind=kind) for i, (kind, label) in enumerate(VALIDATION)]
    return Splits([], validation, test)


def scores(epoch: int) -> list[float]:
    spam = iter(SPAM_SCORES[epoch])
    return [next(spam) if label else 0.1 for _kind, label in VALIDATION]


def run(best_epoch: int, rule: str = "recall") -> dict[str, Any]:
    figures = {"threshold": 0.5, "recall": 0.5, "fpr": 0.0, "recall_at_val_fpr": 0.5, "fpr_at_val_fpr": 0.0}
    return {
        "set": "both",
        "seed": 1,
        "epochs": [{"epoch": e, "validation": scores(e), "test": scores(e)} for e in (1, 2, 3)],
        "history": [{"val_loss": LOSSES[e], "val_accuracy": 0.9} for e in (1, 2, 3)],
        "best_epoch": best_epoch,
        "epoch_rule": rule,
        "tested": {"mail": figures, "sms": figures},
        "seconds": 1.0,
        "scores": {"validation": scores(3), "test": scores(3)},
    }


def test_the_recall_rule_keeps_the_epoch_train_keeps() -> None:
    labels = np.array([label for _kind, label in VALIDATION])
    kinds = np.array([kind for kind, _label in VALIDATION])
    trains = epoch_rule(threshold_rule(ThresholdOptions(max_fpr=MAX_FPR), log=lambda _line: None), labels, kinds)
    keys = [trains.key(Evaluation(LOSSES[e], labels, np.array(scores(e)))) for e in (1, 2, 3)]
    assert trains.name == "recall" and kept_epoch(keys) == 3
    assert RULES["recall"](run(3), validation_figures(run(3), splits(), MAX_FPR)) == 3


def test_a_run_kept_by_another_epoch_than_its_rule_is_a_warning() -> None:
    table, _checks = report([run(1)], splits(), MAX_FPR)
    assert table[0] == "warning: both seed 1: the recall rule keeps epoch 3 here, the run kept 1 by it"
    table, _checks = report([run(3)], splits(), MAX_FPR)
    assert not table[0].startswith("warning")


def test_a_run_cut_short_is_one_line() -> None:
    """What cross_kind.py --merge refuses too (`cross_kind.run_problem`), and what only this report reads."""
    assert malformed({k: v for k, v in run(3).items() if k != "tested"}, splits()) == (
        "both seed 1: no test figures of the bundle"
    )
    assert malformed(run(3) | {"scores": {"validation": ["0.5"], "test": []}}, splits()) == (
        "both seed 1: no saved validation and test scores"
    )
    no_accuracy = run(3) | {"history": [{"val_loss": 0.2}] * 3}
    assert malformed(no_accuracy, splits()) == "both seed 1: a history entry has no validation loss and accuracy"


def test_an_unknown_rule_is_one_line() -> None:
    assert malformed(run(3), splits()) is None
    assert malformed(run(3, rule="median"), splits()) == "both seed 1: kept its epoch by an unknown rule 'median'"
    unhashable = run(3) | {"epoch_rule": ["recall"]}
    assert malformed(unhashable, splits()) == "both seed 1: kept its epoch by an unknown rule ['recall']"
