"""What `spamguard train` trains on: the default data (the SMS Spam Collection and the SpamAssassin public
corpus, both kinds) or the user's own sources (`--data`, `--ham`, `--spam`, `--corpus`, which replace the
defaults), read through the runtime's readers, deduplicated across all sources and kinds, and split by kind and
label (`training.imbalance`), then trained by the ordinary pipeline.

Everything the job must download (the data sets, GPT-2's weights or tokenizer) is fetched first, and every
failure is collected, so an offline user reads one line naming all that is missing and what replaces each, not
one error per attempt."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from spamguard.datasets import LABEL_NAMES, LABELS
from spamguard.errors import DataError, SpamguardError
from spamguard.mail_sources import SourceReport, check_paths, format_reports, read_labelled
from spamguard.training.data import Splits
from spamguard.training.imbalance import stratified_splits
from spamguard.training.package import ThresholdRule
from spamguard.training.pipeline import Job, ModelFiles, TrainReport, model_files, plan_output, run
from spamguard.training.public_data import sms_collection, spamassassin

T = TypeVar("T")


@dataclass(frozen=True)
class Sources:
    data: Path | None = None  # SMS TSV file (or a folder with ham/ and spam/)
    ham: tuple[Path, ...] = ()  # Maildirs, mbox files, folders
    spam: tuple[Path, ...] = ()
    corpus: bool = False  # the feedback corpus of `spamguard learn`

    @property
    def default(self) -> bool:
        """No source given: train on the default data, both kinds."""
        return self.data is None and not self.ham and not self.spam and not self.corpus

    def describe(self, reports: Sequence[SourceReport]) -> str:
        """For the manifest's `training.data`: every source with what it gave."""
        return "; ".join(f"{r.kind} {r.path} ({LABEL_NAMES[r.label]}, {r.used} used)" for r in reports)


@dataclass(frozen=True)
class Inputs:
    """Everything the job reads, found or downloaded: the sources (the default data as files), the model's
    files, and what the default data is, for the manifest."""

    sources: Sources
    files: ModelFiles
    default_data: str | None


def _attempt(step: Callable[[], T], problems: list[str]) -> T | None:
    try:
        return step()
    except SpamguardError as exc:
        problems.append(str(exc))
        return None


def gather(job: Job, sources: Sources, *, log: Callable[[str], None] = print) -> Inputs:
    """Find or download what the job needs, every part tried even when another failed; the failures raise
    one `DataError` naming all of them with the options that replace each."""
    problems: list[str] = []
    _attempt(lambda: check_paths(data=sources.data, sources=(*sources.ham, *sources.spam)), problems)
    sms = _attempt(lambda: sms_collection(log=log), problems) if sources.default else None
    mail = _attempt(lambda: spamassassin(log=log), problems) if sources.default else None
    files = _attempt(lambda: model_files(job), problems)
    if len(problems) > 1:
        numbered = " ".join(f"({n}) {problem}" for n, problem in enumerate(problems, start=1))
        raise DataError(f"{len(problems)} things training needs are missing: {numbered}")
    if problems or files is None:
        raise DataError(problems[0] if problems else "no model files")
    if sms is None or mail is None:
        return Inputs(sources, files, None)
    default = Sources(data=sms, ham=mail.ham, spam=mail.spam)
    return Inputs(default, files, f"default data: SMS Spam Collection (UCI) at {sms}; {mail.description}")


def _require_both(reports: Sequence[SourceReport]) -> None:
    for name, label in LABELS.items():
        if not any(r.used for r in reports if r.label == label):
            raise DataError(
                f"no {name} to train on: add --{name} PATH (a Maildir, an mbox or a folder of messages), "
                f"--data FILE, or corrections with 'spamguard learn --{name}'"
            )


def read_splits(sources: Sources, seed: int, *, log: Callable[[str], None] = print) -> tuple[Splits, str]:
    """(splits, description of the data) for the sources; the per-source counts and the split are logged."""
    began = time.perf_counter()
    examples, reports = read_labelled(
        data=sources.data, ham=sources.ham, spam=sources.spam, corpus=sources.corpus, progress=True
    )
    log(format_reports(reports))
    _require_both(reports)
    splits = stratified_splits(examples, seed)
    log(
        f"data: {len(examples)} messages after removing repeated texts (read in {time.perf_counter() - began:.1f} "
        f"s), split 70/10/20 by kind and label (seed {seed}): {splits.describe_counts()}"
    )
    return splits, sources.describe(reports)


def train_on_sources(
    job: Job,
    sources: Sources,
    *,
    threshold_rule: ThresholdRule | None = None,
    log: Callable[[str], None] = print,
) -> TrainReport:
    """The whole job: the output folder checked, the downloads done (all failures in one line), the data read
    and split, then `pipeline.run`."""
    plan_output(job)
    inputs = gather(job, sources, log=log)
    splits, description = read_splits(inputs.sources, job.recipe.seed, log=log)
    if inputs.default_data is not None:
        description = f"{inputs.default_data}; {description}"
    return run(job, splits, data_source=description, threshold_rule=threshold_rule, log=log, files=inputs.files)
