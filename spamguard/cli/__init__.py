"""The `spamguard` command. Subcommands load lazily, so `spamguard check` never imports torch (training) or the
milter machinery, and a mail host's process start stays short.

Every failure a command does not handle itself ends as one line on stderr and a non-zero exit: the command's
`error_exit_code` if it declares one (`check`: 3, bogofilter's "error", so no script reads a crash as ham;
`pipe`: 75, tempfail, so no MTA bounces the mail), else 1. An unexpected exception (a bug, RecursionError,
MemoryError) is named by its type. `SPAMGUARD_DEBUG=1` in the environment shows the traceback instead: an
environment variable, not an option, because the commands that fail in production run under procmail, an MTA or
systemd, where changing the environment is one line and the argument list belongs to the caller."""

from __future__ import annotations

import importlib
import os
import sys

import click

from spamguard.errors import SpamguardError, one_line

DEBUG_ENV = "SPAMGUARD_DEBUG"

# name -> "module:attribute" of a click command; each command lives in its own module of this package
COMMANDS: dict[str, str] = {
    "check": "spamguard.cli.check:check",
    "distill": "spamguard.cli.distill:distill",
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
        """Library errors are meant for users: print them as one line, never as a traceback; so is anything
        unexpected, with its type."""
        try:
            return super().invoke(ctx)
        except SpamguardError as exc:
            message = one_line(exc)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            message = f"internal error: {one_line(exc)} (set {DEBUG_ENV}=1 for the traceback)"
        name = ctx.invoked_subcommand or ""
        command = self.get_command(ctx, name) if name else None
        click.echo(f"Error: {message}", err=True)
        sys.exit(getattr(command, "error_exit_code", 1))


@click.group(cls=LazyGroup)
@click.version_option(package_name="spamguard")
def main() -> None:
    """Spam filter for mail and SMS: a fine-tuned GPT-2 served by onnxruntime."""
