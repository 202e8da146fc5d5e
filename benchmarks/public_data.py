"""Where the benchmarks find the public data sets: `spamguard.paths.datasets_dir()`, i.e. `$SPAMGUARD_DATA` when
set (the Makefile's benchmark targets default it to this project's copy, `../shared/data`), in the layout the
downloads leave (and `tests/fixtures/` copies: `SPAMGUARD_DATA=tests/fixtures` checks a script on tiny input)."""

from __future__ import annotations

from pathlib import Path

from spamguard.paths import DATASETS_ENV, datasets_dir

SMS = ("sms_spam_collection", "SMSSpamCollection")
MAIL = ("spamassassin_2003_part1",)
BPE = ("gpt2_bpe",)


def dataset(parts: tuple[str, ...]) -> Path:
    """The path of one data set, or one line saying where it was looked for and how to point elsewhere."""
    path = datasets_dir().joinpath(*parts)
    if not path.exists():
        raise SystemExit(
            f"{path} not found: set {DATASETS_ENV} to a folder holding the public data sets "
            "(sms_spam_collection/, spamassassin_2003_part1/, gpt2_bpe/; tests/fixtures/README.md)"
        )
    return path
