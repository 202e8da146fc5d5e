"""`spamguard milter` as a real process on loopback (and a unix socket), spoken to at the wire level: packets
cut into single bytes, broken packets (the connection closes, the process lives), the failure policies, and
OpenDKIM's miltertest as an independent MTA-side implementation of the protocol."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import processes
import pytest
from click.testing import CliRunner
from mailstack import (
    SPAMGUARD,
    Milter,
    closed_by_server,
    milter_socket,
    public_dir,
    require,
    running_milter,
    wait_for,
)

from spamguard.cli import main
from spamguard.errors import BundleError
from spamguard.plugins.milter import protocol as p
from spamguard.plugins.milter.address import parse_listen
from spamguard.plugins.milter.client import MTA_ACTIONS, MTA_PROTOCOL, MilterClient
from spamguard.registry import resolve

from conftest import MAIL_DIR

MESSAGE = (MAIL_DIR / "ham" / "00001.7c53336b37003a9286aba55d2945844c").read_bytes()
FORGED = b"X-Spam-Flag: YES\nSubject: hello\nx-spamguard: label=spam\n\nHello there.\n"


@pytest.fixture(scope="module")
def milter(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Milter]:
    with running_milter(tiny_bundle, log=tmp_path_factory.mktemp("milter") / "milter.log") as running:
        yield running


def _served(milter: Milter) -> p.Packet | None:
    with MilterClient(milter.address) as client:
        client.negotiate()
        return client.message(MESSAGE).code


def test_a_message_gets_our_headers_and_the_forged_ones_deleted(milter: Milter) -> None:
    with MilterClient(milter.address) as client:
        client.negotiate()
        reply = client.message(FORGED, queue_id="4XYZ")
    assert reply.code == p.ACCEPT
    changes = [(m.code, m.index, m.name, m.value) for m in reply.modifications]
    assert changes[:2] == [(p.CHGHEADER, 1, b"x-spamguard", b""), (p.CHGHEADER, 1, b"X-Spam-Flag", b"")]
    assert [(code, index, name) for code, index, name, _ in changes[2:]] == [
        (p.INSHEADER, 0, b"X-Spam-Flag"),
        (p.INSHEADER, 1, b"X-Spam-Status"),
        (p.INSHEADER, 2, b"X-Spamguard"),
    ]
    wait_for(lambda: milter.lines("queue_id=4XYZ"), 5, "the log line")
    assert "model=tiny" in changes[4][3].decode()


def test_packets_cut_into_single_bytes(milter: Milter) -> None:
    with MilterClient(milter.address) as client:
        client.negotiate()
        expected = client.message(FORGED).modifications
    conversation = (
        p.optneg_command(MTA_ACTIONS, MTA_PROTOCOL)
        + p.header_command(b"X-Spam-Flag", b" YES")
        + p.header_command(b"Subject", b" hello")
        + p.header_command(b"x-spamguard", b" label=spam")
        + p.encode_packet(p.EOH)
        + p.encode_packet(p.BODY, b"Hello there.\r\n")
        + p.encode_packet(p.BODYEOB)
    )
    with milter_socket(milter.address) as sock:
        for index in range(len(conversation)):
            sock.sendall(conversation[index : index + 1])
            time.sleep(0.001)
        reader = p.PacketReader()
        packets: list[p.Packet] = []
        while not packets or packets[-1].code != p.ACCEPT:
            packets.extend(reader.feed(sock.recv(65536)))
    assert [packet.code for packet in packets[:2]] == [p.OPTNEG, p.CONTINUE]  # the body chunk's reply
    assert [p.decode_modification(packet) for packet in packets[2:-1]] == expected


BAD_STREAMS = {
    "length 4 GiB": b"\xff\xff\xff\xff" + b"O",
    "length zero": b"\0\0\0\0",
    "length over the cap": (p.MAX_PACKET + 1).to_bytes(4, "big") + b"B" * 100,
    "command before negotiation": p.header_command(b"Subject", b"x"),
    "unknown command": p.optneg_command(MTA_ACTIONS, MTA_PROTOCOL) + p.encode_packet(b"Z", b"?"),
    "header without terminator": p.optneg_command(MTA_ACTIONS, MTA_PROTOCOL) + p.encode_packet(p.HEADER, b"Subj"),
    "short negotiation": p.encode_packet(p.OPTNEG, b"\0\0\0\6"),
    "an HTTP client": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


@pytest.mark.parametrize("stream", BAD_STREAMS.values(), ids=BAD_STREAMS.keys())
def test_bad_packets_close_the_connection_and_the_server_lives(milter: Milter, stream: bytes) -> None:
    with milter_socket(milter.address) as sock:
        sock.sendall(stream)
        assert closed_by_server(sock)
    # logged, a few lines per 10 s at most (the eight streams here arrive faster than that)
    wait_for(lambda: milter.lines("closing connection: protocol error: "), 5, "a protocol error log line")
    assert milter.alive() and _served(milter) == p.ACCEPT


def test_peer_vanishing_inside_a_packet(milter: Milter) -> None:
    with milter_socket(milter.address) as sock:
        sock.sendall(p.optneg_command(MTA_ACTIONS, MTA_PROTOCOL) + p.header_command(b"Subject", b"x" * 500)[:100])
        sock.recv(1024)
    wait_for(lambda: milter.lines("connection closed inside a packet"), 5, "the log line")
    assert milter.alive() and _served(milter) == p.ACCEPT


MILTERTEST_SCRIPT = """
conn = mt.connect(os.getenv("MILTER"), 20, 0.2)
if conn == nil then error("cannot connect") end
-- steps the milter negotiated away raise "negotiated SMFIP_NO..." errors: skip them, as an MTA does
local ok, err = pcall(mt.conninfo, conn, "client.example", "127.0.0.1")
if not ok and not string.find(err, "SMFIP_NO") then error(err) end
if mt.header(conn, "Subject", "hello") ~= nil then error("header") end
if mt.header(conn, "X-Spam-Flag", "YES") ~= nil then error("header") end
if mt.eoh(conn) ~= nil then error("eoh") end
if mt.bodystring(conn, "Hello there.\\r\\n") ~= nil then error("body") end
if mt.eom(conn) ~= nil then error("eom") end
if mt.getreply(conn) ~= SMFIR_ACCEPT then error("reply " .. mt.getreply(conn)) end
if not mt.eom_check(conn, MT_HDRDELETE, "X-Spam-Flag") then error("forged X-Spam-Flag not deleted") end
if not mt.eom_check(conn, MT_HDRINSERT, "X-Spamguard") then error("no X-Spamguard") end
if not mt.eom_check(conn, MT_HDRINSERT, "X-Spam-Status") then error("no X-Spam-Status") end
mt.echo("X-Spamguard:" .. mt.getheader(conn, "X-Spamguard", 0))  -- the value carries its leading space
mt.disconnect(conn)
"""


def test_miltertest_speaks_to_it(milter: Milter, tmp_path: Path) -> None:
    require("miltertest")
    script = tmp_path / "check.lua"
    script.write_text(MILTERTEST_SCRIPT)
    target = parse_listen(milter.address)
    env = {**os.environ, "MILTER": f"inet:{target.port}@{target.host}"}
    result = subprocess.run(["miltertest", "-s", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "X-Spamguard: label=" in result.stdout and "model=tiny" in result.stdout


@pytest.mark.parametrize(("fail_closed", "code"), [(False, p.ACCEPT), (True, p.TEMPFAIL)])
def test_scoring_timeout_accepts_or_tempfails(
    tiny_bundle: Path, tmp_path: Path, fail_closed: bool, code: bytes
) -> None:
    options = ["--timeout", "1", "--extract-timeout", "60", *(["--fail-closed"] if fail_closed else [])]
    with running_milter(tiny_bundle, *options, log=tmp_path / "m.log") as milter:
        with processes.children_stopped(milter.process.pid), MilterClient(milter.address) as client:
            client.negotiate()
            reply = client.message(FORGED, queue_id="Q1")
        wait_for(lambda: milter.lines("queue_id=Q1"), 5, "the log line")
        line = milter.lines("queue_id=Q1")[0]
    assert reply.code == code
    # fail-open still deletes the forged copies, and adds nothing of its own
    assert {m.code for m in reply.modifications} == (set() if fail_closed else {p.CHGHEADER})
    action = "tempfail" if fail_closed else "accept"
    assert f"verdict=error action={action}" in line and "error='scoring timed out after 1 s'" in line


def test_reject_threshold_and_message(tiny_bundle: Path, tmp_path: Path) -> None:
    options = ["--reject-threshold", "0", "--reject-message", "451 4.7.1 Try again in an hour"]
    with (
        running_milter(tiny_bundle, *options, log=tmp_path / "m.log") as milter,
        MilterClient(milter.address) as client,
    ):
        client.negotiate()
        reply = client.message(MESSAGE)
    assert (reply.code, reply.text) == (p.REPLYCODE, "451 4.7.1 Try again in an hour")


def test_unix_socket_and_clean_shutdown(tiny_bundle: Path) -> None:
    folder = public_dir("spamguard-sock-")
    path = folder / "milter.sock"
    try:
        with running_milter(tiny_bundle, listen=f"unix:{path}", log=folder / "m.log") as milter:
            assert stat.S_IMODE(path.stat().st_mode) == 0o660
            assert _served(milter) == p.ACCEPT
            second = subprocess.run(
                [SPAMGUARD, "milter", "--model", str(tiny_bundle), "--listen", f"unix:{path}"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert (second.returncode, second.stderr.splitlines()[-1]) == (
                1,
                f"Error: cannot listen on unix:{path}: another process is listening there",
            )
            assert _served(milter) == p.ACCEPT
            milter.process.send_signal(signal.SIGTERM)
            assert milter.process.wait(10) == 0
        assert not path.exists()
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    with pytest.raises(BundleError) as expected:
        resolve(None)
    result = runner.invoke(main, ["milter"])
    assert (result.exit_code, result.output) == (1, f"Error: {expected.value}\n")
    result = runner.invoke(main, ["milter", "--listen", "tcp:25"])
    assert result.output == (
        "Error: bad milter address 'tcp:25': use inet:HOST:PORT, inet:PORT@HOST or unix:/absolute/path\n"
    )
    result = runner.invoke(main, ["milter", "--reject-message", "50% off"])
    assert (
        result.exit_code == 2
        and (
            "Invalid value for '--reject-message': '50% off': use one line like '550 5.7.1 Message rejected as spam' "
            "(no '%')"
        )
        in result.output
    )


def test_a_connection_cap_above_the_descriptor_limit_is_one_line(tiny_bundle: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard descriptor limit here")
    too_many = hard + 1
    result = CliRunner().invoke(main, ["milter", "--model", str(tiny_bundle), "--max-connections", str(too_many)])
    assert (result.exit_code, result.output) == (
        1,
        f"Error: {too_many} connections need {too_many + 64} file descriptors, but the limit is {hard}: lower "
        "--max-connections or raise the limit (LimitNOFILE= in the systemd unit, ulimit -n)\n",
    )


def test_the_systemd_unit_starts_a_valid_command_within_its_descriptor_limit() -> None:
    """docs/spamguard-milter.service: every option of its ExecStart is one `spamguard milter` accepts, and its
    connection cap fits under its LimitNOFILE (the check the milter makes at start)."""
    from spamguard.cli.milter import milter as command
    from spamguard.plugins.server_guards import RESERVED_DESCRIPTORS

    unit = (Path(__file__).resolve().parents[2] / "docs" / "spamguard-milter.service").read_text().splitlines()
    start = next(i for i, line in enumerate(unit) if line.startswith("ExecStart="))
    parts = []
    for line in unit[start:]:  # the command and its continuation lines
        parts.append(line.removeprefix("ExecStart=").rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    words = " ".join(parts).split()
    assert words[:2] == ["/opt/spamguard/bin/spamguard", "milter"]
    arguments = words[2:]
    context = command.make_context("milter", arguments)
    limit = int(next(line for line in unit if line.startswith("LimitNOFILE=")).split("=")[1])
    assert context.params["max_connections"] + RESERVED_DESCRIPTORS <= limit


def test_text_extraction_processes_die_with_the_milter(tiny_bundle: Path, tmp_path: Path) -> None:
    """The milter killed outright (the OOM killer, kill -9) leaves no extraction process behind, even one stuck
    in a message: the kernel kills them with it (PR_SET_PDEATHSIG)."""
    with running_milter(tiny_bundle, log=tmp_path / "m.log") as milter:
        assert _served(milter) == p.ACCEPT
        children = processes.children(milter.process.pid)
        assert len(children) == 2  # --extract-workers
        os.kill(children[0], signal.SIGSTOP)  # as if stuck in a parser
        milter.process.kill()
        milter.process.wait(10)
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 10, "the children to die")
