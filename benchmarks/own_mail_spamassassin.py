"""Train on the SpamAssassin 2003 sample as a user trains on their own mail, and report the held-out figures.

python benchmarks/own_mail_spamassassin.py [--layers 2 --heads 2 --width 64] [--epochs 3] [--max-fpr 0.01]

Offline, so a small GPT-2 configuration from random weights with every layer trainable (no pretrained weights
here). The path through the product: `read_mail_sources` (folders -> message_text -> dedup by text),
`stratified_splits` (70/10/20, seeded, both classes in every part, real 1:5 ratio kept), `class_weights` from
the training split, the training pipeline's `run` with a `threshold_rule` for `--max-fpr`, then the bundle's
test-split scores through the runtime `Classifier`, the evaluation plots, and an explanation of the
highest-scoring test spam. `spamguard train --ham --spam` will run the same steps once it is wired."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIL = ROOT.parent / "shared" / "data" / "spamassassin_2003_part1"
BPE = ROOT.parent / "shared" / "data" / "gpt2_bpe"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mail", type=Path, default=MAIL, help="folder with ham/ and spam/")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--max-fpr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=123, help="123 gives the accuracy benchmark's P3 split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="work folder (default: a new temporary folder)")
    args = parser.parse_args()

    from spamguard.classifier import Classifier
    from spamguard.datasets import HAM, SPAM
    from spamguard.explain import explain_with_classifier
    from spamguard.mail_sources import format_reports, read_mail_sources
    from spamguard.report import write_evaluation_plots
    from spamguard.thresholds import threshold_rule
    from spamguard.training.imbalance import class_weights, stratified_splits
    from spamguard.training.pipeline import Job, run
    from spamguard.training.recipe import TrainSettings

    out = args.out or Path(tempfile.mkdtemp(prefix="spamguard-spamassassin-"))
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    examples, reports = read_mail_sources([(args.mail / "ham", HAM), (args.mail / "spam", SPAM)], progress=True)
    print(format_reports(reports))
    splits = stratified_splits(examples, args.seed)
    print(f"split (stratified 70/10/20, seed {args.seed}): {splits.counts()}")
    weights = class_weights(splits.train)
    print(f"class weights from the training split: ham {weights[0]:.3f}, spam {weights[1]:.3f}")

    base = out / "base"
    base.mkdir(exist_ok=True)
    config = {"model_type": "gpt2", "n_layer": args.layers, "n_head": args.heads, "n_embd": args.width}
    (base / "config.json").write_text(json.dumps({**config, "n_positions": 1024, "vocab_size": 50257}))
    job = Job(
        base=str(base),
        weights="random",
        tokenizer=BPE,
        max_tokens=args.max_tokens,
        out=out / "bundle",
        name="spamassassin-small",
        install=False,
        balance=False,
        threads=args.threads,
        recipe=TrainSettings(
            trainable="all",
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            class_weights=weights,
        ),
    )
    report = run(
        job,
        splits=splits,
        data_source=f"{args.mail} (ham/, spam/), deduplicated by text",
        threshold_rule=threshold_rule(max_fpr=args.max_fpr),
    )
    seconds = time.perf_counter() - began

    clf = Classifier.load(report.bundle, precision="fp32", threads=args.threads)
    labels = [e.label for e in splits.test]
    scores = clf.score_batch([Path(e.source).read_bytes() for e in splits.test])  # raw mail, as check reads it
    threshold = clf.bundle.threshold
    plots = write_evaluation_plots(labels, scores, threshold, out / "plots", title="SpamAssassin sample, test split")
    spam_scores = [(s, e) for s, e in zip(scores, splits.test, strict=True) if e.label == SPAM]
    top_score, top = max(spam_scores, key=lambda pair: pair[0])
    explanation = explain_with_classifier(Path(top.source).read_bytes(), clf)

    test = report.metrics["test"]
    print()
    print(f"held-out test split ({test['n']} mails), threshold {threshold:.6g} chosen for max FPR {args.max_fpr}:")
    print(
        f"  accuracy {test['accuracy']:.4f}  F1 {test['f1']:.4f}  precision {test['precision']:.4f}  "
        f"recall {test['recall']:.4f}  FPR {test['fpr']:.4f}  (tp {test['tp']} fp {test['fp']} tn {test['tn']} "
        f"fn {test['fn']})"
    )
    print(f"  int8: {json.dumps({k: round(report.metrics['test_int8'][k], 4) for k in ('accuracy', 'f1', 'fpr')})}")
    print(f"  total time {seconds:.0f} s (training {report.seconds.get('train', 0):.0f} s)")
    print(f"  plots: {', '.join(str(p) for p in plots.values())}")
    print(f"explanation of the highest-scoring test spam ({top.source}, P(spam) {top_score:.4f}):")
    for line in explanation.lines(5):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
