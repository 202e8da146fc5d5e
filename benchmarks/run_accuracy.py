"""`make bench-accuracy`: every method on every protocol, one Markdown table and one ROC figure.

    python benchmarks/run_accuracy.py [--protocols P1,P2,P3,P4] [--seeds 1,2,3] [--base GPT2_FOLDER] [--out DIR]

spamguard is trained once per seed (model initialisation and data order) on each protocol's fixed split; the
classical methods are deterministic given the split and run once. `--base` adds the pretrained recipe (a folder
with real GPT-2 weights in the Hugging Face layout) next to the offline configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy.classical import Bogofilter, sklearn_methods  # noqa: E402
from accuracy.evaluate import Result, evaluate  # noqa: E402
from accuracy.protocols import PROTOCOLS, build  # noqa: E402
from accuracy.report import markdown_table, roc_figure  # noqa: E402
from accuracy.spamguard_method import Config, SpamguardMethod  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", default="P1,P2,P3,P4")
    parser.add_argument("--split-seed", type=int, default=123, help="seed of every split (fixed across methods)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "accuracy")
    parser.add_argument("--sms", type=Path, default=SHARED / "sms_spam_collection" / "SMSSpamCollection")
    parser.add_argument("--mail", type=Path, default=SHARED / "spamassassin_2003_part1")
    parser.add_argument("--seeds", default="1,2,3", help="spamguard training seeds; empty to skip spamguard")
    parser.add_argument("--base", default=None, help="a GPT-2 folder with real weights: adds the pretrained recipe")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for spamguard training")
    args = parser.parse_args()

    results: list[Result] = []
    notes = []
    seeds = [int(x) for x in args.seeds.split(",") if x]
    config = Config(threads=args.threads)
    for protocol in args.protocols.split(","):
        splits = build(protocol, args.split_seed, sms_file=args.sms, mail_dir=args.mail)
        print(f"{protocol}: {splits.counts()}", flush=True)
        methods: list[object] = [SpamguardMethod(seed, config) for seed in seeds]
        if args.base:
            methods += [SpamguardMethod(seed, config, base=args.base) for seed in seeds]
        methods += sklearn_methods(args.split_seed)
        if Bogofilter.available():
            methods.append(Bogofilter())
        elif "bogofilter" not in " ".join(notes):
            notes.append("bogofilter is not installed (apt-get install bogofilter): its rows are missing.")
        for method in methods:
            start = time.perf_counter()
            found = evaluate(method, splits, protocol, getattr(method, "seed", args.split_seed))
            results += found
            for result in found:
                print(
                    f"  {result.protocol:7s} {result.method:24s} acc {result.default['accuracy']:.4f}  "
                    f"f1 {result.default['f1']:.4f}  fpr {result.default['fpr']:.4f}  "
                    f"({time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
            if hasattr(method, "close"):
                method.close()

    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, PROTOCOLS) + "".join(f"\n{n}\n" for n in notes)
    (args.out / "results.md").write_text(table)
    roc_figure(results, args.out / "roc.png")
    print(table)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'roc.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
