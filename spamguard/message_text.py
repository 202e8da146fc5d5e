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
1024 tokens, a few thousand characters)."""

from __future__ import annotations

import binascii
import email
import email.errors
import email.header
import email.utils
import re
from email.message import Message

from spamguard.html_text import html_text
from spamguard.normalize import normalize_text

MAX_PARSE_BYTES = 1 << 20  # a 50 MB attachment costs the same as a 1 MB one: the text parts come first
MAX_PART_CHARS = 256 * 1024  # of one part's encoded payload
MAX_TEXT_CHARS = 64 * 1024  # of the result
# The version of what this module makes of a message. A model is served only with the text version it was
# trained on (the bundle manifest's "text_version"; a bundle without one was trained on version 1).
# 1: the text as extracted; 2: normalized (`spamguard.normalize`) and without hidden HTML (`spamguard.html_text`).
TEXT_VERSION = 2
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
_HEADER_SCAN_BYTES = 64 * 1024

_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")  # padding included: it is recomputed
_BLANK_RUNS = re.compile(r"\n[ \t\r\f\v]*(?:\n[ \t\r\f\v]*)+")
_SPACE_RUNS = re.compile(r"[^\S\n]+")  # any white space but a line break: tabs, NBSP, ideographic spaces...
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # RFC 5322 2.2.3: a line break before whitespace is folding
_LINE_BREAKS = re.compile(r"[\r\n]+")


def looks_like_mail(raw: bytes) -> bool:
    """Header-block detection (see above): True when `raw` starts like an RFC 822 message. A block that ends
    without a blank line (a header-only message) needs two fields, so a one-line SMS "To: mom" stays text."""
    head = raw[:_HEADER_SCAN_BYTES]
    start = _MBOX_FROM.match(head)
    lines = head[start.end() if start else 0 :].splitlines()
    if len(head) < len(raw) and lines:
        lines.pop()  # cut mid-line by the scan limit
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
            return False
        fields += 1
        known = known or field.group().rstrip(b": \t").lower() in _MAIL_FIELDS
    return known and fields >= 2


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text that never fails. A declared charset Python knows is trusted (bad bytes replaced); a
    missing, unknown or US-ASCII one (mail often says us-ascii and sends Latin-1) tries UTF-8, then
    Windows-1252, the superset of Latin-1 that mail clients actually write."""
    name = (charset or "").strip().strip("\"'").lower()
    if name and name not in ("us-ascii", "ascii", "unknown-8bit", "x-unknown", "iso-8859-1", "latin-1", "latin1"):
        try:
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
    """The declared charset, RFC 2231 form included; a parameter list too broken to read counts as none."""
    try:
        value = part.get_param("charset")
    except (ValueError, TypeError, IndexError):
        return None
    return email.utils.collapse_rfc2231_value(value) if value else None


def _header_text(value: object) -> str:
    """An RFC 2047 header (`=?koi8-r?B?...?=`, or raw 8-bit bytes) as one line of text, whatever its charset
    says. A folded header is unfolded first (RFC 5322: the line break of a fold is removed, its whitespace
    kept), so a long Subject reads as the one line it is, and the text stays "subject, blank line, body"."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = _LINE_BREAKS.sub(" ", _FOLD.sub("", value))
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


def _body_text(message: Message, visible_only: bool) -> str:
    plain: list[str] = []
    html: list[str] = []
    size = 0
    for part in message.walk():
        if part.is_multipart() or _is_attachment(part):
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


def _mail_text(message: Message, visible_only: bool = True) -> str:
    subject = _header_text(message.get("subject"))
    body = _body_text(message, visible_only)
    return "\n\n".join(t for t in (subject, body) if t)[:MAX_TEXT_CHARS]


def message_kind(raw: str | bytes | Message) -> str:
    """`MAIL` or `SMS`: the one rule that says which kind a message is, for training (stratified splits,
    figures per kind) and for the runtime (which threshold applies). A parsed `Message` is a mail; text or
    bytes are a mail when they start with a header block (`looks_like_mail`), anything else is an SMS."""
    if isinstance(raw, Message):
        return MAIL
    if isinstance(raw, str):
        head = raw[:_HEADER_SCAN_BYTES].encode("utf-8", "surrogatepass")
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        head = bytes(raw[:_HEADER_SCAN_BYTES])
    else:
        raise TypeError(f"message must be str, bytes or email.message.Message, not {type(raw).__name__}")
    return MAIL if looks_like_mail(head) else SMS


def message_text(raw: str | bytes | Message, *, normalize: bool = True) -> str:
    """The text the model reads for a mail (`bytes`, `str` or a parsed `Message`) or an SMS (any text that
    does not start with a mail header block), as a reader sees it (`spamguard.normalize`, hidden HTML dropped).

    `normalize=False` gives text version 1 (no normalization, hidden HTML kept): only the robustness benchmark
    uses it, to measure what normalization buys against a model trained and served without it."""
    text = _extracted_text(raw, visible_only=normalize)
    return normalize_text(text)[:MAX_TEXT_CHARS] if normalize else text


def _extracted_text(raw: str | bytes | Message, visible_only: bool) -> str:
    kind = message_kind(raw)
    if isinstance(raw, Message):
        return _mail_text(raw, visible_only)
    if isinstance(raw, str):
        if kind == SMS:
            return raw[:MAX_TEXT_CHARS]
        return _mail_text(email.message_from_string(raw[:MAX_PARSE_BYTES]), visible_only)
    raw = bytes(raw[:MAX_PARSE_BYTES])
    if kind == SMS:
        return _decode_bytes(raw[: MAX_TEXT_CHARS * 4], None)[:MAX_TEXT_CHARS]
    return _mail_text(email.message_from_bytes(raw), visible_only)
