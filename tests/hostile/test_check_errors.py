"""An error is never a verdict. Any failure after the options are parsed (a bad manifest value, a crash while
scoring or explaining, RecursionError) once made `check` print a traceback and exit 1, which bogofilter's
convention, and so every script, reads as "ham". Now: one line and exit 3 for `check`, one line and a non-zero
exit for every other command, a `SpamguardError` from `is_spam`/`score`, the original message from the pipe."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import spamguard
from spamguard import classifier, explain, registry
from spamguard.bundle import MANIFEST
from spamguard.cli import main
from spamguard.cli.check import MAX_STDIN_DRAIN
from spamguard.errors import ScoringError, SpamguardError
from spamguard.message_text import MAX_PARSE_BYTES

SPAMGUARD = str(Path(sys.executable).with_name("spamguard"))
SMS = "Are we still on for noon?"
RECURSION = "maximum recursion depth exceeded"
BOOM = "Error: internal error: ValueError: boom (set SPAMGUARD_DEBUG=1 for the traceback)"


def run(*args: str, input: str | bytes | None = SMS) -> object:
    return CliRunner().invoke(main, list(args), input=input)


def broken_copy(bundle: Path, folder: Path, **values: object) -> Path:
    """The bundle with manifest values no one validated before: `check` used to crash on them mid-run."""
    copy = Path(shutil.copytree(bundle, folder / "broken"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest.update(values)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def _recursion(*args: object, **kwargs: object) -> str:
    raise RecursionError(RECURSION)


def _crash(*args: object, **kwargs: object) -> str:
    raise ValueError("boom")


@pytest.mark.parametrize(
    "values",
    [{"threshold": "abc"}, {"threshold": None}, {"unsure": 5}, {"unsure": ["a", "b"]}, {"max_tokens": "x"}],
    ids=str,
)
def test_a_bad_manifest_value_is_one_line_and_exit_3(tiny_bundle: Path, tmp_path: Path, values: dict) -> None:
    result = run("check", "--model", str(broken_copy(tiny_bundle, tmp_path, **values)))
    assert (result.exit_code, result.stdout) == (3, "")
    one_error_line(result.stderr)


def test_a_crash_while_scoring_is_exit_3_and_costs_only_its_own_verdict(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = classifier.message_text
    monkeypatch.setattr(classifier, "message_text", lambda m: _recursion() if b"bomb" in m else real(m))
    result = run("check", "--model", str(tiny_bundle), input=b"a bomb")
    assert (result.exit_code, result.stdout) == (3, "")
    assert result.stderr == f"Error: stdin: cannot score: RecursionError: {RECURSION}\n"
    (tmp_path / "good.txt").write_text(SMS)
    (tmp_path / "bomb.txt").write_text("a bomb")
    result = run("check", "--model", str(tiny_bundle), str(tmp_path / "good.txt"), str(tmp_path / "bomb.txt"))
    assert result.exit_code == 3
    assert result.stdout.startswith(f"{tmp_path / 'good.txt'}: ") and "bomb" not in result.stdout
    assert result.stderr == f"Error: {tmp_path / 'bomb.txt'}: cannot score: RecursionError: {RECURSION}\n"


def test_a_crash_while_explaining_is_exit_3(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(explain, "split_parts", _recursion)
    result = run("check", "--explain", "--model", str(tiny_bundle))
    assert (result.exit_code, result.stdout) == (3, "")
    assert result.stderr == f"Error: stdin: cannot explain: RecursionError: {RECURSION}\n"
    as_json = run("check", "--explain", "--json", "--model", str(tiny_bundle))
    assert as_json.exit_code == 3
    assert json.loads(as_json.stdout) == {
        "input": "stdin",
        "error": f"stdin: cannot explain: RecursionError: {RECURSION}",
    }


def test_the_traceback_is_there_for_developers(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier.Classifier, "load", _crash)
    result = run("check", "--model", str(tiny_bundle))
    assert result.exit_code == 3
    assert (
        one_error_line(result.stderr)
        == "Error: internal error: ValueError: boom (set SPAMGUARD_DEBUG=1 for the traceback)"
    )
    monkeypatch.setenv("SPAMGUARD_DEBUG", "1")
    result = run("check", "--model", str(tiny_bundle))
    assert isinstance(result.exception, ValueError)


def test_other_commands_fail_in_one_line(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "sms.tsv"
    data.write_text("ham\tsee you at noon\nspam\tWIN a prize now\n")
    monkeypatch.setattr(classifier.Classifier, "load", _crash)
    result = run("eval", "--data", str(data), "--model", str(tiny_bundle), input=None)
    report, error = result.stderr.rsplit("\n", 2)[:2]  # eval reports what it read first
    assert result.exit_code == 1 and "Error" not in report
    assert one_error_line(error) == BOOM
    monkeypatch.setattr(registry, "installed", _crash)
    result = run("models", input=None)
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == BOOM


def test_the_api_raises_only_spamguard_errors(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SpamguardError):  # was ValueError, from float(manifest["threshold"]) mid-scoring
        spamguard.is_spam(SMS, model=broken_copy(tiny_bundle, tmp_path, threshold="abc"))
    monkeypatch.setattr(classifier, "message_text", _recursion)
    for call in (spamguard.is_spam, spamguard.score):
        with pytest.raises(ScoringError, match=f"^cannot score the message: RecursionError: {RECURSION}$") as raised:
            call(SMS, model=tiny_bundle)
        assert isinstance(raised.value.__cause__, RecursionError)


def test_the_pipe_passes_the_original_when_scoring_crashes(tiny_bundle: Path, tmp_path: Path) -> None:
    raw = b"From: a@example.com\nSubject: hi\n\nbody\n"
    broken = broken_copy(tiny_bundle, tmp_path, threshold="abc")
    result = subprocess.run([SPAMGUARD, "pipe", "--model", str(broken)], input=raw, capture_output=True, timeout=120)
    assert (result.returncode, result.stdout) == (0, raw)
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spamguard pipe: ")
    assert lines[0].endswith("; message passed through unchanged")


# --- endless input --------------------------------------------------------------------------------------------


def test_an_endless_stdin_ends(tiny_bundle: Path) -> None:
    """`cat /dev/zero | spamguard check` read forever. Past the scored head, at most MAX_STDIN_DRAIN more is
    read and dropped (so a big message's writer does not die of a broken pipe); then reading stops."""
    with open("/dev/zero", "rb") as endless:
        result = subprocess.run(
            [SPAMGUARD, "check", "--model", str(tiny_bundle)], stdin=endless, capture_output=True, timeout=120
        )
    assert result.returncode in (0, 1, 2)
    assert result.stderr.decode() == (
        f"Warning: stopped reading stdin after {(MAX_PARSE_BYTES + MAX_STDIN_DRAIN) >> 20} MiB; "
        f"only its first {MAX_PARSE_BYTES >> 20} MiB is scored\n"
    )
    big = subprocess.run(
        [SPAMGUARD, "check", "--model", str(tiny_bundle)], input=b"x" * (3 * MAX_PARSE_BYTES), capture_output=True
    )
    assert big.returncode in (0, 1, 2) and big.stderr == b""  # read to its end: no warning, no broken pipe
