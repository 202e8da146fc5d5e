"""The fine-tuning recipe: a frozen GPT-2, a new two-class head, the last block(s) and the final LayerNorm trained
with AdamW on the cross-entropy of the logits at each example's last real token.

Examples reach the model either as token ids (`TokenData`: the whole model runs every step) or as cached prefix
states (`CachedData`: only the tail runs). Both produce the same `Batch`, and one loss function serves training
and evaluation, so the cache changes how fast the numbers come, never which numbers."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from spamguard.metrics import binary_metrics
from spamguard.padding import pad_batch
from spamguard.progress import progress as progress_bar
from spamguard.tokenizer import PAD_ID
from spamguard.training.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_LR_SCHEDULE,
    DEFAULT_SEED,
    DEFAULT_TRAINABLE,
    DEFAULT_WEIGHT_DECAY,
    LR_SCHEDULES,
    WARMUP_SHARE,
)
from spamguard.training.epoch_choice import ACCURACY, EpochRule
from spamguard.training.errors import TrainingError
from spamguard.training.gpt2 import GPT2Classifier
from spamguard.training.prefix_cache import PrefixCache


@dataclass(frozen=True)
class TrainSettings:
    trainable: str = DEFAULT_TRAINABLE  # last-block | last-layer (head only) | all | a number of blocks
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    seed: int = DEFAULT_SEED  # torch (head initialisation) and the data order of every epoch
    prefix_precision: str = "auto"  # of the frozen prefix pass: auto (see prefix_precision.py) | fp32 | bf16
    lr_schedule: str = DEFAULT_LR_SCHEDULE  # constant | cosine (warm-up, then cosine decay to zero)
    max_grad_norm: float | None = None  # clip the trainable gradients' global norm to this; None: no clipping
    augment_leetspeak: float = 0.0  # share of training messages that also train as a leetspeak copy (augment.py)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Trainable:
    """What `--trainable` unfreezes. `start` is the first block that trains; below it the model is frozen and
    cacheable. `last_only`: only the head trains, so one state per example (the last real position) is enough."""

    spec: str
    start: int
    ln_f: bool
    embeddings: bool

    @property
    def cacheable(self) -> bool:
        return not self.embeddings

    @property
    def last_only(self) -> bool:
        return not self.ln_f


def parse_trainable(spec: str, n_layer: int) -> Trainable:
    if spec == "last-layer":
        return Trainable(spec, n_layer, ln_f=False, embeddings=False)
    if spec == "last-block":
        return Trainable(spec, n_layer - 1, ln_f=True, embeddings=False)
    if spec == "all":
        return Trainable(spec, 0, ln_f=True, embeddings=True)
    if spec.isdigit() and 1 <= int(spec) <= n_layer:
        return Trainable(spec, n_layer - int(spec), ln_f=True, embeddings=False)
    raise TrainingError(
        f"--trainable must be last-block, last-layer, all or a number of blocks from 1 to {n_layer}, not {spec!r}"
    )


def freeze_for(model: GPT2Classifier, trainable: Trainable) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze the head, the blocks from `start` and (unless head-only) `ln_f`."""
    model.requires_grad_(trainable.embeddings)
    model.head.requires_grad_(True)
    for block in model.h[trainable.start :]:
        block.requires_grad_(True)
    model.ln_f.requires_grad_(trainable.ln_f)
    return [p for p in model.parameters() if p.requires_grad]


@dataclass(frozen=True)
class Batch:
    lengths: torch.Tensor  # (B,) int64
    labels: torch.Tensor  # (B,) int64
    ids: torch.Tensor | None = None  # (B, T) int64, when the whole model runs
    hidden: torch.Tensor | None = None  # (B, T, C) float32, cached input of block `start`
    start: int = 0
    weights: torch.Tensor | None = None  # (B,) float32 loss weight of each example; None: all equal


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float32)
    if w.shape != (n,) or not np.all(w > 0):
        raise ValueError(f"expected {n} positive example weights, got shape {w.shape}")
    return w


def _batch_weights(weights: np.ndarray | None, indices: np.ndarray) -> torch.Tensor | None:
    return torch.from_numpy(weights[indices]) if weights is not None else None


