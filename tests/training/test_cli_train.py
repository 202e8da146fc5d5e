"""`spamguard train` end to end on the real SMS file, and its one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spamguard import registry
from spamguard.bundle import load_bundle
from spamguard.classifier import Classifier
from spamguard.cli import main
from spamguard.message_text import TEXT_VERSION
from spamguard.metrics import binary_metrics
from spamguard.paths import datasets_dir
from spamguard.tokenizer import load_encoding
from spamguard.training import public_data
from spamguard.training.package import onnx_scores
from spamguard.training.pipeline import tokenize
from spamguard.training.sources import Sources, read_splits

from conftest import BPE_DIR, MAIL_DIR, SMS_FILE
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
    assert result.stderr == ""  # not a terminal: no progress bars, the log has one line per step instead
    assert (
        "split 70/10/20 by kind and label (seed 123): sms: train 380 (330 ham, 50 spam), validation 54 (47 "
        "ham, 7 spam), test 110 (95 ham, 15 spam)"
    ) in result.stdout
    parity = re.search(r"in one padded batch: max \|Δlogit\| = (\S+)", result.stdout)
    assert parity and float(parity.group(1)) <= 1e-4
    assert re.search(r"int8: .* verdicts agree with fp32 on \d+\.\d\d% of the 110 test messages", result.stdout)

    assert registry.default_name() == "tiny-sms"
    bundle = load_bundle(registry.resolve())  # verifies every sha256
    m = bundle.manifest
    assert (m["name"], m["threshold"], m["max_tokens"], m["base_model"]) == ("tiny-sms", 0.5, 48, "gpt2-tiny")
    assert m["thresholds"] == {"sms": {"threshold": 0.5, "unsure": None}}
    assert (m["threshold_choice"]["sms"]["method"], m["threshold_choice"]["sms"]["n_ham"]) == ("default", 47)
    assert m["training"]["epoch_rule"] == "accuracy"  # a fixed threshold: recall at it would reward flagging ham
    assert m["model_config"]["n_layer"] == 2 and m["model_config"]["n_embd"] == 32
    training = m["training"]
    assert (training["seed"], training["epochs"], training["trainable"], training["batch_size"]) == (
        123,
        1,
        "last-block",
        8,
    )
    cache = training["prefix_cache"]
    assert training["prefix_precision"] == "auto" and cache["used"] is True
    choice = cache["precision_choice"]
    assert (choice["requested"], choice["chosen"]) == ("auto", cache["precision"])
    assert f"prefix precision: {choice['chosen']} ({choice['reason']})" in result.stdout
    assert choice["probe"]["shape"] == [256, 32, 96] and choice["probe"]["fp32_s"] > 0
    assert training["seconds"]["train"] > 0 and training["split"]["test"] == {"ham": 95, "spam": 15}
    assert training["split_by_kind"] == {"sms": training["split"]} and list(training["class_weights"]) == ["sms"]
    assert m["export"]["parity_max_abs_logit_diff"] <= 1e-4
    agreement = m["metrics"]["int8_agreement"]
    assert 0.0 <= agreement <= 1.0 and ("int8" in m["models"]) == (agreement >= 0.995)
    for key in ("accuracy", "precision", "recall", "f1", "fpr", "tp", "fp", "tn", "fn"):
        assert key in m["metrics"]["test"] and key in m["metrics"]["test_int8"]
        assert m["metrics"]["test"][key] == m["metrics"]["by_kind"]["sms"]["test"][key]  # one kind: overall = sms
    png = bundle.path / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (bundle.path / "checkpoint.safetensors").stat().st_size > 0

    # the recorded test figures are those of the shipped model on the same seeded test split
    splits, _ = read_splits(Sources(data=SMS_FILE), 123, log=lambda _: None)
    test = tokenize(splits.test, load_encoding(bundle.encoder_json, bundle.vocab_bpe), 48)
    scores = onnx_scores(bundle.model_path("fp32"), test.token_lists)
    assert binary_metrics(test.labels, scores, 0.5) == pytest.approx(m["metrics"]["by_kind"]["sms"]["test"])


def test_missing_data_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tsv"
    result = invoke("--data", str(missing), "--weights", "random", "--tokenizer", str(BPE_DIR))
    assert error_line(result) == f"Error: no data at {missing}: give an SMS TSV file or a folder with ham/ and spam/"


@pytest.mark.parametrize("command", ["train", "distill"])
def test_a_nan_clipping_norm_is_refused_before_anything_runs(command: str, tmp_path: Path) -> None:
    """click's range check lets NaN through (every comparison with it is false): refused by the option itself."""
    args = [command, *([str(tmp_path)] if command == "distill" else []), "--max-grad-norm", "nan"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: Invalid value for '--max-grad-norm': must be a number, not NaN"


def test_malformed_data_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("ham\tfine\nspam\talso fine\nhams without a tab\n")
    result = invoke("--data", str(bad), "--weights", "random", "--tokenizer", str(BPE_DIR))
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
        "once, or pass --base FOLDER (a local GPT-2 folder), or train from scratch with --weights random "
        "--tokenizer DIR"
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


def test_the_cli_defaults_are_the_recipes() -> None:
    """One definition of each training default (`training/defaults.py`): `train --help` shows what
    `TrainSettings()` uses, and the CLI module still loads without torch."""
    from spamguard.cli.train import train
    from spamguard.training.recipe import TrainSettings

    defaults = {param.name: param.default for param in train.params}
    recipe = TrainSettings()
    for name in ("trainable", "epochs", "batch_size", "lr", "seed"):
        assert defaults[name] == getattr(recipe, name), name
    probe = "import sys, spamguard.cli.train; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"


def test_prefix_precision_has_its_own_name() -> None:
    result = invoke("--precision", "fp32")
    assert result.exit_code == 2
    assert "No such option '--precision'. Did you mean '--prefix-precision'?" in result.stderr
    result = invoke("--prefix-precision", "fp16")
    assert result.exit_code == 2
    assert "Invalid value for '--prefix-precision': 'fp16' is not one of 'auto', 'fp32', 'bf16'." in result.stderr


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
    result = invoke(
        *common,
        *("--tokenizer", str(BPE_DIR), "--epochs", "1", "--threads", "1", "--prefix-precision", "bf16"),
        *("--out", f"{tmp_path}/b"),
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert "prefix precision: bf16 (as asked)\n" in result.stdout
    bundle = load_bundle(tmp_path / "b")
    assert bundle.manifest["base_model"] == "small" and bundle.manifest["training"]["weights"] == "random"
    assert bundle.manifest["text_version"] == TEXT_VERSION
    # the committed SMS fixture: every training ham is Latin (a few have no letters at all)
    trained_ham = bundle.manifest["training"]["split_by_kind"]["sms"]["train"]["ham"]
    assert set(bundle.fields["ham_scripts"]) == {"sms"} and set(bundle.fields["ham_scripts"]["sms"]) == {"LATIN"}
    assert trained_ham - 5 <= bundle.fields["ham_scripts"]["sms"]["LATIN"] <= trained_ham
    assert registry.default_name() == "b"  # installed from --out under the folder's name
    assert np.isfinite(bundle.manifest["metrics"]["test"]["accuracy"])


def closed_port_url() -> str:
    """A loopback address nothing listens on: every connection is refused at once, as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> str:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    url = closed_port_url()
    monkeypatch.setattr(public_data, "SMS_URL", f"{url}/sms.zip")
    monkeypatch.setattr(public_data, "SPAMASSASSIN_URL", f"{url}/corpus/")
    return url


def test_offline_every_missing_download_is_named_in_one_line(offline: str, tmp_path: Path) -> None:
    url = offline
    refused = "[Errno 111] Connection refused"
    sms = (
        f"the SMS Spam Collection: cannot download {url}/sms.zip ({refused}); instead, pass --data FILE (lines "
        "ham|spam<TAB>text), or point $SPAMGUARD_DATA at a copy"
    )
    mail = (
        f"the SpamAssassin public corpus: cannot download {url}/corpus/20030228_easy_ham.tar.bz2 ({refused}); "
        "instead, pass --ham DIR and --spam DIR, or point $SPAMGUARD_DATA at a copy"
    )
    weights = (
        "cannot download openai-community/gpt2 and it is not cached (LocalEntryNotFoundError): go online once, or "
        "pass --base FOLDER (a local GPT-2 folder), or train from scratch with --weights random --tokenizer DIR"
    )
    result = invoke("--out", str(tmp_path / "model"))
    assert (result.exit_code, result.stderr) == (
        1,
        f"Error: 3 things training needs are missing: (1) {sms} (2) {mail} (3) {weights}\n",
    )
    assert not (tmp_path / "model").exists() and not datasets_dir().exists()  # nothing half-downloaded

    tokenizer = (
        "cannot download the tokenizer files of openai-community/gpt2: offline, --weights random with a hub name "
        "needs --tokenizer DIR (a folder with encoder.json and vocab.bpe)"
    )
    missing = tmp_path / "Maildir"
    result = invoke("--weights", "random", "--ham", str(missing), "--spam", str(tmp_path))
    assert result.stderr == (
        f"Error: 2 things training needs are missing: (1) mail source not found: {missing} (2) {tokenizer}\n"
    )
    result = invoke("--weights", "random", "--tokenizer", str(BPE_DIR), "--data", str(tmp_path / "nope.tsv"))
    assert result.stderr == (
        f"Error: no data at {tmp_path / 'nope.tsv'}: give an SMS TSV file or a folder with ham/ and spam/\n"
    )


@pytest.mark.slow
def test_train_on_both_kinds_with_a_threshold_per_kind(tmp_path: Path, one_thread: object) -> None:
    sms = tmp_path / "sms.tsv"
    sms.write_text("\n".join(SMS_FILE.read_text(encoding="utf-8").splitlines()[:150]) + "\n", encoding="utf-8")
    ham, spam = tmp_path / "ham", tmp_path / "spam"
    for folder, source, n in ((ham, MAIL_DIR / "ham", 24), (spam, MAIL_DIR / "spam", 14)):
        folder.mkdir()
        for mail_file in sorted(source.iterdir())[:n]:
            (folder / mail_file.name).write_bytes(mail_file.read_bytes())
    base = tmp_path / "tiny-2x32"
    base.mkdir()
    (base / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64})
    )
    out = tmp_path / "bundle"
    result = invoke(
        *("--base", str(base), "--weights", "random", "--tokenizer", str(BPE_DIR), "--trainable", "all"),
        *("--data", str(sms), "--ham", str(ham), "--spam", str(spam)),
        *("--max-fpr", "mail=0", "--threshold", "sms=0.6", "--unsure", "sms=0.4,0.9"),
        *("--epochs", "1", "--max-tokens", "32", "--threads", "1", "--lr", "1e-3", "--out", str(out), "--no-install"),
        *("--lr-schedule", "cosine", "--max-grad-norm", "1", "--augment-leetspeak", "0.5"),
    )
    assert result.exit_code == 0, result.output + result.stderr
    m = load_bundle(out).manifest
    assert (m["training"]["lr_schedule"], m["training"]["max_grad_norm"]) == ("cosine", 1.0)
    assert m["training"]["augment_leetspeak"] == 0.5 and "leetspeak copies of the" in result.output
    splits, _ = read_splits(Sources(data=sms, ham=(ham,), spam=(spam,)), 123, log=lambda _: None)
    assert m["training"]["split_by_kind"] == splits.counts_by_kind() and list(splits.counts_by_kind()) == [
        "mail",
        "sms",
    ]
    assert set(m["training"]["class_weights"]) == {"mail", "sms"}
    assert m["thresholds"]["sms"] == {"threshold": 0.6, "unsure": [0.4, 0.9]}
    assert m["threshold_choice"]["mail"]["method"] == "max_fpr" and m["threshold_choice"]["mail"]["fp"] == 0
    sms_choice = m["threshold_choice"]["sms"]  # a fixed threshold: recorded with its validation figures
    assert (sms_choice["method"], sms_choice["threshold"], sms_choice["unsure"]["low"]) == ("threshold", 0.6, 0.4)
    assert sms_choice["n_ham"] == splits.counts_by_kind()["sms"]["validation"]["ham"]
    assert m["threshold"] == max(m["thresholds"]["mail"]["threshold"], 0.6)
    assert m["training"]["epoch_rule"] == "accuracy"  # SMS's threshold is fixed

    # each kind's test figures are the exported model's at that kind's threshold; overall sums their counts
    clf = Classifier.load(out, precision="fp32")
    for kind in ("mail", "sms"):
        test = [e for e in splits.test if e.kind == kind]
        scores = clf.score_texts(e.text for e in test)
        expected = binary_metrics([e.label for e in test], scores, m["thresholds"][kind]["threshold"])
        assert m["metrics"]["by_kind"][kind]["test"] == pytest.approx(expected)
        line = f"test fp32 {kind} (threshold {m['thresholds'][kind]['threshold']:.3g}): accuracy "
        assert line in result.stdout
    overall = m["metrics"]["test"]
    assert overall["tp"] == sum(m["metrics"]["by_kind"][k]["test"]["tp"] for k in ("mail", "sms"))
    assert "test fp32 overall: accuracy " in result.stdout and "test int8 overall: accuracy " in result.stdout
