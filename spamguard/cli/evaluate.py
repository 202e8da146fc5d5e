"""`spamguard eval`: how a model does on a labelled set, counted by `spamguard.metrics` like every other report,
read through the same mail readers as `spamguard train`, with plots people would rather look at than read."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from spamguard.datasets import HAM
from spamguard.errors import DataError
from spamguard.mail_sources import format_reports, read_labelled
from spamguard.message_text import KINDS
from spamguard.metrics import metrics_by_kind

_CHUNK = 64  # messages per progress step
SUMMARY_FILES = ("summary.txt", "summary.json")


def _figures(m: dict[str, Any]) -> str:
    return (
        f"accuracy {m['accuracy']:.4f}  precision {m['precision']:.4f}  recall {m['recall']:.4f}  "
        f"f1 {m['f1']:.4f}  false-positive rate {m['fpr']:.4f}  "
        f"(tp {m['tp']}  fp {m['fp']}  tn {m['tn']}  fn {m['fn']})"
    )


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    """The header, a line per kind at its threshold, the overall line when both kinds are there, the speed."""
    m = summary
    lines = [
        f"model {m['model']} ({m['precision_used']}) on {m['data']}: {m['n']} messages "
        f"({m['ham']} ham, {m['spam']} spam)"
    ]
    for kind, k in m["by_kind"].items():
        lines.append(
            f"{kind}: {k['n']} messages ({k['tn'] + k['fp']} ham, {k['tp'] + k['fn']} spam), threshold "
            f"{k['threshold']:.4f}: {_figures(k)}"
        )
    if len(m["by_kind"]) > 1:
        lines.append(f"overall (each kind at its threshold): {_figures(m)}")
    lines.append(f"scored in {m['seconds']:.1f} s ({m['messages_per_second']} messages/s)")
    return lines


def _describe(data: Path | None, ham: tuple[Path, ...], spam: tuple[Path, ...]) -> str:
    parts = [str(data)] if data is not None else []
    parts += [f"ham {p}" for p in ham] + [f"spam {p}" for p in spam]
    return ", ".join(parts)


@click.command("eval")
@click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path),
    help="An SMS TSV file (ham|spam<TAB>text per line), or a folder holding ham/ and spam/ (each a Maildir, an "
    "mbox or a folder of messages).",
)
@click.option(
    "--ham", multiple=True, type=click.Path(path_type=Path), help="Ham: a Maildir, an mbox or a folder (repeatable)."
)
@click.option(
    "--spam", multiple=True, type=click.Path(path_type=Path), help="Spam: a Maildir, an mbox or a folder (repeatable)."
)
@click.option("--model", "-m", help="Model name or bundle path (default: $SPAMGUARD_MODEL, then the default model).")
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    help="Spam when P(spam) >= this, for both kinds (default: the model's threshold of each message's kind).",
)
@click.option("--fp32", is_flag=True, help="Evaluate the full-precision model even when the bundle has an int8 one.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads (default: physical cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option(
    "--plots",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write ROC, precision-recall and score-histogram PNGs into this folder (needs spamguard[plot]).",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write summary.txt, summary.json and the three plots into this folder (needs spamguard[plot]).",
)
def evaluate(
    data: Path | None,
    ham: tuple[Path, ...],
    spam: tuple[Path, ...],
    model: str | None,
    threshold: float | None,
    fp32: bool,
    threads: int | None,
    as_json: bool,
    plots: Path | None,
    report: Path | None,
) -> None:
    """Score every message of a labelled set and print accuracy, precision, recall, F1 and the false-positive
    rate (ham called spam), a line per kind (mail, sms) at the model's threshold for that kind, then overall.
    Messages are read as `spamguard train` reads them (repeated texts counted once), except that in a folder
    without mail a file of short text is read as one SMS; the per-source counts go to stderr."""
    from spamguard.classifier import Classifier
    from spamguard.report import require_matplotlib, write_evaluation_plots

    if data is None and not ham and not spam:
        raise click.UsageError("give --data PATH, or --ham PATH and --spam PATH")
    if plots is not None or report is not None:
        require_matplotlib()
    examples, reports = read_labelled(data=data, ham=ham, spam=spam, sms_files=True)
    click.echo(format_reports(reports), err=True)
    n_ham = sum(e.label == HAM for e in examples)
    n_spam = len(examples) - n_ham
    if not examples:
        raise DataError(f"no messages to evaluate in {_describe(data, ham, spam)}")
    if (plots is not None or report is not None) and not (n_ham and n_spam):
        raise DataError(f"plots need ham and spam, got {n_ham} ham and {n_spam} spam")
    clf = Classifier.load(model, precision="fp32" if fp32 else "auto", threads=threads)
    kinds = [e.kind for e in examples]
    present = [kind for kind in KINDS if kind in kinds]
    thresholds = {kind: clf.bundle.threshold_for(kind) if threshold is None else threshold for kind in present}
    scores: list[float] = []
    start = time.perf_counter()
    with click.progressbar(length=len(examples), label="scoring", file=sys.stderr) as bar:
        for offset in range(0, len(examples), _CHUNK):
            chunk = examples[offset : offset + _CHUNK]
            scores.extend(clf.score_texts(e.text for e in chunk))
            bar.update(len(chunk))
    seconds = time.perf_counter() - start
    labels = [e.label for e in examples]
    figures = metrics_by_kind(labels, scores, kinds, thresholds)
    summary: dict[str, Any] = {
        "model": clf.bundle.name,
        "precision_used": clf.precision,
        "data": _describe(data, ham, spam),
        "ham": n_ham,
        "spam": n_spam,
        "seconds": round(seconds, 3),
        "messages_per_second": round(len(examples) / seconds, 1) if seconds > 0 else None,
        **figures["overall"],
        "by_kind": {kind: figures[kind] for kind in present},
        "sources": [r.to_dict() for r in reports],
    }
    lines = _summary_lines(summary)
    # the plots draw one threshold: the kind's when the set holds one kind, else the model's fallback
    plot_kind = present[0] if len(present) == 1 else None
    plot_threshold = thresholds[plot_kind] if plot_kind else clf.bundle.threshold if threshold is None else threshold
    plot_unsure = clf.bundle.unsure_for(plot_kind) if plot_kind else clf.bundle.unsure
    written: list[Path] = []
    title = f"{clf.bundle.name} on {len(examples)} messages"
    for folder in (plots, report):
        if folder is not None:
            found = write_evaluation_plots(labels, scores, plot_threshold, folder, unsure=plot_unsure, title=title)
            written += found.values()
    if report is not None:
        (report / SUMMARY_FILES[0]).write_text("\n".join(lines) + "\n", encoding="utf-8")
        (report / SUMMARY_FILES[1]).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        written += [report / name for name in SUMMARY_FILES]
    if as_json:
        click.echo(json.dumps(summary | ({"files": [str(p) for p in written]} if written else {})))
        return
    for line in lines:
        click.echo(line)
    if written:
        click.echo("written: " + ", ".join(str(p) for p in written))
