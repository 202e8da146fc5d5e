from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spamguard.bundle import MANIFEST, load_bundle
from spamguard.errors import BundleError


def test_tiny_bundle_loads_and_verifies(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert bundle.name == "tiny" and bundle.has_int8
    assert bundle.model_path().name == "model.int8.onnx"
    assert bundle.model_path("fp32").name == "model.onnx"
    assert set(bundle.manifest["files"]) == {"model.onnx", "model.int8.onnx", "encoder.json", "vocab.bpe"}


def test_tampered_file_is_named(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    with open(copy / "vocab.bpe", "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match=r"vocab\.bpe does not match its sha256"):
        load_bundle(copy)


def test_too_new_format(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format_version"] = 99
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99, this spamguard reads up to 1: upgrade"):
        load_bundle(copy)
