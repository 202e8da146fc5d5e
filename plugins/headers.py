"""The spamguard headers, added to raw mail bytes without touching anything else.

A mail filter must not damage what it passes on: signatures (DKIM) cover header order, folding and the body, and
a message in a legacy charset must stay in that charset. So this module never parses a message into objects and
writes it back: it finds the byte ranges of header fields, cuts out the ones senders may forge (our own names),
and prepends ours, in the line ending the message already uses. Everything is bytes in, bytes out, and pure.

The headers go at the top of the header block, where MTAs put trace fields (`Received:`,
`Authentication-Results:`): the newest information first, and a message with a damaged header block or none at
all still gets them in a place every parser reads as headers. The milter inserts them at the same place."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

FLAG = "X-Spam-Flag"
STATUS = "X-Spam-Status"
SPAMGUARD = "X-Spamguard"
# The fields spamguard writes; incoming copies of these are removed (case-insensitively) before ours are added.
OUR_HEADERS: tuple[str, ...] = (FLAG, STATUS, SPAMGUARD)

# RFC 5322 field name (printable ASCII except colon), then optional whitespace (obsolete syntax) and the colon.
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# Anything that could break out of a header value or confuse a parser is replaced in the values we write.
_UNSAFE_VALUE = re.compile(r"[^A-Za-z0-9._+-]")

Field = tuple[str, str]


class VerdictLike(Protocol):
    """What the headers need from `spamguard.Verdict` (typed structurally so importing this module stays cheap:
    the pipe filter starts once per message)."""

    label: str
    score: float
    threshold: float
    model: str


def _lines(raw: bytes, start: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each line from `start`, `end` past its LF (or at the end of the data for a last line
    without one)."""
    pos = start
    size = len(raw)
    while pos < size:
        newline = raw.find(b"\n", pos)
        end = size if newline < 0 else newline + 1
        yield pos, end
        pos = end


def _envelope_end(raw: bytes) -> int:
    """Length of an mbox `From ` envelope line at the very start (procmail and mbox files pass it along): it is
    not a header field, and our headers go after it."""
    if not raw.startswith(b"From "):
        return 0
    newline = raw.find(b"\n")
    return len(raw) if newline < 0 else newline + 1


def header_fields(raw: bytes) -> list[tuple[bytes, int, int]]:
    """Each header field as (name, start, end): the byte range covers the field line and its folded
    continuation lines. The header block ends at the first empty line, or at the first line that is neither a
    field nor a continuation (the body then starts without a separator, as Python's email parser reads it)."""
    fields: list[tuple[bytes, int, int]] = []
    for start, end in _lines(raw, _envelope_end(raw)):
        line = raw[start:end]
        if line in (b"\n", b"\r\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if fields:
                name, field_start, _ = fields[-1]
                fields[-1] = (name, field_start, end)
                continue
            # A continuation with no field before it: keep it as a nameless range so it is never cut.
            fields.append((b"", start, end))
            continue
        match = _FIELD_NAME.match(line)
        if match is None:
            break
        fields.append((match.group(1), start, end))
    return fields


def line_ending(raw: bytes) -> bytes:
    """CRLF when the message's first line ends in CRLF (SMTP wire form, some Maildirs), else LF."""
    newline = raw.find(b"\n")
    return b"\r\n" if newline > 0 and raw[newline - 1 : newline] == b"\r" else b"\n"


def remove_headers(raw: bytes, names: Iterable[str] = OUR_HEADERS) -> bytes:
    """The message without the header fields called `names` (any case), folded lines included; every other byte
    stays as it was."""
    wanted = {name.lower().encode("ascii") for name in names}
    kept: list[bytes] = []
    pos = 0
    for name, start, end in header_fields(raw):
        if name.lower() in wanted:
            kept.append(raw[pos:start])
            pos = end
    if pos == 0:
        return raw
    kept.append(raw[pos:])
    return b"".join(kept)


def format_fields(fields: Sequence[Field], ending: bytes = b"\n") -> bytes:
    return b"".join(f"{name}: {value}".encode("ascii") + ending for name, value in fields)


def _insertion_point(raw: bytes) -> int:
    """After an mbox `From ` line and after stray continuation lines at the top (which belong to no field: put
    before them, our last header would swallow them)."""
    top = _envelope_end(raw)
    for name, start, end in header_fields(raw):
        if name or start != top:
            break
        top = end
    return top


def add_headers(raw: bytes, fields: Sequence[Field]) -> bytes:
    """Remove forged copies of our headers, then put `fields` at the top of the header block, ended the way the
    message ends its lines. The one byte ever added besides the fields: a line ending after a message that is a
    single unterminated envelope or stray line, so our first header starts a line of its own."""
    cleaned = remove_headers(raw)
    ending = line_ending(raw)
    top = _insertion_point(cleaned)
    added = format_fields(fields, ending)
    if top and cleaned[top - 1 : top] != b"\n":
        added = ending + added
    return cleaned[:top] + added + cleaned[top:]


def _token(value: str) -> str:
    """A model name or version as one safe header token (a bundle's manifest name is not trusted to be one)."""
    return _UNSAFE_VALUE.sub("_", value)[:64] or "unknown"


def verdict_fields(verdict: VerdictLike, version: str) -> list[Field]:
    """The three headers in SpamAssassin's style, so existing procmail/Sieve rules keep working:
    `X-Spam-Flag: YES` only for spam (an unsure verdict is not flagged; its label says so). `autolearn=no`
    after `tests=` as SpamAssassin writes it: rspamd's spamassassin scanner finds the score only when it is
    there (without it rspamd's Lua raises and the SPAMD symbol is lost)."""
    is_spam = verdict.label == "spam"
    return [
        (FLAG, "YES" if is_spam else "NO"),
        (
            STATUS,
            f"{'Yes' if is_spam else 'No'}, score={verdict.score:.2f} required={verdict.threshold:.2f} "
            f"tests=SPAMGUARD autolearn=no version={_token(version)}",
        ),
        (
            SPAMGUARD,
            f"label={_token(verdict.label)} score={verdict.score:.4f} threshold={verdict.threshold:.4f} "
            f"model={_token(verdict.model)} version={_token(version)}",
        ),
    ]
