"""`spamguard serve --spamd` as a real process on loopback, spoken to by Debian's spamc (exit codes, output byte
for byte, scores equal to the runtime's on the same bytes, failover between two addresses) and at the wire
level (hostile requests: answered or closed, and the server lives)."""

from __future__ import annotations

import logging
import re
import select
import socket
import statistics
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flood import flood_as_nobody, require_nobody
from mailstack import SPAMGUARD, require, wait_for
from processes import children_stopped
from servestack import Serve, running_serve, spamc, spread

from spamguard import Classifier, Verdict
from spamguard.cli import main
from spamguard.plugins import spamguard_version
from spamguard.plugins.headers import add_headers, verdict_fields
from spamguard.plugins.spamd.points import to_points

from conftest import MAIL_DIR

pytestmark = pytest.mark.integration

SAMPLE = spread(sorted(MAIL_DIR.glob("*/*")), 10)  # real mails, ham and spam, mbox `From ` line included


@pytest.fixture(scope="module")
def threshold(tiny_bundle: Path) -> float:
    """The sample's median score: a random tiny model scores everything near 0.5, so the bundle's threshold
    could put the whole sample on one side; this one puts half on each."""
    classifier = Classifier.load(tiny_bundle)
    return statistics.median(classifier.score(path.read_bytes()) for path in SAMPLE)


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path, threshold: float) -> dict[Path, Verdict]:
    classifier = Classifier.load(tiny_bundle)
    return {path: classifier.classify(path.read_bytes(), threshold=threshold) for path in SAMPLE}


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, threshold: float, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    require("spamc")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_serve(tiny_bundle, "--spamd", "127.0.0.1:0", "--threshold", repr(threshold), log=log) as running:
        yield running


def _points(verdict: Verdict) -> str:
    return to_points(verdict.score, verdict.threshold, verdict.is_spam).text().replace(" ", "")


def test_spamc_check_exit_code_and_score_are_the_runtimes(server: Serve, runtime: dict[Path, Verdict]) -> None:
    labels = set()
    for path, verdict in runtime.items():
        result = spamc(server.port("spamd"), "-c", message=path.read_bytes())
        assert (result.stdout.decode(), result.returncode) == (f"{_points(verdict)}\n", int(verdict.is_spam)), path
        labels.add(verdict.label)
    assert labels == {"spam", "ham"}
    assert len(server.lines("door=spamd verb=CHECK user='root'")) >= len(runtime)


def test_spamc_process_returns_the_pipes_headers_byte_for_byte(server: Serve, runtime: dict[Path, Verdict]) -> None:
    for path, verdict in list(runtime.items())[:4]:
        raw = path.read_bytes()
        expected = add_headers(raw, verdict_fields(verdict, spamguard_version()))
        result = spamc(server.port("spamd"), message=raw)
        assert (result.returncode, result.stdout) == (0, expected), path
        headers = spamc(server.port("spamd"), "--headers", message=raw)  # HEADERS: spamc adds the body back
        assert (headers.returncode, headers.stdout) == (0, expected), path


def test_spamc_report_symbols_ping_and_a_compressed_request(server: Serve, runtime: dict[Path, Verdict]) -> None:
    path, verdict = next(iter(runtime.items()))
    raw = path.read_bytes()
    report = spamc(server.port("spamd"), "-R", message=raw)
    lines = report.stdout.decode().splitlines()
    assert report.returncode == 0 and lines[0] == _points(verdict)
    assert lines[-1].endswith(f"SPAMGUARD              P(spam) {verdict.score:.4f}, threshold {verdict.threshold:.4f}")
    symbols = spamc(server.port("spamd"), "-y", message=raw)
    assert (symbols.returncode, symbols.stdout) == (0, b"SPAMGUARD")  # as spamd: no newline
    ping = spamc(server.port("spamd"), "-K")
    assert (ping.returncode, ping.stdout) == (0, b"SPAMD/1.5 0\n")
    # Debian's spamc is built without zlib (-z: "support not available"): compressed requests are covered at
    # the wire level below and in test_spamd_protocol.py
    packed = zlib.compress(raw)
    request = b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n%s" % (len(packed), packed)
    assert _exchange(server.port("spamd"), request) == b"SPAMD/1.1 0 EX_OK\r\nSpam: %s ; %s\r\n\r\n" % (
        b"True" if verdict.is_spam else b"False",
        to_points(verdict.score, verdict.threshold, verdict.is_spam).text().encode(),
    )


