"""`spamguard distill` end to end on a tiny teacher trained by `spamguard train`: the bundle rewritten as a new
version with every hash valid and the teacher's files as they were, unlabeled mail deduplicated against the
held-out parts, the student's figures in the manifest; and every failure (other data, bad settings, a broken
copy, a failed exchange) a line that leaves the bundle as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spamguard import bundle as bundle_module
from spamguard.bundle import MANIFEST, load_bundle, rewrite_bundle
from spamguard.classifier import Classifier
from spamguard.cli import main
from spamguard.errors import BundleError
from spamguard.training.distill import ScoredPart, StudentData, StudentSettings, soft_targets, train_student
from spamguard.training.errors import TrainingError
from spamguard.training.sources import Sources, read_splits

from conftest import BPE_DIR, MAIL_DIR, SMS_FILE

TINY_STUDENT = ("--layers", "1", "--width", "16", "--heads", "1", "--epochs", "1", "--threads", "1")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    lines = SMS_FILE.read_text(encoding="utf-8").splitlines()[:200]
    (root / "sms.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "sms.tsv"


def _data_args(sms: Path) -> list[str]:
    return ["--data", str(sms), "--ham", str(MAIL_DIR / "ham"), "--spam", str(MAIL_DIR / "spam")]


@pytest.fixture(scope="module")
def teacher(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 x 32 GPT-2 trained for one epoch on 200 SMS and the fixture mail, both kinds (about 20 s)."""
    root = tmp_path_factory.mktemp("teacher")
    (root / "base").mkdir()
    config = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}
    (root / "base" / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(
        main,
        [
            *("train", "--base", str(root / "base"), "--weights", "random", "--tokenizer", str(BPE_DIR)),
            *("--trainable", "all", "--epochs", "1", "--max-tokens", "64", "--threads", "1", "--lr", "1e-3"),
            *(*_data_args(data), "--out", str(root / "teacher"), "--no-install"),
        ],
    )
    assert result.exit_code == 0, result.output
    return root / "teacher"


def _copy(teacher: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(teacher, tmp_path / "bundle"))


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _distill(bundle: Path, *args: str) -> object:
    return CliRunner().invoke(main, ["distill", str(bundle), *args])


def _leftovers(bundle: Path) -> list[str]:
    return [p.name for p in bundle.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_distill_adds_a_student_as_a_new_bundle_version(
    teacher: Path, data: Path, tmp_path: Path, one_thread: object
) -> None:
    bundle = _copy(teacher, tmp_path)
    before = _snapshot(bundle)
    splits, _ = read_splits(
        Sources(data=data, ham=(MAIL_DIR / "ham",), spam=(MAIL_DIR / "spam",)), 123, log=lambda _: None
    )
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    texts = ["Meet me at the station at six", "URGENT claim your prize now txt WIN to 80086", "lunch tomorrow?"]
    texts += [splits.validation[0].text, splits.test[0].text, splits.train[0].text]  # left out: held out or known
    for i, text in enumerate(texts):
        (unlabeled / f"{i}.txt").write_text(text, encoding="utf-8")

    result = _distill(bundle, *_data_args(data), "--unlabeled", str(unlabeled), *TINY_STUDENT)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    assert "split checked against its manifest" in out and "unlabeled: 3 messages kept, 3 left out" in out
    assert "student export: parity with PyTorch max |Δlogit| = " in out
    assert f"bundle: {bundle} (new version with its student)" in out

    rewritten = load_bundle(bundle)  # every sha256 checked
    after = _snapshot(bundle)
    assert {name: digest for name, digest in after.items() if name in before and name != MANIFEST} == {
        name: digest for name, digest in before.items() if name != MANIFEST
    }  # the teacher's own files, byte for byte
    cascade = rewritten.manifest["cascade"]
    assert cascade["models"]["fp32"] == "student.onnx" and "student.onnx" in rewritten.files
    assert cascade["model_config"]["n_positions"] == rewritten.max_tokens == 64
    assert cascade["training"]["examples"] == {"labelled": len(splits.train), "unlabeled": 3, "unlabeled_left_out": 3}
    assert cascade["export"]["parity_max_abs_logit_diff"] <= 1e-4
    for kind in ("mail", "sms"):
        choice = cascade["choice"][kind]
        assert choice["disagreements"] <= choice["allowed_disagreements"] and choice["fp_cascade"] <= choice["fp_full"]
        band = rewritten.cascade.bands[kind]  # type: ignore[union-attr]
        assert band.low <= rewritten.threshold_for(kind) <= band.high
        test = cascade["metrics"]["test"][kind]
        assert test["n"] == sum(e.kind == kind for e in splits.test) and 0 <= test["share_full"] <= 1
    assert _leftovers(bundle) == []

    clf = Classifier.load(bundle)
    assert clf.cascade and {v.stage for v in clf.classify_texts([e.text for e in splits.test], "sms")} <= {
        "student",
        "full",
    }
    # distilled again (other settings): the new student replaces the old one, nothing of it stays behind
    again_args = ("--seed", "5", "--lr-schedule", "constant", "--max-grad-norm", "0")  # 0: no clipping
    result = _distill(bundle, *_data_args(data), *TINY_STUDENT, *again_args)
    assert result.exit_code == 0, result.output
    again = load_bundle(bundle)
    # no file of the old student is left; the int8 copy is kept only where it agrees with fp32 (a tiny one may not)
    int8 = {"student.int8.onnx", "student.int8.onnx.data"}
    assert set(again.files) - int8 == set(rewritten.files) - int8
    assert (int8 <= set(again.files)) is again.manifest["cascade"]["export"]["int8_included"]
    assert {p.name for p in bundle.iterdir()} == {*again.files, MANIFEST}
    recorded = again.manifest["cascade"]["training"]
    assert (recorded["seed"], recorded["lr_schedule"], recorded["max_grad_norm"]) == (5, "constant", None)
    assert (cascade["training"]["lr_schedule"], cascade["training"]["max_grad_norm"]) == ("cosine", 1.0)  # defaults
    assert _leftovers(bundle) == []


@pytest.mark.slow
def test_other_data_is_refused_and_the_bundle_left_as_it_was(teacher: Path, data: Path, tmp_path: Path) -> None:
    bundle = _copy(teacher, tmp_path)
    before = _snapshot(bundle)
    fewer = tmp_path / "fewer.tsv"
    fewer.write_text("\n".join(data.read_text(encoding="utf-8").splitlines()[:150]) + "\n", encoding="utf-8")
    result = _distill(bundle, "--data", str(fewer), "--ham", str(MAIL_DIR / "ham"), "--spam", str(MAIL_DIR / "spam"))
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: the data given is not what bundle was trained on (its split differs): give distill the data "
        "spamguard train had (--data, --ham, --spam, --corpus; none: the default data)\n"
    )
    result = _distill(bundle, *_data_args(data), "--width", "30", "--heads", "4")
    assert result.exit_code == 1
    assert result.stderr == "Error: the student's width 30 must be a multiple of its heads 4\n"
    assert _snapshot(bundle) == before and _leftovers(bundle) == []


def test_a_rewrite_that_fails_leaves_the_old_version(tiny_bundle: Path, tmp_path: Path, monkeypatch: object) -> None:
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    before = _snapshot(bundle)
    extra = tmp_path / "extra.onnx"
    extra.write_bytes(b"student")
    opened = load_bundle(bundle)

    def refuse(new: Path, target: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(bundle_module, "_exchange", refuse)  # type: ignore[attr-defined]
    with pytest.raises(OSError):
        rewrite_bundle(opened, add={"extra.onnx": extra}, fields={"note": 1})
    assert _snapshot(bundle) == before and _leftovers(bundle) == []
    monkeypatch.undo()  # type: ignore[attr-defined]

    (bundle / "vocab.bpe").write_bytes(b"swapped after the bundle was opened")
    with pytest.raises(BundleError, match=r"vocab\.bpe does not match its sha256"):
        rewrite_bundle(opened, add={"extra.onnx": extra}, fields={"note": 1})
    assert _leftovers(bundle) == [] and (bundle / "vocab.bpe").read_bytes().startswith(b"swapped")

    shutil.copy(tiny_bundle / "vocab.bpe", bundle / "vocab.bpe")
    rewritten = rewrite_bundle(opened, add={"extra.onnx": extra}, fields={"note": 1})
    assert rewritten.manifest["note"] == 1 and "extra.onnx" in load_bundle(bundle).files  # verified
    assert _leftovers(bundle) == []


def test_soft_targets_keep_the_teachers_ranking_at_the_extremes() -> None:
    p = np.array([0.0, 1e-20, 0.1, 0.5, 0.9, 1 - 1e-12, 1.0])
    soft = soft_targets(p, 2.0)
    assert soft[3] == 0.5 and np.all(np.diff(soft[1:-1]) > 0) and soft[0] > 0 and soft[-1] < 1
    assert soft_targets(np.array([0.9]), 1.0)[0] == pytest.approx(0.9)
    assert soft_targets(np.array([0.9]), 2.0)[0] == pytest.approx(0.75)  # sigmoid(ln 9 / 2) = 3 / 4


def _student(bundle: object, settings: StudentSettings) -> dict[str, object]:
    rng = np.random.default_rng(3)
    tokens = [rng.integers(0, 50256, int(n)).tolist() for n in rng.integers(1, 20, 16)]
    labels = rng.integers(0, 2, 16)
    data = StudentData(tokens, rng.random(16), labels, np.full(16, 0.3), np.ones(16, dtype=np.float32))
    validation = ScoredPart(tokens, labels, np.array(["sms"] * 16), rng.random(16))
    model, history, _ = train_student(data, validation, bundle, settings, log=lambda _line: None)  # type: ignore[arg-type]
    assert len(history) == settings.epochs
    return model.state_dict()


def _student_moved(bundle_path: Path, settings: StudentSettings) -> float:
    """How far the student's weights move in one short distillation: against the same seed's run at a rate too
    small to move them (train_student seeds its initialisation), the largest change of any weight."""
    bundle = load_bundle(bundle_path)
    start = _student(bundle, replace(settings, lr=1e-20, lr_schedule="constant", max_grad_norm=None))
    return max(float((p - start[n]).abs().max()) for n, p in _student(bundle, settings).items())  # type: ignore[operator]


def test_the_students_schedule_and_clipping_reach_its_optimizer(tiny_bundle: Path, one_thread: object) -> None:
    """As for the full model's loop (test_recipe): clipped to a norm of 1e-12, Adam's steps shrink to almost
    nothing; a cosine schedule's first epoch (warm-up, then decay) moves the weights less than the constant rate."""
    base = StudentSettings(
        n_layer=1,
        n_head=1,
        n_embd=16,
        epochs=1,
        batch_size=4,
        lr=1e-2,
        weight_decay=0.0,
        seed=0,
        lr_schedule="constant",
        max_grad_norm=None,
    )
    free = _student_moved(tiny_bundle, base)
    assert free > 1e-3
    assert _student_moved(tiny_bundle, replace(base, max_grad_norm=1e-12)) < free / 100
    assert _student_moved(tiny_bundle, replace(base, lr_schedule="cosine")) < free
    for bad, message in (("max_grad_norm", "--max-grad-norm must be above 0"), ("lr_schedule", "unknown")):
        value = 0.0 if bad == "max_grad_norm" else "linear"
        with pytest.raises(TrainingError, match=message):
            _student_moved(tiny_bundle, replace(base, **{bad: value}))
