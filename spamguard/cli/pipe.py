"""`spamguard pipe`: the filter procmail, maildrop and MTA pipe transports run once per message."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from spamguard.cli.options import (
    ByteSize,
    cascade_option,
    model_option,
    precision_option,
    threads_option,
    threshold_option,
)
from spamguard.errors import one_line
from spamguard.plugins.headers import Buffer
from spamguard.plugins.pipe import (
    DEFAULT_MAX_SIZE,
    DEFAULT_TIMEOUT,
    EX_OK,
    EX_TEMPFAIL,
    PipeSettings,
    read_message,
    run_filter,
)


class PassThroughOnUsageError(click.Command):
    """A typo in a procmail recipe must not cost mail: a usage error is reported on stderr, and the message
    still goes through unchanged (exit 0), or the filter exits 75 when `--fail-closed` was among the arguments.

    Any other error the command itself does not handle (the CLI group reports it as one line) exits 75: the
    message may not have been written, and Postfix's pipe(8) bounces mail on any other non-zero status."""

    error_exit_code = EX_TEMPFAIL

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, list(args))
        except click.UsageError as exc:
            fail_closed = "--fail-closed" in args
            action = f"exit {EX_TEMPFAIL} (tempfail)" if fail_closed else "message passed through unchanged"
            click.echo(f"spamguard pipe: {exc.format_message().rstrip('.')}; {action}", err=True)
            if not fail_closed:
                _write([read_message(sys.stdin.buffer)])
            ctx.exit(EX_TEMPFAIL if fail_closed else EX_OK)


def _write(pieces: Sequence[Buffer]) -> None:
    """The pieces one after the other: big ones go from our buffer to the pipe without another copy."""
    out = sys.stdout.buffer
    for piece in pieces:
        out.write(piece)
    out.flush()


@click.command("pipe", cls=PassThroughOnUsageError)
@model_option
@precision_option
@cascade_option
@threshold_option
@click.option(
    "--max-size",
    type=ByteSize(),
    default=DEFAULT_MAX_SIZE,
    show_default=True,
    help="Score only the first SIZE bytes of larger messages (the whole message still passes through).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds allowed for loading the model and scoring; past it the message passes unscored.",
)
@click.option(
    "--fail-closed",
    is_flag=True,
    help=f"On any failure write nothing and exit {EX_TEMPFAIL} (EX_TEMPFAIL) so the MTA retries, "
    "instead of passing the message through unchanged.",
)
@threads_option
@click.option(
    "--max-memory",
    type=ByteSize(),
    help="Address-space limit of the scoring process (e.g. 2G): past it, scoring fails and the message passes.",
)
@click.option(
    "--connect",
    metavar="ADDRESS",
    help="Score in a running 'spamguard milter' (inet:HOST:PORT or unix:/path) instead of loading the model "
    "in this process: much faster per message, as spamc is to spamd. The milter's model and thresholds apply.",
)
def pipe(
    model: str | None,
    precision: str,
    cascade: bool,
    threshold: float | None,
    max_size: int,
    timeout: float,
    fail_closed: bool,
    threads: int | None,
    max_memory: int | None,
    connect: str | None,
) -> None:
    """Read one message on stdin, write it to stdout with X-Spam-Flag, X-Spam-Status and X-Spamguard headers.

    Exit 0 always, unless --fail-closed and scoring failed (then 75)."""
    try:
        raw = read_message(sys.stdin.buffer)
    except (OSError, MemoryError) as exc:  # nothing to pass through: only the MTA still has the message
        click.echo(f"spamguard pipe: cannot read the message: {one_line(exc)}; exit {EX_TEMPFAIL} (tempfail)", err=True)
        sys.exit(EX_TEMPFAIL)
    settings = PipeSettings(
        model=model,
        precision=precision,
        cascade=cascade,
        threshold=threshold,
        max_size=max_size,
        timeout=timeout,
        fail_closed=fail_closed,
        threads=threads,
        connect=connect,
        max_memory=max_memory,
    )
    result = run_filter(raw, settings)
    if result.error:
        click.echo(f"spamguard pipe: {result.error}", err=True)
    if result.output is not None:
        _write(result.output)
    sys.exit(result.exit_code)
