"""The decision threshold and the optional unsure band, chosen on validation scores and recorded in the bundle
with the figures that justify them, so whoever installs a model can see what false-positive rate it was
tuned for and on how much ham that was measured.

Verdict contract (what `check` and the plugins apply): with an unsure band `[low, high]`, a score `>= high` is
spam, a score `< low` is ham and anything between is unsure; without a band, `score >= threshold` is spam. The
threshold must lie inside the band, so a spam verdict is never less strict than the threshold that the
false-positive target chose.

Per kind: mail and SMS each get their own threshold, chosen on their own validation part (a false-positive
target pooled over both kinds could be met on SMS while mail ham pays for it). The options `--max-fpr`,
`--threshold` and `--unsure` each take `VALUE` (every kind) or `KIND=VALUE` (that kind), and may be repeated:
`--max-fpr 0.01 --max-fpr mail=0.001`. A kind's own value wins over the general one, so
`--max-fpr 0.01 --threshold sms=0.5` chooses mail's threshold by FPR and fixes SMS's. The bundle also keeps one
fallback threshold for kinds without their own (`fallback`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from spamguard.errors import SpamguardError
from spamguard.message_text import KINDS
from spamguard.metrics import binary_metrics, expected_new_fpr, threshold_for_fpr

DEFAULT_THRESHOLD = 0.5


class ThresholdError(SpamguardError):
    """The threshold options are inconsistent or out of range."""


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    unsure: tuple[float, float] | None
    record: dict[str, Any]  # the manifest's `threshold_choice`
    warnings: list[str] = field(default_factory=list)  # for the user's terminal; also kept in `record`

    def manifest_fields(self) -> dict[str, Any]:
        """The three bundle manifest fields this choice sets."""
        return {
            "threshold": self.threshold,
            "unsure": list(self.unsure) if self.unsure else None,
            "threshold_choice": self.record,
        }

    def describe(self) -> str:
        """One line for the end of a training run."""
        r = self.record
        how = (
            f"max FPR {r['target_fpr']:g}"
            if r["method"] == "max_fpr"
            else {"threshold": "given"}.get(r["method"], "default")
        )
        line = (
            f"threshold {self.threshold:.6g} ({how}; on validation: FPR {r['fpr']:.4g} on {r['n_ham']} ham, "
            f"recall {r['recall']:.4g} on {r['n_spam']} spam"
        )
        if r.get("expected_new_fpr") is not None:
            line += f"; on new ham: FPR at most {r['expected_new_fpr']:.2g} expected"
        line += ")"
        if self.unsure:
            u = r["unsure"]
            line += (
                f", unsure {self.unsure[0]:g}-{self.unsure[1]:g} ({u['ham_unsure']} ham and {u['spam_unsure']} "
                "spam of validation fall in it)"
            )
        return line


def parse_unsure(text: str) -> tuple[float, float]:
    """`LOW,HIGH` as typed after `--unsure`, checked as `check_unsure` does."""
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ThresholdError(f"--unsure expects LOW,HIGH (two numbers such as 0.3,0.9), got {text!r}") from None
    return check_unsure(low, high)


def check_unsure(low: float, high: float, threshold: float | None = None) -> tuple[float, float]:
    if not 0.0 <= low < high <= 1.0:
        raise ThresholdError(f"the unsure band needs 0 <= LOW < HIGH <= 1, got {low:g},{high:g}")
    if threshold is not None and not low <= threshold <= high:
        raise ThresholdError(
            f"the threshold {threshold:.6g} lies outside the unsure band {low:g},{high:g}: choose a band "
            "that contains it"
        )
    return low, high


def check_options(
    *, max_fpr: float | None = None, threshold: float | None = None, unsure: tuple[float, float] | None = None
) -> None:
    """Everything about `--max-fpr`/`--threshold`/`--unsure` that can be checked before training starts."""
    if max_fpr is not None and threshold is not None:
        raise ThresholdError("give --max-fpr or --threshold, not both")
    if max_fpr is not None and not 0.0 <= max_fpr < 1.0:
        raise ThresholdError(f"--max-fpr must be at least 0 and below 1, got {max_fpr:g}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ThresholdError(f"--threshold must be between 0 and 1, got {threshold:g}")
    if unsure is not None:
        fixed = threshold if threshold is not None else None if max_fpr is not None else DEFAULT_THRESHOLD
        check_unsure(*unsure, threshold=fixed)


T = TypeVar("T")


@dataclass(frozen=True)
class ThresholdOptions:
    """What the options ask of one kind's threshold."""

    max_fpr: float | None = None
    threshold: float | None = None
    unsure: tuple[float, float] | None = None


