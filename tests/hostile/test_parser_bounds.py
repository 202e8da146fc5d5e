"""message_text on parser bombs: each once made Python's mail parser recurse, crash or take seconds to minutes.
Each must now finish well under a second (a generous ceiling is asserted, the measured time and peak memory
printed: `pytest -s` shows them), and the bounds must not cost the text of the mail around the bomb.

Also here: a header block that crosses the 64 KiB kind scan is still a mail."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hostile_mail import BOMBS, HEAD, empty_parts, nested_messages, nested_multipart, quoted_semicolons
from hypothesis import given, settings
from hypothesis import strategies as st

from spamguard.message_text import (
    MAIL,
    MAX_MIME_DEPTH,
    MAX_PARSE_BYTES,
    SMS,
    looks_like_mail,
    mail_subject,
    message_kind,
    message_text,
)

CEILING_S = 1.0  # generous: every bomb measured at most 0.2 s on a loaded 2-core EPYC
PEAK_CEILING = 16 * MAX_PARSE_BYTES  # traced allocations while extracting; measured at most 6.4 MiB


def _timed(raw: bytes | str) -> tuple[str, float, int]:
    start = time.perf_counter()
    text = message_text(raw)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    try:
        message_text(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return text, seconds, peak


@pytest.mark.parametrize("name", BOMBS)
def test_every_bomb_is_extracted_in_bounded_time_and_memory(name: str) -> None:
    raw = BOMBS[name]()
    for form, message in (("bytes", raw), ("str", raw.decode("latin-1"))):
        text, seconds, peak = _timed(message)
        print(f"\n{name} ({form}, {len(raw):,} bytes): {seconds * 1000:.0f} ms, peak {peak / 2**20:.1f} MiB")
        assert isinstance(text, str) and text
        assert seconds < CEILING_S
        assert peak < PEAK_CEILING


def test_nesting_is_followed_to_the_depth_limit_and_no_further() -> None:
    assert message_text(nested_multipart(MAX_MIME_DEPTH - 1)) == "hello\n\ndeep text"
    assert message_text(nested_multipart(1000)) == "hello"  # was RecursionError
    assert message_text(nested_messages(1000)) == "hello"


def test_text_before_a_bomb_is_still_read() -> None:
    text_first = HEAD + (
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        b"--x\r\nContent-Type: text/plain\r\n\r\nThe real text.\r\n"
        b"--x\r\nContent-Type: multipart/mixed; boundary=y\r\n\r\n--y\r\n"
    )
    assert message_text(text_first + empty_parts()[len(HEAD) :]) == "hello\n\nThe real text."
    assert message_text(text_first + nested_multipart(1000)[len(HEAD) :]) == "hello\n\nThe real text."


def test_broken_parameters_and_charsets_fall_back_to_the_body_bytes() -> None:
    assert message_text(quoted_semicolons()) == "hello\n\nbody"
    for charset in (b"punycode", b"idna", b"unicode_escape", b"x" * 100, b"utf-8\x00"):
        raw = HEAD + b"Content-Type: text/plain; charset=" + charset + b"\r\n\r\nna\xc3\xafve\r\n"
        assert message_text(raw) == "hello\n\nnaïve", charset
    latin = HEAD + b"Content-Type: text/plain; charset=iso-8859-15\r\n\r\n\xa4 100\r\n"
    assert message_text(latin) == "hello\n\n€ 100"


def test_a_string_with_lone_surrogates_is_read_not_raised() -> None:
    """A str such as bytes.decode("utf-8", "surrogateescape") makes: compat32 turns its Subject into a Header
    that cannot be printed, and message_text raised UnicodeEncodeError."""
    raw = "From: a@example.com\nSubject: caf\udce9 é\n\nbody \udcff\n"
    assert message_text(raw) == "caf\ufffd é\n\nbody \ufffd"


def test_the_subject_explain_uses_is_the_one_message_text_shows() -> None:
    for raw in (HEAD + b"\r\nbody", nested_multipart(1000), b"From: a\nSubject: \n\nbody", b"just an SMS"):
        text = message_text(raw)
        subject = mail_subject(raw)
        assert text.startswith(subject) and (not subject or text[len(subject) : len(subject) + 2] in ("", "\n\n"))


# --- the 64 KiB kind scan ---------------------------------------------------------------------------------------


def _with_blank_and_body(header_block: bytes) -> bytes:
    return header_block + b"\r\n\r\nbody\r\n"


FILLER = b"X-Filler-Name: value\r\n\tfolded\r\n"


@pytest.mark.parametrize("shift", range(len(FILLER)))
def test_a_header_block_crossing_the_scan_limit_is_mail(shift: int) -> None:
    """Received chains and big fields put the end of a header block past the 64 KiB scan; wherever the limit
    cuts (inside a field name, at its colon, inside a value, in a folded line) the message stays a mail."""
    pad = b"X-Pad: " + b"p" * shift + b"\r\n"  # moves the limit across every offset of a filler field
    filler = FILLER * (65536 // len(FILLER) + 1)
    raw = _with_blank_and_body(b"From: a@example.com\r\n" + pad + filler + b"Subject: late")
    assert message_kind(raw) == MAIL and looks_like_mail(raw)
    assert message_kind(raw.decode("ascii")) == MAIL


@pytest.mark.parametrize(
    "raw",
    [
        b"X-A: b\r\n" * 8_500 + b"From: a\r\n\r\nbody",  # the first known field after the scan
        b"From: a@example.com\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\nbody",  # one field past the scan
        b"X-Big: " + b"a" * 100_000 + b"\r\nFrom: a\r\n\r\nbody",  # the first line alone crosses it
    ],
    ids=["many fields", "one long field", "a long first field"],
)
def test_long_header_blocks_are_mail(raw: bytes) -> None:
    assert message_kind(raw) == MAIL
    assert message_text(raw).endswith("body")


def test_long_texts_are_still_sms() -> None:
    assert message_kind(b"no header here " * 10_000) == SMS
    assert message_kind(b"Subject: one field, then prose\r\n" + b"words " * 20_000) == SMS


# --- properties -------------------------------------------------------------------------------------------------

_pieces = st.sampled_from(
    [
        b"From: a\r\n",
        b"Subject: =?utf-8?q?x?= y\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: message/rfc822\r\n",
        b'Content-Type: text/plain; charset="a;b;c"\r\n',
        b"Content-Type: text/html; charset=punycode\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b" folded\r\n",
        b"text =C3=A9 \xff\xfe\r\n",
        b"<p>html</p>\r\n",
    ]
)


@given(st.lists(st.one_of(_pieces, st.binary(max_size=20)), max_size=60))
@settings(max_examples=300, deadline=None)
def test_any_mime_soup_extracts_without_raising(pieces: list[bytes]) -> None:
    raw = b"From: a@example.com\r\n" + b"".join(pieces)
    assert isinstance(message_text(raw), str)
    assert isinstance(message_text(raw.decode("utf-8", "surrogateescape")), str)
    assert message_text(raw).startswith(mail_subject(raw))


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_any_text_extracts_without_raising(text: str) -> None:
    assert isinstance(message_text("From: a@example.com\nSubject: " + text), str)
    assert isinstance(message_text(text), str)
