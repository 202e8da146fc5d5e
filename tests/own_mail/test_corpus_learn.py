from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from own_mail_helpers import make_message

from spamguard import corpus
from spamguard.cli import main
from spamguard.corpus import CorpusError, entries, learn, learn_files, stats
from spamguard.datasets import HAM, SPAM
from spamguard.mail_sources import format_reports, read_corpus, read_labelled
from spamguard.message_text import message_text
from spamguard.paths import data_dir

TEXT = message_text
OFFER = make_message("Cheap meds", "Buy now, limited offer.")
RELAYED = b"Received: from relay.example.net by mx.example.org; Mon, 2 Sep 2002 10:00:01 +0000\n" + OFFER


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_learn_stores_under_the_text_hash_in_the_user_data_dir() -> None:
    learned = learn(OFFER, "spam", text_of=TEXT)
    key = hashlib.sha256(TEXT(OFFER).encode()).hexdigest()
    assert learned.status == "added" and learned.key == key
    assert learned.path == data_dir() / "corpus" / "spam" / f"{key}.eml"
    assert learned.path.read_bytes() == OFFER
    assert learn(RELAYED, "spam", text_of=TEXT).status == "known"  # other bytes, same text: one example
    assert stats() == {"ham": 0, "spam": 1}


def test_learning_the_other_label_moves_the_message() -> None:
    first = learn(OFFER, "spam", text_of=TEXT)
    moved = learn(RELAYED, "ham", text_of=TEXT)
    assert moved.status == "moved" and moved.key == first.key
    assert not first.path.exists() and moved.path.read_bytes() == RELAYED
    assert [(e.label, e.key) for e in entries()] == [("ham", first.key)]
    assert learn(OFFER, "spam", text_of=TEXT).status == "moved" and stats() == {"ham": 0, "spam": 1}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "mail.eml: empty input, nothing to learn"),
        (b" \n\n", "mail.eml: empty input, nothing to learn"),
        (b"GIF89a\x00\x01", "mail.eml: binary data, not a message"),
        (b"From: a@b\nTo: c@d\nSubject: \n\n\n", "mail.eml: no text to learn from (no subject, no text part)"),
    ],
)
def test_unusable_input_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(CorpusError) as info:
        learn(raw, "spam", source="mail.eml", text_of=TEXT)
    assert str(info.value) == message
    assert stats() == {"ham": 0, "spam": 0}


