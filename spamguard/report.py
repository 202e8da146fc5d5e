"""Evaluation plots: ROC and precision-recall curves with the chosen threshold marked, and the score histograms
of ham and spam. People judge a spam filter by looking at where the ham tail sits against the threshold; a
table of figures hides exactly that.

matplotlib is not a runtime dependency (a mail host installs no plotting), so it is imported only when a plot
is asked for, and its absence is one clear error naming the extra to install. Figures are drawn on
`matplotlib.figure.Figure` directly, without pyplot's global state, so plotting is safe in any process."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spamguard.errors import SpamguardError
from spamguard.metrics import binary_metrics, roc_points

PLOT_FILES = {"roc": "roc.png", "precision_recall": "precision_recall.png", "histogram": "score_histogram.png"}
# Scores are float32 probabilities: 1 - 1e-7 is about the largest below 1.0, so log-odds beyond +-16 carry no
# information and a score of exactly 0 or 1 is drawn at the edge instead of at infinity.
_EPS = 1e-7
_PROBABILITY_TICKS = (1e-6, 1e-4, 0.01, 0.5, 0.99, 0.9999, 1 - 1e-6)
_HAM_COLOUR, _SPAM_COLOUR, _MARK_COLOUR = "#1f77b4", "#d62728", "black"


class ReportError(SpamguardError):
    """A plot cannot be drawn (no matplotlib, or data that a curve cannot be drawn from)."""


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ReportError(
            "plots need matplotlib, which a mail host does not install: pip install 'spamguard[plot]'"
        ) from exc
    return Figure


def require_matplotlib() -> None:
    """Fail before the work whose plots were asked for, not after it."""
    _figure_class()


def _arrays(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1 or len(y) == 0:
        raise ReportError(f"plots need one score per label, got {y.shape} labels and {s.shape} scores")
    return y, s


def _require_both_classes(y: np.ndarray) -> None:
    n_spam = int(y.sum())
    if n_spam == 0 or n_spam == len(y):
        raise ReportError(
            f"ROC and precision-recall curves need ham and spam, got {len(y) - n_spam} ham and {n_spam} spam"
        )


def logit(scores: np.ndarray) -> np.ndarray:
    """Log-odds of P(spam), clipped at float32's resolution: the scale on which the scores near 0 and 1 that
    decide a spam filter's errors are told apart."""
    p = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def precision_recall_points(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, thresholds) at every distinct score, highest threshold first, from the shared ROC
    points; at recall 0 precision is taken as 1 (nothing flagged, nothing wrong)."""
    y, s = _arrays(labels, scores)
    fpr, tpr, thresholds = roc_points(y, s)
    n_spam, n_ham = int(y.sum()), len(y) - int(y.sum())
    tp, fp = tpr * n_spam, fpr * n_ham
    flagged = tp + fp
    precision = np.divide(tp, flagged, out=np.ones_like(tp), where=flagged > 0)
    return tpr, precision, thresholds


def _save(fig: Any, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    return out


def plot_roc(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    out: Path,
    *,
    title: str = "",
) -> Path:
    """ROC twice: on a linear axis, and with the false-positive rate on a log axis, where the region that
    matters for mail (FPR of 0.1% and below) is visible at all."""
    y, s = _arrays(labels, scores)
    _require_both_classes(y)
    fpr, tpr, _ = roc_points(y, s)
    at = binary_metrics(y, s, threshold)
    n_ham = len(y) - int(y.sum())
    fig = _figure_class()(figsize=(11, 4.6))
    for ax, log in zip(fig.subplots(1, 2), (False, True), strict=True):
        ax.plot(fpr, tpr, color=_SPAM_COLOUR, label="ROC")  # ties between ham and spam give a diagonal
        ax.plot(
            [at["fpr"]],
            [at["recall"]],
            "o",
            color=_MARK_COLOUR,
            label=f"threshold {threshold:.4g}: FPR {at['fpr']:.3g}, recall {at['recall']:.3g}",
        )
        if log:
            ax.set_xscale("symlog", linthresh=1 / n_ham)  # 0 stays drawable; one ham is the finest step
            ax.set_xlim(0, 1)
            ax.set_title(f"false-positive rate on a log axis ({n_ham} ham)")
        else:
            ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
            ax.set_title(title or "ROC")
        ax.set_xlabel("false-positive rate (ham called spam)")
        ax.set_ylabel("recall (spam caught)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out)


def plot_precision_recall(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    out: Path,
    *,
    title: str = "",
) -> Path:
    y, s = _arrays(labels, scores)
    _require_both_classes(y)
    recall, precision, _ = precision_recall_points(y, s)
    at = binary_metrics(y, s, threshold)
    fig = _figure_class()(figsize=(6, 4.6))
    ax = fig.subplots()
    ax.step(recall, precision, where="post", color=_SPAM_COLOUR, label="precision-recall")
    ax.plot(
        [at["recall"]],
        [at["precision"] if at["tp"] + at["fp"] else 1.0],
        "o",
        color=_MARK_COLOUR,
        label=f"threshold {threshold:.4g}: precision {at['precision']:.3g}, recall {at['recall']:.3g}",
    )
    ax.axhline(y.mean(), linestyle=":", color="grey", linewidth=0.8, label=f"spam share {y.mean():.3g}")
    ax.set_xlabel("recall (spam caught)")
    ax.set_ylabel("precision (flagged mail that is spam)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "precision-recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, out)


def plot_score_histograms(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    out: Path,
    *,
    unsure: tuple[float, float] | None = None,
    title: str = "",
) -> Path:
    """Ham and spam scores on a log-odds axis with counts on a log axis: on a plain probability axis nearly
    every message sits in the first or last bin, and the single ham near the threshold is invisible."""
    y, s = _arrays(labels, scores)
    z = logit(s)
    t = logit(np.array([threshold]))[0]
    edges = np.linspace(min(z.min(), t) - 0.5, max(z.max(), t) + 0.5, 61)
    fig = _figure_class()(figsize=(9, 4.6))
    ax = fig.subplots()
    for label, name, colour in ((0, "ham", _HAM_COLOUR), (1, "spam", _SPAM_COLOUR)):
        part = z[y == label]
        if len(part):
            ax.hist(part, bins=edges, color=colour, alpha=0.55, label=f"{name} ({len(part)})")
    if unsure is not None:
        low, high = logit(np.array(unsure))
        ax.axvspan(low, high, color="orange", alpha=0.15, label=f"unsure {unsure[0]:g}-{unsure[1]:g}")
    ax.axvline(t, color=_MARK_COLOUR, linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_yscale("log")
    ticks = [p for p in _PROBABILITY_TICKS if edges[0] <= logit(np.array([p]))[0] <= edges[-1]]
    ax.set_xticks(logit(np.array(ticks)), [f"{p:g}" for p in ticks])
    ax.set_xlabel("P(spam), on a log-odds axis")
    ax.set_ylabel("messages (log scale)")
    ax.set_title(title or "score histograms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def write_evaluation_plots(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    out_dir: Path,
    *,
    unsure: tuple[float, float] | None = None,
    title: str = "",
) -> dict[str, Path]:
    """The three plots of `spamguard eval`, written into `out_dir` under `PLOT_FILES`' names."""
    out_dir = Path(out_dir)
    return {
        "roc": plot_roc(labels, scores, threshold, out_dir / PLOT_FILES["roc"], title=title),
        "precision_recall": plot_precision_recall(
            labels, scores, threshold, out_dir / PLOT_FILES["precision_recall"], title=title
        ),
        "histogram": plot_score_histograms(
            labels, scores, threshold, out_dir / PLOT_FILES["histogram"], unsure=unsure, title=title
        ),
    }
