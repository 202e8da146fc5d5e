"""SpamAssassin's spamd protocol (SPAMC/1.0 to 1.5) as pure functions: bytes in, a request out; a verdict in,
reply bytes out. No sockets, no model. The reference is spamd itself (`/usr/sbin/spamd`, SpamAssassin 4.0.1):
its replies are copied byte for byte, version quirks included, because the clients parse them with `sscanf`
and Lua patterns (MAIL-TESTBED-SPAMD.md records what each client reads).

A request is a line `VERB SPAMC/x.y`, then (from 1.1 on) header lines `Name: value` up to an empty line, then
the message: `Content-length` bytes of it, or everything up to the client's half-close. One request per
connection. Everything is bounded before it is kept: the request line and header block by size and count, the
message by `max_size` (after zlib inflation, so a small compressed body cannot grow into gigabytes)."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from spamguard.errors import SpamguardError

# sysexits.h codes, as spamd's %resphash names them
EX_OK = 0
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_TIMEOUT = 79

# verbs that carry a message, and the two that spamd answers on the request (and header) lines alone
SCORING_VERBS = ("CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "PROCESS", "HEADERS")
VERBS = (*SCORING_VERBS, "PING", "SKIP", "TELL")

MAX_LINE = 1024  # the request line and each header line; spamc's are under 100 bytes
MAX_HEADERS = 256  # spamd's own bound ("avoid too-many-headers DOS attack")
_REQUEST = re.compile(rb"([A-Z_]{1,20}) SPAMC/(\d{1,3})\.(\d{1,3})")
_HEADER = re.compile(rb"([A-Za-z][A-Za-z0-9_-]{0,63}):[ \t]*(.*)")


class SpamdError(SpamguardError):
    """A request spamd would refuse: the text is the reply's status text, the code its sysexits number."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code

    def reply(self) -> bytes:
        return error_reply(self.code, str(self))


def protocol_error(detail: str) -> SpamdError:
    return SpamdError(EX_PROTOCOL, f"Bad header line: {detail}")


def unavailable(detail: str) -> SpamdError:
    return SpamdError(EX_UNAVAILABLE, f"Service Unavailable: {detail}")


def too_large(size: int, limit: int) -> SpamdError:
    return SpamdError(EX_DATAERR, f"Message too large: more than {limit} bytes (at least {size})")


def _printable(line: bytes) -> str:
    """A client's line as it may appear in a reply or a log: printable ASCII, cut short."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in line[:100])


@dataclass
class Request:
    verb: str
    version: tuple[int, int]  # SPAMC/x.y: the reply format depends on it
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    message: bytes = b""
    size: int = 0  # bytes of the message as sent (compressed, when it is)
    truncated: bool = False  # `message` is the first `max_size` bytes of a longer one

    @property
    def user(self) -> str:
        return self.headers.get("user", "")


class RequestReader:
    """Feed the bytes of one connection as they arrive; `feed` returns the request once it is complete (or the
    bytes needed so far say it is: PING, SKIP and TELL are decided on their request and header lines), `eof`
    says what the client's half-close completes. Raises `SpamdError` for anything spamd would refuse."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._request: Request | None = None
        self._headers_done = False
        self._header_lines = 0
        self._length: int | None = None  # Content-length (of the compressed body when compressed)
        self._compressed = False
        self._body = bytearray()  # the first `max_size` bytes of the message (compressed, when it is)
        self._received = 0  # bytes of the message received, kept or not
        self._done = False

    @property
    def pending(self) -> int:
        """Bytes of the request received so far (for the log line of a client that went silent)."""
        return len(self._buffer) + self._received

    @property
    def held(self) -> int:
        """Bytes of the request held now (the rest was dropped past `max_size`): what the server counts against
        its memory cap."""
        return len(self._buffer) + len(self._body)

    def feed(self, data: bytes) -> Request | None:
        if self._done:
            return None  # bytes past the end of the request (spamd ignores them too)
        if not self._headers_done:
            self._buffer += data
            if not self._read_head():
                return None
            data, self._buffer = bytes(self._buffer), bytearray()
            if self._done:
                return self._request
        return self._read_body(data)

    def eof(self) -> Request:
        """The client half-closed: the request is complete if it has everything it announced."""
        if self._done:
            assert self._request is not None
            return self._request
        if not self._headers_done:
            if self._request is None:
                raise protocol_error("(closed before headers)")
            raise protocol_error("(EOF during headers)")
        if self._length is not None:
            raise protocol_error(
                f"(Content-Length mismatch: Expected {self._length} bytes, got {self._received} bytes)"
            )
        return self._finish()

    def _line(self) -> bytes | None:
        newline = self._buffer.find(b"\n")
        if newline < 0:
            if len(self._buffer) > MAX_LINE:
                raise protocol_error(f"(line longer than {MAX_LINE} bytes)")
            return None
        if newline > MAX_LINE:
            raise protocol_error(f"(line longer than {MAX_LINE} bytes)")
        line = bytes(self._buffer[:newline]).removesuffix(b"\r")
        del self._buffer[: newline + 1]
        return line

    def _read_head(self) -> bool:
        """Consume the request line and header lines held so far; True once they are complete."""
        if self._request is None:
            line = self._line()
            if line is None:
                return False
            self._request = _request_line(line)
            verb, version = self._request.verb, self._request.version
            # spamd reads no header block from a 1.0 client, and answers PING and SKIP below 1.5 at once
            if version <= (1, 0) or (verb in ("PING", "SKIP") and version < (1, 5)):
                return self._end_head()
        while (line := self._line()) is not None:
            if not line:
                return self._end_head()
            self._header(line)
        return False

    def _header(self, line: bytes) -> None:
        assert self._request is not None
        self._header_lines += 1
        if self._header_lines > MAX_HEADERS:
            raise protocol_error("(too many headers)")
        match = _HEADER.fullmatch(line)
        if match is None:
            raise protocol_error("(header not in 'Name: value' format)")
        name, value = match.group(1).decode().lower(), match.group(2).decode("latin-1").strip()
        if any(ord(c) < 0x20 for c in value):
            raise protocol_error(f"({match.group(1).decode()} header contains control chars)")
        if name == "content-length":
            if not value.isdigit() or len(value) > 12:
                raise protocol_error("(Content-Length contains non-numeric bytes)")
            self._length = int(value)
        elif name == "compress":
            if value.lower() != "zlib":
                raise protocol_error(f"(compression type not supported: {_printable(value.encode())})")
            self._compressed = True
        self._request.headers[name] = value

    def _end_head(self) -> bool:
        assert self._request is not None
        self._headers_done = True
        verb = self._request.verb
        if verb in ("PING", "SKIP"):
            self._done = True
        elif verb == "TELL":
            # refused as spamd refuses it without --allow-tell: after the headers, before the message
            raise unavailable("TELL commands are not supported by spamguard (retrain with `spamguard train`).")
        elif self._compressed and self._length is None:
            raise unavailable("Compress requires Content-length header")
        elif self._length is not None and self._length > self.max_size and (self._compressed or verb == "PROCESS"):
            # a compressed body is held whole before it is inflated; PROCESS must send back all of it
            raise too_large(self._length, self.max_size)
        elif self._length == 0:
            self._finish()
        return True

    def _read_body(self, data: bytes) -> Request | None:
        """Keep the first `max_size` bytes; count (and drop) the rest, so a large message is scored on its first
        part as the pipe and the milter score it, without holding it."""
        if self._length is not None:
            data = data[: self._length - self._received]
        self._received += len(data)
        room = self.max_size - len(self._body)
        if room > 0:
            self._body += data[:room]
        if self._received > self.max_size:
            assert self._request is not None
            if self._request.verb == "PROCESS":  # without Content-length: found out only now
                raise too_large(self._received, self.max_size)
        if self._length is not None and self._received == self._length:
            return self._finish()
        return None

    def _finish(self) -> Request:
        assert self._request is not None
        body = bytes(self._body)
        self._body = bytearray()
        if self._compressed:
            self._request.message, self._request.truncated = _inflate(body, self.max_size)
            if self._request.truncated and self._request.verb == "PROCESS":
                raise too_large(self.max_size + 1, self.max_size)
        else:
            self._request.message, self._request.truncated = body, self._received > len(body)
        self._request.size = self._received
        self._done = True
        return self._request