def test_learn_files_is_all_or_nothing(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.eml", OFFER)
    missing = str(tmp_path / "missing.eml")
    with pytest.raises(CorpusError, match=f"^cannot read {missing}: No such file or directory$"):
        learn_files([good, missing], "spam", text_of=TEXT)
    with pytest.raises(CorpusError, match="is a folder: learn takes message files"):
        learn_files([good, str(tmp_path)], "spam", text_of=TEXT)
    with pytest.raises(CorpusError, match=r"^standard input \(-\) can be read only once$"):
        learn_files(["-", "-"], "spam", text_of=TEXT)
    assert stats() == {"ham": 0, "spam": 0}


def test_a_learned_sms_is_the_text_check_scores(tmp_path: Path) -> None:
    sms = _write(tmp_path / "sms.txt", b"WIN a FREE cruise\n")
    mail = _write(tmp_path / "mail.eml", OFFER + b"\n")
    learned = learn_files([sms, mail], "spam", text_of=TEXT)
    assert learned[0].path.read_bytes() == b"WIN a FREE cruise"
    assert learned[1].path.read_bytes() == OFFER + b"\n"  # mail is stored as it came


def test_corpus_feeds_training_and_its_corrections_win(tmp_path: Path) -> None:
    learn(OFFER, "ham", text_of=TEXT)  # the user says: this one is ham
    learn(b"WIN a FREE cruise, txt STOP to 80082", "spam", text_of=TEXT)  # an SMS is a valid correction too
    folder = tmp_path / "spam"
    folder.mkdir()
    _write(folder / "1", RELAYED)  # ...although it sits in the spam folder
    _write(folder / "2", make_message("Other", "genuine spam"))
    examples, reports = read_labelled(sources=[(folder, SPAM)], corpus=True, text_of=TEXT)
    assert [(r.kind, r.label, r.used, r.conflicts) for r in reports] == [
        ("corpus", HAM, 1, 0),
        ("corpus", SPAM, 1, 0),
        ("folder", SPAM, 1, 1),
    ]
    labels = {e.text.splitlines()[0]: e.label for e in examples}
    assert labels == {"Cheap meds": HAM, "WIN a FREE cruise, txt STOP to 80082": SPAM, "Other": SPAM}
    assert format_reports(reports).splitlines()[0].startswith(f"ham {corpus.corpus_dir() / 'ham'} (corpus): read 1")


# --- the command ------------------------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_learn_moves_and_lists(runner: CliRunner, tmp_path: Path) -> None:
    path = _write(tmp_path / "offer.eml", OFFER)
    key = corpus.message_key(OFFER)[:16]
    result = runner.invoke(main, ["learn", "--spam", path])
    assert (result.exit_code, result.output) == (0, f"spam: added {key} ({path})\n")
    result = runner.invoke(main, ["learn", "--spam", path])
    assert result.output == f"spam: already known {key} ({path})\n"
    result = runner.invoke(main, ["learn", "--ham"], input=RELAYED)
    assert (result.exit_code, result.output) == (0, f"ham: moved from spam {key} (-)\n")
    result = runner.invoke(main, ["learn", "--list"])
    assert result.exit_code == 0 and result.output.startswith(f"ham   {key}  ")
    assert result.output.endswith("  Cheap meds\n")
    result = runner.invoke(main, ["learn", "--stats"])
    assert result.output == f"ham 1, spam 0 in {corpus.corpus_dir()}\n"


@pytest.mark.parametrize(
    ("args", "stdin", "code", "error"),
    [
        (["learn", "--spam", "-"], b"", 1, "Error: -: empty input, nothing to learn"),
        (["learn", "--spam", "/nonexistent/x.eml"], None, 1, "Error: cannot read /nonexistent/x.eml: No such file"),
        (["learn", "/tmp"], None, 2, "Error: say what the messages are: --spam or --ham"),
        (["learn", "--list", "--spam"], None, 2, "Error: --list and --stats take no --spam, --ham or FILE"),
    ],
)
def test_cli_errors_are_one_line(
    runner: CliRunner, args: list[str], stdin: bytes | None, code: int, error: str
) -> None:
    result = runner.invoke(main, args, input=stdin)
    assert result.exit_code == code
    assert result.output.strip().splitlines()[-1].startswith(error)
    assert "Traceback" not in result.output


def test_newest_correction_wins_even_under_a_stale_key() -> None:
    """A message stored before message_text changed keeps its old key, so learning it again under the other
    label cannot find and move it; training still takes the newest label."""
    import os

    old = corpus.corpus_dir() / "ham" / f"{'0' * 64}.eml"  # the key an older message_text gave
    old.parent.mkdir(parents=True)
    old.write_bytes(OFFER)
    os.utime(old, (1_000_000_000, 1_000_000_000))
    assert learn(OFFER, "spam", text_of=TEXT).status == "added"  # not "moved": the key differs
    examples, reports = read_corpus()
    assert [(e.label, e.text) for e in examples] == [(SPAM, TEXT(OFFER))]
    assert [(r.label, r.used, r.conflicts) for r in reports] == [(HAM, 0, 1), (SPAM, 1, 0)]


def test_a_subject_that_reads_as_a_header_is_learned_and_read_as_extracted_once() -> None:
    raw = make_message("To: all staff", "the office is closed on Friday")
    learned = learn(raw, "ham")
    assert learned.key == hashlib.sha256(b"To: all staff\n\nthe office is closed on Friday").hexdigest()
    examples, _ = read_corpus()
    assert [e.text for e in examples] == ["To: all staff\n\nthe office is closed on Friday"]
