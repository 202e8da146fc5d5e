from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from own_mail_helpers import make_message

from spamguard.datasets import HAM, SPAM
from spamguard.errors import DataError
from spamguard.mail_sources import (
    detect_kind,
    format_reports,
    not_a_message,
    read_labelled,
    read_mail_source,
    unquote_mboxrd,
)
from spamguard.message_text import message_text

from conftest import MAIL_DIR

TEXT = message_text


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def test_maildir_reads_cur_and_new_with_flags_and_skips_tmp_and_dot_files(tmp_path: Path) -> None:
    box = _maildir(tmp_path / "Maildir")
    _write(box / "cur" / "1035000000.M1P1.host:2,S", make_message("Seen message", "read already"))
    _write(box / "cur" / "1035000001.M2P1.host:2,FRS", make_message("Flagged reply", "answered and flagged"))
    _write(box / "new" / "1035000002.M3P1.host", make_message("New arrival", "not yet seen"))
    _write(box / "tmp" / "1035000003.M4P1.host", make_message("Half delivered", "still being written"))
    _write(box / "cur" / ".dovecot-uidlist", b"3 V1 N4\n")
    _write(box / ".subscriptions", b"Junk\n")

    assert detect_kind(box) == "maildir"
    examples, report = read_mail_source(box, HAM, text_of=TEXT)
    subjects = sorted(e.text.splitlines()[0] for e in examples)
    assert subjects == ["Flagged reply", "New arrival", "Seen message"]
    assert all(e.label == HAM for e in examples)
    assert (report.kind, report.read, report.used, report.duplicates, sum(report.skipped.values())) == (
        "maildir",
        3,
        3,
        0,
        0,
    )
    assert {Path(e.source).name for e in examples} >= {"1035000000.M1P1.host:2,S", "1035000002.M3P1.host"}


MBOX = b"""From alice@example.org Mon Sep  2 10:00:00 2002
From: alice@example.org
Subject: first

>From the start this line was quoted.
>>From here on it was quoted twice.
Not >From in the middle.

From bob@example.org Mon Sep  2 11:00:00 2002
From: bob@example.org
Subject: second

body of the second

From carol@example.org Mon Sep  2 12:00:00 2002
From: carol@example.org
Subject: third

body of the third
"""


def test_mbox_splits_messages_and_undoes_from_quoting(tmp_path: Path) -> None:
    path = _write(tmp_path / "inbox.mbox", MBOX)
    assert detect_kind(path) == "mbox"
    examples, report = read_mail_source(path, SPAM, text_of=TEXT)
    assert (report.read, report.used) == (3, 3)
    assert [e.source for e in examples] == [f"{path}#1", f"{path}#2", f"{path}#3"]
    first = examples[0].text
    assert "\nFrom the start this line was quoted." in first
    assert ">From the start" not in first
    assert "\n>From here on it was quoted twice." in first
    assert "Not >From in the middle." in first
    assert "From " not in examples[1].text.splitlines()[0]


def test_unquote_only_touches_quoted_from_lines() -> None:
    assert unquote_mboxrd(b">From a\n>>From b\n> From c\nx>From d\n") == b"From a\n>From b\n> From c\nx>From d\n"


def test_mbox_tail_of_an_unquoted_from_line_is_skipped_not_trained_on(tmp_path: Path) -> None:
    data = b"From a@b Mon Sep  2 10:00:00 2002\nFrom: a@b\nSubject: one\n\nhello\nFrom me to you, a poem\nroses\n"
    _, report = read_mail_source(_write(tmp_path / "sloppy", data), HAM, text_of=TEXT)
    assert (report.read, report.used) == (2, 1)
    assert report.skipped == Counter({"not a mail message (no header block)": 1})