def _request_line(line: bytes) -> Request:
    match = _REQUEST.fullmatch(line)
    if match is None or match.group(1).decode() not in VERBS:
        raise protocol_error(_printable(line))
    return Request(match.group(1).decode(), (int(match.group(2)), int(match.group(3))))


def _inflate(data: bytes, limit: int) -> tuple[bytes, bool]:
    """A zlib stream inflated to at most `limit` bytes, and whether there was more: inflation stops there, so
    a 1 KB bomb that would inflate to gigabytes costs `limit` bytes of memory and the time to inflate them."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise unavailable(f"zlib: {exc}") from None
    if len(out) > limit:
        return out[:limit], True
    if not inflater.eof:
        raise unavailable("zlib: failed to find end of zlib stream")
    return out, False


def error_reply(code: int, text: str) -> bytes:
    return f"SPAMD/1.0 {code} {text}\r\n".encode("ascii", "replace")


def pong() -> bytes:
    return b"SPAMD/1.5 0 PONG\r\n"


def result_reply(request: Request, is_spam: bool, points: str, body: bytes) -> bytes:
    """The reply to a scored request, in the format spamd uses for the client's protocol version (spamd's
    `check()`): `points` is `9.1 / 5.0`; `body` the report, symbols or rewritten message (ignored for CHECK)."""
    verb, version = request.verb, request.version
    words = ("Yes", "No") if verb == "REPORT_IFSPAM" else ("True", "False")  # spamd's own inconsistency
    word = words[0] if is_spam else words[1]
    spam = f"Spam: {word} ; {points}".encode("ascii")
    if verb in ("PROCESS", "HEADERS"):
        if version >= (1, 3):
            return b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\n%s\r\n\r\n%s" % (len(body), spam, body)
        if version >= (1, 2):
            return b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\n\r\n%s" % (len(body), body)
        return b"SPAMD/1.0 0 EX_OK\r\n" + body
    if verb == "CHECK":
        return b"SPAMD/1.1 0 EX_OK\r\n" + spam + b"\r\n\r\n"
    if verb == "SYMBOLS" and version < (1, 3):
        body += b"\r\n"
    if version >= (1, 3):
        return b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\n%s\r\n\r\n%s" % (len(body), spam, body)
    return b"SPAMD/1.1 0 EX_OK\r\n" + spam + b"\r\n\r\n" + body