def test_spamc_fails_over_from_a_dead_address(server: Serve, runtime: dict[Path, Verdict]) -> None:
    """`-d` lists hosts for one port: 127.0.0.2 (nothing listens there) first, then the server."""
    path, verdict = next(iter(runtime.items()))
    result = spamc(server.port("spamd"), "-c", "-l", host="127.0.0.2,127.0.0.1", message=path.read_bytes())
    assert result.stdout.decode() == f"{_points(verdict)}\n"
    assert b"connect to spamd on 127.0.0.2 failed, retrying" in result.stderr


def _exchange(port: int, data: bytes, *, half_close: bool = True, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


MESSAGE = b"Subject: hello\n\nHello there.\n"
HOSTILE = {
    "unknown verb": (b"FOO SPAMC/1.5\r\n\r\n", b"SPAMD/1.0 76 Bad header line: FOO SPAMC/1.5\r\n"),
    "no blank line": (b"CHECK SPAMC/1.5\r\nContent-length: 5\r\n", b"SPAMD/1.0 76 Bad header line: (EOF during"),
    "short body": (
        b"CHECK SPAMC/1.5\r\nContent-length: 50\r\n\r\n" + MESSAGE,
        b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected 50 bytes, got 29 bytes)\r\n",
    ),
    "oversize Content-length": (
        b"PROCESS SPAMC/1.5\r\nContent-length: 99999999999\r\n\r\n" + MESSAGE,
        b"SPAMD/1.0 65 Message too large: more than 512000 bytes (at least 99999999999)\r\n",
    ),
    "zlib bomb": (
        b"PROCESS SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n%s"
        % (len(bomb := zlib.compress(b"\0" * 30_000_000, 9)), bomb),
        b"SPAMD/1.0 65 Message too large: more than 512000 bytes (at least 512001)\r\n",
    ),
    "TELL": (b"TELL SPAMC/1.5\r\nContent-length: 29\r\n\r\n" + MESSAGE, b"SPAMD/1.0 69 Service Unavailable: TELL"),
    "SKIP": (b"SKIP SPAMC/1.5\r\n\r\n", b""),
    "an HTTP client": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"SPAMD/1.0 76 Bad header line: GET / HTTP/1.1\r\n"),
    "a milter client": (b"\x00\x00\x00\x0dO\x00\x00\x00\x06", b"SPAMD/1.0 76 Bad header line: "),
}


