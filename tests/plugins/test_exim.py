"""Exim 4.96 (Debian's exim4-daemon-heavy) with `spamd_address` pointing at `spamguard serve --spamd`: the ACL of
MAIL-TESTBED-SPAMD.md adds X-Spam-Score/X-Spam-Report and rejects above a score; mail sent with smtplib is
delivered to a Maildir. Exim speaks SPAMC/1.2 (REPORT, no Content-length in the reply) and compares the numbers
itself, so these tests also prove the points mapping: what Exim reads is what spamguard decided."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailstack import free_port, tagged, wait_for
from servestack import Exim, Serve, require_exim, running_exim, running_serve, spread

from spamguard import Classifier
from spamguard.plugins.spamd.points import to_points

from conftest import MAIL_DIR

pytestmark = pytest.mark.integration

SAMPLE = spread(sorted(MAIL_DIR.glob("*/*")), 10)
SENDER, RECIPIENT = "sender@example.test", "rcpt@example.test"
LOG_LINE = re.compile(r"verb=REPORT user='nobody' verdict=(\w+) score=([\d.]+) points=([\d.]+)")


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    require_exim()
    classifier = Classifier.load(tiny_bundle)
    threshold = statistics.median(classifier.score(path.read_bytes()) for path in SAMPLE)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_serve(tiny_bundle, "--spamd", "127.0.0.1:0", "--threshold", repr(threshold), log=log) as running:
        yield running


def spamd_address(server: Serve) -> str:
    return f"127.0.0.1 {server.port('spamd')}"


def send(exim: Exim, raw: bytes) -> tuple[int, bytes]:
    """The server's final reply to the message (smtplib's `data()`, which does not raise on a rejection)."""
    with smtplib.SMTP("127.0.0.1", exim.port, timeout=60) as smtp:
        smtp.ehlo("client.example.test")
        smtp.mail(SENDER)
        smtp.rcpt(RECIPIENT)
        return smtp.data(raw)


def delivered(exim: Exim) -> dict[str, email.message.Message]:
    found = {}
    for path in exim.delivered():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        found[str(message["X-Test-Id"])] = message
    return found


def test_delivered_mail_carries_spamguards_score_and_report(server: Serve) -> None:
    with running_exim(spamd_address(server), reject_tenths=1000) as exim:  # 1000 tenths: never reject
        before = len(server.lines("verb=REPORT"))
        for index, path in enumerate(SAMPLE):
            assert send(exim, tagged(path.read_bytes(), f"m{index}"))[0] == 250
        wait_for(lambda: len(delivered(exim)) == len(SAMPLE), 30, "every message in the Maildir")
        mails = delivered(exim)
    lines = server.lines("verb=REPORT")[before:]
    assert len(lines) == len(SAMPLE)  # one spamd request per message (the ACL's two `spam =` share it)
    logged = sorted(LOG_LINE.search(line).group(3) for line in lines)  # type: ignore[union-attr]
    shown = sorted(str(m["X-Spam-Score"]).split()[0] for m in mails.values())
    assert shown == logged  # Exim shows the points spamguard computed, for every message
    labels = {LOG_LINE.search(line).group(1) for line in lines}  # type: ignore[union-attr]
    assert labels == {"spam", "ham"}
    for message in mails.values():
        report = str(message["X-Spam-Report"])
        assert "Content analysis details:" in report and "SPAMGUARD" in report and "P(spam)" in report
        score = float(str(message["X-Spam-Score"]).split()[0])
        bar = str(message["X-Spam-Score"]).split()[1]
        assert bar == "(" + "+" * int(score) + ")" if score >= 1 else bar == "(/)"


def test_rejects_above_a_score_and_the_client_sees_it(server: Serve) -> None:
    """Reject above the middle of the points the sample gets through Exim (read from the log of a first pass),
    so that part of the sample is rejected and part delivered, each as spamguard's points say."""
    with running_exim(spamd_address(server), reject_tenths=1000) as exim:
        start = len(server.lines("verb=REPORT"))
        for index, path in enumerate(SAMPLE):
            send(exim, tagged(path.read_bytes(), f"probe{index}"))
    points = sorted(float(LOG_LINE.search(line).group(3)) for line in server.lines("verb=REPORT")[start:])  # type: ignore[union-attr]
    if points[0] == points[-1]:
        pytest.skip(f"the tiny model gave every message {points[0]} points")
    reject_tenths = round(statistics.median(points) * 10)
    expected = {}
    with running_exim(spamd_address(server), reject_tenths=reject_tenths) as exim:
        for index, path in enumerate(SAMPLE):
            code, text = send(exim, tagged(path.read_bytes(), f"r{index}"))
            line = server.lines("verb=REPORT")[-1]
            tenths = round(float(LOG_LINE.search(line).group(3)) * 10)  # type: ignore[union-attr]
            expected[f"r{index}"] = tenths > reject_tenths
            if tenths > reject_tenths:
                assert (code, text) == (550, f"Rejected as spam (score {tenths // 10}.{tenths % 10})".encode())
            else:
                assert code == 250
        wait_for(lambda: len(delivered(exim)) == list(expected.values()).count(False), 30, "deliveries")
        assert set(delivered(exim)) == {tag for tag, rejected in expected.items() if not rejected}
        assert "rejected after DATA" in exim.log()
    assert any(expected.values()) and not all(expected.values())


def test_points_agree_with_spamguards_verdict_as_exim_reads_them(server: Serve) -> None:
    """Exim's `spam` condition is true when score >= required: `spam = nobody` (without `:true`) must hold
    exactly for the messages spamguard called spam."""
    with running_exim(spamd_address(server), "SPAMCOND=nobody", reject_tenths=-1) as exim:
        start = len(server.lines("verb=REPORT"))
        codes = [send(exim, tagged(path.read_bytes(), f"c{index}"))[0] for index, path in enumerate(SAMPLE)]
    verdicts = [LOG_LINE.search(line).group(1) for line in server.lines("verb=REPORT")[start:]]  # type: ignore[union-attr]
    # with reject above -0.1 points, Exim rejects exactly what its `spam` condition called spam
    assert [code == 550 for code in codes] == [verdict == "spam" for verdict in verdicts]
    assert to_points(0.5, 0.5, True).text() == "5.0 / 5.0"


def test_server_down_defers_or_accepts_as_configured(server: Serve) -> None:
    dead = f"127.0.0.1 {free_port()}"
    raw = tagged(SAMPLE[0].read_bytes(), "down")
    with running_exim(dead) as exim:
        assert send(exim, raw) == (451, b"Temporary local problem - please try later")
        assert "all spamd servers failed" in exim.log("panic")
    with running_exim(dead, "SPAMCOND=nobody:true/defer_ok") as exim:
        assert send(exim, raw)[0] == 250
        wait_for(lambda: len(delivered(exim)) == 1, 30, "the delivery")
        message = delivered(exim)["down"]
        assert message["X-Spam-Score"] is None and message["X-Spam-Report"] is None


def test_a_dead_server_listed_first_is_skipped(server: Serve) -> None:
    addresses = f"127.0.0.1 {free_port()} : {spamd_address(server)}"
    with running_exim(addresses) as exim:
        for index, path in enumerate(SAMPLE[:4]):
            assert send(exim, tagged(path.read_bytes(), f"f{index}"))[0] == 250
        wait_for(lambda: len(delivered(exim)) == 4, 30, "the deliveries")
        assert all(m["X-Spam-Score"] is not None for m in delivered(exim).values())
