"""`spamguard distill`: a small GPT-2 (the student) trained to say what a bundle's model (the teacher) says, and
put into the same bundle as the first stage of a cascade (`spamguard.cascade`, docs/cascade.md).

The student learns from the teacher's P(spam), computed by the runtime from the bundle's own ONNX model in the
precision it serves (soft targets at a temperature, as in Hinton et al.'s distillation), and from the true
labels, over the training part of the teacher's own split: the data and seed its manifest records, checked
against the split's recorded sha256 (or its counts, for older bundles), so the teacher's validation and test
messages stay unseen. Unlabeled mail (`--unlabeled`, e.g. a Maildir) adds soft targets alone: the teacher
labels it, no person needed; anything whose text is in the validation or test part is left out.

The student reads exactly what the teacher reads (the bundle's tokenizer, `max_tokens` and text version: the
runtime tokenizes a message once for both). It is exported like any model (fp32 ONNX with its parity proof,
the int8 copy with its verdict agreement), its bands are chosen per kind on validation (`choose_band`), the
figures of the cascade against the teacher are measured on validation and test, and all of it is written as a
new version of the bundle (`bundle.rewrite_bundle`: one atomic exchange; the old version stays on failure)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spamguard.bundle import Band, Bundle, KindThreshold, load_bundle, rewrite_bundle
from spamguard.cascade import AGREEMENT_TARGET, choose_band
from spamguard.classifier import Classifier
from spamguard.datasets import Example
from spamguard.errors import DataError
from spamguard.message_text import KINDS
from spamguard.metrics import pooled_metrics
from spamguard.padding import pad_batch
from spamguard.progress import progress as progress_bar
from spamguard.training.data import Splits
from spamguard.training.defaults import STUDENT_LR_SCHEDULE, STUDENT_MAX_GRAD_NORM
from spamguard.training.errors import ExportError, TrainingError
from spamguard.training.export import export_onnx
from spamguard.training.gpt2 import GPT2Classifier, GPTConfig
from spamguard.training.package import PARITY_LIMIT, onnx_scores, parity_batch
from spamguard.training.parity import check_parity
from spamguard.training.quantize import quantize_int8
from spamguard.training.recipe import Steps, TrainSettings, check_schedule, epoch_order

STUDENT_FP32, STUDENT_INT8 = "student.onnx", "student.int8.onnx"
_LOGIT_CLIP = 1e-15  # P(spam) of exactly 0 or 1 (a float64 softmax saturates past |logit gap| ~37) -> gap ~±34.5


@dataclass(frozen=True)
class StudentSettings:
    n_layer: int = 2  # blocks; docs/cascade.md has the measurements behind the defaults
    n_head: int = 2
    n_embd: int = 128
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.1
    lr_schedule: str = STUDENT_LR_SCHEDULE  # training.recipe.lr_factor; docs/cascade.md measured both
    max_grad_norm: float | None = STUDENT_MAX_GRAD_NORM  # clip the gradients' global norm to this; None: no clipping
    temperature: float = 2.0  # of the soft targets (and the student's softened logits)
    alpha: float = 0.7  # share of the soft (teacher) loss for labelled messages; the rest is the true labels'
    seed: int = 123  # the student's initialisation and data order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DistillReport:
    bundle: Path
    cascade: dict[str, Any]  # the manifest's `cascade` record
    seconds: dict[str, float] = field(default_factory=dict)


# --- the teacher's split -------------------------------------------------------------------------------------------


def split_seed(bundle: Bundle) -> int:
    """The seed the teacher's split was made with, as its manifest records it."""
    seed = (bundle.manifest.get("training") or {}).get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"{bundle.path} records no training seed: distill needs a bundle made by spamguard train")
    return seed


