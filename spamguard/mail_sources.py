"""Labelled messages from where people keep them: Maildirs, mbox files, folders of raw messages, the feedback
corpus of `spamguard learn`, and SMS TSV files, turned into `Example`s through the runtime's message-text
function, so training sees exactly the text the filter sees. `spamguard train` and `spamguard eval` both read
through here (no torch: a mail host evaluates a model too).

Real mailboxes are messy (editor backups, `cmds` files, half-delivered messages, unreadable files), so every
message that cannot be used is counted with a reason instead of stopping a long run.

Deduplication is by the hash of the extracted text, not by Message-ID: spam often has no Message-ID or a
forged one that campaigns reuse, the same mail reaches two folders with different IDs (copies, resends), and
what leaks between train and test is the text the model sees. Hashing keeps the memory per message at 32 bytes.
Only exact duplicates are found; a campaign that varies one random token per copy is not collapsed.

An `Example`'s text is already what the model reads: score it with `Classifier.score_texts`, never by feeding
it to `message_text` again (a subject such as "From: the desk of ..." then reads as a mail header)."""

from __future__ import annotations

import errno
import hashlib
import mailbox
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spamguard.corpus import CorpusEntry, corpus_dir, entries
from spamguard.datasets import HAM, LABEL_NAMES, LABELS, SPAM, Example, read_sms_tsv
from spamguard.errors import DataError
from spamguard.message_text import KINDS, MAIL, SMS, message_kind, message_text
from spamguard.progress import progress as progress_bar
from spamguard.safe_files import NotRegularFile, file_kind, open_regular

TextFunction = Callable[[str | bytes], str]

# A bigger file is read only this far: message_text decodes a bounded head anyway, and one 2 GB attachment in
# a folder must not exhaust memory.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A file that is not a mail is taken as one SMS (where asked: `sms_files`) only when it is UTF-8 text this short:
# an SMS is at most a few concatenated 160-character parts, and a long text file in a mail folder is a README.
MAX_SMS_FILE_BYTES = 16 * 1024
MAILDIR_SUBDIRS = ("cur", "new")  # tmp/ holds messages still being delivered
_MBOXRD_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)
_HEAD_BYTES = 64 * 1024  # enough to see a header block
NOT_A_MAIL = "not a mail message"  # the start of the skip reasons of text without a mail's header block


@dataclass(frozen=True)
class RawMessage:
    """One message's bytes as found on disk, or the reason it cannot be used as a mail."""

    source: str  # path, with `#N` for the N-th message of an mbox, `:N` for the N-th line of an SMS file
    data: bytes | str | None  # raw mail bytes, or an SMS text (a file that is no mail may keep its bytes too)
    skip_reason: str | None = None


