"""One MTA connection's milter conversation as a pure state machine: commands in, reply packets out.

It knows the protocol's rules (what was negotiated, which commands get no reply, when to skip the rest of a
body) and the policy (headers, reject, fail open or closed), but not sockets, threads or the model: at end of
message it hands back a `ScoreRequest`, and the caller feeds the verdict (or the failure) back in. That keeps
every decision testable without a network or a model, and keeps a slow model from touching protocol state."""

from __future__ import annotations

import re
from dataclasses import dataclass

from spamguard.plugins import spamguard_version
from spamguard.plugins.headers import OUR_HEADERS, VerdictLike, verdict_fields
from spamguard.plugins.milter import protocol as p
from spamguard.plugins.pipe import DEFAULT_MAX_SIZE  # as the pipe and spamc: 500 KB

DEFAULT_REJECT_REPLY = "550 5.7.1 Message rejected as spam"

# Steps we do not need (fewer round trips per message), replies we do not send, and the extras we use.
WANTED_PROTOCOL = (
    p.SMFIP_NOCONNECT
    | p.SMFIP_NOHELO
    | p.SMFIP_NOMAIL
    | p.SMFIP_NORCPT
    | p.SMFIP_NOUNKNOWN
    | p.SMFIP_NODATA
    | p.SMFIP_NR_HDR
    | p.SMFIP_NR_EOH
    | p.SMFIP_SKIP
    | p.SMFIP_HDR_LEADSPC
)
WANTED_ACTIONS = p.SMFIF_ADDHDRS | p.SMFIF_CHGHDRS | p.SMFIF_SETSYMLIST
# Ask for the queue id at end of message (Postfix sends it there by default, Sendmail only when asked).
WANTED_MACROS = {p.SMFIM_EOM: "i"}
_OURS = frozenset(name.lower().encode() for name in OUR_HEADERS)

# Commands that get no reply once the matching SMFIP_NR_* flag was agreed.
_NO_REPLY_FLAG = {
    p.Connect: p.SMFIP_NR_CONN,
    p.Helo: p.SMFIP_NR_HELO,
    p.MailFrom: p.SMFIP_NR_MAIL,
    p.RcptTo: p.SMFIP_NR_RCPT,
    p.Data: p.SMFIP_NR_DATA,
    p.Unknown: p.SMFIP_NR_UNKN,
    p.Header: p.SMFIP_NR_HDR,
    p.EndOfHeaders: p.SMFIP_NR_EOH,
    p.BodyChunk: p.SMFIP_NR_BODY,
}


# Per message, what is kept to score (the MTA still delivers every header). Real mail has a few dozen headers and
# a few KiB of them (Postfix stops a Received loop at 50 hops; Exim refuses header blocks over 1 MB, Sendmail over
# 32 KiB); past these caps a message is scored on the headers kept, like a body past --max-size.
DEFAULT_MAX_HEADERS = 1000
DEFAULT_MAX_HEADER_BYTES = 256 * 1024
_QUEUE_ID = re.compile(r"[^A-Za-z0-9._-]")  # what goes into the log line: Postfix and Sendmail ids are alphanumeric
_MAX_QUEUE_ID = 64


@dataclass(frozen=True, kw_only=True)
class MilterPolicy:
    reject_threshold: float | None = None  # None: never reject, only add headers
    reject_reply: str = DEFAULT_REJECT_REPLY
    fail_closed: bool = False  # on a scoring failure: tempfail (True) or accept (False)
    max_size: int = DEFAULT_MAX_SIZE  # body bytes scored; the MTA is told to skip the rest
    max_headers: int = DEFAULT_MAX_HEADERS  # headers kept per message; also the most forged copies deleted
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES  # bytes of headers kept per message


@dataclass(frozen=True)
class ScoreRequest:
    message: bytes  # the headers kept and the first part of the body, in SMTP form (CRLF)
    queue_id: str
    size: int  # bytes of the whole message as received
    truncated: bool  # body past max_size
    dropped_headers: int  # headers past max_headers / max_header_bytes, not scored


