"""`spamguard check`: verdicts for files or stdin, with bogofilter's exit codes so shell scripts can branch.

Exit codes: 0 spam, 1 ham, 2 unsure, 3 error. With several inputs: 3 if any input could not be read or
scored, else 0 if any is spam, else 2 if any is unsure, else 1 (all ham): "did anything look like spam?".
An error is never a verdict: whatever fails (a bad model, a bug, RecursionError, MemoryError) is one line and
exit 3, for the whole run or for the one input it concerns."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO

import click

from spamguard.cli import DEBUG_ENV
from spamguard.cli.options import cascade_option, model_option, precision_option, threads_option, threshold_option
from spamguard.errors import SpamguardError, one_line
from spamguard.message_text import MAX_PARSE_BYTES, strip_final_newline

if TYPE_CHECKING:
    from spamguard.classifier import Classifier, Verdict

EXIT_SPAM, EXIT_HAM, EXIT_UNSURE, EXIT_ERROR = 0, 1, 2, 3
_EXIT_OF = {"spam": EXIT_SPAM, "ham": EXIT_HAM, "unsure": EXIT_UNSURE}
_CHUNK = 256  # inputs scored together: batching pays, memory stays bounded for thousands of files
EXPLAIN_TOP = 5  # parts shown per message by --explain
MAX_STDIN_DRAIN = 256 << 20  # read and dropped past the scored head of stdin, then reading stops


class ExitThreeOnUsageError(click.Command):
    """click exits 2 on a usage error, which here means "unsure": a script must see 3 (error) instead. So does
    the CLI group for any other failure (`error_exit_code`)."""

    error_exit_code = EXIT_ERROR

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = EXIT_ERROR
            raise


def combined_exit(codes: list[int]) -> int:
    """The exit status for several inputs (see the module docstring)."""
    for code in (EXIT_ERROR, EXIT_SPAM, EXIT_UNSURE):
        if code in codes:
            return code
    return EXIT_HAM


def _read_head(stream: BinaryIO, drain: bool) -> bytes:
    """The part of a message that is ever parsed. Up to `MAX_STDIN_DRAIN` more of a pipe is read and dropped,
    so a writer of a big message does not die of a broken pipe; an endless one (`cat /dev/zero |`) is left
    there, with one line on stderr, since nothing past the head could change the verdict."""
    head = stream.read(MAX_PARSE_BYTES)
    if drain and len(head) == MAX_PARSE_BYTES:
        left = MAX_STDIN_DRAIN
        while left and (chunk := stream.read(min(1 << 20, left))):
            left -= len(chunk)
        if not left and stream.read(1):
            click.echo(
                f"Warning: stopped reading stdin after {(MAX_PARSE_BYTES + MAX_STDIN_DRAIN) >> 20} MiB; "
                f"only its first {MAX_PARSE_BYTES >> 20} MiB is scored",
                err=True,
            )
    return head


def read_input(name: str) -> bytes:
    """One input's bytes; a text that is not a mail without its trailing line break (`strip_final_newline`)."""
    try:
        if name == "-":
            data = _read_head(sys.stdin.buffer, drain=True)
        else:
            with open(name, "rb") as f:
                data = _read_head(f, drain=False)
    except OSError as exc:
        raise SpamguardError(f"cannot read {name}: {exc.strerror or exc}") from exc
    return strip_final_newline(data)


def _chunks(names: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(names), _CHUNK):
        yield names[start : start + _CHUNK]


def _error(name: str, message: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"input": name, "error": message}))
    else:
        click.echo(f"Error: {message}", err=True)


def _failed(exc: Exception) -> str:
    if os.environ.get(DEBUG_ENV):
        raise exc
    return one_line(exc)


def _classify(clf: Classifier, messages: Sequence[bytes], threshold: float | None) -> list[Verdict | str]:
    """A verdict for each message, or the one line saying why it has none: when a batch fails, its messages are
    scored one by one, so a hostile input costs its own verdict, not its neighbours'."""
    try:
        return list(clf.classify_batch(messages, threshold=threshold))
    except Exception as exc:
        if len(messages) == 1:
            return [f"cannot score: {_failed(exc)}"]
    results: list[Verdict | str] = []
    for message in messages:
        try:
            results.append(clf.classify(message, threshold=threshold))
        except Exception as exc:
            results.append(f"cannot score: {_failed(exc)}")
    return results


@click.command("check", cls=ExitThreeOnUsageError)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@model_option
@threshold_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input on stdout.")
@precision_option
@cascade_option
@threads_option
@click.option(
    "--explain",
    is_flag=True,
    help=f"After each verdict, the {EXPLAIN_TOP} parts (subject, lines, sentences) whose removal lowers the score "
    "most, with the change in P(spam).",
)
def check(
    files: tuple[str, ...],
    model: str | None,
    threshold: float | None,
    as_json: bool,
    precision: str,
    cascade: bool,
    threads: int | None,
    explain: bool,
) -> None:
    """Is each FILE (a raw mail or a text; stdin when none) spam? Exit 0 spam, 1 ham, 2 unsure, 3 error."""
    from spamguard.classifier import Classifier
    from spamguard.explain import explain_with_classifier

    clf = Classifier.load(model, precision=precision, threads=threads, cascade=cascade)  # fails as exit 3
    codes: list[int] = []
    for names in _chunks(files or ("-",)):
        readable: list[bytes] = []
        outcomes: list[str | bytes] = []  # an error message, or the bytes to score
        for name in names:
            try:
                outcomes.append(read_input(name))
                readable.append(outcomes[-1])
            except SpamguardError as exc:
                outcomes.append(str(exc))
        verdicts = iter(_classify(clf, readable, threshold))
        for name, outcome in zip(names, outcomes, strict=True):
            shown = "stdin" if name == "-" else name
            verdict = outcome if isinstance(outcome, str) else next(verdicts)
            explanation = None
            if explain and not isinstance(verdict, str):
                try:
                    explanation = explain_with_classifier(outcome, clf)
                except Exception as exc:
                    verdict = f"cannot explain: {_failed(exc)}"
            if isinstance(verdict, str):
                _error(shown, verdict if isinstance(outcome, str) else f"{shown}: {verdict}", as_json)
                codes.append(EXIT_ERROR)
                continue
            codes.append(_EXIT_OF[verdict.label])
            if as_json:
                extra = {"explain": explanation.to_list(EXPLAIN_TOP)} if explanation else {}
                click.echo(json.dumps({"input": shown, **verdict.to_dict(), **extra}))
                continue
            click.echo(
                f"{shown}: {verdict.label} score={verdict.score:.4f} threshold={verdict.threshold:.4f} "
                f"kind={verdict.kind} model={verdict.model}" + (f" ({verdict.reason})" if verdict.reason else "")
            )
            for line in explanation.lines(EXPLAIN_TOP) if explanation else ():
                click.echo(f"  {line}")
    sys.exit(codes[0] if len(codes) == 1 else combined_exit(codes))
