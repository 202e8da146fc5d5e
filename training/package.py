"""From a trained model to a model bundle: ONNX export, the parity proof, the int8 copy and its verdict agreement,
the test figures of both precisions, the threshold, and `write_bundle`.

Every figure here is computed on the exported ONNX files through onnxruntime, i.e. on what the runtime will run,
not on the PyTorch model they came from."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spamguard.bundle import Bundle, write_bundle
from spamguard.message_text import KINDS
from spamguard.metrics import metrics_by_kind
from spamguard.padding import pad_batch
from spamguard.thresholds import fallback
from spamguard.training.errors import ExportError
from spamguard.training.export import export_onnx, model_files
from spamguard.training.gpt2 import GPT2Classifier
from spamguard.training.parity import check_parity
from spamguard.training.quantize import quantize_int8

PARITY_LIMIT = 1e-4  # max |logit difference| PyTorch vs onnxruntime, fp32
AGREEMENT_TARGET = 0.995  # int8 verdicts equal to fp32's on the test split; below it the int8 copy is left out
PARITY_MESSAGES = 16

# (kind, its validation labels, their P(spam)) -> (threshold, how it was chosen for the manifest; None if fixed)
ThresholdRule = Callable[[str, np.ndarray, np.ndarray], tuple[float, dict[str, Any] | None]]


def fixed_threshold(threshold: float = 0.5) -> ThresholdRule:
    def rule(kind: str, labels: np.ndarray, scores: np.ndarray) -> tuple[float, dict[str, Any] | None]:
        return threshold, None

    return rule


@dataclass
class Split:
    """One labelled split as token ids, the form every ONNX figure is computed from, with each message's kind."""

    token_lists: list[list[int]]
    labels: np.ndarray
    kinds: np.ndarray  # MAIL or SMS per message

    def present(self) -> list[str]:
        return [kind for kind in KINDS if np.any(self.kinds == kind)]


@dataclass(frozen=True)
class KindThreshold:
    """The threshold and unsure band of one kind, as the manifest's `thresholds[kind]` records them."""

    threshold: float
    unsure: tuple[float, float] | None
    choice: dict[str, Any] | None  # the rule's record (`threshold_choice[kind]`); None for a fixed threshold

    def to_manifest(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "unsure": list(self.unsure) if self.unsure else None}


def choose_per_kind(rule: ThresholdRule, validation: Split, scores: np.ndarray) -> dict[str, KindThreshold]:
    """Each kind's threshold from its own validation messages' scores (`--max-fpr` holds on each kind)."""
    chosen = {}
    for kind in validation.present():
        mask = validation.kinds == kind
        threshold, choice = rule(kind, validation.labels[mask], scores[mask])
        band = (choice or {}).get("unsure")  # a rule that chose a band records it as {low, high, ...}
        chosen[kind] = KindThreshold(threshold, (band["low"], band["high"]) if band else None, choice)
    return chosen


def per_message(thresholds: dict[str, KindThreshold], kinds: np.ndarray) -> np.ndarray:
    """Each message's threshold, by its kind."""
    return np.array([thresholds[kind].threshold for kind in kinds], dtype=np.float64)


def onnx_scores(model_path: Path, token_lists: Sequence[Sequence[int]]) -> np.ndarray:
    """P(spam) of every message through onnxruntime exactly as `Classifier.score_tokens` computes it (same
    session options, length batches and softmax), so a threshold set between two of these scores separates
    the same two messages at run time."""
    import onnxruntime as ort

    from spamguard.classifier import length_batches, session_for_file, spam_probability

    session = session_for_file(ort, model_path, None, ["CPUExecutionProvider"])
    scores = np.empty(len(token_lists), dtype=np.float64)
    for batch in length_batches([len(t) for t in token_lists]):
        ids, lengths = pad_batch([token_lists[i] for i in batch])
        scores[batch] = spam_probability(session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0])
    return scores


