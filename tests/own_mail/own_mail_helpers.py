"""Shared helpers of the own-mail tests: the text function and small message builders."""

from __future__ import annotations

import email
import email.policy
import zlib
from collections.abc import Callable


def _stdlib_text(raw: bytes | str) -> str:
    """Subject and plain body by the standard library: stands in only while the runtime's message_text is not
    in the tree, so these tests never depend on its exact output format."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    body = message.get_body(("plain",))
    content = body.get_content() if body is not None else ""
    return f"{message.get('subject', '')}\n{content}".strip()


def text_function() -> Callable[[bytes], str]:
    """The runtime's message_text once it exists, so the readers are tested against the real extractor."""
    try:
        from spamguard.message_text import message_text
    except ImportError:
        return _stdlib_text
    return message_text


def make_message(subject: str, body: str, *, sender: str = "alice@example.org", extra: str = "") -> bytes:
    return (
        f"From: {sender}\nTo: bob@example.org\nSubject: {subject}\nDate: Mon, 2 Sep 2002 10:00:00 +0000\n"
        f"Message-ID: <{zlib.crc32((subject + body).encode())}@example.org>\n{extra}\n{body}\n"
    ).encode()
