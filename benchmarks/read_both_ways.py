"""One model, two readings: what a change to the text function does, on a model that stays the same.

    SPAMGUARD_DATA=../shared/data python benchmarks/read_both_ways.py --against REV [--train-with today|against]
        [--seed 1] [--disguises leetspeak] [--n-layer 2 --n-head 2 --n-embd 128 --epochs 3 --threads 1]

Comparing two text versions by training a model on each mixes two effects: what the new reading gives back, and how
differently two trainings from random weights turn out. The second can be the larger: models trained on texts that
differ in a dozen of 7,074 messages flagged 2% and 8% of the same leetspeak mail ham (docs/robustness.md). So this
trains one model, normalized, as `bench_robustness.py` trains it (same split, seed, recipe, no copies), on text read
by today's `spamguard/normalize.py` or by the one at REV (`git show REV:spamguard/normalize.py`; the generated
lists it imports are today's), then scores the test parts' plain and disguised messages read both ways, at the
model's thresholds, and prints each kind's recall and FPR for each reading. Only the normalize step is swapped:
the rest of `message_text` is today's."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_robustness as bench  # noqa: E402
from robustness.disguises import DISGUISES  # noqa: E402

import spamguard.message_text  # noqa: E402
from spamguard.datasets import HAM, SPAM  # noqa: E402
from spamguard.errors import DataError  # noqa: E402
from spamguard.paths import datasets_dir  # noqa: E402

TODAY = spamguard.message_text.normalize_text


def normalize_at(rev: str, scratch: Path) -> ModuleType:
    """`spamguard/normalize.py` as it was at `rev`, loaded beside today's."""
    shown = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:spamguard/normalize.py"], capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise SystemExit(f"read_both_ways: no spamguard/normalize.py at {rev!r}: {shown.stderr.strip()}")
    path = scratch / "normalize_at_rev.py"
    path.write_text(shown.stdout, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("normalize_at_rev", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except ImportError as error:  # it needs a module today's spamguard no longer has
        raise SystemExit(f"read_both_ways: spamguard/normalize.py at {rev!r} does not load here: {error}") from None
    if not callable(getattr(module, "normalize_text", None)):
        raise SystemExit(f"read_both_ways: spamguard/normalize.py at {rev!r} has no normalize_text")
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="a git revision whose spamguard/normalize.py to compare")
    parser.add_argument("--train-with", choices=("today", "against"), default="today", help="the reading trained on")
    parser.add_argument("--disguises", default="leetspeak", help=f"comma-separated, of {', '.join(DISGUISES)}")
    bench.add_training_arguments(parser, epochs=3, n_layer=2, n_head=2, n_embd=128)
    args = parser.parse_args()
    if unknown := set(args.disguises.split(",")) - set(DISGUISES):
        parser.error(f"unknown disguise(s) {', '.join(sorted(unknown))}: use {', '.join(DISGUISES)}")
    args.data = args.data or datasets_dir()
    scratch = Path(tempfile.mkdtemp(prefix="spamguard-read-both-ways-"))
    try:
        compare(args, scratch)
    except DataError as error:  # e.g. a --limit too small for every part to hold both labels
        raise SystemExit(f"read_both_ways: {error}") from None
    finally:
        spamguard.message_text.normalize_text = TODAY
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def compare(args: argparse.Namespace, scratch: Path) -> None:
    """Train on one reading, score with both; prints a line per kind, disguise and reading."""
    readings = {"today": TODAY, args.against: normalize_at(args.against, scratch).normalize_text}

    def read_with(name: str) -> None:
        spamguard.message_text.normalize_text = readings[name]

    parts = bench.load_parts(args.data, args.split_seed, args.limit)
    trained_on = "today" if args.train_with == "today" else args.against
    read_with(trained_on)
    train = bench.texts([e for p in parts.values() for e in p[0]], True)
    validation = bench.texts([e for p in parts.values() for e in p[1]], True)
    print(f"training on text read by {trained_on}'s normalize", flush=True)
    model = bench.train_spamguard(train, validation, args, scratch / "model")
    for kind, (_train, _validation, test) in parts.items():
        labels = np.array([e.label for e in test])
        threshold = model.bundle.threshold_for(kind)  # type: ignore[attr-defined]
        for name in [bench.PLAIN, *args.disguises.split(",")]:
            messages = bench.disguised(test, name, args.seed)
            kept = [i for i, m in enumerate(messages) if m is not None]
            for reading in readings:
                read_with(reading)
                scores = np.asarray(model.score_texts([bench.message_text(messages[i]) for i in kept]))  # type: ignore[attr-defined]
                flagged, kept_labels = scores >= threshold, labels[kept]
                spam, ham = flagged[kept_labels == SPAM], flagged[kept_labels == HAM]
                print(
                    f"{kind} {name}, read by {reading}: recall {spam.mean():.1%} ({spam.sum()} of {spam.size} spam), "
                    f"FPR {ham.mean():.1%} ({ham.sum()} of {ham.size} ham)",
                    flush=True,
                )


if __name__ == "__main__":
    sys.exit(main())
