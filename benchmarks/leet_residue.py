"""What leetspeak leaves behind after the text function: the words the undo step cannot give back, and why.

    SPAMGUARD_DATA=../shared/data python benchmarks/leet_residue.py [--seed 1] [--top 20]

Every SMS of the collection and every mail of the SpamAssassin sample in the data sets folder
(`public_data.dataset`) is disguised with the robustness benchmark's leetspeak (`robustness.disguises`, each
message seeded the way that benchmark seeds it); both copies go through `message_text`, and the words are compared
place by place (leetspeak and its undo both keep every character's place). A word that still differs is left
disguised, in one of four groups by its plain form:

- *joined by a separator* (an address, a path, a hyphenated word): the undo step leaves these alone on purpose;
- *a lower-case GPT-2 word*: `spamguard.known_words` holds it, so a rule of the undo step held it back on purpose
  (a shape that names, numbers and SMS spelling take, or no letter left);
- *GPT-2 holds it capitalised*: " Carlos" (or " RSS") is one token, " carlos" is not; since text version 4 the
  undo step gives back capitalised words, but only to a word written with a capital and of no number's shape, and
  it has no list of words in capitals (" RSS", " USA");
- *not a whole GPT-2 word*: SMS spelling ("lor", "pls"), long or rare words: no vocabulary look-up gives them
  back.

It also counts the sentence joins among them ("Sh0p.We": two words after a full stop without a space, in the
first group), and the messages whose only disguised words left are such joins: what a rule for them could give
back at most.

Why this is measured: the robustness benchmark's false-positive rate on leetspeak ham rises (docs/robustness.md),
and this says how much of that a better undo step could ever remove."""

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

from spamguard.known_words import KNOWN_WORDS  # noqa: E402
from spamguard.message_text import message_text  # noqa: E402
_SEPARATOR = r"[-./_+=@\\:%&#~]"
from spamguard.tokenizer import load_encoding  # noqa: E402

from public_data import BPE, MAIL, SMS, dataset  # noqa: E402

GROUPS = ("joined by a separator", "a lower-case GPT-2 word", "GPT-2 holds it capitalised", "not a whole GPT-2 word")
_JOINED = re.compile(rf"[A-Za-z0-9]{_SEPARATOR}[A-Za-z0-9]")  # the undo step's own separators
# two words joined by sentence punctuation without a space, as SMS writes them ("Sh0p.We", "us.L37"), which the undo
# step leaves alone as it leaves "b3ta.com": how much a rule for them could give back
_SENTENCE_JOIN = re.compile(r"[A-Za-z0-9']+[.!?,;]+[A-Za-z0-9']+")


def _strip(word: str) -> str:
    return word.strip(".,;:!?\"'()[]<>*&")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1, help="as bench_robustness.py --seed")
    parser.add_argument("--top", type=int, default=20, help="words shown per group")
    args = parser.parse_args()
    encoding = load_encoding(dataset(BPE) / "encoder.json", dataset(BPE) / "vocab.bpe")
    known = set(KNOWN_WORDS)
    lines = dataset(SMS).read_text(encoding="utf-8").splitlines()
    sms = [("sms", line.partition("\t")[0], line.partition("\t")[2]) for line in lines]
    mails = [("mail", p.parent.name, p.read_bytes()) for p in sorted(dataset(MAIL).glob("*/*"))]
    print(f"leetspeak (seed {args.seed}) through the text function: the words left disguised, by their plain form")
    for kind, items in (("sms", sms), ("mail", mails)):
        for label in ("ham", "spam"):
            group = [message for k, lab, message in items if lab == label]
            left_in, misaligned, disguised_words, join_words, only_joins = 0, 0, 0, 0, 0
            words: dict[str, collections.Counter[str]] = {name: collections.Counter() for name in GROUPS}
            for i, message in enumerate(group):
                rng = random.Random(f"{args.seed}:leetspeak:{i}")
                disguised = apply("leetspeak", message, rng)
                plain_words, seen_words = message_text(message).split(), message_text(disguised).split()  # type: ignore[arg-type]
                raw_plain, raw_seen = (message_text(m, normalize=False).split() for m in (message, disguised))  # type: ignore[arg-type]
                if len(plain_words) != len(seen_words) or len(raw_plain) != len(raw_seen):
                    misaligned += 1
                    continue
                left = [p for p, s in zip(plain_words, seen_words, strict=True) if p != s and p.lower() != s.lower()]
                disguised_words += sum(p != s for p, s in zip(raw_plain, raw_seen, strict=True))
                left_in += bool(left)
                stripped = [_strip(word) for word in left]
                joins = sum(bool(_SENTENCE_JOIN.fullmatch(word)) for word in stripped)
                join_words += joins
                only_joins += bool(left) and joins == len(left)
                for word in stripped:
                    if _JOINED.search(word):
                        words[GROUPS[0]][word.lower()] += 1
                    elif word.lower() in known:
                        words[GROUPS[1]][word.lower()] += 1
                    elif len(encoding.encode_ordinary(" " + word)) == 1:
                        words[GROUPS[2]][word] += 1
                    else:
                        words[GROUPS[3]][word.lower()] += 1
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
            print(
                f"  of them sentence joins (two words after . ! ? , or ; without a space): {join_words} words; "
                f"{only_joins} messages keep no other disguised word"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