def check_split(bundle: Bundle, splits: Splits) -> None:
    """Refuse a split other than the teacher's: trained on its validation or test messages, the student would
    make the cascade's figures on them meaningless. The split's sha256 per part decides where the manifest
    records it; older bundles record only the counts per kind, label and part."""
    training = bundle.manifest.get("training") or {}
    recorded, counted = training.get("split_sha256"), training.get("split_by_kind")
    how = "give distill the data spamguard train had (--data, --ham, --spam, --corpus; none: the default data)"
    if isinstance(recorded, dict):
        if splits.fingerprint() != recorded:
            raise DataError(f"the data given is not what {bundle.path.name} was trained on (its split differs): {how}")
    elif isinstance(counted, dict):
        if splits.counts_by_kind() != counted:
            raise DataError(
                f"the data given is not what {bundle.path.name} was trained on (split counts differ): {how}"
            )
    else:
        raise DataError(f"{bundle.path} records no split: distill needs a bundle made by spamguard train")


def unlabeled_examples(found: Sequence[Example], splits: Splits) -> tuple[list[Example], int]:
    """The unlabeled messages to learn from, and how many were left out: every text of the validation and test
    parts (they must stay unseen), texts already in the training part (they are there with their label), and
    repeats."""
    held_out = {e.text for e in (*splits.validation, *splits.test)}
    seen = {e.text for e in splits.train}
    kept, dropped = [], 0
    for example in found:
        if example.text in held_out or example.text in seen:
            dropped += 1
            continue
        seen.add(example.text)
        kept.append(example)
    return kept, dropped


# --- training ------------------------------------------------------------------------------------------------------


