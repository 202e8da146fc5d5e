"""Two `spamguard serve` processes behind one address, one of them killed (SIGKILL) in the middle of 300
messages from 8 concurrent clients: through spamc's own failover (`-d 127.0.0.1,127.0.0.2`), and through
HAProxy fronting HTTP clients and a real Postfix's milter connection. Every message must come out exactly once,
scored, or passed through as the failure policy says; none lost (docs/servers.md describes the set-up)."""

from __future__ import annotations

import http.client
import json
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from mailstack import delivered_by_tag, free_port, mail_stack, require, tagged, wait_for
from servestack import Serve, running_haproxy, running_serve

from spamguard import Classifier
from spamguard.plugins.headers import remove_headers

from conftest import MAIL_DIR, SMS_FILE

pytestmark = pytest.mark.integration

COUNT, CLIENTS, KILL_AFTER = 300, 8, 100
SCORE = re.compile(rb"X-Spamguard: label=\w+ score=([\d.]+) ")


def messages() -> list[bytes]:
    files = sorted(MAIL_DIR.glob("*/*"))
    return [tagged(files[i % len(files)].read_bytes(), f"m{i}") for i in range(COUNT)]


@contextmanager
def two_servers(model: Path, folder: Path, *doors: str) -> Iterator[tuple[Serve, Serve]]:
    """Server a on 127.0.0.1 and server b on 127.0.0.2, each door on the same port at both addresses (spamc's
    `-d` takes one port for all its hosts)."""
    ports = {door: free_port() for door in doors}
    with ExitStack() as stack:
        servers = []
        for name, host in (("a", "127.0.0.1"), ("b", "127.0.0.2")):
            options = []
            for door, port in ports.items():
                options += [f"--{door}", f"inet:{host}:{port}" if door == "milter" else f"{host}:{port}"]
            servers.append(stack.enter_context(running_serve(model, *options, log=folder / f"{name}.log")))
        yield servers[0], servers[1]


def run_and_kill(
    work: Callable[[int], object], victim: Serve, done: Callable[[], int], count: int = COUNT
) -> tuple[list[object], float]:
    """`work(i)` for every message from CLIENTS threads; SIGKILL `victim` once `done()` reaches KILL_AFTER."""
    results: list[object] = [None] * count

    def client(index: int) -> None:
        results[index] = work(index)

    killed_at = 0.0

    def killer() -> None:
        nonlocal killed_at
        wait_for(lambda: done() >= KILL_AFTER, 120, f"{KILL_AFTER} messages done", interval=0.01)
        victim.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

    thread = threading.Thread(target=killer)
    thread.start()
    start = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(count)))
    thread.join()
    assert killed_at and victim.process.wait(10) == -signal.SIGKILL
    return results, killed_at - start


def test_spamc_fails_over_between_two_servers(tiny_bundle: Path, tmp_path: Path) -> None:
    require("spamc")
    raw = messages()
    classifier = Classifier.load(tiny_bundle)
    scores = classifier.score_batch(raw)
    finished = Counter[str]()
    lock = threading.Lock()
    with two_servers(tiny_bundle, tmp_path, "spamd") as (a, b):
        port = a.port("spamd")

        def work(index: int) -> subprocess.CompletedProcess:
            # -H spreads the load over both hosts; --filter-retries sends a request that died with its server
            # to the next host (spamc retries on an I/O error only, never on an answer)
            command = ["spamc", "-H", "-d", "127.0.0.1,127.0.0.2", "-p", str(port), "--filter-retries", "3"]
            result = subprocess.run([*command, "--filter-retry-sleep", "0"], input=raw[index], capture_output=True)
            with lock:
                finished["done"] += 1
            return result

        results, killed_after = run_and_kill(work, b, lambda: finished["done"])
        served_by = {"a": len(a.lines()), "b": len(b.lines())}
    scored = passed = 0
    for index, result in enumerate(results):
        assert isinstance(result, subprocess.CompletedProcess) and result.returncode == 0, index
        if result.stdout == raw[index]:
            passed += 1  # spamc's safe fallback: unchanged, exit 0
            continue
        assert remove_headers(result.stdout) == raw[index], index  # our headers added, nothing else touched
        score = float(SCORE.search(result.stdout).group(1))  # type: ignore[union-attr]
        assert score == pytest.approx(scores[index], abs=1e-4), index
        scored += 1
    assert scored + passed == COUNT and served_by["b"] > 0 and served_by["a"] > COUNT / 2
    assert passed == 0, f"{passed} messages passed through unscored (b killed after {killed_after:.1f} s)"


