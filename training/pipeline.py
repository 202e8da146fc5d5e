"""The main job, `spamguard train`, as reusable steps: examples -> splits -> tokens -> model -> prefix cache ->
training -> export and checks -> bundle -> install.

Each step is a plain function so a data source can enter anywhere: `spamguard.training.sources` reads the
default data or the user's and splits it, `run(job, splits)` trains on any `Splits` (the accuracy benchmark hands
its own), and `threshold_rule` chooses each kind's decision threshold from the exported model's validation
scores. The loss is weighted per kind and label from the training split (why: `training.imbalance`)."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spamguard import registry
from spamguard.bundle import NAME_PATTERN, check_name
from spamguard.classifier import token_script
from spamguard.datasets import HAM
from spamguard.errors import BundleError, TokenizerError
from spamguard.message_text import TEXT_VERSION
from spamguard.paths import models_dir
from spamguard.tokenizer import encode, load_encoding
from spamguard.training.augment import leetspeak_copies
from spamguard.training.curves import plot_curves
from spamguard.training.data import Example, Splits
from spamguard.training.defaults import DEFAULT_MAX_TOKENS
from spamguard.training.epoch_choice import epoch_rule
from spamguard.training.errors import TrainingError, WeightsError
from spamguard.training.gpt2 import HUB_REPOS, GPT2Classifier
from spamguard.training.imbalance import class_weights, describe_weights, example_weights
from spamguard.training.package import (
    Split,
    ThresholdRule,
    export_and_check,
    package,
    summary_lines,
)
from spamguard.training.prefix_cache import build_cache
from spamguard.training.prefix_precision import choose_precision
from spamguard.training.public_data import bpe_files
from spamguard.training.recipe import (
    CachedData,
    TokenData,
    Trainable,
    TrainResult,
    TrainSettings,
    parse_trainable,
    save_checkpoint,
    train,
)
from spamguard.training.weights import BaseModel, build_model, fetch, is_known_name, locate

CURVES_FILE = "training_curves.png"
CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass(frozen=True)
class Job:
    base: str = "gpt2"  # hub name or a folder in the Hugging Face layout
    weights: str = "pretrained"  # or "random"
    tokenizer: Path | None = None  # folder with encoder.json + vocab.bpe (or vocab.json + merges.txt)
    max_tokens: int = DEFAULT_MAX_TOKENS
    out: Path | None = None  # bundle folder; None: a new folder in the models dir
    name: str | None = None  # model name; None: from the base and the date
    install: bool = True  # install as the user's default model
    work_dir: Path | None = None  # scratch space (ONNX files, an on-disk prefix cache); None: the temp dir
    cache_memory_limit: int | None = None  # bytes before the prefix cache moves to disk; None: automatic
    threads: int | None = None  # torch threads; None: torch's default (one per core)
    recipe: TrainSettings = field(default_factory=TrainSettings)


@dataclass(frozen=True)
class Output:
    path: Path
    name: str
    in_models_dir: bool  # written straight into the models dir: installing is just making it the default


@dataclass
class TrainReport:
    bundle: Path
    name: str
    installed: Path | None
    metrics: dict[str, Any]
    seconds: dict[str, float]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:40] or "model"


def plan_output(job: Job) -> Output:
    """Name and folder of the new bundle, checked before hours of training, not after."""
    base_name = _safe_name(Path(job.base).name if Path(job.base).expanduser().is_dir() else job.base)
    default = f"{base_name}{'-random' if job.weights == 'random' else ''}-{datetime.now():%Y%m%d-%H%M%S}"
    if job.name is not None:
        name = job.name
    elif job.out is not None and NAME_PATTERN.fullmatch(Path(job.out).name):
        name = Path(job.out).name
    else:
        name = default
    check_name(name)
    out = Path(job.out).expanduser() if job.out is not None else models_dir() / name
    if out.exists():
        raise BundleError(f"output directory already exists: {out} (choose another --out or remove it)")
    in_models_dir = out.parent.resolve() == models_dir().resolve()
    if job.install and not in_models_dir and (models_dir() / name).exists():
        raise BundleError(f"a model named {name!r} is already installed (pass --name, or --no-install)")
    return Output(out, out.name if in_models_dir else name, in_models_dir)


@dataclass(frozen=True)
class ModelFiles:
    """What the model is built from, found (or downloaded) before any data is read or any model built."""

    base: BaseModel | None  # None: random weights in a named configuration
    encoder_json: Path
    vocab_bpe: Path


def model_files(job: Job) -> ModelFiles:
    """The base checkpoint (downloaded for pretrained weights) and the tokenizer files of `job`."""
    located = locate(job.base, job.weights)
    encoder_json, vocab_bpe = tokenizer_files(job, located)
    return ModelFiles(located, encoder_json, vocab_bpe)


def _bpe_pair(folder: Path) -> tuple[Path, Path] | None:
    for encoder, bpe in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        if (folder / encoder).is_file() and (folder / bpe).is_file():
            return folder / encoder, folder / bpe
    return None


def tokenizer_files(job: Job, base_model: BaseModel | None) -> tuple[Path, Path]:
    """`--tokenizer DIR` if given, else the base folder's `vocab.json`/`merges.txt`, else (random weights with a
    hub name) GPT-2's BPE files from the data sets folder, else the tokenizer files alone from the hub, which
    offline means `--tokenizer` is required."""
    if job.tokenizer is not None:
        folder = Path(job.tokenizer).expanduser()
        pair = _bpe_pair(folder) if folder.is_dir() else None
        if pair is None:
            raise TokenizerError(
                f"--tokenizer {folder}: expected a folder with encoder.json and vocab.bpe (or vocab.json and "
                "merges.txt)"
            )
        return pair
    if base_model is not None:
        pair = _bpe_pair(base_model.path)
        if pair is not None:
            return pair
        raise TokenizerError(
            f"{base_model.path} has no vocab.json and merges.txt: pass --tokenizer DIR (a folder with "
            "encoder.json and vocab.bpe)"
        )
    local = bpe_files()  # GPT-2's own files in the data sets folder ($SPAMGUARD_DATA), sha256-checked
    if local is not None and is_known_name(job.base):
        return local
    if is_known_name(job.base):
        try:
            pair = _bpe_pair(fetch(job.base, need_weights=False).path)
        except WeightsError as exc:
            raise TokenizerError(
                f"cannot download the tokenizer files of {HUB_REPOS[job.base]}: offline, --weights random with a "
                "hub name needs --tokenizer DIR (a folder with encoder.json and vocab.bpe)"
            ) from exc
        if pair is not None:
            return pair
    raise TokenizerError(f"no tokenizer for --base {job.base}: pass --tokenizer DIR")


def tokenize(examples: Sequence[Example], encoding: Any, max_tokens: int) -> Split:
    return Split(
        [encode(encoding, e.text, max_tokens) for e in examples],
        np.array([e.label for e in examples], dtype=np.int64),
        np.array([e.kind for e in examples]),
    )


def ham_scripts(split: Split, encoding: Any) -> dict[str, dict[str, int]]:
    """Per kind, how many training ham were written mainly in each script, as the runtime reads a message
    (`classifier.token_script` on its tokens): what `Bundle.unseen_script` holds a message's script against."""
    counts: dict[str, dict[str, int]] = {}
    for tokens, label, kind in zip(split.token_lists, split.labels, split.kinds, strict=True):
        kind_counts = counts.setdefault(str(kind), {})
        script = token_script(encoding, tokens) if label == HAM else None
        if script is not None:
            kind_counts[script] = kind_counts.get(script, 0) + 1
    return {kind: dict(sorted(c.items())) for kind, c in counts.items()}


