"""`spamguard pipe` behind a real procmail: `:0fw | spamguard pipe`, then `X-Spam-Flag: YES` filed into a
spam Maildir.

Each message is also delivered once through procmail with `cat` as the filter (the control), because procmail
itself changes a message on delivery: it drops the mbox `From ` line, and it ends a filter's output with an
empty line (mbox style) when the output does not already end with one, whatever the filter. The spamguard
delivery must equal the control plus our header lines, byte for byte.

procmail starts the filter once per message, and a standalone `spamguard pipe` loads the model each time
(about 0.9 s here), so by default these tests deliver a sample of the committed mail slice (tests/fixtures/
README.md) chosen to cover its kinds of message (ham, spam, non-UTF-8, the largest, no `From ` line) plus
constructed ones (CRLF, forged headers, no final newline). `SPAMGUARD_FULL_CORPUS=1` delivers every mail of the
slice (and the constructed ones) instead:

    SPAMGUARD_FULL_CORPUS=1 .venv/bin/pytest tests/plugins/test_procmail.py -k "files_every or connect"
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from mailstack import SPAMGUARD, require, running_milter

from spamguard.plugins.headers import remove_headers

from conftest import MAIL_DIR

pytestmark = pytest.mark.integration

FULL = os.environ.get("SPAMGUARD_FULL_CORPUS") == "1"
ALL_MAIL = sorted(MAIL_DIR.glob("*/*"))
MAX_SIZE = "100K"  # below the corpus' largest messages, so the size cap is exercised too
OUR_LINES = re.compile(
    rb"X-Spam-Flag: (YES|NO)(\r?\n)"
    rb"X-Spam-Status: (Yes|No), score=\d\.\d\d required=\d\.\d\d tests=SPAMGUARD autolearn=no version=\S+\2"
    rb"X-Spamguard: label=(spam|ham|unsure) score=(\d\.\d{4}) threshold=\d\.\d{4} kind=mail stage=full model=\S+ "
    rb"version=\S+\2"
)


def _sample() -> list[tuple[str, bytes]]:
    raws = {path.name: path.read_bytes() for path in ALL_MAIL}
    chosen = [path.name for path in ALL_MAIL[::5]]  # 10, ham and spam
    chosen += [name for name, raw in raws.items() if not _utf8(raw)][:3]
    chosen += [name for name, raw in raws.items() if not raw.startswith(b"From ")][:2]
    chosen += sorted(raws, key=lambda name: len(raws[name]))[-2:]
    sample = list(raws.items()) if FULL else [(name, raws[name]) for name in dict.fromkeys(chosen)]
    ham = raws[ALL_MAIL[0].name]
    body = ham.split(b"\n", 1)[1]  # without its From_ line
    sample += [
        ("crlf", body.replace(b"\n", b"\r\n")),
        ("forged", b"X-Spam-Flag: YES\nX-Spamguard: label=spam\n  score=1.0\nx-spam-status: Yes\n" + body),
        ("no-final-newline", body.rstrip(b"\n")),
    ]
    return sample


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class Procmail:
    root: Path

    def rcfile(self, name: str, filter_command: str, *, fail_closed_rule: bool = False) -> Path:
        lines = [
            "SHELL=/bin/sh",
            f"MAILDIR={self.root}/{name}",
            "DEFAULT=$MAILDIR/inbox/",
            f"LOGFILE={self.root}/{name}.log",
            ":0fw",
            f"| {filter_command}",
        ]
        if fail_closed_rule:
            lines += [":0e", "{ EXITCODE=75 HOST }"]
        lines += [":0", "* ^X-Spam-Flag: YES", "spam/"]
        (self.root / name).mkdir()
        rc = self.root / f"{name}.rc"
        rc.write_text("\n".join(lines) + "\n")
        return rc

    def deliver(self, rc: Path, raw: bytes) -> tuple[int, list[Path]]:
        """Run procmail once; its exit code and the files it delivered."""
        maildir = self.root / rc.stem
        before = set(maildir.glob("*/new/*"))
        code = subprocess.run(["procmail", "-m", str(rc)], input=raw, capture_output=True, timeout=120).returncode
        return code, sorted(set(maildir.glob("*/new/*")) - before)


@pytest.fixture
def procmail(tmp_path: Path) -> Procmail:
    require("procmail")
    return Procmail(tmp_path)


def _broken_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    broken = Path(shutil.copytree(tiny_bundle, tmp_path / "broken-bundle"))
    (broken / "model.int8.onnx").unlink()
    return broken


def _check_filtered(procmail: Procmail, command: str, sample: list[tuple[str, bytes]]) -> dict[str, float]:
    """Deliver each message with and without the filter; every filtered delivery must be exactly the control
    plus our three lines, filed by its flag. Returns the scores the headers carry."""
    control_rc = procmail.rcfile("control", "cat")
    filtered_rc = procmail.rcfile("filtered", command)
    scores: dict[str, float] = {}
    for name, raw in sample:
        code, control = procmail.deliver(control_rc, raw)
        assert code == 0 and len(control) == 1, name
        code, delivered = procmail.deliver(filtered_rc, raw)
        assert code == 0 and len(delivered) == 1, f"{name}: exit {code}, delivered {delivered}"
        out = delivered[0].read_bytes()
        ours = OUR_LINES.match(out)
        assert ours, f"{name}: does not start with our headers: {out[:300]!r}"
        assert out[ours.end() :] == remove_headers(control[0].read_bytes()), f"{name}: changed beyond our headers"
        eol = b"\r\n" if name == "crlf" else b"\n"
        assert ours.group(2) == eol, name
        folder = delivered[0].parent.parent.name
        assert folder == ("spam" if ours.group(1) == b"YES" else "inbox"), name
        assert (ours.group(1) == b"YES") == (ours.group(4) == b"spam"), name
        scores[name] = float(ours.group(5))
    return scores


def test_procmail_files_every_message_once_with_only_our_headers_added(procmail: Procmail, tiny_bundle: Path) -> None:
    from spamguard import Classifier

    sample = _sample()
    command = f"{SPAMGUARD} pipe --model {tiny_bundle} --max-size {MAX_SIZE}"
    scores = _check_filtered(procmail, command, sample)
    # the verdicts are the model's: the same scores the runtime gives the same bytes in this process
    classifier = Classifier.load(tiny_bundle)
    expected = classifier.score_batch([raw[: 100 * 1024] for _, raw in sample])
    for (name, _), score in zip(sample, expected, strict=True):
        assert scores[name] == pytest.approx(score, abs=6e-5), name
    assert len(scores) == len(sample)


def test_connect_mode_through_a_running_milter(procmail: Procmail, tiny_bundle: Path, tmp_path: Path) -> None:
    sample = _sample() if FULL else _sample()[::3]
    with running_milter(tiny_bundle, log=tmp_path / "milter.log") as milter:
        command = f"{SPAMGUARD} pipe --connect {milter.address}"
        scores = _check_filtered(procmail, command, sample)
        assert len(milter.lines()) == len(sample)
    assert len(scores) == len(sample)


def test_model_removed_everything_lands_in_the_inbox_unchanged(
    procmail: Procmail, tiny_bundle: Path, tmp_path: Path
) -> None:
    broken = _broken_bundle(tiny_bundle, tmp_path)
    control_rc = procmail.rcfile("control", "cat")
    filtered_rc = procmail.rcfile("filtered", f"{SPAMGUARD} pipe --model {broken}")
    everything = _sample()
    sample = everything if FULL else list(dict(everything[::4] + everything[-3:]).items())
    for name, raw in sample:
        _, control = procmail.deliver(control_rc, raw)
        code, delivered = procmail.deliver(filtered_rc, raw)
        assert code == 0 and len(delivered) == 1, name
        assert delivered[0].read_bytes() == control[0].read_bytes(), name
        # unchanged means unchanged: a sender's forged X-Spam-Flag: YES files its own message as spam
        assert delivered[0].parent.parent.name == ("spam" if name == "forged" else "inbox"), name
    log = (procmail.root / "filtered.log").read_text()
    assert log.count("model.int8.onnx is missing (reinstall the model); message passed through unchanged") == len(
        sample
    )


def test_fail_closed_procmail_exits_75_and_delivers_nothing(
    procmail: Procmail, tiny_bundle: Path, tmp_path: Path
) -> None:
    broken = _broken_bundle(tiny_bundle, tmp_path)
    rc = procmail.rcfile("filtered", f"{SPAMGUARD} pipe --fail-closed --model {broken}", fail_closed_rule=True)
    for _, raw in _sample()[:3]:
        assert procmail.deliver(rc, raw) == (75, [])
    assert "exit 75 (tempfail) so the MTA retries" in (procmail.root / "filtered.log").read_text()
