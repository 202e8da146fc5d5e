"""`make bench-cross-kind`: does a model of one kind of text work on the other, and does one model of both kinds
lose anything on either? Models trained on SMS only, mail only and both, each scored on the SMS test part and
on the mail test part of one fixed split, and the time a training run takes on both kinds against SMS only.

    python benchmarks/cross_kind.py --out DIR [--seeds 1,2,3] [--sets sms,mail,both] [--max-fpr 0.01]
        [--layers 4 --width 256 --heads 4 --epochs 5 --lr 3e-4 --max-tokens 256] [--subset N] [--threads N]
    python benchmarks/cross_kind.py --out DIR --merge A/cross_kind.json B/cross_kind.json   # runs of other days

Offline. The data is the default data of `spamguard train` as the data sets folder holds it (`$SPAMGUARD_DATA`,
e.g. ../shared/data: the SMS Spam Collection and the SpamAssassin sample, or the full corpus when downloaded):
read, deduplicated and split 70/10/20 by kind and label once (`--split-seed`), so every model is tested on the
same messages; a model of one kind trains on that kind's parts of the same split (the split of each kind does not
depend on the other's presence). Training is the real pipeline (`spamguard.training.pipeline.run`, what
`spamguard train` runs after reading its data) in the offline configuration of the README: GPT-2's random
initialisation at 4 layers x 256, every layer trained, lr 3e-4; each kind's threshold chosen by `--max-fpr` on its
own validation part. Scoring is the runtime's (`Classifier`, int8 where the bundle has it, as served).

Per model and test kind: recall and FPR at the model's threshold for that kind (a model of one kind applies its
one threshold to the other), and recall (with the test FPR) at the threshold that gives FPR <= 0.5% on that kind's
validation part. Writes DIR/cross_kind.md (table, checks, command, CPU, date), DIR/cross_kind.json (every run,
with its validation and test scores, written after each run) and DIR/cross_kind.png; prints one line per step."""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from spamguard.bundle import load_bundle
from spamguard.classifier import Classifier
from spamguard.datasets import LABEL_NAMES, Example
from spamguard.errors import SpamguardError
from spamguard.mail_sources import read_labelled
from spamguard.message_text import KINDS
from spamguard.metrics import binary_metrics, threshold_for_fpr
from spamguard.thresholds import ThresholdOptions, threshold_rule
from spamguard.tokenizer import load_encoding
from spamguard.training.data import Splits
from spamguard.training.defaults import LR_SCHEDULES
from spamguard.training.gpt2 import GPT2Classifier
from spamguard.training.imbalance import stratified_splits
from spamguard.training.pipeline import Job, model_files, run, tokenize
from spamguard.training.prefix_precision import read_cpu_info
from spamguard.training.public_data import bpe_files, sms_collection, spamassassin
from spamguard.training.recipe import TokenData, TrainSettings, evaluate

OPERATING_FPR = 0.005  # the "recall at validation-chosen FPR <= 0.5%" column
SETS = {"sms": ("sms",), "mail": ("mail",), "both": ("mail", "sms")}  # training set -> kinds it holds
FPR_CEILING = 0.02  # the check: the mixed model's FPR on each kind at its threshold
RECALL_SLACK = 0.02  # ... and its recall at val-FPR <= 0.5% within 2 points of the single-kind model's


def fpr_met(fpr: float) -> bool:
    """Issue 9's FPR check. Means of a few counts can sit on a bound exactly, where float rounding must not give
    the verdict."""
    return fpr <= FPR_CEILING + 1e-9


def recall_met(mixed: float, alone: float) -> bool:
    """Issue 9's recall check; with 50 mail test spam, means of 3 seeds land on the bound exactly (91.33% against
    93.33%), where float rounding must not give the verdict."""
    return mixed >= alone - RECALL_SLACK - 1e-9


def command_line(out: Path, placeholders: dict[str, str] | None = None) -> str:
    """This run's command as a report prints it: paths under `out` as OUT/..., and each argument equal to a key
    of `placeholders` as its value (--teacher /home/... as TEACHER), and the repository's files relative to it,
    so a report names no machine's folders."""

    repo = Path(__file__).resolve().parent.parent

    def shown(arg: str) -> str:
        if arg.startswith("/") and Path(arg).resolve().is_relative_to(out.resolve()):
            return str(Path("OUT") / Path(arg).resolve().relative_to(out.resolve()))
        if arg.startswith("/") and Path(arg).resolve().is_relative_to(repo):  # a script called by its full path
            return str(Path(arg).resolve().relative_to(repo))
        return (placeholders or {}).get(arg, arg)

    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *map(shown, sys.argv)])


