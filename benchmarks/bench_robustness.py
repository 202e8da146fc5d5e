"""`make bench-robustness`: spam in disguise against spamguard with and without normalization, and the baselines.

    python benchmarks/bench_robustness.py --out DIR [--seed 1] [--split-seed 123] [--limit N] [--epochs 5]

Data: the SMS Spam Collection and the SpamAssassin sample under `datasets_dir()` (`$SPAMGUARD_DATA`),
deduplicated and split 70/10/20 by kind and label with the training's own `stratified_splits` (seeded), on the raw
messages, so both text versions see the same split. Two spamguard models are
trained with the real pipeline (`spamguard.training.pipeline.run`, the offline configuration: 4x256 from random
weights, every layer trained, lr 3e-4, cosine with clipping at 1.0 as `offline_recipe` sets it; `--lr-schedule
constant --max-grad-norm 0` gives the constant rate of the runs before 2026-11-30 evening) on the mail and SMS
train parts together: one on text version 1
(`message_text(..., normalize=False)`: no normalization, hidden HTML kept) and one on today's text. The version-1
bundle stays in a scratch folder and is scored with `Classifier.score_texts` on version-1 text (its manifest
carries the pipeline's `text_version`, which is why it never leaves the benchmark). The TF-IDF, naive Bayes and
bogofilter baselines (benchmarks/accuracy/classical.py) are trained on version-1 text (bogofilter on raw mail).

Each disguise (benchmarks/robustness/disguises.py) is applied, seeded per message, to every spam and every ham of
the test parts; recall is measured on disguised spam and the false-positive rate on disguised ham, at each model's
own threshold (spamguard: the bundle's threshold for the message's kind; the baselines: their defaults). The
non-Latin ham set (benchmarks/robustness/non_latin.py) gives one more FPR row, and one of the normalized model's
verdicts as served (with the script guard, `Bundle.unseen_script`). Writes `results.md` and `recall.png` to
`--out`."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from offline_recipe import add_schedule_arguments, offline_settings, schedule_words  # noqa: E402
from robustness.disguises import DISGUISES, apply  # noqa: E402
from robustness.non_latin import NON_LATIN_HAM  # noqa: E402

from spamguard.datasets import HAM, LABELS, SPAM, Example  # noqa: E402
from spamguard.message_text import MAIL, SMS, message_kind, message_text  # noqa: E402
from spamguard.paths import datasets_dir  # noqa: E402

from accuracy.classical import Bogofilter, sklearn_methods  # noqa: E402

PLAIN = "plain"
NORMALIZED = "spamguard, normalized"
# --variants: the row label, whether the model reads normalized text, whether it trains on leetspeak copies too
VARIANTS = {
    "v1": ("spamguard, text v1 (no normalization)", False, False),
    "normalized": (NORMALIZED, True, False),
    "leet-copies": ("spamguard, normalized + leetspeak copies", True, True),
}


@dataclass
class Part:
    """One kind's test messages: raw (SMS text or mail bytes) with labels."""

    kind: str
    messages: list[str | bytes]
    labels: list[int]


@dataclass
class Results:
    recall: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (method, kind, disguise) -> recall
    fpr: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (method, kind, disguise) -> FPR
    unsure_non_latin: int | None = None  # non-Latin ham the served model left unsure (`Bundle.unseen_script`)