@dataclass
class SourceReport:
    """Per-source counts, so a user sees at once which folder contributed what and what was thrown away."""

    path: str
    kind: str  # maildir | mbox | folder | message | corpus | sms
    label: int
    read: int = 0  # everything found, usable or not
    used: int = 0
    duplicates: int = 0  # same text as an earlier message with the same label
    conflicts: int = 0  # same text as an earlier message with the other label (the earlier label wins)
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_example: dict[str, str] = field(default_factory=dict)  # reason -> first source skipped for it
    kinds: Counter[str] = field(default_factory=Counter)  # used messages by `message_kind`: mail, sms

    def skip(self, source: str, reason: str) -> None:
        self.skipped[reason] += 1
        self.skipped_example.setdefault(reason, source)

    def line(self) -> str:
        text = (
            f"{LABEL_NAMES[self.label]} {self.path} ({self.kind}): read {self.read}, used {self.used}, "
            f"duplicates {self.duplicates}, conflicts {self.conflicts}, skipped {sum(self.skipped.values())}"
        )
        expected = SMS if self.kind == "sms" else MAIL
        if self.kinds and set(self.kinds) != {expected}:  # SMS files in a mail folder, a mail line in an SMS file
            text += ", kinds: " + ", ".join(f"{kind} {self.kinds[kind]}" for kind in KINDS)
        if self.skipped:
            reasons = ", ".join(
                f"{reason}: {count}, e.g. {self.skipped_example[reason]}"
                for reason, count in self.skipped.most_common()
            )
            text += f" ({reasons})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """For JSON output and the bundle manifest."""
        return {
            "path": self.path,
            "kind": self.kind,
            "label": LABEL_NAMES[self.label],
            "read": self.read,
            "used": self.used,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "skipped": dict(self.skipped),
            "kinds": {kind: self.kinds[kind] for kind in KINDS},
        }


def is_maildir(path: Path) -> bool:
    return path.is_dir() and all((path / sub).is_dir() for sub in MAILDIR_SUBDIRS)


def detect_kind(path: Path) -> str:
    """`maildir` (cur/ and new/ inside), `folder` (any other directory), `mbox` (a file that begins with a
    `From ` envelope line) or `message` (any other file: one raw message)."""
    path = Path(path)
    if is_maildir(path):
        return "maildir"
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise DataError(f"mail source not found: {path}")
    if not path.is_file():
        raise DataError(f"mail source is neither a folder nor a file: {path}")
    try:
        with open(path, "rb") as f:
            start = f.read(5)
    except OSError as exc:
        raise DataError(f"cannot read mail source {path}: {exc.strerror}") from exc
    return "mbox" if start == b"From " else "message"


def not_a_message(head: bytes) -> str | None:
    """Why these leading bytes are not a mail, or None when they are one by the runtime's own rule
    (`message_kind`): a file in a mail folder that the filter would read as plain text (a README, a script,
    `cmds`) is skipped, not trained on as a message."""
    if not head.strip():
        return "empty file"
    if b"\0" in head:
        return "binary file"
    if message_kind(head) != MAIL:
        return f"{NOT_A_MAIL} (no header block)"
    return None


def sms_text(data: bytes) -> bool:
    """Whether a file that is no mail reads as one SMS: short UTF-8 text without NUL bytes."""
    if not data.strip() or len(data) > MAX_SMS_FILE_BYTES or b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_file(path: Path, max_bytes: int) -> RawMessage:
    """One message file, opened as `safe_files.open_regular` does (links followed: mail folders use them), so
    a FIFO or device put in a message's place is reported by its type, never waited on or read without end. The
    bytes are kept with the reason when they are no mail: `sms_files` may still read them as an SMS."""
    source = str(path)
    try:
        f, _ = open_regular(path)
        with f:
            data = f.read(max_bytes)
    except NotRegularFile as exc:
        return RawMessage(source, None, f"not a regular file ({exc.kind})")
    except OSError as exc:
        return RawMessage(source, None, f"unreadable ({exc.strerror or exc})")
    return RawMessage(source, data, not_a_message(data[:_HEAD_BYTES]))


def _entry(path: Path) -> Path | RawMessage:
    """A folder entry to read (a folder or a regular file, links followed), or why it is skipped: a link that
    leads nowhere, a loop of links, a FIFO, a device (each by its name)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ENOENT and path.is_symlink():
            return RawMessage(str(path), None, "unreadable (dangling symlink)")
        if exc.errno == errno.ELOOP:
            return RawMessage(str(path), None, "unreadable (symlink loop)")
        return RawMessage(str(path), None, f"unreadable ({exc.strerror or exc})")
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return path
    return RawMessage(str(path), None, f"not a regular file ({file_kind(mode)})")


