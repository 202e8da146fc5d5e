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
    assert set(bundle.manifest["files"]) == {
        "model.onnx",
        "model.int8.onnx",
        "model.int8.onnx.data",  # the int8 weights beside the graph: loaded without a protobuf parse
        "encoder.json",
        "vocab.bpe",
    }
    assert bundle.model_files("int8") == ["model.int8.onnx", "model.int8.onnx.data"]
    assert bundle.model_files("fp32") == ["model.onnx"]


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


def test_missing_or_damaged_weights_file(tiny_bundle: Path, tmp_path: Path) -> None:
    from spamguard import Classifier

    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    with open(copy / "model.int8.onnx.data", "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    with pytest.raises(BundleError, match=r"model\.int8\.onnx\.data does not match its sha256 \(reinstall"):
        Classifier.load(copy)
    (copy / "model.int8.onnx.data").unlink()
    with pytest.raises(BundleError, match=r"model\.int8\.onnx\.data is missing \(reinstall the model\)$"):
        load_bundle(copy, verify=False)


def test_write_bundle_keeps_a_weights_file_with_its_graph(tiny_bundle: Path, tmp_path: Path) -> None:
    from spamguard.bundle import write_bundle

    renamed = tmp_path / "other.onnx"
    shutil.copy(tiny_bundle / "model.int8.onnx", renamed)
    shutil.copy(tiny_bundle / "model.int8.onnx.data", tmp_path / "other.onnx.data")
    with pytest.raises(BundleError, match=r"keeps its weights in other\.onnx\.data: export it as model\.int8\.onnx"):
        write_bundle(
            tmp_path / "out",
            models={"fp32": tiny_bundle / "model.onnx", "int8": renamed},
            encoder_json=tiny_bundle / "encoder.json",
            vocab_bpe=tiny_bundle / "vocab.bpe",
            manifest={"name": "x", "threshold": 0.5, "max_tokens": 8},
        )
    assert not (tmp_path / "out").exists()


def test_per_kind_thresholds_read_with_their_fallback(tiny_bundle: Path, tmp_path: Path) -> None:
    """A kind's record needs its threshold; its unsure band may be left out, and figures beside them (training
    may record what each threshold gave on validation) are left alone. A kind left out uses the top level."""
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["unsure"] = [0.4, 0.6]
    manifest["thresholds"] = {"mail": {"threshold": 0.25, "validation": {"fpr": 0.004}}}
    (copy / MANIFEST).write_text(json.dumps(manifest))
    bundle = load_bundle(copy)
    assert (bundle.threshold_for("mail"), bundle.unsure_for("mail")) == (0.25, None)
    assert (bundle.threshold_for("sms"), bundle.unsure_for("sms")) == (0.5, (0.4, 0.6))
    with pytest.raises(ValueError, match="kind must be one of mail, sms, not 'fax'"):
        bundle.threshold_for("fax")
