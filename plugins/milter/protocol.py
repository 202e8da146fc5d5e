"""The milter wire protocol, version 6 (Sendmail 8.14+, Postfix 2.6+), as pure functions: bytes in, objects
out, no sockets, no spam decisions. Both directions are here (milter side and MTA side), so the tests and the
pipe can speak to the milter exactly as Postfix does.

Every packet is a 4-byte big-endian length, then a one-byte command (or reply) code and its data. Names follow
Sendmail's `mfdef.h` (SMFIC_* commands, SMFIR_* replies, SMFIF_* actions, SMFIP_* protocol flags) so the code
can be read side by side with libmilter and Postfix's `milter8.c`."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from spamguard.errors import SpamguardError

VERSION = 6

# Commands, MTA -> milter (SMFIC_*)
ABORT = b"A"
BODY = b"B"
CONNECT = b"C"
MACRO = b"D"
BODYEOB = b"E"
HELO = b"H"
QUIT_NC = b"K"
HEADER = b"L"
MAIL = b"M"
EOH = b"N"
OPTNEG = b"O"
QUIT = b"Q"
RCPT = b"R"
DATA = b"T"
UNKNOWN = b"U"

# Replies and modifications, milter -> MTA (SMFIR_*)
ACCEPT = b"a"
CONTINUE = b"c"
DISCARD = b"d"
ADDHEADER = b"h"
INSHEADER = b"i"
CHGHEADER = b"m"
PROGRESS = b"p"
REJECT = b"r"
SKIP = b"s"
TEMPFAIL = b"t"
REPLYCODE = b"y"
# replies that end the exchange for a command (the others are modifications sent before one of these)
REPLY_NAMES = {
    ACCEPT: "accept",
    CONTINUE: "continue",
    DISCARD: "discard",
    REJECT: "reject",
    SKIP: "skip",
    TEMPFAIL: "tempfail",
    REPLYCODE: "an SMTP reply",
}
FINAL_REPLIES = frozenset(REPLY_NAMES)

# Actions the milter may take (SMFIF_*)
SMFIF_ADDHDRS = 0x01
SMFIF_CHGHDRS = 0x10
SMFIF_SETSYMLIST = 0x100

# Protocol flags (SMFIP_*): steps the MTA may leave out, replies the milter will not send, extras
SMFIP_NOCONNECT = 0x01
SMFIP_NOHELO = 0x02
SMFIP_NOMAIL = 0x04
SMFIP_NORCPT = 0x08
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_RCPT_REJ = 0x800
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_UNKN = 0x20000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000

# Macro stages for SMFIF_SETSYMLIST (SMFIM_*)
SMFIM_CONNECT = 0
SMFIM_HELO = 1
SMFIM_ENVFROM = 2
SMFIM_ENVRCPT = 3
SMFIM_DATA = 4
SMFIM_EOM = 5
SMFIM_EOH = 6

# Body chunks are at most 65535 bytes (Postfix and Sendmail send 65535 + the command byte), and Postfix's default
# header_size_limit is 100 KiB. Anything much larger is a broken or hostile peer; refuse it before buffering it.
MAX_PACKET = 256 * 1024
_LENGTH = struct.Struct(">I")


class MilterProtocolError(SpamguardError):
    """The peer broke the protocol: the connection is closed, the server lives on."""


@dataclass(frozen=True)
class Packet:
    code: bytes  # one byte
    data: bytes


def encode_packet(code: bytes, data: bytes = b"") -> bytes:
    return _LENGTH.pack(len(data) + 1) + code + data


class PacketReader:
    """Reassembles packets from a byte stream cut anywhere (TCP segments, short reads). Raises
    MilterProtocolError on a length that cannot be right; the caller then drops the connection."""

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self._buffer = bytearray()
        self._max_packet = max_packet

    def feed(self, data: bytes) -> Iterator[Packet]:
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length == 0 or length > self._max_packet:
                raise MilterProtocolError(f"bad packet length {length} (allowed: 1 to {self._max_packet})")
            if len(self._buffer) < 4 + length:
                return
            packet = Packet(bytes(self._buffer[4:5]), bytes(self._buffer[5 : 4 + length]))
            del self._buffer[: 4 + length]
            yield packet

    @property
    def pending(self) -> int:
        """Bytes of an incomplete packet held back: nonzero at end of stream means the peer cut a packet."""
        return len(self._buffer)


# --- commands (MTA -> milter) as objects ------------------------------------------------------------------


@dataclass(frozen=True)
class OptionNegotiation:
    version: int
    actions: int
    protocol: int
    macros: dict[int, str] = field(default_factory=dict)  # stage -> space-separated names (milter's reply, v6)


@dataclass(frozen=True)
class DefineMacros:
    command: bytes  # the command these macros belong to (CONNECT, MAIL, BODYEOB, ...)
    macros: dict[str, str]


@dataclass(frozen=True)
class Connect:
    hostname: str
    family: str  # "4", "6", "L" (unix), "U" (unknown)
    port: int
    address: str


@dataclass(frozen=True)
class Helo:
    name: str


@dataclass(frozen=True)
class MailFrom:
    args: list[str]


@dataclass(frozen=True)
class RcptTo:
    args: list[str]


@dataclass(frozen=True)
class Data:
    pass


@dataclass(frozen=True)
class Header:
    name: bytes  # bytes: header names and values may carry 8-bit data, passed on untouched
    value: bytes


@dataclass(frozen=True)
class EndOfHeaders:
    pass


@dataclass(frozen=True)
class BodyChunk:
    data: bytes


@dataclass(frozen=True)
class EndOfMessage:
    data: bytes  # a last body chunk, if the MTA sends one with the end-of-message command


@dataclass(frozen=True)
class Abort:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class QuitNewConnection:
    pass


@dataclass(frozen=True)
class Unknown:
    command: str


Command = (
    OptionNegotiation
    | DefineMacros
    | Connect
    | Helo
    | MailFrom
    | RcptTo
    | Data
    | Header
    | EndOfHeaders
    | BodyChunk
    | EndOfMessage
    | Abort
    | Quit
    | QuitNewConnection
    | Unknown
)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _strings(data: bytes, what: str) -> list[bytes]:
    """NUL-terminated strings; the last one must be terminated."""
    if not data.endswith(b"\0"):
        raise MilterProtocolError(f"{what}: strings not NUL-terminated")
    return data[:-1].split(b"\0")


def _optneg(data: bytes) -> OptionNegotiation:
    if len(data) < 12:
        raise MilterProtocolError(f"option negotiation: {len(data)} bytes, need 12")
    version, actions, protocol = struct.unpack_from(">III", data)
    macros: dict[int, str] = {}
    rest = data[12:]
    while rest:
        if len(rest) < 5 or b"\0" not in rest[4:]:
            raise MilterProtocolError("option negotiation: truncated macro list")
        (stage,) = struct.unpack_from(">I", rest)
        end = rest.index(b"\0", 4)
        macros[stage] = _text(rest[4:end])
        rest = rest[end + 1 :]
    return OptionNegotiation(version, actions, protocol, macros)


def _macros(data: bytes) -> DefineMacros:
    if not data:
        raise MilterProtocolError("macro definition without a command")
    pairs = _strings(data[1:], "macros") if len(data) > 1 else []
    if len(pairs) % 2:
        raise MilterProtocolError("macros: a name without a value")
    return DefineMacros(data[:1], {_text(pairs[i]): _text(pairs[i + 1]) for i in range(0, len(pairs), 2)})


def _connect(data: bytes) -> Connect:
    end = data.find(b"\0")
    if end < 0 or len(data) < end + 2:
        raise MilterProtocolError("connect: truncated")
    hostname, family = _text(data[:end]), _text(data[end + 1 : end + 2])
    if family == "U":
        return Connect(hostname, family, 0, "")
    rest = data[end + 2 :]
    if len(rest) < 3:
        raise MilterProtocolError("connect: truncated address")
    (port,) = struct.unpack_from(">H", rest)
    return Connect(hostname, family, port, _text(_strings(rest[2:], "connect")[0]))


def _header(data: bytes) -> Header:
    parts = _strings(data, "header")
    if len(parts) != 2:
        raise MilterProtocolError(f"header: {len(parts)} strings, need name and value")
    return Header(parts[0], parts[1])


def decode_command(packet: Packet) -> Command:
    """One MTA command from a packet; MilterProtocolError for an unknown code or malformed data."""
    code, data = packet.code, packet.data
    if code == OPTNEG:
        return _optneg(data)
    if code == MACRO:
        return _macros(data)
    if code == HEADER:
        return _header(data)
    if code == BODY:
        return BodyChunk(data)
    if code == BODYEOB:
        return EndOfMessage(data)
    if code == EOH:
        return EndOfHeaders()
    if code == CONNECT:
        return _connect(data)
    if code == HELO:
        return Helo(_text(_strings(data, "helo")[0]))
    if code == MAIL:
        return MailFrom([_text(s) for s in _strings(data, "mail")])
    if code == RCPT:
        return RcptTo([_text(s) for s in _strings(data, "rcpt")])
    if code == DATA:
        return Data()
    if code == ABORT:
        return Abort()
    if code == QUIT:
        return Quit()
    if code == QUIT_NC:
        return QuitNewConnection()
    if code == UNKNOWN:
        return Unknown(_text(data.rstrip(b"\0")))
    raise MilterProtocolError(f"unknown command code {code!r}")


# --- replies (milter -> MTA) ----------------------------------------------------------------------------------


def optneg_reply(version: int, actions: int, protocol: int, macros: dict[int, str] | None = None) -> bytes:
    data = struct.pack(">III", version, actions, protocol)
    for stage, names in (macros or {}).items():
        data += struct.pack(">I", stage) + names.encode("ascii") + b"\0"
    return encode_packet(OPTNEG, data)


def reply(code: bytes) -> bytes:
    """A reply without data: CONTINUE, ACCEPT, REJECT, TEMPFAIL, SKIP, DISCARD, PROGRESS."""
    return encode_packet(code)


def reply_code(text: str) -> bytes:
    """A full SMTP reply for the MTA to send, e.g. `550 5.7.1 Message rejected as spam`."""
    return encode_packet(REPLYCODE, text.encode("ascii") + b"\0")


def insert_header(index: int, name: str, value: str) -> bytes:
    """Insert a header at position `index` of the header block (0: the top)."""
    return encode_packet(INSHEADER, struct.pack(">I", index) + name.encode("ascii") + b"\0" + value.encode() + b"\0")


def change_header(index: int, name: bytes, value: bytes) -> bytes:
    """Change the `index`-th (1-based) header called `name`; an empty value deletes it."""
    return encode_packet(CHGHEADER, struct.pack(">I", index) + name + b"\0" + value + b"\0")


# --- the MTA side: commands out, replies in (tests, the pipe's client mode) ----------------------------------


def optneg_command(actions: int, protocol: int, version: int = VERSION) -> bytes:
    return encode_packet(OPTNEG, struct.pack(">III", version, actions, protocol))


def macro_command(command: bytes, macros: dict[str, str]) -> bytes:
    data = b"".join(name.encode() + b"\0" + value.encode() + b"\0" for name, value in macros.items())
    return encode_packet(MACRO, command + data)


def header_command(name: bytes, value: bytes) -> bytes:
    return encode_packet(HEADER, name + b"\0" + value + b"\0")


def connect_command(hostname: str, address: str, port: int) -> bytes:
    family = b"6" if ":" in address else b"4"
    return encode_packet(
        CONNECT, hostname.encode() + b"\0" + family + struct.pack(">H", port) + address.encode() + b"\0"
    )


@dataclass(frozen=True)
class Modification:
    """A change the milter asked for at end of message, decoded for the MTA side."""

    code: bytes  # INSHEADER, CHGHEADER or ADDHEADER
    index: int
    name: bytes
    value: bytes


def decode_modification(packet: Packet) -> Modification:
    data = packet.data
    if packet.code in (INSHEADER, CHGHEADER):
        if len(data) < 4:
            raise MilterProtocolError("header change: truncated")
        (index,) = struct.unpack_from(">I", data)
        data = data[4:]
    elif packet.code == ADDHEADER:
        index = 0
    else:
        raise MilterProtocolError(f"not a header modification: {packet.code!r}")
    parts = _strings(data, "header change")
    if len(parts) != 2:
        raise MilterProtocolError("header change: need name and value")
    return Modification(packet.code, index, parts[0], parts[1])
