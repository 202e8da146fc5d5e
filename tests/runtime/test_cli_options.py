"""The options shared by the scoring commands: one definition, so the same name has the same type, default and
help everywhere (spamguard.cli.options), and `ByteSize`."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from spamguard.cli import main
from spamguard.cli.options import ByteSize

SCORING_COMMANDS = ("check", "eval", "pipe", "milter", "serve")
SHARED = ("model", "threshold", "precision", "threads")


def _params(command: str) -> dict[str, click.Parameter]:
    ctx = click.Context(main)
    return {p.name: p for p in main.get_command(ctx, command).params if p.name}  # type: ignore[union-attr]


@pytest.mark.parametrize("name", SHARED)
def test_every_scoring_command_has_the_same_option(name: str) -> None:
    infos = {command: _params(command)[name].to_info_dict() for command in SCORING_COMMANDS}
    first = infos["check"]
    assert all(info == first for info in infos.values()), infos


def test_precision_replaces_the_fp32_flag() -> None:
    assert _params("check")["precision"].type.choices == ("auto", "int8", "fp32")  # type: ignore[attr-defined]
    for command, usage_error in (("check", 3), ("eval", 2)):  # check exits 3: 2 means "unsure" there
        assert "fp32" not in _params(command)
        result = CliRunner().invoke(main, [command, "--fp32"])
        assert (result.exit_code, result.stderr.splitlines()[-1]) == (usage_error, "Error: No such option '--fp32'.")


@pytest.mark.parametrize(
    ("text", "size"), [("512000", 512000), ("500K", 512000), ("2m", 2 << 20), ("1G", 1 << 30), ("4kb", 4096)]
)
def test_byte_size(text: str, size: int) -> None:
    assert ByteSize().convert(text, None, None) == size


@pytest.mark.parametrize("text", ["", "K", "0", "-5K", "1.5M", "2T", "lots"])
def test_byte_size_refuses(text: str) -> None:
    with pytest.raises(click.BadParameter, match="is not a size"):
        ByteSize().convert(text, None, None)
