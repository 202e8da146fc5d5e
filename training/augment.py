"""Leetspeak copies of training messages (`spamguard train --augment-leetspeak SHARE`).

The text function undoes most leetspeak (`spamguard.normalize`, step 5), but not all of it: a word GPT-2 does not
hold whole ("Ind1a", French "l35"), a short word of a shape that numbers and names take ("u53", "rul3"), a word
joined by a hyphen ("CD-R0M"). A model that never saw such digits in training reads them as it read the digits it
did see, which in SMS are spam's (prices, short codes, "txt 87121"): disguised spam can pass and disguised ham is
flagged. Copies of some training messages with letters written as digits, read through the same text function,
show the model what the runtime will hand it of a disguised message, under the message's own label.

Each chosen message gets its own substitution rate, drawn between `MIN_RATE` and `MAX_RATE`, so the model sees
light and heavy disguise alike; the table is the text function's own (`LEET_DIGITS`). The copies join the
training split only: validation, the thresholds chosen there, and the test part stay as written. Class weights
come from the messages as written, so the copies add examples, not say."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from spamguard.datasets import Example
from spamguard.normalize import LEET_DIGITS, normalize_text
from spamguard.training.errors import TrainingError

MIN_RATE, MAX_RATE = 0.2, 0.8
_DIGIT_FOR = {letter: digit for digit, letters in LEET_DIGITS.items() for letter in letters}
_WORD = re.compile(r"[A-Za-z]{3,}")


def leetspeak_copies(examples: Sequence[Example], share: float, seed: int) -> list[Example]:
    """Copies of a seeded `share` of `examples` with some letters written as digits, as the runtime reads them;
    a copy the text function reads back unchanged is left out (it would only weigh its message twice)."""
    if not 0.0 <= share <= 1.0:
        raise TrainingError(f"--augment-leetspeak must be between 0 and 1, not {share:g}")
    rng = random.Random(f"leetspeak:{seed}")
    copies = []
    for example in examples:
        if rng.random() >= share:
            continue
        text = normalize_text(_as_digits(example.text, rng.uniform(MIN_RATE, MAX_RATE), rng))
        if text != example.text:
            copies.append(Example(text, example.label, example.source, example.kind))
    return copies


def _as_digits(text: str, rate: float, rng: random.Random) -> str:
    """`text` with each letter that has a digit, in words of 3+ letters, written as that digit at `rate`."""

    def disguise(match: re.Match[str]) -> str:
        return "".join(
            _DIGIT_FOR[c.lower()] if c.lower() in _DIGIT_FOR and rng.random() < rate else c for c in match.group()
        )

    return _WORD.sub(disguise, text)
