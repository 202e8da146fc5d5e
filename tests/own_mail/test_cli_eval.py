"""`spamguard eval` on mail sources, with the plots and the report folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from own_mail_helpers import make_maildir, make_mbox

from spamguard.classifier import Classifier
from spamguard.cli import main
from spamguard.mail_sources import read_labelled
from spamguard.metrics import binary_metrics
from spamguard.report import PLOT_FILES

from conftest import MAIL_DIR

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MISSING_MATPLOTLIB = "Error: plots need matplotlib, which a mail host does not install: pip install 'spamguard[plot]'\n"


def run(*args: str) -> object:
    return CliRunner().invoke(main, ["eval", *args])


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Maildir of 12 real ham and an mbox of 8 real spam."""
    root = tmp_path_factory.mktemp("mail")
    ham = make_maildir(root / "Maildir", sorted((MAIL_DIR / "ham").iterdir())[:12])
    spam = make_mbox(root / "junk.mbox", sorted((MAIL_DIR / "spam").iterdir())[:8])
    return ham, spam


def test_eval_on_maildir_and_mbox_matches_the_classifier(tiny_bundle: Path, mail: tuple[Path, Path]) -> None:
    ham, spam = mail
    result = run("--model", str(tiny_bundle), "--ham", str(ham), "--spam", str(spam), "--json", "--threshold", "0.5")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    examples, _ = read_labelled(ham=[ham], spam=[spam])
    scores = Classifier.load(tiny_bundle).score_texts(e.text for e in examples)
    expected = binary_metrics([e.label for e in examples], scores, 0.5)
    assert figures["by_kind"] == {"mail": expected}  # one kind: overall is the mail line without its threshold
    assert {k: figures[k] for k in expected if k != "threshold"} == {
        k: v for k, v in expected.items() if k != "threshold"
    }
    assert (figures["n"], figures["ham"], figures["spam"]) == (20, 12, 8)
    assert [(s["kind"], s["label"], s["used"]) for s in figures["sources"]] == [
        ("maildir", "ham", 12),
        ("mbox", "spam", 8),
    ]
    assert result.stderr.startswith(f"ham {ham} (maildir): read 12, used 12, duplicates 0, conflicts 0, skipped 0\n")


