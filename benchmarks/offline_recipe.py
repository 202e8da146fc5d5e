"""The offline configuration's training settings, shared by the benchmarks that train it from random weights
(`bench_cascade.py`, `token_budget.py`): cosine with clipping at 1.0 by default, as docs/training.md recommends
from random weights; `--lr-schedule constant --max-grad-norm 0` gives the book's constant rate of earlier runs."""

from __future__ import annotations

import argparse

from spamguard.training.defaults import LR_SCHEDULES
from spamguard.training.recipe import TrainSettings

OFFLINE_LR = 3e-4


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine", help="of every model this run trains")
    parser.add_argument("--max-grad-norm", type=_clipping, default=1.0, help="likewise; 0: no clipping")


def _clipping(text: str) -> float | None:
    """`--max-grad-norm` as the training settings take it: 0 is None, no clipping."""
    return float(text) or None


def schedule_words(args: argparse.Namespace) -> str:
    """The rate and clipping as a report says them."""
    clipping = f"gradients clipped to norm {args.max_grad_norm:g}" if args.max_grad_norm else "no clipping"
    return f"{args.lr_schedule} learning rate, {clipping}"


def offline_settings(args: argparse.Namespace, *, seed: int) -> TrainSettings:
    """Every weight trained, at OFFLINE_LR with the run's schedule and clipping, for `args.epochs` epochs."""
    return TrainSettings(
        trainable="all",
        epochs=args.epochs,
        lr=OFFLINE_LR,
        lr_schedule=args.lr_schedule,
        max_grad_norm=args.max_grad_norm,
        seed=seed,
    )
