"""Downloads of public data sets: resumable, bounded, checked before they replace anything.

A download goes into `<target>.part` beside its target; an interrupted one is resumed from there with an HTTP
Range request (a server that ignores the range sends the whole file again, and the part starts over). The
bytes are counted against a limit while they arrive, checked against the pinned sha256 when there is one, and
only then renamed to the target, so a target on disk is always whole. A terminal gets a byte progress bar; a
log gets one line when a download starts and one when it ends.

urllib rather than `requests`: the standard library covers Range, timeouts and streaming in a few lines, and
the runtime's dependencies stay as they are (huggingface_hub brings its own client for the weights)."""

from __future__ import annotations

import http.client
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from spamguard.bundle import sha256_file
from spamguard.errors import DataError

CHUNK_BYTES = 64 * 1024
TIMEOUT_SECONDS = 30.0  # per connect and per read: an offline machine fails at once, a stalled server in 30 s
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(DataError):
    """A download failed (no network, an HTTP error, too many bytes) or what arrived is not what was pinned."""


@dataclass(frozen=True)
class Remote:
    """A file to fetch: where from, its pinned sha256 (None when only its extracted content is pinned), and the
    most bytes it may take."""

    url: str
    sha256: str | None
    max_bytes: int

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def readable_size(n: int) -> str:
    """A size as people read it: bytes, kB or MB."""
    if n < 1000:
        return f"{n} bytes"
    return f"{n / 1e3:.1f} kB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"


def _reason(exc: BaseException) -> str:
    """One line for a network error: the URLError's reason rather than its `<urlopen error ...>` wrapper."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _progress_bar(total: int | None, initial: int, name: str) -> Any:
    """A tqdm byte bar on a terminal only; elsewhere the start and end lines are the whole story."""
    try:
        from tqdm import tqdm
    except ImportError:  # training installs tqdm; be quiet rather than fail without it
        return None
    if not sys.stderr.isatty():
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=name, leave=False, file=sys.stderr)


def _open(remote: Remote, offset: int) -> http.client.HTTPResponse | None:
    """The response for the bytes from `offset` on; None when the server says there are none left (416 to a
    Range request: the part is already whole, which the checksum then confirms)."""
    headers = {"User-Agent": "spamguard"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(remote.url, headers=headers), timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return None
        raise DownloadError(f"cannot download {remote.url} ({_reason(exc)})") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise DownloadError(f"cannot download {remote.url} ({_reason(exc)})") from exc


def _resume_offset(response: http.client.HTTPResponse, offset: int) -> int:
    """Where the body starts: `offset` for a 206 whose Content-Range starts there, else 0 (the whole file)."""
    if not offset or response.status != 206:
        return 0
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return offset if match and int(match.group(1)) == offset else 0


def _receive(remote: Remote, response: http.client.HTTPResponse, part: Path, offset: int) -> int:
    """Stream the body into `part` (appending from `offset`); the bytes the part holds at the end. An
    interruption keeps the part for the next run to resume; going over the limit removes it."""
    length = response.headers.get("Content-Length")
    expected = offset + int(length) if length and length.isdigit() else None
    if expected is not None and expected > remote.max_bytes:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{remote.url} is {readable_size(expected)}, more than the {readable_size(remote.max_bytes)} expected"
        )
    size = offset
    bar = _progress_bar(expected, offset, remote.filename)
    try:
        with _writable(part, "ab" if offset else "wb") as out:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (http.client.HTTPException, OSError) as exc:
                    raise DownloadError(
                        f"the download of {remote.url} was interrupted after {readable_size(size)} ({_reason(exc)}): "
                        "run again to resume it"
                    ) from exc
                if not chunk:
                    break
                size += len(chunk)
                if size > remote.max_bytes:
                    out.close()
                    part.unlink(missing_ok=True)
                    raise DownloadError(
                        f"{remote.url} sent more than the {readable_size(remote.max_bytes)} expected (removed)"
                    )
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from exc
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if expected is not None and size < expected:
        raise DownloadError(
            f"the download of {remote.url} was interrupted after {readable_size(size)} of {readable_size(expected)}: "
            "run again to resume it"
        )
    return size


def _writable(path: Path, mode: str) -> BinaryIO:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, mode)  # the caller closes it
    except OSError as exc:
        raise DownloadError(f"cannot write {path}: {exc.strerror or exc}") from exc


def fetch(remote: Remote, target: Path, *, log: Callable[[str], None] = print) -> Path:
    """`target`, downloaded from `remote` unless a copy that matches the pin is already there. Every failure is
    a `DownloadError` with one line that says what happened and whether running again resumes."""
    target = Path(target)
    if target.is_file() and (remote.sha256 is None or sha256_file(target) == remote.sha256):
        return target
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if offset > remote.max_bytes:
        part.unlink()
        offset = 0
    began = time.perf_counter()
    response = _open(remote, offset)
    if response is None:
        size = offset
    else:
        with response:
            offset = _resume_offset(response, offset)
            log(f"downloading {remote.url}" + (f" (resuming after {readable_size(offset)})" if offset else ""))
            size = _receive(remote, response, part, offset)
    if remote.sha256 is not None and sha256_file(part) != remote.sha256:
        part.unlink()
        raise DownloadError(
            f"the download of {remote.url} does not match its sha256 {remote.sha256} (removed: run again to "
            "download it anew)"
        )
    part.replace(target)
    log(f"downloaded {remote.filename}: {readable_size(size)} in {time.perf_counter() - began:.1f} s")
    return target