def _describe_tokens(raw_lengths: np.ndarray, max_tokens: int) -> str:
    return (
        f"tokens per message: mean {raw_lengths.mean():.1f}, max {raw_lengths.max()} "
        f"(--max-tokens {max_tokens}: {int(np.sum(raw_lengths > max_tokens))} messages cut to it)"
    )


def prepare_data(
    model: GPT2Classifier,
    trainable: Trainable,
    train_split: Split,
    val_split: Split,
    job: Job,
    log: Callable[[str], None] = print,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[TokenData | CachedData, TokenData | CachedData, dict[str, Any]]:
    """Training and validation data as the recipe consumes them: cached prefix states where the prefix is
    frozen, token ids when everything trains; `weights` are the two parts' example weights (None: unweighted).
    The cache's record says which precision it ran in and why."""
    train_weights, val_weights = weights if weights is not None else (None, None)
    if not trainable.cacheable:
        log("prefix cache: none (--trainable all trains the embeddings too)")
        return (
            TokenData(train_split.token_lists, train_split.labels, weights=train_weights),
            TokenData(val_split.token_lists, val_split.labels, weights=val_weights),
            {"used": False},
        )
    choice = choose_precision(job.recipe.prefix_precision, model.config.n_embd)
    log(choice.line())
    precision = choice.precision
    t0 = time.perf_counter()
    caches = [
        build_cache(
            model,
            s.token_lists,
            trainable.start,
            last_only=trainable.last_only,
            precision=precision,
            memory_limit=job.cache_memory_limit,
            work_dir=job.work_dir,
            desc=f"prefix cache ({name})",
        )
        for name, s in (("train", train_split), ("validation", val_split))
    ]
    seconds = time.perf_counter() - t0
    where = "on disk" if caches[0].on_disk else "in memory"
    blocks = "all blocks, last position only" if trainable.last_only else f"embeddings + blocks 0-{trainable.start - 1}"
    if trainable.start == 0:
        blocks = "embeddings"
    size = sum(c.nbytes for c in caches)
    log(f"prefix cache: {blocks}, {precision}, {size / 1e6:.1f} MB fp16 {where}, built in {seconds:.1f} s")
    info = {"used": True, "precision": precision, "bytes": size, "on_disk": caches[0].on_disk, "seconds": seconds}
    info["precision_choice"] = choice.to_dict()
    return (
        CachedData(caches[0], train_split.labels, train_weights),
        CachedData(caches[1], val_split.labels, val_weights),
        info,
    )


def run(
    job: Job,
    splits: Splits,
    *,
    data_source: str,
    threshold_rule: ThresholdRule | None = None,
    log: Callable[[str], None] = print,
    files: ModelFiles | None = None,
    on_epoch: Callable[[int, GPT2Classifier], None] | None = None,
) -> TrainReport:
    """The whole job on `splits` (described by `data_source` in the manifest). `threshold_rule` chooses each
    kind's threshold from its validation scores (default: 0.5); `files` are the model's files when they were
    already found (`model_files`), as `spamguard train` does before reading any data; `on_epoch` as `train`'s."""
    began = time.perf_counter()
    seconds: dict[str, float] = {}
    output = plan_output(job)
    recipe = job.recipe
    if job.threads is not None:
        torch.set_num_threads(job.threads)

    t0 = time.perf_counter()
    files = files if files is not None else model_files(job)
    encoding = load_encoding(files.encoder_json, files.vocab_bpe)
    torch.manual_seed(recipe.seed)  # the new head's initialisation (and the whole model's, with random weights)
    model, base_model = build_model(job.base, job.weights)
    config = model.config
    trainable = parse_trainable(recipe.trainable, config.n_layer)
    if not 1 <= job.max_tokens <= config.n_positions:
        raise TrainingError(f"--max-tokens must be between 1 and the model's {config.n_positions} positions")
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {job.base} ({job.weights} weights, {config.n_layer} layers x {config.n_embd} wide, "
        f"{n_params / 1e6:.1f}M parameters), trainable: {recipe.trainable}"
    )
    parts = {
        "train": tokenize(splits.train, encoding, job.max_tokens),
        "validation": tokenize(splits.validation, encoding, job.max_tokens),
        "test": tokenize(splits.test, encoding, job.max_tokens),
    }
    if any(len(p.token_lists) == 0 for p in parts.values()):
        raise TrainingError("too few messages: the train, validation and test splits each need at least one")
    everything = (*splits.train, *splits.validation, *splits.test)
    log(_describe_tokens(np.array([len(encoding.encode_ordinary(e.text)) for e in everything]), job.max_tokens))
    weights = class_weights(splits.train)
    log(f"imbalance: loss weights per kind and label from the training split: {describe_weights(weights)}")
    train_examples, train_part = list(splits.train), parts["train"]
    if recipe.augment_leetspeak:
        copies = leetspeak_copies(splits.train, recipe.augment_leetspeak, recipe.seed)
        train_examples += copies
        tokenized = tokenize(copies, encoding, job.max_tokens)  # the originals are tokenized already
        train_part = Split(
            train_part.token_lists + tokenized.token_lists,
            np.concatenate([train_part.labels, tokenized.labels]),
            np.concatenate([train_part.kinds, tokenized.kinds]),
        )
        log(
            f"augmentation: {len(copies)} leetspeak copies of the {len(splits.train)} training messages "
            f"(share {recipe.augment_leetspeak:g})"
        )
    seconds["model_and_tokens"] = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="spamguard-train-", dir=job.work_dir) as scratch:
        work = Path(scratch)
        train_data, val_data, cache_info = prepare_data(
            model,
            trainable,
            train_part,
            parts["validation"],
            job,
            log,
            weights=(example_weights(train_examples, weights), example_weights(splits.validation, weights)),
        )
        seconds["prefix_cache"] = cache_info.get("seconds", 0.0)
        try:
            keep = epoch_rule(threshold_rule, parts["validation"].labels, parts["validation"].kinds)
            result = train(model, train_data, val_data, recipe, trainable, log=log, on_epoch=on_epoch, keep=keep)
        finally:
            for data in (train_data, val_data):
                if isinstance(data, CachedData):
                    data.cache.close()
        seconds["train"] = result.seconds
        best = result.history[result.best_epoch - 1]
        log(
            f"best epoch: {result.best_epoch} by {result.epoch_rule} (validation accuracy {best.val_accuracy:.2%}, "
            f"loss {best.val_loss:.4f})"
        )

        exported = export_and_check(
            model, work, parts["validation"], parts["test"], threshold_rule=threshold_rule, log=log
        )
        seconds |= exported.seconds
        for line in summary_lines(exported):
            log(line)

        curves = plot_curves(
            result.history,
            work / CURVES_FILE,
            title=f"{output.name}: {files.base.name if files.base else job.base}, {job.weights} weights, "
            f"trainable {recipe.trainable}",
            best_epoch=result.best_epoch,
        )
        checkpoint = _write_checkpoint(model, work / CHECKPOINT_FILE, job, result, output.name)
        seconds["total"] = time.perf_counter() - began
        manifest = _manifest(job, output, model, base_model, splits, data_source, result, cache_info)
        manifest["ham_scripts"] = ham_scripts(parts["train"], encoding)
        manifest["training"]["class_weights"] = {kind: list(w) for kind, w in weights.items()}
        manifest["training"]["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
        bundle = package(
            output.path,
            exported,
            encoder_json=files.encoder_json,
            vocab_bpe=files.vocab_bpe,
            manifest=manifest,
            extra_files={CURVES_FILE: curves, CHECKPOINT_FILE: checkpoint},
        )
    log(f"bundle: {bundle.path}")
    installed = _install(job, output)
    if installed is not None:
        log(f"installed as the default model {output.name!r}")
    return TrainReport(bundle.path, output.name, installed, exported.metrics, seconds)


def _write_checkpoint(model: GPT2Classifier, path: Path, job: Job, result: TrainResult, name: str) -> Path:
    """The best weights as safetensors. Over published weights only the trained tensors are stored (the frozen
    rest is the base checkpoint, named in the metadata); over random weights everything is."""
    only = list(result.state) if job.weights == "pretrained" else None
    metadata = {"name": name, "base_model": job.base, "weights": job.weights, "tensors": "trained" if only else "all"}
    return save_checkpoint(model, path, only=only, metadata=metadata | {"recipe": job.recipe.to_dict()})


def _manifest(
    job: Job,
    output: Output,
    model: GPT2Classifier,
    base_model: BaseModel | None,
    splits: Splits,
    data_source: str | None,
    result: TrainResult,
    cache_info: dict[str, Any],
) -> dict[str, Any]:
    return {
        "name": output.name,
        "max_tokens": job.max_tokens,
        "text_version": TEXT_VERSION,  # the runtime serves this model only with the text it was trained on
        "base_model": base_model.name if base_model is not None else job.base,
        "model_config": model.config.to_dict(),
        "training": {
            **job.recipe.to_dict(),
            "weights": job.weights,
            "data": data_source,
            "split": splits.counts(),
            "split_by_kind": splits.counts_by_kind(),
            "split_sha256": splits.fingerprint(),  # what `spamguard distill` checks it rebuilt the same split by
            "trainable_parameters": result.trainable_parameters,
            "best_epoch": result.best_epoch,
            "epoch_rule": result.epoch_rule,  # training.epoch_choice: how the kept epoch was chosen
            "history": [vars(s) for s in result.history],
            "prefix_cache": cache_info,
            "checkpoint": CHECKPOINT_FILE,
            "curves": CURVES_FILE,
        },
    }


def _install(job: Job, output: Output) -> Path | None:
    if not job.install:
        return None
    if output.in_models_dir:
        registry.set_default(output.path.name)
        return output.path
    return registry.install(output.path, output.name, make_default=True)
