"""Five training epochs of a GPT-2-124M-shaped model (random weights, last block trainable) on the balanced SMS
split, three ways in one run, each validating on the whole validation split after every epoch:

  (a) book     every example padded to the longest training example, the frozen prefix recomputed every epoch
               (the longest of the whole training split, 132 tokens, also when training on a subset: a subset
               stands in for the full run, whose examples all pay for that longest one)
  (b) dynamic  each batch padded to its own longest member, prefix still recomputed every epoch
  (c) cache    dynamic padding + the prefix computed once (train and validation) and only the tail trained
  (d) cache+bf16 as (c), the prefix pass under bf16 autocast (always run: the table shows both precisions, with
               the CPU's model and flags and what `train --prefix-precision auto` chooses on it, marked *)

All variants start from the same initial weights and see the same batches in the same order, so their
validation and test accuracies should agree; the times are wall-clock seconds including validation and, for
(c)/(d), building the cache. Test accuracy is measured afterwards, untimed: the frozen prefix is the same in
every variant (same initial weights), so the test split's prefix states are computed once in fp32 and each
variant's trained tail is evaluated on them.

    .venv/bin/python benchmarks/bench_training.py         # seeded subsets: 128 of 914 train, 64 of 130 validation
    .venv/bin/python benchmarks/bench_training.py --full  # the whole split (the book variant alone takes ~1 h here)
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from spamguard.datasets import read_sms_tsv
from spamguard.tokenizer import encode, load_encoding
from spamguard.training.data import balance, deduplicate, split
from spamguard.training.gpt2 import CONFIGS, GPT2Classifier
from spamguard.training.prefix_cache import build_cache
from spamguard.training.prefix_precision import choose_precision, read_cpu_info
from spamguard.training.recipe import CachedData, TokenData, TrainSettings, evaluate, parse_trainable, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMS_FILE = SHARED / "sms_spam_collection" / "SMSSpamCollection"
BPE_DIR = SHARED / "gpt2_bpe"
MAX_TOKENS = 256  # spamguard train's default; no SMS of the balanced split is cut by it


def quiet(items: object, **_: object) -> object:
    return items


def seeded_subset(items: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(items):
        return items
    return [items[i] for i in sorted(np.random.default_rng(seed).choice(len(items), n, replace=False))]


def load_split(seed: int, train_subset: int | None, val_subset: int | None) -> tuple[dict, int]:
    """Token ids and labels per part, and the longest training example of the whole split (the book's pad)."""
    enc = load_encoding(BPE_DIR / "encoder.json", BPE_DIR / "vocab.bpe")
    splits = split(balance(deduplicate(read_sms_tsv(SMS_FILE)), seed), seed)
    longest = max(len(encode(enc, e.text, MAX_TOKENS)) for e in splits.train)
    parts = {
        "train": seeded_subset(splits.train, train_subset, seed),
        "validation": seeded_subset(splits.validation, val_subset, seed),
        "test": splits.test,
    }
    data = {
        name: ([encode(enc, e.text, MAX_TOKENS) for e in part], np.array([e.label for e in part]))
        for name, part in parts.items()
    }
    return data, longest


def fresh_model(seed: int) -> GPT2Classifier:
    torch.manual_seed(seed)
    return GPT2Classifier(CONFIGS["gpt2"])


def run_variant(name: str, data: dict, pad_to: int, settings: TrainSettings, seed: int, test: CachedData) -> dict:
    model = fresh_model(seed)
    trainable = parse_trainable("last-block", model.config.n_layer)
    (train_tokens, train_labels), (val_tokens, val_labels) = data["train"], data["validation"]
    began, cpu_began = time.perf_counter(), time.process_time()
    cache_seconds = 0.0
    if name == "book":
        train_data = TokenData(train_tokens, train_labels, pad_to=pad_to)
        val_data = TokenData(val_tokens, val_labels, pad_to=pad_to)
    elif name == "dynamic":
        train_data, val_data = TokenData(train_tokens, train_labels), TokenData(val_tokens, val_labels)
    else:
        precision = "bf16" if name == "cache+bf16" else "fp32"
        caches = [build_cache(model, t, trainable.start, precision=precision) for t in (train_tokens, val_tokens)]
        train_data, val_data = CachedData(caches[0], train_labels), CachedData(caches[1], val_labels)
        cache_seconds = time.perf_counter() - began
    result = train(model, train_data, val_data, settings, trainable, log=lambda line: print(f"  [{name}] {line}"))
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    test_eval = evaluate(model, test)
    best = result.history[result.best_epoch - 1]
    return {
        "name": name,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "cache_seconds": cache_seconds,
        "epoch_seconds": [s.seconds for s in result.history],
        "val_accuracy": [s.val_accuracy for s in result.history],
        "best_val_accuracy": best.val_accuracy,
        "test_accuracy": test_eval.accuracy,
        "test_loss": test_eval.loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-subset", type=int, default=128, help="seeded subset of the 914 training examples")
    parser.add_argument("--val-subset", type=int, default=64, help="seeded subset of the 130 validation examples")
    parser.add_argument("--full", action="store_true", help="all training and validation examples")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--only", nargs="+", choices=["book", "dynamic", "cache", "cache+bf16"])
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: one per core; 1 suffers less when other processes share the cores)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data, pad_to = load_split(args.seed, *((None, None) if args.full else (args.train_subset, args.val_subset)))
    settings = TrainSettings(trainable="last-block", epochs=args.epochs, seed=args.seed)
    variants = [v for v in ("book", "dynamic", "cache", "cache+bf16") if args.only is None or v in args.only]
    lengths = [len(t) for t in data["train"][0]]
    cpu = read_cpu_info()
    auto = choose_precision("auto", CONFIGS["gpt2"].n_embd, cpu=cpu)  # after set_num_threads: probes as train would
    chosen = "cache+bf16" if auto.precision == "bf16" else "cache"
    print(
        f"{datetime.now():%Y-%m-%d %H:%M} · {cpu.describe()} · torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
        f"* = what train --prefix-precision auto takes on this CPU: {auto.precision} ({auto.reason})\n"
        f"GPT-2-124M shape, random weights (seed {args.seed}), last block + ln_f + head trainable, "
        f"{args.epochs} epochs, batch {settings.batch_size}\n"
        f"train {len(lengths)} examples (tokens mean {np.mean(lengths):.1f}, max {max(lengths)}; book pads to "
        f"{pad_to}), validation "
        f"{len(data['validation'][0])}, test {len(data['test'][0])} ({'full split' if args.full else 'seeded subsets'}"
        " of the balanced split's 914 / 130 / 262)"
    )
    test_tokens, test_labels = data["test"]
    start = parse_trainable("last-block", CONFIGS["gpt2"].n_layer).start
    test_cache = build_cache(fresh_model(args.seed), test_tokens, start, store_dtype=np.float32, progress=quiet)
    results = []
    for name in variants:
        print(f"-- {name}")
        results.append(run_variant(name, data, pad_to, settings, args.seed, CachedData(test_cache, test_labels)))
    book = next((r for r in results if r["name"] == "book"), None)
    print(
        f"\n{'variant':<12}{'seconds':>9}{'of which cache':>16}{'s/epoch (median)':>18}{'vs book':>9}"
        f"{'CPU s':>8}{'vs book':>9}{'best val acc':>14}{'test acc':>10}"
    )
    for r in results:
        ratio = f"{book['seconds'] / r['seconds']:.1f}x" if book else "-"
        cpu_ratio = f"{book['cpu_seconds'] / r['cpu_seconds']:.1f}x" if book else "-"
        name = r["name"] + ("*" if r["name"] == chosen else "")
        print(
            f"{name:<12}{r['seconds']:>9.1f}{r['cache_seconds']:>16.1f}{np.median(r['epoch_seconds']):>18.1f}"
            f"{ratio:>9}{r['cpu_seconds']:>8.0f}{cpu_ratio:>9}{r['best_val_accuracy']:>14.2%}"
            f"{r['test_accuracy']:>10.2%}"
        )
    for r in results:
        print(f"{r['name']:<12}val accuracy per epoch: {', '.join(f'{a:.2%}' for a in r['val_accuracy'])}")


if __name__ == "__main__":
    main()