def test_folder_skips_non_messages_with_reasons(tmp_path: Path) -> None:
    folder = tmp_path / "spam"
    _write(folder / "00001.7c53336b", make_message("Cheap meds", "buy now"))
    _write(folder / "offer.eml", make_message("You won", "claim your prize", extra="X-Mailer: bulk\n"))
    envelope = b"From spammer@example.com  Thu Aug 22 12:36:23 2002\n" + make_message("Envelope kept", "as saved")
    _write(folder / "saved", envelope)
    _write(folder / "deeper" / "00002.abc", make_message("In a subfolder", "still mail"))
    _write(folder / "cmds", b"mv 00001.7c53336b37003a9286aba55d2945844c 00001.7c53336b\n")
    _write(folder / "README", b"Spam collected in 2002.\nSee the licence.\n")
    _write(folder / "notes.txt", b"Title: my notes\n\nnothing to see\n")
    _write(folder / "image.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    _write(folder / "empty.eml", b"")
    _write(folder / ".hidden.eml", make_message("Hidden", "editor backup"))
    (folder / "gone.eml").symlink_to(folder / "nowhere")
    os.mkfifo(folder / "pipe")

    assert detect_kind(folder) == "folder"
    examples, report = read_mail_source(folder, SPAM, text_of=TEXT)
    assert sorted(e.text.splitlines()[0] for e in examples) == [
        "Cheap meds",
        "Envelope kept",
        "In a subfolder",
        "You won",
    ]
    assert report.read == 11
    assert report.skipped == Counter(
        {
            "not a mail message (no header block)": 3,
            "binary file": 1,
            "empty file": 1,
            "unreadable (dangling symlink)": 1,
            "not a regular file (FIFO)": 1,
        }
    )
    assert report.skipped_example["binary file"] == str(folder / "image.gif")
    line = report.line()
    assert line.startswith(f"spam {folder} (folder): read 11, used 4, duplicates 0, conflicts 0, skipped 7 (")
    assert f"empty file: 1, e.g. {folder / 'empty.eml'}" in line


def test_single_message_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.eml", make_message("Just one", "body"))
    assert detect_kind(path) == "message"
    examples, report = read_mail_source(path, HAM, text_of=TEXT)
    assert [e.text.splitlines()[0] for e in examples] == ["Just one"] and report.used == 1


def test_missing_source_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"^mail source not found: {tmp_path / 'nope'}$"):
        read_mail_source(tmp_path / "nope", HAM, text_of=TEXT)


def test_failing_text_function_and_empty_text_skip_one_message(tmp_path: Path) -> None:
    folder = tmp_path / "ham"
    _write(folder / "a", make_message("fine", "text"))
    _write(folder / "b", make_message("boom", "text"))

    def fragile(raw: bytes) -> str:
        if b"boom" in raw:
            raise ValueError("bad charset")
        return TEXT(raw)

    examples, report = read_mail_source(folder, HAM, text_of=fragile)
    assert len(examples) == 1 and report.skipped == Counter({"text extraction failed (ValueError)": 1})
    _, report = read_mail_source(folder, HAM, text_of=lambda raw: "  \n")
    assert report.skipped == Counter({"no text (no subject, no text part)": 2})


def test_dedup_by_text_across_sources_first_label_wins(tmp_path: Path) -> None:
    message = make_message("Same words", "identical body")
    relayed = b"Received: from relay.example.net by mx.example.org; Mon, 2 Sep 2002 10:00:01 +0000\n" + message
    corrections = _write(tmp_path / "corpus" / "x.eml", message)
    ham = tmp_path / "ham"
    _write(ham / "1", message)
    _write(ham / "2", relayed)  # different bytes, different Message-ID position, same text
    _write(ham / "3", make_message("Other", "different body"))
    spam = _maildir(tmp_path / "spam")
    _write(spam / "cur" / "9:2,S", relayed)

    examples, reports = read_labelled(sources=[(corrections, SPAM), (ham, HAM), (spam, SPAM)], text_of=TEXT)
    assert [(r.used, r.duplicates, r.conflicts) for r in reports] == [(1, 0, 0), (1, 0, 2), (0, 1, 0)]
    assert sorted((e.text.splitlines()[0], e.label) for e in examples) == [("Other", HAM), ("Same words", SPAM)]
    assert format_reports(reports).count("\n") == 2


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"Return-Path: <a@b>\nReceived: from x\n\tby y\nSubject: hi\n\nbody", None),
        (b"From: a@b\r\nSubject: crlf\r\n\r\nbody", None),
        # what the runtime reads as plain text (`message_kind`) is no message to train on either
        (b"\r\nFrom: a@b\r\nSubject: after a blank line\r\n\r\nbody", "not a mail message (no header block)"),
        (b"Title: my notes\n\nnothing to see\n", "not a mail message (no header block)"),
        (b"Subject: hi", "not a mail message (no header block)"),
        (b"#!/bin/sh\necho hi\n", "not a mail message (no header block)"),
        (b"\x00\x01\x02", "binary file"),
        (b"   \n\n", "empty file"),
    ],
)
def test_message_detection(head: bytes, reason: str | None) -> None:
    assert not_a_message(head) == reason


def test_real_spamassassin_folders_read_without_loss() -> None:
    """The committed SpamAssassin slice (tests/fixtures/README.md): every mail is used but one repeated text per
    label, whatever its charset, structure or first header line."""
    examples, reports = read_labelled(sources=[(MAIL_DIR / "ham", HAM), (MAIL_DIR / "spam", SPAM)], text_of=TEXT)
    for report, folder in zip(reports, ("ham", "spam"), strict=True):
        assert report.read == len(list((MAIL_DIR / folder).iterdir()))
        assert (report.used, report.duplicates, report.conflicts) == (report.read - 1, 1, 0), report.line()
        assert not report.skipped, report.line()
    assert len({e.text for e in examples}) == len(examples)


