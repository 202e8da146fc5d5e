"""Accuracy benchmark: spamguard against the classical filters on the same seeded splits (`make bench-accuracy`)."""
