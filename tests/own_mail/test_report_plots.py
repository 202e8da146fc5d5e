from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from spamguard.metrics import binary_metrics
from spamguard.report import (
    PLOT_FILES,
    ReportError,
    logit,
    plot_score_histograms,
    precision_recall_points,
    write_evaluation_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scores(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Saturated scores as a trained filter gives them: most ham at ~1e-6, most spam at exactly 1.0."""
    rng = np.random.default_rng(seed)
    ham = 1 / (1 + np.exp(-rng.normal(-12, 3, 900)))
    spam = np.r_[np.ones(60), 1 / (1 + np.exp(-rng.normal(6, 4, 40)))]
    return np.r_[np.zeros(900, dtype=int), np.ones(100, dtype=int)], np.r_[ham, spam].astype(np.float32)


def test_evaluation_plots_are_written_as_png(tmp_path: Path) -> None:
    labels, scores = _scores()
    written = write_evaluation_plots(labels, scores, 0.97, tmp_path / "plots", unsure=(0.5, 0.99), title="tiny")
    assert set(written) == set(PLOT_FILES)
    for name, path in written.items():
        assert path == tmp_path / "plots" / PLOT_FILES[name]
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name


def test_histogram_of_one_class_still_draws(tmp_path: Path) -> None:
    path = plot_score_histograms([0, 0, 0], [0.0, 1e-9, 0.2], 0.5, tmp_path / "h.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_curves_need_both_classes(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"^ROC and precision-recall curves need ham and spam, got 0 ham and 2 spam$"):
        write_evaluation_plots([1, 1], [0.2, 0.9], 0.5, tmp_path)
    with pytest.raises(ReportError, match=r"^plots need one score per label"):
        write_evaluation_plots([0, 1], [0.2], 0.5, tmp_path)
    assert not any(tmp_path.iterdir())


def test_missing_matplotlib_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without matplotlib looks like
    with pytest.raises(ReportError) as info:
        write_evaluation_plots([0, 1], [0.2, 0.9], 0.5, tmp_path)
    assert str(info.value) == (
        "plots need matplotlib, which a mail host does not install: pip install 'spamguard[plot]'"
    )


def test_precision_recall_points_known_answer() -> None:
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.7, 0.1]
    recall, precision, thresholds = precision_recall_points(labels, scores)
    assert list(recall) == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert list(precision) == pytest.approx([1.0, 1.0, 0.5, 2 / 3, 0.5])
    for r, p, t in zip(recall[1:], precision[1:], thresholds[1:], strict=True):
        m = binary_metrics(labels, scores, t)
        assert (m["recall"], m["precision"]) == pytest.approx((r, p))


def test_logit_is_finite_at_zero_and_one() -> None:
    z = logit(np.array([0.0, 0.5, 1.0]))
    assert np.all(np.isfinite(z)) and z[1] == 0.0 and z[0] == pytest.approx(-z[2]) and 15 < z[2] < 17
