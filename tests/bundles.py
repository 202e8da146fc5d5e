"""Tiny model bundles for tests: a random GPT-2 of a few layers, exported through the product's own export code
and packed by the product's own bundle writer, so runtime and plugin tests read exactly what training writes."""

from __future__ import annotations

from pathlib import Path

import torch

from spamguard.bundle import write_bundle
from spamguard.message_text import TEXT_VERSION
from spamguard.training.export import export_onnx
from spamguard.training.gpt2 import GPT2Classifier, GPTConfig
from spamguard.training.quantize import quantize_int8

from conftest import BPE_DIR

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
            "text_version": TEXT_VERSION,
            "base_model": "random-tiny",
            "model_config": config.to_dict(),
            **manifest,
        },
    )
    return out


BENCH_DIR = Path(__file__).resolve().parents[1] / ".benchmarks"
GPT2_124M_SEED = 0


def gpt2_124m_model() -> GPT2Classifier:
    """GPT-2 124M's shape with seeded random weights: speed does not depend on the values, and the same seed
    gives PyTorch baselines the very model the bundle holds."""
    from spamguard.training.gpt2 import CONFIGS

    torch.manual_seed(GPT2_124M_SEED)
    return GPT2Classifier(CONFIGS["gpt2"]).eval()


def gpt2_124m_bundle(root: Path = BENCH_DIR, *, max_tokens: int = 256) -> Path:
    """A GPT-2-124M-shaped fp32 + int8 bundle built once through the product's export path and cached under
    `.benchmarks/` (gitignored); rebuilt when the export code changes, so benchmarks never time a stale graph."""
    import hashlib

    training = Path(__file__).resolve().parents[1] / "training"
    export_code = b"".join((training / name).read_bytes() for name in ("export.py", "quantize.py"))
    stamp = hashlib.sha256(export_code).hexdigest()[:12]
    out = root / f"gpt2-124m-random-{max_tokens}-{stamp}"
    if not (out / "spamguard.json").is_file():
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        make_bundle(
            out,
            name="gpt2-124m-random",
            config=gpt2_124m_model().config,
            seed=GPT2_124M_SEED,
            max_tokens=max_tokens,
            base_model="gpt2 (random weights)",
        )
        shutil.rmtree(out.parent / f".{out.name}-work", ignore_errors=True)
    return out


STUDENT_CONFIG = GPTConfig(n_layer=1, n_head=1, n_embd=16, n_positions=256)


def add_student(
    bundle: Path, bands: dict[str, tuple[float, float]], *, config: GPTConfig = STUDENT_CONFIG, seed: int = 1
) -> Path:
    """Give a bundle a random student (fp32 + int8) with these bands, as `spamguard distill` writes it (through
    `rewrite_bundle`), without the training: for runtime and plugin tests of the cascade."""
    from spamguard.bundle import load_bundle, rewrite_bundle
    from spamguard.training.distill import STUDENT_FP32, STUDENT_INT8

    torch.manual_seed(seed)
    model = GPT2Classifier(config).eval()
    work = bundle.parent / f".{bundle.name}-student"
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / STUDENT_FP32
    export_onnx(model, fp32)
    int8 = quantize_int8(fp32, work / STUDENT_INT8)
    files = {path.name: path for path in (fp32, int8, int8.with_name(int8.name + ".data")) if path.is_file()}
    record = {
        "models": {"fp32": STUDENT_FP32, "int8": STUDENT_INT8},
        "model_config": config.to_dict(),
        "bands": {kind: {"low": low, "high": high} for kind, (low, high) in bands.items()},
    }
    rewrite_bundle(load_bundle(bundle), add=files, fields={"cascade": record})
    return bundle
