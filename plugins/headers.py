"""The spamguard headers, added to raw mail bytes without touching anything else.

A mail filter must not damage what it passes on: signatures (DKIM) cover header order, folding and the body, and
a message in a legacy charset must stay in that charset. So this module never parses a message into objects and
writes it back: it finds the byte ranges of header fields, cuts out the ones senders may forge (our own names),
and prepends ours, in the line ending the message already uses. Everything is bytes in, bytes out, and pure.

Lines end where Python's mail parser (and so `message_text`) ends them: at CRLF, LF or a bare CR, whichever the
message uses, mixed included. Splitting on LF alone once made a bare-CR message one long "field" named by its
first line, and cutting a forged `X-Spam-Status:` first line then cut the whole message.

The headers go at the top of the header block, where MTAs put trace fields (`Received:`,
`Authentication-Results:`): the newest information first, and a message with a damaged header block or none at
all still gets them in a place every parser reads as headers. The milter inserts them at the same place.

`plan_headers` says what to cut and what to insert; `Rewrite.pieces` are views of the input, so a filter writes
a 300 MB message with our headers without a second copy of it; `check_rewrite` checks a plan independently of
the code that made it (another line splitter, every seam) so that a bug here costs a verdict, never a message."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

FLAG = "X-Spam-Flag"
STATUS = "X-Spam-Status"
SPAMGUARD = "X-Spamguard"
# The fields spamguard writes; incoming copies of these are removed (case-insensitively) before ours are added.
OUR_HEADERS: tuple[str, ...] = (FLAG, STATUS, SPAMGUARD)

# RFC 5322 field name (printable ASCII except colon), then optional whitespace (obsolete syntax) and the colon.
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_EOL = re.compile(rb"\r\n|\r|\n")
# Anything that could break out of a header value or confuse a parser is replaced in the values we write.
_UNSAFE_VALUE = re.compile(r"[^A-Za-z0-9._+-]")

Field = tuple[str, str]
Buffer = bytes | bytearray | memoryview


class VerdictLike(Protocol):
    """What the headers need from `spamguard.Verdict` (typed structurally so importing this module stays cheap:
    the pipe filter starts once per message)."""

    label: str
    score: float
    threshold: float
    model: str
    kind: str  # "mail" or "sms": whose threshold applied
    stage: str  # "student" or "full": which model of a cascade decided (`spamguard.cascade`)
    reason: str | None  # why an unsure verdict is not its score's (`Bundle.unseen_script`), for logs and JSON


def _lines(raw: Buffer, start: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each line from `start`, `end` past its line break, or at the end of the data for a last
    line without one."""
    pos = start
    size = len(raw)
    while pos < size:
        newline = _EOL.search(raw, pos)
        end = size if newline is None else newline.end()
        yield pos, end
        pos = end


def _envelope_end(raw: Buffer) -> int:
    """Length of an mbox `From ` envelope line at the very start (procmail and mbox files pass it along): it is
    not a header field, and our headers go after it."""
    if raw[:5] != b"From ":
        return 0
    return next(_lines(raw, 0))[1]


def header_fields(raw: Buffer) -> list[tuple[bytes, int, int]]:
    """Each header field as (name, start, end): the byte range covers the field line and its folded
    continuation lines. The header block ends at the first empty line, or at the first line that is neither a
    field nor a continuation (the body then starts without a separator, as Python's email parser reads it)."""
    fields: list[tuple[bytes, int, int]] = []
    for start, end in _lines(raw, _envelope_end(raw)):
        first = raw[start]
        if first in b"\r\n":  # an empty line
            break
        if first in b" \t":
            if fields:
                name, field_start, _ = fields[-1]
                fields[-1] = (name, field_start, end)
                continue
            # A continuation with no field before it: keep it as a nameless range so it is never cut.
            fields.append((b"", start, end))
            continue
        match = _FIELD_NAME.match(raw, start, end)
        if match is None:
            break
        fields.append((match.group(1), start, end))
    return fields


def line_ending(raw: Buffer) -> bytes:
    """The line break of the message's first line (CRLF in SMTP's wire form and some Maildirs, LF in most files,
    a bare CR in old Mac exports and hostile mail); LF for a message of one line."""
    newline = _EOL.search(raw)
    return b"\n" if newline is None else newline.group()


def _wanted(names: Iterable[str]) -> set[bytes]:
    return {name.lower().encode("ascii") for name in names}


def forged_fields(raw: Buffer, names: Iterable[str] = OUR_HEADERS) -> list[tuple[int, int]]:
    """Byte ranges of the header fields called `names` (any case), folded lines included."""
    wanted = _wanted(names)
    return [(start, end) for name, start, end in header_fields(raw) if name.lower() in wanted]


def remove_headers(raw: Buffer, names: Iterable[str] = OUR_HEADERS) -> bytes:
    """The message without the header fields called `names` (any case), folded lines included; every other byte
    stays as it was."""
    return b"".join(_kept(raw, forged_fields(raw, names)))


def _kept(raw: Buffer, removed: Sequence[tuple[int, int]], start: int = 0, stop: int | None = None) -> list[Buffer]:
    """Views of the bytes of raw[start:stop] outside the `removed` ranges, in order."""
    view = memoryview(raw)
    stop = len(raw) if stop is None else stop
    pieces: list[Buffer] = []
    pos = start
    for cut_start, cut_end in removed:
        if cut_end <= start or cut_start >= stop:
            continue
        if cut_start > pos:
            pieces.append(view[pos:cut_start])
        pos = max(pos, cut_end)
    if pos < stop:
        pieces.append(view[pos:stop])
    return pieces


