"""The server front doors against each other and against SpamAssassin, all in one run so the figures compare:

  exim      Exim 4.96 on loopback, 8 concurrent SMTP clients (one connection per message), asking over the spamd
            protocol: `spamguard serve --spamd` against SpamAssassin's own spamd (Debian's package, `-L`: no
            network tests, Bayes off, the package's rules, spamd's default children), against the same Exim
            with no spam check (the added latency). The same messages each time: the first 5/6 ham and 1/6
            spam of the SpamAssassin sample, sorted by name (300: 250 + 50, as MAIL-TESTBED-SPAMD.md). Verdict
            agreement: X-Spam-Score at or above the required 5.0, spamguard's against SpamAssassin's and both
            against the folder labels.
  spamc     one `spamc -c` process per message against `spamguard serve --spamd`, against the milter path (one
            milter conversation per message, as Postfix's smtpd holds it) on the same server: one client in
            turn (round trip) and 8 at once (messages/s)
  http      POST /v1/check with SMS texts as JSON from 8 keep-alive clients: requests/s and latency

spamguard's verdict cache is off in every part (`--cache-entries 0`): the figures time the model, not memory.

Needs root, spamc, spamassassin and the extracted Exim (.ci/run installs them). Prints a Markdown table with
the date, the CPU and the load average.

    .venv/bin/python benchmarks/bench_servers.py --bundle PATH                 # the lead's run (300 messages)
    .venv/bin/python benchmarks/bench_servers.py --bundle /tmp/b --messages 24 --round-trips 10 --http-requests 200
"""

from __future__ import annotations

import argparse
import email
import email.policy
import http.client
import json
import os
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from spamguard.training.prefix_precision import read_cpu_info

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 8


# every server timed scores every message: no verdict cache (the round trips send the same messages through
# spamc and then the milter, which a cache would answer from memory), no timeout shorter than a loaded machine needs
TIMED = ("--timeout", "300", "--cache-entries", "0")


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def sample(mail_dir: Path, n: int) -> list[tuple[str, bytes]]:
    """(label, raw) for the first 5/6 of n from ham and the rest from spam, by file name."""
    spam_n = n // 6
    ham = sorted((mail_dir / "ham").iterdir())[: n - spam_n]
    spam = sorted((mail_dir / "spam").iterdir())[:spam_n]
    return [("ham", p.read_bytes()) for p in ham] + [("spam", p.read_bytes()) for p in spam]


def concurrently(work: Callable[[int], object], count: int) -> tuple[float, list[float]]:
    """Run work(0..count-1) from CLIENTS threads: wall seconds and each call's seconds."""
    times: list[float] = [0.0] * count

    def one(index: int) -> None:
        start = time.perf_counter()
        work(index)
        times[index] = time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - start, times