def load_parts(data: Path, seed: int, limit: int | None) -> dict[str, tuple[list[Example], ...]]:
    """Per kind, train/validation/test `Example`s whose `text` is the raw message (an SMS) or its file (a mail)."""
    from spamguard.training.data import deduplicate
    from spamguard.training.imbalance import stratified_splits

    rng = random.Random(seed)
    lines = (data / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    sms = [Example(t, LABELS[label], "sms", SMS) for label, _, t in (line.partition("\t") for line in lines)]
    mail = [
        Example(str(p), SPAM if p.parent.name == "spam" else HAM, str(p), MAIL)
        for p in sorted((data / "spamassassin_2003_part1").glob("*/*"))
    ]
    if limit:
        sms, mail = rng.sample(sms, min(limit, len(sms))), rng.sample(mail, min(limit, len(mail)))
    splits = stratified_splits(deduplicate(sms + mail), seed)
    parts = (splits.train, splits.validation, splits.test)
    return {kind: tuple([e for e in part if e.kind == kind] for part in parts) for kind in (SMS, MAIL)}


def raw_of(example: Example) -> str | bytes:
    return Path(example.text).read_bytes() if example.kind == MAIL else example.text


def texts(examples: list[Example], normalize: bool) -> list[Example]:
    return [Example(message_text(raw_of(e), normalize=normalize), e.label, e.source, e.kind) for e in examples]


def train_spamguard(
    train: list[Example], validation: list[Example], args: argparse.Namespace, work: Path, augment: float = 0.0
) -> object:
    from spamguard import Classifier
    from spamguard.training.data import Splits
    from spamguard.training.pipeline import Job, run

    base = work / "base"
    base.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "gpt2", "n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd}
    (base / "config.json").write_text(json.dumps(config | {"n_positions": args.max_tokens}))
    job = Job(
        base=str(base),
        weights="random",
        tokenizer=args.data / "gpt2_bpe",
        max_tokens=args.max_tokens,
        out=work / "bundle",
        name="robustness-benchmark",
        install=False,
        threads=args.threads,
        recipe=replace(offline_settings(args, seed=args.seed), augment_leetspeak=augment),
    )
    from spamguard.thresholds import kind_options, threshold_rule

    # each kind's threshold chosen on its validation part as `spamguard train --max-fpr` does (default: 0.5)
    rule = threshold_rule(kind_options(max_fpr=args.max_fpr), log=print)
    splits = Splits(train, validation, validation)
    report = run(job, splits, data_source="robustness benchmark", threshold_rule=rule, log=print)
    return Classifier.load(report.bundle)


def disguised(part: list[Example], name: str, seed: int) -> list[str | bytes | None]:
    messages = [raw_of(e) for e in part]
    if name == PLAIN:
        return messages
    return [apply(name, m, random.Random(f"{seed}:{name}:{i}")) for i, m in enumerate(messages)]


def score_baseline(method: object, messages: list[str | bytes], labels: list[int], scratch: Path) -> np.ndarray:
    """A baseline scores version-1 text; bogofilter reads disguised mail from a file, as it would."""
    examples = []
    for i, (m, label) in enumerate(zip(messages, labels, strict=True)):
        source = ""
        if isinstance(m, bytes):
            path = scratch / f"{i}.eml"
            path.write_bytes(m)
            source = str(path)
        examples.append(Example(message_text(m, normalize=False), label, source, message_kind(m)))
    return np.asarray(method.score(examples), dtype=np.float64)  # type: ignore[attr-defined]


def add_training_arguments(
    parser: argparse.ArgumentParser, *, epochs: int, n_layer: int, n_head: int, n_embd: int
) -> None:
    """The options `load_parts` and `train_spamguard` read, with a script's own default model size: one list for
    every script that trains the way this benchmark does (`read_both_ways.py` too)."""
    parser.add_argument("--data", type=Path, default=None, help="data sets folder (default: datasets_dir())")
    parser.add_argument("--seed", type=int, default=1, help="training and disguise seed")
    parser.add_argument("--split-seed", type=int, default=123)
    parser.add_argument("--limit", type=int, default=None, help="messages per kind (a tiny check run)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--n-layer", type=int, default=n_layer)
    parser.add_argument("--n-head", type=int, default=n_head)
    parser.add_argument("--n-embd", type=int, default=n_embd)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-fpr", action="append", default=[], help="as spamguard train --max-fpr (repeatable)")
    add_schedule_arguments(parser)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "robustness")
    add_training_arguments(parser, epochs=5, n_layer=4, n_head=4, n_embd=256)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"spamguard models to train, of {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--augment-leetspeak", type=float, default=0.5, help="the leet-copies model's share (as spamguard train's)"
    )
    args = parser.parse_args()
    if unknown := set(args.variants.split(",")) - set(VARIANTS):
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}: use {', '.join(VARIANTS)}")
    args.data = args.data or datasets_dir()
    began = time.perf_counter()
    parts = load_parts(args.data, args.split_seed, args.limit)
    for kind, (tr, va, te) in parts.items():
        print(f"{kind}: train {len(tr)}, validation {len(va)}, test {len(te)} (spam {sum(e.label for e in te)})")
    train = [e for p in parts.values() for e in p[0]]
    validation = [e for p in parts.values() for e in p[1]]
    names = [PLAIN, *DISGUISES]
    work = Path(tempfile.mkdtemp(prefix="spamguard-robustness-"))
    results = Results()
    try:
        methods: dict[str, tuple[object, bool]] = {}  # name -> (model, normalize)
        for variant in args.variants.split(","):
            label, normalize, copies = VARIANTS[variant]
            print(f"training {label}", flush=True)
            share = args.augment_leetspeak if copies else 0.0
            folder = work / variant
            model = train_spamguard(texts(train, normalize), texts(validation, normalize), args, folder, share)
            methods[label] = (model, normalize)
        baselines: list[object] = []
        if not args.no_baselines:
            baselines = [*sklearn_methods(args.split_seed)] + ([Bogofilter()] if Bogofilter.available() else [])
            v1_train = [
                Example(e.text, e.label, e.source if e.kind == MAIL else "", e.kind) for e in texts(train, False)
            ]
            for method in baselines:
                print(f"training {method.name}", flush=True)  # type: ignore[attr-defined]
                method.fit(v1_train, [])  # type: ignore[attr-defined]
        for kind, (_tr, _va, test) in parts.items():
            for name in names:
                messages = disguised(test, name, args.seed)
                kept = [(m, e.label) for m, e in zip(messages, test, strict=True) if m is not None]
                if not kept:
                    continue
                batch = [m for m, _ in kept]
                labels = np.array([label for _, label in kept])
                scores: dict[str, tuple[np.ndarray, float]] = {}
                for label, (model, normalize) in methods.items():
                    model_texts = [message_text(m, normalize=normalize) for m in batch]
                    threshold = model.bundle.threshold_for(kind)  # type: ignore[attr-defined]
                    scores[label] = (np.asarray(model.score_texts(model_texts)), threshold)  # type: ignore[attr-defined]
                for method in baselines:
                    scratch = work / "scores" / f"{kind}-{name}-{method.name}"  # type: ignore[attr-defined]
                    scratch.mkdir(parents=True)
                    scores[method.name] = (  # type: ignore[attr-defined]
                        score_baseline(method, batch, labels.tolist(), scratch),
                        method.default_threshold,  # type: ignore[attr-defined]
                    )
                for label, (values, threshold) in scores.items():
                    flagged = values >= threshold
                    if (labels == SPAM).any():
                        results.recall[(label, kind, name)] = float(flagged[labels == SPAM].mean())
                    if (labels == HAM).any():
                        results.fpr[(label, kind, name)] = float(flagged[labels == HAM].mean())
                print(f"{kind} {name}: " + ", ".join(f"{k} {results.recall.get((k, kind, name), float('nan')):.3f}"
                                                    for k in scores), flush=True)  # fmt: skip
        for label, (model, normalize) in methods.items():
            values = np.asarray(model.score_texts([message_text(t, normalize=normalize) for t in NON_LATIN_HAM]))  # type: ignore[attr-defined]
            threshold = model.bundle.threshold_for(SMS)  # type: ignore[attr-defined]
            results.fpr[(label, "non-Latin SMS", PLAIN)] = float((values >= threshold).mean())
        if NORMALIZED in methods:
            served, _normalize = methods[NORMALIZED]
            verdicts = served.classify_texts(list(NON_LATIN_HAM), SMS)  # type: ignore[attr-defined]
            results.fpr[(f"{NORMALIZED}, as served (script guard)", "non-Latin SMS", PLAIN)] = float(
                np.mean([v.label == "spam" for v in verdicts])
            )
            results.unsure_non_latin = sum(v.label == "unsure" for v in verdicts)
        for method in baselines:
            values = score_baseline(method, list(NON_LATIN_HAM), [HAM] * len(NON_LATIN_HAM), work)
            results.fpr[(method.name, "non-Latin SMS", PLAIN)] = float((values >= method.default_threshold).mean())  # type: ignore[attr-defined]
            if hasattr(method, "close"):
                method.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, names, args, time.perf_counter() - began)
    (args.out / "results.md").write_text(table)
    chart(results, names, args.out / "recall.png")
    print(table)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'recall.png'}")
    return 0


