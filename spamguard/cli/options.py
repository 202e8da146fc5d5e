"""The options every command that scores messages shares (`check`, `eval`, `pipe`, `milter`, the servers),
defined once so that one name means one thing with one type, default and help text everywhere; and
`ByteSize`, the type of every size option.

Each is a decorator: `@model_option` on a click command adds `--model/-m` and passes `model` to it."""

from __future__ import annotations

from typing import ClassVar

import click

from spamguard.bundle import PRECISIONS

model_option = click.option(
    "--model", "-m", help="Model name or bundle path (default: $SPAMGUARD_MODEL, then the default model)."
)
threshold_option = click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    help="Spam when P(spam) >= this, for both kinds (default: the model's threshold for each message's kind).",
)
precision_option = click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Which of the bundle's models scores: auto takes int8 when the bundle has it (fp32 on a GPU).",
)
cascade_option = click.option(
    "--cascade/--no-cascade",
    default=True,
    show_default=True,
    help="With a bundle that has a student ('spamguard distill'): the student decides the messages it is sure of "
    "and the full model the rest; --no-cascade: the full model decides every message.",
)
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="onnxruntime intra-op threads per scoring call (default: one per physical core).",
)


class ByteSize(click.ParamType):
    """A size in bytes: `512000`, `500K`, `2M` (binary units, as spamc counts)."""

    name = "SIZE"
    _units: ClassVar[dict[str, int]] = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B")
        unit = text[-1:] if text[-1:] in self._units else ""  # "" for a bare number (or empty text)
        number = text[: len(text) - len(unit)]
        if not number.isdigit() or int(number) < 1:
            self.fail(f"{value!r} is not a size (examples: 512000, 500K, 2M)", param, ctx)
        return int(number) * self._units[unit]
