"""Mail (or SMS text) in, the text the model reads out. Training on mail and filtering mail both go through
`message_text`, so the model is never asked about text shaped differently from what it learned on.

What the model sees of a mail: the decoded Subject, a blank line, then the text/plain parts (decoded by
transfer encoding and charset); the text of the HTML parts only when there is no plain text. Attachments,
images and other non-text parts are skipped; of HTML only what a reader sees is kept (`spamguard.html_text`),
and every text, an SMS too, is normalized to the letters a reader sees (`spamguard.normalize`). Decoding never
fails: bad bytes become U+FFFD, an unknown charset falls back to UTF-8 or Windows-1252, broken base64 yields what
can be read of it.

Work is bounded whatever arrives: only the first `MAX_PARSE_BYTES` of a message are parsed, at most
`MAX_PART_CHARS` of any part are decoded, and the text stops growing at `MAX_TEXT_CHARS` (a model reads at most
1024 tokens, a few thousand characters).

Python's mail parser is the standard library's, fed through bounds of our own, because parts of it are
super-linear or recursive on hostile input (measured, before the bounds, on 1 MiB messages: multipart nesting
1,000 deep raised RecursionError; 200,000 `;` inside a quoted Content-Type parameter took 36 s; 100,000 RFC
2047 words in a Subject 9 s; a body in `charset=punycode` 3 s; 200,000 empty MIME parts 4.8 s). So: at most
`MAX_PARSE_LINES` lines are parsed; the parse stops feeding after `MAX_MIME_PARTS` parts; a multipart or
message/* part deeper than `MAX_MIME_DEPTH` is read as an opaque leaf; a header value keeps its first
`MAX_HEADER_CHARS` characters, a Content-* field its first `MAX_HEADER_PARAMS` parameters; a charset must look
like a charset name and not be one of Python's codecs that are not mail charsets (punycode is quadratic). None of
these touch the text of ordinary mail (checked on every mail of the corpus). docs/limits.md lists them."""

from __future__ import annotations

import binascii
import codecs
import email.errors
import email.header
import email.utils
import itertools
import re
from collections.abc import Iterator
from email.feedparser import BytesFeedParser, FeedParser
from email.message import Message
from email.policy import Compat32

from spamguard.html_text import html_text
from spamguard.normalize import normalize_text

MAX_PARSE_BYTES = 1 << 20  # a 50 MB attachment costs the same as a 1 MB one: the text parts come first
MAX_PART_CHARS = 256 * 1024  # of one part's encoded payload
MAX_TEXT_CHARS = 64 * 1024  # of the result
MAX_PARSE_LINES = 10_000  # 760 KB of 76-character lines; the corpus's longest mail has 3,080
MAX_MIME_PARTS = 256  # messages and parts the parser creates, the root included
MAX_MIME_DEPTH = 16  # nesting of multipart and message/* parts; real mail stays under 8
MAX_HEADER_CHARS = 16 * 1024  # of one header value (folded lines included)
MAX_HEADER_PARAMS = 64  # `;`-separated parameters kept of a Content-* field
_FEED_CHARS = 4096  # the parser is fed this much at a time, so it can stop soon after MAX_MIME_PARTS
# The version of what this module makes of a message. A model is served only with the text version it was
# trained on (the bundle manifest's "text_version"; a bundle without one was trained on version 1).
# 1: the text as extracted; 2: normalized (`spamguard.normalize`) and without hidden HTML (`spamguard.html_text`);
# 3: leetspeak undone too ("fr33" -> "free", step 5 of `spamguard.normalize`); 4: leetspeak also undone into
# capitalised words ("4UGU5T" -> "AUGUST") and in words with a letter between digits ("54m3" -> "same"); 5 was
# tried and not adopted (bundles trained on it are refused, not read as another text); 6: the digits that imitate
# letters read as letters in every run of letters and digits, with no word list or shape rules ("mp3" -> "mpe").
TEXT_VERSION = 6
MAIL, SMS = "mail", "sms"  # the two kinds of message (see `message_kind`)
KINDS = (MAIL, SMS)

# A mail starts with a header block: optionally an mbox "From " line, then header fields ("Name: value" with
# RFC 5322's field-name characters, or folded continuation lines) up to a blank line or the end. It counts as
# a mail only when that block names one of the fields every real mail carries, so an SMS such as
# "Sorry: can't talk now" stays an SMS.
_MBOX_FROM = re.compile(rb"From [^\r\n]*\r?\n")
_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_MAIL_FIELDS = frozenset(
    b"from to cc subject date message-id received return-path mime-version content-type delivered-to reply-to "
    b"sender".split()
)
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*")  # a field name cut before its colon
_HEADER_SCAN_BYTES = 64 * 1024

