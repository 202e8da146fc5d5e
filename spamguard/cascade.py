"""The cascade: a small student model scores every message, its verdict is final where it is sure, and the full
model decides the rest (docs/cascade.md).

The routing rule, defined here once: a message of a kind with the band `[low, high)` is decided by the student
when its student score `s` is below `low` (ham) or at least `high` (spam), and by the full model when
`low <= s < high`. A kind without a band, or a message scored at a threshold other than its kind's (a caller's
`--threshold`: the band was chosen for the bundle's threshold), always goes to the full model.

Every band contains its kind's threshold and unsure band (`low <= min(threshold, unsure low)`, `high >=
max(threshold, unsure high)`; the manifest schema refuses anything else), so a student's verdict is the
ordinary verdict of its own score: ham below `low`, spam from `high`, never unsure. Label, score and threshold
then agree wherever a verdict is shown (headers, spamd points, `check --json`).

`choose_band` picks a kind's band on validation scores: the fewest messages sent to the full model such that
the cascade's verdicts agree with the full model's on at least `min_agreement` of them and the false-positive
count does not rise above the full model's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spamguard.bundle import THRESHOLD_MAX, Band, KindThreshold

if TYPE_CHECKING:
    from spamguard.classifier import Classifier

AGREEMENT_TARGET = 0.995  # the cascade's verdicts equal the full model's on at least this share of validation
STUDENT, FULL = "student", "full"  # `Verdict.stage`: which model decided


@dataclass(frozen=True)
class BandChoice:
    band: Band
    record: dict[str, Any]  # for the manifest (`cascade.choice[kind]`): counts on validation


def choose_band(
    student: Sequence[float] | np.ndarray,
    full: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    threshold: float,
    unsure: tuple[float, float] | None = None,
    *,
    min_agreement: float = AGREEMENT_TARGET,
) -> BandChoice:
    """The band that sends the fewest of these (validation) messages to the full model while the cascade's
    verdicts agree with the full model's on at least `min_agreement` of them and its false positives (ham it
    calls spam) are no more than the full model's.

    Disagreements arise only among decided messages: below `low` where the full model does not say ham, from
    `high` where it does not say spam. Each possible `low` and `high` is tried at the boundaries between
    distinct student scores (equal scores are decided together, as the runtime would); the band kept is the
    widest one with that partition of validation (`low` just above the highest score decided ham, `high` at the
    lowest score decided spam), so a new score in a gap goes to the full model. Sending everything to the full
    model always qualifies, so there is always a choice."""
    s = np.asarray(student, dtype=np.float64)
    f = np.asarray(full, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if not (s.shape == f.shape == y.shape) or s.ndim != 1:
        raise ValueError(f"student, full and labels must be 1-d of one length, got {s.shape}, {f.shape}, {y.shape}")
    if not 0.0 < min_agreement <= 1.0:
        raise ValueError(f"min_agreement must be in (0, 1], got {min_agreement}")
    n = len(s)
    order = np.argsort(s, kind="stable")
    s, f, y = s[order], f[order], y[order]
    rule = KindThreshold(threshold, unsure)
    verdicts = np.array([rule.label(score) for score in f], dtype=object)
    low_cap, high_floor = rule.band_limits()
    budget = math.floor((1.0 - min_agreement) * n + 1e-9)

    # decided low = the first k messages: disagreements, and false positives of the full model it removes
    low_err = np.concatenate([[0], np.cumsum(verdicts != "ham")])
    low_fixed = np.concatenate([[0], np.cumsum((y == 0) & (verdicts == "spam"))])
    # decided high = messages j.. n-1: disagreements, and false positives it adds
    high_err = np.concatenate([np.cumsum((verdicts != "spam")[::-1])[::-1], [0]])
    high_fp = np.concatenate([np.cumsum(((y == 0) & (verdicts != "spam"))[::-1])[::-1], [0]])
    boundary = np.ones(n + 1, dtype=bool)  # a cut between positions k-1 and k separates distinct scores
    boundary[1:n] = s[1:] > s[:-1]
    ks = np.array([k for k in range(n + 1) if boundary[k] and (k == 0 or s[k - 1] < low_cap)])
    js = [j for j in range(n + 1) if boundary[j] and (j == n or s[j] >= high_floor)]
    best: tuple[int, int, int] | None = None  # (routed, disagreements, -k), then k, j
    chosen = (0, n)
    for j in js:
        room = budget - int(high_err[j])
        if room < 0:
            continue
        # the most messages decided low: low_err and low_fixed only grow with k, so the candidates are the ks
        # from the first that removes enough false positives to the last within the disagreement budget
        fits = ks[(low_err[ks] <= room) & (low_fixed[ks] >= high_fp[j]) & (ks <= j)]
        if len(fits) == 0:
            continue
        k = int(fits.max())
        key = (j - k, int(low_err[k] + high_err[j]), -k)
        if best is None or key < best:
            best, chosen = key, (k, j)
    k, j = chosen
    low = float(np.nextafter(s[k - 1], np.inf)) if k > 0 else 0.0
    high = float(s[j]) if j < n else THRESHOLD_MAX  # above every P(spam): never spam
    band = Band(low, high)
    routed = (s >= low) & (s < high)
    cascade = np.where(routed, verdicts, np.where(s < low, "ham", "spam"))
    ham = y == 0
    record = {
        "low": low,
        "high": high,
        "n": n,
        "to_full": int(routed.sum()),
        "share_full": float(routed.mean()) if n else 0.0,
        "disagreements": int(np.sum(cascade != verdicts)),
        "allowed_disagreements": budget,
        "agreement": float(np.mean(cascade == verdicts)) if n else 1.0,
        "fp_full": int(np.sum(ham & (verdicts == "spam"))),
        "fp_cascade": int(np.sum(ham & (cascade == "spam"))),
        "n_ham": int(ham.sum()),
    }
    return BandChoice(band, record)


def route(student_scores: Sequence[float], bands: Sequence[Band | None]) -> list[int]:
    """Indices of the messages the full model must decide: no band for the message, or a score inside it."""
    pairs = zip(student_scores, bands, strict=True)
    return [i for i, (score, band) in enumerate(pairs) if band is None or not band.decides(score)]


def describe(classifier: Classifier, threshold: float | None = None) -> str:
    """What the cascade of a loaded classifier does, for a server's start-up line."""
    bundle = classifier.bundle
    if bundle.cascade is None:
        return "cascade: none (the bundle has no student: the full model decides every message)"
    if not classifier.cascade:
        return "cascade: off (--no-cascade: the full model decides every message)"
    bands = ", ".join(f"{kind} [{band.low:.4g}, {band.high:.4g})" for kind, band in bundle.cascade.bands.items())
    line = f"cascade: the {classifier.student_precision} student decides outside the bands {bands or '(none)'}"
    overridden = [kind for kind in bundle.cascade.bands if classifier.band_for(kind, threshold) is None]
    if overridden:
        line += f"; with --threshold {threshold:g} the full model decides every {' and '.join(overridden)} message"
    return line
