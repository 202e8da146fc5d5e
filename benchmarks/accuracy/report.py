"""The benchmark's outputs: a Markdown table (pasted into the README as is) and ROC curves per protocol."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from spamguard.metrics import roc_points

from accuracy.evaluate import FPR_TARGETS, Result


def _stat(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """Mean, and ± standard deviation when there are repeats (3 seeds for spamguard)."""
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def markdown_table(results: list[Result], descriptions: dict[str, str]) -> str:
    groups: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        groups[(r.protocol, r.method)].append(r)
    header = (
        "| method | runs | accuracy % | precision % | recall % | F1 % | FPR % | "
        + " | ".join(f"recall % at val-FPR ≤ {t * 100:g}% (test FPR %)" for t in FPR_TARGETS)
        + " | train s | scored msg/s |"
    )
    rule = "|" + "---|" * (header.count("|") - 1)
    lines = []
    for protocol in sorted({p for p, _ in groups}):
        n = groups[next(k for k in groups if k[0] == protocol)][0]
        test_size = len(n.test_labels) if n.test_labels is not None else 0
        base, _, kind = protocol.partition(" ")  # "P4 mail": the mail part of protocol P4
        about = descriptions.get(base, "") + (f"; the {kind} part" if kind else "")
        lines += ["", f"**{protocol}**: {about} (test split: {test_size} messages)", ""]
        lines += [header, rule]
        for (p, method), runs in groups.items():
            if p != protocol:
                continue
            cells = [method, str(len(runs))]
            cells += [_stat([r.default[k] for r in runs]) for k in ("accuracy", "precision", "recall", "f1", "fpr")]
            for t in FPR_TARGETS:
                recall = _stat([r.at_fpr[t]["recall"] for r in runs])
                fpr = _stat([r.at_fpr[t]["fpr"] for r in runs], digits=2)
                cells.append(f"{recall} ({fpr})")
            cells.append(_stat([r.train_seconds for r in runs], scale=1.0))
            cells.append(_stat([r.messages_per_second for r in runs], scale=1.0, digits=0))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip("\n") + "\n"


def roc_figure(results: list[Result], out: Path) -> Path:
    """One panel per protocol, FPR on a log axis: the low-FPR corner is where spam filters are judged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = sorted({r.protocol for r in results})
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 4.5), squeeze=False)
    for ax, protocol in zip(axes[0], protocols, strict=True):
        seen = set()
        for r in results:
            if r.protocol != protocol or r.method in seen:
                continue
            seen.add(r.method)  # the first seed of a repeated method stands for it
            fpr, tpr, _ = roc_points(r.test_labels, r.test_scores)
            n_ham = int((r.test_labels == 0).sum())
            ax.step(fpr.clip(min=0.5 / n_ham), tpr, where="post", label=r.method)
        ax.set_xscale("log")
        ax.set_xlabel("false-positive rate (ham called spam), log scale")
        ax.set_ylabel("spam recall")
        ax.set_title(protocol)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
