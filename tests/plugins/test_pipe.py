"""`spamguard pipe` as procmail and MTAs run it: a real process, a real tiny bundle, stdin to stdout.

Every failure must give back the original bytes with exit 0 and one line on stderr, or exit 75 with nothing on
stdout when fail-closed. Usage errors are checked in-process with CliRunner (they happen before any scoring)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from mailstack import SPAMGUARD, free_port

from spamguard.cli import main
from spamguard.errors import BundleError
from spamguard.plugins.headers import remove_headers
from spamguard.registry import resolve

from conftest import MAIL_DIR

MESSAGE = (MAIL_DIR / "ham" / "00001.7c53336b37003a9286aba55d2945844c").read_bytes()
LARGEST = (MAIL_DIR / "spam" / "00341.99b463b92346291f5848137f4a253966").read_bytes()
PASSED = "; message passed through unchanged\n"


def run_pipe(*args: str, raw: bytes = MESSAGE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([SPAMGUARD, "pipe", *args], input=raw, capture_output=True, timeout=120)


def test_scores_and_adds_the_headers(tiny_bundle: Path) -> None:
    result = run_pipe("--model", str(tiny_bundle))
    assert result.returncode == 0 and result.stderr == b""
    assert remove_headers(result.stdout) == MESSAGE
    assert re.match(rb"From \S+ +.+\nX-Spam-Flag: (YES|NO)\nX-Spam-Status: .+\nX-Spamguard: label=", result.stdout)


def test_size_cap_scores_the_start_and_passes_everything(tiny_bundle: Path) -> None:
    from spamguard import Classifier

    cap = LARGEST.index(b"\n\n") + 300  # the headers and a few lines of body: fewer tokens than the model reads
    result = run_pipe("--model", str(tiny_bundle), "--max-size", str(cap), raw=LARGEST)
    assert result.returncode == 0 and remove_headers(result.stdout) == LARGEST
    score = float(re.search(rb"X-Spamguard: label=\w+ score=([0-9.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    classifier = Classifier.load(tiny_bundle)
    assert score == pytest.approx(classifier.score(LARGEST[:cap]), abs=6e-5)
    assert score != pytest.approx(classifier.score(LARGEST), abs=6e-5)


def test_no_model_passes_through_unchanged() -> None:
    with pytest.raises(BundleError) as expected:
        resolve(None)
    result = run_pipe()
    assert (result.returncode, result.stdout) == (0, MESSAGE)
    assert result.stderr.decode() == f"spamguard pipe: {expected.value}{PASSED}"


def test_corrupt_model_passes_through_unchanged(tiny_bundle: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    with open(broken / "model.int8.onnx", "r+b") as f:
        f.truncate(1000)
    result = run_pipe("--model", str(broken))
    assert (result.returncode, result.stdout) == (0, MESSAGE)
    assert result.stderr.decode() == (
        f"spamguard pipe: corrupt bundle {broken}: model.int8.onnx does not match its sha256 (reinstall the model)"
        + PASSED
    )


def test_fail_closed_exits_75_and_writes_nothing() -> None:
    result = run_pipe("--fail-closed")
    assert (result.returncode, result.stdout) == (75, b"")
    assert result.stderr.endswith(b"; exit 75 (tempfail) so the MTA retries\n")


def test_timeout_kills_the_scorer_and_passes_through(tiny_bundle: Path) -> None:
    result = run_pipe("--model", str(tiny_bundle), "--timeout", "0.05")
    assert (result.returncode, result.stdout) == (0, MESSAGE)
    assert result.stderr.decode() == f"spamguard pipe: timed out after 0.05 s{PASSED}"


def test_out_of_memory_while_loading_passes_through(tiny_bundle: Path) -> None:
    """A real allocation failure: the scoring process gets 100 MB of address space, too little for
    onnxruntime. Whatever breaks first (an import, an allocation, a library that exits), the mail passes."""
    result = run_pipe("--model", str(tiny_bundle), "--max-memory", "100M", raw=LARGEST)
    assert (result.returncode, result.stdout) == (0, LARGEST)
    last = result.stderr.decode().splitlines()[-1] + "\n"  # a native library may have complained before us
    assert last.startswith("spamguard pipe: ") and last.endswith(PASSED)


def test_connect_to_a_milter_that_is_not_running() -> None:
    port = free_port()
    result = run_pipe("--connect", f"inet:127.0.0.1:{port}")
    assert (result.returncode, result.stdout) == (0, MESSAGE)
    assert result.stderr.decode() == (
        f"spamguard pipe: cannot reach the milter at inet:127.0.0.1:{port}: Connection refused{PASSED}"
    )


@pytest.mark.parametrize(
    ("args", "code", "stdout", "stderr"),
    [
        (["--bogus"], 0, MESSAGE, "spamguard pipe: No such option '--bogus'" + PASSED),
        (
            ["--max-size", "lots"],
            0,
            MESSAGE,
            "spamguard pipe: Invalid value for '--max-size': 'lots' is not a size (examples: 512000, 500K, 2M)"
            + PASSED,
        ),
        (
            ["--fail-closed", "--timeout", "-1"],
            75,
            b"",
            "spamguard pipe: Invalid value for '--timeout': -1.0 is not in the range x>0; exit 75 (tempfail)\n",
        ),
    ],
)
def test_usage_errors_never_cost_the_message(args: list[str], code: int, stdout: bytes, stderr: str) -> None:
    result = CliRunner().invoke(main, ["pipe", *args], input=MESSAGE)
    assert (result.exit_code, result.stdout_bytes, result.stderr) == (code, stdout, stderr)


def test_help_still_works() -> None:
    result = CliRunner().invoke(main, ["pipe", "--help"])
    assert result.exit_code == 0 and "--fail-closed" in result.output
