"""Hostile bundles given to `spamguard models install`: links, FIFOs, devices and loops inside the bundle folder,
files that fail their check, oversized files. Only the files the manifest lists are copied, as regular files,
within the size limits; every failure is one line and leaves nothing in the models folder."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from spamguard import bundle as bundle_module
from spamguard import registry
from spamguard.bundle import MANIFEST, Bundle, load_bundle
from spamguard.cli import main
from spamguard.errors import BundleError


def _copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "b"))


def _install(source: Path, *args: str) -> tuple[int, str, str]:
    """`spamguard models install`, on a thread with a deadline: before, some of these copied without end."""
    outcome: list[object] = []
    thread = threading.Thread(
        target=lambda: outcome.append(CliRunner().invoke(main, ["models", "install", str(source), *args])),
        daemon=True,
    )
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "install did not finish within 60 s"
    result = outcome[0]
    return result.exit_code, result.stdout, result.stderr  # type: ignore[attr-defined]


def _models(spamguard_home: Path) -> list[str]:
    """Everything in the models folder, hidden staging folders included."""
    root = spamguard_home / "models"
    return sorted(os.listdir(root)) if root.exists() else []


def _installed_files(spamguard_home: Path, name: str) -> list[str]:
    return sorted(os.listdir(spamguard_home / "models" / name))


LISTED = ["encoder.json", "model.int8.onnx", "model.int8.onnx.data", "model.onnx", "spamguard.json", "vocab.bpe"]


def test_only_the_listed_files_are_copied_and_links_beside_them_are_ignored(
    tiny_bundle: Path, tmp_path: Path, spamguard_home: Path
) -> None:
    """Before: a link to a 0600 secret was copied into the models folder, a link to /dev/zero copied without
    end, a FIFO gave a traceback, and a link to the bundle's own folder (a loop) wrote 1.3 GB."""
    bundle = _copy(tiny_bundle, tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("password=hunter2\n")
    secret.chmod(0o600)
    (bundle / "notes.txt").symlink_to(secret)
    (bundle / "zero").symlink_to("/dev/zero")
    (bundle / "loop").symlink_to(".")
    os.mkfifo(bundle / "fifo")
    (bundle / "extra.bin").write_bytes(b"not listed")
    code, out, err = _install(bundle)
    assert (code, err) == (0, "")
    assert out == f"installed tiny (default) at {spamguard_home / 'models' / 'tiny'}\n"
    assert _installed_files(spamguard_home, "tiny") == LISTED
    assert _models(spamguard_home) == ["tiny"]
    assert load_bundle(spamguard_home / "models" / "tiny").name == "tiny"  # every sha256 holds


@pytest.mark.parametrize("kind", ["link to a secret", "link to /dev/zero", "fifo", "link loop"])
def test_a_listed_file_that_is_not_a_regular_file_is_refused_and_nothing_is_left(
    tiny_bundle: Path, tmp_path: Path, spamguard_home: Path, kind: str
) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    listed = bundle / "vocab.bpe"
    listed.rename(tmp_path / "vocab.bpe")  # same content, same sha256, outside
    (tmp_path / "vocab.bpe").chmod(0o600)
    if kind == "link to a secret":
        listed.symlink_to(tmp_path / "vocab.bpe")
    elif kind == "link to /dev/zero":
        listed.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(listed)
    else:
        listed.symlink_to(listed.name)
    code, out, err = _install(bundle)
    assert (code, out) == (1, "")
    assert err == f"Error: corrupt bundle {bundle}: vocab.bpe is not a regular file (a bundle holds no links)\n"
    assert _models(spamguard_home) == []


def test_a_file_that_fails_its_check_while_copied_leaves_nothing(
    tiny_bundle: Path, tmp_path: Path, spamguard_home: Path
) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    with open(bundle / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    code, _, err = _install(bundle)
    assert code == 1
    assert err == f"Error: corrupt bundle {bundle}: model.onnx does not match its sha256 (reinstall the model)\n"
    assert _models(spamguard_home) == []


def test_an_interrupted_install_leaves_nothing(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, spamguard_home: Path
) -> None:
    real = Bundle.copy_verified
    copied: list[str] = []

    def interrupted(self: Bundle, name: str, target: Path) -> None:
        if copied:
            raise KeyboardInterrupt
        copied.append(name)
        real(self, name, target)

    monkeypatch.setattr(Bundle, "copy_verified", interrupted)
    with pytest.raises(KeyboardInterrupt):
        registry.install(tiny_bundle)
    assert copied and _models(spamguard_home) == []


def test_size_limits(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, spamguard_home: Path) -> None:
    size = (tiny_bundle / "model.onnx").stat().st_size
    monkeypatch.setattr(bundle_module, "MAX_FILE_BYTES", size - 1)
    with pytest.raises(BundleError, match=rf"^corrupt bundle .*: model\.onnx is {size} bytes, over {size - 1}$"):
        registry.install(tiny_bundle)
    monkeypatch.setattr(bundle_module, "MAX_FILE_BYTES", size)
    monkeypatch.setattr(bundle_module, "MAX_BUNDLE_BYTES", size)
    with pytest.raises(BundleError, match=r"^corrupt bundle .*: its files hold \d+ bytes, over \d+$"):
        registry.install(tiny_bundle)
    assert _models(spamguard_home) == []


def test_a_failed_replace_keeps_the_installed_model(tiny_bundle: Path, tmp_path: Path, spamguard_home: Path) -> None:
    registry.install(tiny_bundle)
    bad = _copy(tiny_bundle, tmp_path)
    (bad / "encoder.json").write_text("{}")
    with pytest.raises(BundleError, match=r"encoder\.json does not match its sha256"):
        registry.install(bad, replace=True)
    assert _models(spamguard_home) == ["tiny"]
    load_bundle(spamguard_home / "models" / "tiny")  # intact
    registry.install(tiny_bundle, replace=True)
    assert _models(spamguard_home) == ["tiny"]


def test_install_name_is_the_name_verdicts_print(tiny_bundle: Path, spamguard_home: Path) -> None:
    """Before: `--name` named the folder, while verdicts and headers printed the bundle's own name."""
    code, out, _ = _install(tiny_bundle, "--name", "office-v2")
    assert code == 0 and out.startswith("installed office-v2 (default) at ")
    manifest = json.loads((spamguard_home / "models" / "office-v2" / MANIFEST).read_text())
    assert manifest["name"] == "office-v2"
    result = CliRunner().invoke(main, ["check"], input="hello there")
    assert result.stdout.endswith(" model=office-v2\n")
    assert (tiny_bundle / MANIFEST).read_text().count('"name": "tiny"') == 1  # the source is left as it was


def test_models_list_escapes_names_made_by_hand(tiny_bundle: Path, spamguard_home: Path) -> None:
    """A folder put into the models dir by hand with a newline in its name cannot forge a listing line."""
    registry.install(tiny_bundle)
    shutil.copytree(spamguard_home / "models" / "tiny", spamguard_home / "models" / "x\n* forged")
    lines = CliRunner().invoke(main, ["models"]).stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("* tiny ") and lines[1].startswith("  'x\\n* forged'  threshold 0.5000")


def test_a_model_installed_meanwhile_under_the_same_name_is_kept(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, spamguard_home: Path
) -> None:
    real = Bundle.copy_verified

    def racing(self: Bundle, name: str, target: Path) -> None:
        if not (spamguard_home / "models" / "tiny").exists():
            (spamguard_home / "models" / "tiny").mkdir()
            (spamguard_home / "models" / "tiny" / "theirs").write_text("another install won the race")
        real(self, name, target)

    monkeypatch.setattr(Bundle, "copy_verified", racing)
    with pytest.raises(BundleError, match=r"^a model named 'tiny' is already installed"):
        registry.install(tiny_bundle)
    assert _models(spamguard_home) == ["tiny"] and _installed_files(spamguard_home, "tiny") == ["theirs"]
