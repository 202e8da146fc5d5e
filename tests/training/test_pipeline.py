"""The job's steps that decide before any training: where the tokenizer comes from, where the bundle goes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from spamguard.bundle import NAME_PATTERN, load_bundle
from spamguard.errors import BundleError, TokenizerError
from spamguard.paths import models_dir
from spamguard.training.package import Exported, KindThreshold, fixed_threshold, package, parity_batch
from spamguard.training.pipeline import Job, plan_output, tokenizer_files
from spamguard.training.weights import BaseModel

from conftest import BPE_DIR


def test_tokenizer_dir_with_openai_names(tmp_path: Path) -> None:
    assert tokenizer_files(Job(tokenizer=BPE_DIR), None) == (BPE_DIR / "encoder.json", BPE_DIR / "vocab.bpe")


def test_tokenizer_dir_with_hub_names(tmp_path: Path) -> None:
    shutil.copyfile(BPE_DIR / "encoder.json", tmp_path / "vocab.json")
    shutil.copyfile(BPE_DIR / "vocab.bpe", tmp_path / "merges.txt")
    assert tokenizer_files(Job(tokenizer=tmp_path), None) == (tmp_path / "vocab.json", tmp_path / "merges.txt")


def test_tokenizer_dir_without_the_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError) as info:
        tokenizer_files(Job(tokenizer=tmp_path), None)
    assert str(info.value) == (
        f"--tokenizer {tmp_path}: expected a folder with encoder.json and vocab.bpe (or vocab.json and merges.txt)"
    )


def test_base_folder_without_tokenizer_needs_the_option(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError) as info:
        tokenizer_files(Job(base=str(tmp_path), weights="random"), BaseModel("small", tmp_path))
    assert str(info.value) == (
        f"{tmp_path} has no vocab.json and merges.txt: pass --tokenizer DIR (a folder with encoder.json and vocab.bpe)"
    )


def test_random_weights_with_hub_name_offline_needs_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TokenizerError) as info:
        tokenizer_files(Job(base="gpt2", weights="random"), None)
    assert str(info.value) == (
        "cannot download the tokenizer files of openai-community/gpt2: offline, --weights random with a hub name "
        "needs --tokenizer DIR (a folder with encoder.json and vocab.bpe)"
    )


def test_default_output_is_a_new_folder_in_the_models_dir() -> None:
    out = plan_output(Job(base="gpt2", weights="random"))
    assert out.path.parent == models_dir() and out.in_models_dir
    assert out.name.startswith("gpt2-random-") and out.path.name == out.name


def test_output_named_after_the_out_folder(tmp_path: Path) -> None:
    out = plan_output(Job(out=tmp_path / "my-model"))
    assert (out.path, out.name, out.in_models_dir) == (tmp_path / "my-model", "my-model", False)


@pytest.mark.parametrize("folder", ["my model", "-dash-first", "x" * 65, ".hidden"])
def test_an_out_folder_that_is_no_model_name_gets_the_default_name(tmp_path: Path, folder: str) -> None:
    """The folder's name is taken only when it is a valid model name (`bundle.NAME_PATTERN`, the one rule)."""
    out = plan_output(Job(base="gpt2", weights="random", out=tmp_path / folder))
    assert out.path == tmp_path / folder and out.name.startswith("gpt2-random-")
    assert NAME_PATTERN.fullmatch(out.name)


def test_installed_name_clash_is_found_before_training(tmp_path: Path) -> None:
    (models_dir() / "taken").mkdir(parents=True)
    with pytest.raises(BundleError, match="a model named 'taken' is already installed"):
        plan_output(Job(out=tmp_path / "x", name="taken"))
    assert plan_output(Job(out=tmp_path / "x", name="taken", install=False)).name == "taken"


def test_parity_batch_spans_the_lengths() -> None:
    tokens = [[1] * n for n in (9, 1, 40, 3, 3, 17, 256, 2)]
    batch = parity_batch(tokens, n=4)
    assert sorted(len(t) for t in batch) == [1, 3, 17, 256]
    assert len(parity_batch(tokens[:2], n=16)) == 2


def test_fixed_threshold_rule() -> None:
    assert fixed_threshold(0.7)("sms", np.array([0, 1]), np.array([0.1, 0.9])) == (0.7, None)


def test_package_records_a_threshold_per_kind_and_the_fallback(tmp_path: Path) -> None:
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"stand-in: write_bundle copies and hashes, the runtime tests load real models")
    mail_choice = {"kind": "mail", "method": "max_fpr", "unsure": {"low": 0.2, "high": 0.8}}
    exported = Exported(
        fp32=onnx_file,
        int8=None,
        thresholds={
            "mail": KindThreshold(0.31, (0.2, 0.8), mail_choice),
            "sms": KindThreshold(0.5, None, None),
        },
        parity=3e-7,
        parity_lengths=[1, 40],
        agreement=0.98,
        metrics={"int8_agreement": 0.98},
    )
    bundle = package(
        tmp_path / "b",
        exported,
        encoder_json=BPE_DIR / "encoder.json",
        vocab_bpe=BPE_DIR / "vocab.bpe",
        manifest={"name": "b", "max_tokens": 64},
    )
    m = load_bundle(bundle.path).manifest
    assert m["thresholds"] == {
        "mail": {"threshold": 0.31, "unsure": [0.2, 0.8]},
        "sms": {"threshold": 0.5, "unsure": None},
    }
    assert (m["threshold"], m["unsure"]) == (0.5, [0.2, 0.8])  # the strictest: sms's threshold, the widest band
    assert m["threshold_choice"] == {"mail": mail_choice}
    assert m["models"] == {"fp32": "model.onnx"} and m["export"]["int8_included"] is False
    assert m["export"]["parity_max_abs_logit_diff"] == 3e-7
    loaded = load_bundle(bundle.path)
    assert (loaded.threshold_for("mail"), loaded.unsure_for("mail")) == (0.31, (0.2, 0.8))
    assert (loaded.threshold_for("sms"), loaded.unsure_for("sms")) == (0.5, None)