class TokenData:
    """Token ids; each batch padded to its longest member, or to `pad_to` for every batch (the book's recipe).
    `weights`: each example's loss weight (its kind and label's class weight), None for an unweighted loss."""

    def __init__(
        self,
        token_lists: Sequence[Sequence[int]],
        labels: Sequence[int],
        pad_to: int | None = None,
        weights: Sequence[float] | None = None,
    ):
        self.token_lists = [list(t) for t in token_lists]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.lengths = np.array([len(t) for t in self.token_lists], dtype=np.int64)
        self.pad_to = pad_to
        self.weights = _weights(weights, len(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: np.ndarray) -> Batch:
        rows = [self.token_lists[i][: self.pad_to] for i in indices]
        ids, lengths = pad_batch(rows)
        if self.pad_to is not None and ids.shape[1] < self.pad_to:
            ids = np.pad(ids, ((0, 0), (0, self.pad_to - ids.shape[1])), constant_values=PAD_ID)
        return Batch(
            torch.from_numpy(lengths),
            torch.from_numpy(self.labels[indices]),
            ids=torch.from_numpy(ids),
            weights=_batch_weights(self.weights, indices),
        )


class CachedData:
    """Prefix states from a `PrefixCache`; the model runs only its tail on them. `weights` as in `TokenData`."""

    def __init__(self, cache: PrefixCache, labels: Sequence[int], weights: Sequence[float] | None = None):
        if len(cache) != len(labels):
            raise ValueError(f"{len(cache)} cached examples but {len(labels)} labels")
        self.cache = cache
        self.labels = np.asarray(labels, dtype=np.int64)
        self.lengths = cache.lengths
        self.weights = _weights(weights, len(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: np.ndarray) -> Batch:
        hidden, lengths = self.cache.batch(indices)
        return Batch(
            lengths,
            torch.from_numpy(self.labels[indices]),
            hidden=hidden,
            start=self.cache.start,
            weights=_batch_weights(self.weights, indices),
        )


Data = TokenData | CachedData


def logits_of(model: GPT2Classifier, batch: Batch) -> torch.Tensor:
    if batch.hidden is not None:
        return model.tail(batch.hidden, batch.lengths, batch.start)  # (B, 2)
    return model(batch.ids, batch.lengths)  # (B, 2)


def calc_loss_batch(model: GPT2Classifier, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The one loss of training and evaluation: cross-entropy of the logits at the last real token, weighted by
    each example's weight when the batch carries them (the weighted mean, as `cross_entropy(weight=...)` takes
    it for class weights: with one weight per label the two are the same)."""
    logits = logits_of(model, batch)
    if batch.weights is None:
        return F.cross_entropy(logits, batch.labels), logits
    losses = F.cross_entropy(logits, batch.labels, reduction="none")  # (B,)
    return (losses * batch.weights).sum() / batch.weights.sum(), logits


def spam_probability(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1)[:, 1]


def epoch_order(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


@dataclass
class Evaluation:
    loss: float
    labels: np.ndarray
    scores: np.ndarray  # P(spam), in the data's order

    @property
    def accuracy(self) -> float:
        return float(binary_metrics(self.labels, self.scores, 0.5)["accuracy"])


def evaluate(
    model: GPT2Classifier,
    data: Data,
    batch_size: int = 32,
    num_batches: int | None = None,
) -> Evaluation:
    """Loss (mean over examples) and P(spam) of every example; batches grouped by length, unless the data pads
    every batch to one length anyway. `num_batches` stops early for a quick look."""
    was_training = model.training
    model.eval()
    order = np.argsort(data.lengths, kind="stable")
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)][:num_batches]
    scores = np.full(len(data), np.nan)
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in chunks:
            batch = data.batch(chunk)
            loss, logits = calc_loss_batch(model, batch)
            total += loss.item() * len(chunk)
            count += len(chunk)
            scores[chunk] = spam_probability(logits).numpy()
    model.train(was_training)
    seen = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return Evaluation(total / max(count, 1), data.labels[np.sort(seen)], scores[np.sort(seen)])


@dataclass
class EpochStats:
    epoch: int
    train_loss: float  # mean over the epoch's batches, as the weights moved
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


@dataclass
class TrainResult:
    history: list[EpochStats]
    best_epoch: int
    validation: Evaluation  # of the best epoch: what a threshold rule chooses from
    epoch_rule: str  # the name of the `EpochRule` that kept it
    seconds: float
    trainable_parameters: int
    state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)  # the best trainable tensors


def adamw(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.AdamW:
    """Fused AdamW where this torch has it for the CPU: one pass over the weights instead of a dozen
    elementwise kernels, ~6x faster per step on a 7M-parameter GPT-2 block, which matters once the prefix is
    cached and the tail step itself is cheap."""
    try:
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


def lr_factor(schedule: str, steps: int) -> Callable[[int], float]:
    """The multiplier of the learning rate at each optimizer step (0-based), for `torch.optim.lr_scheduler.LambdaLR`.
    Cosine: a linear warm-up over the first `WARMUP_SHARE` of the steps (Adam's early moment estimates are noisy,
    and a randomly initialised transformer takes large first steps badly), then half a cosine that falls to zero by
    the last step, so the last epoch refines the weights instead of moving them as far as the first did."""
    if schedule not in LR_SCHEDULES:
        raise TrainingError(f"unknown learning-rate schedule {schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
    if schedule == "constant":
        return lambda _step: 1.0
    warmup = max(1, round(WARMUP_SHARE * steps))

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return cosine


def check_schedule(lr_schedule: str, max_grad_norm: float | None) -> None:
    """The schedule and clipping options, checked for every training loop (the model's and the student's) where
    its `Steps` are built, before any weight moves; `distill` also checks them before it reads any data, and the
    command-line options refuse bad values as they are parsed."""
    lr_factor(lr_schedule, 1)
    if max_grad_norm is not None and not max_grad_norm > 0:  # NaN too
        raise TrainingError("--max-grad-norm must be above 0")


class Steps:
    """AdamW at the rate `settings.lr_schedule` gives each step, the gradients clipped to `settings.max_grad_norm`
    when set: one training step, the same in every loop (the model's `train` and the student's in distill)."""

    def __init__(self, params: list[torch.nn.Parameter], settings: TrainSettings, examples: int) -> None:
        check_schedule(settings.lr_schedule, settings.max_grad_norm)
        self.params, self.max_grad_norm = params, settings.max_grad_norm
        self.optimizer = adamw(params, settings)
        steps = settings.epochs * math.ceil(examples / settings.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(settings.lr_schedule, steps))

    def take(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()


def train(
    model: GPT2Classifier,
    train_data: Data,
    val_data: Data,
    settings: TrainSettings,
    trainable: Trainable,
    *,
    log: Callable[[str], None] = print,
    progress: Callable[..., Iterable] = progress_bar,
    on_epoch: Callable[[int, GPT2Classifier], None] | None = None,
    keep: EpochRule = ACCURACY,
) -> TrainResult:
    """AdamW over the trainable parameters for `settings.epochs` epochs, shuffled with the seed, at the rate
    `settings.lr_schedule` gives each step (gradients clipped to `settings.max_grad_norm` when set); validation
    after every epoch; the best epoch by `keep` (`training.epoch_choice`) is restored into `model` at the end.
    `on_epoch(epoch, model)` sees each epoch's weights after its validation, before any is restored: how a
    benchmark scores every epoch, to compare ways of choosing the one kept, from a single training run."""
    if settings.epochs < 1 or settings.batch_size < 1:
        raise TrainingError("--epochs and --batch-size must be at least 1")
    steps = Steps(freeze_for(model, trainable), settings, len(train_data))  # checks the schedule and clipping
    rng = np.random.default_rng(settings.seed)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    history: list[EpochStats] = []
    best: tuple[float, float] | None = None
    if keep is not ACCURACY:
        log(f"kept epoch: the best by {keep.description}, then the lower validation loss")
    best_state: dict[str, torch.Tensor] = {}
    best_eval = Evaluation(float("nan"), val_data.labels, np.full(len(val_data), np.nan))
    best_epoch = 0
    began = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        losses, correct, seen = [], 0, 0
        bar = progress(
            epoch_order(len(train_data), settings.batch_size, rng),
            desc=f"epoch {epoch}/{settings.epochs}",
            unit="batch",
        )
        for indices in bar:
            batch = train_data.batch(indices)
            loss, logits = calc_loss_batch(model, batch)
            steps.take(loss)
            losses.append(loss.item())
            correct += int((logits.argmax(-1) == batch.labels).sum())
            seen += len(indices)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val = evaluate(model, val_data)
        seconds = time.perf_counter() - t0
        stats = EpochStats(epoch, float(np.mean(losses)), correct / seen, val.loss, val.accuracy, seconds)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(epoch, model)
        key = keep.key(val)
        improved = best is None or key > best
        if improved:
            best, best_epoch, best_eval = key, epoch, val
            best_state = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
        figure = f", {keep.name} {key[0]:.2%}" if keep is not ACCURACY else ""
        log(
            f"epoch {epoch}/{settings.epochs}: train loss {stats.train_loss:.4f} acc {stats.train_accuracy:.2%}, "
            f"val loss {val.loss:.4f} acc {val.accuracy:.2%}{figure} ({stats.seconds:.1f} s)"
            f"{' *' if improved else ''}"
        )
    model.load_state_dict(best_state, strict=False)
    model.eval()
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        validation=best_eval,
        epoch_rule=keep.name,
        seconds=time.perf_counter() - began,
        trainable_parameters=sum(p.numel() for p in steps.params),
        state=best_state,
    )


def save_checkpoint(
    model: GPT2Classifier, path: Path, *, only: Sequence[str] | None = None, metadata: dict | None = None
) -> Path:
    """The model's tensors as safetensors (no pickle), its config and `metadata` as JSON strings in the header.
    `only` keeps just the named tensors: the trained part, when the frozen rest is the published base."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if only is None or k in set(only)}
    header = {"config": json.dumps(model.config.to_dict())}
    header |= {k: json.dumps(v) for k, v in (metadata or {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=header)
    return path
