"""The spamd wire format, the session state machine and the points mapping, without sockets or a model:
requests cut at every byte, malformed and hostile requests, the reply formats of each protocol version (as
spamd 4.0.1 writes them, MAIL-TESTBED-SPAMD.md), and the mapping's agreement with the verdict."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spamguard.errors import SpamguardError
from spamguard.plugins.frontdoor import InetAddress, parse_inet
from spamguard.plugins.headers import add_headers, verdict_fields
from spamguard.plugins.spamd import protocol as p
from spamguard.plugins.spamd.points import to_points
from spamguard.plugins.spamd.session import Reply, ScoreRequest, SpamdSession, SpamdSettings, header_block

MESSAGE = b"From: a@example.test\nSubject: hello\nX-Spam-Flag: YES\n\nHello there.\n"
CHECK = b"CHECK SPAMC/1.5\r\nUser: root\r\nContent-length: %d\r\n\r\n%s" % (len(MESSAGE), MESSAGE)
SETTINGS = SpamdSettings(max_size=1000)


@dataclass(frozen=True)
class FakeVerdict:
    label: str
    score: float
    threshold: float = 0.5
    model: str = "tiny"
    kind: str = "mail"
    stage: str = "full"


SPAM = FakeVerdict("spam", 0.91)
HAM = FakeVerdict("ham", 0.12)


def _feed(stream: bytes, cuts: list[int], *, eof: bool = False, settings: SpamdSettings = SETTINGS) -> object:
    """What the session answers when `stream` arrives cut at `cuts` (then EOF if `eof`): the first action."""
    session = SpamdSession(settings)
    previous = 0
    for cut in [*sorted(cuts), len(stream)]:
        action = session.feed(stream[previous:cut])
        previous = cut
        if action is not None:
            return action
    return session.eof() if eof else None


def _request(stream: bytes, **kwargs: object) -> p.Request:
    action = _feed(stream, [], **kwargs)  # type: ignore[arg-type]
    assert isinstance(action, ScoreRequest), action
    return action.request


def test_whole_request_decodes() -> None:
    request = _request(CHECK)
    assert (request.verb, request.version, request.user, request.message) == ("CHECK", (1, 5), "root", MESSAGE)
    assert (request.size, request.truncated) == (len(MESSAGE), False)


def test_a_request_cut_at_every_byte_gives_the_same_request() -> None:
    whole = _request(CHECK)
    for cut in range(1, len(CHECK)):
        action = _feed(CHECK, [cut])
        assert isinstance(action, ScoreRequest) and action.request == whole, cut
    action = _feed(CHECK, list(range(len(CHECK))))
    assert isinstance(action, ScoreRequest) and action.request == whole


@given(st.lists(st.integers(0, len(CHECK)), max_size=20))
def test_any_split_gives_the_same_request(cuts: list[int]) -> None:
    action = _feed(CHECK, cuts)
    assert isinstance(action, ScoreRequest) and action.request.message == MESSAGE


@pytest.mark.parametrize("cut", range(len(CHECK)))
def test_a_request_cut_short_by_eof_is_refused_never_scored(cut: int) -> None:
    action = _feed(CHECK[:cut], [], eof=True)
    assert isinstance(action, Reply) and action.outcome == "refused"
    assert action.data.startswith(b"SPAMD/1.0 76 Bad header line: (")


def test_eof_replies_say_what_was_missing() -> None:
    assert _feed(b"", [], eof=True) == Reply(b"SPAMD/1.0 76 Bad header line: (closed before headers)\r\n", "refused")
    assert _feed(b"CHECK SPAMC/1.5\r\nUser: root\r\n", [], eof=True) == Reply(
        b"SPAMD/1.0 76 Bad header line: (EOF during headers)\r\n", "refused"
    )
    assert _feed(CHECK[:-10], [], eof=True) == Reply(
        b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected %d bytes, got %d bytes)\r\n"
        % (len(MESSAGE), len(MESSAGE) - 10),
        "refused",
    )


def test_without_content_length_the_message_ends_at_eof() -> None:
    stream = b"PROCESS SPAMC/1.5\r\n\r\n" + MESSAGE
    assert _feed(stream, []) is None
    assert _request(stream, eof=True).message == MESSAGE


def test_bytes_past_content_length_are_ignored() -> None:
    assert _request(CHECK + b"trailing junk").message == MESSAGE


def test_version_1_0_has_no_header_block() -> None:
    request = _request(b"CHECK SPAMC/1.0\r\n" + MESSAGE, eof=True)
    assert request.message == MESSAGE and request.headers == {}


@pytest.mark.parametrize(
    ("stream", "reply"),
    [
        (b"PING SPAMC/1.5\r\n\r\n", b"SPAMD/1.5 0 PONG\r\n"),
        (b"PING SPAMC/1.2\r\n", b"SPAMD/1.5 0 PONG\r\n"),  # below 1.5: no header block
        (b"SKIP SPAMC/1.5\r\n\r\n", b""),
    ],
)
def test_ping_and_skip_are_answered_without_a_message(stream: bytes, reply: bytes) -> None:
    action = _feed(stream, [])
    assert isinstance(action, Reply) and action.data == reply


BAD_REQUESTS = {
    "unknown verb": (b"FOO SPAMC/1.5\r\n", b"SPAMD/1.0 76 Bad header line: FOO SPAMC/1.5\r\n"),
    "no version": (b"CHECK\r\n", b"SPAMD/1.0 76 Bad header line: CHECK\r\n"),
    "an HTTP client": (b"GET / HTTP/1.1\r\n", b"SPAMD/1.0 76 Bad header line: GET / HTTP/1.1\r\n"),
    "binary": (b"\x00\xff\x7f\n", b"SPAMD/1.0 76 Bad header line: ???\r\n"),
    "no newline for ever": (
        b"C" * (p.MAX_LINE + 1),
        b"SPAMD/1.0 76 Bad header line: (line longer than 1024 bytes)\r\n",
    ),
    "header without colon": (
        b"CHECK SPAMC/1.5\r\nUser root\r\n",
        b"SPAMD/1.0 76 Bad header line: (header not in 'Name: value' format)\r\n",
    ),
    "control characters": (
        b"CHECK SPAMC/1.5\r\nUser: ro\x01ot\r\n",
        b"SPAMD/1.0 76 Bad header line: (User header contains control chars)\r\n",
    ),
    "length not a number": (
        b"CHECK SPAMC/1.5\r\nContent-length: -5\r\n",
        b"SPAMD/1.0 76 Bad header line: (Content-Length contains non-numeric bytes)\r\n",
    ),
    "too many headers": (
        b"CHECK SPAMC/1.5\r\n" + b"X: y\r\n" * 257,
        b"SPAMD/1.0 76 Bad header line: (too many headers)\r\n",
    ),
    "unknown compression": (
        b"CHECK SPAMC/1.5\r\nCompress: gzip\r\n",
        b"SPAMD/1.0 76 Bad header line: (compression type not supported: gzip)\r\n",
    ),
    "compression without length": (
        b"CHECK SPAMC/1.5\r\nCompress: zlib\r\n\r\n",
        b"SPAMD/1.0 69 Service Unavailable: Compress requires Content-length header\r\n",
    ),
    "TELL": (
        b"TELL SPAMC/1.5\r\nMessage-class: spam\r\nSet: local\r\nContent-length: 5\r\n\r\n",
        b"SPAMD/1.0 69 Service Unavailable: TELL commands are not supported by spamguard "
        b"(retrain with `spamguard train`).\r\n",
    ),
    "oversize PROCESS": (
        b"PROCESS SPAMC/1.5\r\nContent-length: 1001\r\n\r\n",
        b"SPAMD/1.0 65 Message too large: more than 1000 bytes (at least 1001)\r\n",
    ),
    "oversize PROCESS without length": (
        b"PROCESS SPAMC/1.5\r\n\r\n" + b"x" * 1001,
        b"SPAMD/1.0 65 Message too large: more than 1000 bytes (at least 1001)\r\n",
    ),
    "a 12-digit length": (
        b"PROCESS SPAMC/1.5\r\nContent-length: 999999999999\r\n\r\n",
        b"SPAMD/1.0 65 Message too large: more than 1000 bytes (at least 999999999999)\r\n",
    ),
    "a 13-digit length": (
        b"CHECK SPAMC/1.5\r\nContent-length: 9999999999999\r\n",
        b"SPAMD/1.0 76 Bad header line: (Content-Length contains non-numeric bytes)\r\n",
    ),
    "broken zlib": (
        b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: 4\r\n\r\nabcd",
        b"SPAMD/1.0 69 Service Unavailable: zlib: Error -3 while decompressing data: incorrect header check\r\n",
    ),
    "cut zlib": (
        b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: 6\r\n\r\n" + zlib.compress(MESSAGE)[:6],
        b"SPAMD/1.0 69 Service Unavailable: zlib: failed to find end of zlib stream\r\n",
    ),
}


@pytest.mark.parametrize(("stream", "reply"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_get_spamds_error_replies(stream: bytes, reply: bytes) -> None:
    for cuts in ([], list(range(len(stream)))):  # whole, and byte by byte
        action = _feed(stream, cuts)
        assert action == Reply(reply, "refused")


def test_oversize_check_is_scored_on_its_first_part_without_holding_the_rest() -> None:
    big = MESSAGE + b"x" * 5000
    stream = b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n%s" % (len(big), big)
    session = SpamdSession(SETTINGS)
    action = None
    for index in range(0, len(stream), 100):
        assert action is None
        action = session.feed(stream[index : index + 100])
        assert session.reader.pending <= len(stream)
    assert isinstance(action, ScoreRequest)
    assert action.request.message == big[:1000] and action.request.truncated and action.request.size == len(big)


@pytest.mark.parametrize("verb", ["CHECK", "PROCESS"])
def test_a_zlib_bomb_inflates_only_to_the_limit(verb: str) -> None:
    bomb = zlib.compress(MESSAGE + b"\0" * 50_000_000, 9)  # 50 MB in about 50 KB
    settings = SpamdSettings(max_size=100_000)
    stream = b"%s SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n%s" % (verb.encode(), len(bomb), bomb)
    action = _feed(stream, [], settings=settings)
    if verb == "PROCESS":
        refusal = b"SPAMD/1.0 65 Message too large: more than 100000 bytes (at least 100001)\r\n"
        assert action == Reply(refusal, "refused")
    else:
        assert isinstance(action, ScoreRequest)
        assert len(action.request.message) == 100_000 and action.request.truncated


def test_compressed_message_round_trip() -> None:
    packed = zlib.compress(MESSAGE)
    request = _request(b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n%s" % (len(packed), packed))
    assert request.message == MESSAGE and request.size == len(packed)


def _reply(verb: str, version: str, verdict: FakeVerdict = SPAM, message: bytes = MESSAGE) -> bytes:
    stream = b"%s SPAMC/%s\r\nContent-length: %d\r\n\r\n%s" % (verb.encode(), version.encode(), len(message), message)
    if version == "1.0":
        stream = b"%s SPAMC/1.0\r\n%s" % (verb.encode(), message)
    session = SpamdSession(SETTINGS)
    action = session.feed(stream) or session.eof()
    assert isinstance(action, ScoreRequest)
    return session.verdict(verdict)


OK = b"SPAMD/1.1 0 EX_OK\r\n"


def test_replies_at_protocol_1_5_are_spamds() -> None:
    assert _reply("CHECK", "1.5") == OK + b"Spam: True ; 17.3 / 5.0\r\n\r\n"
    assert _reply("CHECK", "1.5", HAM) == OK + b"Spam: False ; 1.2 / 5.0\r\n\r\n"
    assert _reply("SYMBOLS", "1.5") == OK + b"Content-length: 9\r\nSpam: True ; 17.3 / 5.0\r\n\r\nSPAMGUARD"
    report = _reply("REPORT", "1.5")
    head, _, body = report.partition(b"\r\n\r\n")
    assert head == b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; 17.3 / 5.0" % len(body)
    assert b"(17.3 points, 5.0 required)" in body
    assert body.endswith(b"17.3 SPAMGUARD              P(spam) 0.9100, threshold 0.5000\n")
    assert _reply("REPORT_IFSPAM", "1.5", HAM) == OK + b"Content-length: 0\r\nSpam: No ; 1.2 / 5.0\r\n\r\n"
    assert _reply("REPORT_IFSPAM", "1.5").startswith(OK + b"Content-length: %d\r\nSpam: Yes ;" % len(body))


def test_process_and_headers_carry_the_pipes_headers_byte_for_byte() -> None:
    rewritten = add_headers(MESSAGE, verdict_fields(SPAM, "0.1.0"))
    for verb, expected in (("PROCESS", rewritten), ("HEADERS", rewritten[: rewritten.index(b"\n\n") + 2])):
        reply = _reply(verb, "1.5")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head == b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; 17.3 / 5.0" % len(expected)
        # the version in the headers is the installed one; everything else is exactly what the pipe writes
        assert body.replace(b"version=0.1.0", b"version=V") == expected.replace(b"version=0.1.0", b"version=V")
    assert b"X-Spam-Flag: YES" not in _reply("PROCESS", "1.5", HAM)  # the forged copy is gone


def test_older_protocol_versions_get_older_formats() -> None:
    assert _reply("CHECK", "1.2") == b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 17.3 / 5.0\r\n\r\n"
    assert _reply("SYMBOLS", "1.2") == b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 17.3 / 5.0\r\n\r\nSPAMGUARD\r\n"
    assert _reply("REPORT", "1.2").startswith(b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 17.3 / 5.0\r\n\r\nspamguard ")
    process_12 = _reply("PROCESS", "1.2")
    assert (
        process_12.startswith(b"SPAMD/1.1 0 EX_OK\r\nContent-length: ")
        and b"Spam:" not in process_12.split(b"\r\n\r\n")[0]
    )
    assert _reply("PROCESS", "1.1").startswith(b"SPAMD/1.0 0 EX_OK\r\nX-Spam-Flag: YES\n")
    assert _reply("CHECK", "9.9") == _reply("CHECK", "1.5")


def test_failures_are_errors_never_verdicts() -> None:
    session = SpamdSession(SETTINGS)
    session.feed(CHECK)
    assert session.failure(SpamguardError("2 messages already waiting")) == (
        b"SPAMD/1.0 75 Temporary failure: 2 messages already waiting\r\n"
    )
    assert session.failure(ValueError("bug")) == b"SPAMD/1.0 70 Internal error: ValueError: bug\r\n"


def test_header_block_of_odd_messages() -> None:
    assert header_block(b"Subject: x\r\n\r\nbody") == b"Subject: x\r\n\r\n"
    assert header_block(b"Subject: x\n") == b"Subject: x\n\n"  # headers only
    assert header_block(b"Subject: x") == b"Subject: x\n\n"
    assert header_block(b"just text") == b"\n"


# --- points ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "threshold", "spam", "points"),
    [
        (0.0, 0.5, False, "0.0 / 5.0"),
        (0.5, 0.5, True, "5.0 / 5.0"),  # the threshold itself is spam, and reads as spam
        (0.4999999999, 0.5, False, "4.9 / 5.0"),  # a hair below: never rounded up to 5.0
        (1.0, 0.5, True, "20.0 / 5.0"),
        (0.91, 0.5, True, "17.3 / 5.0"),  # 5 + 15 x 0.41 / 0.5
        (0.97, 0.97, True, "5.0 / 5.0"),  # a per-kind threshold maps the same way
        (0.96, 0.97, False, "4.9 / 5.0"),
        (0.6, 0.5, False, "4.9 / 5.0"),  # unsure above the threshold: not spam, not shown as spam
        (0.2, 0.0, True, "8.0 / 5.0"),
        (1.0, 1.0, True, "5.0 / 5.0"),
    ],
)
def test_points_examples(score: float, threshold: float, spam: bool, points: str) -> None:
    assert to_points(score, threshold, spam).text() == points


probabilities = st.floats(0, 1, allow_nan=False)


@given(probabilities, probabilities, probabilities, st.sampled_from([0.1, 1.0, 5.0, 7.5, 12.3]))
def test_points_agree_with_the_verdict_and_are_monotone(a: float, b: float, threshold: float, required: float) -> None:
    low, high = sorted((a, b))
    for score in (low, high):
        points = to_points(score, threshold, score >= threshold, required)
        # every client's comparison, on the printed numbers, agrees with the verdict
        shown, needed = (float(x) for x in points.text().split(" / "))
        assert (shown >= needed) == (score >= threshold) == points.is_spam
    first = to_points(low, threshold, low >= threshold, required)
    second = to_points(high, threshold, high >= threshold, required)
    assert first.tenths <= second.tenths


@given(probabilities)
def test_points_at_the_threshold_are_exactly_the_required_score(threshold: float) -> None:
    assert to_points(threshold, threshold, True).text() == "5.0 / 5.0"


def test_required_score_must_leave_room_for_ham() -> None:
    with pytest.raises(ValueError, match=r"at least 0\.1"):
        to_points(0.5, 0.5, True, 0.04)


@pytest.mark.parametrize(
    ("spec", "address"),
    [
        ("783", InetAddress("127.0.0.1", 783)),
        ("0.0.0.0:783", InetAddress("0.0.0.0", 783)),
        ("[::1]:8080", InetAddress("::1", 8080)),
        (":8080", InetAddress("127.0.0.1", 8080)),
    ],
)
def test_addresses(spec: str, address: InetAddress) -> None:
    assert parse_inet(spec, "spamd") == address


@pytest.mark.parametrize("spec", ["", "host", "127.0.0.1:70000", "unix:/x", "1:2:3"])
def test_bad_addresses(spec: str) -> None:
    with pytest.raises(SpamguardError, match=f"bad spamd address {spec!r}: use HOST:PORT"):
        parse_inet(spec, "spamd")


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from(
                [
                    b"CHECK SPAMC/1.5\r\n",
                    b"PROCESS SPAMC/1.2\r\n",
                    b"Content-length: 7\r\n",
                    b"Compress: zlib\r\n",
                    b"\r\n",
                    b"\n",
                    b"User: x\r\n",
                    b"PING SPAMC/1.5\r\n",
                    zlib.compress(b"x" * 2000),
                ]
            ),
        ),
        max_size=12,
    ),
)
def test_any_bytes_give_a_reply_a_request_or_a_wait_never_an_exception(chunks: list[bytes]) -> None:
    session = SpamdSession(SpamdSettings(max_size=1000))
    for chunk in chunks:
        action = session.feed(chunk)
        if action is not None:
            break
    else:
        action = session.eof()
    assert isinstance(action, (Reply, ScoreRequest))
    if isinstance(action, ScoreRequest):
        assert len(action.request.message) <= 1000
    else:
        assert action.data == b"" or action.data.startswith(b"SPAMD/1.")
