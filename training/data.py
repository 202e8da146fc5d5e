"""The seeded, pure functions that turn labelled messages into train/validation/test splits (the `Example` type
and the TSV reader are the runtime's, `spamguard.datasets`, so there is one of each).

The SMS Spam Collection repeats 403 of its lines verbatim, so texts are deduplicated before anything else:
otherwise the same message lands in train and test and the test figures flatter the model.

A stratified split divides each (kind, label) group on its own, shuffled by a generator seeded with the seed,
the kind and the label: the SMS parts of a split are then the same whether mail is mixed in or not, so a model
trained on SMS alone and one trained on both kinds are tested on the same SMS (and the same holds for mail)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from spamguard.datasets import HAM, LABELS, SPAM, Example
from spamguard.errors import DataError
from spamguard.message_text import KINDS


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def parts(self) -> dict[str, list[Example]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: label_counts(part) for name, part in self.parts().items()}

    def kinds(self) -> list[str]:
        """The kinds present, in `KINDS` order."""
        present = {e.kind for part in self.parts().values() for e in part}
        return [kind for kind in KINDS if kind in present]

    def counts_by_kind(self) -> dict[str, dict[str, dict[str, int]]]:
        """{kind: {part: {"ham": n, "spam": n}}} for the kinds present (the manifest's `split_by_kind`)."""
        return {
            kind: {name: label_counts([e for e in part if e.kind == kind]) for name, part in self.parts().items()}
            for kind in self.kinds()
        }

    def of_kind(self, kind: str) -> Splits:
        """The same split restricted to one kind (what a model of that kind alone trains and is tested on)."""
        return Splits(*([e for e in part if e.kind == kind] for part in self.parts().values()))

    def describe_counts(self) -> str:
        """The parts' sizes with their ham and spam, per kind, for the log line every training run prints."""

        def describe(counts: dict[str, dict[str, int]]) -> str:
            return ", ".join(
                f"{part} {c['ham'] + c['spam']} ({c['ham']} ham, {c['spam']} spam)" for part, c in counts.items()
            )

        return "; ".join(f"{kind}: {describe(counts)}" for kind, counts in self.counts_by_kind().items())

    def fingerprint(self) -> dict[str, str]:
        """{part: sha256} over each part's (kind, label, text), order aside: the manifest records it, so a later
        job that must reuse this very split (`spamguard distill`, which trains only on the teacher's training
        part) can prove it rebuilt it from the same data and seed, and validation and test stay held out."""
        return {name: part_digest(part) for name, part in self.parts().items()}


def part_digest(examples: Sequence[Example]) -> str:
    """sha256 of a set of examples: the sorted sha256 of each one's kind, label and text."""
    digests = sorted(
        hashlib.sha256(f"{e.kind}\0{e.label}\0{e.text}".encode("utf-8", "surrogatepass")).digest() for e in examples
    )
    return hashlib.sha256(b"".join(digests)).hexdigest()


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
    """Seeded train/validation/test split. Stratified, each (kind, label) group is split on its own (see the
    module's docstring), so each part keeps every kind's class ratio and a rare group cannot vanish from
    validation or test; unstratified (the book's protocol on balanced SMS), one shuffle of everything."""
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    rng = random.Random(seed)
    if stratify:
        keys = [(kind, label) for kind in KINDS for label in (HAM, SPAM)]
        groups = [[e for e in examples if (e.kind, e.label) == key] for key in keys]
        shufflers = [random.Random(f"{seed}:{kind}:{label}") for kind, label in keys]
    else:
        groups, shufflers = [list(examples)], [rng]
    parts: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for group, shuffler in zip(groups, shufflers, strict=True):
        shuffler.shuffle(group)
        n_train = int(len(group) * fractions[0])
        n_val = int(len(group) * fractions[1])
        parts[0].extend(group[:n_train])
        parts[1].extend(group[n_train : n_train + n_val])
        parts[2].extend(group[n_train + n_val :])
    if stratify:
        for part in parts:
            rng.shuffle(part)
    return Splits(*parts)


def label_counts(examples: Sequence[Example]) -> dict[str, int]:
    """{"ham": n, "spam": n}, named by the one list of label names."""
    return {name: sum(e.label == label for e in examples) for name, label in LABELS.items()}
