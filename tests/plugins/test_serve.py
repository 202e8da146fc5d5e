"""`spamguard serve` with all three front doors in one process: one model and one pool answer the milter, spamd
and HTTP alike (same score for the same bytes), each door logs one line per message and is counted in
/metrics, and SIGTERM stops the whole process cleanly."""

from __future__ import annotations

import http.client
import json
import re
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mailstack import require, wait_for
from servestack import running_serve, spamc

from spamguard import Classifier
from spamguard.cli import main
from spamguard.plugins.milter import protocol as p
from spamguard.plugins.milter.client import MilterClient

from conftest import MAIL_DIR

pytestmark = pytest.mark.integration

MESSAGE = sorted(MAIL_DIR.glob("spam/*"))[-1].read_bytes().split(b"\n", 1)[1]  # without the mbox `From ` line


def test_three_doors_one_model(tiny_bundle: Path, tmp_path: Path) -> None:
    require("spamc")
    pytest.importorskip("aiohttp")
    options = ["--milter", "inet:127.0.0.1:0", "--spamd", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    expected = Classifier.load(tiny_bundle).score(MESSAGE)
    with running_serve(tiny_bundle, *options, log=tmp_path / "serve.log") as serve:
        with MilterClient(f"inet:{serve.doors['milter']}") as client:
            client.negotiate()
            reply = client.message(MESSAGE.replace(b"\n", b"\r\n"), queue_id="Q3")
        assert reply.code == p.ACCEPT
        status = next(m.value for m in reply.modifications if m.name == b"X-Spamguard").decode()
        milter_score = float(re.search(r"score=([\d.]+)", status).group(1))  # type: ignore[union-attr]

        processed = spamc(serve.port("spamd"), message=MESSAGE).stdout
        spamd_score = float(re.search(rb"X-Spamguard: label=\w+ score=([\d.]+)", processed).group(1))  # type: ignore[union-attr]

        connection = http.client.HTTPConnection("127.0.0.1", serve.port("http"), timeout=30)
        connection.request("POST", "/v1/check", MESSAGE, {"Content-Type": "message/rfc822"})
        http_score = json.loads(connection.getresponse().read())["score"]
        connection.request("GET", "/metrics")
        metrics = connection.getresponse().read().decode()
        connection.close()

        # the milter hands the model CRLF lines, the others LF: the text the model reads is the same
        assert milter_score == spamd_score == pytest.approx(expected, abs=1e-4)
        assert http_score == pytest.approx(expected, abs=1e-6)
        for door in ("milter", "spamd", "http"):
            assert re.search(rf'spamguard_scoring_seconds_count{{door="{door}"}} 1\.0', metrics), door
        wait_for(lambda: len(serve.lines("door=")) == 2 and serve.lines("queue_id=Q3"), 5, "one line per message")
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(10) == 0
        assert serve.lines("stopping")


def test_http_without_the_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if `spamguard[http]` were not installed
    monkeypatch.delitem(sys.modules, "spamguard.plugins.http.server", raising=False)
    result = CliRunner().invoke(main, ["serve", "--http", "0"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: --http needs the http extra (aiohttp is missing): pip install 'spamguard[http]'\n",
    )
