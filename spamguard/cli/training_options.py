"""The options every command that trains a model shares (`train`, and `distill` for its student), defined once so
that one name means one thing with one type, default and help text in both."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import click

from spamguard.training.defaults import DEFAULT_LR_SCHEDULE, LR_SCHEDULES, WARMUP_SHARE

F = TypeVar("F", bound=Callable[..., object])


def _clipping(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    """0 is no clipping (None); NaN is refused here, before any data is read (click's range lets it through)."""
    if value is not None and math.isnan(value):
        raise click.BadParameter("must be a number, not NaN")
    return value or None


def schedule_options(schedule: str = DEFAULT_LR_SCHEDULE, clipping: float | None = None) -> Callable[[F], F]:
    """`--lr-schedule` and `--max-grad-norm`, with this command's defaults (`train`: the book's constant rate for
    the frozen-backbone recipe; `distill`: cosine and clipping, for a student trained from random weights)."""

    def apply(command: F) -> F:
        command = click.option(
            "--max-grad-norm",
            type=click.FloatRange(min=0.0),
            default=clipping,
            show_default=clipping is not None,
            callback=_clipping,
            help="Clip the gradients' global norm to this (1.0 is usual from random weights); 0: no clipping."
            + ("" if clipping is not None else " Default: no clipping."),
        )(command)
        return click.option(
            "--lr-schedule",
            type=click.Choice(LR_SCHEDULES),
            default=schedule,
            show_default=True,
            help=f"constant, or a linear warm-up over {WARMUP_SHARE:.0%} of the steps and a cosine decay to zero.",
        )(command)

    return apply