def soft_targets(p: Sequence[float] | np.ndarray, temperature: float) -> np.ndarray:
    """The teacher's P(spam) at a temperature: its logit gap (recovered from P, which the runtime gives)
    divided by T, through the sigmoid. T > 1 keeps the teacher's "how sure" in the targets that a P of 0.9999
    would otherwise round away."""
    p = np.clip(np.asarray(p, dtype=np.float64), _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    gap = np.log(p) - np.log1p(-p)
    return (1.0 / (1.0 + np.exp(-gap / temperature))).astype(np.float32)


@dataclass
class StudentData:
    """What the student trains on: token ids; soft targets; the true label and its share of the loss (0 for
    unlabeled messages); a loss weight per message (the teacher's class weights per kind and label)."""

    token_lists: list[list[int]]
    soft: np.ndarray  # (N,) teacher P(spam) at the temperature
    labels: np.ndarray  # (N,) int64; anything for unlabeled messages
    hard_share: np.ndarray  # (N,) 1 - alpha, or 0 for unlabeled
    weights: np.ndarray  # (N,) float32


def distill_loss(
    logits: torch.Tensor,
    soft: torch.Tensor,
    labels: torch.Tensor,
    hard_share: torch.Tensor,
    weights: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Weighted mean over the batch of (1 - h) * T^2 * CE(soft target, softmax(logits / T)) + h * CE(label,
    softmax(logits)): the soft term's gradient shrinks by 1/T^2, which T^2 restores (Hinton et al.)."""
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, 2)
    soft_ce = -(soft * log_p[:, 1] + (1 - soft) * log_p[:, 0]) * temperature**2
    hard_ce = F.cross_entropy(logits.float(), labels, reduction="none")
    per_example = (1 - hard_share) * soft_ce + hard_share * hard_ce
    return (per_example * weights).sum() / weights.sum()


def _torch_logits(model: GPT2Classifier, token_lists: Sequence[Sequence[int]], batch_size: int = 64) -> torch.Tensor:
    """The student's logits (N, 2) in PyTorch, batched by length, for the per-epoch look at validation."""
    logits = torch.empty(len(token_lists), 2)
    order = np.argsort([len(t) for t in token_lists], kind="stable")
    model.eval()
    with torch.no_grad():
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            ids, lengths = pad_batch([list(token_lists[i]) for i in chunk])
            logits[torch.from_numpy(chunk)] = model(torch.from_numpy(ids), torch.from_numpy(lengths)).float()
    return logits


def _share_to_full(student: np.ndarray, validation: ScoredPart, bundle: Bundle) -> float:
    """The share of validation the teacher would still decide with bands chosen on these student scores."""
    routed = sum(
        choose_band(student[mask], validation.teacher[mask], validation.labels[mask], *_rule(bundle, kind)).record[
            "to_full"
        ]
        for kind, mask in validation.kind_masks().items()
    )
    return routed / max(len(student), 1)


def train_student(
    data: StudentData,
    validation: ScoredPart,
    bundle: Bundle,
    settings: StudentSettings,
    *,
    log: Callable[[str], None] = print,
) -> tuple[GPT2Classifier, list[dict[str, float]], int]:
    """The student from GPT-2's random initialisation, every weight trained with AdamW; after each epoch the
    share of validation the teacher would still decide (bands chosen on the student's scores); the best epoch
    (smallest share, then lowest validation loss) is restored. Returns (model, history, best epoch)."""
    torch.manual_seed(settings.seed)
    config = GPTConfig(
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        n_embd=settings.n_embd,
        n_positions=bundle.max_tokens,
        vocab_size=int(bundle.manifest.get("model_config", {}).get("vocab_size", GPTConfig.vocab_size)),
    )
    model = GPT2Classifier(config)
    recipe = TrainSettings(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        lr_schedule=settings.lr_schedule,
        max_grad_norm=settings.max_grad_norm,
    )
    steps = Steps(list(model.parameters()), recipe, len(data.token_lists))
    rng = np.random.default_rng(settings.seed)
    n_val = len(validation.token_lists)
    val_soft = torch.from_numpy(soft_targets(validation.teacher, settings.temperature))
    val_labels = torch.from_numpy(validation.labels)
    val_hard_share = torch.full((n_val,), 1 - settings.alpha)
    val_weights = torch.ones(n_val)
    history: list[dict[str, float]] = []
    best: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] = {}
    best_epoch = 0
    for epoch in range(1, settings.epochs + 1):
        began = time.perf_counter()
        model.train()
        losses = []
        batches = epoch_order(len(data.token_lists), settings.batch_size, rng)
        for indices in progress_bar(batches, desc=f"student epoch {epoch}/{settings.epochs}", unit="batch"):
            ids, lengths = pad_batch([data.token_lists[i] for i in indices])
            logits = model(torch.from_numpy(ids), torch.from_numpy(lengths))  # (B, 2)
            loss = distill_loss(
                logits,
                torch.from_numpy(data.soft[indices]),
                torch.from_numpy(data.labels[indices]),
                torch.from_numpy(data.hard_share[indices]),
                torch.from_numpy(data.weights[indices]),
                settings.temperature,
            )
            steps.take(loss)
            losses.append(loss.item())
        val_logits = _torch_logits(model, validation.token_lists)
        val_loss = distill_loss(
            val_logits, val_soft, val_labels, val_hard_share, val_weights, settings.temperature
        ).item()
        share = _share_to_full(torch.softmax(val_logits, dim=-1)[:, 1].double().numpy(), validation, bundle)
        stats = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_share_full": share,
            "seconds": time.perf_counter() - began,
        }
        history.append(stats)
        improved = best is None or (share, val_loss) < best
        if improved:
            best, best_epoch = (share, val_loss), epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        log(
            f"student epoch {epoch}/{settings.epochs}: train loss {stats['train_loss']:.4f}, validation loss "
            f"{val_loss:.4f}, validation share the teacher still decides {share:.1%} ({stats['seconds']:.1f} s)"
            f"{' *' if improved else ''}"
        )
    model.load_state_dict(best_state)
    return model.eval(), history, best_epoch


# --- scoring and figures -------------------------------------------------------------------------------------------


@dataclass
class ScoredPart:
    """One labelled part (validation, test) as token ids, with the teacher's served P(spam) of each message."""

    token_lists: list[list[int]]
    labels: np.ndarray
    kinds: np.ndarray
    teacher: np.ndarray

    def kind_masks(self) -> dict[str, np.ndarray]:
        return {kind: self.kinds == kind for kind in KINDS if np.any(self.kinds == kind)}


