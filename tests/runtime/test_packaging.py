"""The installed layout (DESIGN.md): every import name lives under `spamguard`, from the three folders that
pyproject.toml maps. setuptools puts only the packages listed there into a wheel, while the editable install
the tests run from finds unlisted subpackages too: a package folder missing from the list would pass every test
and be absent from the wheel a mail host installs."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(ROOT / folder).parts]))
    assert sorted(setuptools["packages"]) == sorted(found)
    assert all(name == "spamguard" or name.startswith("spamguard.") for name in found)
