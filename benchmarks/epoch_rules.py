"""Which epoch should training keep? Ways of choosing it, applied to the same training runs.

    python benchmarks/epoch_rules.py --out DIR RUN.json [RUN.json ...]

Reads `benchmarks/cross_kind.py --every-epoch` results (every epoch's validation and test scores, fp32 torch) and,
for each rule below, takes the epoch it keeps in each run and scores that epoch as the benchmark scores a
bundle: each kind's threshold chosen on its own validation part by the product's rule (`--max-fpr` of the runs),
recall and FPR on the test part at it, and recall at the threshold that gives FPR <= 0.5% on validation. Rows are
the issue-9 pairs (a model tested on a kind it trained on); the checks are issue 9's.

Rules (ties go to the lower weighted validation loss, then to the earlier epoch; each run's own kept epoch is
checked against the rule it records, accuracy for runs made before it was recorded):
- accuracy: validation accuracy at 0.5, what `train` keeps with a fixed threshold;
- loss: the validation loss, weighted per kind and label as training weights it;
- balanced: mean validation accuracy at 0.5 over the (kind, label) groups the model trained on;
- recall: mean over the kinds it trained on of validation recall at that kind's threshold (the product's rule),
  what `train` keeps when every kind's threshold is chosen by `--max-fpr` (`training.epoch_choice`);
- last: the last epoch.

The rules are judged here on test figures of few runs; a rule picked for its test figures is no longer tested
independently by them, so any rule adopted from this table needs runs of other seeds to confirm it.
Writes DIR/epoch_rules.md and prints it."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cross_kind import (  # a sibling script, not a package
    OPERATING_FPR,
    SETS,
    command_line,
    figures,
    fpr_met,
    kind_rows,
    load_split,
    mean_sd,
    recall_met,
    run_problem,
)

from spamguard.thresholds import ThresholdOptions, threshold_rule
from spamguard.training.data import Splits
from spamguard.training.epoch_choice import kept_epoch, recall_over_kinds
from spamguard.training.prefix_precision import read_cpu_info

Rule = Callable[[dict[str, Any], list[dict[str, Any]]], int]  # (run, per-epoch validation figures) -> epoch


def validation_figures(run: dict[str, Any], splits: Splits, max_fpr: float) -> list[dict[str, Any]]:
    """Per epoch: the weighted validation loss and the accuracy at 0.5 (history, as training measured them), the
    group accuracies at 0.5, and the mean validation recall at each kind's threshold chosen by the product's rule
    (`training.epoch_choice.recall_over_kinds`, what `train` ranks epochs by under `--max-fpr`)."""
    rule = threshold_rule(ThresholdOptions(max_fpr=max_fpr), log=lambda _line: None)
    rows = [kind_rows(splits, "validation", kind) for kind in SETS[run["set"]]]
    index = np.concatenate([i for i, _labels in rows])
    labels = np.concatenate([labels for _i, labels in rows])
    kinds = np.array([splits.validation[i].kind for i in index])
    figures = []
    for epoch, stats in zip(run["epochs"], run["history"], strict=True):
        scores = np.asarray(epoch["validation"])[index]
        groups = [
            float(np.mean((scores[(kinds == kind) & (labels == label)] >= 0.5) == label))
            for kind in SETS[run["set"]]
            for label in (0, 1)
        ]
        figures.append(
            {"loss": stats["val_loss"], "accuracy": stats["val_accuracy"], "balanced": statistics.fmean(groups)}
            | {"recall": recall_over_kinds(labels, kinds, scores, rule)}
        )
    return figures


def best_by(key: str, higher: bool = True) -> Rule:
    """The epoch `train` would keep if it ranked epochs by this figure: `training.epoch_choice.kept_epoch`."""

    def rule(_run: dict[str, Any], figures: list[dict[str, Any]]) -> int:
        sign = 1 if higher else -1
        return kept_epoch([(sign * f[key], -f["loss"]) for f in figures])

    return rule


RULES: dict[str, Rule] = {
    "accuracy": best_by("accuracy"),
    "loss": best_by("loss", higher=False),
    "balanced": best_by("balanced"),
    "recall": best_by("recall"),
    "last": lambda run, _figures: len(run["epochs"]),
}


def tested(run: dict[str, Any], epoch: int, splits: Splits, kind: str, max_fpr: float) -> dict[str, float]:
    """Test figures of one epoch's scores on one kind, by `cross_kind.figures` (what it computes for a bundle),
    with the kind's threshold chosen on this epoch's validation scores by the product's rule."""
    scores = {part: np.asarray(run["epochs"][epoch - 1][part]) for part in ("validation", "test")}
    val_index, val_labels = kind_rows(splits, "validation", kind)
    rule = threshold_rule(ThresholdOptions(max_fpr=max_fpr), log=lambda _line: None)
    threshold = rule(kind, val_labels, scores["validation"][val_index])[0]
    return figures(scores | {"thresholds": {kind: threshold}}, splits, kind)