def scored_part(teacher: Classifier, examples: Sequence[Example]) -> ScoredPart:
    """A labelled part as the runtime tokenizes it, with the teacher's served P(spam)."""
    token_lists = [teacher.text_tokens(e.text) for e in examples]
    return ScoredPart(
        token_lists,
        np.array([e.label for e in examples], dtype=np.int64),
        np.array([e.kind for e in examples]),
        np.asarray(teacher.score_tokens(token_lists)),
    )


def _rule(bundle: Bundle, kind: str) -> tuple[float, tuple[float, float] | None]:
    return bundle.threshold_for(kind), bundle.unsure_for(kind)


def cascade_figures(
    part: ScoredPart, student: np.ndarray, bands: dict[str, Band], bundle: Bundle
) -> dict[str, dict[str, Any]]:
    """Per kind, then overall: how often the cascade's verdict equals the teacher's, the share the teacher
    decides, and recall/FPR (spam verdicts against the true labels) of the cascade, the teacher and the student
    alone, each at the kind's threshold. A student verdict is the runtime's: its score through the kind's rule."""
    figures: dict[str, dict[str, Any]] = {}
    for kind, mask in part.kind_masks().items():
        rule = KindThreshold(*_rule(bundle, kind))
        band = bands.get(kind)
        s, t, y = student[mask], part.teacher[mask], part.labels[mask]
        routed = np.array([band is None or not band.decides(x) for x in s], dtype=bool)
        full = np.array([rule.label(x) for x in t])
        alone = np.array([rule.label(x) for x in s])
        cascade = np.where(routed, full, alone)
        figures[kind] = {
            "n": int(mask.sum()),
            "agreement": float(np.mean(cascade == full)),
            "disagreements": int(np.sum(cascade != full)),
            "to_full": int(routed.sum()),
            "share_full": float(routed.mean()),
            "cascade": _confusion(y, cascade),
            "full": _confusion(y, full),
            "student": _confusion(y, alone),
        }
    if figures:
        n = sum(f["n"] for f in figures.values())
        disagreements = sum(f["disagreements"] for f in figures.values())
        to_full = sum(f["to_full"] for f in figures.values())
        figures["overall"] = {
            "n": n,
            "agreement": 1 - disagreements / n,
            "disagreements": disagreements,
            "to_full": to_full,
            "share_full": to_full / n,
            **{who: pooled_metrics(f[who] for f in figures.values()) for who in ("cascade", "full", "student")},
        }
    return figures


def _confusion(labels: np.ndarray, verdicts: np.ndarray) -> dict[str, Any]:
    spam = verdicts == "spam"  # "unsure" is not spam
    tp, fp = int(np.sum(spam & (labels == 1))), int(np.sum(spam & (labels == 0)))
    fn, tn = int(np.sum(~spam & (labels == 1))), int(np.sum(~spam & (labels == 0)))
    return pooled_metrics([{"tp": tp, "fp": fp, "tn": tn, "fn": fn}])


