"""`make bench-cascade`: the cascade (a distilled student in front of the full model) and the verdict cache,
measured end to end in one run (docs/cascade.md):

1. the offline teacher: GPT-2's architecture at 4 layers x 256, random initialisation, every layer trained, lr
   3e-4, 5 epochs, 256 tokens, each kind's threshold for FPR <= 1% on its validation part, trained by the real
   pipeline on the default data (SMS Spam Collection + SpamAssassin sample, split 70/10/20 by kind and label,
   seed 123); or `--teacher BUNDLE`, a bundle trained on that split;
2. students distilled from it (`--students 2x128,4x128`, `spamguard.training.distill`: the teacher's own
   training part, soft targets + labels), each into a copy of the teacher;
3. accuracy, through the runtime (`Classifier`, cascade on against `cascade=False`), per kind on the
   validation and test parts: the cascade's verdict agreement with the teacher, the share of messages the
   teacher decides, recall and FPR of cascade and teacher;
4. speed with a GPT-2-124M-shaped bundle (random weights: speed does not depend on them; the teacher's
   thresholds) alone and with each student in front (the student and its bands exactly as distilled from the
   offline teacher): `classify_batch` (score_batch's path, plus the cascade) on the mail and SMS test parts.
   Method for the share: the student decides from its own scores and bands alone, so on the very test messages
   it sends the full model exactly the share measured in step 3, whatever the full model's weights; the stage
   of every verdict is counted to confirm it. The student with the most mail messages/s is chosen;
5. the milter through a private Postfix (8 SMTP clients; bench_plugins.py's set-up; needs root, postfix,
   aiosmtpd), full model alone against the chosen cascade, on the mail test part and on the SMS test part (each
   SMS the body of a minimal mail, so the mail band applies to it; the share is read from the milter's log);
6. the verdict cache in the scoring pool, with the chosen cascade: the whole shared corpus replayed in file
   order (its own duplicate rate: the SMS collection repeats 403 texts), and a campaign (one spam mail 1,000
   times among `--campaign-others` other mails); the campaign again with the full model alone (no student),
   where a hit saves a GPT-2 pass; cache on and off: hit rate and messages/s.

Writes DIR/cascade.md (tables, targets met or not, method, command, CPU, date), DIR/cascade.json and
DIR/cascade.png; prints one line per step.

    .venv/bin/python benchmarks/bench_cascade.py --out DIR [--teacher BUNDLE] [--students 2x128,4x128]
        [--threads N] [--torch-threads 1] [--milter-messages N] [--skip-milter] [--campaign-others 500]
    SPAMGUARD_DATA=tests/fixtures .venv/bin/python benchmarks/bench_cascade.py --out /tmp/c --check  # tiny run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "plugins")]  # the test helpers: bundles, mailstack

from cross_kind import command_line  # noqa: E402
from offline_recipe import add_schedule_arguments, offline_settings, schedule_words  # noqa: E402

from spamguard.bundle import MANIFEST, load_bundle, rewrite_bundle  # noqa: E402
from spamguard.classifier import Classifier, Verdict  # noqa: E402
from spamguard.datasets import Example  # noqa: E402
from spamguard.mail_sources import read_labelled  # noqa: E402
from spamguard.message_text import KINDS  # noqa: E402
from spamguard.metrics import pooled_metrics  # noqa: E402
from spamguard.thresholds import ThresholdOptions, threshold_rule  # noqa: E402
from spamguard.training.data import Splits  # noqa: E402
from spamguard.training.distill import StudentSettings, check_split, distill  # noqa: E402
from spamguard.training.imbalance import stratified_splits  # noqa: E402
from spamguard.training.pipeline import Job, model_files, run  # noqa: E402
from spamguard.training.prefix_precision import read_cpu_info  # noqa: E402
from spamguard.training.public_data import bpe_files  # noqa: E402

SPLIT_SEED = 123
AGREEMENT = 0.995
SPEEDUP_TARGET = 5.0


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


# --- data and models -------------------------------------------------------------------------------------------


def default_data() -> tuple[Splits, list[Example]]:
    """`spamguard train`'s default data as the data sets folder holds it (what `--data SMS --ham MAIL/ham --spam
    MAIL/spam` reads: the same split as the default's)."""
    from public_data import MAIL, SMS, dataset

    mail = dataset(MAIL)
    examples, _ = read_labelled(data=dataset(SMS), ham=[mail / "ham"], spam=[mail / "spam"])
    splits = stratified_splits(examples, SPLIT_SEED)
    log(f"data: {len(examples)} messages, split by kind and label (seed {SPLIT_SEED}): {splits.describe_counts()}")
    return splits, examples


def train_teacher(args: argparse.Namespace, splits: Splits, work: Path) -> Path:
    base = work / f"gpt2-{args.layers}x{args.width}"
    base.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "gpt2", "n_layer": args.layers, "n_head": args.heads, "n_embd": args.width}
    (base / "config.json").write_text(json.dumps({**config, "n_positions": args.max_tokens}))
    tokenizer = bpe_files()
    if tokenizer is None:
        raise SystemExit("no gpt2_bpe/ in the data sets folder: set SPAMGUARD_DATA to a copy of ../shared/data")
    job = Job(
        base=str(base),
        weights="random",
        tokenizer=tokenizer[0].parent,
        max_tokens=args.max_tokens,
        out=work / "teacher",
        name="offline-teacher",
        install=False,
        threads=args.torch_threads,
        recipe=offline_settings(args, seed=SPLIT_SEED),
    )
    rule = threshold_rule(ThresholdOptions(max_fpr=args.max_fpr), log=log)
    log(f"teacher: training {args.layers}x{args.width} on both kinds ({len(splits.train)} messages)")
    report = run(job, splits, data_source="bench_cascade", threshold_rule=rule, log=log, files=model_files(job))
    return report.bundle


def distill_student(teacher: Path, splits: Splits, spec: str, args: argparse.Namespace, work: Path) -> Path:
    layers, width = (int(x) for x in spec.lower().split("x"))
    out = work / f"distilled-{spec}"
    if args.reuse_students and (out / MANIFEST).is_file() and load_bundle(out).cascade is not None:
        log(f"student {spec}: reusing {out} (--reuse-students)")
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(teacher, out)
    settings = StudentSettings(
        n_layer=layers,
        n_head=max(1, width // 64),
        n_embd=width,
        epochs=args.student_epochs,
        lr_schedule=args.lr_schedule,
        max_grad_norm=args.max_grad_norm,
        seed=SPLIT_SEED,
    )
    log(f"student {spec}: distilling ({settings.n_head} heads, {settings.epochs} epochs, {schedule_words(args)})")
    distill(out, splits, settings=settings, threads=args.torch_threads, log=log)
    return out


def full_with_thresholds(source: Path, teacher: Path, out: Path) -> Path:
    """A copy of the full model's bundle carrying the teacher's thresholds, so the teacher's bands fit it."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    manifest = load_bundle(teacher, verify=False).manifest
    fields = {key: manifest.get(key) for key in ("threshold", "unsure", "thresholds")}
    rewrite_bundle(load_bundle(out), add={}, fields=fields)
    return out


def with_student(full: Path, distilled: Path, out: Path) -> Path:
    """The full model's bundle with the distilled bundle's student and bands, as `distill` would have written
    them had it distilled that model."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(full, out)
    source = load_bundle(distilled)
    record = source.manifest["cascade"]
    names = [name for precision in record["models"] for name in source.student_files(precision)]
    add = {name: distilled / name for name in names}
    rewrite_bundle(load_bundle(out), add=add, fields={"cascade": record})
    return out


# --- accuracy through the runtime ------------------------------------------------------------------------------


def _figures(verdicts: list[Verdict], truth: list[Verdict], labels: np.ndarray) -> dict[str, Any]:
    spam = np.array([v.label == "spam" for v in verdicts])
    ham = labels == 0

    def confusion(flags: np.ndarray) -> dict[str, Any]:
        return pooled_metrics(
            [
                {
                    "tp": int(np.sum(flags & ~ham)),
                    "fp": int(np.sum(flags & ham)),
                    "tn": int(np.sum(~flags & ham)),
                    "fn": int(np.sum(~flags & ~ham)),
                }
            ]
        )

    same = [a.label == b.label for a, b in zip(verdicts, truth, strict=True)]
    return {
        "n": len(verdicts),
        "agreement": float(np.mean(same)),
        "disagreements": len(same) - sum(same),
        "to_full": sum(v.stage == "full" for v in verdicts),
        "share_full": float(np.mean([v.stage == "full" for v in verdicts])),
        "cascade": confusion(spam),
        "full": confusion(np.array([v.label == "spam" for v in truth])),
    }


def accuracy(distilled: Path, splits: Splits) -> dict[str, dict[str, Any]]:
    """{part: {kind: figures}} of the cascade against the teacher alone, both through the runtime."""
    on, off = Classifier.load(distilled), Classifier.load(distilled, cascade=False)
    result: dict[str, dict[str, Any]] = {}
    for name, part in (("validation", splits.validation), ("test", splits.test)):
        result[name] = {}
        for kind in KINDS:
            examples = [e for e in part if e.kind == kind]
            if not examples:
                continue
            texts = [e.text for e in examples]
            labels = np.array([e.label for e in examples])
            result[name][kind] = _figures(on.classify_texts(texts, kind), off.classify_texts(texts, kind), labels)
    return result


# --- speed -----------------------------------------------------------------------------------------------------


def raw_messages(examples: list[Example]) -> list[bytes]:
    """The messages as they arrive: a mail's file, an SMS's text."""
    return [Path(e.source).read_bytes() if e.kind == "mail" else e.text.encode() for e in examples]


def classify_speed(bundle: Path, messages: list[bytes], cascade: bool, threads: int | None) -> dict[str, Any]:
    clf = Classifier.load(bundle, cascade=cascade, threads=threads)
    clf.classify_batch(messages[:4])  # warm the sessions
    start = time.perf_counter()
    verdicts = clf.classify_batch(messages)
    seconds = time.perf_counter() - start
    full = sum(v.stage == "full" for v in verdicts)
    return {"messages": len(messages), "seconds": seconds, "per_second": len(messages) / seconds, "to_full": full}


def as_mail(text: bytes, index: int) -> bytes:
    return b"From: a@example.test\nTo: b@example.net\nSubject: sms %d\n\n" % index + text


def milter_speed(bundles: dict[str, Path], sets: dict[str, list[bytes]], clients: int) -> list[dict[str, Any]]:
    from mailstack import delivered_by_tag, mail_stack, running_milter, send_concurrently, tagged

    rows = []
    with mail_stack() as stack:
        for label, bundle in bundles.items():
            log_file = stack.root / f"milter-{label}.log"
            options = ["--timeout", "600", "--cache-entries", "0"]  # scored, never cached: the model's speed
            with running_milter(bundle, *options, port=stack.milter_port, log=log_file) as milter:
                for name, raws in sets.items():
                    stack.clear_sink()
                    before = len(milter.lines())
                    filtered = [tagged(raw, f"m{i}") for i, raw in enumerate(raws)]
                    wall, latencies = send_concurrently(stack.port_milter, filtered, clients)
                    lines = milter.lines()[before:]
                    deadline = time.monotonic() + 600
                    while len(stack.delivered()) < len(raws) and time.monotonic() < deadline:
                        time.sleep(0.2)
                    arrived = delivered_by_tag(stack)
                    row = {
                        "model": label,
                        "set": name,
                        "messages": len(raws),
                        "per_second": len(raws) / wall,
                        "p50_ms": statistics.median(latencies) * 1000,
                        "p95_ms": statistics.quantiles(latencies, n=20)[-1] * 1000 if len(latencies) > 1 else 0.0,
                        "to_full": sum(" stage=full " in line for line in lines),
                        "unscored": sum("verdict=error" in line for line in lines),
                        "lost": len(raws) - len(arrived),
                    }
                    rows.append(row)
                    log(
                        f"milter {label} {name}: {row['per_second']:.2f} msg/s, p95 {row['p95_ms']:.0f} ms, "
                        f"full model on {row['to_full']} of {len(raws)}, lost {row['lost']}, unscored {row['unscored']}"
                    )
    return rows


def pool_replay(bundle: Path, messages: list[bytes], cache: bool, threads: int | None) -> dict[str, Any]:
    """Every message through the scoring pool (64 in flight), in order: messages/s and the cache's hit rate. The
    pool may hold more than 64: a message stays counted until the stage scoring it lets go, a moment after its
    waiter has its verdict and lets the next one in."""
    from spamguard.plugins.pool import PoolSettings, ScoringPool

    settings = PoolSettings(timeout=600, max_pending=256, cache_entries=100_000 if cache else 0)
    with ScoringPool(Classifier.load(bundle, threads=threads), settings) as pool:

        async def replay() -> float:
            gate = asyncio.Semaphore(64)

            async def one(message: bytes) -> None:
                async with gate:
                    await pool.classify(message)

            start = time.perf_counter()
            await asyncio.gather(*(one(m) for m in messages))
            return time.perf_counter() - start

        seconds = asyncio.run(replay())
        stats = pool.stats()
    hit_rate = stats.cache.hit_rate if stats.cache else 0.0
    return {"messages": len(messages), "per_second": len(messages) / seconds, "hit_rate": hit_rate}


def corpus_in_file_order() -> list[bytes]:
    from public_data import MAIL, SMS, dataset

    sms = [line.split(b"\t", 1)[1] for line in dataset(SMS).read_bytes().splitlines() if b"\t" in line]
    mails = [path.read_bytes() for path in sorted(dataset(MAIL).glob("*/*")) if path.is_file()]
    return sms + mails


def campaign(examples: list[Example], copies: int, others: int) -> list[bytes]:
    """One spam mail `copies` times, spread evenly among `others` other mails of the corpus."""
    mails = [e for e in examples if e.kind == "mail"]
    spam = next(e for e in mails if e.label == 1)
    rest = raw_messages([e for e in mails if e is not spam][:others])
    text = Path(spam.source).read_bytes()
    total = copies + len(rest)
    positions = {round(i * total / max(len(rest), 1)) for i in range(len(rest))}
    remaining = iter(rest)
    return [next(remaining) if i in positions else text for i in range(total)]


# --- report ----------------------------------------------------------------------------------------------------


def plot(result: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    speed = result["speed"]
    groups = [(f"classify_batch {name}", speed["classify"][name]) for name in speed["classify"]]
    groups += [(f"milter {row['set']}", row) for row in result.get("milter", []) if row["model"] == "full"]
    labels, full, cascade = [], [], []
    for name, entry in groups:
        if name.startswith("milter"):
            chosen = next(r for r in result["milter"] if r["model"] == "cascade" and r["set"] == name.split(" ", 1)[1])
            labels.append(name)
            full.append(entry["per_second"])
            cascade.append(chosen["per_second"])
        else:
            labels.append(name)
            full.append(entry["full"]["per_second"])
            cascade.append(entry["cascade"]["per_second"])
    x = np.arange(len(labels))
    axes[0].bar(x - 0.2, full, 0.4, label="GPT-2-124M shape alone")
    axes[0].bar(x + 0.2, cascade, 0.4, label=f"with the {result['chosen']} student")
    axes[0].set_xticks(x, labels, rotation=15, fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("messages/s")
    axes[0].legend(fontsize=8)
    axes[0].set_title("speed")
    cache = result["cache"]
    names = list(cache)
    x = np.arange(len(names))
    axes[1].bar(x - 0.2, [cache[n]["off"]["per_second"] for n in names], 0.4, label="cache off")
    axes[1].bar(x + 0.2, [cache[n]["on"]["per_second"] for n in names], 0.4, label="cache on")
    for i, n in enumerate(names):
        axes[1].annotate(f"hit rate {cache[n]['on']['hit_rate']:.1%}", (i, cache[n]["on"]["per_second"]), fontsize=8)
    axes[1].set_xticks(x, names, rotation=15, fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("messages/s (scoring pool)")
    axes[1].legend(fontsize=8)
    axes[1].set_title("verdict cache")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def percent(x: float) -> str:
    return f"{100 * x:.2f}"


def report(result: dict[str, Any], args: argparse.Namespace, began: datetime) -> list[str]:
    command = command_line(args.out, {str(args.teacher): "TEACHER"} if args.teacher else None)
    cpu = read_cpu_info().describe()
    chosen = result["chosen"]
    lines = [
        "# Cascade and verdict cache benchmark",
        "",
        f"Run {began:%Y-%m-%d %H:%M} to {datetime.now():%H:%M} on {cpu} ({os.cpu_count()} CPUs, "
        f"onnxruntime threads {args.threads or 'default'}, torch threads {args.torch_threads or 'default'}): "
        f"`{command}`",
        "",
        f"Teacher: {'--teacher' if args.teacher else 'trained by this run, OUT/work/teacher'}. "
        f"Students tried: {', '.join(result['students'])}; "
        f"chosen: **{chosen}** (most mail messages/s through classify_batch in front of the GPT-2-124M-shaped model). "
        f"What this run trained: {schedule_words(args)}.",
        "",
        "## Accuracy: the cascade against the offline teacher (through the runtime)",
        "",
        "| student | part | kind | agreement % | teacher decides % | recall % cascade / teacher | "
        "FPR % cascade / teacher | FP cascade / teacher |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec, parts in result["accuracy"].items():
        for part, kinds in parts.items():
            for kind, f in kinds.items():
                c, t = f["cascade"], f["full"]
                lines.append(
                    f"| {spec} | {part} | {kind} | {percent(f['agreement'])} ({f['disagreements']} of {f['n']} differ) "
                    f"| {percent(f['share_full'])} ({f['to_full']}) | {percent(c['recall'])} / {percent(t['recall'])} "
                    f"| {percent(c['fpr'])} / {percent(t['fpr'])} | {c['fp']} / {t['fp']} |"
                )
    lines += [
        "",
        "## Speed: GPT-2-124M-shaped bundle alone and with the student in front",
        "",
        "`classify_batch` on the test parts (message text, tokens, batching, the cascade), one pass each:",
        "",
        "| student | set | messages | alone msg/s | cascade msg/s | speed-up | full model scored (cascade) |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec, sets in result["speed"]["per_student"].items():
        for name, s in sets.items():
            lines.append(
                f"| {spec} | {name} | {s['full']['messages']} | {s['full']['per_second']:.2f} | "
                f"{s['cascade']['per_second']:.2f} | {s['cascade']['per_second'] / s['full']['per_second']:.2f}x | "
                f"{s['cascade']['to_full']} |"
            )
    if result.get("milter"):
        lines += [
            "",
            f"Milter through a private Postfix ({args.clients} SMTP clients, cache off), chosen student {chosen}:",
            "",
            "| model | set | messages | msg/s | p50 ms | p95 ms | full model scored | lost | unscored |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in result["milter"]:
            lines.append(
                f"| {row['model']} | {row['set']} | {row['messages']} | {row['per_second']:.2f} | {row['p50_ms']:.0f} "
                f"| {row['p95_ms']:.0f} | {row['to_full']} | {row['lost']} | {row['unscored']} |"
            )
    lines += [
        "",
        f"## Verdict cache (scoring pool: the {chosen} cascade, or the full model alone where the replay says so)",
        "",
        "| replay | messages | hit rate | msg/s cache off | msg/s cache on |",
        "|---|---|---|---|---|",
    ]
    for name, c in result["cache"].items():
        lines.append(
            f"| {name} | {c['on']['messages']} | {percent(c['on']['hit_rate'])}% | {c['off']['per_second']:.2f} | "
            f"{c['on']['per_second']:.2f} |"
        )
    lines += ["", "## Targets", "", *targets(result), ""]
    return lines


def targets(result: dict[str, Any]) -> list[str]:
    chosen = result["chosen"]
    lines = []
    for part, kinds in result["accuracy"][chosen].items():
        for kind, f in kinds.items():
            agree = "met" if f["agreement"] >= AGREEMENT else "NOT met"
            fpr = "met" if f["cascade"]["fp"] <= f["full"]["fp"] else "NOT met"
            lines.append(
                f"- {part} {kind}: agreement {percent(f['agreement'])}% ≥ {AGREEMENT:.1%}: {agree}; false positives "
                f"{f['cascade']['fp']} vs the teacher's {f['full']['fp']} (no rise): {fpr}"
            )
    mail = [r for r in result.get("milter", []) if r["set"] == "mail"]
    if len(mail) == 2:
        full = next(r for r in mail if r["model"] == "full")
        cascade = next(r for r in mail if r["model"] == "cascade")
        ratio = cascade["per_second"] / full["per_second"]
        verdict = "met" if ratio >= SPEEDUP_TARGET else "NOT met"
        lines.append(
            f"- milter on mail: {cascade['per_second']:.2f} vs {full['per_second']:.2f} msg/s = {ratio:.2f}x "
            f"(target {SPEEDUP_TARGET:.0f}x): {verdict}"
        )
    else:
        lines.append("- milter on mail: not measured in this run (--skip-milter)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, help="a bundle trained on the default data's split (seed 123)")
    parser.add_argument("--students", default="2x128,4x128", help="student configurations, LAYERSxWIDTH")
    parser.add_argument("--full-bundle", type=Path, help="the full model for speed (default: GPT-2-124M-shaped)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--student-epochs", type=int, default=5)
    add_schedule_arguments(parser)
    parser.add_argument(
        "--reuse-students", action="store_true", help="keep the students an earlier run distilled into --out"
    )
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--max-fpr", type=float, default=0.01)
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: one per core)")
    parser.add_argument("--torch-threads", type=int, help="torch threads for training (1 on a busy machine)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--milter-messages", type=int, help="at most this many test messages per set")
    parser.add_argument("--skip-milter", action="store_true")
    parser.add_argument("--campaign-copies", type=int, default=1000)
    parser.add_argument("--campaign-others", type=int, default=500)
    parser.add_argument("--check", action="store_true", help="a tiny run of the script itself (1x32 teacher...)")
    args = parser.parse_args()
    if args.check:
        args.layers, args.heads, args.width, args.epochs, args.student_epochs = 1, 1, 32, 1, 1
        args.students, args.max_tokens = "1x16", 64
        args.campaign_copies, args.campaign_others = 20, 10
    began = datetime.now()
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    splits, examples = default_data()

    if args.teacher:
        teacher = args.teacher
        check_split(load_bundle(teacher, verify=False), splits)
    else:
        teacher = train_teacher(args, splits, work)
    result: dict[str, Any] = {"teacher": str(teacher), "students": args.students.split(","), "accuracy": {}}
    distilled = {spec: distill_student(teacher, splits, spec, args, work) for spec in result["students"]}
    for spec, bundle in distilled.items():
        result["accuracy"][spec] = accuracy(bundle, splits)
        for part, kinds in result["accuracy"][spec].items():
            for kind, f in kinds.items():
                log(
                    f"{spec} {part} {kind}: agreement {f['agreement']:.2%}, teacher decides {f['share_full']:.1%}, "
                    f"FP {f['cascade']['fp']} vs {f['full']['fp']}"
                )

    if args.full_bundle is not None:
        source = args.full_bundle
    elif args.check:
        source = teacher  # the tiny run times the tiny teacher itself
    else:
        from bundles import gpt2_124m_bundle

        source = gpt2_124m_bundle(max_tokens=args.max_tokens)
    full = full_with_thresholds(source, teacher, work / "full")
    with_students = {spec: with_student(full, bundle, work / f"full+{spec}") for spec, bundle in distilled.items()}
    test = {kind: [e for e in splits.test if e.kind == kind] for kind in KINDS}
    sets = {kind: raw_messages(test[kind]) for kind in KINDS if test[kind]}
    speed: dict[str, Any] = {"per_student": {}}
    alone = {name: classify_speed(full, raws, False, args.threads) for name, raws in sets.items()}
    for name, s in alone.items():
        log(f"classify_batch alone {name}: {s['per_second']:.2f} msg/s")
    for spec, bundle in with_students.items():
        speed["per_student"][spec] = {}
        for name, raws in sets.items():
            cascade = classify_speed(bundle, raws, True, args.threads)
            speed["per_student"][spec][name] = {"full": alone[name], "cascade": cascade}
            log(f"classify_batch {spec} {name}: {cascade['per_second']:.2f} msg/s, full model on {cascade['to_full']}")
    chosen = max(with_students, key=lambda spec: speed["per_student"][spec]["mail"]["cascade"]["per_second"])
    result["chosen"] = chosen
    speed["classify"] = speed["per_student"][chosen]
    result["speed"] = speed

    if not args.skip_milter:
        limit = args.milter_messages
        milter_sets = {"mail": sets["mail"][:limit], "sms": [as_mail(t, i) for i, t in enumerate(sets["sms"][:limit])]}
        result["milter"] = milter_speed({"full": full, "cascade": with_students[chosen]}, milter_sets, args.clients)

    corpus = corpus_in_file_order()
    if args.check:
        corpus = corpus[:60]
    mails = campaign(examples, args.campaign_copies, args.campaign_others)
    replays = {  # the cascade's, and the full model's alone (a bundle without a student), where a hit saves GPT-2
        "shared corpus, file order": (with_students[chosen], corpus),
        "campaign": (with_students[chosen], mails),
        "campaign, full model alone": (full, mails),
    }
    result["cache"] = {}
    for name, (bundle, messages) in replays.items():
        result["cache"][name] = {
            state: pool_replay(bundle, messages, state == "on", args.threads) for state in ("off", "on")
        }
        c = result["cache"][name]
        log(
            f"cache {name}: {len(messages)} messages, hit rate {c['on']['hit_rate']:.1%}, "
            f"{c['off']['per_second']:.2f} -> {c['on']['per_second']:.2f} msg/s"
        )

    lines = report(result, args, began)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cascade.md").write_text("\n".join(lines))
    (args.out / "cascade.json").write_text(json.dumps(result, indent=1, default=str))
    plot(result, args.out / "cascade.png")
    print("\n".join(lines))
    print(f"wrote {args.out / 'cascade.md'}, {args.out / 'cascade.json'} and {args.out / 'cascade.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
