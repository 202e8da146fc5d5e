"""The default data's download, verification and extraction, against archives built here and served by a
loopback HTTP server started here (Range requests honoured, a connection cut mid-download on request): every
bad archive is one line and leaves nothing behind; an interrupted download resumes where it stopped."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spamguard.datasets import HAM, SPAM
from spamguard.errors import DataError
from spamguard.paths import datasets_dir
from spamguard.training import public_data
from spamguard.training.archives import ArchiveError
from spamguard.training.downloads import DownloadError, Remote, fetch, readable_size
from spamguard.training.public_data import MessageArchive, bpe_files, sms_collection, spamassassin, verify_messages

from conftest import BPE_DIR


@dataclass
class Served:
    """What the server hands out, and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the connection drops, once
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


class _Handler(BaseHTTPRequestHandler):
    served: Served

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean

    def do_GET(self) -> None:
        served = self.served
        served.requests.append((self.path, self.headers.get("Range")))
        data = served.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        requested = self.headers.get("Range")
        if requested and not served.ignore_range:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = served.cut_after.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()
    handler = type("Handler", (_Handler,), {"served": served})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def mail(number: int, subject: str = "hello") -> tuple[str, bytes]:
    body = f"From: a@example.com\nSubject: {subject} {number}\n\nbody {number}\n".encode()
    return f"{number:05d}.{hashlib.md5(body).hexdigest()}", body


def tar_bz2(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:bz2") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def good_members(folder: str = "spam", n: int = 3) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    directory = tarfile.TarInfo(folder)
    directory.type = tarfile.DIRTYPE
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [(directory, None)]
    members += [regular(f"{folder}/{name}", body) for name, body in (mail(i) for i in range(1, n + 1))]
    members.append(regular(f"{folder}/cmds", b"mv 00001.abc 00001.def\n"))
    return members


def serve_archive(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served], data: bytes, count: int = 3
) -> MessageArchive:
    """One archive as the whole SpamAssassin corpus, its sha256 pinned to the bytes served."""
    url, served = server
    archive = MessageArchive("20030228_spam", SPAM, count, hashlib.sha256(data).hexdigest())
    served.files["/corpus/20030228_spam.tar.bz2"] = data
    monkeypatch.setattr(public_data, "SPAMASSASSIN", (archive,))
    monkeypatch.setattr(public_data, "SPAMASSASSIN_URL", f"{url}/corpus/")
    return archive


def leftovers(root: Path) -> list[str]:
    """Every file or folder under root: a refused archive must leave none (no staging, no part, no archive)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_archive_is_downloaded_checked_extracted_and_then_reused(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served]
) -> None:
    serve_archive(monkeypatch, server, tar_bz2(good_members()))
    logged: list[str] = []
    folders = spamassassin(log=logged.append)
    root = datasets_dir()
    extracted = root / "spamassassin" / "spam" / "20030228_spam"
    assert folders.spam == (root / "spamassassin" / "spam",) and folders.ham == (root / "spamassassin" / "ham",)
    assert sorted(p.name for p in extracted.iterdir()) == sorted(mail(i)[0] for i in (1, 2, 3))  # no cmds
    assert leftovers(root / "downloads") == []
    assert logged[-2:] == [
        "extracted 20030228_spam.tar.bz2: 3 messages, each matching the MD5 in its name",
        f"data: the SpamAssassin public corpus at {root / 'spamassassin'} (20030228_spam: 0 ham, 3 spam) (names, "
        "MD5s and counts checked)",
    ]
    requests = len(server[1].requests)
    assert spamassassin(log=lambda _: None) == folders and len(server[1].requests) == requests  # reused

    (extracted / mail(2)[0]).write_bytes(b"changed after the download")
    with pytest.raises(DataError, match=rf"^{extracted / mail(2)[0]} does not match the MD5 in its name$"):
        spamassassin(log=lambda _: None)


def test_interrupted_download_resumes_with_a_range_request(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served]
) -> None:
    data = tar_bz2(good_members(n=40))
    serve_archive(monkeypatch, server, data, count=40)
    url, served = server
    served.cut_after["/corpus/20030228_spam.tar.bz2"] = 700
    part = datasets_dir() / "downloads" / "20030228_spam.tar.bz2.part"
    with pytest.raises(DownloadError) as error:
        spamassassin(log=lambda _: None)
    assert str(error.value) == (
        f"the SpamAssassin public corpus: the download of {url}/corpus/20030228_spam.tar.bz2 was interrupted after "
        f"700 bytes of {readable_size(len(data))}: run again to resume it; instead, pass --ham DIR and --spam DIR, "
        "or point $SPAMGUARD_DATA at a copy"
    )
    assert part.stat().st_size == 700

    logged: list[str] = []
    spamassassin(log=logged.append)
    assert served.requests[-1] == ("/corpus/20030228_spam.tar.bz2", "bytes=700-")
    assert logged[0] == f"downloading {url}/corpus/20030228_spam.tar.bz2 (resuming after 700 bytes)"
    assert len(list((datasets_dir() / "spamassassin" / "spam" / "20030228_spam").iterdir())) == 40
    assert leftovers(datasets_dir() / "downloads") == []


def test_a_part_that_is_already_whole_is_checked_not_fetched_again(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served], tmp_path: Path
) -> None:
    url, served = server
    data = b"x" * 5000
    served.files["/f.bin"] = data
    target = tmp_path / "f.bin"
    target.with_name("f.bin.part").write_bytes(data)
    remote = Remote(f"{url}/f.bin", hashlib.sha256(data).hexdigest(), 10_000)
    assert fetch(remote, target, log=lambda _: None).read_bytes() == data  # the server answered 416
    assert served.requests == [("/f.bin", "bytes=5000-")]


def test_a_server_that_ignores_range_sends_it_all_again(server: tuple[str, Served], tmp_path: Path) -> None:
    url, served = server
    served.ignore_range = True
    data = bytes(range(256)) * 40
    served.files["/f.bin"] = data
    target = tmp_path / "f.bin"
    target.with_name("f.bin.part").write_bytes(b"stale bytes of another version")
    assert (
        fetch(
            Remote(f"{url}/f.bin", hashlib.sha256(data).hexdigest(), 1 << 20), target, log=lambda _: None
        ).read_bytes()
        == data
    )


@pytest.mark.parametrize(
    ("members", "error"),
    [
        (
            [*good_members()[:2], regular("spam/00002.0123456789abcdef0123456789abcdef", b"From: x\n\ntampered\n")],
            "20030228_spam.tar.bz2: spam/00002.0123456789abcdef0123456789abcdef does not match the MD5 in its name",
        ),
        (
            [*good_members(), regular("spam/../../../escape", b"owned")],
            "20030228_spam.tar.bz2: refusing 'spam/../../../escape': a path that leaves the archive's folder",
        ),
        (
            [regular("/etc/cron.d/x", b"* * * * * root true\n"), *good_members()],
            "20030228_spam.tar.bz2: refusing '/etc/cron.d/x': an absolute path",
        ),
        (
            [*good_members()[:2], special("spam/00009.link", tarfile.SYMTYPE, "/etc/passwd"), *good_members()[2:]],
            "20030228_spam.tar.bz2: refusing 'spam/00009.link': a link (to '/etc/passwd')",
        ),
        (
            [*good_members(), special("spam/hard", tarfile.LNKTYPE, "spam/cmds")],
            "20030228_spam.tar.bz2: refusing 'spam/hard': a link (to 'spam/cmds')",
        ),
        (
            [*good_members(), special("spam/null", tarfile.CHRTYPE)],
            "20030228_spam.tar.bz2: refusing 'spam/null': a device file or FIFO",
        ),
        (
            [*good_members(), special("spam/fifo", tarfile.FIFOTYPE)],
            "20030228_spam.tar.bz2: refusing 'spam/fifo': a device file or FIFO",
        ),
        (
            [*good_members(), regular("spam/README", b"not a message")],
            "20030228_spam.tar.bz2: refusing 'spam/README': not a message (NNNNN.<md5>)",
        ),
        (
            good_members(n=2),
            "20030228_spam.tar.bz2 holds 2 messages, 3 were published",
        ),
        (
            [*good_members(), regular("spam/" + mail(1)[0], mail(1)[1])],
            f"20030228_spam.tar.bz2: {mail(1)[0]} appears twice",
        ),
    ],
    ids=["wrong-md5", "traversal", "absolute", "symlink", "hardlink", "device", "fifo", "stray-file", "count", "twice"],
)
def test_a_bad_archive_is_one_line_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served], members: list, error: str
) -> None:
    serve_archive(monkeypatch, server, tar_bz2(members))
    with pytest.raises(ArchiveError) as raised:
        spamassassin(log=lambda _: None)
    assert str(raised.value) == error
    assert leftovers(datasets_dir()) == ["downloads", "spamassassin", "spamassassin/spam"]
    assert not (datasets_dir().parent / "escape").exists()


def test_a_truncated_archive_is_one_line_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served]
) -> None:
    data = tar_bz2(good_members(n=30))
    serve_archive(monkeypatch, server, data[: len(data) // 2], count=30)  # pinned to the cut bytes: it downloads
    with pytest.raises(ArchiveError, match=r"^20030228_spam\.tar\.bz2 is damaged or truncated \(.+\)$"):
        spamassassin(log=lambda _: None)
    assert leftovers(datasets_dir()) == ["downloads", "spamassassin", "spamassassin/spam"]


def test_a_download_that_does_not_match_its_pin_is_removed(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served]
) -> None:
    archive = serve_archive(monkeypatch, server, tar_bz2(good_members()))
    server[1].files["/corpus/20030228_spam.tar.bz2"] += b"appended"
    with pytest.raises(DownloadError) as raised:
        spamassassin(log=lambda _: None)
    assert str(raised.value) == (
        f"the SpamAssassin public corpus: the download of {server[0]}/corpus/20030228_spam.tar.bz2 does not match "
        f"its sha256 {archive.sha256} (removed: run again to download it anew); instead, pass --ham DIR and --spam "
        "DIR, or point $SPAMGUARD_DATA at a copy"
    )
    assert leftovers(datasets_dir()) == ["downloads"]


def test_a_download_larger_than_its_limit_stops(server: tuple[str, Served], tmp_path: Path) -> None:
    url, served = server
    served.files["/big"] = b"y" * 100_000
    with pytest.raises(
        DownloadError, match=r"^http://127\.0\.0\.1:\d+/big is 100\.0 kB, more than the 10\.0 kB expected$"
    ):
        fetch(Remote(f"{url}/big", None, 10_000), tmp_path / "big", log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def sms_zip(text: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("SMSSpamCollection", text)
        zf.writestr("readme", b"the collection's terms")
    return out.getvalue()


def test_sms_collection_is_downloaded_checked_and_reused(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served]
) -> None:
    url, served = server
    text = b"ham\tsee you at 6\nspam\tWIN a prize now\n"
    served.files["/sms.zip"] = sms_zip(text)
    monkeypatch.setattr(public_data, "SMS_URL", f"{url}/sms.zip")
    monkeypatch.setattr(public_data, "SMS_SHA256", hashlib.sha256(text).hexdigest())
    path = sms_collection(log=lambda _: None)
    assert path == datasets_dir() / "sms_spam_collection" / "SMSSpamCollection" and path.read_bytes() == text
    assert leftovers(datasets_dir()) == ["downloads", "sms_spam_collection", "sms_spam_collection/SMSSpamCollection"]
    assert sms_collection(log=lambda _: None) == path and len(served.requests) == 1

    monkeypatch.setattr(public_data, "SMS_SHA256", "0" * 64)  # a copy that does not match: never used, never deleted
    with pytest.raises(
        DataError, match=rf"^{path} does not match the SMS Spam Collection's sha256 0{{64}}: remove it$"
    ):
        sms_collection(log=lambda _: None)
    assert path.read_bytes() == text


def test_an_sms_download_that_does_not_match_the_pin_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, server: tuple[str, Served]
) -> None:
    url, served = server
    served.files["/sms.zip"] = sms_zip(b"ham\tnot the published file\n")
    monkeypatch.setattr(public_data, "SMS_URL", f"{url}/sms.zip")
    with pytest.raises(DataError, match=rf"^SMSSpamCollection from {url}/sms\.zip does not match its sha256 7d039a24"):
        sms_collection(log=lambda _: None)
    assert leftovers(datasets_dir()) == ["downloads"]


def test_the_shared_layout_is_used_when_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$SPAMGUARD_DATA pointing at a copy in the layout of this project's shared data: nothing is downloaded."""
    root = tmp_path / "data"
    for label, numbers in (("ham", (1, 3)), ("spam", (2,))):
        for name, body in (mail(n) for n in numbers):
            (root / "spamassassin_2003_part1" / label).mkdir(parents=True, exist_ok=True)
            (root / "spamassassin_2003_part1" / label / name).write_bytes(body)
    (root / "gpt2_bpe").mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        (root / "gpt2_bpe" / name).write_bytes((BPE_DIR / name).read_bytes())
    monkeypatch.setenv("SPAMGUARD_DATA", str(root))
    monkeypatch.setattr(public_data, "SPAMASSASSIN_URL", "http://127.0.0.1:9/")  # never asked
    folders = spamassassin(log=lambda _: None)
    assert folders.ham == (root / "spamassassin_2003_part1" / "ham",)
    assert folders.spam == (root / "spamassassin_2003_part1" / "spam",)
    assert bpe_files() == (root / "gpt2_bpe" / "encoder.json", root / "gpt2_bpe" / "vocab.bpe")
    name = mail(3)[0]
    (root / "spamassassin_2003_part1" / "ham" / name).write_bytes(b"edited")
    with pytest.raises(DataError, match=rf"{name} does not match the MD5 in its name$"):
        spamassassin(log=lambda _: None)
    assert verify_messages(root / "spamassassin_2003_part1" / "spam", expected=1) == 1


def test_the_published_pins_are_the_corpus_readme_counts() -> None:
    archives = {a.name: (a.label, a.count) for a in public_data.SPAMASSASSIN}
    assert archives == {
        "20030228_easy_ham": (HAM, 2500),
        "20030228_easy_ham_2": (HAM, 1400),
        "20030228_hard_ham": (HAM, 250),
        "20030228_spam": (SPAM, 500),
        "20050311_spam_2": (SPAM, 1396),
    }
    assert all(len(a.sha256) == 64 for a in public_data.SPAMASSASSIN)
