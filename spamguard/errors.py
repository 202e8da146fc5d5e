"""One exception family for the runtime, so the CLI and the plugins can turn any of them into one clear line."""

from __future__ import annotations


class SpamguardError(Exception):
    """Base of every error spamguard raises on purpose; its message is meant for the user, as one line."""


class BundleError(SpamguardError):
    """A model bundle is missing, corrupt, too new, or otherwise unusable."""


class TokenizerError(SpamguardError):
    """The BPE files cannot be turned into GPT-2's tokenizer."""


class DataError(SpamguardError):
    """A labelled data set (an SMS file, a mail source) is missing or malformed."""


class ScoringError(SpamguardError):
    """Scoring failed for a reason spamguard did not foresee (a bug, a library error, memory): the message names
    the original exception's type, which stays chained as `__cause__`."""


def one_line(exc: BaseException) -> str:
    """An exception as one line for a log or a terminal. Our own errors are already written for people; anything
    else gets its type first, so a reader can tell a MemoryError from a RecursionError from a bug."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if isinstance(exc, SpamguardError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
