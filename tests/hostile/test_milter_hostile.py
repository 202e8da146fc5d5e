"""`spamguard milter` against a hostile peer on its socket (a local user, a broken MTA): header floods, packets
left unfinished, more connections than the cap, slow drips, a message whose text extraction is slow. After each,
a normal conversation must be served (scored, within its timeout), the process must live, its memory must come
back down, and the log must stay a few lines long.

One milter for the module, with caps small enough to reach quickly (the defaults are in docs/limits.md)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mailstack import Milter, closed_by_server, milter_socket, require, running_milter, wait_for

from spamguard.plugins.milter import protocol as p
from spamguard.plugins.milter.client import MTA_ACTIONS, MTA_PROTOCOL, MilterClient

from conftest import MAIL_DIR

MESSAGE = (MAIL_DIR / "ham" / "00001.7c53336b37003a9286aba55d2945844c").read_bytes()
MiB = 1024 * 1024
OPTIONS = [
    "--max-connections", "100",
    "--max-buffer", "8M",
    "--idle-timeout", "4",
    "--read-timeout", "2",
    "--extract-timeout", "1",
    "--timeout", "10",
]  # fmt: skip
SERVED_WITHIN = 10.0  # seconds: the milter's --timeout, far below Postfix's milter_content_timeout


@pytest.fixture(scope="module")
def milter(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Milter]:
    with running_milter(tiny_bundle, *OPTIONS, log=tmp_path_factory.mktemp("hostile") / "milter.log") as running:
        _assert_served(running)  # warm: the model and the extraction processes have done their first message
        yield running


def _assert_served(milter: Milter, message: bytes = MESSAGE) -> None:
    """A normal conversation: scored (our headers inserted, accepted) within the milter's timeout."""
    start = time.monotonic()
    with MilterClient(milter.address, timeout=SERVED_WITHIN) as client:
        client.negotiate()
        reply = client.message(message)
    assert reply.code == p.ACCEPT
    assert [m.name for m in reply.modifications if m.code == p.INSHEADER] == [
        b"X-Spam-Flag", b"X-Spam-Status", b"X-Spamguard",
    ]  # fmt: skip
    assert time.monotonic() - start < SERVED_WITHIN
    assert milter.alive()


def _negotiated(milter: Milter) -> socket.socket:
    sock = milter_socket(milter.address)
    sock.sendall(p.optneg_command(MTA_ACTIONS, MTA_PROTOCOL))
    reader = p.PacketReader()
    while not list(reader.feed(sock.recv(4096))):
        pass
    return sock