class Close:
    """The conversation is over (QUIT): close the connection."""


CLOSE = Close()


@dataclass(frozen=True)
class Outcome:
    replies: list[bytes]
    action: str  # "accept" | "reject" | "tempfail", for the log line


class MilterSession:
    def __init__(self, policy: MilterPolicy) -> None:
        self.policy = policy
        self.actions = 0
        self.protocol = 0
        self.negotiated = False
        self._reset_message()

    def _reset_message(self) -> None:
        self.queue_id = ""
        self._content_reset()
        self._forged: list[tuple[int, bytes]] = []  # incoming copies of our headers: (index among its name, name)
        self._forged_count = 0
        self._seen: dict[bytes, int] = {}  # copies of each of our header names seen, by lower-case name
        self._header_size = 0  # of every header received, kept or not
        self._body_size = 0
        self._skipped = False  # we told the MTA to skip the rest of the body

    def _content_reset(self) -> None:
        """Let go of what is scored (it moves into the ScoreRequest); what the verdict needs stays."""
        self.headers: list[tuple[bytes, bytes]] = []
        self._kept_header_bytes = 0
        self._dropped_headers = 0
        self._body = bytearray()

    @property
    def held_bytes(self) -> int:
        """Bytes of message content this session holds now: what the server counts against its memory caps."""
        return self._kept_header_bytes + len(self._body)

    @property
    def _separator(self) -> bytes:
        """With SMFIP_HDR_LEADSPC the value keeps its leading space, so the colon alone separates."""
        return b":" if self._agreed(p.SMFIP_HDR_LEADSPC) else b": "

    def _agreed(self, flag: int) -> bool:
        return bool(self.protocol & flag)

    def _ack(self, command: p.Command) -> list[bytes]:
        flag = _NO_REPLY_FLAG.get(type(command), 0)
        return [] if flag and self._agreed(flag) else [p.reply(p.CONTINUE)]

    def handle(self, command: p.Command) -> list[bytes] | ScoreRequest | Close:
        """Replies to send for one command; at end of message, the request to score instead."""
        if isinstance(command, p.OptionNegotiation):
            return [self._negotiate(command)]
        if not self.negotiated:
            raise p.MilterProtocolError(f"{type(command).__name__} before option negotiation")
        if isinstance(command, p.DefineMacros):
            if "i" in command.macros:
                self.queue_id = _QUEUE_ID.sub("?", command.macros["i"][:_MAX_QUEUE_ID])
            return []
        if isinstance(command, p.Header):
            self._header(command)
            return self._ack(command)
        if isinstance(command, p.BodyChunk):
            return self._body_chunk(command)
        if isinstance(command, p.EndOfMessage):
            if command.data:
                self._body_chunk(p.BodyChunk(command.data))
            return self._score_request()
        if isinstance(command, p.Abort):
            self._reset_message()
            return []
        if isinstance(command, p.Quit):
            return CLOSE
        if isinstance(command, p.QuitNewConnection):
            self._reset_message()
            return []
        return self._ack(command)  # connect, helo, mail, rcpt, data, unknown, end of headers

    def _negotiate(self, offer: p.OptionNegotiation) -> bytes:
        if offer.version < 2:
            raise p.MilterProtocolError(f"MTA speaks milter protocol version {offer.version}, need 2 or newer")
        self.actions = WANTED_ACTIONS & offer.actions
        self.protocol = WANTED_PROTOCOL & offer.protocol
        self.negotiated = True
        version = min(offer.version, p.VERSION)
        macros = WANTED_MACROS if version >= 6 and self.actions & p.SMFIF_SETSYMLIST else None
        if macros is None:
            self.actions &= ~p.SMFIF_SETSYMLIST
        return p.optneg_reply(version, self.actions, self.protocol, macros)

    def _header(self, header: p.Header) -> None:
        size = len(header.name) + len(self._separator) + len(header.value) + 2  # its line in the scored message
        self._header_size += size
        key = header.name.lower()
        if key in _OURS:
            self._seen[key] = self._seen.get(key, 0) + 1
            self._forged_count += 1
            if len(self._forged) < self.policy.max_headers:
                self._forged.append((self._seen[key], header.name))
        if (
            len(self.headers) < self.policy.max_headers
            and self._kept_header_bytes + size <= self.policy.max_header_bytes
        ):
            self.headers.append((header.name, header.value))
            self._kept_header_bytes += size
        else:
            self._dropped_headers += 1

    def _body_chunk(self, chunk: p.BodyChunk) -> list[bytes]:
        self._body_size += len(chunk.data)
        room = self.policy.max_size - len(self._body)
        if room > 0:
            self._body += chunk.data[:room]
        if len(self._body) >= self.policy.max_size and self._agreed(p.SMFIP_SKIP):
            # enough to score: the MTA may stop sending the body (it still delivers all of it)
            self._skipped = True
            return [p.reply(p.SKIP)]
        return self._ack(chunk)

    def _score_request(self) -> ScoreRequest:
        head = b"".join(name + self._separator + value + b"\r\n" for name, value in self.headers)
        request = ScoreRequest(
            message=head + b"\r\n" + bytes(self._body),
            queue_id=self.queue_id or "NOQUEUE",
            size=self._header_size + self._body_size,
            truncated=self._skipped or self._body_size > len(self._body),
            dropped_headers=self._dropped_headers,
        )
        self._content_reset()
        return request

    @property
    def too_many_forged(self) -> bool:
        """More copies of our headers than we delete: such a message is tempfailed whatever the verdict, as it
        cannot leave here carrying a sender's `X-Spam-Flag: NO` that reads like ours."""
        return self._forged_count > len(self._forged)

    def _remove_forged(self) -> list[bytes]:
        """Delete incoming copies of our headers, last first, so no index shifts under a later deletion."""
        if not self.actions & p.SMFIF_CHGHDRS:
            return []
        return [p.change_header(index, name, b"") for index, name in reversed(self._forged)]

    def _forged_tempfail(self) -> Outcome:
        outcome = Outcome([p.reply(p.TEMPFAIL)], "tempfail")
        self._reset_message()
        return outcome

    def verdict(self, verdict: VerdictLike) -> Outcome:
        """Replies for a scored message: forged copies removed, our headers at the top, then accept or reject."""
        if self.too_many_forged:
            return self._forged_tempfail()
        replies = self._remove_forged()
        if self.actions & p.SMFIF_ADDHDRS:
            # with SMFIP_HDR_LEADSPC the MTA writes `name:value` as given, so the space is ours to send
            space = " " if self._agreed(p.SMFIP_HDR_LEADSPC) else ""
            fields = verdict_fields(verdict, spamguard_version())
            replies += [p.insert_header(i, name, space + value) for i, (name, value) in enumerate(fields)]
        # The headers go out with a reject too: the MTA drops them, but a client that only wants the verdict
        # (`spamguard pipe --connect`) reads them from the same answer.
        if self.policy.reject_threshold is not None and verdict.score >= self.policy.reject_threshold:
            outcome = Outcome([*replies, p.reply_code(self.policy.reject_reply)], "reject")
        else:
            outcome = Outcome([*replies, p.reply(p.ACCEPT)], "accept")
        self._reset_message()
        return outcome

    def failure(self) -> Outcome:
        """Scoring failed or timed out: accept without our headers (fail open) or tempfail (fail closed). Forged
        copies of our headers are removed either way: an outage must not let a sender's `X-Spam-Flag: NO`
        through looking like ours."""
        if self.policy.fail_closed or self.too_many_forged:
            outcome = Outcome([p.reply(p.TEMPFAIL)], "tempfail")
        else:
            outcome = Outcome([*self._remove_forged(), p.reply(p.ACCEPT)], "accept")
        self._reset_message()
        return outcome
