"""The proof that an exported graph computes what the PyTorch model does: both run on one padded batch of
mixed-length messages, so the last-real-token reading and the causal mask must survive the padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spamguard.padding import pad_batch
from spamguard.training.gpt2 import GPT2Classifier


def onnx_logits(session: object, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The graph's `logits` output for one padded batch."""
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
