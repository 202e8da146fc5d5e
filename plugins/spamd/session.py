"""One spamd connection as a pure state machine: bytes in; a reply, or a request to score, out.

It knows the verbs (what each one answers, and how the answer depends on the client's protocol version) and
how a verdict becomes SpamAssassin points and headers, but not sockets, threads or the model: once a message is
complete it hands back a `ScoreRequest`, and the caller feeds the verdict (or the failure) back in. A spamd
connection carries one request, so every reply ends the conversation.

Failures are never verdicts: when scoring fails the client gets spamd's error reply (EX_TEMPFAIL for an
overloaded or timed-out pool, EX_SOFTWARE for a bug) and applies its own policy, as it does when spamd is down:
spamc passes the message through unchanged, Exim defers (or accepts with `/defer_ok`), rspamd scores without
us."""

from __future__ import annotations

from dataclasses import dataclass

from spamguard.errors import SpamguardError, one_line
from spamguard.plugins import spamguard_version
from spamguard.plugins.headers import VerdictLike, add_headers, header_fields, line_ending, verdict_fields
from spamguard.plugins.pipe import DEFAULT_MAX_SIZE
from spamguard.plugins.spamd import protocol as p
from spamguard.plugins.spamd.points import DEFAULT_REQUIRED, Points, to_points

SYMBOL = "SPAMGUARD"  # the one "rule" spamguard reports (SYMBOLS, REPORT, X-Spam-Status tests=)


@dataclass(frozen=True)
class SpamdSettings:
    max_size: int = DEFAULT_MAX_SIZE  # bytes of a message held and scored (PROCESS refuses larger ones)
    required: float = DEFAULT_REQUIRED  # the required score reported to clients


@dataclass(frozen=True)
class Reply:
    """Bytes to send, after which the connection is closed (`data` empty: close without a word, as spamd
    does after SKIP)."""

    data: bytes
    outcome: str  # for the log line: "pong", "skip", "refused", ...


@dataclass(frozen=True)
class ScoreRequest:
    request: p.Request


class SpamdSession:
    def __init__(self, settings: SpamdSettings) -> None:
        self.settings = settings
        self.reader = p.RequestReader(settings.max_size)
        self.request: p.Request | None = None

    def feed(self, data: bytes) -> Reply | ScoreRequest | None:
        """What to do after these bytes: None while the request is incomplete."""
        try:
            request = self.reader.feed(data)
        except p.SpamdError as exc:
            return Reply(exc.reply(), "refused")
        return None if request is None else self._dispatch(request)

    def eof(self) -> Reply | ScoreRequest:
        """The client half-closed its side."""
        try:
            request = self.reader.eof()
        except p.SpamdError as exc:
            return Reply(exc.reply(), "refused")
        return self._dispatch(request)

    def _dispatch(self, request: p.Request) -> Reply | ScoreRequest:
        self.request = request
        if request.verb == "PING":
            return Reply(p.pong(), "pong")
        if request.verb == "SKIP":
            return Reply(b"", "skip")
        return ScoreRequest(request)

    def points(self, verdict: VerdictLike) -> Points:
        return to_points(verdict.score, verdict.threshold, verdict.label == "spam", self.settings.required)

    def verdict(self, verdict: VerdictLike) -> bytes:
        """The reply to the scored request."""
        assert self.request is not None
        request = self.request
        points = self.points(verdict)
        verb = request.verb
        if verb == "SYMBOLS":
            body = SYMBOL.encode()
        elif verb == "REPORT" or (verb == "REPORT_IFSPAM" and points.is_spam):
            body = report(verdict, points).encode()
        elif verb in ("PROCESS", "HEADERS"):
            body = add_headers(request.message, verdict_fields(verdict, spamguard_version()))
            if verb == "HEADERS":
                body = header_block(body)
        else:
            body = b""
        return p.result_reply(request, points.is_spam, points.text(), body)

    def failure(self, exc: BaseException) -> bytes:
        """The reply when scoring failed: the pool's own errors (overloaded, timed out, failed) ask the client
        to try again later; anything else is a bug of ours."""
        if isinstance(exc, SpamguardError):
            return p.error_reply(p.EX_TEMPFAIL, f"Temporary failure: {one_line(exc)}")
        return p.error_reply(p.EX_SOFTWARE, f"Internal error: {one_line(exc)}")


def header_block(message: bytes) -> bytes:
    """The header block with the blank line after it, as spamd answers HEADERS. A message without a blank
    line after its headers gets one, so the reply always ends the way clients expect."""
    fields = header_fields(message)
    end = fields[-1][2] if fields else 0
    for blank in (b"\r\n", b"\n"):
        if message.startswith(blank, end):
            return message[: end + len(blank)]
    ending = line_ending(message)
    head = message[:end]
    return head + ending if not head or head.endswith(b"\n") else head + ending + ending


def report(verdict: VerdictLike, points: Points) -> str:
    """SpamAssassin's report layout (`report` template), with spamguard as the one rule, so tools that read
    the "Content analysis details" table (and Exim's `$spam_report`) find what they look for."""
    label = verdict.label
    return (
        f"spamguard {spamguard_version()} scored this message with the model {verdict.model}: {label}.\n"
        "\n"
        f"Content analysis details:   ({points.score_text} points, {points.required_text} required)\n"
        "\n"
        " pts rule name              description\n"
        "---- ---------------------- --------------------------------------------------\n"
        f"{points.score_text:>4} {SYMBOL:<22} P(spam) {verdict.score:.4f}, threshold {verdict.threshold:.4f}\n"
    )
