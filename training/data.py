"""The seeded, pure functions that turn labelled messages into train/validation/test splits (the `Example` type
and the TSV reader are the runtime's, `spamguard.datasets`, so there is one of each).

The SMS Spam Collection repeats 403 of its lines verbatim, so texts are deduplicated before anything else:
otherwise the same message lands in train and test and the test figures flatter the model."""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spamguard.datasets import HAM, LABELS, SPAM, Example
from spamguard.errors import DataError
from spamguard.paths import cache_dir

SMS_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SMS_MEMBER = "SMSSpamCollection"
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"  # the extracted file


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def counts(self) -> dict[str, dict[str, int]]:
        parts = {"train": self.train, "validation": self.validation, "test": self.test}
        return {
            name: {label_name: sum(e.label == label for e in part) for label_name, label in LABELS.items()}
            for name, part in parts.items()
        }

    def describe_counts(self) -> str:
        """The parts' sizes with their ham and spam, for the log line every training run prints."""
        return ", ".join(
            f"{part} {c['ham'] + c['spam']} ({c['ham']} ham, {c['spam']} spam)" for part, c in self.counts().items()
        )


def download_sms_collection(progress: Callable[[str], None] = print) -> Path:
    """The UCI archive, fetched once into the cache; the extracted file must match the published sha256."""
    target = cache_dir() / "sms_spam_collection" / SMS_MEMBER
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == SMS_SHA256:
        return target
    import urllib.error
    import urllib.request

    progress(f"downloading {SMS_URL}")
    try:
        with urllib.request.urlopen(SMS_URL, timeout=30) as response:
            archive = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DataError(f"cannot download the SMS Spam Collection ({exc}): pass --data PATH to a local copy") from exc
    try:
        data = zipfile.ZipFile(io.BytesIO(archive)).read(SMS_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"the download from {SMS_URL} is not the expected zip archive") from exc
    if hashlib.sha256(data).hexdigest() != SMS_SHA256:
        raise DataError(f"{SMS_MEMBER} from {SMS_URL} does not match its sha256 {SMS_SHA256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def deduplicate(examples: Sequence[Example]) -> list[Example]:
    """Keep the first occurrence of each exact text, so no text can reach two splits."""
    seen: set[str] = set()
    unique = []
    for example in examples:
        if example.text not in seen:
            seen.add(example.text)
            unique.append(example)
    return unique


def balance(examples: Sequence[Example], seed: int) -> list[Example]:
    """Undersample the larger class to the size of the smaller (the book's protocol); order is shuffled."""
    rng = random.Random(seed)
    by_label = {label: [e for e in examples if e.label == label] for label in (HAM, SPAM)}
    n = min(len(v) for v in by_label.values())
    if n == 0:
        raise DataError("cannot balance: one class has no examples")
    chosen = [e for label in (HAM, SPAM) for e in rng.sample(by_label[label], n)]
    rng.shuffle(chosen)
    return chosen


def split(
    examples: Sequence[Example],
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    *,
    stratify: bool = False,
) -> Splits:
    """Seeded train/validation/test split. Stratified, each class is split on its own, so each part keeps the
    class ratio and a rare class cannot vanish from validation or test."""
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    rng = random.Random(seed)
    groups = [[e for e in examples if e.label == label] for label in (HAM, SPAM)] if stratify else [list(examples)]
    parts: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for group in groups:
        rng.shuffle(group)
        n_train = int(len(group) * fractions[0])
        n_val = int(len(group) * fractions[1])
        parts[0].extend(group[:n_train])
        parts[1].extend(group[n_train : n_train + n_val])
        parts[2].extend(group[n_train + n_val :])
    if stratify:
        for part in parts:
            rng.shuffle(part)
    return Splits(*parts)
