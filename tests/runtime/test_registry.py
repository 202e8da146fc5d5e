"""Which bundle a caller means: a path, an installed name, $SPAMGUARD_MODEL, or the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from spamguard import registry
from spamguard.errors import BundleError


def test_resolve_path_name_env_default(
    tiny_bundle: Path, spamguard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BundleError, match=r"^no model installed: run 'spamguard train'"):
        registry.resolve()
    assert registry.resolve(tiny_bundle) == tiny_bundle
    assert registry.resolve(str(tiny_bundle)) == tiny_bundle
    registry.install(tiny_bundle, "first")
    registry.install(tiny_bundle, "second")
    models = spamguard_home / "models"
    assert registry.default_name() == "first"  # the first install becomes the default
    assert registry.resolve() == models / "first"
    assert registry.resolve("second") == models / "second"
    monkeypatch.setenv("SPAMGUARD_MODEL", "second")
    assert registry.resolve() == models / "second"
    assert registry.resolve("first") == models / "first"  # an explicit model beats the environment
    monkeypatch.setenv("SPAMGUARD_MODEL", str(tiny_bundle))
    assert registry.resolve() == tiny_bundle
    monkeypatch.delenv("SPAMGUARD_MODEL")
    registry.set_default("second")
    # the name given at install is the name verdicts print, whatever the bundle called itself
    assert registry.open_model().name == "second" and registry.resolve() == models / "second"


def test_unknown_model_and_bad_names(tiny_bundle: Path) -> None:
    registry.install(tiny_bundle)
    with pytest.raises(
        BundleError, match=r"^no model 'nope': not a bundle directory nor an installed model \(installed: tiny\)$"
    ):
        registry.resolve("nope")
    with pytest.raises(BundleError, match=r"invalid model name '\.\./x'"):
        registry.install(tiny_bundle, "../x")


def test_a_vanished_default_says_what_to_run(tiny_bundle: Path, spamguard_home: Path) -> None:
    import shutil

    registry.install(tiny_bundle)
    shutil.rmtree(spamguard_home / "models" / "tiny")
    with pytest.raises(BundleError, match=r"the default model 'tiny' is missing from .* \(run 'spamguard models'\)"):
        registry.resolve()
