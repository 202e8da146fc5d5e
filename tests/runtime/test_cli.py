"""`spamguard check`, `models` and `eval` through click's CliRunner: exit codes and the exact lines people see."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from spamguard import Classifier
from spamguard.bundle import MANIFEST
from spamguard.cli import main
from spamguard.cli.check import combined_exit
from spamguard.metrics import binary_metrics

from conftest import MAIL_DIR, SMS_FILE

SMS = "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005."
NO_MODEL = "Error: no model installed: run 'spamguard train' or 'spamguard models install PATH', or pass --model PATH\n"


def run(*args: str, input: str | bytes | None = None) -> object:
    return CliRunner().invoke(main, list(args), input=input)


@pytest.fixture
def installed(tiny_bundle: Path) -> Path:
    result = run("models", "install", str(tiny_bundle))
    assert result.exit_code == 0, result.output
    return tiny_bundle


@pytest.fixture(scope="module")
def sms_score(tiny_bundle: Path) -> float:
    return Classifier.load(tiny_bundle).score(SMS)


def test_check_stdin_spam_and_ham_exit_codes(installed: Path, sms_score: float) -> None:
    spam = run("check", "--threshold", "0", input=SMS + "\n")
    assert spam.exit_code == 0
    assert spam.stdout == f"stdin: spam score={sms_score:.4f} threshold=0.0000 kind=sms model=tiny\n"
    ham = run("check", "--threshold", "1", input=SMS)
    assert ham.exit_code == 1 and ham.stdout.startswith("stdin: ham ")


def test_check_unsure_band_exits_2(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["unsure"] = [0.0, 1.0]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    result = run("check", "--model", str(copy), input=SMS)
    assert result.exit_code == 2 and " unsure " in result.stdout


def test_check_json_and_files(installed: Path, tmp_path: Path, sms_score: float) -> None:
    (tmp_path / "a.txt").write_text(SMS + "\n")
    mail = sorted((MAIL_DIR / "spam").iterdir())[0]
    result = run("check", "--json", "--threshold", "0", str(tmp_path / "a.txt"), str(mail))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0
    assert lines[0] == {"input": str(tmp_path / "a.txt"), "kind": "sms", "label": "spam", "score": sms_score,
                        "threshold": 0.0, "model": "tiny", "stage": "full", "reason": None}  # fmt: skip
    assert lines[1]["input"] == str(mail) and lines[1]["score"] == Classifier.load(installed).score(mail.read_bytes())
    assert lines[1]["kind"] == "mail"


def test_check_several_files_combine_exit_codes(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(SMS)
    missing = str(tmp_path / "nope.eml")
    result = run("check", str(tmp_path / "a.txt"), missing)
    assert result.exit_code == 3
    assert result.stderr == f"Error: cannot read {missing}: No such file or directory\n"
    assert result.stdout.startswith(f"{tmp_path / 'a.txt'}: ")
    as_json = run("check", "--json", missing)
    assert (
        as_json.stdout
        == json.dumps({"input": missing, "error": f"cannot read {missing}: No such file or directory"}) + "\n"
    )
    assert combined_exit([1, 1]) == 1 and combined_exit([1, 2, 1]) == 2 and combined_exit([2, 0, 1]) == 0
    assert combined_exit([0, 3]) == 3


def test_check_without_a_model() -> None:
    result = run("check", input=SMS)
    assert result.exit_code == 3 and result.stderr == NO_MODEL and result.stdout == ""


def test_check_usage_errors_exit_3(installed: Path) -> None:
    result = run("check", "--threshold", "2", input=SMS)
    assert result.exit_code == 3
    assert "Invalid value for '--threshold': 2.0 is not in the range 0.0<=x<=1.0." in result.stderr
    assert run("check", "--no-such-option").exit_code == 3


def test_check_model_problems_are_one_line(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    (copy / "model.int8.onnx").write_bytes(b"junk")
    result = run("check", "--model", str(copy), input=SMS)
    assert result.exit_code == 3
    assert result.stderr == (
        f"Error: corrupt bundle {copy}: model.int8.onnx does not match its sha256 (reinstall the model)\n"
    )
    assert run("check", "--precision", "fp32", "--model", str(copy), input=SMS).exit_code in (0, 1)  # fp32 is intact
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format_version"] = 7
    (copy / MANIFEST).write_text(json.dumps(manifest))
    result = run("check", "--model", str(copy), input=SMS)
    assert result.stderr == (
        f"Error: bundle {copy} has format version 7, this spamguard reads up to 1: "
        "upgrade spamguard (pip install -U spamguard)\n"
    )
    result = run("check", "--model", "nosuchmodel", input=SMS)
    assert (
        result.stderr
        == "Error: no model 'nosuchmodel': not a bundle directory nor an installed model (installed: none)\n"
    )


def test_check_uses_spamguard_model_env(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAMGUARD_MODEL", str(tiny_bundle))
    assert run("check", input=SMS).stdout.endswith("model=tiny\n")


def test_models_install_list_default_remove(tiny_bundle: Path, spamguard_home: Path) -> None:
    assert run("models").stdout == "no models installed (run 'spamguard train' or 'spamguard models install PATH')\n"
    result = run("models", "install", str(tiny_bundle))
    assert result.exit_code == 0
    assert result.stdout == f"installed tiny (default) at {spamguard_home / 'models' / 'tiny'}\n"
    assert run("models", "install", str(tiny_bundle), "--name", "other").stdout.startswith("installed other at ")
    listing = run("models", "list").stdout.splitlines()
    assert listing[0] == "  other  threshold 0.5000  max_tokens 128  fp32+int8  base random-tiny"
    assert listing[1] == "* tiny   threshold 0.5000  max_tokens 128  fp32+int8  base random-tiny"
    again = run("models", "install", str(tiny_bundle))
    assert again.exit_code == 1
    assert again.stderr == "Error: a model named 'tiny' is already installed (remove it first, or pick another name)\n"
    assert run("models", "default", "other").stdout == "default model: other\n"
    assert run("models").stdout.splitlines()[0].startswith("* other")
    assert (
        run("models", "default", "nope").stderr == "Error: no installed model named 'nope' (installed: other, tiny)\n"
    )
    assert run("models", "remove", "other").stdout == (
        "removed other\nother was the default model; none is now: choose one with 'spamguard models default NAME' "
        "(installed: tiny)\n"
    )
    assert run("check", input=SMS).stderr == (  # the default was removed, another model is left
        "Error: no default model (installed: tiny): choose one with 'spamguard models default NAME', or pass --model\n"
    )
    assert run("models", "remove", "other").stderr == "Error: no installed model named 'other'\n"
    assert run("models", "remove", "tiny").stdout == "removed tiny\n"  # not the default: nothing more to say
    assert run("check", input=SMS).stderr == NO_MODEL


def test_models_install_refuses_a_corrupt_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    (copy / "model.onnx").write_bytes(b"junk")
    result = run("models", "install", str(copy))
    assert result.exit_code == 1
    assert (
        result.stderr == f"Error: corrupt bundle {copy}: model.onnx does not match its sha256 (reinstall the model)\n"
    )
    assert run("models", "install", str(tmp_path / "none")).stderr == (
        f"Error: no model bundle at {tmp_path / 'none'}: not a directory\n"
    )


def test_eval_on_sms_tsv(installed: Path, tmp_path: Path) -> None:
    lines = SMS_FILE.read_text(encoding="utf-8").splitlines()[:40]
    data = tmp_path / "sms.tsv"
    data.write_text("\n".join(lines) + "\n")
    result = run("eval", "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    labels = [int(line.startswith("spam")) for line in lines]
    scores = Classifier.load(installed).score_batch(line.split("\t", 1)[1] for line in lines)
    expected = binary_metrics(labels, scores, 0.5)
    assert figures["by_kind"] == {"sms": expected}
    assert {k: figures[k] for k in expected if k != "threshold"} == {
        k: v for k, v in expected.items() if k != "threshold"
    }
    assert (figures["ham"], figures["spam"], figures["precision_used"]) == (labels.count(0), labels.count(1), "int8")
    text = run("eval", "--data", str(data), "--threshold", "0").stdout.splitlines()
    n_ham, n_spam = labels.count(0), labels.count(1)
    assert text[0] == f"model tiny (int8) on {data}: 40 messages ({n_ham} ham, {n_spam} spam)"
    spam_share = n_spam / 40
    assert text[1] == (
        f"sms: 40 messages ({n_ham} ham, {n_spam} spam), threshold 0.0000: accuracy {spam_share:.4f}  precision "
        f"{spam_share:.4f}  recall 1.0000  f1 {2 * spam_share / (1 + spam_share):.4f}  false-positive rate 1.0000  "
        f"(tp {n_spam}  fp {n_ham}  tn 0  fn 0)"
    )
    assert text[2].startswith("scored in ")  # one kind: no overall line


def test_eval_on_mail_folders(installed: Path, tmp_path: Path) -> None:
    for label in ("ham", "spam"):
        (tmp_path / label).mkdir()
        for mail in sorted((MAIL_DIR / label).iterdir())[:5]:
            shutil.copy(mail, tmp_path / label / mail.name)
    (tmp_path / "ham" / ".hidden").write_text("skipped")
    (tmp_path / "spam" / "cmds").write_text("mv 00001.7c53 00001.7c53336b37003a9286aba55d2945844c\n")
    (tmp_path / "spam" / "gone").symlink_to(tmp_path / "nowhere")  # unreadable: skipped, never fatal
    result = run("eval", "--data", str(tmp_path), "--json", "--precision", "fp32")
    figures = json.loads(result.stdout)
    assert (figures["n"], figures["ham"], figures["spam"], figures["precision_used"]) == (10, 5, 5, "fp32")
    assert result.stderr.splitlines()[1] == (
        f"spam {tmp_path / 'spam'} (folder): read 7, used 5, duplicates 0, conflicts 0, skipped 2 "
        f"(unreadable (dangling symlink): 1, e.g. {tmp_path / 'spam' / 'gone'}, "
        f"not a mail message (no header block): 1, e.g. {tmp_path / 'spam' / 'cmds'})"  # beside mail: no SMS
    )


def test_eval_bad_data(installed: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none.tsv"
    result = run("eval", "--data", str(missing))
    assert result.exit_code == 1
    assert result.stderr == f"Error: no data at {missing}: give an SMS TSV file or a folder with ham/ and spam/\n"
    bad = tmp_path / "bad.tsv"
    bad.write_text("ham\tfine\nmaybe\tnot a label\n")
    assert run("eval", "--data", str(bad)).stderr == (
        f"Error: {bad}:2: expected 'ham<TAB>text' or 'spam<TAB>text', got 'maybe\\tnot a label'\n"
    )
    (tmp_path / "mail" / "ham").mkdir(parents=True)
    assert run("eval", "--data", str(tmp_path / "mail")).stderr == (
        f"Error: {tmp_path / 'mail'} has no spam/ (expected ham/ and spam/, each a Maildir, an mbox or a folder of "
        "messages)\n"
    )
    nothing = run("eval")
    assert nothing.exit_code == 2 and nothing.stderr.endswith(
        "Error: give --data PATH, or --ham PATH and --spam PATH\n"
    )


def test_models_list_shows_thresholds_per_kind(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["thresholds"] = {"mail": {"threshold": 0.7, "unsure": None}, "sms": {"threshold": 0.4, "unsure": None}}
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert run("models", "install", str(copy), "--name", "kinds").exit_code == 0
    assert run("models").stdout == (
        "* kinds  threshold mail 0.7000 sms 0.4000  max_tokens 128  fp32+int8  base random-tiny\n"
    )