_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")  # padding included: it is recomputed
_BLANK_RUNS = re.compile(r"\n[ \t\r\f\v]*(?:\n[ \t\r\f\v]*)+")
_SPACE_RUNS = re.compile(r"[^\S\n]+")  # any white space but a line break: tabs, NBSP, ideographic spaces...
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # RFC 5322 2.2.3: a line break before whitespace is folding
_LINE_BREAKS = re.compile(r"[\r\n]+")
_LINE_END = re.compile(r"\r\n|\r|\n")  # where Python's mail parser ends a line
_LINE_END_BYTES = re.compile(_LINE_END.pattern.encode())
_SURROGATES = re.compile("[\ud800-\udfff]")
# IANA charset names are at most 40 characters of these. Python also knows codecs that are no mail charset and
# must not be reached from a message: punycode decodes in quadratic time, idna and the escape codecs are not text.
_CHARSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+()-]{0,39}")
_NOT_CHARSETS = frozenset(("punycode", "idna", "unicode-escape", "raw-unicode-escape"))  # codecs.lookup names


def looks_like_mail(raw: bytes) -> bool:
    """Header-block detection (see above): True when `raw` starts like an RFC 822 message. A block that ends
    without a blank line (a header-only message) needs two fields, so a one-line SMS "To: mom" stays text. A block
    still going at the scan limit (every line so far a field or a folded line, the one cut by the limit too) is a
    mail: no SMS is 64 KiB of header fields, and a long Received chain or a huge field must not make a mail SMS."""
    head = raw[:_HEADER_SCAN_BYTES]
    start = _MBOX_FROM.match(head)
    lines = head[start.end() if start else 0 :].splitlines()
    cut = len(head) < len(raw) and bool(lines)
    known, fields = False, 0
    for index, line in enumerate(lines):
        if not line.strip():
            return known and index > 0
        if line[:1] in (b" ", b"\t"):
            if index == 0:
                return False
            continue
        field = _FIELD.match(line)
        if field is None:
            # A line cut by the scan limit inside a field name is not a broken header block.
            return cut and index == len(lines) - 1 and index > 0 and _FIELD_START.fullmatch(line) is not None
        fields += 1
        known = known or field.group().rstrip(b": \t").lower() in _MAIL_FIELDS
    return (known and fields >= 2) or (cut and fields >= 1)


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text that never fails. A declared charset Python knows is trusted (bad bytes replaced); a
    missing, unknown or US-ASCII one (mail often says us-ascii and sends Latin-1) tries UTF-8, then
    Windows-1252, the superset of Latin-1 that mail clients actually write."""
    name = (charset or "").strip().strip("\"'").lower()
    if name and name not in ("us-ascii", "ascii", "unknown-8bit", "x-unknown", "iso-8859-1", "latin-1", "latin1"):
        try:
            if _CHARSET_NAME.fullmatch(name) and codecs.lookup(name).name not in _NOT_CHARSETS:
                return data.decode(name, errors="replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass  # unknown or not a text codec ("base64", "zlib"): fall back below
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _payload_bytes(part: Message) -> tuple[bytes, bool]:
    """The part's body after transfer decoding, from at most `MAX_PART_CHARS` of it; the flag says the payload
    was already text (a Message parsed from str), which must not be charset-decoded again."""
    # The stored payload, not get_payload(): for 8-bit bodies that decodes with the declared charset and
    # 'replace' (ASCII when the charset is unknown), which would lose the bytes before the fallbacks below.
    payload = part._payload
    if not isinstance(payload, str):
        return b"", False
    payload = payload[:MAX_PART_CHARS]
    try:
        data = payload.encode("ascii", "surrogateescape")  # how email.parser keeps a message's raw bytes
    except UnicodeEncodeError:
        return payload.encode("utf-8", "surrogatepass"), True
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        data = _BASE64_JUNK.sub(b"", data)
        # Re-pad whatever survived: a cut or broken tail still yields its whole bytes, a lone sixth is dropped.
        data = data[: len(data) - 1] if len(data) % 4 == 1 else data + b"=" * (-len(data) % 4)
        try:
            return binascii.a2b_base64(data), False
        except binascii.Error:
            return b"", False
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data), False
    return data, False


def _part_text(part: Message) -> str:
    data, is_text = _payload_bytes(part)
    if is_text:
        return data.decode("utf-8", errors="replace")
    return _decode_bytes(data, _charset(part))


def _charset(part: Message) -> str | None:
    """The declared charset, RFC 2231 form included; a parameter list too broken to read counts as none. Read
    from a bounded copy of the field, so a Message parsed elsewhere costs no more than one parsed here."""
    try:
        value = part.get("content-type")
        if value is None:
            return None
        probe = Message()
        probe["Content-Type"] = _bounded_value("content-type", str(value))
        charset = probe.get_param("charset")
    except (ValueError, TypeError, IndexError):  # UnicodeError included
        return None
    return email.utils.collapse_rfc2231_value(charset) if charset else None


def _header_text(value: object) -> str:
    """An RFC 2047 header (`=?koi8-r?B?...?=`, or raw 8-bit bytes) as one line of text, whatever its charset
    says. A folded header is unfolded first (RFC 5322: the line break of a fold is removed, its whitespace
    kept), so a long Subject reads as the one line it is, and the text stays "subject, blank line, body"."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = _LINE_BREAKS.sub(" ", _FOLD.sub("", value[:MAX_HEADER_CHARS]))
    try:
        chunks = email.header.decode_header(value)  # type: ignore[arg-type]
    except (ValueError, LookupError, binascii.Error, email.errors.HeaderParseError):
        return str(value)
    text = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            text.append(chunk)
        else:
            text.append(_decode_bytes(chunk, charset))
    return _SPACE_RUNS.sub(" ", _LINE_BREAKS.sub(" ", "".join(text))).strip()


