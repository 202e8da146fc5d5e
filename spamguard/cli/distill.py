"""`spamguard distill`: train a small student on a bundle's own model and put it into the bundle as the first
stage of a cascade (docs/cascade.md). Imports torch only when it runs, as `train` does.

A command of its own rather than an option of `train`: it starts from a finished bundle (its model, split
seed, thresholds and tokenizer), not from a base model, and it can run again later (with more unlabeled mail)
without training the big model again."""

from __future__ import annotations

from pathlib import Path

import click

from spamguard.cli.training_options import schedule_options
from spamguard.training.defaults import STUDENT_LR_SCHEDULE, STUDENT_MAX_GRAD_NORM


@click.command("distill")
@click.argument("bundle")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="As for 'spamguard train': the data the bundle was trained on (its split is rebuilt from it and the "
    "seed in the manifest, and checked). Without --data, --ham, --spam and --corpus: the default data.",
)
@click.option("--ham", multiple=True, type=click.Path(path_type=Path), help="As for 'spamguard train' (repeatable).")
@click.option("--spam", multiple=True, type=click.Path(path_type=Path), help="As for 'spamguard train' (repeatable).")
@click.option("--corpus", is_flag=True, help="As for 'spamguard train'.")
@click.option(
    "--unlabeled",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Mail nobody sorted (a Maildir, an mbox, a folder of messages; repeatable): the bundle's model labels "
    "it for the student. Texts of the validation and test parts are left out.",
)
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True, help="The student's blocks.")
@click.option("--width", type=click.IntRange(min=8), default=128, show_default=True, help="The student's width.")
@click.option("--heads", type=click.IntRange(min=1), default=2, show_default=True, help="The student's heads.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True)
@schedule_options(STUDENT_LR_SCHEDULE, STUDENT_MAX_GRAD_NORM)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0.0, min_open=True),
    default=2.0,
    show_default=True,
    help="Of the teacher's soft targets.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0.0, 1.0),
    default=0.7,
    show_default=True,
    help="Share of the loss from the teacher's soft targets (the rest from the true labels).",
)
@click.option("--seed", type=int, default=123, show_default=True, help="The student's initialisation and data order.")
@click.option("--threads", type=click.IntRange(min=1), help="PyTorch threads; default: one per core.")
def distill(
    bundle: str,
    data: Path | None,
    ham: tuple[Path, ...],
    spam: tuple[Path, ...],
    corpus: bool,
    unlabeled: tuple[Path, ...],
    layers: int,
    width: int,
    heads: int,
    epochs: int,
    batch_size: int,
    lr: float,
    lr_schedule: str,
    max_grad_norm: float | None,
    temperature: float,
    alpha: float,
    seed: int,
    threads: int | None,
) -> None:
    """Distill BUNDLE (a name or a path) into a small student and add it to BUNDLE as a cascade.

    The student (a GPT-2 of --layers x --width, random initialisation) learns the bundle model's P(spam) and the
    true labels on the training part of the bundle's own split, and the model's P(spam) on --unlabeled mail. Its
    bands (where the full model still decides) are chosen per kind on validation: verdicts equal to the full
    model's on at least 99.5% of it, and no more false positives. The bundle is rewritten as a new version in one
    atomic step; on any failure it stays as it was."""
    from spamguard.datasets import HAM
    from spamguard.mail_sources import SeenTexts, read_mail_source
    from spamguard.registry import open_model
    from spamguard.training.distill import StudentSettings, check_split, split_seed
    from spamguard.training.distill import distill as run_distill
    from spamguard.training.public_data import sms_collection, spamassassin
    from spamguard.training.sources import Sources, read_splits

    teacher = open_model(bundle, verify=False)
    sources = Sources(data=data, ham=ham, spam=spam, corpus=corpus)
    if sources.default:
        mail = spamassassin(log=click.echo)
        sources = Sources(data=sms_collection(log=click.echo), ham=mail.ham, spam=mail.spam)
    splits, _ = read_splits(sources, split_seed(teacher), log=click.echo)
    check_split(teacher, splits)  # before reading mail or training: the wrong data is one line at once
    found = []
    seen = SeenTexts()
    for path in unlabeled:
        examples, report = read_mail_source(path, HAM, seen=seen, sms_files=True, progress=True)
        click.echo(f"unlabeled {report.line().partition(' ')[2]}")
        found.extend(examples)
    settings = StudentSettings(
        n_layer=layers,
        n_head=heads,
        n_embd=width,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_schedule=lr_schedule,
        max_grad_norm=max_grad_norm,
        temperature=temperature,
        alpha=alpha,
        seed=seed,
    )
    run_distill(teacher.path, splits, unlabeled=found, settings=settings, threads=threads, log=click.echo)
