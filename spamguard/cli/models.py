"""`spamguard models`: the installed models, and which one `check`, the API and the plugins use by default."""

from __future__ import annotations

from pathlib import Path

import click

from spamguard import registry
from spamguard.errors import BundleError
from spamguard.message_text import KINDS


def _describe(name: str) -> str:
    """One line about an installed model. Everything shown comes from its checked manifest (a name is a safe
    token, the base model one line of printable text), and a model that fails the check says why instead."""
    try:
        bundle = registry.describe(name)
    except BundleError as exc:
        return f"unusable: {registry.shown(str(exc))}"
    thresholds = {kind: bundle.threshold_for(kind) for kind in KINDS}
    if len(set(thresholds.values())) == 1:
        threshold = f"threshold {bundle.threshold:.4f}"
    else:
        threshold = "threshold " + " ".join(f"{kind} {value:.4f}" for kind, value in thresholds.items())
    precisions = "+".join(bundle.fields["models"])
    base = bundle.fields["base_model"] or "?"
    return f"{threshold}  max_tokens {bundle.max_tokens}  {precisions}  base {base}"


@click.group("models", invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List installed models (the default marked *), or install, remove, or choose the default one."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_models)


@models.command("list")
def list_models() -> None:
    """List installed models; the default is marked with *."""
    names = registry.installed()
    if not names:
        click.echo("no models installed (run 'spamguard train' or 'spamguard models install PATH')")
        return
    default = registry.default_name()
    shown = {name: registry.shown(name) for name in names}
    width = max(len(n) for n in shown.values())
    for name in names:
        click.echo(f"{'*' if name == default else ' '} {shown[name]:<{width}}  {_describe(name)}")


@models.command("install")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Install under this name, which verdicts and headers then print (default: the bundle's).")
@click.option("--default", "make_default", is_flag=True, help="Make it the default model.")
def install(path: Path, name: str | None, make_default: bool) -> None:
    """Copy the bundle at PATH into the models folder, after checking every file's sha256."""
    target = registry.install(path, name, make_default=make_default)
    suffix = " (default)" if registry.default_name() == target.name else ""
    click.echo(f"installed {target.name}{suffix} at {target}")


@models.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Delete an installed model."""
    was_default = registry.remove(name)
    click.echo(f"removed {name}")
    if was_default:
        others = registry.installed()
        if others:
            click.echo(
                f"{name} was the default model; none is now: choose one with 'spamguard models default NAME' "
                f"(installed: {', '.join(registry.shown(n) for n in others)})"
            )
        else:
            click.echo(f"{name} was the default model; no model is installed now")


@models.command("default")
@click.argument("name")
def default(name: str) -> None:
    """Make NAME the model used when none is given."""
    registry.set_default(name)
    click.echo(f"default model: {name}")
