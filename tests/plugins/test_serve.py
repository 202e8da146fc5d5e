"""`spamguard serve` with all three front doors in one process: one model and one pool answer the milter, spamd
and HTTP alike (same score for the same bytes), each door logs one line per message and is counted in
/metrics, and SIGTERM stops the whole process cleanly."""

from __future__ import annotations

import http.client
import json
import re
import resource
import signal
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from mailstack import closed_by_server, milter_socket, require, wait_for
from processes import children_stopped
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


def _metric(metrics: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_failures_are_counted_and_logged_by_the_pools_reason(tiny_bundle: Path, tmp_path: Path) -> None:
    """With the extraction processes stopped, a message at each door times out: /metrics counts each under
    reason="timeout" (the pool's `PoolError.reason`, not one "scoring" for every failure) and each door's log
    line says reason=timeout."""
    require("spamc")
    pytest.importorskip("aiohttp")
    options = ["--milter", "inet:127.0.0.1:0", "--spamd", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    options += ["--timeout", "1", "--extract-timeout", "60"]  # a stopped extraction process is not replaced
    with running_serve(tiny_bundle, *options, log=tmp_path / "serve.log") as serve:
        with children_stopped(serve.process.pid):
            with MilterClient(f"inet:{serve.doors['milter']}") as client:
                client.negotiate()
                assert client.message(MESSAGE.replace(b"\n", b"\r\n"), queue_id="Q9").code == p.ACCEPT  # unscored
            assert spamc(serve.port("spamd"), message=MESSAGE).stdout == MESSAGE  # spamc passes it through
            connection = http.client.HTTPConnection("127.0.0.1", serve.port("http"), timeout=30)
            connection.request("POST", "/v1/check", MESSAGE, {"Content-Type": "message/rfc822"})
            response = connection.getresponse()
            assert (response.status, response.read()) == (503, b'{"error": "scoring timed out after 1 s"}')
        connection.request("GET", "/metrics")
        metrics = connection.getresponse().read().decode()
        connection.close()
        for door in ("milter", "spamd", "http"):
            assert _metric(metrics, "spamguard_errors_total", door=door, reason="timeout") == 1.0, door
        assert 'reason="scoring"' not in metrics
        wait_for(lambda: len(serve.lines("reason=timeout")) == 3, 5, "one line per door")
        assert serve.lines("queue_id=Q9 verdict=error action=accept reason=timeout")


def test_serve_milter_takes_the_shared_connection_cap(tiny_bundle: Path, tmp_path: Path) -> None:
    """`serve --milter` applies serve's --max-connections (one set of limits for every door), not the milter's
    default of 500: past 5 open connections, each new one closes one of the silent ones."""
    options = ["--milter", "inet:127.0.0.1:0", "--max-connections", "5", "--read-timeout", "60"]
    with running_serve(tiny_bundle, *options, log=tmp_path / "serve.log") as serve:
        address = f"inet:{serve.doors['milter']}"
        idle = [milter_socket(address) for _ in range(12)]
        try:
            with MilterClient(address) as client:  # an MTA connecting now is served
                client.negotiate()
                assert client.message(MESSAGE.replace(b"\n", b"\r\n"), queue_id="Q5").code == p.ACCEPT
            for sock in idle:
                sock.settimeout(0.2)
            assert sum(closed_by_server(sock) for sock in idle) >= 12 - 5 + 1
        finally:
            for sock in idle:
                sock.close()
        assert serve.lines("connection limit (5) reached: closed a milter connection")


def test_serve_and_milter_share_one_definition_of_the_server_options() -> None:
    """Every limit and milter option of `spamguard milter` is one of `spamguard serve`, with the same type,
    default and help (one definition, spamguard/cli/server_options.py); and serve checks its connection cap
    against the descriptor limit before loading a model, as the milter does."""
    from spamguard.cli.milter import milter
    from spamguard.cli.serve import serve

    def described(command: click.Command) -> dict[str, tuple]:
        return {
            p.name: (tuple(p.opts), repr(p.type), p.default, getattr(p, "help", None))
            for p in command.params
            if p.name != "listen"
        }

    assert described(milter).items() <= described(serve).items()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard descriptor limit here")
    result = CliRunner().invoke(main, ["serve", "--spamd", "0", "--max-connections", str(hard + 1)])
    assert (result.exit_code, result.output) == (
        1,
        f"Error: {hard + 1} connections need {hard + 65} file descriptors, but the limit is {hard}: lower "
        "--max-connections or raise the limit (LimitNOFILE= in the systemd unit, ulimit -n)\n",
    )


def test_http_without_the_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if `spamguard[http]` were not installed
    monkeypatch.delitem(sys.modules, "spamguard.plugins.http.server", raising=False)
    result = CliRunner().invoke(main, ["serve", "--http", "0"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: --http needs the http extra (aiohttp is missing): pip install 'spamguard[http]'\n",
    )