def parity_batch(token_lists: Sequence[Sequence[int]], n: int = PARITY_MESSAGES) -> list[list[int]]:
    """Up to `n` messages spread over the length range, shortest and longest included: one padded batch where
    most rows carry padding, which is what the parity check must survive."""
    order = np.argsort([len(t) for t in token_lists], kind="stable")
    picks = np.unique(np.linspace(0, len(order) - 1, num=min(n, len(order))).round().astype(int))
    return [list(token_lists[order[i]]) for i in picks]


def _megabytes(onnx_file: Path) -> float:
    """Graph plus its external-data side file, where the export put the weights."""
    return sum(f.stat().st_size for f in model_files(onnx_file)) / 1e6


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer logs advice ("consider pre-processing") through the root logger on every run;
    the user's terminal is for spamguard's own progress."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def served_thresholds(
    rule: ThresholdRule,
    validation: Split,
    val_scores: dict[str, np.ndarray],
    test: Split,
    test_scores: dict[str, np.ndarray],
) -> tuple[str, dict[str, KindThreshold], float]:
    """(precision served, each kind's threshold, int8 agreement) from each precision's validation and test
    scores. The rule sees int8's validation scores, the model `precision=auto` serves (its rounding moves
    scores, and a threshold one step above the highest allowed fp32 ham lets that ham through if int8 rounds it
    up); if int8's test verdicts at those thresholds then disagree with fp32's too often, int8 is left out of
    the bundle and the rule runs again on fp32's scores, which are then what is served."""
    thresholds = choose_per_kind(rule, validation, val_scores["int8"])
    per_test = per_message(thresholds, test.kinds)
    agreement = float(np.mean((test_scores["fp32"] >= per_test) == (test_scores["int8"] >= per_test)))
    if agreement >= AGREEMENT_TARGET:
        return "int8", thresholds, agreement
    return "fp32", choose_per_kind(rule, validation, val_scores["fp32"]), agreement


@dataclass
class Exported:
    fp32: Path
    int8: Path | None  # None when its verdicts disagree with fp32 too often
    thresholds: dict[str, KindThreshold]  # per kind present in the data
    parity: float
    parity_lengths: list[int]
    agreement: float
    metrics: dict[str, Any]  # test, test_int8, validation (overall), int8_agreement, by_kind
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def fallback(self) -> tuple[float, tuple[float, float] | None]:
        """The manifest's one `threshold` and `unsure` (`spamguard.thresholds.fallback`)."""
        return fallback({kind: (t.threshold, t.unsure) for kind, t in self.thresholds.items()})


