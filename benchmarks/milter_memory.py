"""Resident memory of `spamguard milter` through attack waves on its port (the soak's attacker without Postfix):
each wave is two 64 MiB header floods, 300 connections holding 250 KiB of an unfinished packet and 2,000 idle
connections, against --max-connections 1000 and the default 64 MiB --max-buffer. Prints the milter's resident
size after a warm-up of 200 messages from 4 clients, then for every wave its peak and the size 0.5 to 12 s after
the attacker let go, and after 200 more messages.

    .venv/bin/python benchmarks/milter_memory.py [--waves 3] [--bundle PATH] [-- extra milter options]

The tiny test bundle is built into a temporary folder unless --bundle is given."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: the tiny test bundle)")
    parser.add_argument("milter_options", nargs="*", help="extra options for spamguard milter (after --)")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "plugins"), str(ROOT / "tests" / "hostile")]
    from mailstack import running_milter
    from milter_attacks import Attacker, Soak, raise_descriptors

    from spamguard.plugins.milter.client import MilterClient

    from conftest import MAIL_DIR

    files = sorted(MAIL_DIR.glob("*/*"))
    raise_descriptors(4000)

    def mail(count: int) -> None:
        def client(start: int) -> None:
            with MilterClient(milter.address) as conversation:
                conversation.negotiate()
                for index in range(start, count, 4):
                    conversation.message(files[index * 7 % len(files)].read_bytes())

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(client, range(4)))

    with tempfile.TemporaryDirectory() as work:
        bundle = args.bundle
        if bundle is None:
            from bundles import make_bundle

            bundle = make_bundle(Path(work) / "tiny")
        options = ["--max-connections", "1000", *args.milter_options]
        print(f"# milter memory under attack, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()},")
        print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; milter {' '.join(options)}")
        with running_milter(bundle, *options, log=Path(work) / "milter.log") as milter:
            mail(200)
            time.sleep(1.5)
            print(f"warm (200 messages): {milter.rss() / MiB:.0f} MiB")
            for wave in range(1, args.waves + 1):
                attacker = Attacker(milter, Soak(messages=0, waves=1, flood=64 * MiB, holders=300, idle=2000))
                attacker.wave()
                attacker.close()
                samples = []
                for _ in range(24):
                    time.sleep(0.5)
                    samples.append(milter.rss() / MiB)
                peak = milter.rss("VmHWM") / MiB
                mail(200)
                time.sleep(1.5)
                print(
                    f"wave {wave}: peak so far {peak:.0f} MiB; after 0.5 s {samples[0]:.0f}, 1.5 s {samples[2]:.0f},"
                    f" 12 s {samples[-1]:.0f} MiB; after 200 more messages {milter.rss() / MiB:.0f} MiB"
                )
        lines = (Path(work) / "milter.log").read_text().splitlines()
        other = [line for line in lines if "queue_id=" not in line]
        print(f"log: {len(lines)} lines, {len(other)} not about a message; last: {lines[-1].split(' INFO ')[-1]}")


if __name__ == "__main__":
    main()
