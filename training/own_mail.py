"""Training on the user's own mail (`spamguard train --ham/--spam/--corpus`, optionally with SMS `--data`): the
sources read through the runtime's mail readers and deduplicated across all of them, a stratified split, class
weights from the training split (why: `spamguard.training.imbalance`), then the ordinary pipeline."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from spamguard.datasets import LABEL_NAMES, LABELS
from spamguard.errors import DataError
from spamguard.mail_sources import SourceReport, format_reports, read_labelled
from spamguard.training.data import Splits
from spamguard.training.imbalance import class_weights, stratified_splits
from spamguard.training.package import ThresholdRule
from spamguard.training.pipeline import Job, TrainReport, plan_output, run


@dataclass(frozen=True)
class Sources:
    data: Path | None = None  # SMS TSV file (or a folder with ham/ and spam/)
    ham: tuple[Path, ...] = ()  # Maildirs, mbox files, folders
    spam: tuple[Path, ...] = ()
    corpus: bool = False  # the feedback corpus of `spamguard learn`

    @property
    def has_mail(self) -> bool:
        return bool(self.ham or self.spam or self.corpus) or (self.data is not None and Path(self.data).is_dir())

    def describe(self, reports: Sequence[SourceReport]) -> str:
        """For the manifest's `training.data`: every source with what it gave."""
        return "; ".join(f"{r.kind} {r.path} ({LABEL_NAMES[r.label]}, {r.used} used)" for r in reports)


def _require_both(reports: Sequence[SourceReport]) -> None:
    for name, label in LABELS.items():
        if not any(r.used for r in reports if r.label == label):
            raise DataError(
                f"no {name} to train on: add --{name} PATH (a Maildir, an mbox or a folder of messages), "
                f"--data FILE, or corrections with 'spamguard learn --{name}'"
            )


def mail_splits(
    sources: Sources, seed: int, *, log: Callable[[str], None] = print
) -> tuple[Splits, tuple[float, float], str]:
    """(splits, class weights, description of the data) for mixed sources; the per-source counts are logged."""
    examples, reports = read_labelled(
        data=sources.data, ham=sources.ham, spam=sources.spam, corpus=sources.corpus, progress=True
    )
    log(format_reports(reports))
    _require_both(reports)
    splits = stratified_splits(examples, seed)
    log(
        f"data: {len(examples)} messages after removing repeated texts, stratified split 70/10/20 (seed {seed}): "
        f"{splits.describe_counts()}"
    )
    weights = class_weights(splits.train)
    log(f"imbalance: class weights from the training split, ham {weights[0]:.3f}, spam {weights[1]:.3f}")
    return splits, weights, sources.describe(reports)


def run_on_sources(
    job: Job,
    sources: Sources,
    *,
    threshold_rule: ThresholdRule | None = None,
    log: Callable[[str], None] = print,
) -> TrainReport:
    """The whole job on mail sources. The output folder is checked before the mail is read (a large Maildir
    takes a while), then the weighted, unbalanced job runs through `pipeline.run`."""
    plan_output(job)
    splits, weights, description = mail_splits(sources, job.recipe.seed, log=log)
    job = replace(job, balance=False, recipe=replace(job.recipe, class_weights=weights))
    return run(job, splits=splits, data_source=description, threshold_rule=threshold_rule, log=log)