def test_eval_plots_and_report(tiny_bundle: Path, mail: tuple[Path, Path], tmp_path: Path) -> None:
    ham, spam = mail
    common = ("--model", str(tiny_bundle), "--ham", str(ham), "--spam", str(spam))
    result = run(*common, "--plots", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    for name in PLOT_FILES.values():
        data = (tmp_path / "plots" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
    lines = result.stdout.splitlines()
    assert lines[-1] == "written: " + ", ".join(str(tmp_path / "plots" / n) for n in PLOT_FILES.values())

    result = run(*common, "--report", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    report = tmp_path / "report"
    assert sorted(p.name for p in report.iterdir()) == sorted([*PLOT_FILES.values(), "summary.json", "summary.txt"])
    assert (report / "summary.txt").read_text().splitlines() == result.stdout.splitlines()[:-1]
    summary = json.loads((report / "summary.json").read_text())
    assert (summary["n"], summary["model"]) == (20, "tiny")
    assert all((report / n).read_bytes()[:8] == PNG_MAGIC for n in PLOT_FILES.values())


def test_plots_need_both_classes(tiny_bundle: Path, mail: tuple[Path, Path], tmp_path: Path) -> None:
    result = run("--model", str(tiny_bundle), "--ham", str(mail[0]), "--plots", str(tmp_path / "p"))
    assert (result.exit_code, result.stderr.splitlines()[-1]) == (
        1,
        "Error: plots need ham and spam, got 12 ham and 0 spam",
    )


def test_missing_matplotlib_is_one_line_before_any_work(
    mail: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without the plot extra looks like
    # no model is installed: the plot check comes first, before reading mail or loading a model
    result = run("--ham", str(mail[0]), "--spam", str(mail[1]), "--plots", str(tmp_path / "p"))
    assert (result.exit_code, result.stderr) == (1, MISSING_MATPLOTLIB)
    result = run("--ham", str(mail[0]), "--spam", str(mail[1]), "--report", str(tmp_path / "r"))
    assert (result.exit_code, result.stderr) == (1, MISSING_MATPLOTLIB)
    assert not (tmp_path / "p").exists() and not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def sms_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Plain SMS text files, one message each, as a phone export leaves them."""
    root = tmp_path_factory.mktemp("sms")
    texts = {
        "ham": ["Sorry: can't talk now", "Lunch at noon? The usual place.", "Re: dinner - see you at 8"],
        "spam": ["WINNER!! Claim your prize: txt CLAIM to 80086", "Free entry: reply WIN to get 500 pounds"],
    }
    for label, messages in texts.items():
        (root / label).mkdir()
        for number, text in enumerate(messages):
            (root / label / f"{number}.txt").write_text(text + "\n", encoding="utf-8")
    return root / "ham", root / "spam"


def test_eval_reads_a_folder_of_sms_text_files_as_sms(tiny_bundle: Path, sms_folders: tuple[Path, Path]) -> None:
    ham, spam = sms_folders
    result = run("--model", str(tiny_bundle), "--ham", str(ham), "--spam", str(spam), "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    examples, _ = read_labelled(ham=[ham], spam=[spam], sms_files=True)
    assert [e.kind for e in examples] == ["sms"] * 5
    scores = Classifier.load(tiny_bundle).score_texts(e.text for e in examples)
    assert figures["by_kind"] == {"sms": binary_metrics([e.label for e in examples], scores, 0.5)}
    assert result.stderr.startswith(
        f"ham {ham} (folder): read 3, used 3, duplicates 0, conflicts 0, skipped 0, kinds: mail 0, sms 3\n"
    )


def test_eval_prints_a_line_per_kind_at_its_own_threshold_then_overall(
    tmp_path: Path, mail: tuple[Path, Path], sms_folders: tuple[Path, Path]
) -> None:
    from bundles import make_bundle

    thresholds = {"mail": {"threshold": 0.3, "unsure": None}, "sms": {"threshold": 0.8, "unsure": None}}
    bundle = make_bundle(tmp_path / "two", name="two", thresholds=thresholds)
    ham_mail, spam_mail = mail
    ham_sms, spam_sms = sms_folders
    sources = ("--ham", str(ham_mail), "--ham", str(ham_sms), "--spam", str(spam_mail), "--spam", str(spam_sms))
    result = run("--model", str(bundle), *sources)
    assert result.exit_code == 0, result.output
    examples, _ = read_labelled(ham=[ham_mail, ham_sms], spam=[spam_mail, spam_sms], sms_files=True)
    scores = Classifier.load(bundle).score_texts(e.text for e in examples)
    by_kind = {
        kind: binary_metrics(
            [e.label for e in examples if e.kind == kind],
            [s for s, e in zip(scores, examples, strict=True) if e.kind == kind],
            thresholds[kind]["threshold"],
        )
        for kind in ("mail", "sms")
    }
    lines = result.stdout.splitlines()
    data = f"ham {ham_mail}, ham {ham_sms}, spam {spam_mail}, spam {spam_sms}"
    assert lines[0] == f"model two (int8) on {data}: 25 messages (15 ham, 10 spam)"
    assert lines[1].startswith("mail: 20 messages (12 ham, 8 spam), threshold 0.3000: accuracy ")
    assert lines[2].startswith("sms: 5 messages (3 ham, 2 spam), threshold 0.8000: accuracy ")
    assert lines[3].startswith("overall (each kind at its threshold): accuracy ")
    for line, m in ((lines[1], by_kind["mail"]), (lines[2], by_kind["sms"])):
        assert f"(tp {m['tp']}  fp {m['fp']}  tn {m['tn']}  fn {m['fn']})" in line
    tp, fp = (by_kind["mail"][k] + by_kind["sms"][k] for k in ("tp", "fp"))
    assert f"(tp {tp}  fp {fp}  " in lines[3] and lines[4].startswith("scored in ")

    result = run("--model", str(bundle), *sources, "--threshold", "0.5", "--json")
    assert {k: v["threshold"] for k, v in json.loads(result.stdout)["by_kind"].items()} == {"mail": 0.5, "sms": 0.5}