def _regular_files(directory: Path) -> Iterator[Path | RawMessage]:
    """Sorted entries without dot files (editor, Dovecot and Maildir++ bookkeeping), as `_entry` sees them: a
    FIFO, socket or device is reported, never opened (opening a FIFO would block)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        yield RawMessage(str(directory), None, f"unreadable folder ({exc.strerror or exc})")
        return
    for name in names:
        if not name.startswith("."):
            yield _entry(directory / name)


class _Folders:
    """The real folders a walk has entered, by device and inode: links are followed, yet each folder is read
    once, so a link back up the tree (a loop) or a second link to a folder cannot make a walk read its messages
    again and again (two self-referencing links in a 5-file folder once made 232,807 "messages")."""

    def __init__(self) -> None:
        self._seen: set[tuple[int, int]] = set()

    def first_visit(self, folder: Path) -> bool:
        try:
            info = os.stat(folder)
        except OSError:
            return True  # listing it reports why it is unreadable
        key = (info.st_dev, info.st_ino)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


_READ_ALREADY = "folder read already (a link loop, or a second link to it)"


def iter_maildir(
    path: Path, max_bytes: int = MAX_MESSAGE_BYTES, folders: _Folders | None = None
) -> Iterator[RawMessage]:
    """Messages in cur/ and new/. File names carry delivery ids and flags (`1234.host:2,S`); they never matter
    here, because every file is one message whatever its name says."""
    folders = folders if folders is not None else _Folders()
    for sub in MAILDIR_SUBDIRS:
        if not folders.first_visit(Path(path) / sub):
            yield RawMessage(str(Path(path) / sub), None, _READ_ALREADY)
            continue
        for entry in _regular_files(Path(path) / sub):
            if isinstance(entry, RawMessage):
                yield entry
            elif entry.is_dir():
                yield RawMessage(str(entry), None, "not a regular file (folder)")
            else:
                yield _read_file(entry, max_bytes)


def iter_folder(path: Path, max_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[RawMessage]:
    """Every non-hidden file below `path`, one message each (`.eml` or bare); a Maildir inside is read as one.
    Each real folder is read once (`_Folders`), and the walk keeps its own stack, so a deep tree costs no
    recursion."""
    folders = _Folders()
    folders.first_visit(Path(path))
    stack = [_regular_files(Path(path))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif isinstance(entry, RawMessage):
            yield entry
        elif not entry.is_dir():
            yield _read_file(entry, max_bytes)
        elif not folders.first_visit(entry):
            yield RawMessage(str(entry), None, _READ_ALREADY)
        elif is_maildir(entry):
            yield from iter_maildir(entry, max_bytes, folders)
        else:
            stack.append(_regular_files(entry))


def unquote_mboxrd(data: bytes) -> bytes:
    """Undo mbox `From ` quoting: a body line `>From ` was `From ` in the mail as delivered (and `>>From ` was
    `>From `), and the filter at delivery time sees the unquoted line, so training must too."""
    return _MBOXRD_QUOTED.sub(rb"\1", data)


def iter_mbox(path: Path, max_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[RawMessage]:
    """Messages of an mbox file, split by the standard library at `From ` lines. A body line `From ` that the
    writer failed to quote splits a message in two; the tail has no header block and is skipped with that
    reason, not trained on as a message of its own."""
    try:
        box = mailbox.mbox(str(path), factory=None, create=False)
        keys = box.keys()
    except (OSError, mailbox.Error) as exc:
        raise DataError(f"cannot read mbox {path}: {exc}") from exc
    try:
        for number, key in enumerate(keys, start=1):
            source = f"{path}#{number}"
            try:
                data = box.get_bytes(key)
            except (OSError, KeyError) as exc:
                yield RawMessage(source, None, f"unreadable ({exc})")
                continue
            reason = not_a_message(data[:_HEAD_BYTES])
            yield RawMessage(source, None, reason) if reason else RawMessage(source, unquote_mboxrd(data[:max_bytes]))
    finally:
        box.close()


def iter_raw_messages(path: Path, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[str, Iterator[RawMessage]]:
    """(kind, messages) of a mail source, its kind detected from what is on disk."""
    path = Path(path)
    kind = detect_kind(path)
    if kind == "maildir":
        return kind, iter_maildir(path, max_bytes)
    if kind == "folder":
        return kind, iter_folder(path, max_bytes)
    if kind == "mbox":
        return kind, iter_mbox(path, max_bytes)
    return kind, iter([_read_file(path, max_bytes)])


class SeenTexts:
    """Text hashes already used, with their label, shared across all sources of one read."""

    def __init__(self) -> None:
        self.labels: dict[bytes, int] = {}


def _extract(raw: RawMessage, text_of: TextFunction) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason). A failing extractor skips one message; it never ends the run."""
    try:
        text = text_of(raw.data if raw.data is not None else b"")
    except Exception as exc:  # one bad message among thousands must not cost the whole run
        return None, f"text extraction failed ({type(exc).__name__})"
    if not text.strip():
        return None, "no text (no subject, no text part)"
    return text, None


