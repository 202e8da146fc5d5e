"""Export a trained classifier to ONNX in the runtime's signature, prove it matches PyTorch, and quantize it.

Signature (DESIGN.md): `input_ids` int64 (batch, seq), right-padded with 50256; `lengths` int64 (batch);
`logits` float32 (batch, 2) read at `lengths - 1`. Batch and seq are dynamic."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from spamguard.training.gpt2 import GPT2Classifier

PAD_ID = 50256
# Above this, protobuf's 2 GB limit forces the weights into a side file (gpt2-large and -xl in fp32).
_EXTERNAL_DATA_BYTES = 1_800_000_000


def pad_batch(token_lists: list[list[int]], pad_id: int = PAD_ID) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest member only: the model reads each row at its own last real token."""
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    ids = np.full((len(token_lists), int(lengths.max())), pad_id, dtype=np.int64)
    for row, tokens in enumerate(token_lists):
        ids[row, : len(tokens)] = tokens
    return ids, lengths


def export_onnx(model: GPT2Classifier, out: Path) -> list[Path]:
    """Write `out` (and `out.data` for models over ~2 GB); returns the files written. The export is traced on a
    small batch; batch and sequence stay dynamic up to the model's position table."""
    model = model.eval().float()
    example_ids, example_lengths = pad_batch([[464, 2068, 7586, 21831], [15496, 995]])
    batch = torch.export.Dim("batch", min=1)
    seq = torch.export.Dim("seq", min=1, max=model.config.n_positions)
    external = sum(p.numel() * 4 for p in model.parameters()) > _EXTERNAL_DATA_BYTES
    out.parent.mkdir(parents=True, exist_ok=True)
    # The exporter narrates every step on stdout and warns about optional ops; keep the user's terminal for
    # spamguard's own progress and re-raise anything that actually fails.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            model,
            (torch.from_numpy(example_ids), torch.from_numpy(example_lengths)),
            dynamo=True,
            input_names=["input_ids", "lengths"],
            output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "lengths": {0: batch}},
            opset_version=18,
            verbose=False,
        )
        program.save(str(out), external_data=external)
    onnx.checker.check_model(str(out))
    files = [out]
    data = out.with_name(out.name + ".data")
    if external and data.exists():
        files.append(data)
    return files


def onnx_logits(session: object, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]  # type: ignore[attr-defined]


def check_parity(model: GPT2Classifier, onnx_path: Path, token_lists: list[list[int]]) -> float:
    """Max |logit difference| between PyTorch and onnxruntime on one padded batch of mixed-length messages:
    this is the test that the export kept the last-real-token reading and the causal mask intact."""
    import onnxruntime as ort

    ids, lengths = pad_batch(token_lists)
    with torch.no_grad():
        expected = model.eval().float()(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return float(np.abs(onnx_logits(session, ids, lengths) - expected).max())


def quantize_int8(fp32_path: Path, out: Path) -> Path:
    """Dynamic int8 quantization with per-channel weights (activations quantized on the fly): about 4x smaller
    and 2x faster on CPUs with VNNI, at a verdict agreement the export measures on the test split."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out), per_channel=True, weight_type=QuantType.QInt8)
    onnx.checker.check_model(str(out))
    return out
