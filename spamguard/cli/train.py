"""`spamguard train`: fine-tune GPT-2 on labelled messages, export the bundle and install it as the default model.

The only command that imports torch, and only when it runs, so `spamguard check` stays light."""

from __future__ import annotations

from pathlib import Path

import click

from spamguard.cli.training_options import schedule_options
from spamguard.training.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SEED,
    DEFAULT_TRAINABLE,
    DEFAULT_WEIGHT_DECAY,
)


class TrainableType(click.ParamType):
    name = "trainable"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[last-block|last-layer|all|N]"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if text in ("last-block", "last-layer", "all") or (text.isdigit() and int(text) >= 1):
            return text
        self.fail(f"{text!r} is not last-block, last-layer, all or a number of blocks (1 or more)", param, ctx)


@click.command()
@click.option("--base", default="gpt2", show_default=True, help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, or a folder.")
@click.option(
    "--weights",
    type=click.Choice(["pretrained", "random"]),
    default="pretrained",
    show_default=True,
    help="Published weights, or GPT-2's random initialisation in the base's configuration.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="An SMS file (ham|spam<TAB>text lines), or a folder holding ham/ and spam/ mail. Without --data, --ham, "
    "--spam and --corpus: the SMS Spam Collection and the SpamAssassin public corpus (downloaded once).",
)
@click.option(
    "--ham",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Ham mail: a Maildir, an mbox or a folder of messages (repeatable).",
)
@click.option(
    "--spam",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Spam mail: a Maildir, an mbox or a folder of messages (repeatable).",
)
@click.option("--corpus", is_flag=True, help="Also train on the corrections stored by 'spamguard learn'.")
@click.option(
    "--max-fpr",
    multiple=True,
    metavar="[KIND=]F",
    help="Choose each kind's threshold on its own validation part: the lowest whose false-positive rate is at "
    "most F (e.g. 0.01). KIND=F (mail or sms) for one kind; repeatable. When every kind has one, training keeps "
    "the epoch with the most validation recall at these thresholds (otherwise the most accurate at 0.5).",
)
@click.option(
    "--threshold",
    multiple=True,
    metavar="[KIND=]T",
    help="A fixed threshold instead (default: 0.5); KIND=T for one kind; repeatable.",
)
@click.option(
    "--unsure",
    multiple=True,
    metavar="[KIND=]LOW,HIGH",
    help="Unsure band (check exits 2 for scores in it); must contain the threshold; KIND=LOW,HIGH for one kind.",
)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder with encoder.json + vocab.bpe (or vocab.json + merges.txt); default: the base's own.",
)
@click.option(
    "--trainable",
    type=TrainableType(),
    default=DEFAULT_TRAINABLE,
    show_default=True,
    help="What trains besides the new head: the last block(s) and the final LayerNorm, only the head, or all.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULT_EPOCHS, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0.0, min_open=True),
    default=DEFAULT_LR,
    show_default=True,
    help=f"AdamW learning rate (weight decay {DEFAULT_WEIGHT_DECAY:g}).",
)
@schedule_options()
@click.option(
    "--augment-leetspeak",
    type=click.FloatRange(min=0.0, max=1.0),
    default=0.0,
    show_default=True,
    metavar="SHARE",
    help="Also train on a leetspeak copy (letters as digits) of this share of the training messages.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_TOKENS,
    show_default=True,
    help="Messages are cut to this many tokens, in training and by the runtime.",
)
@click.option(
    "--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Seeds the split, the head and the data order."
)
@click.option(
    "--prefix-precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="Of the frozen prefix pass (the bundle is fp32/int8 either way); auto: bf16 only where the CPU has AMX "
    "and a short timing shows bf16 faster, else fp32.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="New bundle folder; default: a new folder in the user's models directory.",
)
@click.option("--name", help="Model name; default: the base's name and the date.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="PyTorch threads; default: one per core (1 is faster for tiny models on a busy machine).",
)
@click.option("--install/--no-install", default=True, show_default=True, help="Install as the default model.")
def train(
    base: str,
    weights: str,
    data: Path | None,
    ham: tuple[Path, ...],
    spam: tuple[Path, ...],
    corpus: bool,
    max_fpr: tuple[str, ...],
    threshold: tuple[str, ...],
    unsure: tuple[str, ...],
    tokenizer: Path | None,
    trainable: str,
    epochs: int,
    batch_size: int,
    lr: float,
    lr_schedule: str,
    max_grad_norm: float | None,
    augment_leetspeak: float,
    max_tokens: int,
    seed: int,
    prefix_precision: str,
    out: Path | None,
    name: str | None,
    threads: int | None,
    install: bool,
) -> None:
    """Fine-tune GPT-2 to tell spam from ham and export it as a model bundle.

    The default data holds both kinds of message, SMS (the UCI SMS Spam Collection) and mail (the SpamAssassin
    public corpus), downloaded once into the data sets folder; --data, --ham, --spam and --corpus replace it.
    Whatever the data: texts deduplicated across all sources, each message's kind (mail or sms) decided as the
    runtime decides it, a 70/10/20 split stratified by kind and label that keeps the real ham:spam ratio of each
    kind and both labels in every part, the loss weighted per kind and label from the training split, and a
    threshold per kind chosen on that kind's validation part."""
    from spamguard.thresholds import kind_options, threshold_rule

    options = kind_options(max_fpr=max_fpr, threshold=threshold, unsure=unsure)

    from spamguard.training.pipeline import Job
    from spamguard.training.recipe import TrainSettings
    from spamguard.training.sources import Sources, train_on_sources

    job = Job(
        base=base,
        weights=weights,
        tokenizer=tokenizer,
        max_tokens=max_tokens,
        out=out,
        name=name,
        install=install,
        threads=threads,
        recipe=TrainSettings(
            trainable=trainable,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_schedule=lr_schedule,
            max_grad_norm=max_grad_norm,
            augment_leetspeak=augment_leetspeak,
            seed=seed,
            prefix_precision=prefix_precision,
        ),
    )
    rule = threshold_rule(options, log=click.echo)
    train_on_sources(job, Sources(data=data, ham=ham, spam=spam, corpus=corpus), threshold_rule=rule, log=click.echo)