def report(runs: list[dict[str, Any]], splits: Splits, max_fpr: float) -> tuple[list[str], list[str]]:
    """The table (a row per rule and issue-9 pair) and the checks per rule."""
    figures = {id(run): validation_figures(run, splits, max_fpr) for run in runs}
    warnings = [
        f"warning: {run['set']} seed {run['seed']}: the {name} rule keeps epoch {kept} here, the run kept "
        f"{run['best_epoch']} by it"
        for run in runs
        for name in [run.get("epoch_rule", "accuracy")]  # runs before the rule was recorded kept by accuracy
        if (kept := RULES[name](run, figures[id(run)])) != run["best_epoch"]
    ]
    header = (
        "| rule | trained on | tested on | epochs kept (by seed) | recall % at val-FPR ≤ "
        f"{OPERATING_FPR:.1%} (test FPR %) | FPR % at the model's threshold |"
    )
    lines, checks = [header, "|" + "---|" * 6], []
    for name, rule in RULES.items():
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for set_name, kinds in SETS.items():
            chosen = sorted((run["seed"], rule(run, figures[id(run)]), run) for run in runs if run["set"] == set_name)
            for kind in kinds if chosen else ():
                rows = [tested(run, epoch, splits, kind, max_fpr) for _seed, epoch, run in chosen]
                results[set_name, kind] = rows
                kept = ", ".join(str(epoch) for _seed, epoch, _run in chosen)
                recall = mean_sd([r["recall_at_val_fpr"] for r in rows])
                lines.append(
                    f"| {name} | {set_name} | {kind} | {kept} | {recall} "
                    f"({mean_sd([r['fpr_at_val_fpr'] for r in rows], digits=2)}) | "
                    f"{mean_sd([r['fpr'] for r in rows], digits=2)} |"
                )
        checks.append(f"- {name}: " + "; ".join(rule_checks(results)))
    return warnings + lines, [*checks, "", *served_against_fp32(runs, splits, max_fpr)]


def served_against_fp32(runs: list[dict[str, Any]], splits: Splits, max_fpr: float) -> list[str]:
    """How far this table's fp32 scores are from what the runtime served (int8 bundle) for the kept epoch: the
    gap between a rule's figures and the cross-kind table's is only the rule's where this is small."""
    same, pairs, worst = 0, 0, 0.0
    for run in runs:
        for kind in SETS[run["set"]]:
            served = run["tested"][kind]["recall_at_val_fpr"]
            here = tested(run, run["best_epoch"], splits, kind, max_fpr)["recall_at_val_fpr"]
            pairs += 1
            same += served == here
            worst = max(worst, abs(served - here))
    return [
        f"The kept epoch scored here (fp32) against the runtime's bundle (int8), recall at val-FPR ≤ "
        f"{OPERATING_FPR:.1%}: equal in {same} of {pairs} run-and-kind pairs, at most {worst * 100:.1f} points apart."
    ]


def rule_checks(results: dict[tuple[str, str], list[dict[str, float]]]) -> list[str]:
    def mean(set_name: str, kind: str, key: str) -> float | None:
        rows = results.get((set_name, kind))
        return statistics.fmean(r[key] for r in rows) if rows else None

    out = []
    for kind in ("mail", "sms"):
        mixed, alone = mean("both", kind, "recall_at_val_fpr"), mean(kind, kind, "recall_at_val_fpr")
        fpr = mean("both", kind, "fpr")
        if fpr is not None:
            out.append(f"{kind} FPR {fpr:.2%} ({'met' if fpr_met(fpr) else 'NOT met'})")
        if mixed is not None and alone is not None:
            verdict = "met" if recall_met(mixed, alone) else "NOT met"
            out.append(f"{kind} recall {mixed:.2%} vs {alone:.2%} alone, {(mixed - alone) * 100:+.2f} ({verdict})")
    return out


# what the report reads of each file's config
CONFIG_KEYS = frozenset(
    ("split_seed", "subset", "max_fpr", "layers", "width", "epochs", "lr", "lr_schedule", "max_grad_norm")
)


