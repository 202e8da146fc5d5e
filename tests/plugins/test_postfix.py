"""The milter behind a real Postfix on loopback: mail sent with smtplib, relayed to an aiosmtpd sink.

Scores of a random tiny model sit close together, so the reject test first measures the scores Postfix's
milter conversation actually produces for a sample (read back from the delivered headers) and puts the reject
threshold between the highest and the lowest."""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import smtplib
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailstack import (
    SPAMGUARD,
    MailStack,
    delivered_by_tag,
    mail_stack,
    running_milter,
    send_concurrently,
    tagged,
    wait_for,
)

from conftest import MAIL_DIR

pytestmark = pytest.mark.integration

SENDER = "sender@example.test"
RECIPIENT = "rcpt@example.net"
MAILS = sorted(MAIL_DIR.glob("*/*"))  # the committed slice of real mail, ham and spam
SAMPLE = MAILS[::3]  # 16 of them
CONTENT_FILTER = Path(__file__).resolve().parents[2] / "docs" / "postfix-content-filter.sh"
OUR_LINES = re.compile(
    rb"X-Spam-Flag: (YES|NO)\r\nX-Spam-Status: (Yes|No), score=\d\.\d\d required=\d\.\d\d tests=SPAMGUARD "
    rb"autolearn=no version=\S+\r\nX-Spamguard: label=(spam|ham) score=\d\.\d{4} threshold=\d\.\d{4}"
    rb" kind=mail stage=full model=tiny version=\S+\r\n"
    rb"Received: from "
)


@pytest.fixture(scope="module")
def stack() -> Iterator[MailStack]:
    with mail_stack() as running:
        yield running