def test_haproxy_in_front_of_http_and_a_postfix_milter(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require("haproxy")
    pytest.importorskip("aiohttp")
    lines = SMS_FILE.read_text(encoding="utf-8").splitlines()
    texts = [lines[i % len(lines)].split("\t", 1)[1] for i in range(COUNT)]
    raw = messages()
    with mail_stack() as stack, two_servers(tiny_bundle, tmp_path, "http", "milter") as (a, b):
        pair = (a.doors["http"], b.doors["http"])
        milters = (a.doors["milter"], b.doors["milter"])
        with running_haproxy(pair, milters, milter_port=stack.milter_port) as proxy:
            # HTTP: every request answered, scored, though b dies mid-run (HAProxy retries a request whose
            # connection failed or got no response, on the other server)
            answered = Counter[str]()
            lock = threading.Lock()

            def check(index: int) -> tuple[int, dict]:
                connection = http.client.HTTPConnection("127.0.0.1", proxy.http, timeout=60)
                try:
                    body = json.dumps({"text": texts[index]})
                    connection.request("POST", "/v1/check", body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    data = response.read()
                    answer = (response.status, json.loads(data) if response.status == 200 else data.decode())
                finally:
                    connection.close()
                with lock:
                    answered["done"] += 1
                return answer

            results, _ = run_and_kill(check, b, lambda: answered["done"])
            statuses = Counter(status for status, _ in results)  # type: ignore[misc]
            assert statuses == {200: COUNT}, [answer for answer in results if answer[0] != 200]  # type: ignore[index]
            assert all(answer["model"] == "tiny" for _, answer in results)  # type: ignore[misc]
            assert len(b.lines("door=http")) > 0

            # milter: a fresh b, then Postfix -> HAProxy (TCP) -> two milters; b killed mid-run
            b.log.rename(tmp_path / "b-http.log")
            with running_serve(tiny_bundle, "--milter", f"inet:{milters[1]}", log=b.log) as b2:
                wait_for(lambda: _haproxy_up(proxy.root, "milter_pool", "b"), 30, "haproxy to see b again")

                # one SMTP connection per message, as mail from many senders arrives: Postfix holds one milter
                # connection per SMTP session, and a session whose milter died accepts the rest of its
                # messages unscored (milter_default_action), so long sessions would hide what HAProxy does
                def send_one(index: int) -> None:
                    with smtplib.SMTP("127.0.0.1", stack.port_milter, timeout=120) as smtp:
                        smtp.sendmail("sender@example.test", ["rcpt@example.net"], raw[index])

                run_and_kill(send_one, b2, lambda: len(stack.delivered()))
                wait_for(lambda: len(stack.delivered()) >= COUNT, 120, "every message at the sink")
                time.sleep(0.3)  # a duplicate would arrive now
                served_by_b = len(b2.lines("queue_id="))
        arrived = delivered_by_tag(stack)
    assert sorted(arrived) == sorted(f"m{i}" for i in range(COUNT)), "lost messages"
    assert all(len(copies) == 1 for copies in arrived.values()), "duplicated messages"
    unscored = [tag for tag, copies in arrived.items() if copies[0]["X-Spamguard"] is None]
    # in flight on b when it died: Postfix applied milter_default_action = accept (delivered unscored)
    assert len(unscored) <= CLIENTS, unscored
    assert served_by_b > 0
    with capsys.disabled():
        print(
            f"\nHAProxy, b killed after {KILL_AFTER} of {COUNT}: HTTP {COUNT}/{COUNT} scored; milter: b scored"
            f" {served_by_b}, {len(unscored)} delivered unscored (in flight on b), none lost or duplicated"
        )


def _haproxy_up(root: Path, backend: str, server: str) -> bool:
    """Whether HAProxy's health checks see `server` of `backend` up (its stats socket, `show stat`)."""
    with socket.socket(socket.AF_UNIX) as admin:
        admin.settimeout(5)
        admin.connect(str(root / "admin.sock"))
        admin.sendall(b"show stat\n")
        out = b""
        while chunk := admin.recv(65536):
            out += chunk
    return any(line.startswith(f"{backend},{server},") and ",UP," in line for line in out.decode().splitlines())
