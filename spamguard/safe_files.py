"""Opening files that someone else put there (a bundle, a mail folder, a message to learn) without being led
astray: a FIFO in a file's place would block the open until a writer comes, a device such as /dev/zero never
ends, and a link can lead out of the folder it sits in. One place for that rule, used by the bundle reader, the
mail folder walker and `spamguard learn`."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISLNK, "symbolic link"),
)


class NotRegularFile(OSError):
    """The path names something other than a regular file; `kind` says what (`file_kind`)."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} is a {kind}, not a regular file")
        self.kind = kind


def file_kind(mode: int) -> str:
    """What a `st_mode` describes, in words for a message: "regular file", "FIFO", "character device"..."""
    if stat.S_ISREG(mode):
        return "regular file"
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def open_regular(path: Path, *, follow_links: bool = True) -> tuple[BinaryIO, int]:
    """Open `path` for reading if it is a regular file, and return it with its size. The open is non-blocking,
    so a FIFO is found out by its type instead of hanging; with `follow_links=False` a link is refused (`ELOOP`)
    instead of followed. Raises `OSError` (`NotRegularFile` for a FIFO, device, socket or folder)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(Path(path), file_kind(info.st_mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise
