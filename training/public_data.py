"""The default training data: the UCI SMS Spam Collection and the SpamAssassin public corpus, found in the data
sets folder (`spamguard.paths.datasets_dir()`, `$SPAMGUARD_DATA` to use a local copy) or downloaded into it.

Layout (docs/data.md), one reader for all of it (`spamguard.mail_sources`, a folder with `ham/` and `spam/`):

    sms_spam_collection/SMSSpamCollection          the UCI file, sha256-pinned
    spamassassin/{ham,spam}/<archive>/NNNNN.<md5>  the five archives below, as downloaded and checked
    spamassassin_2003_part1/{ham,spam}/NNNNN.<md5> a sample copy (this project's shared data), used when the
                                                   full corpus is absent
    gpt2_bpe/{encoder.json,vocab.bpe}              GPT-2's BPE files (the tokenizer, see pipeline.tokenizer_files)
    downloads/                                     archives while they download (`.part`) and before extraction

What is pinned: the sha256 of the extracted SMS file (UCI publishes it in a zip whose own bytes are not
pinned here); the sha256 of each SpamAssassin archive (the same five values pinned independently by several
public projects that download the corpus); the message count of each archive (the corpus's readme); the MD5
of every message, which its file name carries. A folder that is present is checked the same way before use."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from spamguard.bundle import sha256_file
from spamguard.datasets import HAM, LABEL_NAMES, SPAM
from spamguard.errors import DataError
from spamguard.paths import datasets_dir
from spamguard.training.archives import MESSAGE_NAME, extract_messages, extract_zip_member
from spamguard.training.downloads import DownloadError, Remote, fetch

SMS_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_FOLDER = "sms_spam_collection"
SMS_MEMBER = "SMSSpamCollection"
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"  # the extracted file
SMS_MAX_BYTES = 1024 * 1024  # the zip is ~200 kB, the file ~480 kB

SPAMASSASSIN_URL = "https://spamassassin.apache.org/old/publiccorpus/"
SPAMASSASSIN_FOLDER = "spamassassin"
SPAMASSASSIN_SAMPLE = "spamassassin_2003_part1"
ARCHIVE_MAX_BYTES = 16 * 1024 * 1024  # the largest of the five is ~4 MB
DOWNLOADS = "downloads"

BPE_FOLDER = "gpt2_bpe"
BPE_SHA256 = {  # the hashes tiktoken itself expects of GPT-2's files
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


@dataclass(frozen=True)
class MessageArchive:
    """One archive of the SpamAssassin public corpus: its name, label, published message count and sha256."""

    name: str
    label: int
    count: int
    sha256: str

    def remote(self, base_url: str) -> Remote:
        return Remote(f"{base_url}{self.name}.tar.bz2", self.sha256, ARCHIVE_MAX_BYTES)

    def folder(self, root: Path) -> Path:
        return root / SPAMASSASSIN_FOLDER / LABEL_NAMES[self.label] / self.name


# Counts from the corpus's readme (spamassassin.apache.org/old/publiccorpus/readme.html): 2500, 1400, 250, 500
# and 1396 for spam_2, whose 20050311 archive lacks the message 00529 the readme of March 2005 says was removed
# as misfiled ham (older copies of the readme say 1397). sha256: as pinned by public downloaders of the corpus.
SPAMASSASSIN = (
    MessageArchive("20030228_easy_ham", HAM, 2500, "2b7b65904bcfcc31d2b5f51946f2d261370b257402cbbd62930b46ab83367438"),
    MessageArchive(
        "20030228_easy_ham_2", HAM, 1400, "b4bd3dc5ae5b40f38e99a0e41ad7d16b428b56e818e3a6ffa07330d62004dd38"
    ),
    MessageArchive("20030228_hard_ham", HAM, 250, "ce2ce67880643dbde65ea7f85bffbfe4417349c4bd80b6b0de56262ae6b0a9c9"),
    MessageArchive("20030228_spam", SPAM, 500, "c08debc32413804949a866be45ef78195cec2cbafd1da744ed76cdb860589743"),
    MessageArchive("20050311_spam_2", SPAM, 1396, "44280a0e28bf7645b2279e8e42659271ad82c6f40bf8d364dbda7f1df344a765"),
)

SMS_REMEDY = "pass --data FILE (lines ham|spam<TAB>text), or point $SPAMGUARD_DATA at a copy"
MAIL_REMEDY = "pass --ham DIR and --spam DIR, or point $SPAMGUARD_DATA at a copy"


@dataclass(frozen=True)
class MailFolders:
    ham: tuple[Path, ...]
    spam: tuple[Path, ...]
    description: str  # for the manifest and the log


def _messages(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if not path.name.startswith("."):
            yield path


def verify_messages(folder: Path, expected: int | None = None) -> int:
    """Every file of `folder` must be a regular file named `NNNNN.<md5>` whose content has that MD5, and (when
    given) their number `expected`; the number of messages, or a `DataError` naming the first that fails."""
    count = 0
    for path in _messages(folder):
        name = MESSAGE_NAME.fullmatch(path.name)
        if name is None or path.is_symlink() or not path.is_file():
            raise DataError(f"{path} is not a SpamAssassin message file (NNNNN.<md5>)")
        if hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest() != name.group(2):
            raise DataError(f"{path} does not match the MD5 in its name")
        count += 1
    if expected is not None and count != expected:
        raise DataError(f"{folder} holds {count} messages, {expected} were published")
    return count


def sms_collection(*, root: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """The SMS Spam Collection file: the copy in the data sets folder when it matches its sha256, else the UCI
    download (resumed if interrupted), extracted and checked."""
    root = root if root is not None else datasets_dir()
    url = SMS_URL
    target = root / SMS_FOLDER / SMS_MEMBER
    if target.is_file():
        if sha256_file(target) == SMS_SHA256:
            log(f"data: the SMS Spam Collection at {target} (sha256 checked)")
            return target
        raise DataError(f"{target} does not match the SMS Spam Collection's sha256 {SMS_SHA256}: remove it")
    try:
        archive = fetch(Remote(url, None, SMS_MAX_BYTES), root / DOWNLOADS / Path(url).name, log=log)
    except DownloadError as exc:
        raise DownloadError(f"the SMS Spam Collection: {exc}; instead, {SMS_REMEDY}") from exc
    staged = extract_zip_member(archive, SMS_MEMBER, root / DOWNLOADS / SMS_MEMBER, max_bytes=SMS_MAX_BYTES)
    try:
        if sha256_file(staged) != SMS_SHA256:
            raise DataError(
                f"{SMS_MEMBER} from {url} does not match its sha256 {SMS_SHA256} (removed: run again to download "
                "it anew)"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.replace(target)
    finally:
        staged.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
    log(f"data: the SMS Spam Collection at {target} (sha256 checked)")
    return target


def _archive_folder(archive: MessageArchive, root: Path, base_url: str, log: Callable[[str], None]) -> tuple[Path, int]:
    folder = archive.folder(root)
    if folder.is_dir():
        return folder, verify_messages(folder, archive.count)
    remote = archive.remote(base_url)
    downloaded = fetch(remote, root / DOWNLOADS / remote.filename, log=log)
    try:
        extracted = extract_messages(downloaded, folder, expected=archive.count)
    finally:
        downloaded.unlink(missing_ok=True)  # extracted or refused: either way its bytes are no longer needed
    log(f"extracted {remote.filename}: {extracted.messages} messages, each matching the MD5 in its name")
    return folder, extracted.messages


def spamassassin(*, root: Path | None = None, log: Callable[[str], None] = print) -> MailFolders:
    """The SpamAssassin public corpus as ham and spam folders: the five archives in the data sets folder (each
    checked: names, MD5s, count), those missing downloaded and extracted; or, when none of them is there, the
    sample copy `spamassassin_2003_part1/` if present (checked: names and MD5s)."""
    root = root if root is not None else datasets_dir()
    base_url = SPAMASSASSIN_URL
    sample = root / SPAMASSASSIN_SAMPLE
    if not any(a.folder(root).is_dir() for a in SPAMASSASSIN) and (sample / "ham").is_dir():
        counts = {name: verify_messages(sample / name) for name in LABEL_NAMES}
        description = f"SpamAssassin public corpus sample at {sample} ({counts['ham']} ham, {counts['spam']} spam)"
        log(f"data: the {description} (names and MD5s checked)")
        return MailFolders((sample / "ham",), (sample / "spam",), description)
    counts = {HAM: 0, SPAM: 0}
    for archive in SPAMASSASSIN:
        try:
            _, n = _archive_folder(archive, root, base_url, log)
        except DownloadError as exc:
            raise DownloadError(f"the SpamAssassin public corpus: {exc}; instead, {MAIL_REMEDY}") from exc
        counts[archive.label] += n
    corpus = root / SPAMASSASSIN_FOLDER
    description = (
        f"SpamAssassin public corpus at {corpus} ({', '.join(a.name for a in SPAMASSASSIN)}: {counts[HAM]} ham, "
        f"{counts[SPAM]} spam)"
    )
    log(f"data: the {description} (names, MD5s and counts checked)")
    return MailFolders((corpus / "ham",), (corpus / "spam",), description)


def bpe_files(root: Path | None = None) -> tuple[Path, Path] | None:
    """GPT-2's `encoder.json` and `vocab.bpe` from the data sets folder when both are there and match their
    sha256 (as tiktoken checks them), else None."""
    folder = (root if root is not None else datasets_dir()) / BPE_FOLDER
    files = tuple(folder / name for name in BPE_SHA256)
    if all(f.is_file() and sha256_file(f) == BPE_SHA256[f.name] for f in files):
        return files[0], files[1]
    return None