def _tidy(text: str) -> str:
    """Collapse the whitespace mail formatting leaves (CRLF, runs of blank lines, non-breaking spaces)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = (_SPACE_RUNS.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _is_attachment(part: Message) -> bool:
    disposition = str(part.get("content-disposition", "")).split(";", 1)[0].strip().lower()
    return disposition == "attachment"


def _leaves(message: Message) -> Iterator[Message]:
    """The non-multipart parts in `Message.walk`'s order, without its recursion and within the parse limits
    (a Message parsed elsewhere may be deeper or wider than one parsed here)."""
    stack = [(message, 0)]
    for _ in range(MAX_MIME_PARTS):
        if not stack:
            return
        part, depth = stack.pop()
        if not part.is_multipart():
            yield part
        elif depth < MAX_MIME_DEPTH:
            stack.extend((child, depth + 1) for child in reversed(part.get_payload()))


def _body_text(message: Message, visible_only: bool) -> str:
    plain: list[str] = []
    html: list[str] = []
    size = 0
    for part in _leaves(message):
        if _is_attachment(part):
            continue
        content_type = part.get_content_type()
        if content_type not in ("text/plain", "text/html"):
            continue
        text = _part_text(part)
        if content_type == "text/plain":
            text = _tidy(text)
            if text:
                plain.append(text)
                size += len(text)
        else:
            html.append(text)
            size += len(text)
        if size >= MAX_TEXT_CHARS:
            break
    if plain:
        return "\n\n".join(plain)
    texts = (_tidy(html_text(h, max_chars=MAX_TEXT_CHARS, visible_only=visible_only)) for h in html)
    return "\n\n".join(t for t in texts if t)


def _subject(message: Message, normalize: bool = True) -> str:
    subject = _header_text(message.get("subject"))
    return normalize_text(subject) if normalize else subject


def _mail_text(message: Message, normalize: bool = True) -> str:
    """Subject and body, each normalized on its own (`mail_subject` gives the same Subject)."""
    subject = _subject(message, normalize)
    body = _body_text(message, visible_only=normalize)
    # (cut first: a body past twice the cap could never show, and normalization is linear in what it gets)
    body = normalize_text(body[: 2 * MAX_TEXT_CHARS]) if normalize else body
    return "\n\n".join(t for t in (subject, body) if t)[:MAX_TEXT_CHARS]


def _bounded_value(name: str, value: str) -> str:
    """A header value cut to `MAX_HEADER_CHARS`, and a Content-* field (whose parameters email parses in
    quadratic time when `;` hide inside quotes) to its first `MAX_HEADER_PARAMS` parameters."""
    value = value[:MAX_HEADER_CHARS]
    if name.lower().startswith("content-") and value.count(";") > MAX_HEADER_PARAMS:
        value = ";".join(value.split(";", MAX_HEADER_PARAMS + 1)[: MAX_HEADER_PARAMS + 1])
    return value


class _BoundedPolicy(Compat32):
    """compat32 (what `email.message_from_bytes` uses), with every header value bounded as it is parsed."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        return name, _bounded_value(name, value)


_POLICY = _BoundedPolicy()


class _BoundedMessage(Message):
    """A Message that knows how deep it sits, so the parser reads a multipart or message/* part below
    `MAX_MIME_DEPTH` as an opaque leaf instead of recursing into it (its type still says multipart, so it is
    skipped like any other non-text part)."""

    depth = 0

    def attach(self, payload: Message) -> None:  # type: ignore[override]
        payload.depth = self.depth + 1  # type: ignore[attr-defined]
        super().attach(payload)

    def get_content_maintype(self) -> str:
        maintype = super().get_content_maintype()
        return "text" if self.depth >= MAX_MIME_DEPTH and maintype in ("multipart", "message") else maintype


