"""Shared helpers of the own-mail tests."""

from __future__ import annotations

import zlib


def make_message(subject: str, body: str, *, sender: str = "alice@example.org", extra: str = "") -> bytes:
    return (
        f"From: {sender}\nTo: bob@example.org\nSubject: {subject}\nDate: Mon, 2 Sep 2002 10:00:00 +0000\n"
        f"Message-ID: <{zlib.crc32((subject + body).encode())}@example.org>\n{extra}\n{body}\n"
    ).encode()
