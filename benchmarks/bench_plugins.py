"""Plugin throughput with a GPT-2-124M-shaped int8 bundle (random weights: speed does not depend on the values),
on real SMS texts and real mails, all in one run so the figures compare:

  pipe      `spamguard pipe --model B`, one process per message as procmail runs it (model loaded each time)
  pipe+d    `spamguard pipe --connect ADDR`, one process per message, scored by a running `spamguard milter`
  milter    messages through a private Postfix on loopback with `smtpd_milters` at `spamguard milter`, from 8
            concurrent SMTP clients, against the same Postfix without the milter (the added latency)

SMS texts are piped as they are (plain text is what the runtime reads for SMS); through Postfix they travel
as the body of a minimal mail. Needs root, postfix and aiosmtpd for the milter part (as the integration tests).

    .venv/bin/python benchmarks/bench_plugins.py                      # defaults below, ~5 minutes on 2 cores
    .venv/bin/python benchmarks/bench_plugins.py --pipe-messages 50 --milter-messages 500
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from spamguard.training.prefix_precision import read_cpu_info

from public_data import MAIL, SMS, dataset

ROOT = Path(__file__).resolve().parents[1]
SPAMGUARD = str(Path(sys.executable).with_name("spamguard"))


def sms_texts(n: int) -> list[bytes]:
    lines = dataset(SMS).read_bytes().splitlines()
    step = max(1, len(lines) // n)
    return [line.split(b"\t", 1)[1] + b"\n" for line in lines[::step][:n]]


def mails(n: int) -> list[bytes]:
    files = sorted(dataset(MAIL).glob("*/*"))
    step = max(1, len(files) // n)
    return [path.read_bytes() for path in files[::step][:n]]


def as_mail(text: bytes, index: int) -> bytes:
    return b"From: a@example.test\nTo: b@example.net\nSubject: sms %d\n\n" % index + text


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def time_pipe(args: list[str], messages: list[bytes]) -> tuple[float, float]:
    """Messages per second and the median seconds per message, one process per message."""
    times = []
    start = time.perf_counter()
    for raw in messages:
        began = time.perf_counter()
        result = subprocess.run([SPAMGUARD, "pipe", *args], input=raw, capture_output=True, check=True)
        if b"X-Spamguard: label=" not in result.stdout:
            raise SystemExit(f"the pipe did not score a message: {result.stderr.decode()}")
        times.append(time.perf_counter() - began)
    return len(messages) / (time.perf_counter() - start), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipe-messages", type=int, default=20, help="messages per set for the standalone pipe")
    parser.add_argument("--connect-messages", type=int, default=100, help="messages per set for pipe --connect")
    parser.add_argument("--milter-messages", type=int, default=300, help="messages per set through Postfix")
    parser.add_argument("--clients", type=int, default=8, help="concurrent SMTP clients")
    parser.add_argument("--bundle", type=Path, help="bundle to use (default: a cached GPT-2-124M-shaped one)")
    parser.add_argument(
        "--milter-option", action="append", default=[], help="extra option for spamguard milter (repeatable)"
    )
    args = parser.parse_args()

    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "plugins")]  # the test helpers: bundles, mailstack
    from mailstack import delivered_by_tag, mail_stack, running_milter, send_concurrently, tagged

    from bundles import gpt2_124m_bundle

    bundle = args.bundle or gpt2_124m_bundle()
    load = os.getloadavg()
    print(f"# spamguard plugins benchmark, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# {read_cpu_info().describe()}, {os.cpu_count()} CPUs, load average {load[0]:.2f}")
    print(f"# bundle {bundle} (int8)\n")
    sets = {"SMS": sms_texts, "mail": mails}
    rows = []
    for name, pick in sets.items():
        rate, median = time_pipe(["--model", str(bundle)], pick(args.pipe_messages))
        rows.append(
            f"| pipe, a process per message | {name} | {args.pipe_messages} | {rate:.2f} | {median * 1000:.0f} ms |"
        )
        print(rows[-1], flush=True)

    with mail_stack() as stack:
        log = stack.root / "milter.log"
        # a long scoring timeout: a message accepted unscored after a timeout would count as fast
        options = ["--timeout", "300", *args.milter_option]
        with running_milter(bundle, *options, port=stack.milter_port, log=log) as milter:
            for name, pick in sets.items():
                rate, median = time_pipe(["--connect", milter.address], pick(args.connect_messages))
                rows.append(
                    f"| pipe --connect (milter scores) | {name} | {args.connect_messages} | {rate:.2f} |"
                    f" {median * 1000:.0f} ms |"
                )
                print(rows[-1], flush=True)
            for name, pick in sets.items():
                raws = pick(args.milter_messages)
                if name == "SMS":
                    raws = [as_mail(text, i) for i, text in enumerate(raws)]
                stack.clear_sink()
                before = len(milter.lines())
                plain = [tagged(raw, f"p{i}") for i, raw in enumerate(raws)]
                filtered = [tagged(raw, f"m{i}") for i, raw in enumerate(raws)]
                plain_wall, plain_latencies = send_concurrently(stack.port_plain, plain, args.clients)
                wall, latencies = send_concurrently(stack.port_milter, filtered, args.clients)
                lines = milter.lines()[before:]
                scored = [float(line.split("ms=")[1].split()[0]) for line in lines]
                unscored = sum("verdict=error" in line for line in lines)
                deadline = time.monotonic() + 300
                while len(stack.delivered()) < 2 * len(raws) and time.monotonic() < deadline:
                    time.sleep(0.2)
                arrived = delivered_by_tag(stack)
                lost = 2 * len(raws) - len(arrived)
                rows.append(
                    f"| milter via Postfix, {args.clients} SMTP clients | {name} | {len(raws)} | {len(raws) / wall:.2f}"
                    f" | p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {p95(latencies) * 1000:.0f} ms"
                    f" (without milter: {len(raws) / plain_wall:.0f} msg/s, p95 {p95(plain_latencies) * 1000:.0f} ms;"
                    f" added p95 {(p95(latencies) - p95(plain_latencies)) * 1000:.0f} ms; milter's own p95"
                    f" {p95(scored):.0f} ms; lost {lost}, unscored {unscored}) |"
                )
                print(rows[-1], flush=True)

    print("\n| path | set | messages | messages/s | latency |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
