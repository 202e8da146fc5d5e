"""Runtime speed on a GPT-2-124M-shaped bundle (random weights: speed does not depend on the values), every
engine in one run so the ratios hold on a shared machine:

- latency of one message of exactly 32, 128 and 256 tokens;
- `score_batch` throughput on 256 real SMS and 256 real mails (message text, tokenization, batching included);

for onnxruntime int8 and fp32 (the bundle, through `Classifier`), PyTorch eager fp32 on the same weights (the
baseline), and, for latency, the previous export (the traced `torch.onnx` graph + onnxruntime's
`quantize_dynamic`) to show what the written graph buys.

    make bench                                                   # everything under benchmarks/
    .venv/bin/pytest benchmarks/bench_runtime.py --benchmark-only --benchmark-columns=median,iqr,rounds
    SPAMGUARD_BENCH_THREADS=1 ...                                # threads per engine (default 2)
    ... --benchmark-timer=time.process_time                      # CPU time: steadier on a shared machine

The bundles are built once through the product's export path and cached under `.benchmarks/` (gitignored)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from spamguard.classifier import Classifier, length_batches, session_for_file, spam_probability
from spamguard.datasets import read_sms_tsv
from spamguard.padding import pad_batch

from bundles import BENCH_DIR, gpt2_124m_bundle, gpt2_124m_model
from public_data import MAIL, SMS, dataset

THREADS = int(os.environ.get("SPAMGUARD_BENCH_THREADS", "2"))
N_MESSAGES = 256
TOKENS = (32, 128, 256)

Scorer = Callable[[Sequence[Sequence[int]]], list[float]]


def _sms() -> list[str]:
    return [e.text for e in random.Random(0).sample(read_sms_tsv(dataset(SMS)), N_MESSAGES)]


def _mails() -> list[bytes]:
    return [path.read_bytes() for path in random.Random(0).sample(sorted(dataset(MAIL).glob("*/*")), N_MESSAGES)]


def _torch_scorer(model: torch.nn.Module) -> Scorer:
    """PyTorch eager on the same weights, with the classifier's own length batching, so only the engine
    differs."""

    def score(token_lists: Sequence[Sequence[int]]) -> list[float]:
        scores = np.empty(len(token_lists))
        lengths = [len(t) for t in token_lists]
        with torch.inference_mode():
            for batch in length_batches(lengths):
                ids, batch_lengths = pad_batch([list(token_lists[i]) for i in batch])
                logits = model(torch.from_numpy(ids), torch.from_numpy(batch_lengths))
                scores[batch] = spam_probability(logits.numpy())
        return scores.tolist()

    return score


def _traced_models() -> dict[str, Path]:
    """The export this project started with, kept here as a reference point: `torch.onnx.export(dynamo=True)`
    of the PyTorch module, and `quantize_dynamic` (per-tensor activation scales, per-channel weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = BENCH_DIR / "gpt2-124m-random-traced"
    fp32, int8 = out / "model.onnx", out / "model.int8.onnx"
    if not int8.is_file():
        out.mkdir(parents=True, exist_ok=True)
        model = gpt2_124m_model()
        ids = torch.tensor([[464, 2068, 7586, 21831], [15496, 995, 50256, 50256]])
        batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("seq", min=1, max=1024)
        program = torch.onnx.export(
            model,
            (ids, torch.tensor([4, 2])),
            dynamo=True,
            input_names=["input_ids", "lengths"],
            output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "lengths": {0: batch}},
            opset_version=18,
        )
        program.save(str(fp32))
        quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)
    return {"traced-fp32": fp32, "traced-int8": int8}


def _session_scorer(path: Path) -> Scorer:
    """A session with the Classifier's own options, one message per run (per-tensor activation scales make a
    batched score depend on the batch)."""
    import onnxruntime as ort

    session = session_for_file(ort, path, THREADS, ["CPUExecutionProvider"])

    def score(token_lists: Sequence[Sequence[int]]) -> list[float]:
        out = []
        for tokens in token_lists:
            ids = np.array([tokens], dtype=np.int64)
            logits = session.run(["logits"], {"input_ids": ids, "lengths": np.array([len(tokens)])})[0]
            out.append(float(spam_probability(logits)[0]))
        return out

    return score


@pytest.fixture(scope="session")
def classifiers() -> dict[str, Classifier]:
    bundle = gpt2_124m_bundle()
    return {p: Classifier.load(bundle, precision=p, threads=THREADS) for p in ("int8", "fp32")}


@pytest.fixture(scope="session")
def scorers(classifiers: dict[str, Classifier]) -> dict[str, Scorer]:
    torch.set_num_threads(THREADS)
    found: dict[str, Scorer] = {
        "onnx-int8": classifiers["int8"].score_tokens,
        "onnx-fp32": classifiers["fp32"].score_tokens,
        "torch-eager-fp32": _torch_scorer(gpt2_124m_model()),
    }
    found.update({f"onnx-{name}": _session_scorer(path) for name, path in _traced_models().items()})
    return found


# engines vary fastest, so the engines compared at one size run back to back while the machine's load drifts
@pytest.mark.parametrize(
    "engine", ["onnx-int8", "onnx-fp32", "torch-eager-fp32", "onnx-traced-int8", "onnx-traced-fp32"]
)
@pytest.mark.parametrize("tokens", TOKENS)
def test_latency_one_message(benchmark, scorers: dict[str, Scorer], engine: str, tokens: int) -> None:
    """One message of exactly `tokens` tokens (the bundle's max_tokens is 256): what a milter waits for."""
    ids = [random.Random(tokens).randrange(50256) for _ in range(tokens)]
    benchmark.group = f"latency, one message of {tokens} tokens, {THREADS} threads"
    benchmark.extra_info.update(engine=engine, tokens=tokens, threads=THREADS)
    score = benchmark.pedantic(scorers[engine], args=([ids],), rounds=7, warmup_rounds=1)
    assert 0.0 <= score[0] <= 1.0


def _throughput(benchmark, scorers, classifiers, engine: str, messages: list, label: str, rounds: int) -> None:
    if engine.startswith("onnx-"):
        clf = classifiers[engine.removeprefix("onnx-")]
        run = lambda: clf.score_batch(messages)  # noqa: E731
    else:  # the same message text and tokens, scored by PyTorch
        tokenize = classifiers["int8"].tokens
        run = lambda: scorers[engine]([tokenize(m) for m in messages])  # noqa: E731
    benchmark.group = f"score_batch throughput, {len(messages)} {label}, {THREADS} threads"
    benchmark.extra_info.update(engine=engine, messages=len(messages), threads=THREADS)
    scores = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0)
    benchmark.extra_info["messages_per_second"] = round(len(messages) / benchmark.stats.stats.median, 1)
    assert len(scores) == len(messages)


@pytest.mark.parametrize("engine", ["onnx-int8", "onnx-fp32", "torch-eager-fp32"])
def test_throughput_sms(benchmark, scorers, classifiers, engine: str) -> None:
    _throughput(benchmark, scorers, classifiers, engine, _sms(), "real SMS", rounds=3)


@pytest.mark.parametrize("engine", ["onnx-int8", "onnx-fp32", "torch-eager-fp32"])
def test_throughput_mail(benchmark, scorers, classifiers, engine: str) -> None:
    _throughput(benchmark, scorers, classifiers, engine, _mails(), "real mails", rounds=1)
