"""`spamguard pipe` as maildrop's `xfilter`, the docs/mail-integration.md recipe run for real on a few messages.

maildrop treats any non-zero exit of an xfilter as a temporary failure of the whole delivery (it exits 75 and
delivers nothing), so fail-open (exit 0 with the original bytes) is what keeps mail flowing when the model is
broken, and --fail-closed hands the MTA a retry. The control delivery runs `xfilter "cat"`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mailstack import SPAMGUARD, require

from spamguard.plugins.headers import remove_headers

from conftest import MAIL_DIR

pytestmark = pytest.mark.integration

SAMPLE = [path.read_bytes() for path in sorted(MAIL_DIR.glob("*/*"))[::16]]  # 3 real mails
FILTER = """\
xfilter "{command}"
if (/^X-Spam-Flag: YES/)
{{
    to "{maildir}/.Spam/"
}}
to "{maildir}/"
"""


def _maildrop(root: Path, name: str, command: str) -> tuple[Path, Path]:
    maildir = root / name
    for folder in (maildir, maildir / ".Spam"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
    rc = root / f"{name}.mailfilter"
    rc.write_text(FILTER.format(command=command, maildir=maildir))
    rc.chmod(0o600)  # maildrop refuses a filter file others can read
    return rc, maildir


def _deliver(rc: Path, maildir: Path, raw: bytes) -> tuple[int, list[Path]]:
    before = set(maildir.glob("**/new/*"))
    code = subprocess.run(["maildrop", str(rc)], input=raw, capture_output=True, timeout=120).returncode
    return code, sorted(set(maildir.glob("**/new/*")) - before)


def test_maildrop_xfilter(tiny_bundle: Path, tmp_path: Path) -> None:
    require("maildrop")
    control_rc, control_dir = _maildrop(tmp_path, "control", "cat")
    rc, maildir = _maildrop(tmp_path, "filtered", f"{SPAMGUARD} pipe --model {tiny_bundle}")
    for raw in SAMPLE:
        _, control = _deliver(control_rc, control_dir, raw)
        code, delivered = _deliver(rc, maildir, raw)
        assert code == 0 and len(delivered) == 1
        out, expected = delivered[0].read_bytes(), control[0].read_bytes()
        assert remove_headers(out) == expected
        flag = re.search(rb"\nX-Spam-Flag: (YES|NO)\n", out)
        assert flag and (delivered[0].parent.parent.name == ".Spam") == (flag.group(1) == b"YES")
        assert out.count(b"\n") - expected.count(b"\n") == 3  # our three lines and nothing else


def test_maildrop_with_a_broken_model(tiny_bundle: Path, tmp_path: Path) -> None:
    require("maildrop")
    broken = Path(shutil.copytree(tiny_bundle, tmp_path / "broken"))
    (broken / "model.int8.onnx").unlink()
    control_rc, control_dir = _maildrop(tmp_path, "control", "cat")
    rc, maildir = _maildrop(tmp_path, "open", f"{SPAMGUARD} pipe --model {broken}")
    _, control = _deliver(control_rc, control_dir, SAMPLE[0])
    code, delivered = _deliver(rc, maildir, SAMPLE[0])
    assert code == 0 and [path.read_bytes() for path in delivered] == [control[0].read_bytes()]
    closed_rc, closed_dir = _maildrop(tmp_path, "closed", f"{SPAMGUARD} pipe --fail-closed --model {broken}")
    assert _deliver(closed_rc, closed_dir, SAMPLE[0]) == (75, [])