def format_fields(fields: Sequence[Field], ending: bytes = b"\n") -> bytes:
    return b"".join(f"{name}: {value}".encode("ascii") + ending for name, value in fields)


def _insertion_point(raw: Buffer) -> int:
    """After an mbox `From ` line and after stray continuation lines at the top (which belong to no field: put
    before them, our last header would swallow them)."""
    top = _envelope_end(raw)
    for name, start, end in header_fields(raw):
        if name or start != top:
            break
        top = end
    return top


@dataclass(frozen=True)
class Rewrite:
    """How a message becomes the filtered message: cut the `removed` ranges (forged copies of our headers), and
    put `added` (our header lines) at offset `at` of the input."""

    removed: tuple[tuple[int, int], ...]
    at: int
    added: bytes

    def pieces(self, raw: Buffer) -> list[Buffer]:
        """The filtered message as views of `raw` and our header block, in order: write them one after the other
        (or join them) for the output, without copying the message."""
        return [*_kept(raw, self.removed, 0, self.at), self.added, *_kept(raw, self.removed, self.at)]


def plan_headers(raw: Buffer, fields: Sequence[Field]) -> Rewrite:
    """Remove forged copies of our headers, then put `fields` at the top of the header block, ended the way the
    message ends its lines. The one byte ever added besides the fields: a line ending after a message that is a
    single unterminated envelope or stray line, so our first header starts a line of its own."""
    ending = line_ending(raw)
    at = _insertion_point(raw)
    added = format_fields(fields, ending)
    if at and raw[at - 1] not in b"\r\n":
        added = ending + added
    return Rewrite(tuple(forged_fields(raw)), at, added)


def add_headers(raw: Buffer, fields: Sequence[Field]) -> bytes:
    """`plan_headers` applied: the filtered message as one bytes object."""
    return b"".join(plan_headers(raw, fields).pieces(raw))


def check_rewrite(raw: Buffer, rewrite: Rewrite, names: Iterable[str] = OUR_HEADERS) -> str | None:
    """Why applying `rewrite` to `raw` would change the message beyond "forged copies of `names` removed, our
    header lines added", or None when it would not. Written apart from the code that plans a rewrite (lines are
    split by `bytes.splitlines`, not by `_lines`), so the pipe can refuse a plan a bug made: every removed range
    must be one field of ours with its folded lines and nothing more, the added block our header lines and
    nothing more, and no seam may join a CR and an LF into one line break, which would merge two lines."""
    wanted = _wanted(names)
    pos = 0
    for start, end in rewrite.removed:
        if not pos <= start < end <= len(raw) or start < rewrite.at < end:
            return f"bad removed range {start}-{end}"
        lines = bytes(raw[start:end]).splitlines(keepends=True)
        first = _FIELD_NAME.match(lines[0])
        if first is None or first.group(1).lower() not in wanted:
            return f"removed bytes at {start} are not a field of ours"
        if any(line[:1] not in (b" ", b"\t") for line in lines[1:]):
            return f"the field of ours removed at {start} runs into another line"
        if end < len(raw) and lines[-1][-1:] not in (b"\r", b"\n"):
            return f"the field of ours removed at {start} ends inside a line"
        pos = end
    if not 0 <= rewrite.at <= len(raw):
        return f"insertion point {rewrite.at} is outside the message"
    added = rewrite.added.splitlines(keepends=True)
    if added[:1] and added[0] in (b"\n", b"\r\n", b"\r"):
        added = added[1:]  # the documented line ending after an unterminated first line
    elif rewrite.at and raw[rewrite.at - 1] not in b"\r\n":
        return "the headers would not start a line"
    for line in added:
        field = _FIELD_NAME.match(line)
        if field is None or field.group(1).lower() not in wanted or line[-1:] not in (b"\r", b"\n"):
            return "the added block is not just header lines of ours"
    ends = [(p[0], p[-1]) for p in rewrite.pieces(raw) if len(p)]
    for (_, left), (right, _) in itertools.pairwise(ends):
        if left == 13 and right == 10:
            return "a cut would join a CR and an LF into one line break"
    return None


def _token(value: str) -> str:
    """A model name or version as one safe header token (a bundle's manifest name is not trusted to be one)."""
    return _UNSAFE_VALUE.sub("_", value)[:64] or "unknown"


def verdict_fields(verdict: VerdictLike, version: str) -> list[Field]:
    """The three headers in SpamAssassin's style, so existing procmail/Sieve rules keep working:
    `X-Spam-Flag: YES` only for spam (an unsure verdict is not flagged; its label says so). `autolearn=no`
    after `tests=` as SpamAssassin writes it: rspamd's spamassassin scanner finds the score only when it is
    there (without it rspamd's Lua raises and the SPAMD symbol is lost). `kind=` says whose threshold applied,
    `stage=` which model decided (the student of a cascade, or the full model)."""
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
            f"kind={_token(verdict.kind)} stage={_token(verdict.stage)} model={_token(verdict.model)} "
            f"version={_token(version)}",
        ),
    ]
