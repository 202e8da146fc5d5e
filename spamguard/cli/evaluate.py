"""`spamguard eval`: how a model does on a labelled set, counted by `spamguard.metrics` like every other report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from spamguard.datasets import HAM, SPAM, read_labelled
from spamguard.metrics import binary_metrics

_CHUNK = 64  # messages per progress step


@click.command("eval")
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(path_type=Path),
    help="An SMS TSV file (ham|spam<TAB>text per line) or a folder with ham/ and spam/ subfolders of raw mail.",
)
@click.option("--model", "-m", help="Model name or bundle path (default: $SPAMGUARD_MODEL, then the default model).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), help="Spam when P(spam) >= this (default: the model's).")
@click.option("--fp32", is_flag=True, help="Evaluate the full-precision model even when the bundle has an int8 one.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads (default: physical cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def evaluate(
    data: Path, model: str | None, threshold: float | None, fp32: bool, threads: int | None, as_json: bool
) -> None:
    """Score every message of a labelled set and print accuracy, precision, recall, F1 and the false-positive
    rate (ham called spam) at the model's threshold."""
    from spamguard.classifier import Classifier

    examples = read_labelled(data)
    clf = Classifier.load(model, precision="fp32" if fp32 else "auto", threads=threads)
    threshold = clf.bundle.threshold if threshold is None else threshold
    scores: list[float] = []
    start = time.perf_counter()
    with click.progressbar(length=len(examples), label="scoring", file=sys.stderr) as bar:
        for offset in range(0, len(examples), _CHUNK):
            chunk = examples[offset : offset + _CHUNK]
            scores.extend(clf.score_batch(e.message for e in chunk))
            bar.update(len(chunk))
    seconds = time.perf_counter() - start
    figures = binary_metrics([e.label for e in examples], scores, threshold)
    summary = {
        "model": clf.bundle.name,
        "precision_used": clf.precision,
        "data": str(data),
        "ham": sum(e.label == HAM for e in examples),
        "spam": sum(e.label == SPAM for e in examples),
        "seconds": round(seconds, 3),
        "messages_per_second": round(len(examples) / seconds, 1) if seconds > 0 else None,
        **figures,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    m = figures
    click.echo(
        f"model {clf.bundle.name} ({clf.precision}) on {data}: {m['n']} messages "
        f"({summary['ham']} ham, {summary['spam']} spam), threshold {threshold:.4f}"
    )
    click.echo(
        f"accuracy {m['accuracy']:.4f}  precision {m['precision']:.4f}  recall {m['recall']:.4f}  "
        f"f1 {m['f1']:.4f}  false-positive rate {m['fpr']:.4f}"
    )
    click.echo(f"confusion: tp {m['tp']}  fp {m['fp']}  tn {m['tn']}  fn {m['fn']}")
    click.echo(f"scored in {seconds:.1f} s ({summary['messages_per_second']} messages/s)")
