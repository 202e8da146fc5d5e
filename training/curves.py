"""Loss and accuracy per epoch as a PNG: over- or under-fitting is seen at a glance, not read off a table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from spamguard.training.recipe import EpochStats


def plot_curves(history: Sequence[EpochStats], out: Path, *, title: str = "", best_epoch: int | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: training runs on servers without a display
    import matplotlib.pyplot as plt

    epochs = [s.epoch for s in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [getattr(s, f"train_{key}") for s in history], "o-", label="train (mean over the epoch)")
        ax.plot(epochs, [getattr(s, f"val_{key}") for s in history], "s-", label="validation (end of epoch)")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept: epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
