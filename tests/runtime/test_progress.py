"""Progress bars on a terminal only: a log file or a pipe gets no bar output at all."""

from __future__ import annotations

import io
import os

import pytest

from spamguard.progress import progress


def test_no_bar_when_the_stream_is_not_a_terminal() -> None:
    log = io.StringIO()
    assert list(progress(range(500), desc="epoch 1/5", unit="batch", file=log)) == list(range(500))
    assert log.getvalue() == ""


def test_no_bar_on_stderr_captured_as_a_file(capfd: pytest.CaptureFixture[str]) -> None:
    assert sum(progress(range(500), desc="prefix cache", unit="batch")) == sum(range(500))
    assert capfd.readouterr().err == ""


def test_a_bar_on_a_terminal() -> None:
    controller, terminal = os.openpty()
    with os.fdopen(terminal, "w") as tty:
        assert list(progress(range(3), desc="reading inbox", unit="msg", file=tty)) == [0, 1, 2]
    chunks = []
    try:
        while chunk := os.read(controller, 65536):  # a terminal hands its output over in pieces
            chunks.append(chunk)
    except OSError:  # EIO: the terminal side is closed and everything was read
        pass
    finally:
        os.close(controller)
    shown = b"".join(chunks).decode()
    assert "reading inbox:" in shown and "0/3" in shown  # drawn, then cleared (leave=False)
    assert shown.endswith("\r")
