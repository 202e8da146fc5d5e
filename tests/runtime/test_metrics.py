from __future__ import annotations

import numpy as np
import pytest

from spamguard.metrics import binary_metrics, roc_points, threshold_for_fpr


def test_binary_metrics_on_known_counts() -> None:
    labels = [1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3]
    m = binary_metrics(labels, scores, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 4)


def test_threshold_for_fpr_known_answer() -> None:
    ham = np.linspace(0.0, 0.999, 1000)  # 1000 ham, highest 0.999, 0.998, ...
    spam = np.array([0.9985, 0.9995, 0.5, 0.99])
    labels = np.r_[np.zeros(1000), np.ones(4)]
    scores = np.r_[ham, spam]
    t0 = threshold_for_fpr(labels, scores, 0.0)  # no ham allowed: just above 0.999
    assert 0.999 < t0 <= 0.9995
    assert binary_metrics(labels, scores, t0)["fp"] == 0 and binary_metrics(labels, scores, t0)["tp"] == 1
    t1 = threshold_for_fpr(labels, scores, 0.001)  # one ham allowed: just above 0.998
    m = binary_metrics(labels, scores, t1)
    assert m["fp"] == 1 and m["tp"] == 2 and 0.998 < t1 < 0.999


def test_threshold_counts_ties_as_false_positives() -> None:
    labels = [0, 0, 1]
    scores = [1.0, 1.0, 1.0]
    t = threshold_for_fpr(labels, scores, 0.0)
    assert binary_metrics(labels, scores, t)["fp"] == 0


def test_roc_points_end_at_one_one() -> None:
    fpr, tpr, _ = roc_points([0, 1, 0, 1], [0.1, 0.9, 0.4, 0.35])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
