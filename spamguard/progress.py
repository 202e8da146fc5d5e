"""Progress of long work (training epochs, prefix passes, reading a mailbox): a tqdm bar on a terminal, nothing
when stderr is a log file or a pipe. Redrawn bars would write hundreds of kilobytes into a log; there the work
reports one line per step instead (each epoch's figures, each source's counts), through its `log` function.

tqdm comes with the `train` extra. A mail host running `spamguard eval` may not have it: then progress is
silent rather than an import error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], *, desc: str, unit: str = "it", total: int | None = None, file: IO[str] | None = None
) -> Iterable[T]:
    """`items`, with a bar on `file` (default stderr) only when that is a terminal; cleared when done."""
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    # disable=None is tqdm's own test: no bar unless the stream is a TTY
    return tqdm(items, desc=desc, unit=unit, total=total, leave=False, disable=None, file=file)
