"""benchmarks/robustness_means.py: the means of several robustness runs, read from the tables they wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import robustness_means

RUN = """Recall % on the disguised spam ...

| method | kind | plain | leetspeak | comment-split | largest drop (points) |
|---|---|---|---|---|---|
| spamguard, normalized | sms | {recall} | {leet} | n/a | 1.0 |

False-positive rate % on the test ham given the same disguise

| method | kind | plain | leetspeak | comment-split |
|---|---|---|---|---|
| spamguard, normalized | sms | 1.0 | {fpr} | n/a |
"""


def _two_runs(folder: Path) -> list[Path]:
    runs = []
    for i, (recall, leet, fpr) in enumerate(((94.0, 90.0, 2.0), (96.0, 95.0, 1.0))):
        runs.append(folder / f"{i}.md")
        runs[-1].write_text(RUN.format(recall=recall, leet=leet, fpr=fpr))
    return runs


def test_means_of_two_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _two_runs(tmp_path)
    monkeypatch.setattr(sys, "argv", ["robustness_means.py", *map(str, runs), "--out", str(tmp_path / "means.md")])
    assert robustness_means.main() == 0
    text = (tmp_path / "means.md").read_text()
    assert "| spamguard, normalized | sms | 95.0 | 92.5 | n/a | 2.5 |" in text  # the drop of the means: 95 - 92.5
    assert "| spamguard, normalized | sms | 1.0 | 1.5 | n/a | 0.5 |" in text  # the rise: 1.5 - 1.0


def test_chart_of_the_means_and_each_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    runs = _two_runs(tmp_path)
    monkeypatch.setattr(sys, "argv", ["robustness_means.py", *map(str, runs), "--chart", str(tmp_path / "m.png")])
    assert robustness_means.main() == 0
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_file_without_the_tables_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.md").write_text("nothing here\n")
    monkeypatch.setattr(sys, "argv", ["robustness_means.py", str(tmp_path / "x.md")])
    assert robustness_means.main() == 1
    assert capsys.readouterr().out == f"error: {tmp_path / 'x.md'}: expected a recall and an FPR table, found 0\n"


def test_a_row_without_its_figures_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.md").write_text(RUN.format(recall=94.0, leet=90.0, fpr=2.0) + "| spamguard |\n")
    monkeypatch.setattr(sys, "argv", ["robustness_means.py", str(tmp_path / "x.md")])
    assert robustness_means.main() == 1
    assert capsys.readouterr().out == (
        f"error: {tmp_path / 'x.md'}: a row without its method, kind and plain figure: '| spamguard |'\n"
    )