class _PartCounter:
    """The parser's message factory, counting what it makes."""

    def __init__(self) -> None:
        self.made = 0

    def __call__(self, policy: Compat32 = _POLICY) -> _BoundedMessage:
        self.made += 1
        return _BoundedMessage(policy)


def _first_lines(raw: bytes | str, limit: int) -> bytes | str:
    """`raw` up to the end of its `limit`-th line (lines end as the mail parser ends them)."""
    pattern = _LINE_END_BYTES if isinstance(raw, bytes) else _LINE_END
    last = next(itertools.islice(pattern.finditer(raw), limit - 1, limit), None)
    return raw if last is None else raw[: last.end()]


def _parse(raw: bytes | str) -> Message:
    """`email.message_from_bytes`/`_string` (compat32) within the limits above, for a mail's bytes or text."""
    if isinstance(raw, str):
        # Lone surrogates are no text (compat32 turns a header holding them into a Header that cannot be read).
        raw = _SURROGATES.sub("\ufffd", raw[:MAX_PARSE_BYTES])
    raw = _first_lines(raw[:MAX_PARSE_BYTES], MAX_PARSE_LINES)
    made = _PartCounter()
    parser = BytesFeedParser(made, policy=_POLICY) if isinstance(raw, bytes) else FeedParser(made, policy=_POLICY)
    for start in range(0, len(raw), _FEED_CHARS):
        if made.made > MAX_MIME_PARTS:
            break
        parser.feed(raw[start : start + _FEED_CHARS])  # type: ignore[arg-type]
    return parser.close()


def message_kind(raw: str | bytes | Message) -> str:
    """`MAIL` or `SMS`: the one rule that says which kind a message is, for training (stratified splits,
    figures per kind) and for the runtime (which threshold applies). A parsed `Message` is a mail; text or
    bytes are a mail when they start with a header block (`looks_like_mail`), anything else is an SMS."""
    if isinstance(raw, Message):
        return MAIL
    # One unit past the scan limit, so `looks_like_mail` can tell a header block cut by the limit.
    if isinstance(raw, str):
        head = raw[: _HEADER_SCAN_BYTES + 1].encode("utf-8", "surrogatepass")
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        head = bytes(raw[: _HEADER_SCAN_BYTES + 1])
    else:
        raise TypeError(f"message must be str, bytes or email.message.Message, not {type(raw).__name__}")
    return MAIL if looks_like_mail(head) else SMS


def message_text(raw: str | bytes | Message, *, normalize: bool = True) -> str:
    """The text the model reads for a mail (`bytes`, `str` or a parsed `Message`) or an SMS (any text that
    does not start with a mail header block), as a reader sees it (`spamguard.normalize`, hidden HTML dropped).

    `normalize=False` gives text version 1 (no normalization, hidden HTML kept): only the robustness benchmark
    uses it, to measure what normalization buys against a model trained and served without it."""
    kind = message_kind(raw)
    if isinstance(raw, Message):
        return _mail_text(raw, normalize)
    if isinstance(raw, str):
        if kind == SMS:
            return _sms_text(raw[:MAX_TEXT_CHARS], normalize)
        return _mail_text(_parse(raw), normalize)
    raw = bytes(raw[:MAX_PARSE_BYTES])
    if kind == SMS:
        return _sms_text(_decode_bytes(raw[: MAX_TEXT_CHARS * 4], None)[:MAX_TEXT_CHARS], normalize)
    return _mail_text(_parse(raw), normalize)


def _sms_text(text: str, normalize: bool) -> str:
    return normalize_text(text)[:MAX_TEXT_CHARS] if normalize else text


def message_subject(raw: str | bytes | Message) -> str:
    """The decoded Subject that `message_text` puts first ("" for an SMS or a mail without one): `--explain`
    splits the text it explains by it, so it is read here exactly as message_text reads it."""
    if message_kind(raw) == SMS:
        return ""
    if isinstance(raw, Message):
        return _subject(raw)
    return _subject(_parse(raw if isinstance(raw, str) else bytes(raw[:MAX_PARSE_BYTES])))


def strip_final_newline(raw: bytes) -> bytes:
    """A typed text (an SMS in a file or on stdin) without its one trailing line break: `echo TEXT |` and editors
    add it, and the model reads its verdict at the last token. A mail's bytes stay as they are. `spamguard
    check` and `spamguard learn` both read their inputs through this, so a learned SMS is the text check scores."""
    if message_kind(raw) == SMS:
        return raw.removesuffix(b"\n").removesuffix(b"\r")
    return raw