def malformed(run: Any, splits: Splits) -> str | None:
    """What makes one run of a cross_kind.json unusable here, checked before any figure is computed, so a file
    edited by hand or cut short is one line rather than a traceback; None when it is whole."""
    if (problem := run_problem(run)) is not None:  # what every report of recorded runs needs
        return problem
    epochs, history = run.get("epochs"), run.get("history")
    if not isinstance(epochs, list) or not isinstance(history, list) or not epochs or len(epochs) != len(history):
        return f"{run['set']} seed {run['seed']}: epochs and history are not lists of one entry per epoch"
    if not all(
        isinstance(h, dict) and all(isinstance(h.get(k), float | int) for k in ("val_loss", "val_accuracy"))
        for h in history
    ):
        return f"{run['set']} seed {run['seed']}: a history entry has no validation loss and accuracy"
    sizes = {"validation": len(splits.validation), "test": len(splits.test)}
    for epoch in epochs:
        if not isinstance(epoch, dict) or any(
            not isinstance(epoch.get(part), list)
            or len(epoch[part]) != n
            or not all(isinstance(s, float | int) and 0.0 <= s <= 1.0 for s in epoch[part])  # NaN fails too
            for part, n in sizes.items()
        ):
            return (
                f"{run['set']} seed {run['seed']}: an epoch's scores are not one P(spam) per message of the data "
                f"sets folder's split ({sizes['validation']} validation and {sizes['test']} test messages)"
            )
    if not isinstance(rule := run.get("epoch_rule", "accuracy"), str) or rule not in RULES:  # a list is unhashable
        return f"{run['set']} seed {run['seed']}: kept its epoch by an unknown rule {rule!r}"
    if not isinstance(run.get("best_epoch"), int) or not 1 <= run["best_epoch"] <= len(epochs):
        return f"{run['set']} seed {run['seed']}: no kept epoch among its {len(epochs)}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", metavar="JSON", help="cross_kind.json files (--every-epoch)")
    parser.add_argument("--out", type=Path, required=True, help="folder for epoch_rules.md")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    configs = []
    for path in args.runs:
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {path}: {exc}")
            return 1
        if not isinstance(loaded, dict) or not isinstance(loaded.get("runs"), list) or "config" not in loaded:
            print(f"error: {path} is not a cross_kind.json (no config and runs)")
            return 1
        if any(not isinstance(run, dict) or "epochs" not in run for run in loaded["runs"]):
            print(f"error: {path} has no per-epoch scores: run cross_kind.py with --every-epoch")
            return 1
        runs += loaded["runs"]
        configs.append(loaded["config"])
    if any(not isinstance(c, dict) or not c.keys() >= CONFIG_KEYS for c in configs):
        print(f"error: a config of {', '.join(map(str, args.runs))} lacks one of {', '.join(sorted(CONFIG_KEYS))}")
        return 1
    if len({(c["split_seed"], c["subset"], c["max_fpr"]) for c in configs}) != 1:
        print("error: the runs were not made on one split with one --max-fpr")
        return 1
    config = configs[0]
    _examples, _reports, splits = load_split(config["split_seed"], config["subset"], log=lambda _line: None)
    for run in runs:
        if (problem := malformed(run, splits)) is not None:
            print(f"error: a run of {', '.join(map(str, args.runs))}: {problem}")
            return 1
    table, checks = report(runs, splits, config["max_fpr"])
    names = ", ".join(f"{run['set']} seed {run['seed']}" for run in runs)
    shown = {arg: f"{Path(arg).parent.name}/{Path(arg).name}" for arg in sys.argv[1:] if Path(arg) in args.runs}
    lines = [
        "# Which epoch to keep: rules applied to the same training runs",
        "",
        f"{datetime.now():%Y-%m-%d %H:%M}, {read_cpu_info().describe()}: `{command_line(args.out, shown)}`",
        "",
        f"Runs: {names}; settings of the first file: "
        + ", ".join(f"{k} {config[k]}" for k in ("layers", "width", "epochs", "lr", "lr_schedule", "max_grad_norm"))
        + f"; thresholds for FPR ≤ {config['max_fpr']:g} on each kind's validation part (the product's rule). "
        "Scores are the torch model's (fp32) of each epoch, not the exported bundle's (int8).",
        "",
        *table,
        "",
        "Checks (issue 9, means over seeds):",
        *checks,
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "epoch_rules.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
