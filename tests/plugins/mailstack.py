"""Real mail components for the integration tests, each private to the test run and cleaned up after it: a
Postfix instance on loopback (the recipe of MAIL-TESTBED.md), an aiosmtpd sink it relays to, `spamguard milter`
processes, and procmail runs. Nothing global is started or changed."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from processes import stop_process

SPAMGUARD = str(Path(sys.executable).with_name("spamguard"))


def require(*programs: str) -> None:
    missing = [name for name in programs if shutil.which(name) is None and not Path(name).exists()]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (installed by .ci/run)")
    if "postfix" in programs and os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def public_dir(prefix: str) -> Path:
    """A scratch folder that user postfix (and nobody) can traverse: pytest's own tmp folders are 0700."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    return path


def milter_socket(address: str, timeout: float = 10) -> socket.socket:
    """A raw TCP connection to a milter at `inet:HOST:PORT`, for speaking (or breaking) the protocol by hand."""
    host, port = address.removeprefix("inet:").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Read (and drop) whatever the server still sends; True once it closes its end, False on a timeout."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@dataclass
class Milter:
    process: subprocess.Popen
    address: str
    log: Path

    def lines(self, contains: str = "queue_id=") -> list[str]:
        return [line for line in self.log.read_text().splitlines() if contains in line]

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss(self, field: str = "VmRSS") -> int:
        """Resident memory of the milter process itself (its extraction processes are separate), in bytes; `VmHWM`
        for its peak so far."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(status.split(f"{field}:")[1].split()[0]) * 1024


@contextmanager
def running_milter(model: Path, *options: str, port: int = 0, listen: str | None = None, log: Path) -> Iterator[Milter]:
    """`spamguard milter` as its own process, as an administrator runs it; stopped (SIGTERM, then SIGKILL) at
    the end whatever happens."""
    listen = listen or f"inet:127.0.0.1:{port}"
    with open(log, "w") as err:
        process = subprocess.Popen(
            [SPAMGUARD, "milter", "--model", str(model), "--listen", listen, *options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        marker = "listening on "

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"milter exited with {process.returncode}: {log.read_text()}")
            return marker in log.read_text()

        wait_for(listening, 60, "the milter to listen")
        address = next(line for line in log.read_text().splitlines() if marker in line).split(marker)[1].strip()
        yield Milter(process, address, log)
    finally:
        stop_process(process)


MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
myhostname = mx.example.test
mydomain = example.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
default_transport = smtp
relay_transport = smtp
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_banner = $myhostname ESMTP test
maillog_file = {root}/postfix.log
maillog_file_prefixes = /tmp
in_flow_delay = 0
milter_protocol = 6
milter_default_action = accept
milter_connect_timeout = 5s
milter_content_timeout = 30s
smtpd_milters = inet:127.0.0.1:{milter_port}
"""

# One smtpd per situation, so no test needs a reload: with the milter (default action accept), without any
# milter (the baseline for added latency), with the milter and default action tempfail.
MASTER_CF = """\
127.0.0.1:{port_milter} inet n - n - - smtpd
127.0.0.1:{port_plain} inet n - n - - smtpd -o smtpd_milters=
127.0.0.1:{port_tempfail} inet n - n - - smtpd -o milter_default_action=tempfail
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
local     unix  - n n -  - local
virtual   unix  - n n -  - virtual
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@dataclass
class MailStack:
    root: Path
    milter_port: int  # where Postfix expects the milter
    port_milter: int  # smtpd with the milter, milter_default_action = accept
    port_plain: int  # smtpd without milters
    port_tempfail: int  # smtpd with the milter, milter_default_action = tempfail
    sink: Path  # the sink writes every relayed message, as received, to sink/new/

    def delivered(self) -> list[Path]:
        return sorted((self.sink / "new").glob("*"))

    def log(self) -> str:
        path = self.root / "pf" / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def queue_empty(self) -> bool:
        out = subprocess.run(
            ["postqueue", "-c", str(self.root / "pf" / "etc"), "-p"], capture_output=True, text=True
        ).stdout
        return "Mail queue is empty" in out

    def clear_sink(self) -> None:
        for path in self.delivered():
            path.unlink()


@contextmanager
def mail_stack() -> Iterator[MailStack]:
    """A private Postfix relaying to an aiosmtpd sink; both stopped and removed at the end."""
    require("postfix", "postqueue")
    root = public_dir("spamguard-postfix-")
    pf = root / "pf"
    (pf / "etc").mkdir(parents=True)
    (pf / "spool").mkdir()
    pf.chmod(0o755)
    sink_port = free_port()
    stack = MailStack(root, free_port(), free_port(), free_port(), free_port(), root / "sink")
    (pf / "etc" / "main.cf").write_text(MAIN_CF.format(root=pf, sink_port=sink_port, milter_port=stack.milter_port))
    (pf / "etc" / "master.cf").write_text(
        MASTER_CF.format(port_milter=stack.port_milter, port_plain=stack.port_plain, port_tempfail=stack.port_tempfail)
    )
    sink_command = [sys.executable, str(Path(__file__).with_name("raw_sink.py")), f"127.0.0.1:{sink_port}"]
    with open(root / "sink.log", "w") as err:
        sink = subprocess.Popen([*sink_command, str(stack.sink)], stdout=subprocess.DEVNULL, stderr=err)
    etc = str(pf / "etc")
    started = False
    try:
        subprocess.run(["postfix", "-c", etc, "check"], check=True, capture_output=True)
        started = subprocess.run(["postfix", "-c", etc, "start"], capture_output=True).returncode == 0
        if not started:
            raise AssertionError(f"postfix did not start: {stack.log()}")
        wait_for(lambda: all(port_open(p) for p in (stack.port_milter, stack.port_plain, sink_port)), 30, "ports")
        yield stack
    finally:
        if started:
            subprocess.run(["postfix", "-c", etc, "stop"], capture_output=True)
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def tagged(raw: bytes, tag: str) -> bytes:
    """The message as an SMTP client sends it (an mbox `From ` line is no part of it) with an `X-Test-Id`
    header first, to find it again at the sink."""
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1]
    return f"X-Test-Id: {tag}\n".encode() + raw


def delivered_by_tag(stack: MailStack) -> dict[str, list[email.message.Message]]:
    found: dict[str, list[email.message.Message]] = {}
    for path in stack.delivered():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        found.setdefault(str(message["X-Test-Id"]), []).append(message)
    return found


def send_concurrently(
    port: int, messages: list[bytes], clients: int, sender: str = "sender@example.test", to: str = "rcpt@example.net"
) -> tuple[float, list[float]]:
    """Send every message over `clients` concurrent SMTP sessions: the wall time of the whole run and the time
    of each transaction (MAIL FROM to the reply after the data)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(share: list[bytes]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            for raw in share:
                start = time.perf_counter()
                smtp.sendmail(sender, [to], raw)
                with lock:
                    latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [messages[i::clients] for i in range(clients)]))
    return time.perf_counter() - start, latencies
