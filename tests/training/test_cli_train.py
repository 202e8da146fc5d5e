"""`spamguard train` end to end on the real SMS file, and its one-line errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spamguard import registry
from spamguard.bundle import load_bundle
from spamguard.cli import main
from spamguard.datasets import read_sms_tsv
from spamguard.message_text import TEXT_VERSION
from spamguard.metrics import binary_metrics
from spamguard.tokenizer import load_encoding
from spamguard.training.package import onnx_scores
from spamguard.training.pipeline import make_splits, tokenize

from conftest import BPE_DIR, SMS_FILE
from hf_gpt2 import write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("base") / "gpt2-tiny")


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    """Enough messages for three non-empty splits, read in milliseconds."""
    lines = SMS_FILE.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "sms.tsv"
    path.write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
    return path


def invoke(*args: str) -> object:
    return CliRunner().invoke(main, ["train", *args])


def error_line(result: object) -> str:
    assert result.exit_code != 0, result.output
    return result.stderr.strip()


@pytest.mark.slow
def test_train_tiny_model_on_real_sms_file(checkpoint: Path, one_thread: object) -> None:
    result = invoke(
        *("--base", str(checkpoint), "--data", str(SMS_FILE), "--epochs", "1", "--max-tokens", "48"),
        *("--threads", "1", "--name", "tiny-sms"),
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert "split 70/10/20: train 914 (449 ham, 465 spam), validation 130 (71 ham, 59 spam)" in result.stdout
    parity = re.search(r"in one padded batch: max \|Δlogit\| = (\S+)", result.stdout)
    assert parity and float(parity.group(1)) <= 1e-4
    assert re.search(r"int8: .* verdicts agree with fp32 on \d+\.\d\d% of the 262 test messages", result.stdout)

    assert registry.default_name() == "tiny-sms"
    bundle = load_bundle(registry.resolve())  # verifies every sha256
    m = bundle.manifest
    assert (m["name"], m["threshold"], m["max_tokens"], m["base_model"]) == ("tiny-sms", 0.5, 48, "gpt2-tiny")
    assert m["model_config"]["n_layer"] == 2 and m["model_config"]["n_embd"] == 32
    training = m["training"]
    assert (training["seed"], training["epochs"], training["trainable"], training["batch_size"]) == (
        123,
        1,
        "last-block",
        8,
    )
    assert training["precision"] in ("fp32", "bf16") and training["prefix_cache"]["used"] is True
    assert training["seconds"]["train"] > 0 and training["split"]["test"] == {"ham": 133, "spam": 129}
    assert m["export"]["parity_max_abs_logit_diff"] <= 1e-4
    agreement = m["metrics"]["int8_agreement"]
    assert 0.0 <= agreement <= 1.0 and ("int8" in m["models"]) == (agreement >= 0.995)
    for key in ("accuracy", "precision", "recall", "f1", "fpr", "tp", "fp", "tn", "fn"):
        assert key in m["metrics"]["test"] and key in m["metrics"]["test_int8"]
    png = bundle.path / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (bundle.path / "checkpoint.safetensors").stat().st_size > 0

    # the recorded test figures are those of the shipped model on the same seeded test split
    splits = make_splits(read_sms_tsv(SMS_FILE), 123, log=lambda _: None)
    test = tokenize(splits.test, load_encoding(bundle.encoder_json, bundle.vocab_bpe), 48)
    scores = onnx_scores(bundle.model_path("fp32"), test.token_lists)
    assert binary_metrics(test.labels, scores, 0.5) == pytest.approx(m["metrics"]["test"])


def test_missing_data_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tsv"
    result = invoke("--data", str(missing), "--weights", "random")
    assert error_line(result) == f"Error: data file not found: {missing}"


def test_malformed_data_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("ham\tfine\nspam\talso fine\nhams without a tab\n")
    result = invoke("--data", str(bad))
    assert error_line(result) == (
        f"Error: {bad}:3: expected 'ham<TAB>text' or 'spam<TAB>text', got 'hams without a tab'"
    )


def test_unknown_base(small_data: Path) -> None:
    result = invoke("--base", "gpt3", "--data", str(small_data))
    assert error_line(result) == (
        "Error: unknown base model 'gpt3': use one of gpt2, gpt2-medium, gpt2-large, gpt2-xl or a folder in the "
        "Hugging Face layout"
    )


def test_offline_without_cached_weights(small_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    result = invoke("--base", "gpt2", "--data", str(small_data))
    assert error_line(result) == (
        "Error: cannot download openai-community/gpt2 and it is not cached (LocalEntryNotFoundError): go online "
        "once, or pass --base PATH (a local GPT-2 folder), or train from scratch with --weights random"
    )


def test_offline_random_weights_with_hub_name_need_tokenizer(small_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    result = invoke("--base", "gpt2", "--weights", "random", "--data", str(small_data))
    assert error_line(result) == (
        "Error: cannot download the tokenizer files of openai-community/gpt2: offline, --weights random with a hub "
        "name needs --tokenizer DIR (a folder with encoder.json and vocab.bpe)"
    )


def test_corrupt_safetensors(checkpoint: Path, small_data: Path, tmp_path: Path) -> None:
    base = Path(shutil.copytree(checkpoint, tmp_path / "corrupt"))
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = invoke("--base", str(base), "--data", str(small_data))
    expected = rf"Error: {re.escape(str(weights))} is not a readable safetensors file \(.+\)"
    assert re.fullmatch(expected, error_line(result))


def test_safetensors_that_do_not_match_the_config(checkpoint: Path, small_data: Path, tmp_path: Path) -> None:
    base = Path(shutil.copytree(checkpoint, tmp_path / "wider"))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps(config | {"n_embd": 64}))
    result = invoke("--base", str(base), "--data", str(small_data))
    assert error_line(result) == (
        f"Error: {base / 'model.safetensors'}: h.0.attn.c_attn.bias has shape (96,), the model expects (192,) "
        "(does config.json match the weights?)"
    )


def test_output_directory_exists(tmp_path: Path, small_data: Path) -> None:
    (tmp_path / "taken").mkdir()
    result = invoke("--out", str(tmp_path / "taken"), "--data", str(small_data))
    assert error_line(result) == (
        f"Error: output directory already exists: {tmp_path / 'taken'} (choose another --out or remove it)"
    )


def test_trainable_beyond_the_model(checkpoint: Path, small_data: Path) -> None:
    result = invoke("--base", str(checkpoint), "--data", str(small_data), "--trainable", "3")
    assert error_line(result) == (
        "Error: --trainable must be last-block, last-layer, all or a number of blocks from 1 to 2, not '3'"
    )


def test_trainable_that_is_no_spec() -> None:
    result = invoke("--trainable", "some")
    assert result.exit_code == 2
    assert "Invalid value for '--trainable': 'some' is not last-block, last-layer, all or a number" in result.stderr


def test_max_tokens_beyond_the_position_table(checkpoint: Path, small_data: Path) -> None:
    result = invoke("--base", str(checkpoint), "--data", str(small_data), "--max-tokens", "300")
    assert error_line(result) == "Error: --max-tokens must be between 1 and the model's 256 positions"


def test_random_weights_from_a_config_only_folder_with_tokenizer_option(
    checkpoint: Path, small_data: Path, tmp_path: Path, one_thread: object
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    shutil.copyfile(checkpoint / "config.json", small / "config.json")
    common = ("--base", str(small), "--weights", "random", "--data", str(small_data), "--max-tokens", "16")
    assert error_line(invoke(*common, "--out", str(tmp_path / "a"))) == (
        f"Error: {small} has no vocab.json and merges.txt: pass --tokenizer DIR (a folder with encoder.json and "
        "vocab.bpe)"
    )
    result = invoke(*common, "--tokenizer", str(BPE_DIR), "--epochs", "1", "--threads", "1", "--out", f"{tmp_path}/b")
    assert result.exit_code == 0, result.output + result.stderr
    bundle = load_bundle(tmp_path / "b")
    assert bundle.manifest["base_model"] == "small" and bundle.manifest["training"]["weights"] == "random"
    assert bundle.manifest["text_version"] == TEXT_VERSION
    assert registry.default_name() == "b"  # installed from --out under the folder's name
    assert np.isfinite(bundle.manifest["metrics"]["test"]["accuracy"])
