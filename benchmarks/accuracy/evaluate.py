"""One method on one split: fit, score, and the figures the README table shows.

The operating thresholds for the low-FPR columns are chosen on the validation scores and only then applied to
test, as a user would have to: choosing them on test would report a recall nobody could get."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from spamguard.metrics import binary_metrics, threshold_for_fpr
from spamguard.training.data import Example, Splits

FPR_TARGETS = (0.001, 0.005)


@dataclass
class Result:
    method: str
    protocol: str
    seed: int
    default: dict  # test metrics at the method's own default threshold
    at_fpr: dict[float, dict] = field(default_factory=dict)  # target -> threshold, test recall, test fpr
    train_seconds: float = 0.0
    messages_per_second: float = 0.0  # scoring speed on the test split
    test_labels: np.ndarray | None = None
    test_scores: np.ndarray | None = None


def operating_points(
    val_labels: np.ndarray, val_scores: np.ndarray, test_labels: np.ndarray, test_scores: np.ndarray
) -> dict[float, dict]:
    """For each FPR target: the threshold from validation and what it actually gives on test."""
    points = {}
    for target in FPR_TARGETS:
        threshold = threshold_for_fpr(val_labels, val_scores, target)
        m = binary_metrics(test_labels, test_scores, threshold)
        points[target] = {"threshold": threshold, "recall": m["recall"], "fpr": m["fpr"]}
    return points


def labels_of(examples: list[Example]) -> np.ndarray:
    return np.array([e.label for e in examples], dtype=np.int64)


def evaluate(method: object, splits: Splits, protocol: str, seed: int) -> list[Result]:
    """Fit once, score validation and test once; one `Result` per kind when the split holds both (protocol
    `"P4 mail"`, `"P4 sms"`: each kind's operating points chosen on its own validation part, as `spamguard
    train` chooses a threshold per kind), else one."""
    start = time.perf_counter()
    method.fit(splits.train, splits.validation)  # type: ignore[attr-defined]
    train_seconds = time.perf_counter() - start
    val_scores = np.asarray(method.score(splits.validation), dtype=np.float64)  # type: ignore[attr-defined]
    start = time.perf_counter()
    test_scores = np.asarray(method.score(splits.test), dtype=np.float64)  # type: ignore[attr-defined]
    score_seconds = time.perf_counter() - start
    val_labels, test_labels = labels_of(splits.validation), labels_of(splits.test)
    kinds = splits.kinds()
    groups = [(protocol, None)] if len(kinds) < 2 else [(f"{protocol} {kind}", kind) for kind in kinds]
    results = []
    for name, kind in groups:
        val = np.array([kind is None or e.kind == kind for e in splits.validation])
        test = np.array([kind is None or e.kind == kind for e in splits.test])
        results.append(
            Result(
                method=method.name,  # type: ignore[attr-defined]
                protocol=name,
                seed=seed,
                default=binary_metrics(test_labels[test], test_scores[test], method.default_threshold),  # type: ignore[attr-defined]
                at_fpr=operating_points(val_labels[val], val_scores[val], test_labels[test], test_scores[test]),
                train_seconds=train_seconds,
                messages_per_second=len(splits.test) / score_seconds if score_seconds > 0 else float("inf"),
                test_labels=test_labels[test],
                test_scores=test_scores[test],
            )
        )
    return results
