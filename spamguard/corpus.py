"""The feedback corpus: messages the filter got wrong, as the user corrected them, kept for the next training.

Layout: `data_dir()/corpus/{ham,spam}/<key>.eml`, the raw bytes as given (so a better text extractor later can
read them again). The key is the sha256 of the message *text* (what the model sees), not of the raw bytes:
the same mail fetched twice differs in its delivery headers, and once the filter has added its `X-Spam-*`
headers it differs again, yet it is one training example. Keyed by raw bytes, correcting a message that was
learned from another copy would leave it in both classes, which teaches the model nothing but noise. Two
different mails with identical text collapse into one, which for training is the same example anyway.

Keys depend on `message_text`: when it changes (as when folded Subject lines began to be unfolded), a message
stored earlier keeps the key the older text gave. Nothing is lost: the raw bytes are what is stored, and training
(`spamguard.mail_sources.read_corpus`) extracts every message again with the current function, deduplicates by
the current text and reads the newest correction first, so a stale key never makes an old label win. What a
stale key does change: learning that message again under the other label adds a second file instead of
moving the first, and `--list` shows both. A key is always made from raw bytes, never from extracted text,
which `message_text` may read differently (a subject such as "To: all staff" looks like a header field).

Only files written here through `learn` count; the runtime keeps no index, the folders are the truth."""

from __future__ import annotations

import email.policy
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import BinaryIO

from spamguard.datasets import LABEL_NAMES as LABELS
from spamguard.errors import SpamguardError
from spamguard.message_text import message_text, strip_final_newline
from spamguard.paths import data_dir
from spamguard.safe_files import NotRegularFile, open_regular

SUFFIX = ".eml"
# A larger message is stored only this far: the text the model sees comes from the head, and a corpus of
# corrections should not grow by a 50 MB attachment each time.
MAX_STORED_BYTES = 16 * 1024 * 1024
_BINARY_PROBE = 64 * 1024

TextFunction = Callable[[bytes], str]


class CorpusError(SpamguardError):
    """A message cannot be learned (unreadable, empty, not text) or the corpus cannot be written."""


@dataclass(frozen=True)
class Learned:
    key: str
    label: str
    status: str  # added | moved | known
    path: Path
    source: str  # the file name as given, `-` for stdin


@dataclass(frozen=True)
class CorpusEntry:
    key: str
    label: str
    path: Path
    size: int
    mtime: float

    def subject(self) -> str:
        """The decoded Subject, for listings; a broken header shows as empty rather than failing the list."""
        try:
            with open(self.path, "rb") as f:
                headers = BytesHeaderParser(policy=email.policy.default).parsebytes(f.read(_BINARY_PROBE))
            return " ".join(str(headers.get("subject", "")).split())
        except Exception:  # a listing shows every entry, whatever a sender put into its Subject
            return ""


def corpus_dir() -> Path:
    return data_dir() / "corpus"


def _check_label(label: str) -> None:
    if label not in LABELS:
        raise ValueError(f"label must be 'ham' or 'spam', got {label!r}")


def message_key(raw: bytes, *, source: str = "-", text_of: TextFunction = message_text) -> str:
    """sha256 of the text the model would see; refuses input that gives the model nothing to learn."""
    if not raw.strip():
        raise CorpusError(f"{source}: empty input, nothing to learn")
    if b"\0" in raw[:_BINARY_PROBE]:
        raise CorpusError(f"{source}: binary data, not a message")
    text = text_of(raw)
    if not text.strip():
        raise CorpusError(f"{source}: no text to learn from (no subject, no text part)")
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def read_message_file(name: str, stdin: BinaryIO | None = None) -> bytes:
    """A message from a path, or from `stdin` (a binary stream) when the name is `-`; a text that is not a mail
    without its trailing line break, as `spamguard check` reads it (`strip_final_newline`)."""
    if name == "-":
        if stdin is None:
            raise CorpusError("-: no standard input to read")
        data = stdin.read(MAX_STORED_BYTES)
    else:
        path = Path(name)
        if path.is_dir():
            raise CorpusError(f"{name} is a folder: learn takes message files (spamguard train reads folders)")
        try:  # a FIFO would block the open until a writer came, a device never ends: regular files only
            f, _ = open_regular(path)
            with f:
                data = f.read(MAX_STORED_BYTES)
        except NotRegularFile as exc:
            raise CorpusError(
                f"{name} is a {exc.kind}, not a message file (to learn from a pipe, give it as standard input)"
            ) from exc
        except OSError as exc:
            raise CorpusError(f"cannot read {name}: {exc.strerror or exc}") from exc
    return strip_final_newline(data)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".learn-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _store(raw: bytes, key: str, label: str, source: str, root: Path) -> Learned:
    target = root / label / f"{key}{SUFFIX}"
    other = root / LABELS[1 - LABELS.index(label)] / f"{key}{SUFFIX}"
    if target.exists():
        status = "known"
    else:
        try:
            _write_atomic(target, raw[:MAX_STORED_BYTES])
        except OSError as exc:
            raise CorpusError(f"cannot write the corpus at {root}: {exc.strerror or exc}") from exc
        status = "added"
    if other.exists():
        other.unlink()
        status = "moved"
    return Learned(key, label, status, target, source)


def learn(
    raw: bytes,
    label: str,
    *,
    source: str = "-",
    text_of: TextFunction = message_text,
    root: Path | None = None,
) -> Learned:
    """Store `raw` as `label`. A message already stored under the other label is moved (the newest correction
    wins); one already stored under this label is left as it is."""
    _check_label(label)
    key = message_key(raw, source=source, text_of=text_of)
    return _store(raw, key, label, source, root or corpus_dir())


def learn_files(
    names: list[str],
    label: str,
    *,
    stdin: BinaryIO | None = None,
    text_of: TextFunction = message_text,
    root: Path | None = None,
) -> list[Learned]:
    """All or nothing: every input is read and checked before the first one is stored, so a typo in the third
    file name does not leave the first two half-learned."""
    _check_label(label)
    if names.count("-") > 1:
        raise CorpusError("standard input (-) can be read only once")
    inputs = [(name, read_message_file(name, stdin)) for name in names]
    keys = [message_key(raw, source=name, text_of=text_of) for name, raw in inputs]
    return [_store(raw, key, label, name, root or corpus_dir()) for (name, raw), key in zip(inputs, keys, strict=True)]


def entries(root: Path | None = None) -> list[CorpusEntry]:
    """Every stored message, ham first, oldest first within a label."""
    root = root or corpus_dir()
    found = []
    for label in LABELS:
        folder = root / label
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") or path.suffix != SUFFIX or not path.is_file():
                continue
            stat = path.stat()
            found.append(CorpusEntry(path.stem, label, path, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda e: (LABELS.index(e.label), e.mtime, e.key))


def stats(root: Path | None = None) -> dict[str, int]:
    counts = dict.fromkeys(LABELS, 0)
    for entry in entries(root):
        counts[entry.label] += 1
    return counts
