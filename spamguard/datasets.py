"""Labelled messages without torch: the `Example` that training and `spamguard eval` both consume, the two
labels, and the one reader of SMS TSV files (`ham<TAB>text` lines, as the UCI SMS Spam Collection). Mail
(Maildir, mbox, folders of raw messages) is read by `spamguard.mail_sources`.

Every example carries its kind, `mail` or `sms`, decided by the runtime's one rule
(`spamguard.message_text.message_kind`) on the raw input as it was read, not on the extracted text: a mail's
text no longer starts with its headers, so the text alone would call every mail an SMS. Training splits and
weighs by kind, chooses a threshold per kind, and reports figures per kind with it.

These live in the runtime because `spamguard eval` runs on a mail host, which has no `spamguard.training`;
the training half imports them from here, so there is one definition of each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spamguard.errors import DataError
from spamguard.message_text import KINDS, message_kind, message_text

HAM, SPAM = 0, 1
LABELS = {"ham": HAM, "spam": SPAM}
LABEL_NAMES = ("ham", "spam")  # indexed by label


@dataclass(frozen=True)
class Example:
    text: str  # what the model reads: `message_text` of a mail or an SMS (normalized either way)
    label: int  # HAM or SPAM
    source: str = ""  # where it came from (a file and line, a mail file, `mbox#N`), for reports
    # MAIL or SMS: `message_kind` of the raw input. Readers of mail pass it; left out, the text is taken to be
    # the raw input itself (an SMS, a test's bare text) and the same rule is applied to it.
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", message_kind(self.text))
        elif self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


def read_sms_tsv(path: Path) -> list[Example]:
    """Lines `ham<TAB>text` / `spam<TAB>text`; blank lines are skipped. No quoting rules (54 texts of the UCI
    collection begin with a double quote). A malformed line is an error naming its number, so a wrong file
    is caught before hours of training or a misleading evaluation."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"data file not found: {path}") from exc
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}") from exc
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
        # The text the model reads: an SMS goes through the same normalization as a mail (`message_text`).
        examples.append(Example(message_text(message), LABELS[label], f"{path.name}:{number}", message_kind(message)))
    if not examples:
        raise DataError(f"{path} holds no messages")
    return examples
