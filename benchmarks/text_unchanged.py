"""How many messages of the full data sets normalization changes, and how (`make text-unchanged`).

    SPAMGUARD_DATA=../shared/data python benchmarks/text_unchanged.py

For every SMS of the collection and every mail of the SpamAssassin sample under `datasets_dir()`: the model text
with normalization (`TEXT_VERSION`) against without it (`message_text(..., normalize=False)`), and counts of
what differs: per message, the characters that went and the characters that came. Then the leetspeak step on its
own (`normalize.undo_leetspeak`, which keeps every character's place) over the text without normalization: how
many messages of each kind and label it changes, and the words it rewrites most often."""

from __future__ import annotations

import collections
import sys

from spamguard.message_text import TEXT_VERSION, message_text
from spamguard.normalize import undo_leetspeak
from spamguard.paths import datasets_dir

TOP = 25  # rewritten words listed per kind and label


def main() -> int:
    data = datasets_dir()
    lines = (data / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    labels, sms = [line.partition("\t")[0] for line in lines], [line.partition("\t")[2] for line in lines]
    mails = sorted((data / "spamassassin_2003_part1").glob("*/*"))
    for kind, items in (("SMS", sms), ("mail", mails)):
        changed, reasons = 0, collections.Counter()
        for item in items:
            raw = item.read_bytes() if kind == "mail" else item
            before, after = message_text(raw, normalize=False), message_text(raw)
            if before == after:
                continue
            changed += 1
            # what went and what came, as character counts (a diff of 64 KB texts would be quadratic)
            gone = collections.Counter(before) - collections.Counter(after)
            came = collections.Counter(after) - collections.Counter(before)
            reasons[f"{''.join(sorted(gone))[:16]!r} -> {''.join(sorted(came))[:16]!r}"] += 1
        print(f"{kind}: {changed} of {len(items)} changed by normalization (messages: characters gone -> came)")
        for reason, count in reasons.most_common(30):
            print(f"  {count:5d}  {reason}")
    print(f"leetspeak step (text version {TEXT_VERSION}) on the text without normalization:")
    # rewritten words per "kind label": (old, new) -> how often
    words: dict[str, collections.Counter[tuple[str, str]]] = collections.defaultdict(collections.Counter)
    for kind, items, label_of in (("SMS", sms, labels), ("mail", mails, [p.parent.name for p in mails])):
        changed, totals = collections.Counter(), collections.Counter(label_of)
        for item, label in zip(items, label_of, strict=True):
            before = message_text(item.read_bytes() if kind == "mail" else item, normalize=False)
            after = undo_leetspeak(before)
            if before != after:
                changed[label] += 1
                for old, new in zip(before.split(), after.split(), strict=True):
                    if old != new:
                        words[f"{kind} {label}"][(old, new)] += 1
        print(f"{kind}: " + ", ".join(f"{changed[label]} of {totals[label]} {label}" for label in sorted(totals)))
    for where, rewrites in sorted(words.items()):
        print(f"{where}: {len(rewrites)} distinct words rewritten, {sum(rewrites.values())} in all; the most frequent:")
        for (old, new), count in rewrites.most_common(TOP):
            print(f"  {count:5d}  {old!r} -> {new!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