def subset(examples: list[Example], per_group: int, seed: int) -> list[Example]:
    """At most `per_group` messages of each (kind, label), seeded: the tiny check of the script itself."""
    rng = random.Random(seed)
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for index, e in enumerate(examples):
        groups[(e.kind, e.label)].append(index)
    kept = sorted(i for group in groups.values() for i in rng.sample(group, min(per_group, len(group))))
    return [examples[i] for i in kept]


def restrict(splits: Splits, kinds: tuple[str, ...]) -> Splits:
    return Splits(*([e for e in part if e.kind in kinds] for part in splits.parts().values()))


def score_parts(bundle: Path, splits: Splits) -> tuple[dict[str, Any], str]:
    """The runtime's scores of every validation and test message, and the precision it served."""
    clf = Classifier.load(bundle)
    return {
        "validation": np.asarray(clf.score_texts(e.text for e in splits.validation)),
        "test": np.asarray(clf.score_texts(e.text for e in splits.test)),
        "thresholds": {kind: clf.bundle.threshold_for(kind) for kind in KINDS},
    }, clf.precision


def kind_rows(splits: Splits, part: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The positions of one kind's messages in a part of the split, and their labels."""
    examples = getattr(splits, part)
    index = np.array([i for i, e in enumerate(examples) if e.kind == kind], dtype=int)
    return index, np.array([examples[i].label for i in index], dtype=int)


def figures(scored: dict[str, Any], splits: Splits, kind: str) -> dict[str, float]:
    val, val_labels = kind_rows(splits, "validation", kind)
    test, test_labels = kind_rows(splits, "test", kind)
    test_scores = scored["test"][test]
    at_model = binary_metrics(test_labels, test_scores, scored["thresholds"][kind])
    operating = threshold_for_fpr(val_labels, scored["validation"][val], OPERATING_FPR)
    at_operating = binary_metrics(test_labels, test_scores, operating)
    return {
        "threshold": scored["thresholds"][kind],
        "recall": at_model["recall"],
        "fpr": at_model["fpr"],
        "fp": at_model["fp"],
        "operating_threshold": operating,
        "recall_at_val_fpr": at_operating["recall"],
        "fpr_at_val_fpr": at_operating["fpr"],
    }


def load_split(split_seed: int, per_group: int | None, log: Callable[[str], None]) -> tuple[list[Example], Any, Splits]:
    """The data sets folder's SMS collection and SpamAssassin sample, split as every run of this benchmark is."""
    sms, mail = sms_collection(log=log), spamassassin(log=log)  # offline: the data sets folder's copies
    examples, reports = read_labelled(data=sms, ham=mail.ham, spam=mail.spam)
    if per_group:
        examples = subset(examples, per_group, split_seed)
    return examples, reports, stratified_splits(examples, split_seed)


def epoch_scorer(splits: Splits, job: Job) -> tuple[list[dict[str, Any]], Callable[[int, GPT2Classifier], None]]:
    """A list that fills with every epoch's validation and test scores (torch, fp32, the texts tokenized as the
    pipeline does), and the `on_epoch` hook that fills it: `benchmarks/epoch_rules.py` then applies other ways of
    choosing the kept epoch to the same training runs."""
    files = model_files(job)
    encoding = load_encoding(files.encoder_json, files.vocab_bpe)
    parts = {
        part: TokenData(tokenized.token_lists, tokenized.labels)
        for part, examples in (("validation", splits.validation), ("test", splits.test))
        for tokenized in [tokenize(examples, encoding, job.max_tokens)]
    }
    epochs: list[dict[str, Any]] = []

    def on_epoch(epoch: int, model: GPT2Classifier) -> None:
        epochs.append({"epoch": epoch} | {part: evaluate(model, data).scores.tolist() for part, data in parts.items()})

    return epochs, on_epoch


MATCHED_HAM = (0, 1, 2)


def matched_table(runs: list[dict[str, Any]], sets: list[str], splits: Splits) -> list[str]:
    """Recall on each kind's test part at the threshold that lets exactly k of its test ham through, from the
    saved scores: the models' ranking compared at equal test FPR. Chosen on test, so a comparison of rankings,
    never an operating point; it separates how well a model orders messages from where validation put its
    threshold (with 123 mail validation ham, a 0.5% target means above the highest one)."""
    header = "| trained on | tested on | " + " | ".join(f"recall % with {k} test ham above" for k in MATCHED_HAM)
    lines = [header + " |", "|" + "---|" * (len(MATCHED_HAM) + 2)]
    parts = {kind: kind_rows(splits, "test", kind) for kind in KINDS}  # kind -> (its test positions, labels)
    for name in sets:
        for kind, (index, labels) in parts.items():
            cells = []
            for k in MATCHED_HAM:
                recalls = []
                for result in (r for r in runs if r["set"] == name):
                    scores = np.asarray(result["scores"]["test"])[index]
                    ham = np.sort(scores[labels == 0])[::-1]
                    recalls.append(float((scores[labels == 1] > ham[k]).mean()) if len(ham) > k else float("nan"))
                cells.append(mean_sd(recalls) if recalls else "-")
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    return lines


def mean_sd(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def table(runs: list[dict[str, Any]], sets: list[str]) -> list[str]:
    header = (
        "| trained on | tested on | recall % at the model's threshold | FPR % at the model's threshold | "
        f"recall % at val-FPR ≤ {OPERATING_FPR:.1%} (test FPR %) | runs |"
    )
    lines = [header, "|" + "---|" * 6]
    for name in sets:
        for kind in KINDS:
            rows = [r["tested"][kind] for r in runs if r["set"] == name]
            if not rows:
                continue
            recall_op = mean_sd([r["recall_at_val_fpr"] for r in rows])
            fpr_op = mean_sd([r["fpr_at_val_fpr"] for r in rows], digits=2)
            lines.append(
                f"| {name} | {kind} | {mean_sd([r['recall'] for r in rows])} | "
                f"{mean_sd([r['fpr'] for r in rows], digits=2)} | {recall_op} ({fpr_op}) | {len(rows)} |"
            )
    return lines


def checks(runs: list[dict[str, Any]]) -> list[str]:
    """The issue's acceptance checks, each met or not with its numbers (3-seed means)."""

    def mean(name: str, kind: str, key: str) -> float | None:
        values = [r["tested"][kind][key] for r in runs if r["set"] == name]
        return statistics.fmean(values) if values else None

    lines = []
    for kind in KINDS:
        fpr = mean("both", kind, "fpr")
        if fpr is not None:
            verdict = "met" if fpr_met(fpr) else "NOT met"
            lines.append(
                f"- both kinds, {kind} test part: FPR at its threshold {fpr:.2%} ≤ {FPR_CEILING:.0%}: {verdict}"
            )
        mixed, alone = mean("both", kind, "recall_at_val_fpr"), mean(kind, kind, "recall_at_val_fpr")
        if mixed is not None and alone is not None:
            verdict = "met" if recall_met(mixed, alone) else "NOT met"
            lines.append(
                f"- {kind}: recall at val-FPR ≤ {OPERATING_FPR:.1%}, both kinds {mixed:.2%} vs {kind} only "
                f"{alone:.2%} (at most {RECALL_SLACK * 100:.0f} points below): {verdict}"
            )
    return lines


def timing(runs: list[dict[str, Any]]) -> list[str]:
    seconds = {name: [r["seconds"] for r in runs if r["set"] == name] for name in SETS}
    lines = [
        f"- {name}: {mean_sd(values, scale=1.0)} s per training run ({len(values)} runs, whole job: data to bundle)"
        for name, values in seconds.items()
        if values
    ]
    if seconds["both"] and seconds["sms"]:
        ratio = statistics.fmean(seconds["both"]) / statistics.fmean(seconds["sms"])
        lines.append(f"- both kinds take {ratio:.2f}x the time of SMS only")
    return lines


def plot(runs: list[dict[str, Any]], sets: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(len(sets), 1)
    panels = (
        ("recall_at_val_fpr", f"recall at val-FPR ≤ {OPERATING_FPR:.1%}"),
        ("fpr", "FPR at the model's threshold"),
    )
    for ax, (key, title) in zip(axes, panels, strict=True):
        for offset, name in enumerate(sets):
            means, errors = [], []
            for kind in KINDS:
                values = [r["tested"][kind][key] * 100 for r in runs if r["set"] == name]
                means.append(statistics.fmean(values) if values else 0.0)
                errors.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            positions = np.arange(len(KINDS)) + offset * width
            ax.bar(positions, means, width, yerr=errors, capsize=3, label=f"trained on {name}")
        ax.set_xticks(np.arange(len(KINDS)) + width * (len(sets) - 1) / 2, [f"{k} test part" for k in KINDS])
        ax.set_ylabel("%")
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for cross_kind.md, .json and .png")
    parser.add_argument("--seeds", default="1,2,3", help="training seeds (model initialisation and data order)")
    parser.add_argument("--sets", default="sms,mail,both", help="training sets, of sms, mail, both")
    parser.add_argument("--split-seed", type=int, default=123, help="the one split every model is tested on")
    parser.add_argument("--max-fpr", type=float, default=0.01, help="each kind's threshold: FPR ≤ this on validation")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant", help="as spamguard train's")
    parser.add_argument("--max-grad-norm", type=float, default=None, help="as spamguard train's; default: none")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--subset", type=int, default=None, help="at most N messages per kind and label (a check)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a busy machine)")
    parser.add_argument(
        "--every-epoch", action="store_true",
        help="also record every epoch's validation and test scores (for benchmarks/epoch_rules.py)",
    )  # fmt: skip
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, metavar="JSON",
        help="train nothing: one report from the runs of earlier cross_kind.json files (seeds run at other times)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    sets = [name for name in args.sets.split(",") if name]
    if unknown := [name for name in sets if name not in SETS]:
        parser.error(f"unknown training set(s) {', '.join(unknown)}: use sms, mail, both")
    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    began = datetime.now()
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    examples, reports, splits = load_split(args.split_seed, args.subset, log=print)
    print(
        f"data: {len(examples)} messages, split by kind and label (seed {args.split_seed}): {splits.describe_counts()}"
    )

    base = work / f"gpt2-{args.layers}x{args.width}"
    base.mkdir()
    config = {
        "model_type": "gpt2",
        "n_layer": args.layers,
        "n_head": args.heads,
        "n_embd": args.width,
        "n_positions": args.max_tokens,
    }
    (base / "config.json").write_text(json.dumps(config))
    tokenizer = bpe_files()
    if tokenizer is None:
        print("error: no gpt2_bpe/ in the data sets folder: set SPAMGUARD_DATA to a copy of ../shared/data")
        return 1
    rule = threshold_rule(ThresholdOptions(max_fpr=args.max_fpr), log=lambda _line: None)

    runs: list[dict[str, Any]] = []
    cpu = read_cpu_info().describe()
    total = len(sets) * len(seeds)
    # seed by seed, so a slow stretch of a shared machine does not fall on one training set only
    for step, (seed, name) in enumerate(((s, n) for s in seeds for n in sets), start=1):
        job = Job(
            base=str(base),
            weights="random",
            tokenizer=tokenizer[0].parent,
            max_tokens=args.max_tokens,
            out=work / f"{name}-seed{seed}",
            name=f"cross-{name}-{seed}",
            install=False,
            threads=args.threads,
            recipe=TrainSettings(
                trainable="all",
                epochs=args.epochs,
                lr=args.lr,
                lr_schedule=args.lr_schedule,
                max_grad_norm=args.max_grad_norm,
                seed=seed,
            ),
        )
        train_splits = restrict(splits, SETS[name])
        print(
            f"[{step}/{total}] training on {name} (seed {seed}): {len(train_splits.train)} training messages",
            flush=True,
        )
        epochs, on_epoch = epoch_scorer(splits, job) if args.every_epoch else ([], None)
        t0 = time.perf_counter()
        report = run(
            job,
            train_splits,
            data_source=f"cross-kind benchmark: {name}",
            threshold_rule=rule,
            log=lambda _line: None,
            files=model_files(job),
            on_epoch=on_epoch,
        )
        seconds = time.perf_counter() - t0  # with --every-epoch, the scoring of every epoch too
        scored, precision = score_parts(report.bundle, splits)
        training = load_bundle(report.bundle).manifest["training"]
        tested = {kind: figures(scored, splits, kind) for kind in KINDS}
        runs.append(
            {
                "set": name,
                "seed": seed,
                "seconds": seconds,
                "precision": precision,
                "tested": tested,
                # every score, in the split's order: another threshold rule can be applied without retraining
                "scores": {part: scored[part].tolist() for part in ("validation", "test")},
                "thresholds": scored["thresholds"],
                # the epochs as validation saw them: whether a run converged, or fell back and was rescued
                "history": training["history"],
                "best_epoch": training["best_epoch"],
                "epoch_rule": training["epoch_rule"],  # training.epoch_choice: how best_epoch was chosen
                # where and when it ran, for a report that merges runs of several machines and days
                "cpu": cpu,
                "finished": f"{datetime.now():%Y-%m-%d %H:%M}",
            }
            | ({"epochs": epochs} if args.every_epoch else {})
        )
        args.out.mkdir(parents=True, exist_ok=True)  # after every run, so a stopped job keeps what it measured
        (args.out / "cross_kind.json").write_text(
            json.dumps({"config": vars(args) | {"out": str(args.out)}, "runs": runs}, indent=1)
        )
        described = "; ".join(
            f"{kind} test: recall {t['recall']:.2%} FPR {t['fpr']:.2%} at {t['threshold']:.3g}, recall "
            f"{t['recall_at_val_fpr']:.2%} at val-FPR ≤ {OPERATING_FPR:.1%}"
            for kind, t in tested.items()
        )
        print(f"[{step}/{total}] {name} seed {seed}: {seconds:.0f} s, {precision}; {described}", flush=True)
        shutil.rmtree(job.out, ignore_errors=True)

    command = command_line(args.out)
    counts = splits.counts_by_kind()
    clipped = f", gradients clipped to norm {args.max_grad_norm:g}" if args.max_grad_norm else ""
    lines = [
        "# Cross-kind benchmark: SMS only, mail only, both",
        "",
        f"Run {began:%Y-%m-%d %H:%M} to {datetime.now():%H:%M} on {cpu} ({args.threads or 'default'} torch "
        f"threads): `{command}`",
        "",
        f"Model: GPT-2 architecture {args.layers} layers x {args.width} ({args.heads} heads), random initialisation, "
        f"every layer trained, {args.epochs} epochs, lr {args.lr:g} ({args.lr_schedule}{clipped}), max tokens "
        f"{args.max_tokens}, seeds "
        f"{', '.join(map(str, seeds))}; each kind's threshold chosen for FPR ≤ {args.max_fpr:g} on its validation "
        f"part; the kept epoch chosen by {kept_by(runs)}; scored through the runtime "
        f"({runs[0]['precision'] if runs else '-'}).",
        "",
        f"Data ({'; '.join(f'{LABEL_NAMES[r.label]} {r.path}: {r.used}' for r in reports)}; "
        f"{'at most ' + str(args.subset) + ' per kind and label, ' if args.subset else ''}one split (seed "
        f"{args.split_seed}): "
        + "; ".join(
            f"{kind} test {c['test']['ham']} ham + {c['test']['spam']} spam, validation {c['validation']['ham']} ham "
            f"+ {c['validation']['spam']} spam"
            for kind, c in counts.items()
        )
        + ")",
        "",
        *table(runs, sets),
        "",
        "Ranking at equal test FPR (the threshold set on test so that k test ham pass; not an operating point):",
        "",
        *matched_table(runs, sets, splits),
        "",
        "Training time:",
        *timing(runs),
        "",
        "Checks (issue 9, means over seeds):",
        *checks(runs),
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cross_kind.md").write_text("\n".join(lines))
    plot(runs, sets, args.out / "cross_kind.png")
    shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    print(f"wrote {args.out / 'cross_kind.md'}, {args.out / 'cross_kind.json'} and {args.out / 'cross_kind.png'}")
    return 0


def kept_by(runs: list[dict[str, Any]]) -> str:
    """The rules that chose the runs' kept epochs (`training.epoch_choice`); runs made before a rule was
    recorded kept theirs by validation accuracy."""
    names = sorted({run.get("epoch_rule", "accuracy") for run in runs})
    return " and ".join(f"validation {name}" for name in names) or "-"


FIGURE_KEYS = ("threshold", "recall", "fpr", "recall_at_val_fpr", "fpr_at_val_fpr")  # a run's `tested[kind]`


def run_problem(run: Any) -> str | None:
    """What makes one run recorded in a cross_kind.json unusable in a report (a file edited by hand or cut short),
    checked before any table is made, so it is one line rather than a traceback; None when it is whole."""
    if not isinstance(run, dict) or run.get("set") not in SETS or not isinstance(run.get("seed"), int):
        return "no training set and seed"
    name = f"{run['set']} seed {run['seed']}"
    if not isinstance(run.get("seconds"), float | int):
        return f"{name}: no training time"
    tested = run.get("tested")
    if not isinstance(tested, dict) or any(
        not isinstance(tested.get(kind), dict)
        or not all(isinstance(tested[kind].get(k), float | int) for k in FIGURE_KEYS)
        for kind in KINDS
    ):
        return f"{name}: no test figures of the bundle"
    scores = run.get("scores")
    if not isinstance(scores, dict) or any(
        not isinstance(scores.get(part), list) or not all(isinstance(s, float | int) for s in scores[part])
        for part in ("validation", "test")
    ):
        return f"{name}: no saved validation and test scores"
    return None


def where_and_when(runs: list[dict[str, Any]]) -> str:
    """`; finished FIRST to LAST on CPU` for a file's runs; runs recorded before 2026-12-01 name neither."""
    finished = sorted(str(run["finished"]) for run in runs if "finished" in run)
    cpus = sorted({str(run["cpu"]) for run in runs if "cpu" in run})
    if not finished:
        return "; when and on which CPU not recorded"
    span = finished[0] if finished[0] == finished[-1] else f"{finished[0]} to {finished[-1]}"
    return f"; finished {span} on {' and '.join(cpus)}"


OLDER_RUNS = {"lr_schedule": "constant", "max_grad_norm": None}


def merge(files: list[Path], out: Path) -> int:
    """The table, checks and chart of the runs recorded in several cross_kind.json files, each file named with
    its settings (they must agree on the model and split: a table of unlike runs would mean nothing)."""
    runs: list[dict[str, Any]] = []
    settings = (
        "split_seed", "max_fpr", "layers", "heads", "width", "epochs", "lr", "lr_schedule", "max_grad_norm",
        "max_tokens", "subset",
    )  # fmt: skip
    first: dict[str, Any] | None = None
    lines = ["# Cross-kind benchmark: SMS only, mail only, both (merged runs)", ""]
    for path in files:
        try:
            recorded = json.loads(path.read_text())
            # files written before the schedule options were trained at a constant rate without clipping
            config = {key: recorded["config"].get(key, OLDER_RUNS.get(key)) for key in settings}
            if not isinstance(recorded["runs"], list):
                raise TypeError("'runs' is not a list")
            if problem := next(filter(None, map(run_problem, recorded["runs"])), None):
                raise ValueError(f"a run: {problem}")
            seeds = sorted({(r["set"], r["seed"]) for r in recorded["runs"]})
            described = ", ".join(f"{name} seed {seed}" for name, seed in seeds) + where_and_when(recorded["runs"])
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
            print(f"error: {path} is not a cross_kind.json ({type(exc).__name__}: {exc})")
            return 1
        if first is not None and config != first:
            print(f"error: {path} was run with other settings ({config}) than {files[0]} ({first})")
            return 1
        first = first or config
        lines.append(f"- {path.parent.name}/{path.name}: {described}")
        runs += recorded["runs"]
    sets = [name for name in SETS if any(r["set"] == name for r in runs)]
    lines += ["", f"Settings: {first}; the kept epoch chosen by {kept_by(runs)}", "", *table(runs, sets), ""]
    try:
        _examples, _reports, splits = load_split(first["split_seed"], first["subset"], log=lambda _line: None)
    except SpamguardError as exc:
        print(f"error: the split the runs were tested on could not be rebuilt: {exc}")
        return 1
    if any(len(r["scores"]["test"]) != len(splits.test) for r in runs):
        print(
            f"error: the data sets folder's split has {len(splits.test)} test messages, not the runs' "
            "(other data than the runs had): set SPAMGUARD_DATA to the copy they were run on"
        )
        return 1
    lines += ["Ranking at equal test FPR (the threshold set on test so that k test ham pass; not an operating point):"]
    lines += ["", *matched_table(runs, sets, splits), ""]
    lines += ["Training time (runs of other times and machine loads: compare within one run):", *timing(runs), ""]
    lines += ["Checks (issue 9, means over seeds):", *checks(runs), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "cross_kind.md").write_text("\n".join(lines))
    plot(runs, sets, out / "cross_kind.png")
    print("\n".join(lines))
    print(f"wrote {out / 'cross_kind.md'} and {out / 'cross_kind.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
