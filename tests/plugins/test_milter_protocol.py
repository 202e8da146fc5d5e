"""The milter wire format and the session state machine, without sockets or a model: packets cut at every
boundary, malformed packets, negotiation, and the replies each policy produces."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spamguard.errors import SpamguardError
from spamguard.plugins.milter import protocol as p
from spamguard.plugins.milter.address import ListenAddress, parse_listen
from spamguard.plugins.milter.client import MTA_ACTIONS, MTA_PROTOCOL, split_message
from spamguard.plugins.milter.session import CLOSE, MilterPolicy, MilterSession, ScoreRequest

CONVERSATION = (
    p.optneg_command(MTA_ACTIONS, MTA_PROTOCOL)
    + p.macro_command(p.CONNECT, {"j": "mx.example.test", "_": "client [127.0.0.1]"})
    + p.connect_command("client.example", "127.0.0.1", 40000)
    + p.header_command(b"Subject", b" hello")
    + p.header_command(b"X-Spam-Flag", b" NO")
    + p.encode_packet(p.EOH)
    + p.encode_packet(p.BODY, b"x" * 70000)
    + p.macro_command(p.BODYEOB, {"i": "4ABCD"})
    + p.encode_packet(p.BODYEOB)
    + p.encode_packet(p.QUIT)
)


def _packets(stream: bytes, cuts: list[int]) -> list[p.Packet]:
    reader = p.PacketReader()
    packets: list[p.Packet] = []
    previous = 0
    for cut in [*sorted(cuts), len(stream)]:
        packets.extend(reader.feed(stream[previous:cut]))
        previous = cut
    assert reader.pending == 0
    return packets


WHOLE = _packets(CONVERSATION, [])


def test_whole_conversation_decodes() -> None:
    commands = [p.decode_command(packet) for packet in WHOLE]
    assert [type(c).__name__ for c in commands] == [
        "OptionNegotiation", "DefineMacros", "Connect", "Header", "Header", "EndOfHeaders", "BodyChunk",
        "DefineMacros", "EndOfMessage", "Quit",
    ]  # fmt: skip
    assert commands[0] == p.OptionNegotiation(6, MTA_ACTIONS, MTA_PROTOCOL)
    assert commands[2] == p.Connect("client.example", "4", 40000, "127.0.0.1")
    assert commands[3] == p.Header(b"Subject", b" hello")
    assert commands[7] == p.DefineMacros(p.BODYEOB, {"i": "4ABCD"})


def test_byte_by_byte_gives_the_same_packets() -> None:
    assert _packets(CONVERSATION, list(range(len(CONVERSATION)))) == WHOLE


@given(st.lists(st.integers(0, len(CONVERSATION)), max_size=30))
def test_any_split_gives_the_same_packets(cuts: list[int]) -> None:
    assert _packets(CONVERSATION, cuts) == WHOLE


@pytest.mark.parametrize("length", [0, p.MAX_PACKET + 1, 0xFFFFFFFF])
def test_impossible_lengths_are_refused(length: int) -> None:
    with pytest.raises(p.MilterProtocolError, match=f"bad packet length {length}"):
        list(p.PacketReader().feed(struct.pack(">I", length) + b"B"))


def test_a_cut_packet_is_held_not_decoded() -> None:
    reader = p.PacketReader()
    assert list(reader.feed(p.header_command(b"Subject", b"x")[:-1])) == []
    assert reader.pending > 0


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        (p.Packet(b"Z", b""), "unknown command code b'Z'"),
        (p.Packet(p.OPTNEG, b"\0\0\0\6"), "option negotiation: 4 bytes, need 12"),
        (p.Packet(p.HEADER, b"Subject\0no terminator"), "header: strings not NUL-terminated"),
        (p.Packet(p.HEADER, b"Subject\0"), "header: 1 strings, need name and value"),
        (p.Packet(p.MACRO, b""), "macro definition without a command"),
        (p.Packet(p.MACRO, b"Ci\0"), "macros: a name without a value"),
        (p.Packet(p.CONNECT, b"host"), "connect: truncated"),
        (p.Packet(p.CONNECT, b"host\x004\x00"), "connect: truncated address"),
    ],
)
def test_malformed_commands_are_protocol_errors(packet: p.Packet, error: str) -> None:
    with pytest.raises(p.MilterProtocolError, match=error):
        p.decode_command(packet)


def test_modifications_round_trip() -> None:
    packet = _packets(p.insert_header(2, "X-Spamguard", "label=spam"), [])[0]
    assert p.decode_modification(packet) == p.Modification(p.INSHEADER, 2, b"X-Spamguard", b"label=spam")
    packet = _packets(p.change_header(1, b"x-spam-flag", b""), [])[0]
    assert p.decode_modification(packet) == p.Modification(p.CHGHEADER, 1, b"x-spam-flag", b"")


@pytest.mark.parametrize(
    ("spec", "address"),
    [
        ("inet:127.0.0.1:8894", ListenAddress("inet", host="127.0.0.1", port=8894)),
        ("inet:8894@127.0.0.1", ListenAddress("inet", host="127.0.0.1", port=8894)),
        ("inet:8894", ListenAddress("inet", host="127.0.0.1", port=8894)),
        ("inet6:[::1]:8894", ListenAddress("inet", host="::1", port=8894)),
        ("unix:/run/spamguard/milter.sock", ListenAddress("unix", path="/run/spamguard/milter.sock")),
        ("local:/run/m.sock", ListenAddress("unix", path="/run/m.sock")),
    ],
)
def test_listen_addresses(spec: str, address: ListenAddress) -> None:
    assert parse_listen(spec) == address


@pytest.mark.parametrize("spec", ["8894", "inet:", "inet:host:99999", "unix:relative.sock", "tcp:1:2"])
def test_bad_listen_addresses(spec: str) -> None:
    with pytest.raises(SpamguardError, match=f"bad milter address '{spec}': use inet:HOST:PORT"):
        parse_listen(spec)


def test_split_message_as_an_mta_hands_it_over() -> None:
    headers, body = split_message(b"From x\r\nSubject: a\r\n b\r\nTo: c\r\n\r\nbody\r\n")
    assert headers == [(b"Subject", b" a\r\n b"), (b"To", b" c")]
    assert body == b"body\r\n"


# --- the session ---------------------------------------------------------------------------------------------


@dataclass
class FakeVerdict:
    label: str
    score: float
    threshold: float = 0.5
    model: str = "tiny"
    kind: str = "mail"
    stage: str = "full"


def _session(policy: MilterPolicy | None = None, protocol: int = MTA_PROTOCOL) -> MilterSession:
    session = MilterSession(policy or MilterPolicy())
    session.handle(p.OptionNegotiation(6, MTA_ACTIONS, protocol))
    return session


def _feed(session: MilterSession, body: bytes = b"hello\r\n") -> ScoreRequest:
    session.handle(p.DefineMacros(p.BODYEOB, {"i": "QID1"}))
    for name, value in [(b"Subject", b" hi"), (b"x-spam-flag", b" NO"), (b"To", b" a"), (b"X-Spam-Flag", b" NO")]:
        session.handle(p.Header(name, value))
    session.handle(p.EndOfHeaders())
    session.handle(p.BodyChunk(body))
    request = session.handle(p.EndOfMessage(b""))
    assert isinstance(request, ScoreRequest)
    return request


def _decoded(replies: list[bytes]) -> list[p.Packet]:
    return _packets(b"".join(replies), [])


def test_negotiation_takes_only_what_the_mta_offers() -> None:
    session = MilterSession(MilterPolicy())
    reply = _decoded(session.handle(p.OptionNegotiation(6, MTA_ACTIONS, MTA_PROTOCOL)))[0]
    offer = p.decode_command(reply)
    assert offer == p.OptionNegotiation(
        6, p.SMFIF_ADDHDRS | p.SMFIF_CHGHDRS | p.SMFIF_SETSYMLIST, offer.protocol, {p.SMFIM_EOM: "i"}
    )
    assert offer.protocol & p.SMFIP_NOMAIL and offer.protocol & p.SMFIP_SKIP and offer.protocol & p.SMFIP_NR_HDR
    # an old MTA (version 2, no reply-less steps, no skip, no symbol lists) gets a version 2 answer
    old = MilterSession(MilterPolicy())
    reply = _decoded(old.handle(p.OptionNegotiation(2, p.SMFIF_ADDHDRS, 0x7F)))[0]
    assert p.decode_command(reply) == p.OptionNegotiation(2, p.SMFIF_ADDHDRS, 0x0F)  # no connect/helo/mail/rcpt


def test_commands_before_negotiation_are_a_protocol_error() -> None:
    with pytest.raises(p.MilterProtocolError, match="Header before option negotiation"):
        MilterSession(MilterPolicy()).handle(p.Header(b"a", b"b"))


def test_headers_get_no_reply_when_agreed_and_a_continue_when_not() -> None:
    assert _session().handle(p.Header(b"Subject", b"x")) == []
    assert _session(protocol=0).handle(p.Header(b"Subject", b"x")) == [p.reply(p.CONTINUE)]


def test_score_request_rebuilds_the_message_with_its_queue_id() -> None:
    request = _feed(_session())
    assert request.queue_id == "QID1"
    assert request.message == b"Subject: hi\r\nx-spam-flag: NO\r\nTo: a\r\nX-Spam-Flag: NO\r\n\r\nhello\r\n"
    assert not request.truncated


def test_body_beyond_the_size_cap_is_skipped_and_not_scored() -> None:
    session = _session(MilterPolicy(max_size=10))
    session.handle(p.EndOfHeaders())
    assert session.handle(p.BodyChunk(b"12345")) == [p.reply(p.CONTINUE)]
    assert session.handle(p.BodyChunk(b"6789abcdef")) == [p.reply(p.SKIP)]
    request = session.handle(p.EndOfMessage(b""))
    assert isinstance(request, ScoreRequest)
    assert request.message == b"\r\n123456789a" and request.truncated and request.size == 15


def test_verdict_removes_forged_copies_last_first_and_inserts_ours_at_the_top() -> None:
    session = _session()
    _feed(session)
    outcome = session.verdict(FakeVerdict("spam", 0.9))
    packets = _decoded(outcome.replies)
    mods = [p.decode_modification(packet) for packet in packets[:-1]]
    assert [(m.code, m.index, m.name, m.value) for m in mods[:2]] == [
        (p.CHGHEADER, 2, b"X-Spam-Flag", b""),
        (p.CHGHEADER, 1, b"x-spam-flag", b""),
    ]
    assert [(m.code, m.index, m.name) for m in mods[2:]] == [
        (p.INSHEADER, 0, b"X-Spam-Flag"),
        (p.INSHEADER, 1, b"X-Spam-Status"),
        (p.INSHEADER, 2, b"X-Spamguard"),
    ]
    assert mods[2].value == b" YES"  # leading space agreed (SMFIP_HDR_LEADSPC): the MTA writes `name:value`
    without = _session(protocol=MTA_PROTOCOL & ~p.SMFIP_HDR_LEADSPC)
    _feed(without)
    packets = _decoded(without.verdict(FakeVerdict("spam", 0.9)).replies)
    assert p.decode_modification(packets[2]).value == b"YES"
    assert packets[-1] == p.Packet(p.ACCEPT, b"") and outcome.action == "accept"


def test_reject_above_the_reject_threshold() -> None:
    session = _session(MilterPolicy(reject_threshold=0.8, reject_reply="550 5.7.1 go away"))
    _feed(session)
    outcome = session.verdict(FakeVerdict("spam", 0.85))
    assert _decoded(outcome.replies)[-1] == p.Packet(p.REPLYCODE, b"550 5.7.1 go away\0")
    assert outcome.action == "reject"
    _feed(session)
    assert session.verdict(FakeVerdict("spam", 0.79)).action == "accept"


def test_failure_accepts_or_tempfails() -> None:
    session = _session()
    _feed(session)
    outcome = session.failure()
    assert outcome.action == "accept"
    assert [packet.code for packet in _decoded(outcome.replies)] == [p.CHGHEADER, p.CHGHEADER, p.ACCEPT]
    closed = _session(MilterPolicy(fail_closed=True))
    _feed(closed)
    assert closed.failure().replies == [p.reply(p.TEMPFAIL)]


def test_a_second_message_on_the_connection_starts_clean() -> None:
    session = _session()
    _feed(session)
    session.verdict(FakeVerdict("ham", 0.1))
    session.handle(p.Header(b"Subject", b" second"))
    request = session.handle(p.EndOfMessage(b"body"))
    assert isinstance(request, ScoreRequest)
    assert request.message == b"Subject: second\r\n\r\nbody" and request.queue_id == "NOQUEUE"
    assert session.handle(p.Quit()) is CLOSE


def test_headers_past_the_caps_are_delivered_but_not_kept() -> None:
    """Past max_headers or max_header_bytes a header is acknowledged and counted, not stored: a header flood
    costs the session nothing more, and the message is scored on the headers kept (logged as dropped)."""
    session = _session(MilterPolicy(max_headers=3, max_header_bytes=40))
    for number in range(1000):
        assert session.handle(p.Header(b"X-Flood", b" %d" % number)) == []
    assert session.held_bytes == 3 * len(b"X-Flood: 0\r\n")  # three kept, 12 bytes each
    request = session.handle(p.EndOfMessage(b"body"))
    assert isinstance(request, ScoreRequest)
    assert request.message == b"X-Flood: 0\r\nX-Flood: 1\r\nX-Flood: 2\r\n\r\nbody"
    assert request.dropped_headers == 997 and request.size > 1000 * len(b"X-Flood: 0\r\n")
    assert session.held_bytes == 0  # the content moved into the request
    bytes_cap = _session(MilterPolicy(max_header_bytes=30))
    for name in (b"Subject", b"To", b"From"):
        bytes_cap.handle(p.Header(name, b" " + b"x" * 8))
    request = bytes_cap.handle(p.EndOfMessage(b""))
    assert isinstance(request, ScoreRequest)
    assert request.message == b"Subject: xxxxxxxx\r\n\r\n" and request.dropped_headers == 2


def test_forged_copies_past_the_cap_make_a_tempfail() -> None:
    """Every forged copy of our headers is deleted, up to max_headers of them; a message with more cannot be
    cleaned, so it is tempfailed whatever its verdict or the failure policy."""
    session = _session(MilterPolicy(max_headers=4))
    for _ in range(4):
        session.handle(p.Header(b"X-Spam-Flag", b" NO"))
    session.handle(p.EndOfMessage(b""))
    assert not session.too_many_forged
    packets = _decoded(session.verdict(FakeVerdict("ham", 0.1)).replies)
    assert [(packet.code, p.decode_modification(packet).index) for packet in packets[:4]] == [
        (p.CHGHEADER, 4), (p.CHGHEADER, 3), (p.CHGHEADER, 2), (p.CHGHEADER, 1),
    ]  # fmt: skip
    for _ in range(5):
        session.handle(p.Header(b"X-Spam-Flag", b" NO"))
    session.handle(p.EndOfMessage(b""))
    assert session.too_many_forged
    outcome = session.verdict(FakeVerdict("ham", 0.1))
    assert (outcome.replies, outcome.action) == ([p.reply(p.TEMPFAIL)], "tempfail")
    for _ in range(5):
        session.handle(p.Header(b"x-spamguard", b" label=ham"))
    session.handle(p.EndOfMessage(b""))
    assert session.failure().replies == [p.reply(p.TEMPFAIL)]  # fail-open too


def test_queue_id_is_safe_to_log() -> None:
    session = _session()
    session.handle(p.DefineMacros(p.BODYEOB, {"i": "4ABC\nqueue_id=forged verdict=ham " + "x" * 500}))
    request = session.handle(p.EndOfMessage(b""))
    assert isinstance(request, ScoreRequest)
    assert request.queue_id == "4ABC?queue_id?forged?verdict?ham?" + "x" * 31 and len(request.queue_id) == 64
