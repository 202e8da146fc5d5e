"""Classification figures and threshold choice, in numpy only, shared by training, `spamguard eval` and the
accuracy benchmark so every report counts the same way. Positive class = spam; a false positive is ham
called spam, the error that loses real mail."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def _arrays(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-d and of equal length, got {y.shape} and {s.shape}")
    return y, s


def _from_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, float | int]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    n = tp + fp + tn + fn
    return {
        "n": n,
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def binary_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> dict[str, float | int]:
    """Accuracy, precision, recall, F1 and false-positive rate of `score >= threshold` means spam, with the
    confusion counts. Undefined ratios (no predicted spam, no ham) are reported as 0."""
    y, s = _arrays(labels, scores)
    predicted = s >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    tn = int(np.sum(~predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    return {**_from_counts(tp, fp, tn, fn), "threshold": float(threshold)}


def pooled_metrics(groups: Iterable[Mapping[str, float | int]]) -> dict[str, float | int]:
    """The figures of several groups together, each scored at its own threshold (the kinds of a model with a
    threshold per kind): the confusion counts summed, the ratios computed from the sums."""
    groups = list(groups)
    tp, fp, tn, fn = (sum(int(g[key]) for g in groups) for key in ("tp", "fp", "tn", "fn"))
    return _from_counts(tp, fp, tn, fn)


def metrics_by_kind(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    kinds: Sequence[str] | np.ndarray,
    thresholds: Mapping[str, float],
) -> dict[str, dict[str, float | int]]:
    """{kind: figures at that kind's threshold} for the kinds present, in `thresholds` order, then "overall"
    (`pooled_metrics` of them): what a runtime that applies each kind's threshold gets."""
    y, s = _arrays(labels, scores)
    k = np.asarray(kinds)
    if k.shape != y.shape:
        raise ValueError(f"kinds must match the labels, got {k.shape} and {y.shape}")
    result = {
        kind: binary_metrics(y[k == kind], s[k == kind], t) for kind, t in thresholds.items() if np.any(k == kind)
    }
    unknown = set(k.tolist()) - set(thresholds)
    if unknown:
        raise ValueError(f"no threshold for the kind(s) {', '.join(sorted(unknown))}")
    return {**result, "overall": pooled_metrics(result.values())}


def threshold_for_fpr(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    max_fpr: float,
    *,
    new_ham: bool = False,
) -> float:
    """The lowest threshold whose false-positive rate on these (validation) scores is at most `max_fpr`.

    With n ham messages, at most k = floor(max_fpr * n) of them may score at or above the threshold, so it sits
    just above the (k+1)-th highest ham score. Lowest, because among the thresholds that meet the FPR target it
    catches the most spam. Ties are honoured: a ham score equal to the threshold counts as a false positive.

    `new_ham=True` asks the rate to hold on ham the model has not seen, which is what a user of `--max-fpr`
    wants: a new ham message is as likely to rank anywhere among the n validation ham, so with k of them above
    the threshold it lands there with probability at most (k+1)/(n+1) (the split-conformal bound), and k is the
    largest with (k+1)/(n+1) <= max_fpr. The validation FPR alone is optimistic where ham is scarce: with 123
    ham and a 1% target it allows one false positive, and the next ham then has a 1.6% chance to be one. When no
    k meets the bound (n + 1 < 1 / max_fpr), the threshold sits above every ham score, the strictest that
    validation can justify; `expected_new_fpr` gives the figure then promised."""
    if not 0.0 <= max_fpr < 1.0:
        raise ValueError(f"max_fpr must be in [0, 1), got {max_fpr}")
    y, s = _arrays(labels, scores)
    ham = np.sort(s[y == 0])[::-1]
    if len(ham) == 0:
        raise ValueError("cannot choose a threshold by false-positive rate without ham examples")
    if new_ham:
        k = max(int(np.floor(max_fpr * (len(ham) + 1) + 1e-9)) - 1, 0)
    else:
        k = int(np.floor(max_fpr * len(ham) + 1e-9))
    if k >= len(ham):
        return float(s.min())
    return float(np.nextafter(ham[k], np.inf))


def expected_new_fpr(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> float:
    """The split-conformal bound on the false-positive rate for ham the model has not seen: (k+1)/(n+1), with k
    of the n validation ham at or above `threshold` (see `threshold_for_fpr`)."""
    y, s = _arrays(labels, scores)
    ham = s[y == 0]
    return (int(np.sum(ham >= threshold)) + 1) / (len(ham) + 1)


def roc_points(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest threshold first, starting at (0, 0)."""
    y, s = _arrays(labels, scores)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, s[distinct]]