def _sms_candidate(raw: RawMessage) -> bool:
    """A file that is no mail but reads as one SMS (`sms_text`)."""
    return (
        raw.skip_reason is not None
        and raw.skip_reason.startswith(NOT_A_MAIL)
        and isinstance(raw.data, bytes)
        and sms_text(raw.data)
    )


def _collect(
    messages: Iterator[RawMessage],
    report: SourceReport,
    text_of: TextFunction,
    seen: SeenTexts,
    progress: bool,
    sms_files: bool = False,
) -> list[Example]:
    """The usable messages of one source as examples. With `sms_files`, text files that are no mail are read as
    SMS when the source holds no mail at all (a folder of SMS files); beside mail they stay skipped, since
    there they are READMEs and scripts (the SpamAssassin corpus's `cmds`)."""
    examples = []
    texts: list[RawMessage] = []  # SMS candidates, decided once the whole source was seen
    holds_mail = False
    name = Path(report.path).name
    for raw in progress_bar(messages, desc=f"reading {name}", unit="msg") if progress else messages:
        report.read += 1
        if sms_files and _sms_candidate(raw):
            texts.append(raw)
        elif raw.skip_reason is not None:
            report.skip(raw.source, raw.skip_reason)
        else:
            holds_mail = True
            examples += _use(raw, report, text_of, seen)
    for raw in texts:
        if holds_mail:
            report.skip(raw.source, raw.skip_reason or "")
        else:
            examples += _use(RawMessage(raw.source, raw.data), report, text_of, seen)
    return examples


def _use(raw: RawMessage, report: SourceReport, text_of: TextFunction, seen: SeenTexts) -> list[Example]:
    """`raw` as an example, or nothing (counted in `report`) when it has no text or repeats an earlier one."""
    text, reason = _extract(raw, text_of)
    if text is None:
        report.skip(raw.source, reason or "")
        return []
    key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    earlier = seen.labels.get(key)
    if earlier is not None:
        if earlier == report.label:
            report.duplicates += 1
        else:
            report.conflicts += 1
        return []
    seen.labels[key] = report.label
    report.used += 1
    kind = message_kind(raw.data if raw.data is not None else b"")
    report.kinds[kind] += 1
    return [Example(text, report.label, raw.source, kind)]


def read_mail_source(
    path: Path,
    label: int,
    *,
    text_of: TextFunction = message_text,
    seen: SeenTexts | None = None,
    progress: bool = False,
    max_bytes: int = MAX_MESSAGE_BYTES,
    sms_files: bool = False,
) -> tuple[list[Example], SourceReport]:
    """Examples of one source, all with `label`, and its report. Pass the same `seen` to several calls to
    deduplicate across sources (what `read_labelled` does). `sms_files`: in a source without mail, a file that
    is short UTF-8 text (`sms_text`) is read as one SMS instead of skipped (`spamguard eval` on SMS files)."""
    if label not in (HAM, SPAM):
        raise ValueError(f"label must be HAM or SPAM, got {label!r}")
    kind, messages = iter_raw_messages(path, max_bytes)
    report = SourceReport(str(path), kind, label)
    examples = _collect(messages, report, text_of, seen or SeenTexts(), progress, sms_files)
    return examples, report


def _corpus_messages(stored: Sequence[CorpusEntry], max_bytes: int) -> Iterator[RawMessage]:
    """Every stored correction as it is: `learn` accepted it (an SMS text too), so no mail test applies."""
    for entry in stored:
        try:
            with open(entry.path, "rb") as f:
                yield RawMessage(str(entry.path), f.read(max_bytes))
        except OSError as exc:
            yield RawMessage(str(entry.path), None, f"unreadable ({exc.strerror or exc})")