def _per_kind(option: str, values: Sequence[str], convert: Callable[[str], T]) -> dict[str | None, T]:
    """`VALUE` or `KIND=VALUE` occurrences of one option as {kind or None (every kind): value}."""
    parsed: dict[str | None, T] = {}
    for text in values:
        name, equals, value = text.partition("=")
        kind = name.strip().lower() if equals else None
        if kind is not None and kind not in KINDS:
            raise ThresholdError(f"{option} {text}: unknown kind {name.strip()!r} (use {' or '.join(KINDS)})")
        if kind in parsed:
            raise ThresholdError(f"{option} is given twice for {kind or 'every kind'}")
        parsed[kind] = convert(value if equals else text)
    return parsed


def _number(option: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ThresholdError(f"{option} expects a number or KIND=NUMBER, got {text!r}") from None

    return convert


def kind_options(
    *, max_fpr: Sequence[str] = (), threshold: Sequence[str] = (), unsure: Sequence[str] = ()
) -> dict[str, ThresholdOptions]:
    """The options as typed (each `VALUE` or `KIND=VALUE`, repeatable) resolved to every kind's settings, each
    checked as `check_options` checks one kind, so a typo fails before hours of training."""
    fprs = _per_kind("--max-fpr", max_fpr, _number("--max-fpr"))
    fixed = _per_kind("--threshold", threshold, _number("--threshold"))
    bands = _per_kind("--unsure", unsure, parse_unsure)
    resolved = {}
    for kind in KINDS:
        # the most specific of --max-fpr and --threshold wins; both at the same level is the user's mistake
        fpr_key = kind if kind in fprs else None
        fixed_key = kind if kind in fixed else None
        chosen_fpr, chosen_fixed = fprs.get(fpr_key), fixed.get(fixed_key)
        if chosen_fpr is not None and chosen_fixed is not None and fpr_key != fixed_key:
            chosen_fpr, chosen_fixed = (chosen_fpr, None) if fpr_key == kind else (None, chosen_fixed)
        band = bands.get(kind, bands.get(None))
        specific = kind in fprs or kind in fixed or kind in bands
        try:
            check_options(max_fpr=chosen_fpr, threshold=chosen_fixed, unsure=band)
        except ThresholdError as exc:
            raise ThresholdError(f"{kind}: {exc}" if specific else str(exc)) from None
        resolved[kind] = ThresholdOptions(chosen_fpr, chosen_fixed, band)
    return resolved


@dataclass(frozen=True)
class KindRule:
    """The options as a rule for the training pipeline, `(kind, validation labels, scores) -> (threshold,
    threshold_choice)` applied to each kind's own validation part of the exported model. It also answers whether
    a kind's threshold is bounded by a false-positive rate: training ranks its epochs by recall only where it is
    (`training.epoch_choice`), since at a fixed threshold the epoch with the most recall can be the one that
    flags the most ham."""

    options: Mapping[str, ThresholdOptions]
    log: Callable[[str], None] = print

    def __call__(self, kind: str, labels: np.ndarray, scores: np.ndarray) -> tuple[float, dict[str, Any]]:
        settings = self.options.get(kind, ThresholdOptions())
        choice = choose_threshold(
            labels, scores, max_fpr=settings.max_fpr, threshold=settings.threshold, unsure=settings.unsure
        )
        self.log(f"{kind}: {choice.describe()}")
        for warning in choice.warnings:
            self.log(f"warning: {kind}: {warning}")
        return choice.threshold, {"kind": kind, **choice.record}

    def bounded_by_fpr(self, kind: str) -> bool:
        return self.options.get(kind, ThresholdOptions()).max_fpr is not None


def threshold_rule(
    options: Mapping[str, ThresholdOptions] | ThresholdOptions | None = None,
    *,
    log: Callable[[str], None] = print,
) -> KindRule:
    """The options as a `KindRule`. One `ThresholdOptions` applies to every kind. Checked now, so a typo fails
    before hours of training; the band to store is `threshold_choice["unsure"]`."""
    if not isinstance(options, Mapping):
        options = dict.fromkeys(KINDS, options or ThresholdOptions())
    for settings in options.values():
        check_options(max_fpr=settings.max_fpr, threshold=settings.threshold, unsure=settings.unsure)
    return KindRule(dict(options), log)


def fallback(thresholds: Mapping[str, tuple[float, tuple[float, float] | None]]) -> tuple[float, tuple | None]:
    """The bundle's one `threshold` (and `unsure`) beside the per-kind ones: what a runtime applies to a kind
    the model has no threshold for, and all an older runtime reads. The strictest: the highest threshold (each
    kind's false-positive target still holds on its own validation), and, when any kind has a band, the band
    from the lowest low to the highest high (every kind's threshold taken as its band where it has none), so a
    spam verdict is at least as strict and a ham verdict at least as sure as any kind's."""
    if not thresholds:
        raise ValueError("no thresholds to fall back on")
    threshold = max(t for t, _ in thresholds.values())
    if all(band is None for _, band in thresholds.values()):
        return threshold, None
    lows = [band[0] if band else t for t, band in thresholds.values()]
    highs = [band[1] if band else t for t, band in thresholds.values()]
    return threshold, (min(lows), max(highs))


def _figures(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    m = binary_metrics(labels, scores, threshold)
    return {key: m[key] for key in ("fpr", "recall", "precision", "fp", "tp", "tn", "fn")}


def choose_threshold(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    max_fpr: float | None = None,
    threshold: float | None = None,
    unsure: tuple[float, float] | None = None,
) -> ThresholdChoice:
    """The threshold from `--max-fpr` (the lowest threshold that meets the target on new ham, by the
    split-conformal bound on the validation ham: `metrics.threshold_for_fpr(new_ham=True)`), from
    `--threshold`, or the default 0.5, with the validation figures at that threshold and, when an unsure band
    is given, how much ham and spam land in it."""
    check_options(max_fpr=max_fpr, threshold=threshold)
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    n_ham, n_spam = int(np.sum(y == 0)), int(np.sum(y == 1))
    warnings = []
    if max_fpr is not None:
        if n_ham == 0:
            raise ThresholdError("cannot choose a threshold by false-positive rate: the validation split has no ham")
        method, chosen = "max_fpr", threshold_for_fpr(y, s, max_fpr, new_ham=True)
    elif threshold is not None:
        method, chosen = "threshold", float(threshold)
    else:
        method, chosen = "default", DEFAULT_THRESHOLD
    # the split-conformal bound for ham not seen in training or validation (`metrics.expected_new_fpr`)
    promised = expected_new_fpr(y, s, chosen) if n_ham else None
    if max_fpr is not None:
        if promised is not None and 0 < max_fpr < promised:  # (0 asks for the strictest threshold: no promise)
            warnings.append(
                f"the validation split has {n_ham} ham: even above every one of them, a new ham message has a "
                f"{promised:.2g} chance to score higher, above the target {max_fpr:g}; the threshold is the "
                f"strictest validation can justify (it takes {int(np.ceil(1 / max_fpr)) - 1} ham to show "
                f"{max_fpr:g})"
            )
        if chosen > 1.0:
            warnings.append("a validation ham scores 1.0: no threshold meets the target, this model flags nothing")
    band = None
    if unsure is not None:
        low, high = check_unsure(*unsure)
        if method == "max_fpr" and not low <= chosen <= high and chosen <= 1.0:
            # Known only after training: widen the band to the threshold rather than throw the model away.
            # Spam verdicts then stay at least as strict as the false-positive target asks.
            low, high = min(low, chosen), max(high, chosen)
            warnings.append(
                f"the threshold {chosen:.6g} chosen for --max-fpr lies outside the unsure band "
                f"{unsure[0]:g},{unsure[1]:g}: the band was widened to {low:.6g},{high:.6g}"
            )
        band = check_unsure(low, high, threshold=chosen if chosen <= 1.0 else None)
    record: dict[str, Any] = {
        "method": method,
        "target_fpr": max_fpr,
        "threshold": chosen,
        "split": "validation",
        "n_ham": n_ham,
        "n_spam": n_spam,
        "fpr_step": 1 / n_ham if n_ham else None,
        "expected_new_fpr": promised,
        **_figures(y, s, chosen),
        "unsure": None,
        "warnings": warnings,
    }
    if band is not None:
        low, high = band
        in_band = (s >= low) & (s < high)
        spam_verdicts = _figures(y, s, high)
        record["unsure"] = {
            "low": low,
            "high": high,
            "ham_unsure": int(np.sum(in_band & (y == 0))),
            "spam_unsure": int(np.sum(in_band & (y == 1))),
            "fpr_spam_verdict": spam_verdicts["fpr"],
            "recall_spam_verdict": spam_verdicts["recall"],
        }
    return ThresholdChoice(chosen, band, record, warnings)
