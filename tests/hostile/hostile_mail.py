"""Hostile mail built in code: each function returns the raw bytes of one message that made Python's mail parser
slow, recursive or wrong before spamguard bounded it (the sizes are the ones the issue measured)."""

from __future__ import annotations

HEAD = b"From: attacker@example.com\r\nTo: victim@example.com\r\nSubject: hello\r\nMIME-Version: 1.0\r\n"


def nested_multipart(depth: int = 1000) -> bytes:
    """Multipart parts inside each other `depth` deep (RecursionError at ~1,000), a text part at the bottom."""
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level) for level in range(depth)
    )
    return HEAD + opening + b"Content-Type: text/plain\r\n\r\ndeep text\r\n"


def nested_messages(depth: int = 1000) -> bytes:
    """message/rfc822 parts inside each other: the parser's other recursion."""
    return HEAD + b"Content-Type: message/rfc822\r\n\r\n" * depth + b"Subject: inner\r\n\r\ninner text\r\n"


def quoted_semicolons(count: int = 200_000) -> bytes:
    """A Content-Type whose quoted parameter holds `count` semicolons (30-40 s in email's _parseparam)."""
    return HEAD + b'Content-Type: text/plain; charset="' + b";" * count + b'"\r\n\r\nbody\r\n'


def quoted_semicolons_in_many_parts(parts: int = 300, count: int = 20_000) -> bytes:
    """The same in every part of a multipart: each part's charset is read."""
    part = b'--B\r\nContent-Type: text/plain; charset="' + b";" * count + b'"\r\n\r\ntext\r\n'
    return HEAD + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + part * parts + b"--B--\r\n"


def encoded_words(count: int = 100_000) -> bytes:
    """A Subject of `count` RFC 2047 encoded words (10-18 s in email.header.decode_header)."""
    return b"From: a@example.com\r\nSubject: " + b" ".join([b"=?utf-8?q?a?="] * count) + b"\r\n\r\nbody\r\n"


def punycode(size: int = 220_000) -> bytes:
    """A body and an encoded-word Subject in charset punycode, which Python decodes in quadratic time."""
    return (
        b"From: a@example.com\r\nSubject: =?punycode?q?"
        + b"a" * size
        + b"?=\r\nContent-Type: text/plain; charset=punycode\r\n\r\n"
        + b"a" * size
        + b"\r\n"
    )


def long_charset_name(size: int = 220_000) -> bytes:
    return HEAD + b"Content-Type: text/plain; charset=" + b"x" * size + b"\r\n\r\nbody\r\n"


def header_flood(size: int = 1 << 20) -> bytes:
    """A megabyte of tiny header fields."""
    return HEAD + b"X-A: b\r\n" * (size // 8) + b"\r\nbody\r\n"


def one_huge_header(size: int = 1 << 20) -> bytes:
    return b"From: a@example.com\r\nSubject: " + b"a" * size + b"\r\n\r\nbody\r\n"


def folded_subject(lines: int = 300_000) -> bytes:
    """A Subject folded over `lines` continuation lines."""
    return b"From: a@example.com\r\nSubject: s\r\n" + b" s\r\n" * lines + b"\r\nbody\r\n"


def empty_parts(count: int = 200_000) -> bytes:
    """A multipart of `count` empty parts (5 bytes each)."""
    return HEAD + b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"--x\n\n" * count


def text_parts(count: int = 150_000) -> bytes:
    return HEAD + b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"--x\n\na\n" * count


def empty_lines(count: int = 1 << 20) -> bytes:
    return HEAD + b"\r\n" + b"\n" * count


def bare_cr_lines(count: int = 1 << 20) -> bytes:
    return HEAD.replace(b"\r\n", b"\r") + b"\r" + b"\r" * count


def deep_multipart_of_empty_lines(depth: int = 16, size: int = 1 << 20) -> bytes:
    """Body lines under the deepest nesting the parser still follows: each line is matched against every
    enclosing boundary."""
    return nested_multipart(depth) + b"\n" * size


def html_part(markup: bytes) -> bytes:
    """An HTML-only mail of `markup` (what message_text reads through spamguard.html_text)."""
    return HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + markup


def unclosed_tags(count: int = 100_000) -> bytes:
    """200 KB of `<a` (68 s in html.parser, issue 10)."""
    return html_part(b"<a" * count)


def nested_tags(count: int = 100_000) -> bytes:
    """Tags nested `count` deep (84 s in selectolax's HTML5 tree builder)."""
    return html_part(b"<div>" * count + b"deep text")


def styled_tags(count: int = 25_000) -> bytes:
    """Distinct inline styles, each one read: the slowest path of html_text per tag."""
    return html_part(b"".join(b"<span style='color:#%06x;font-size:%dpx'>w" % (i, 10 + i % 9) for i in range(count)))


def entities(count: int = 200_000) -> bytes:
    return html_part(b"&amp;" * count)


def combining_marks(count: int = 500_000) -> bytes:
    """A megabyte of combining marks (CPython's normalizer sorts a run of them in quadratic time)."""
    return HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"a" + "\u0301\u0316".encode() * (count // 2)


def mixed_script_words(count: int = 60_000) -> bytes:
    """Latin words with Cyrillic look-alikes, every word classified by spamguard.normalize."""
    return HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + "frее ".encode() * count


BOMBS = {
    "nested multipart x1000": nested_multipart,
    "nested message/rfc822 x1000": nested_messages,
    "200,000 quoted ; in Content-Type": quoted_semicolons,
    "20,000 quoted ; in 300 parts": quoted_semicolons_in_many_parts,
    "100,000 encoded words": encoded_words,
    "charset=punycode 220 KB": punycode,
    "220 KB charset name": long_charset_name,
    "1 MiB of header fields": header_flood,
    "one 1 MiB header": one_huge_header,
    "Subject folded 300,000 times": folded_subject,
    "200,000 empty parts": empty_parts,
    "150,000 text parts": text_parts,
    "1 MiB of empty lines": empty_lines,
    "1 MiB of bare CRs": bare_cr_lines,
    "empty lines 16 deep": deep_multipart_of_empty_lines,
    "html: 200 KB of <a": unclosed_tags,
    "html: 100,000 nested tags": nested_tags,
    "html: 25,000 distinct styles": styled_tags,
    "html: 200,000 entities": entities,
    "a megabyte of combining marks": combining_marks,
    "60,000 mixed-script words": mixed_script_words,
}
