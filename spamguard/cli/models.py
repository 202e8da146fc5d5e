"""`spamguard models`: the installed models, and which one `check`, the API and the plugins use by default."""

from __future__ import annotations

from pathlib import Path

import click

from spamguard import registry
from spamguard.errors import BundleError


def _describe(name: str) -> str:
    try:
        manifest = registry.describe(name)
    except BundleError as exc:
        return f"unusable: {exc}"
    precisions = "+".join(manifest.get("models", {}))
    return (
        f"threshold {float(manifest['threshold']):.4f}  max_tokens {manifest['max_tokens']}  {precisions}  "
        f"base {manifest.get('base_model', '?')}"
    )


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
    width = max(len(n) for n in names)
    for name in names:
        click.echo(f"{'*' if name == default else ' '} {name:<{width}}  {_describe(name)}")


@models.command("install")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Install under this name (default: the bundle's own name).")
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
    registry.remove(name)
    click.echo(f"removed {name}")


@models.command("default")
@click.argument("name")
def default(name: str) -> None:
    """Make NAME the model used when none is given."""
    registry.set_default(name)
    click.echo(f"default model: {name}")
