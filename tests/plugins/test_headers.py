"""The header functions on constructed messages with known answers, property tests over generated messages,
and every real mail of the committed SpamAssassin slice (tests/fixtures/README.md)."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass

from hypothesis import example, given
from hypothesis import strategies as st

from spamguard.plugins.headers import (
    OUR_HEADERS,
    add_headers,
    header_fields,
    line_ending,
    remove_headers,
    verdict_fields,
)

from conftest import MAIL_DIR


@dataclass
class FakeVerdict:
    label: str = "spam"
    score: float = 0.98123
    threshold: float = 0.5
    model: str = "tiny"
    kind: str = "mail"
    stage: str = "full"


FIELDS = verdict_fields(FakeVerdict(), "0.1.0")


def test_verdict_fields_in_spamassassin_style() -> None:
    assert FIELDS == [
        ("X-Spam-Flag", "YES"),
        ("X-Spam-Status", "Yes, score=0.98 required=0.50 tests=SPAMGUARD autolearn=no version=0.1.0"),
        ("X-Spamguard", "label=spam score=0.9812 threshold=0.5000 kind=mail stage=full model=tiny version=0.1.0"),
    ]
    unsure = verdict_fields(FakeVerdict(label="unsure", score=0.45, threshold=0.5), "0.1.0")
    assert unsure[0] == ("X-Spam-Flag", "NO")
    assert unsure[1][1].startswith("No, score=0.45 required=0.50")
    assert "label=unsure" in unsure[2][1]


def test_a_hostile_model_name_cannot_inject_a_header() -> None:
    fields = verdict_fields(FakeVerdict(model="x\r\nX-Spam-Flag: NO"), "0.1.0")
    assert "model=x__X-Spam-Flag__NO " in fields[2][1]
    assert all("\n" not in value and "\r" not in value for _, value in fields)


def test_forged_headers_are_removed_with_their_folded_lines() -> None:
    raw = (
        b"Received: from a\r\n\tby b\r\n"
        b"x-spam-flag: NO\r\n"
        b"X-Spam-Status  : No, score=0.01\r\n  required=0.50\r\n"
        b"Subject: hi\r\n"
        b"X-Spamguard: label=ham\r\n"
        b"\r\n"
        b"X-Spam-Flag: NO in the body stays\r\n"
    )
    out = add_headers(raw, FIELDS)
    assert out == (
        b"X-Spam-Flag: YES\r\n"
        b"X-Spam-Status: Yes, score=0.98 required=0.50 tests=SPAMGUARD autolearn=no version=0.1.0\r\n"
        b"X-Spamguard: label=spam score=0.9812 threshold=0.5000 kind=mail stage=full model=tiny version=0.1.0\r\n"
        b"Received: from a\r\n\tby b\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"X-Spam-Flag: NO in the body stays\r\n"
    )


def test_mbox_envelope_line_stays_first() -> None:
    raw = b"From bob@example.com  Thu Aug 22 12:36:23 2002\nSubject: x\n\nbody\n"
    out = add_headers(raw, FIELDS[:1])
    assert out == b"From bob@example.com  Thu Aug 22 12:36:23 2002\nX-Spam-Flag: YES\nSubject: x\n\nbody\n"


def test_edge_messages() -> None:
    assert add_headers(b"", FIELDS[:1]) == b"X-Spam-Flag: YES\n"
    assert add_headers(b"Subject: no newline", FIELDS[:1]) == b"X-Spam-Flag: YES\nSubject: no newline"
    # a body without a separator ends the header block: the header-like line after it is body text
    raw = b"Subject: x\nnot a header line\nX-Spam-Flag: NO\n"
    assert remove_headers(raw) == raw
    # a leading continuation line is kept, never glued to our header
    assert remove_headers(b" odd\nX-Spam-Flag: NO\n\n") == b" odd\n\n"
    assert line_ending(b"\r\n") == b"\r\n"
    # a message that is one unterminated line gets a line ending before our headers, so they start a line
    assert add_headers(b"From x", FIELDS[:1]) == b"From x\nX-Spam-Flag: YES\n"
    assert add_headers(b"\t", FIELDS[:1]) == b"\t\nX-Spam-Flag: YES\n"


# --- property tests -----------------------------------------------------------------------------------------

_names = st.one_of(
    st.sampled_from([*OUR_HEADERS, "x-spam-FLAG", "X-SPAMGUARD", "X-Spam-Level", "X-Spam", "Subject", "From"]),
    st.from_regex(rb"[\x21-\x39\x3b-\x7e]{1,20}", fullmatch=True).map(lambda b: b.decode("ascii")),
)
# header values and continuations: any bytes but line breaks (non-UTF-8 included)
_value = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A message and what it must look like with the forged copies of our headers removed."""
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    envelope = draw(st.sampled_from([b"", b"From someone@example.com  Mon Jan  1 00:00:00 2024"]))
    raw = expected = envelope + eol if envelope else b""
    ours = {name.lower() for name in OUR_HEADERS}
    for _ in range(draw(st.integers(0, 8))):
        name = draw(_names)
        gap = draw(st.sampled_from([b"", b" ", b"\t "]))
        field = name.encode("ascii") + gap + b":" + draw(_value) + eol
        for _ in range(draw(st.integers(0, 2))):
            field += draw(st.sampled_from([b" ", b"\t"])) + draw(_value) + eol
        raw += field
        if name.lower() not in ours:
            expected += field
    # the header block ends at a blank line, at a line that is not a field, or at the end of the message;
    # anything else right after the fields (a leading space, "Name:") would belong to the header block
    end = draw(st.sampled_from([eol, b"a body line that is not a field" + eol, b""]))
    body = end + draw(st.binary(max_size=200)) if end else b""
    return raw + body, expected + body


