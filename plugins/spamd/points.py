"""P(spam) as SpamAssassin points, so that every spamd client's idea of "spam" is spamguard's verdict.

Clients decide with the numbers, not with spamguard's label: Exim's `spam` condition is true when the score is
at least the required score, `$spam_score_int` compares tenths, rspamd multiplies the score by a weight, and
people write `score > 10` rules. So the mapping must be exact at one decimal, the precision every client shows:

- a spam verdict (P ≥ the threshold that applied, outside any unsure band) gets points ≥ `required`;
- anything else gets points ≤ `required` − 0.1;
- points are whole tenths, non-decreasing in P (for a fixed threshold and label rule), 0.0 at P = 0 and
  `top` at P = 1.

Below the threshold P is stretched linearly onto [0, required), above it onto [required, top], then cut down
(floored) to a tenth. Floor never crosses `required` from either side, which a round-to-nearest could (P just
under the threshold would print as 5.0 and read as spam). Points are computed as an integer number of tenths
and printed from that integer, so no float formatting can move them either. An "unsure" verdict at or above the
threshold (an unsure band that straddles it) keeps the ham side's ceiling, `required` − 0.1: it is not spam,
and the mapping stays monotone because the band ends before spam points begin."""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_REQUIRED = 5.0  # SpamAssassin's default required_score: what existing client rules are written against
TOP_FACTOR = 4.0  # P = 1 maps to 4 x required (20.0 by default): room for "reject above 10" rules


@dataclass(frozen=True)
class Points:
    tenths: int  # the score in tenths of a point
    required_tenths: int

    @property
    def score(self) -> float:
        return self.tenths / 10

    @property
    def required(self) -> float:
        return self.required_tenths / 10

    @property
    def is_spam(self) -> bool:
        return self.tenths >= self.required_tenths

    @property
    def score_text(self) -> str:
        return _tenths_text(self.tenths)

    @property
    def required_text(self) -> str:
        return _tenths_text(self.required_tenths)

    def text(self) -> str:
        """`9.1 / 5.0`, as spamd writes its `Spam:` line."""
        return f"{self.score_text} / {self.required_text}"


def _tenths_text(tenths: int) -> str:
    return f"{tenths // 10}.{tenths % 10}"


def required_tenths(required: float) -> int:
    """`required` as whole tenths (at least 0.1, so a ham side exists)."""
    tenths = round(required * 10)
    if tenths < 1 or not math.isfinite(required):
        raise ValueError(f"required score must be at least 0.1, not {required!r}")
    return tenths


def to_points(score: float, threshold: float, is_spam: bool, required: float = DEFAULT_REQUIRED) -> Points:
    """The points for P(spam) `score` judged against `threshold`; `is_spam` is the verdict (the label), which
    decides the side, so an unsure verdict never reads as spam."""
    req = required_tenths(required)
    top = round(req * TOP_FACTOR)
    p = min(max(score, 0.0), 1.0)
    if is_spam:
        span = 1.0 - threshold
        fraction = 0.0 if span <= 0 else min(max((p - threshold) / span, 0.0), 1.0)
        tenths = req + math.floor(fraction * (top - req))
    else:
        fraction = 1.0 if threshold <= 0 else min(p / threshold, 1.0)
        tenths = min(math.floor(fraction * req), req - 1)
    return Points(tenths, req)
