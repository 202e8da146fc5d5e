"""`spamguard train` on mail: a Maildir, an mbox and the feedback corpus mixed, the threshold chosen by
false-positive rate on validation, and the option errors that must come before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from own_mail_helpers import make_maildir, make_mbox

from spamguard.bundle import load_bundle
from spamguard.classifier import Classifier
from spamguard.cli import main
from spamguard.corpus import corpus_dir, learn
from spamguard.datasets import HAM
from spamguard.metrics import threshold_for_fpr
from spamguard.training.imbalance import class_weights
from spamguard.training.sources import Sources, read_splits

from conftest import BPE_DIR, MAIL_DIR

N_HAM, N_SPAM = 14, 11  # the fewest that leave both classes in a 10% validation and a 20% test split


def invoke(*args: str) -> object:
    return CliRunner().invoke(main, ["train", *args])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "tiny-2x32"
    folder.mkdir()
    config = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.slow
def test_train_on_maildir_mbox_and_corpus(base: Path, tmp_path: Path, one_thread: object) -> None:
    ham_mails = sorted((MAIL_DIR / "ham").iterdir())[-N_HAM:]  # the last ones: no two share a text
    spam_mails = sorted((MAIL_DIR / "spam").iterdir())[:N_SPAM]
    inbox = make_maildir(tmp_path / "Maildir", ham_mails)
    junk = make_mbox(tmp_path / "junk.mbox", [*spam_mails, spam_mails[0]])  # one repeated
    learn(spam_mails[1].read_bytes(), "spam")  # a correction that repeats a message of the mbox
    learn(sorted((MAIL_DIR / "ham").iterdir())[0].read_bytes(), "ham")  # a ham mail not in the Maildir

    out = tmp_path / "bundle"
    result = invoke(
        *("--base", str(base), "--weights", "random", "--tokenizer", str(BPE_DIR), "--trainable", "all"),
        *("--ham", str(inbox), "--spam", str(junk), "--corpus", "--max-fpr", "0", "--unsure", "0.2,0.9"),
        *("--epochs", "1", "--max-tokens", "32", "--threads", "1", "--lr", "1e-3", "--out", str(out)),
        "--no-install",
    )
    assert result.exit_code == 0, result.output + result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f"ham {corpus_dir() / 'ham'} (corpus): read 1, used 1, duplicates 0, conflicts 0, skipped 0",
        f"spam {corpus_dir() / 'spam'} (corpus): read 1, used 1, duplicates 0, conflicts 0, skipped 0",
        f"ham {inbox} (maildir): read {N_HAM}, used {N_HAM}, duplicates 0, conflicts 0, skipped 0",
        f"spam {junk} (mbox): read {N_SPAM + 1}, used {N_SPAM - 1}, duplicates 2, conflicts 0, skipped 0",
    ]
    assert lines[4].startswith(f"data: {N_HAM + N_SPAM + 1} messages after removing repeated texts (read in ")
    assert "split 70/10/20 by kind and label (seed 123): mail: train " in lines[4]
    assert any(
        line.startswith("imbalance: loss weights per kind and label from the training split: mail ham ")
        for line in lines
    )

    bundle = load_bundle(out)
    m = bundle.manifest
    splits, _ = read_splits(Sources(ham=(inbox,), spam=(junk,), corpus=True), 123, log=lambda _: None)  # again
    weights = class_weights(splits.train)
    assert m["training"]["class_weights"] == {"mail": pytest.approx(list(weights["mail"]))}
    assert m["training"]["split"] == splits.counts() and list(m["training"]["split_by_kind"]) == ["mail"]
    assert all(c["ham"] and c["spam"] for c in splits.counts().values())
    assert f"maildir {inbox} (ham, {N_HAM} used)" in m["training"]["data"]

    # the threshold is the one --max-fpr 0 gives on the validation scores of the model the bundle serves
    # (int8 when it is included), exactly as the runtime computes them: no validation ham is spam at run time
    clf = Classifier.load(out)
    assert clf.precision == ("int8" if "int8" in m["models"] else "fp32")
    labels = np.array([e.label for e in splits.validation])
    scores = np.array(clf.score_texts(e.text for e in splits.validation))
    choice = m["threshold_choice"]["mail"]
    assert m["thresholds"]["mail"]["threshold"] == m["threshold"] == threshold_for_fpr(labels, scores, 0.0)
    assert not any(clf.verdict(s, "mail").is_spam for s in scores[labels == HAM])
    assert (choice["method"], choice["target_fpr"], choice["fpr"], choice["fp"]) == ("max_fpr", 0.0, 0.0, 0)
    assert choice["n_ham"] == int(np.sum(labels == HAM)) and choice["split"] == "validation"
    low, high = m["thresholds"]["mail"]["unsure"]
    assert [low, high] == m["unsure"]
    assert low <= m["threshold"] <= high and low <= 0.2 and high >= 0.9
    assert m["metrics"]["validation"]["fp"] == m["metrics"]["by_kind"]["mail"]["validation"]["fp"] == 0
    expected = f"mail: threshold {m['threshold']:.6g} (max FPR 0; on validation: FPR 0 on {choice['n_ham']} ham"
    assert expected in result.stdout
    # every kind's threshold bounded by an FPR: the kept epoch is the one with the most validation recall at it
    assert m["training"]["epoch_rule"] == "recall"
    assert f"best epoch: {m['training']['best_epoch']} by recall (validation accuracy " in result.stdout


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--max-fpr", "0.1", "--threshold", "0.5"], "give --max-fpr or --threshold, not both"),
        (["--max-fpr", "1"], "--max-fpr must be at least 0 and below 1, got 1"),
        (["--max-fpr", "-0.01"], "--max-fpr must be at least 0 and below 1, got -0.01"),
        (["--threshold", "1.5"], "--threshold must be between 0 and 1, got 1.5"),
        (["--unsure", "0.3"], "--unsure expects LOW,HIGH (two numbers such as 0.3,0.9), got '0.3'"),
        (["--unsure", "low,high"], "--unsure expects LOW,HIGH (two numbers such as 0.3,0.9), got 'low,high'"),
        (["--unsure", "0.9,0.3"], "the unsure band needs 0 <= LOW < HIGH <= 1, got 0.9,0.3"),
        (
            ["--unsure", "0.6,0.9"],
            "the threshold 0.5 lies outside the unsure band 0.6,0.9: choose a band that contains it",
        ),
        (
            ["--threshold", "0.95", "--unsure", "0.3,0.9"],
            "the threshold 0.95 lies outside the unsure band 0.3,0.9: choose a band that contains it",
        ),
        (["--max-fpr", "email=0.1"], "--max-fpr email=0.1: unknown kind 'email' (use mail or sms)"),
        (["--threshold", "sms=0.5", "--threshold", "sms=0.6"], "--threshold is given twice for sms"),
        (["--max-fpr", "0.1", "--max-fpr", "0.2"], "--max-fpr is given twice for every kind"),
        (["--threshold", "sms=high"], "--threshold expects a number or KIND=NUMBER, got 'high'"),
        (["--max-fpr", "sms=0.1", "--threshold", "sms=0.5"], "sms: give --max-fpr or --threshold, not both"),
        (["--max-fpr", "mail=1.5"], "mail: --max-fpr must be at least 0 and below 1, got 1.5"),
        (
            ["--unsure", "mail=0.6,0.9"],
            "mail: the threshold 0.5 lies outside the unsure band 0.6,0.9: choose a band that contains it",
        ),
    ],
)
def test_threshold_options_are_checked_before_anything_else(args: list[str], error: str) -> None:
    # an unknown base and a missing mail folder would fail too, but only after the options were checked
    result = invoke("--base", "gpt3", "--ham", "/nonexistent/Maildir", *args)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {error}\n"


def test_mail_source_errors(tmp_path: Path) -> None:
    missing = tmp_path / "Maildir"
    offline = ("--weights", "random", "--tokenizer", str(BPE_DIR))
    result = invoke("--ham", str(missing), "--spam", str(tmp_path), *offline)
    assert (result.exit_code, result.stderr) == (1, f"Error: mail source not found: {missing}\n")
    ham = tmp_path / "ham"
    ham.mkdir()
    (ham / "1.eml").write_bytes(sorted((MAIL_DIR / "ham").iterdir())[0].read_bytes())
    result = invoke("--ham", str(ham), *offline)
    assert result.stderr.splitlines()[-1] == (
        "Error: no spam to train on: add --spam PATH (a Maildir, an mbox or a folder of messages), --data FILE, "
        "or corrections with 'spamguard learn --spam'"
    )
    taken = tmp_path / "taken"
    taken.mkdir()
    result = invoke("--ham", str(ham), "--out", str(taken))
    assert result.stderr == f"Error: output directory already exists: {taken} (choose another --out or remove it)\n"