@given(messages())
@example((b"X-Spam-Flag: YES\n\n", b"\n"))
def test_remove_headers_removes_exactly_the_forged_fields(case: tuple[bytes, bytes]) -> None:
    raw, expected = case
    assert remove_headers(raw) == expected


@given(messages(), st.sampled_from(["spam", "ham", "unsure"]), st.floats(0, 1))
def test_stripping_our_headers_from_the_output_gives_the_input_minus_forgeries(
    case: tuple[bytes, bytes], label: str, score: float
) -> None:
    raw, expected = case
    fields = verdict_fields(FakeVerdict(label=label, score=score), "0.1.0")
    out = add_headers(raw, fields)
    assert remove_headers(out) == expected
    names = [name.lower() for name, _, _ in header_fields(out)]
    for ours in OUR_HEADERS:
        assert names.count(ours.lower().encode()) == 1
    added = b"".join(f"{n}: {v}".encode() + line_ending(raw) for n, v in fields)
    assert added in out


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_break_and_round_trip(raw: bytes) -> None:
    out = add_headers(raw, FIELDS)
    cleaned = remove_headers(raw)
    # the documented exception: one unterminated envelope or stray line gets a line ending after it
    one_open_line = b"\n" not in cleaned and cleaned.startswith((b"From ", b" ", b"\t"))
    assert remove_headers(out) == (cleaned + b"\n" if one_open_line else cleaned)
    if not any(name.lower().encode() in raw.lower() for name in OUR_HEADERS):
        assert remove_headers(raw) == raw


def test_every_corpus_mail_round_trips_and_parses() -> None:
    files = sorted(MAIL_DIR.glob("*/*"))
    assert len(files) > 40
    for path in files:
        raw = path.read_bytes()
        out = add_headers(raw, FIELDS)
        assert remove_headers(out) == remove_headers(raw), path
        assert len(out) - len(remove_headers(raw)) == sum(len(line) for line in _added(raw))
        parsed = email.message_from_bytes(out, policy=email.policy.compat32)
        assert parsed.get_all("X-Spam-Flag") == ["YES"], path
        assert parsed.get_payload(decode=False) is not None


def _added(raw: bytes) -> list[bytes]:
    return [f"{n}: {v}".encode() + line_ending(raw) for n, v in FIELDS]