def send(port: int, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.sendmail(SENDER, [RECIPIENT], raw)


def wait_delivered(stack: MailStack, count: int, timeout: float = 60) -> dict[str, list[email.message.Message]]:
    wait_for(lambda: len(stack.delivered()) >= count, timeout, f"{count} messages at the sink")
    time.sleep(0.3)  # anything extra (a duplicate) would arrive now
    return delivered_by_tag(stack)


def score_of(message: email.message.Message) -> float:
    match = re.search(r"score=([0-9.]+)", str(message["X-Spamguard"]))
    assert match, message["X-Spamguard"]
    return float(match.group(1))


@pytest.fixture(scope="module")
def postfix_scores(stack: MailStack, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[Path, float]:
    """Send the sample through Postfix and the milter; check what arrives; return the scores it carries."""
    stack.clear_sink()
    log = tmp_path_factory.mktemp("milter") / "milter.log"
    forged = b"X-Spam-Flag: YES\nx-spamguard: label=spam score=1.0\nX-Spam-Status: Yes,\n forged\n"
    with running_milter(tiny_bundle, port=stack.milter_port, log=log) as milter:
        for index, path in enumerate(SAMPLE):
            raw = path.read_bytes()
            send(stack.port_milter, tagged(forged + raw if index == 0 else raw, str(index)))
        arrived = wait_delivered(stack, len(SAMPLE))
        lines = milter.lines()
    assert sorted(arrived) == sorted(str(i) for i in range(len(SAMPLE)))
    queue_ids = set()
    for path in stack.delivered():  # as Postfix wrote them: our lines at the top, "Name: value", CRLF
        assert OUR_LINES.match(path.read_bytes()), path.read_bytes()[:300]
    for tag, copies in arrived.items():
        assert len(copies) == 1, f"message {tag} arrived {len(copies)} times"
        message = copies[0]
        for name in ("X-Spam-Flag", "X-Spam-Status", "X-Spamguard"):
            assert len(message.get_all(name, [])) == 1, (tag, name)
        assert message["X-Spamguard"].startswith("label=") and "model=tiny" in message["X-Spamguard"]
        assert message["X-Spam-Flag"] == ("YES" if "label=spam" in message["X-Spamguard"] else "NO")
        queue_ids.update(re.findall(r"with ESMTP id (\w+)", str(message.get_all("Received"))))
    # the forged copies are gone: the one X-Spamguard left is ours
    assert "score=1.0\n" not in str(arrived["0"][0]["X-Spamguard"]) and "forged" not in arrived["0"][0].as_string()
    # one log line per message, carrying Postfix's queue id
    assert len(lines) == len(SAMPLE)
    logged = {re.search(r"queue_id=(\w+)", line).group(1) for line in lines}  # type: ignore[union-attr]
    assert logged <= queue_ids and "NOQUEUE" not in logged
    assert all(
        re.search(r"verdict=(spam|ham) score=0\.\d{4} kind=mail stage=full action=accept ms=\d+\.\d", line)
        for line in lines
    )
    return {SAMPLE[int(tag)]: score_of(copies[0]) for tag, copies in arrived.items()}


def test_delivered_mail_carries_the_headers(postfix_scores: dict[Path, float]) -> None:
    assert len(postfix_scores) == len(SAMPLE)
    assert len(set(postfix_scores.values())) > 1  # the model did look at the messages


def test_reject_above_the_reject_threshold(
    stack: MailStack, tiny_bundle: Path, postfix_scores: dict[Path, float], tmp_path: Path
) -> None:
    # the first message of the sample went through with forged headers before it: its score is another text's
    ranked = sorted((path for path in postfix_scores if path != SAMPLE[0]), key=postfix_scores.__getitem__)
    low, high = ranked[0], ranked[-1]
    cut = (postfix_scores[low] + postfix_scores[high]) / 2
    stack.clear_sink()
    options = ["--reject-threshold", f"{cut:.6f}", "--reject-message", "Looks like spam to us"]
    with running_milter(tiny_bundle, *options, port=stack.milter_port, log=tmp_path / "m.log") as milter:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(stack.port_milter, tagged(high.read_bytes(), "high"))
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error == b"5.7.1 Looks like spam to us"
        send(stack.port_milter, tagged(low.read_bytes(), "low"))
        arrived = wait_delivered(stack, 1)
        assert list(arrived) == ["low"]
        assert [line.split("action=")[1].split()[0] for line in milter.lines()] == ["reject", "accept"]


def _kill_during_data(stack: MailStack, port: int, milter_pid: int, raw: bytes) -> tuple[int, bytes]:
    """Open the SMTP transaction (Postfix connects to the milter and negotiates), freeze the milter, send the
    data (Postfix waits for the milter's end-of-message reply), then kill the milter: Postfix sees the
    connection die in the middle of the message."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo()
        smtp.mail(SENDER)
        smtp.rcpt(RECIPIENT)
        os.kill(milter_pid, signal.SIGSTOP)
        result: dict[str, tuple[int, bytes]] = {}
        sender = threading.Thread(target=lambda: result.setdefault("reply", smtp.data(raw)))
        sender.start()
        time.sleep(1.0)
        os.kill(milter_pid, signal.SIGKILL)
        sender.join(60)
        return result["reply"]


def test_killed_milter_leaves_postfix_to_its_default_action(
    stack: MailStack, tiny_bundle: Path, tmp_path: Path
) -> None:
    stack.clear_sink()
    raw = SAMPLE[0].read_bytes()
    # milter_default_action = accept: the message goes through, without our headers
    with running_milter(tiny_bundle, port=stack.milter_port, log=tmp_path / "a.log") as milter:
        code, _ = _kill_during_data(stack, stack.port_milter, milter.process.pid, tagged(raw, "accepted"))
        milter.process.wait(10)
    assert code == 250
    arrived = wait_delivered(stack, 1)
    assert list(arrived) == ["accepted"] and arrived["accepted"][0]["X-Spamguard"] is None
    # milter_default_action = tempfail: the client is told to retry and keeps the message; nothing is queued
    with running_milter(tiny_bundle, port=stack.milter_port, log=tmp_path / "t.log") as milter:
        code, text = _kill_during_data(stack, stack.port_tempfail, milter.process.pid, tagged(raw, "tempfailed"))
        milter.process.wait(10)
    assert code == 451 and text.startswith(b"4.7.1")
    time.sleep(1)
    assert list(delivered_by_tag(stack)) == ["accepted"]
    wait_for(stack.queue_empty, 10, "an empty queue")
    assert "milter" in stack.log() and "inet:127.0.0.1" in stack.log()


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def test_load_none_lost_none_duplicated(
    stack: MailStack, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [MAILS[i % len(MAILS)] for i in range(300)]  # 300 messages: the real mails, each about 6 times
    plain = [tagged(path.read_bytes(), f"plain-{i}") for i, path in enumerate(files)]
    filtered = [tagged(path.read_bytes(), f"milter-{i}") for i, path in enumerate(files)]
    stack.clear_sink()
    with running_milter(tiny_bundle, port=stack.milter_port, log=tmp_path / "m.log") as milter:
        plain_wall, plain_lat = send_concurrently(stack.port_plain, plain, clients=8)
        milter_wall, milter_lat = send_concurrently(stack.port_milter, filtered, clients=8)
        arrived = wait_delivered(stack, 2 * len(files), timeout=180)
        scored_ms = [float(line.split("ms=")[1].split()[0]) for line in milter.lines()]
        assert milter.alive()
    counts = Counter({tag: len(copies) for tag, copies in arrived.items()})
    assert len(counts) == 2 * len(files) and set(counts.values()) == {1}, "lost or duplicated messages"
    for tag, copies in arrived.items():
        assert (copies[0]["X-Spamguard"] is not None) == tag.startswith("milter-"), tag
    assert len(scored_ms) == len(files)
    with capsys.disabled():  # the figures belong in the test run's output, not only on failure
        print(
            f"\nload: {len(files)} messages, 8 concurrent SMTP clients, tiny model\n"
            f"  without milter: {len(files) / plain_wall:.1f} msg/s, p50 {statistics.median(plain_lat) * 1000:.0f} ms,"
            f" p95 {_p95(plain_lat) * 1000:.0f} ms\n"
            f"  with milter:    {len(files) / milter_wall:.1f} msg/s,"
            f" p50 {statistics.median(milter_lat) * 1000:.0f} ms,"
            f" p95 {_p95(milter_lat) * 1000:.0f} ms\n"
            f"  added latency p95 {(_p95(milter_lat) - _p95(plain_lat)) * 1000:.0f} ms;"
            f" milter's own end-of-message to verdict p95 {_p95(scored_ms):.1f} ms"
        )


def test_content_filter_script_filters_and_reinjects(stack: MailStack, tiny_bundle: Path, tmp_path: Path) -> None:
    """The after-queue recipe of docs/mail-integration.md: the script pipe(8) runs, here started directly
    (pipe(8) would run it as an unprivileged user, and this machine's Python lives where such a user cannot
    reach), reinjecting into this Postfix with the real sendmail(1)."""
    stack.clear_sink()
    env = {"SENDMAIL": f"/usr/sbin/sendmail -C {stack.root / 'pf' / 'etc'}", "PATH": "/usr/sbin:/usr/bin:/bin"}
    command = [str(CONTENT_FILTER), "-f", SENDER, "--", RECIPIENT]
    with running_milter(tiny_bundle, port=stack.milter_port, log=tmp_path / "m.log") as milter:
        env["SPAMGUARD_PIPE"] = f"{SPAMGUARD} pipe --connect {milter.address} --fail-closed"
        done = subprocess.run(command, input=tagged(SAMPLE[1].read_bytes(), "filtered"), env=env, timeout=60)
        assert done.returncode == 0
        arrived = wait_delivered(stack, 1)
    assert list(arrived) == ["filtered"] and arrived["filtered"][0]["X-Spamguard"].startswith("label=")
    # the scorer is gone: fail-closed exits 75 (pipe(8) defers the message) and nothing is reinjected
    done = subprocess.run(command, input=tagged(SAMPLE[1].read_bytes(), "deferred"), env=env, timeout=60)
    assert done.returncode == 75
    time.sleep(1.5)
    assert list(delivered_by_tag(stack)) == ["filtered"]


def test_size_cap_skips_the_rest_of_the_body_and_delivers_it_all(
    stack: MailStack, tiny_bundle: Path, tmp_path: Path
) -> None:
    """Above --max-size the milter tells Postfix to skip the rest of the body (SMFIR_SKIP): the message is
    scored on its start and still delivered whole, byte for byte as Postfix delivers it without the milter."""
    raw = (MAIL_DIR / "spam" / "00341.99b463b92346291f5848137f4a253966").read_bytes()  # 232 KB
    stack.clear_sink()
    with running_milter(tiny_bundle, "--max-size", "4K", port=stack.milter_port, log=tmp_path / "m.log") as milter:
        send(stack.port_milter, tagged(raw, "big"))
        send(stack.port_plain, tagged(raw, "control"))
        wait_delivered(stack, 2)
        line = milter.lines()[0]
    assert "truncated=yes" in line and int(line.split("size=")[1].split()[0]) < len(raw) // 2  # skipped
    bodies = {}
    for path in stack.delivered():
        head, body = path.read_bytes().split(b"\r\n\r\n", 1)
        bodies[re.search(rb"X-Test-Id: (\w+)", head).group(1)] = (head, body)  # type: ignore[union-attr]
    assert b"\r\nX-Spamguard: label=" in b"\r\n" + bodies[b"big"][0]
    assert bodies[b"big"][1] == bodies[b"control"][1] and len(bodies[b"big"][1]) > 200_000