@pytest.mark.parametrize(("request_bytes", "reply"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_requests_are_answered_and_the_server_lives(server: Serve, request_bytes: bytes, reply: bytes) -> None:
    assert _exchange(server.port("spamd"), request_bytes).startswith(reply)
    assert server.alive()
    assert spamc(server.port("spamd"), "-c", message=MESSAGE).stdout.endswith(b"/5.0\n")


def test_a_request_cut_at_every_byte_then_closed(server: Serve) -> None:
    request = b"CHECK SPAMC/1.5\r\nUser: root\r\nContent-length: 29\r\n\r\n" + MESSAGE
    for cut in range(len(request)):
        reply = _exchange(server.port("spamd"), request[:cut])
        assert reply.startswith(b"SPAMD/1.0 76 Bad header line: ("), (cut, reply)
    assert _exchange(server.port("spamd"), request).startswith(b"SPAMD/1.1 0 EX_OK\r\nSpam: ")


def test_a_request_sent_byte_by_byte(server: Serve) -> None:
    request = b"CHECK SPAMC/1.5\r\nContent-length: 29\r\n\r\n" + MESSAGE
    with socket.create_connection(("127.0.0.1", server.port("spamd")), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(request)):
            sock.sendall(request[index : index + 1])
            time.sleep(0.001)
        reply = sock.recv(65536)  # no half-close: Content-length ends the request
    assert reply.startswith(b"SPAMD/1.1 0 EX_OK\r\nSpam: ")


def test_timeouts_and_scoring_failures(tiny_bundle: Path, tmp_path: Path) -> None:
    options = ["--spamd", "127.0.0.1:0", "--read-timeout", "3", "--timeout", "1"]
    options += ["--extract-timeout", "60"]  # a stopped extraction process is not replaced during the test
    with running_serve(tiny_bundle, *options, log=tmp_path / "serve.log") as slow:
        port = slow.port("spamd")
        # a client that does not finish its request in time is told so and closed
        started = time.monotonic()
        assert _exchange(port, b"CHECK SPAMC/1.5\r\n", half_close=False) == (
            b"SPAMD/1.0 79 Timeout: (request not complete after 3 s)\r\n"
        )
        assert time.monotonic() - started < 30
        # a client sending a byte a second: the deadline runs from the connection, not from its last byte
        with socket.create_connection(("127.0.0.1", port), timeout=30) as drip:
            started = time.monotonic()
            for byte in b"CHECK SPAMC/1.5\r\nContent-length: 29\r\n":
                drip.sendall(bytes([byte]))
                if select.select([drip], [], [], 1.0)[0]:  # the server answered
                    break
            assert drip.recv(65536) == b"SPAMD/1.0 79 Timeout: (request not complete after 3 s)\r\n"
            assert time.monotonic() - started < 10
        # scoring that cannot finish in time (its extraction processes stopped): EX_TEMPFAIL, never a verdict;
        # spamc passes the message through
        with children_stopped(slow.process.pid):
            assert _exchange(port, b"CHECK SPAMC/1.5\r\nContent-length: 29\r\n\r\n" + MESSAGE) == (
                b"SPAMD/1.0 75 Temporary failure: scoring timed out after 1 s\r\n"
            )
            fallback = spamc(port, message=MESSAGE)
            assert (fallback.returncode, fallback.stdout) == (0, MESSAGE)
            # spamc reads no status code: an error line followed by the close is an I/O error to it (as with
            # spamd's own errors), which `-x` turns into its exit code and `--filter-retries` into a retry on the
            # next host
            assert spamc(port, "-x", message=MESSAGE).returncode == 74
        wait_for(lambda: slow.lines("verdict=error"), 5, "the log line")
        (line, *_) = slow.lines("verdict=error")
        assert "reason=timeout reply=75" in line and "scoring timed out" in line


def test_spamc_is_served_while_another_user_holds_every_connection(
    tiny_bundle: Path, threshold: float, runtime: dict[Path, Verdict], tmp_path: Path
) -> None:
    """A local user (nobody) opens three times the connection cap and holds each with the start of a request:
    every new connection closes one of theirs, so spamc (root) is still answered, with the runtime's scores. Before
    the connection table, the cap refused spamc with EX_TEMPFAIL (`0/0`) for as long as the flood held."""
    require("spamc")
    require_nobody()
    options = ["--spamd", "127.0.0.1:0", "--max-connections", "20", "--read-timeout", "60", "--max-buffer", "1M"]
    with running_serve(tiny_bundle, *options, "--threshold", repr(threshold), log=tmp_path / "serve.log") as serve:
        port = serve.port("spamd")
        with flood_as_nobody(port, 60, b"CHECK SPAMC/1.5\r\nContent-length: 99\r\n\r\n") as flood:
            assert flood.opened == 60  # each accepted, closing an older one of the same user's past the cap
            checked = list(runtime.items())[:5]
            for path, verdict in checked:
                result = spamc(port, "-c", message=path.read_bytes())
                assert (result.stdout.decode(), result.returncode) == (f"{_points(verdict)}\n", int(verdict.is_spam))
            # the first spamc took one of the flood's places; the others found the place it left, unless they
            # came before the server was done with the one before
            closed = flood.closed()
            print(f"another user's 60 connections: {closed} closed by the server, {len(checked)} spamc runs scored")
            assert 60 - 20 + 1 <= closed <= 60 - 20 + len(checked)
        # requests held unfinished: 3 x 400 KB against a 1 MiB cap; the largest holder goes, spamc is served
        holders = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        try:
            for sock in holders:
                sock.sendall(b"CHECK SPAMC/1.5\r\nContent-length: 500000\r\n\r\n" + b"z" * 400_000)
            wait_for(lambda: serve.lines("over the cap of 1048576"), 5, "the buffer cap's log line")
            path, verdict = checked[0]
            assert spamc(port, "-c", message=path.read_bytes()).stdout.decode() == f"{_points(verdict)}\n"
        finally:
            for sock in holders:
                sock.close()
        (line,) = serve.lines("over the cap of 1048576")
        assert "closed the largest holder (a spamd connection," in line and "from uid 0)" in line
        assert serve.alive()
    lines = serve.lines("connection limit (20) reached")
    assert lines and all("closed a spamd connection from uid 65534" in line for line in lines)
    assert len(lines) <= 5  # throttled: the rest is counted in summary lines (at the latest when it stops)
    more = [re.search(r"(\d+) more connection-limit events", line) for line in serve.lines("more connection-limit")]
    assert len(lines) + sum(int(m.group(1)) for m in more if m) == closed  # each closed one is an event


def test_an_internal_error_is_one_log_line(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug met while serving a connection (here one planted in the session) closes that connection with one
    log line naming the exception, no traceback; the server goes on."""
    import asyncio

    from spamguard.plugins.spamd.server import SpamdServer
    from spamguard.plugins.spamd.session import SpamdSession, SpamdSettings

    def broken(self: SpamdSession, data: bytes) -> None:
        raise RuntimeError("planted bug\nwith a second line")

    monkeypatch.setattr(SpamdSession, "feed", broken)

    async def scenario() -> bytes:
        from spamguard.plugins.frontdoor import InetAddress

        spamd = SpamdServer(None, SpamdSettings())  # type: ignore[arg-type]  # never reaches the pool
        server = await spamd.start(InetAddress("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING SPAMC/1.5\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        spamd.table.stop()
        return reply

    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) == b""  # closed without a word: spamc passes the message through
    lines = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert [r.getMessage() for r in lines] == ["spamd: closing connection: internal error: RuntimeError: planted bug"]
    assert lines[0].exc_info is None and all(r.exc_info is None for r in caplog.records)


def test_serve_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["serve"])
    assert result.exit_code == 2 and "Error: give at least one of --milter, --spamd, --http" in result.output
    result = runner.invoke(main, ["serve", "--spamd", "localhost"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: bad spamd address 'localhost': use HOST:PORT, [IPv6]:PORT or PORT (on 127.0.0.1)\n",
    )
    (tmp_path / "empty").write_text("\n")
    result = runner.invoke(main, ["serve", "--http", "0", "--token-file", str(tmp_path / "empty")])
    assert result.output == f"Error: the token file {tmp_path / 'empty'} must hold one token: printable, no spaces\n"
    result = runner.invoke(main, ["serve", "--http", "0", "--token-file", str(tmp_path / "missing")])
    assert result.output == f"Error: cannot read the token file {tmp_path / 'missing'}: No such file or directory\n"


def test_a_port_in_use_is_one_line(tiny_bundle: Path, server: Serve) -> None:
    address = server.doors["spamd"]
    result = subprocess.run(
        [SPAMGUARD, "serve", "--model", str(tiny_bundle), "--spamd", address],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        1,
        f"Error: cannot listen on spamd {address}: Address already in use",
    )