def test_read_labelled_mixes_sms_file_folder_pair_and_sources_deduplicated(tmp_path: Path) -> None:
    sms = _write(tmp_path / "sms.tsv", b"ham\tsee you at 6\nspam\tWIN a prize now\nham\tsee you at 6\n\n")
    pair = tmp_path / "pair"
    _write(pair / "ham" / "1", make_message("Minutes", "of the meeting"))
    box = _maildir(pair / "spam")
    _write(box / "new" / "1:2,", make_message("Cheap meds", "buy now"))
    extra = _write(
        tmp_path / "more.mbox", b"From a@b Mon Sep  2 10:00:00 2002\n" + make_message("Minutes", "of the meeting")
    )

    examples, reports = read_labelled(data=sms, spam=[extra])
    assert [(r.kind, r.label, r.read, r.used, r.duplicates) for r in reports] == [
        ("sms", HAM, 2, 1, 1),
        ("sms", SPAM, 1, 1, 0),
        ("mbox", SPAM, 1, 1, 0),
    ]
    assert [e.source for e in examples] == [f"{sms}:1", f"{sms}:2", f"{extra}#1"]

    examples, reports = read_labelled(data=pair, spam=[extra])
    assert [(r.kind, r.label, r.used, r.conflicts) for r in reports] == [
        ("folder", HAM, 1, 0),
        ("maildir", SPAM, 1, 0),
        ("mbox", SPAM, 0, 1),  # the same text as a ham read earlier: the earlier label wins
    ]
    with pytest.raises(DataError, match=r"^no data at .*nope: give an SMS TSV file or a folder with ham/ and spam/$"):
        read_labelled(data=tmp_path / "nope")


def test_every_example_carries_the_kind_of_its_raw_message(tmp_path: Path) -> None:
    """The kind is `message_kind` of what was read, not of the extracted text: a mail's text no longer starts
    with headers, and an SMS that looks like a header line is still an SMS."""
    sms = _write(
        tmp_path / "sms.tsv",
        b"ham\tSorry: can't talk now\nham\tFrom: Mom - call me asap\nspam\tSubject: WIN a prize, txt CLAIM to 80086\n"
        b"ham\tRe: dinner? Date: Friday 8pm\n",
    )
    folder = tmp_path / "mixed"
    _write(
        folder / "mail.eml", make_message("From: the desk of the director", "a mail whose subject reads as a header")
    )
    _write(folder / "saved", b"From a@b Mon Sep  2 10:00:00 2002\n" + make_message("Saved", "with its envelope"))
    _write(folder / "cmds", b"mv 00001.7c53336b 00001.7c53336b37003a9286aba55d2945844c\n")
    phone = tmp_path / "phone"
    _write(phone / "sms1.txt", b"Sorry: can't talk now, call you later\n")
    _write(phone / "sms2.txt", "Re: dinner\n\nat 8? \u00e0 bient\u00f4t".encode())
    _write(phone / "binary.bin", b"\x00\x01 no text")
    _write(phone / "long.txt", b"word " * 5000)  # 25 kB of text: a README, not an SMS

    examples, _ = read_labelled(data=sms)
    assert [e.kind for e in examples] == ["sms"] * 4
    assert read_labelled(ham=[phone])[0] == []  # training reads mail only from folders

    examples, reports = read_labelled(ham=[folder, phone], sms_files=True)
    kinds = {Path(e.source).name: e.kind for e in examples}
    assert kinds == {"mail.eml": "mail", "saved": "mail", "sms1.txt": "sms", "sms2.txt": "sms"}
    assert examples[0].text.startswith("From: the desk of the director")  # the subject, read as text
    mixed, texts = reports
    assert mixed.skipped == Counter({"not a mail message (no header block)": 1})  # beside mail, cmds is no SMS
    assert texts.line().startswith(
        f"ham {phone} (folder): read 4, used 2, duplicates 0, conflicts 0, skipped 2, kinds: mail 0, sms 2 ("
    )
    assert texts.to_dict()["kinds"] == {"mail": 0, "sms": 2} and mixed.to_dict()["kinds"] == {"mail": 2, "sms": 0}


def test_an_example_made_from_bare_text_takes_the_kind_of_that_text() -> None:
    from spamguard.datasets import Example

    assert Example("Sorry: can't talk now", HAM).kind == "sms"
    assert Example("From: a@b\nSubject: hi\n\nbody", SPAM).kind == "mail"
    assert Example("hi", HAM, kind="mail").kind == "mail"  # a reader that knows the raw message says so
    with pytest.raises(ValueError, match=r"^kind must be one of mail, sms, got 'fax'$"):
        Example("hi", HAM, kind="fax")
