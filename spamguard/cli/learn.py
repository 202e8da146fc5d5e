"""`spamguard learn`: keep the messages the filter got wrong, as the user sorted them, for the next training."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from spamguard import corpus

_STATUS = {"added": "added", "known": "already known", "moved": "moved from {other}"}


@click.command()
@click.option("--spam", "label", flag_value="spam", help="The messages are spam (the filter let them through).")
@click.option("--ham", "label", flag_value="ham", help="The messages are ham (the filter flagged them).")
@click.option("--list", "show_list", is_flag=True, help="List the stored corrections.")
@click.option("--stats", is_flag=True, help="Count the stored corrections.")
@click.argument("files", nargs=-1, metavar="[FILE]...", type=click.Path(dir_okay=True, allow_dash=True))
def learn(label: str | None, show_list: bool, stats: bool, files: tuple[str, ...]) -> None:
    """Store corrected messages (FILE..., or standard input) in the feedback corpus that
    `spamguard train --corpus` trains on. A message learned again with the other label moves."""
    if show_list or stats:
        if label or files:
            raise click.UsageError("--list and --stats take no --spam, --ham or FILE")
        _show(show_list, stats)
        return
    if label is None:
        raise click.UsageError("say what the messages are: --spam or --ham")
    names = list(files) or ["-"]
    other = "ham" if label == "spam" else "spam"
    for learned in corpus.learn_files(names, label, stdin=sys.stdin.buffer):
        status = _STATUS[learned.status].format(other=other)
        click.echo(f"{learned.label}: {status} {learned.key[:16]} ({learned.source})")


def _show(show_list: bool, stats: bool) -> None:
    if show_list:
        for entry in corpus.entries():
            added = datetime.fromtimestamp(entry.mtime).strftime("%Y-%m-%d %H:%M")
            click.echo(f"{entry.label:<4}  {entry.key[:16]}  {added}  {entry.subject()}")
    if stats:
        counts = corpus.stats()
        click.echo(f"ham {counts['ham']}, spam {counts['spam']} in {corpus.corpus_dir()}")
