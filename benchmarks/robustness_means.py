"""Means over seeds of `bench_robustness.py` runs: one results.md per seed in, the two tables of means out.

    python benchmarks/robustness_means.py RUN1/results.md RUN2/results.md ... [--out means.md] [--chart means.png]

One training per seed says little when a mail test part holds 50 spam (one message is 2 points): the target
(recall within 2 points of plain under every disguise, FPR not rising) is read on the means. Rows are matched by
method and kind; a row missing from a run is left out of the means (and named). The chart draws the means as bars
and each seed's figure as a dot on its bar, so the spread the means hide stays in sight."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

Table = dict[tuple[str, str], dict[str, float]]  # (method, kind) -> disguise -> percent


def read_tables(path: Path) -> tuple[list[str], Table, Table]:
    """The recall and FPR tables of one results.md, as written by `bench_robustness.markdown`."""
    tables: list[Table] = []
    names: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| method | kind |"):
            names = [c for c in cells[2:] if c != "largest drop (points)"]
            tables.append({})
        elif line.startswith("| ") and tables and not line.startswith("|---"):
            row = {name: float(value) for name, value in zip(names, cells[2:], strict=False) if value != "n/a"}
            if len(cells) < 3 or "plain" not in row:
                raise ValueError(f"{path}: a row without its method, kind and plain figure: {line[:80]!r}")
            tables[-1][(cells[0], cells[1])] = row
    if len(tables) != 2:
        raise ValueError(f"{path}: expected a recall and an FPR table, found {len(tables)}")
    return names, tables[0], tables[1]


def means(tables: list[Table]) -> tuple[Table, list[tuple[str, str]]]:
    rows = list(dict.fromkeys(row for table in tables for row in table))
    complete = [row for row in rows if all(row in table for table in tables)]
    result: Table = defaultdict(dict)
    for row in complete:
        for name in tables[0][row]:
            result[row][name] = statistics.fmean(table[row][name] for table in tables)
    return result, [row for row in rows if row not in complete]


def render(names: list[str], recall: Table, fpr: Table, runs: int) -> str:
    """The two tables of means; each row ends with how far the worst disguise moved it from plain: recall's
    largest drop, the FPR's largest rise (the two figures the target is stated in)."""
    lines = _table(f"Means of {runs} seeds, recall % on disguised spam (largest drop from plain, in points)",
                   "largest drop", names, recall, lambda plain, v: plain - v)  # fmt: skip
    lines += _table(f"Means of {runs} seeds, FPR % on disguised ham (largest rise from plain, in points)",
                    "largest rise", names, fpr, lambda plain, v: v - plain)  # fmt: skip
    return "\n".join(lines[1:]) + "\n"


def _table(
    title: str, last: str, names: list[str], values: Table, moved_by: Callable[[float, float], float]
) -> list[str]:
    lines = ["", title, "", "| method | kind | " + " | ".join(names) + f" | {last} |", "|" + "---|" * (len(names) + 3)]
    for (method, kind), row in values.items():
        cells = [f"{row[n]:.1f}" if n in row else "n/a" for n in names]
        moved = max(moved_by(row["plain"], v) for v in row.values())
        lines.append(f"| {method} | {kind} | " + " | ".join(cells) + f" | {moved:.1f} |")
    return lines


def chart(names: list[str], runs: list[tuple[Table, Table]], means_of: tuple[Table, Table], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(kind for _, kind in means_of[0]))
    methods = list(dict.fromkeys(method for method, _ in means_of[0]))
    fig, axes = plt.subplots(len(kinds), 2, figsize=(16, 3.6 * len(kinds)), squeeze=False)
    width = 0.8 / max(1, len(methods))
    for row, kind in enumerate(kinds):
        for col, what in enumerate(("recall % on disguised spam", "FPR % on disguised ham")):
            ax = axes[row, col]
            for j, method in enumerate(methods):
                mean = means_of[col].get((method, kind), {})
                x = [i + j * width for i, n in enumerate(names) if n in mean]
                ax.bar(x, [mean[n] for n in names if n in mean], width, label=method, alpha=0.7)
                for tables in runs:
                    seed = tables[col].get((method, kind), {})
                    ax.plot(x, [seed.get(n, float("nan")) for n in names if n in mean], "k.", markersize=3)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=20, fontsize=8)
            ax.set_title(f"{kind}: {what}", fontsize=10)
    axes[0, 1].legend(fontsize=8)
    fig.suptitle(f"means of {len(runs)} seeds (bars) and each seed (dots)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="results.md of each run")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    parser.add_argument("--chart", type=Path, default=None, help="draw the means and each seed's figures here (PNG)")
    args = parser.parse_args()
    try:
        read = [read_tables(path) for path in args.results]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    recall, left_recall = means([r[1] for r in read])
    fpr, left_fpr = means([r[2] for r in read])
    text = render(read[0][0], recall, fpr, len(read))
    if left := sorted(set(left_recall + left_fpr)):
        text += "\nLeft out (not in every run): " + "; ".join(f"{m}, {k}" for m, k in left) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if args.chart:
        chart(read[0][0], [(r[1], r[2]) for r in read], (recall, fpr), args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
