"""How many messages of the full data sets normalization changes, and how (`make text-unchanged`).

    SPAMGUARD_DATA=../shared/data python benchmarks/text_unchanged.py

For every SMS of the collection and every mail of the SpamAssassin sample under `datasets_dir()`: the model text
with normalization (text version 2) against without it (`message_text(..., normalize=False)`), and counts of
what differs: per message, the characters that went and the characters that came."""

from __future__ import annotations

import collections
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
            # what went and what came, as character counts (a diff of 64 KB texts would be quadratic)
            gone = collections.Counter(before) - collections.Counter(after)
            came = collections.Counter(after) - collections.Counter(before)
            reasons[f"{''.join(sorted(gone))[:16]!r} -> {''.join(sorted(came))[:16]!r}"] += 1
        print(f"{kind}: {changed} of {len(items)} changed by normalization (messages: characters gone -> came)")
        for reason, count in reasons.most_common(30):
            print(f"  {count:5d}  {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
