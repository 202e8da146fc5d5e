"""Labelled messages for `spamguard eval`, read without torch: an SMS TSV file (`ham<TAB>text` lines, as the
UCI SMS Spam Collection) or a folder with `ham/` and `spam/` subfolders of raw mail, one message per file.

The TSV rules are those of `spamguard.training.data.read_sms_collection` (no quoting: 54 SMS begin with a
double quote); the runtime keeps its own reader because a mail host has no `spamguard.training`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spamguard.errors import SpamguardError
from spamguard.message_text import MAX_PARSE_BYTES

HAM, SPAM = 0, 1
LABELS = {"ham": HAM, "spam": SPAM}


class DataError(SpamguardError):
    """A labelled data set is missing or malformed."""


@dataclass(frozen=True)
class Labelled:
    message: str | bytes  # SMS text, or a mail's raw bytes
    label: int  # HAM or SPAM
    source: str  # file (and line) it came from, for reports


def read_sms_tsv(path: Path) -> list[Labelled]:
    """Lines `ham<TAB>text` / `spam<TAB>text`; blank lines are skipped, anything else is an error naming the
    line, so a wrong file is caught before a model is scored on it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text") from exc
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, message = line.partition("\t")
        if not tab or label not in LABELS:
            shown = line[:40] + ("..." if len(line) > 40 else "")
            raise DataError(f"{path}:{number}: expected 'ham<TAB>text' or 'spam<TAB>text', got {shown!r}")
        examples.append(Labelled(message, LABELS[label], f"{path.name}:{number}"))
    if not examples:
        raise DataError(f"{path} holds no messages")
    return examples


def read_mail_folders(path: Path) -> list[Labelled]:
    """Every regular, non-hidden file under `path/ham` and `path/spam` (recursively, so a Maildir's
    cur/ and new/ work too). Only the head of a huge message is read: `message_text` parses no more."""
    path = Path(path)
    examples = []
    for name, label in LABELS.items():
        folder = path / name
        if not folder.is_dir():
            raise DataError(f"{path} has no {name}/ folder (expected ham/ and spam/ with one mail per file)")
        for file in sorted(folder.rglob("*")):
            if not file.is_file() or any(part.startswith(".") for part in file.relative_to(folder).parts):
                continue
            try:
                with open(file, "rb") as f:
                    message = f.read(MAX_PARSE_BYTES)
            except OSError as exc:
                raise DataError(f"cannot read {file}: {exc.strerror}") from exc
            examples.append(Labelled(message, label, str(file.relative_to(path))))
    if not examples:
        raise DataError(f"{path}/ham and {path}/spam hold no messages")
    return examples


def read_labelled(path: Path) -> list[Labelled]:
    """A folder means ham/ + spam/ mail folders, a file means an SMS TSV."""
    path = Path(path)
    if path.is_dir():
        return read_mail_folders(path)
    if not path.exists():
        raise DataError(f"no data at {path}: give an SMS TSV file or a folder with ham/ and spam/")
    return read_sms_tsv(path)
