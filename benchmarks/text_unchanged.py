"""How many messages of the full data sets normalization changes, and how (`make text-unchanged`).

    SPAMGUARD_DATA=../shared/data python benchmarks/text_unchanged.py

For every SMS of the collection and every mail of the SpamAssassin sample under `datasets_dir()`: the model text
with normalization (text version 2) against without it (`message_text(..., normalize=False)`), and counts of
what differs, by the characters that changed."""

from __future__ import annotations

import collections
import difflib
import sys

from spamguard.message_text import message_text
from spamguard.paths import datasets_dir


def main() -> int:
    data = datasets_dir()
    sms = [line.partition("\t")[2] for line in (data / "sms_spam_collection" / "SMSSpamCollection").read_text(
        encoding="utf-8").splitlines()]  # fmt: skip
    mails = sorted((data / "spamassassin_2003_part1").glob("*/*"))
    for kind, items in (("SMS", sms), ("mail", mails)):
        changed, reasons = 0, collections.Counter()
        for item in items:
            raw = item.read_bytes() if kind == "mail" else item
            before, after = message_text(raw, normalize=False), message_text(raw)
            if before == after:
                continue
            changed += 1
            matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
            for op, i1, i2, j1, j2 in matcher.get_opcodes():
                if op != "equal":
                    reasons[f"{before[i1:i2][:12]!r} -> {after[j1:j2][:12]!r}"] += 1
        print(f"{kind}: {changed} of {len(items)} changed by normalization")
        for reason, count in reasons.most_common(15):
            print(f"  {count:5d}  {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