def describe_figures(part: str, figures: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for kind, f in figures.items():
        c, t = f["cascade"], f["full"]
        lines.append(
            f"{part} {kind}: cascade agrees with the teacher on {f['agreement']:.2%} of {f['n']} "
            f"({f['disagreements']} differ), the teacher decides {f['share_full']:.1%} ({f['to_full']}); recall "
            f"{c['recall']:.2%} vs {t['recall']:.2%}, FPR {c['fpr']:.2%} vs {t['fpr']:.2%} (fp {c['fp']} vs {t['fp']})"
        )
    return lines


# --- the whole job -------------------------------------------------------------------------------------------------


def distill(
    bundle_path: Path,
    splits: Splits,
    *,
    unlabeled: Sequence[Example] = (),
    settings: StudentSettings | None = None,
    threads: int | None = None,
    work_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> DistillReport:
    """Train a student for the bundle at `bundle_path` on the teacher's split (`splits` must be it:
    `check_split`) and unlabeled examples, export and check it, choose its bands and write the new bundle
    version. Any failure leaves the bundle as it was."""
    settings = settings or StudentSettings()
    if not (
        settings.epochs >= 1 and settings.batch_size >= 1 and settings.temperature > 0 and 0 <= settings.alpha <= 1
    ):
        raise TrainingError("distill needs epochs and batch size >= 1, a temperature > 0 and alpha in [0, 1]")
    if settings.n_embd % settings.n_head:
        raise TrainingError(f"the student's width {settings.n_embd} must be a multiple of its heads {settings.n_head}")
    check_schedule(settings.lr_schedule, settings.max_grad_norm)
    if threads is not None:
        torch.set_num_threads(threads)
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    bundle = load_bundle(bundle_path, verify=True)
    check_split(bundle, splits)
    teacher = Classifier.load(bundle_path, cascade=False)
    log(
        f"teacher: {bundle.name} ({teacher.precision}, {bundle.max_tokens} tokens, text version "
        f"{bundle.text_version}); split checked against its manifest: {splits.describe_counts()}"
    )

    t0 = time.perf_counter()
    kept, dropped = unlabeled_examples(unlabeled, splits)
    if unlabeled:
        log(f"unlabeled: {len(kept)} messages kept, {dropped} left out (in the split already, or repeated)")
    train_examples = [*splits.train, *kept]
    tokens = [teacher.text_tokens(e.text) for e in train_examples]
    teacher_train = np.asarray(teacher.score_tokens(tokens))
    parts = {"validation": scored_part(teacher, splits.validation), "test": scored_part(teacher, splits.test)}
    seconds["teacher_scores"] = time.perf_counter() - t0
    log(f"teacher scores: {len(tokens)} training and {len(splits.validation) + len(splits.test)} held-out messages")

    data = _student_data(splits.train, kept, tokens, teacher_train, settings)
    t0 = time.perf_counter()
    model, history, best_epoch = train_student(data, parts["validation"], bundle, settings, log=log)
    seconds["train"] = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="spamguard-distill-", dir=work_dir) as scratch:
        work = Path(scratch)
        t0 = time.perf_counter()
        exported = _export(model, work, parts, bundle, log)
        seconds["export"] = time.perf_counter() - t0
        record = {
            "models": exported.models,
            "model_config": model.config.to_dict(),
            "bands": {kind: band.to_manifest() for kind, band in exported.bands.items()},
            "chosen_on": {
                "split": "validation",
                "student": exported.precision,
                "full": teacher.precision,
                "min_agreement": AGREEMENT_TARGET,
                "fpr": "no rise against the full model",
            },
            "choice": exported.choice,
            "metrics": exported.metrics,
            "export": exported.checks,
            "training": {
                **settings.to_dict(),
                "teacher": bundle.name,
                "teacher_precision": teacher.precision,
                "split_seed": split_seed(bundle),
                "examples": {"labelled": len(splits.train), "unlabeled": len(kept), "unlabeled_left_out": dropped},
                "history": history,
                "best_epoch": best_epoch,
                "seconds": {k: round(v, 2) for k, v in (seconds | {"total": time.perf_counter() - began}).items()},
            },
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        old = bundle.cascade
        drop = [name for precision in old.models for name in bundle.student_files(precision)] if old else []
        rewritten = rewrite_bundle(bundle, add=exported.files, drop=drop, fields={"cascade": record})
    log(f"bundle: {rewritten.path} (new version with its student)")
    return DistillReport(rewritten.path, record, seconds)


def _student_data(
    labelled: Sequence[Example],
    unlabeled: Sequence[Example],
    tokens: list[list[int]],
    teacher: np.ndarray,
    settings: StudentSettings,
) -> StudentData:
    """The teacher's class weights per kind and label, from the labelled training part; an unlabeled message
    weighs as the class its kind's teacher verdict puts it in (the teacher is its only label)."""
    from spamguard.training.imbalance import class_weights

    weights = class_weights(labelled)
    n_labelled = len(labelled)
    guessed = [int(p >= 0.5) for p in teacher[n_labelled:]]
    labels = np.array([e.label for e in labelled] + guessed, dtype=np.int64)
    kinds = [e.kind for e in (*labelled, *unlabeled)]
    for kind in set(kinds) - set(weights):
        raise DataError(f"unlabeled {kind} messages, but the teacher's training part has no {kind} to weigh them by")
    return StudentData(
        token_lists=tokens,
        soft=soft_targets(teacher, settings.temperature),
        labels=labels,
        hard_share=np.array([1 - settings.alpha] * n_labelled + [0.0] * len(unlabeled), dtype=np.float32),
        weights=np.array([weights[k][label] for k, label in zip(kinds, labels, strict=True)], dtype=np.float32),
    )


@dataclass
class Exported:
    files: dict[str, Path]  # bundle name -> file
    models: dict[str, str]  # precision -> bundle name
    precision: str  # the student's precision the bands were chosen for (what precision=auto serves)
    bands: dict[str, Band]
    choice: dict[str, Any]
    metrics: dict[str, Any]
    checks: dict[str, Any]


def _export(
    model: GPT2Classifier, work: Path, parts: dict[str, ScoredPart], bundle: Bundle, log: Callable[[str], None]
) -> Exported:
    """fp32 ONNX with its parity proof; the int8 copy, kept when its verdicts (at the teacher's thresholds)
    agree with fp32's on the test part as the bundle's own int8 must; bands per kind on the kept precision's
    validation scores; the cascade's figures on validation and test."""
    from spamguard.training.export import model_files
    from spamguard.training.package import AGREEMENT_TARGET as INT8_TARGET

    fp32 = work / STUDENT_FP32
    export_onnx(model, fp32)
    batch = parity_batch(parts["test"].token_lists)
    parity = check_parity(model, fp32, batch)
    if not parity <= PARITY_LIMIT:
        raise ExportError(f"the student's ONNX export differs from PyTorch by {parity:.2e} > {PARITY_LIMIT:.0e}")
    int8 = quantize_int8(fp32, work / STUDENT_INT8)
    scores = {
        precision: {name: onnx_scores(path, part.token_lists) for name, part in parts.items()}
        for precision, path in (("fp32", fp32), ("int8", int8))
    }
    test = parts["test"]
    thresholds = np.array([bundle.threshold_for(kind) for kind in test.kinds])
    agreement = float(np.mean((scores["fp32"]["test"] >= thresholds) == (scores["int8"]["test"] >= thresholds)))
    precision = "int8" if agreement >= INT8_TARGET else "fp32"
    log(
        f"student export: parity with PyTorch max |Δlogit| = {parity:.2e}; int8 verdicts agree with fp32 on "
        f"{agreement:.2%} of the test part ({'kept' if precision == 'int8' else 'left out'})"
    )
    served = scores[precision]
    validation = parts["validation"]
    bands, choice = {}, {}
    for kind, mask in validation.kind_masks().items():
        chosen = choose_band(
            served["validation"][mask], validation.teacher[mask], validation.labels[mask], *_rule(bundle, kind)
        )
        bands[kind], choice[kind] = chosen.band, chosen.record
    metrics = {name: cascade_figures(part, served[name], bands, bundle) for name, part in parts.items()}
    for name in ("validation", "test"):
        for line in describe_figures(name, metrics[name]):
            log(line)
    paths = [fp32] + ([int8] if precision == "int8" else [])
    files = {path.name: path for graph in paths for path in model_files(graph)}
    models = {"fp32": STUDENT_FP32} | ({"int8": STUDENT_INT8} if precision == "int8" else {})
    checks = {
        "parity_max_abs_logit_diff": parity,
        "parity_lengths": sorted(len(t) for t in batch),
        "int8_agreement": agreement,
        "int8_included": precision == "int8",
    }
    return Exported(files, models, precision, bands, choice, metrics, checks)
