"""The `spamguard` command. Subcommands load lazily, so `spamguard check` never imports torch (training) or the
milter machinery, and a mail host's process start stays short."""

from __future__ import annotations

import importlib

import click

from spamguard.errors import SpamguardError

# name -> "module:attribute" of a click command; each command lives in its own module of this package
COMMANDS: dict[str, str] = {
    "check": "spamguard.cli.check:check",
    "eval": "spamguard.cli.evaluate:evaluate",
    "models": "spamguard.cli.models:models",
    "learn": "spamguard.cli.learn:learn",
    "pipe": "spamguard.cli.pipe:pipe",
    "serve": "spamguard.cli.serve:serve",
    "milter": "spamguard.cli.milter:milter",
    "train": "spamguard.cli.train:train",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> object:
        """Library errors are meant for users: print them as one line, never as a traceback."""
        try:
            return super().invoke(ctx)
        except SpamguardError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=LazyGroup)
@click.version_option(package_name="spamguard")
def main() -> None:
    """Spam filter for mail and SMS: a fine-tuned GPT-2 served by onnxruntime."""