def export_and_check(
    model: GPT2Classifier,
    work: Path,
    validation: Split,
    test: Split,
    *,
    threshold_rule: ThresholdRule | None = None,
    log: Callable[[str], None] = print,
) -> Exported:
    """Export fp32 ONNX, prove parity on real test messages, quantize to int8, choose each kind's threshold on
    its validation scores of the precision the bundle will serve (`served_thresholds`), and measure both
    precisions on the whole test split, per kind and overall, each message at its kind's threshold."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    fp32 = work / "model.onnx"
    export_onnx(model, fp32)
    batch = parity_batch(test.token_lists)
    parity = check_parity(model, fp32, batch)
    lengths = sorted(len(t) for t in batch)
    seconds["export"] = time.perf_counter() - t0
    log(
        f"export: {fp32.name} ({_megabytes(fp32):.1f} MB); parity with PyTorch on {len(batch)} test "
        f"messages of {lengths[0]}-{lengths[-1]} tokens in one padded batch: max |Δlogit| = {parity:.2e}"
    )
    if not parity <= PARITY_LIMIT:
        raise ExportError(f"the ONNX export differs from PyTorch by {parity:.2e} > {PARITY_LIMIT:.0e} in a logit")

    t0 = time.perf_counter()
    val_scores = {"fp32": onnx_scores(fp32, validation.token_lists)}
    test_scores = {"fp32": onnx_scores(fp32, test.token_lists)}
    seconds["score_fp32"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with _quiet_root_logger():
        int8 = quantize_int8(fp32, work / "model.int8.onnx")
    val_scores["int8"] = onnx_scores(int8, validation.token_lists)
    test_scores["int8"] = onnx_scores(int8, test.token_lists)
    seconds["int8"] = time.perf_counter() - t0
    served, thresholds, agreement = served_thresholds(
        threshold_rule or fixed_threshold(), validation, val_scores, test, test_scores
    )
    verdict = "meets" if agreement >= AGREEMENT_TARGET else "misses"
    log(
        f"int8: {_megabytes(int8):.1f} MB; verdicts agree with fp32 on {agreement:.2%} of the "
        f"{len(test.token_lists)} test messages ({verdict} the {AGREEMENT_TARGET:.1%} target)"
    )
    if served == "fp32":
        log("int8: left out of the bundle; the runtime will use fp32, and the thresholds were chosen on its scores")
    by_threshold = {kind: t.threshold for kind, t in thresholds.items()}
    figures = {
        "test": metrics_by_kind(test.labels, test_scores["fp32"], test.kinds, by_threshold),
        "test_int8": metrics_by_kind(test.labels, test_scores["int8"], test.kinds, by_threshold),
        "validation": metrics_by_kind(validation.labels, val_scores[served], validation.kinds, by_threshold),
    }
    metrics: dict[str, Any] = {name: f["overall"] for name, f in figures.items()}
    metrics["int8_agreement"] = agreement
    metrics["by_kind"] = {kind: {name: f[kind] for name, f in figures.items()} for kind in thresholds}
    return Exported(
        fp32=fp32,
        int8=int8 if served == "int8" else None,
        thresholds=thresholds,
        parity=parity,
        parity_lengths=lengths,
        agreement=agreement,
        metrics=metrics,
        seconds=seconds,
    )


def summary_lines(exported: Exported) -> list[str]:
    """`spamguard train`'s test figures: per kind at its threshold, then overall, for fp32 and int8."""
    lines = []
    for precision, key in (("fp32", "test"), ("int8", "test_int8")):
        for kind, t in exported.thresholds.items():
            m = exported.metrics["by_kind"][kind][key]
            lines.append(f"test {precision} {kind} (threshold {t.threshold:.3g}): {format_metrics(m)}")
        if len(exported.thresholds) > 1:
            lines.append(f"test {precision} overall: {format_metrics(exported.metrics[key])}")
    return lines


def format_metrics(m: dict[str, Any]) -> str:
    return (
        f"accuracy {m['accuracy']:.2%}, precision {m['precision']:.2%}, recall {m['recall']:.2%}, "
        f"F1 {m['f1']:.2%}, FPR {m['fpr']:.2%} | confusion: tp {m['tp']} fp {m['fp']} tn {m['tn']} fn {m['fn']}"
    )


def package(
    out: Path,
    exported: Exported,
    *,
    encoder_json: Path,
    vocab_bpe: Path,
    manifest: dict[str, Any],
    extra_files: dict[str, Path] | None = None,
) -> Bundle:
    """The bundle: ONNX files, tokenizer, extras (curves, checkpoint) and the manifest with every figure."""
    models = {"fp32": exported.fp32} | ({"int8": exported.int8} if exported.int8 else {})
    threshold, unsure = exported.fallback
    full = {
        **manifest,
        "threshold": threshold,
        "unsure": list(unsure) if unsure else None,
        "thresholds": {kind: t.to_manifest() for kind, t in exported.thresholds.items()},
        "metrics": exported.metrics,
        "export": {
            "parity_max_abs_logit_diff": exported.parity,
            "parity_lengths": exported.parity_lengths,
            "int8_included": exported.int8 is not None,
        },
    }
    choices = {kind: t.choice for kind, t in exported.thresholds.items() if t.choice is not None}
    if choices:
        full["threshold_choice"] = choices
    return write_bundle(
        out, models=models, encoder_json=encoder_json, vocab_bpe=vocab_bpe, manifest=full, extra_files=extra_files
    )
