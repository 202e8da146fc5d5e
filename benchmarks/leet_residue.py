"""What leetspeak leaves behind after the text function: the words the undo step cannot give back, and why.

    SPAMGUARD_DATA=../shared/data python benchmarks/leet_residue.py [--seed 1] [--top 20]

Every SMS of the collection and every mail of the SpamAssassin sample in the data sets folder
(`public_data.dataset`) is disguised with the robustness benchmark's leetspeak (`robustness.disguises`, each
message seeded the way that benchmark seeds it); both copies go through `message_text`, and the words are compared
place by place (leetspeak and its undo both keep every character's place). A word that still differs (case aside)
is left disguised, in one of three groups:

- *no letter left*: a run of letters in the plain word became digits only ("533" for "see", "17'5" for "it's"),
  which the undo step leaves as it leaves a number;
- *a "1" read as the other letter*: "1" writes both "i" and "l", and the undo step reads it as "l" only when that
  gives a word GPT-2 holds whole;
- *other*: anything else (none is expected; a count here is a bug in the undo step or in this script).

Why this is measured: the robustness benchmark's false-positive rate on leetspeak ham rose while the undo step
left digits inside words (text versions 3 and 4; docs/robustness.md), and this says what is left to read as
digits."""

from __future__ import annotations

import argparse
import collections
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from robustness.disguises import apply  # noqa: E402

from spamguard.message_text import message_text  # noqa: E402
from spamguard.normalize import RUN  # noqa: E402

from public_data import MAIL, SMS, dataset  # noqa: E402

GROUPS = ("no letter left", 'a "1" read as the other letter', "other")
_RUN = re.compile(RUN)  # the undo step's unit


def _group(plain: str, seen: str) -> str:
    """Why `seen` (the word as the model reads it) still differs from `plain`, its undisguised form."""
    pairs = [(p, s) for p, s in zip(_RUN.findall(plain), _RUN.findall(seen), strict=False) if p.lower() != s.lower()]
    if any(not any(c.isalpha() for c in s) for _, s in pairs):
        return GROUPS[0]
    if pairs and all(p.lower().replace("l", "i") == s.lower().replace("l", "i") for p, s in pairs):
        return GROUPS[1]
    return GROUPS[2]


def _strip(word: str) -> str:
    return word.strip(".,;:!?\"'()[]<>*&")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1, help="as bench_robustness.py --seed")
    parser.add_argument("--top", type=int, default=20, help="words shown per group")
    args = parser.parse_args()
    lines = dataset(SMS).read_text(encoding="utf-8").splitlines()
    sms = [("sms", line.partition("\t")[0], line.partition("\t")[2]) for line in lines]
    mails = [("mail", p.parent.name, p.read_bytes()) for p in sorted(dataset(MAIL).glob("*/*"))]
    print(f"leetspeak (seed {args.seed}) through the text function: the words left disguised, by their plain form")
    for kind, items in (("sms", sms), ("mail", mails)):
        for label in ("ham", "spam"):
            group = [message for k, lab, message in items if lab == label]
            left_in, misaligned, disguised_words = 0, 0, 0
            words: dict[str, collections.Counter[str]] = {name: collections.Counter() for name in GROUPS}
            for i, message in enumerate(group):
                rng = random.Random(f"{args.seed}:leetspeak:{i}")
                disguised = apply("leetspeak", message, rng)
                plain_words, seen_words = message_text(message).split(), message_text(disguised).split()  # type: ignore[arg-type]
                raw_plain, raw_seen = (message_text(m, normalize=False).split() for m in (message, disguised))  # type: ignore[arg-type]
                if len(plain_words) != len(seen_words) or len(raw_plain) != len(raw_seen):
                    misaligned += 1
                    continue
                left = [(p, s) for p, s in zip(plain_words, seen_words, strict=True) if p.lower() != s.lower()]
                disguised_words += sum(p != s for p, s in zip(raw_plain, raw_seen, strict=True))
                left_in += bool(left)
                for plain, seen in left:
                    words[_group(plain, seen)][_strip(plain).lower()] += 1
            total = sum(sum(c.values()) for c in words.values())
            print(
                f"\n{kind} {label}: {left_in} of {len(group)} messages keep a disguised word; {total} of the "
                f"{disguised_words} words the disguise changed are left (case aside)"
                + (f"; {misaligned} messages not compared (word counts differ)" if misaligned else "")
            )
            for name in GROUPS:
                counter = words[name]
                count = sum(counter.values())
                share = f"{count / total:.0%}" if total else "-"
                top = ", ".join(f"{w} {n}" for w, n in counter.most_common(args.top))
                print(f"  {name}: {count} ({share}): {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
