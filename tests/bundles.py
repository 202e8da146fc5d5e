"""Tiny model bundles for tests: a random GPT-2 of a few layers, exported through the product's own export code
and packed by the product's own bundle writer, so runtime and plugin tests read exactly what training writes."""

from __future__ import annotations

from pathlib import Path

import torch

from spamguard.bundle import write_bundle
from spamguard.training.export import export_onnx, quantize_int8
from spamguard.training.gpt2 import GPT2Classifier, GPTConfig

BPE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gpt2_bpe"
TINY_CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, n_positions=256)


def make_bundle(
    out: Path,
    *,
    name: str = "tiny",
    config: GPTConfig = TINY_CONFIG,
    seed: int = 0,
    int8: bool = True,
    threshold: float = 0.5,
    max_tokens: int = 128,
    **manifest: object,
) -> Path:
    """Export a random classifier and write it as a bundle at `out` (which must not exist)."""
    torch.manual_seed(seed)
    model = GPT2Classifier(config).eval()
    work = out.parent / f".{out.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "model.onnx"
    export_onnx(model, fp32)
    models = {"fp32": fp32}
    if int8:
        models["int8"] = quantize_int8(fp32, work / "model.int8.onnx")
    write_bundle(
        out,
        models=models,
        encoder_json=BPE_DIR / "encoder.json",
        vocab_bpe=BPE_DIR / "vocab.bpe",
        manifest={
            "name": name,
            "threshold": threshold,
            "max_tokens": max_tokens,
            "base_model": "random-tiny",
            "model_config": config.to_dict(),
            **manifest,
        },
    )
    return out