def test_header_flood_is_scored_on_what_is_kept(milter: Milter) -> None:
    """64 MiB of 100 KiB headers and 100,000 small ones on one connection: the milter keeps 256 KiB or 1,000
    headers of it, answers the message (scored on those) and stays near its size."""
    before = milter.rss()
    big = p.header_command(b"X-Flood", b" " + b"x" * (100 * 1024))
    small = p.header_command(b"X-Small", b" y")
    with _negotiated(milter) as sock:
        sock.settimeout(60)
        for _ in range(64 * MiB // len(big)):
            sock.sendall(big)
        sock.sendall(small * 100_000)
        sock.sendall(p.header_command(b"Subject", b" hello") + p.encode_packet(p.EOH))
        sock.sendall(p.macro_command(p.BODYEOB, {"i": "FLOOD1"}) + p.encode_packet(p.BODYEOB, b"Hi.\r\n"))
        reader, packets = p.PacketReader(), []
        while not packets or packets[-1].code not in p.FINAL_REPLIES:
            packets.extend(reader.feed(sock.recv(65536)))
        grown = milter.rss() - before
    assert packets[-1].code == p.ACCEPT and p.INSHEADER in {packet.code for packet in packets}
    wait_for(lambda: milter.lines("queue_id=FLOOD1"), 5, "the flood's log line")
    (line,) = milter.lines("queue_id=FLOOD1")
    assert "verdict=ham" in line or "verdict=spam" in line
    assert f"dropped_headers={64 * MiB // len(big) + 100_000 + 1 - 1000}" in line  # 1,000 kept
    assert grown < 48 * MiB, f"resident memory grew {grown / MiB:.0f} MiB during a 67 MiB header flood"
    _assert_served(milter)


def test_packets_left_unfinished_are_capped_and_released(milter: Milter) -> None:
    """60 connections each holding 200 KiB of an unfinished packet (12 MiB against an 8 MiB cap): the largest
    holders are closed at the cap, the rest when their packet is 2 s old; meanwhile mail is served, and after
    they are gone the memory is handed back."""
    before = milter.rss()
    held = p.header_command(b"X-Held", b" " + b"z" * (250 * 1024))[: 200 * 1024]
    socks = [_negotiated(milter) for _ in range(60)]
    try:
        for sock in socks:
            sock.sendall(held)
        _assert_served(milter)
        wait_for(lambda: milter.lines("over the cap of 8388608"), 5, "the buffer cap's log line")
        wait_for(lambda: all(_closed_now(sock) for sock in socks), 15, "every held connection to be closed")
    finally:
        for sock in socks:
            sock.close()
    time.sleep(1.5)  # the next housekeeping round trims the heap
    assert milter.rss() - before < 16 * MiB, f"{(milter.rss() - before) / MiB:.0f} MiB not given back"
    assert milter.lines("a packet left unfinished for 2 s")
    _assert_served(milter)


def _closed_now(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    return closed_by_server(sock)


def test_more_connections_than_the_cap(milter: Milter, tmp_path: Path) -> None:
    """300 idle connections against a cap of 100: each new one closes one of the idle ones (which never
    negotiated), so an MTA connecting now is served, here OpenDKIM's miltertest; a few log lines say so."""
    require("miltertest")
    idle = [milter_socket(milter.address) for _ in range(300)]
    try:
        script = tmp_path / "check.lua"
        script.write_text(MILTERTEST_SCRIPT)
        host, port = milter.address.removeprefix("inet:").rsplit(":", 1)
        result = subprocess.run(
            ["miltertest", "-s", str(script)],
            env={"MILTER": f"inet:{port}@{host}", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        _assert_served(milter)
        open_now = sum(not _closed_now(sock) for sock in idle)
        assert open_now <= 100
    finally:
        for sock in idle:
            sock.close()
    assert 1 <= len(milter.lines("connection limit (100) reached")) <= 5  # at most 5 lines per 10 s


MILTERTEST_SCRIPT = """
conn = mt.connect(os.getenv("MILTER"), 20, 0.2)
if conn == nil then error("cannot connect") end
if mt.header(conn, "Subject", "hello") ~= nil then error("header") end
if mt.eoh(conn) ~= nil then error("eoh") end
if mt.bodystring(conn, "Hello there.\\r\\n") ~= nil then error("body") end
if mt.eom(conn) ~= nil then error("eom") end
if mt.getreply(conn) ~= SMFIR_ACCEPT then error("reply " .. mt.getreply(conn)) end
if not mt.eom_check(conn, MT_HDRINSERT, "X-Spamguard") then error("no X-Spamguard") end
mt.disconnect(conn)
"""


def test_slow_drips_and_silence_are_cut_off(milter: Milter) -> None:
    """A packet dripped a byte at a time and a connection that never negotiates are both closed 2 s after their
    last complete packet (--read-timeout), however busy the drip keeps the socket."""
    drip = p.header_command(b"Subject", b" drip" * 100)
    with _negotiated(milter) as dripping, milter_socket(milter.address) as silent:
        start = time.monotonic()
        for byte in drip:
            try:
                dripping.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        dripped = time.monotonic() - start
        assert _closed_within(dripping, 5) and _closed_within(silent, 5)
    assert dripped < 4, "the drip went on long after the read timeout"
    _assert_served(milter)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    return closed_by_server(sock)


def test_a_peer_that_never_reads_our_replies(milter: Milter) -> None:
    """A peer that asks for a reply to every header (no SMFIP_NR_HDR) and never reads them: once the socket
    buffers are full, the milter waits --read-timeout (2 s) for them to drain, then closes the connection."""
    with milter_socket(milter.address) as sock:
        sock.sendall(p.optneg_command(MTA_ACTIONS, MTA_PROTOCOL & ~p.SMFIP_NR_HDR))
        sock.settimeout(60)
        header = p.header_command(b"X-Ask", b" reply")
        start = time.monotonic()
        # the milter closes the connection, so sending more fails; the bound only ends the loop if it never does
        # (how soon the buffers fill depends on the machine's load, so the test does not time it)
        with pytest.raises(OSError):
            while time.monotonic() - start < 60:
                sock.sendall(header * 1000)
    wait_for(lambda: milter.lines("our replies unread for 2 s"), 5, "the log line")
    _assert_served(milter)


SLOW_PARSE = (
    b'From: a@example.test\r\nSubject: slow\r\nContent-Type: text/plain; name="' + b";" * 200_000 + b'"\r\n\r\nHi.\r\n'
)


def test_a_slow_message_holds_up_nobody(milter: Milter) -> None:
    """A Content-Type with 200,000 `;` inside quotes took Python's mail parser 30 to 100 s here: sent beside
    ten normal messages, it costs its own extraction process at most --extract-timeout (1 s), then gets the
    failure policy (accepted unscored) unless the parser is fast by now; the ten are scored meanwhile."""

    def one(message: bytes) -> tuple[float, bytes, bool]:
        start = time.monotonic()
        with MilterClient(milter.address, timeout=SERVED_WITHIN) as client:
            client.negotiate()
            reply = client.message(message, queue_id="SLOW1" if message is SLOW_PARSE else "")
        scored = any(m.code == p.INSHEADER for m in reply.modifications)
        return time.monotonic() - start, reply.code, scored

    with ThreadPoolExecutor(4) as pool:
        slow = pool.submit(one, SLOW_PARSE)
        time.sleep(0.2)  # the slow one reaches an extraction process first
        normal = list(pool.map(one, [MESSAGE] * 10))
        slow_seconds, slow_code, slow_scored = slow.result()
    assert all(code == p.ACCEPT and scored and seconds < SERVED_WITHIN for seconds, code, scored in normal)
    assert slow_code == p.ACCEPT and slow_seconds < SERVED_WITHIN
    wait_for(lambda: milter.lines("queue_id=SLOW1"), 5, "the slow message's log line")
    (line,) = milter.lines("queue_id=SLOW1")
    if not slow_scored:
        assert "verdict=error action=accept" in line and "error='text extraction timed out after 1 s'" in line
    _assert_served(milter)


def test_forged_header_flood_is_tempfailed(milter: Milter) -> None:
    """More forged copies of our headers than are deleted (1,000): the message cannot leave clean, so the MTA
    is told to try later, with one log line, and no scoring is spent on it."""
    with MilterClient(milter.address, timeout=SERVED_WITHIN) as client:
        client.negotiate()
        reply = client.message(b"X-Spam-Flag: NO\r\n" * 1001 + b"Subject: hi\r\n\r\nHi.\r\n", queue_id="FORGED1")
    assert reply.code == p.TEMPFAIL and reply.modifications == []
    wait_for(lambda: milter.lines("queue_id=FORGED1"), 5, "the log line")
    (line,) = milter.lines("queue_id=FORGED1")
    assert "action=tempfail" in line and "more than 1000 copies of spamguard's headers" in line
    _assert_served(milter)


def test_the_log_stayed_short(milter: Milter) -> None:
    """After every flood above (tens of thousands of packets, hundreds of connections) the log holds a few
    dozen lines: one per message, a few per kind of event every 10 s."""
    lines = milter.log.read_text().splitlines()
    assert len(lines) < 100, "\n".join(lines[-20:])
    assert milter.alive()
