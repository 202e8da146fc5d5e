"""Robustness benchmark: spam in disguise against spamguard with and without normalization (`make bench-robustness`)."""
