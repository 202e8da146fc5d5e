"""Safe extraction of downloaded archives: only the regular files expected, each written by this code (never by
tarfile's own extract, which would honour links, device files and modes) into a fresh staging folder beside the
destination, checked, and only then renamed into place. A bad archive is one line and leaves nothing behind.

Refused, each with one line naming the member: absolute paths, `..`, symbolic and hard links, device files and
FIFOs, a member name that is not a message's, a message whose content does not match the MD5 in its name, a
member or an archive too large, and a message count other than the one published. A truncated or corrupt
bzip2 stream is one line too."""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spamguard.errors import DataError

# SpamAssassin's names: a five-digit number and the MD5 of the message's bytes ("00001.7c53336b37003a92...").
MESSAGE_NAME = re.compile(r"(\d{5})\.([0-9a-f]{32})")
SKIPPED_NAMES = frozenset({"cmds"})  # the corpus's own shell script that renamed the files: not a message
MAX_MEMBER_BYTES = 16 * 1024 * 1024  # as spamguard.mail_sources reads at most of a message
MAX_MEMBERS = 20_000  # the largest SpamAssassin archive holds 2,500 messages
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024  # extracted, all members together (the five archives hold ~50 MB)


class ArchiveError(DataError):
    """A downloaded archive is damaged or holds something it should not."""


@dataclass(frozen=True)
class Extracted:
    path: Path
    messages: int
    bytes: int


def _member_path(archive: Path, member: tarfile.TarInfo) -> PurePosixPath:
    """The member's relative path, or a one-line refusal of a member no data archive should hold."""
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise ArchiveError(f"{archive.name}: refusing {name!r}: an absolute path")
    if ".." in path.parts or "\\" in name:
        raise ArchiveError(f"{archive.name}: refusing {name!r}: a path that leaves the archive's folder")
    if member.issym() or member.islnk():
        raise ArchiveError(f"{archive.name}: refusing {name!r}: a link (to {member.linkname!r})")
    if member.isdev():  # character and block devices, FIFOs
        raise ArchiveError(f"{archive.name}: refusing {name!r}: a device file or FIFO")
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"{archive.name}: refusing {name!r}: not a regular file")
    return path


def _members(archive: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """The members of a tar.bz2 read as a stream, with the damage a download can do as one line."""
    try:
        with tarfile.open(archive, "r|bz2") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise ArchiveError(f"{archive.name}: more than {MAX_MEMBERS} members")
                yield member, tar
    except (tarfile.TarError, EOFError, OSError) as exc:  # bz2 says "Invalid data stream" as an OSError
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise ArchiveError(f"{archive.name} is damaged or truncated ({exc or type(exc).__name__})") from exc


def extract_messages(archive: Path, dest: Path, *, expected: int) -> Extracted:
    """The messages of a SpamAssassin tar.bz2 (`[folder/]NNNNN.<md5>`, the folder dropped) as files in `dest`,
    each checked against the MD5 in its name and their number against `expected`. `dest` must not exist; it
    appears only once everything checked out."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise ArchiveError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        messages, total = 0, 0
        for member, tar in _members(archive):
            path = _member_path(archive, member)
            if member.isdir():
                continue
            if len(path.parts) > 2:
                raise ArchiveError(f"{archive.name}: refusing {member.name!r}: deeper than one folder")
            if path.name in SKIPPED_NAMES:
                continue
            name = MESSAGE_NAME.fullmatch(path.name)
            if name is None:
                raise ArchiveError(f"{archive.name}: refusing {member.name!r}: not a message (NNNNN.<md5>)")
            total += member.size
            if member.size > MAX_MEMBER_BYTES or total > MAX_ARCHIVE_BYTES:
                raise ArchiveError(f"{archive.name}: refusing {member.name!r}: too large ({member.size} bytes)")
            source = tar.extractfile(member)
            data = source.read(MAX_MEMBER_BYTES + 1) if source is not None else b""
            if hashlib.md5(data, usedforsecurity=False).hexdigest() != name.group(2):
                raise ArchiveError(f"{archive.name}: {member.name} does not match the MD5 in its name")
            with open(staging / path.name, "xb") as out:  # x: a repeated name is an error, never an overwrite
                out.write(data)
            messages += 1
        if messages != expected:
            raise ArchiveError(f"{archive.name} holds {messages} messages, {expected} were published")
        staging.rename(dest)
    except FileExistsError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(f"{archive.name}: {Path(exc.filename).name} appears twice") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Extracted(dest, messages, total)


def extract_zip_member(archive: Path, member: str, dest: Path, *, max_bytes: int) -> Path:
    """One named member of a zip archive as the file `dest` (written beside it, then renamed), at most
    `max_bytes`; nothing else in the archive is read."""
    archive, dest = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(member)
            if info.file_size > max_bytes:
                raise ArchiveError(f"{archive.name}: {member} is {info.file_size} bytes, more than {max_bytes}")
            with zf.open(info) as source:
                data = source.read(max_bytes + 1)
    except KeyError as exc:
        raise ArchiveError(f"{archive.name} has no {member}") from exc
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise ArchiveError(f"{archive.name} is damaged or truncated ({exc or type(exc).__name__})") from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dest