def markdown(results: Results, names: list[str], args: argparse.Namespace, seconds: float) -> str:
    """Two tables, a row per method and kind, a column per disguise: recall (with the largest drop from plain, in
    points, the figure the target is stated in) and false-positive rate."""

    def table(values: dict[tuple[str, str, str], float], with_drop: bool) -> list[str]:
        rows = list(dict.fromkeys(k[:2] for k in values))
        header = "| method | kind | " + " | ".join(names) + (" | largest drop (points) |" if with_drop else " |")
        lines = [header, "|" + "---|" * (header.count("|") - 1)]
        for method, kind in rows:
            cells = [f"{values[(method, kind, n)] * 100:.1f}" if (method, kind, n) in values else "n/a" for n in names]
            if with_drop:
                plain = values.get((method, kind, PLAIN))
                drops = [plain - values[(method, kind, n)] for n in names if (method, kind, n) in values]
                cells.append(f"{max(drops) * 100:.1f}" if plain is not None and drops else "n/a")
            lines.append(f"| {method} | {kind} | " + " | ".join(cells) + " |")
        return lines

    setting = (
        f"seed {args.seed}, split seed {args.split_seed}, spamguard {args.n_layer}x{args.n_embd} random weights, "
        f"{args.epochs} epochs, {schedule_words(args)}, max tokens {args.max_tokens}"
        + (f", at most {args.limit} messages per kind" if args.limit else "")
        + (
            f", leetspeak copies of {args.augment_leetspeak:g} of the training messages"
            if "leet-copies" in args.variants.split(",")
            else ""
        )
        + f"; {seconds / 60:.0f} min"
    )
    lines = [f"Recall % on the disguised spam of the test parts, at each model's own threshold ({setting})", ""]
    lines += table(results.recall, with_drop=True)
    lines += ["", "False-positive rate % on the test ham given the same disguise (non-Latin SMS: the set written for "
              "this benchmark, benchmarks/robustness/non_latin.py)", ""]  # fmt: skip
    lines += table(results.fpr, with_drop=False)
    if results.unsure_non_latin is not None:
        lines += ["", f"As served (verdicts, not scores at the threshold), the normalized model left "
                  f"{results.unsure_non_latin} of the {len(NON_LATIN_HAM)} non-Latin SMS unsure: written in a "
                  "script its training ham was not (spamguard.bundle.MIN_SCRIPT_HAM)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def chart(results: Results, names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(k[1] for k in results.recall))
    methods = list(dict.fromkeys(k[0] for k in results.recall))
    fig, axes = plt.subplots(len(kinds), 1, figsize=(12, 4 * len(kinds)), squeeze=False)
    width = 0.8 / max(1, len(methods))
    for ax, kind in zip(axes[:, 0], kinds, strict=True):
        for j, method in enumerate(methods):
            values = [results.recall.get((method, kind, n), np.nan) * 100 for n in names]
            ax.bar(np.arange(len(names)) + j * width, values, width, label=method)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20)
        ax.set_ylabel("recall % on disguised spam")
        ax.set_title(kind)
        ax.set_ylim(0, 100)
    axes[0, 0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