@contextmanager
def sa_spamd(port: int, root: Path) -> Iterator[None]:
    """SpamAssassin's spamd as MAIL-TESTBED-SPAMD.md runs it: private site folder, local tests only."""
    site, home, log = root / "sa" / "site", root / "sa" / "home", root / "sa" / "spamd.log"
    site.mkdir(parents=True)
    home.mkdir(parents=True)
    for pre in Path("/etc/spamassassin").glob("*.pre"):
        shutil.copy(pre, site)
    (site / "local.cf").write_text("required_score 5.0\nuse_bayes 0\nbayes_auto_learn 0\n")
    subprocess.run(["chown", "-R", "debian-spamd:debian-spamd", str(home)], check=True)
    command = [
        "spamd", "-L", "-x", "-u", "debian-spamd", "-g", "debian-spamd", f"--siteconfigpath={site}", "-H", str(home),
        f"--listen=127.0.0.1:{port}", "-A", "127.0.0.1", "-m", "5", "--min-children=1", "--min-spare=1",
        "--max-spare=2", "-s", str(log), "-r", str(root / "sa" / "spamd.pid"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(["spamc", "-d", "127.0.0.1", "-p", str(port), "-K"], capture_output=True).returncode:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"SpamAssassin's spamd did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.5)
        yield
    finally:
        process.send_signal(signal.SIGTERM)  # the parent stops its children and removes the pid file
        process.wait(30)


def exim_run(messages: list[tuple[str, bytes]], spamd: str, *macros: str) -> dict:
    """Send every message through a fresh Exim; per-message SMTP time, and the X-Spam-Score Exim delivered."""
    from mailstack import tagged
    from servestack import running_exim

    raws = [tagged(raw, f"m{i}") for i, (_, raw) in enumerate(messages)]
    with running_exim(spamd, *macros, reject_tenths=100_000) as exim:

        def send(index: int) -> None:
            with smtplib.SMTP("127.0.0.1", exim.port, timeout=300) as smtp:
                smtp.sendmail("sender@example.test", ["rcpt@example.test"], raws[index])

        wall, times = concurrently(send, len(raws))
        deadline = time.monotonic() + 300
        while len(exim.delivered()) < len(raws) and time.monotonic() < deadline:
            time.sleep(0.2)
        scores = {}
        for path in exim.delivered():
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
            value = message["X-Spam-Score"]
            scores[int(str(message["X-Test-Id"])[1:])] = float(str(value).split()[0]) if value else None
    return {"wall": wall, "times": times, "scores": scores}


def exim_part(bundle: Path, messages: list[tuple[str, bytes]], root: Path, rows: list[str]) -> None:
    from mailstack import free_port
    from servestack import running_serve

    labels = [label for label, _ in messages]
    plain = exim_run(messages, "127.0.0.1 1", "NOSPAM=1")
    with running_serve(bundle, "--spamd", "127.0.0.1:0", *TIMED, log=root / "serve.log") as serve:
        ours = exim_run(messages, f"127.0.0.1 {serve.port('spamd')}")
    port = free_port()
    with sa_spamd(port, root):
        theirs = exim_run(messages, f"127.0.0.1 {port}")
    n = len(messages)
    decisions = {}
    for name, run in (("spamguard", ours), ("SpamAssassin", theirs)):
        missing = sum(run["scores"].get(i) is None for i in range(n))
        decisions[name] = [(run["scores"].get(i) or 0.0) >= 5.0 for i in range(n)]
        correct = sum(d == (label == "spam") for d, label in zip(decisions[name], labels, strict=True))
        rows.append(
            f"| Exim + {name} (spamd protocol), {CLIENTS} SMTP clients | {n} | {n / run['wall']:.1f} msg/s |"
            f" p50 {ms(statistics.median(run['times']))}, p95 {ms(p95(run['times']))};"
            f" added p95 {ms(p95(run['times']) - p95(plain['times']))} | spam {sum(decisions[name])},"
            f" agrees with the labels {correct}/{n}, unscored {missing} |"
        )
        print(rows[-1], flush=True)
    agree = sum(a == b for a, b in zip(decisions["spamguard"], decisions["SpamAssassin"], strict=True))
    rows.append(
        f"| Exim, no spam check (baseline) | {n} | {n / plain['wall']:.1f} msg/s | p50"
        f" {ms(statistics.median(plain['times']))}, p95 {ms(p95(plain['times']))} | spamguard and SpamAssassin"
        f" agree on {agree}/{n} |"
    )
    print(rows[-1], flush=True)


def round_trip_part(bundle: Path, messages: list[tuple[str, bytes]], count: int, root: Path, rows: list[str]) -> None:
    from servestack import running_serve

    from spamguard.plugins.milter.client import MilterClient

    raws = [raw for _, raw in messages][:count]
    options = ["--spamd", "127.0.0.1:0", "--milter", "inet:127.0.0.1:0", *TIMED]
    with running_serve(bundle, *options, log=root / "serve-rt.log") as serve:
        port, milter = serve.port("spamd"), f"inet:{serve.doors['milter']}"

        def spamc(index: int) -> None:
            command = ["spamc", "-c", "-x", "-d", "127.0.0.1", "-p", str(port)]
            out = subprocess.run(command, input=raws[index], capture_output=True).stdout
            if b"/" not in out:
                raise SystemExit(f"spamc got no score: {out!r}")

        def conversation(index: int) -> None:
            with MilterClient(milter, timeout=300) as client:
                client.negotiate()
                if not client.message(raws[index].replace(b"\n", b"\r\n")).modifications:
                    raise SystemExit("the milter did not score a message")

        for name, work in (("spamc -c, a process per message", spamc), ("milter conversation", conversation)):
            times = []
            for index in range(len(raws)):
                start = time.perf_counter()
                work(index)
                times.append(time.perf_counter() - start)
            wall, _ = concurrently(work, len(raws))
            rows.append(
                f"| {name} | {len(raws)} | {len(raws) / wall:.1f} msg/s with {CLIENTS} clients |"
                f" one at a time: p50 {ms(statistics.median(times))}, p95 {ms(p95(times))} | |"
            )
            print(rows[-1], flush=True)


def http_part(bundle: Path, sms_file: Path, count: int, root: Path, rows: list[str]) -> None:
    from servestack import running_serve

    texts = [line.split("\t", 1)[1] for line in sms_file.read_text(encoding="utf-8").splitlines()]
    bodies = [json.dumps({"text": texts[i % len(texts)]}).encode() for i in range(count)]
    with running_serve(bundle, "--http", "127.0.0.1:0", *TIMED, log=root / "serve-http.log") as serve:
        local = threading.local()

        def post(index: int) -> None:
            if not hasattr(local, "connection"):  # one keep-alive connection per client thread
                local.connection = http.client.HTTPConnection("127.0.0.1", serve.port("http"), timeout=300)
            local.connection.request("POST", "/v1/check", bodies[index], {"Content-Type": "application/json"})
            response = local.connection.getresponse()
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status}: {response.read()!r}")
            response.read()

        wall, times = concurrently(post, count)
    rows.append(
        f"| HTTP POST /v1/check, SMS texts, {CLIENTS} keep-alive clients | {count} | {count / wall:.1f} req/s |"
        f" p50 {ms(statistics.median(times))}, p95 {ms(p95(times))} | |"
    )
    print(rows[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="the model bundle to serve")
    parser.add_argument("--messages", type=int, default=300, help="messages through Exim (5/6 ham, 1/6 spam)")
    parser.add_argument("--round-trips", type=int, default=100, help="messages for spamc and the milter path")
    parser.add_argument("--http-requests", type=int, default=2000, help="HTTP requests")
    parser.add_argument("--data", type=Path, help="data folder (default: spamguard.paths.datasets_dir())")
    args = parser.parse_args()

    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "plugins")]  # the test helpers: mailstack, servestack
    from mailstack import public_dir

    from spamguard.paths import datasets_dir

    data = args.data or datasets_dir()
    messages = sample(data / "spamassassin_2003_part1", args.messages)
    load = os.getloadavg()
    print(f"# spamguard servers benchmark, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# {read_cpu_info().describe()}, {os.cpu_count()} CPUs, load average {load[0]:.2f}")
    print(f"# bundle {args.bundle}\n")
    rows: list[str] = []
    root = public_dir("spamguard-bench-servers-")
    try:
        exim_part(args.bundle, messages, root, rows)
        round_trip_part(args.bundle, messages, args.round_trips, root, rows)
        http_part(args.bundle, data / "sms_spam_collection" / "SMSSpamCollection", args.http_requests, root, rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n| path | messages | throughput | latency | verdicts |\n|---|---|---|---|---|\n" + "\n".join(rows))
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
