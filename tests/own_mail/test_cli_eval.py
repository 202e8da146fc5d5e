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
    """A Maildir of 12 real ham (two of them with the same text) and an mbox of 8 real spam."""
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
    assert {k: figures[k] for k in expected} == expected
    assert (figures["n"], figures["ham"], figures["spam"]) == (19, 11, 8)
    assert [(s["kind"], s["label"], s["used"]) for s in figures["sources"]] == [
        ("maildir", "ham", 11),
        ("mbox", "spam", 8),
    ]
    assert result.stderr.startswith(f"ham {ham} (maildir): read 12, used 11, duplicates 1, conflicts 0, skipped 0\n")


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
    assert (summary["n"], summary["model"]) == (19, "tiny")
    assert all((report / n).read_bytes()[:8] == PNG_MAGIC for n in PLOT_FILES.values())


def test_plots_need_both_classes(tiny_bundle: Path, mail: tuple[Path, Path], tmp_path: Path) -> None:
    result = run("--model", str(tiny_bundle), "--ham", str(mail[0]), "--plots", str(tmp_path / "p"))
    assert (result.exit_code, result.stderr.splitlines()[-1]) == (
        1,
        "Error: plots need ham and spam, got 11 ham and 0 spam",
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
