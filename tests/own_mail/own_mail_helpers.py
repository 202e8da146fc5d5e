"""Shared helpers of the own-mail tests."""

from __future__ import annotations

import zlib
from pathlib import Path


def make_message(subject: str, body: str, *, sender: str = "alice@example.org", extra: str = "") -> bytes:
    return (
        f"From: {sender}\nTo: bob@example.org\nSubject: {subject}\nDate: Mon, 2 Sep 2002 10:00:00 +0000\n"
        f"Message-ID: <{zlib.crc32((subject + body).encode())}@example.org>\n{extra}\n{body}\n"
    ).encode()


def make_maildir(root: Path, mails: list[Path]) -> Path:
    """Half in cur/ with flags in the names, half in new/, and the bookkeeping a real Maildir has."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    for number, mail in enumerate(mails):
        name = f"10350{number:05d}.M{number}P1.host" + (":2,S" if number % 2 else "")
        (root / ("cur" if number % 2 else "new") / name).write_bytes(mail.read_bytes())
    (root / "tmp" / "1035099999.M9P1.host").write_bytes(mails[0].read_bytes())  # still being delivered
    (root / "dovecot-uidlist").write_text("3 V1 N4\n")
    return root


def make_mbox(path: Path, mails: list[Path]) -> Path:
    """mboxrd: an envelope line per message, body lines starting with `From ` (or `>From `) quoted."""
    with open(path, "wb") as f:
        for mail in mails:
            data = mail.read_bytes()
            if data.startswith(b"From "):  # a saved envelope line: replaced by ours
                data = data.split(b"\n", 1)[1]
            lines = [b">" + line if line.lstrip(b">").startswith(b"From ") else line for line in data.split(b"\n")]
            f.write(b"From spammer@example.com Thu Aug 22 12:36:23 2002\n" + b"\n".join(lines).rstrip(b"\n") + b"\n\n")
    return path