def read_corpus(
    *,
    text_of: TextFunction = message_text,
    seen: SeenTexts | None = None,
    root: Path | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[list[Example], list[SourceReport]]:
    """The feedback corpus of `spamguard learn` as examples, one report per label (ham, then spam).

    Stored messages are read newest first, so when the same text sits under both labels the latest correction
    wins. `learn` moves a message when it is corrected again, but it finds the earlier file by its key, the
    hash of `message_text`; a message stored before `message_text` changed has an older key, and then both
    files stay. Reading by age makes that harmless for training."""
    seen = seen if seen is not None else SeenTexts()
    root = root or corpus_dir()
    reports = {name: SourceReport(str(root / name), "corpus", label) for name, label in LABELS.items()}
    examples: list[Example] = []
    for entry in sorted(entries(root), key=lambda e: (-e.mtime, e.key)):
        examples.extend(_collect(_corpus_messages([entry], max_bytes), reports[entry.label], text_of, seen, False))
    return examples, list(reports.values())


def read_sms_source(
    path: Path, *, text_of: TextFunction = message_text, seen: SeenTexts | None = None
) -> tuple[list[Example], list[SourceReport]]:
    """An SMS TSV file as examples, one report per label, deduplicated with the other sources. A malformed
    line stops the read (`read_sms_tsv`): a file in the wrong format is a mistake to fix, not a message to skip."""
    seen = seen if seen is not None else SeenTexts()
    rows = read_sms_tsv(path)
    examples: list[Example] = []
    reports = []
    for label in (HAM, SPAM):
        report = SourceReport(str(path), "sms", label)
        texts = (RawMessage(f"{path}:{row.source.rpartition(':')[2]}", row.text) for row in rows if row.label == label)
        examples.extend(_collect(texts, report, text_of, seen, progress=False))
        reports.append(report)
    return examples, reports


def _folder_pair(path: Path) -> list[tuple[Path, int]]:
    pair = [(path / name, label) for name, label in LABELS.items()]
    for folder, _ in pair:
        if not folder.exists():
            raise DataError(
                f"{path} has no {folder.name}/ (expected ham/ and spam/, each a Maildir, an mbox or a folder of "
                "messages)"
            )
    return pair


def check_paths(*, data: Path | None = None, sources: Sequence[Path] = ()) -> None:
    """What `read_labelled` checks first, alone: `data` and every mail source exist. Cheap, for a caller that
    must fail before slow work (downloads, training) rather than after it."""
    if data is not None and not Path(data).exists():
        raise DataError(f"no data at {data}: give an SMS TSV file or a folder with ham/ and spam/")
    for path in sources:
        detect_kind(Path(path))


def read_labelled(
    *,
    data: Path | None = None,
    ham: Sequence[Path] = (),
    spam: Sequence[Path] = (),
    sources: Sequence[tuple[Path, int]] = (),
    corpus: bool = False,
    text_of: TextFunction = message_text,
    progress: bool = False,
    max_bytes: int = MAX_MESSAGE_BYTES,
    sms_files: bool = False,
) -> tuple[list[Example], list[SourceReport]]:
    """Every labelled source of `spamguard train` and `eval`, deduplicated across all of them by text, with one
    report per source and label. `data` is an SMS TSV file or a folder holding `ham/` and `spam/`; `ham` and
    `spam` are Maildirs, mbox files, folders or single messages; `sources` are further `(path, label)` pairs.
    `sms_files` as in `read_mail_source`. Every example carries its kind (`message_kind` of the raw message).

    Order decides conflicts (the same text under both labels: the first one read wins): the feedback corpus
    first, so the user's corrections beat a mis-sorted folder, then `data`, then the ham sources, then the
    spam ones, so an ambiguous text counts as ham, the side a filter that must not lose mail errs on."""
    seen = SeenTexts()
    examples: list[Example] = []
    reports: list[SourceReport] = []
    if corpus:
        examples, reports = read_corpus(text_of=text_of, seen=seen, max_bytes=max_bytes)
    pairs = [*((Path(p), HAM) for p in ham), *((Path(p), SPAM) for p in spam), *sources]
    check_paths(data=data)
    if data is not None:
        data = Path(data)
        if data.is_dir():
            pairs = _folder_pair(data) + pairs
        else:
            found, sms_reports = read_sms_source(data, text_of=text_of, seen=seen)
            examples.extend(found)
            reports.extend(sms_reports)
    for path, label in pairs:
        found, report = read_mail_source(
            path, label, text_of=text_of, seen=seen, progress=progress, max_bytes=max_bytes, sms_files=sms_files
        )
        examples.extend(found)
        reports.append(report)
    return examples, reports


def format_reports(reports: Sequence[SourceReport]) -> str:
    return "\n".join(report.line() for report in reports)
