"""Hostile mail folders for `train`/`eval` (`spamguard.mail_sources`) and files for `learn`: link loops, links to
folders already read, links to devices and FIFOs, FIFOs in a message's place, trees deeper than Python's
recursion limit. Each real folder is read once, every skipped entry says what it is, nothing blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from spamguard.datasets import HAM, SPAM
from spamguard.mail_sources import _read_file, read_labelled, read_mail_source

LOOP = "folder read already (a link loop, or a second link to it)"


def _mail(subject: str) -> bytes:
    return f"From: a@example.org\nTo: b@example.org\nSubject: {subject}\n\nbody of {subject}\n".encode()


def _folder(path: Path, count: int, prefix: str = "m") -> Path:
    path.mkdir(parents=True)
    for i in range(count):
        (path / f"{prefix}{i}.eml").write_bytes(_mail(f"{prefix} {i}"))
    return path


def test_two_self_referencing_links_read_each_message_once(tmp_path: Path) -> None:
    """Before: two links to "." in a 5-file folder made train/eval read 232,807 "messages" in 88 s."""
    folder = _folder(tmp_path / "spam", 5)
    (folder / "a").symlink_to(".")
    (folder / "b").symlink_to(folder)
    start = time.perf_counter()
    examples, report = read_mail_source(folder, SPAM)
    elapsed = time.perf_counter() - start
    assert len(examples) == 5 and report.used == 5 and report.duplicates == 0
    assert report.read == 7 and report.skipped == Counter({LOOP: 2})
    assert report.skipped_example[LOOP] == str(folder / "a")
    assert elapsed < 10  # a generous ceiling: it reads 5 small files


def test_a_loop_further_down_and_a_second_link_to_a_folder(tmp_path: Path) -> None:
    """Before: one loop read each file 41 times (until the kernel's limit of 40 links in a path)."""
    root = _folder(tmp_path / "ham", 2)
    inner = _folder(root / "inner", 3, prefix="i")
    (inner / "up").symlink_to("..")
    (root / "again").symlink_to("inner")
    examples, report = read_mail_source(root, HAM)
    assert len(examples) == 5 and report.duplicates == 0
    assert report.skipped == Counter({LOOP: 2})


def test_a_maildir_reached_twice_and_its_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    maildir = root / "Inbox"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1:2,S").write_bytes(_mail("one"))
    (maildir / "new" / "2").write_bytes(_mail("two"))
    (maildir / "cur" / "back").symlink_to("../..")  # a folder inside cur/ is not a message
    (root / "Inbox-link").symlink_to("Inbox")
    examples, report = read_mail_source(root, HAM)
    assert len(examples) == 2
    assert report.skipped == Counter({LOOP: 1, "not a regular file (folder)": 1})


def test_links_to_devices_and_fifos_are_reported_as_what_they_are(tmp_path: Path) -> None:
    """Before: a link to a device or a FIFO was reported as a "dangling symlink"."""
    folder = _folder(tmp_path / "spam", 1)
    (folder / "null").symlink_to("/dev/null")
    (folder / "zero").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo")
    (folder / "to-fifo").symlink_to(tmp_path / "fifo")
    os.mkfifo(folder / "fifo")
    (folder / "gone").symlink_to(folder / "nowhere")
    (folder / "self").symlink_to("self")
    _, report = read_mail_source(folder, SPAM)
    assert report.used == 1
    assert report.skipped == Counter(
        {
            "not a regular file (character device)": 2,
            "not a regular file (FIFO)": 2,
            "unreadable (dangling symlink)": 1,
            "unreadable (symlink loop)": 1,
        }
    )


def test_a_fifo_put_in_a_message_s_place_after_listing_does_not_block(tmp_path: Path) -> None:
    """A file can be swapped for a FIFO between the listing and the open; the open must not wait for a writer."""
    os.mkfifo(tmp_path / "swapped.eml")
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(_read_file(tmp_path / "swapped.eml", 1 << 20)), daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "opening a FIFO blocked"
    assert outcome[0].skip_reason == "not a regular file (FIFO)"  # type: ignore[attr-defined]


def test_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    levels = [tmp_path / "deep"]
    for _ in range(sys.getrecursionlimit() + 100):
        levels.append(levels[-1] / "d")
    try:
        for level in levels:
            level.mkdir()
        (levels[-1] / "m.eml").write_bytes(_mail("at the bottom"))
        examples, report = read_mail_source(levels[0], SPAM)
        assert [e.text.splitlines()[0] for e in examples] == ["at the bottom"] and report.read == 1
    finally:  # bottom up: shutil.rmtree (pytest's clean-up of old temporary folders) recurses per level
        (levels[-1] / "m.eml").unlink(missing_ok=True)
        for level in reversed(levels):
            if level.is_dir():
                level.rmdir()


def test_read_labelled_reads_a_looping_pair_once(tmp_path: Path) -> None:
    """What `spamguard train --data` and `spamguard eval --data` read: ham/ and spam/, each with a loop."""
    data = tmp_path / "data"
    for label in ("ham", "spam"):
        folder = _folder(data / label, 3, prefix=label)
        (folder / "loop").symlink_to(".")
        (folder / "loop-too").symlink_to(f"../{label}")
    examples, reports = read_labelled(data=data)
    assert len(examples) == 6
    assert [(r.read, r.used, r.skipped[LOOP]) for r in reports] == [(5, 3, 2), (5, 3, 2)]


# --- spamguard learn ----------------------------------------------------------------------------------------------


def _learn(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """`spamguard learn` in a process of its own with a deadline: before, a FIFO blocked it for good."""
    command = [str(Path(sys.executable).with_name("spamguard")), "learn", *args]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=60, env=os.environ.copy())


@pytest.mark.parametrize(("target", "kind"), [("fifo", "FIFO"), ("/dev/zero", "character device")])
def test_learn_refuses_a_fifo_or_device_without_blocking(tmp_path: Path, target: str, kind: str) -> None:
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    result = _learn("--spam", target)
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode() == (
        f"Error: {target} is a {kind}, not a message file (to learn from a pipe, give it as standard input)\n"
    )


def test_learn_still_reads_a_link_to_a_message_and_standard_input(tmp_path: Path) -> None:
    (tmp_path / "m.eml").write_bytes(_mail("linked"))
    (tmp_path / "link.eml").symlink_to(tmp_path / "m.eml")
    linked = _learn("--spam", str(tmp_path / "link.eml"))
    assert linked.returncode == 0 and linked.stdout.decode().startswith("spam: added ")
    piped = _learn("--ham", stdin=_mail("piped"))
    assert piped.returncode == 0 and piped.stdout.decode().startswith("ham: added ")
