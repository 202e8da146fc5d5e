"""The options every command that trains a model shares (`train`, and `distill` for its student), defined once so
that one name means one thing with one type, default and help text in both."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from spamguard.training.defaults import DEFAULT_LR_SCHEDULE, LR_SCHEDULES, WARMUP_SHARE

F = TypeVar("F", bound=Callable[..., object])


def schedule_options(default: str = DEFAULT_LR_SCHEDULE) -> Callable[[F], F]:
    """`--lr-schedule` (with this command's default) and `--max-grad-norm`."""

    def apply(command: F) -> F:
        command = click.option(
            "--max-grad-norm",
            type=click.FloatRange(min=0.0, min_open=True),
            help="Clip the gradients' global norm to this (1.0 is usual from random weights); default: no clipping.",
        )(command)
        return click.option(
            "--lr-schedule",
            type=click.Choice(LR_SCHEDULES),
            default=default,
            show_default=True,
            help=f"constant, or a linear warm-up over {WARMUP_SHARE:.0%} of the steps and a cosine decay to zero.",
        )(command)

    return apply
