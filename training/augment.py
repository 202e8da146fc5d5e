"""Leetspeak copies of training messages (`spamguard train --augment-leetspeak SHARE`).

The text function reads every digit that imitates a letter inside a word as that letter (`spamguard.normalize`,
step 5, since text version 6), but not all leetspeak comes back: a word whose every letter became a digit ("533"
for "see") stays a number, a "1" can be read as the other letter ("maiis"), and a capital written as a digit
comes back in lower case. Copies of some training messages with letters written as digits, read through the same
text function, show the model what the runtime will hand it of a disguised message, under the message's own
label. Under text versions 3 and 4, which left many more digits inside words, the copies halved the rise of the
false-positive rate on leetspeak ham; under version 6 the model without copies no longer shows that rise
(docs/robustness.md), and on three seeds the copies made its leetspeak figures slightly worse.

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
