"""ONNX export (graph writer, parity check, int8 quantizer): the runtime's signature, parity with PyTorch on a
mixed-length padded batch, the int8 copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from spamguard.padding import pad_batch
from spamguard.training.export import export_onnx
from spamguard.training.gpt2 import GPT2Classifier, GPTConfig
from spamguard.training.parity import check_parity, onnx_logits
from spamguard.training.quantize import quantize_int8


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[GPT2Classifier, Path]:
    torch.manual_seed(0)
    model = GPT2Classifier(GPTConfig(n_layer=2, n_head=2, n_embd=32, n_positions=128)).eval()
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    export_onnx(model, path)
    return model, path


def test_signature_has_dynamic_batch_and_sequence(exported: tuple[GPT2Classifier, Path]) -> None:
    graph = onnx.load(str(exported[1])).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert set(inputs) == {"input_ids", "lengths"}
    assert inputs["input_ids"].elem_type == onnx.TensorProto.INT64
    assert all(d.dim_param for d in inputs["input_ids"].shape.dim)
    assert [o.name for o in graph.output] == ["logits"]


def test_parity_on_mixed_lengths(exported: tuple[GPT2Classifier, Path]) -> None:
    rng = np.random.default_rng(0)
    batch = [list(rng.integers(0, 50256, n)) for n in (1, 7, 40, 128, 3)]
    assert check_parity(exported[0], exported[1], batch) <= 1e-4


def test_alone_equals_in_padded_batch(exported: tuple[GPT2Classifier, Path]) -> None:
    session = ort.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])
    short, long = [5, 6, 7], list(range(100, 160))
    together = onnx_logits(session, *pad_batch([short, long]))
    alone = onnx_logits(session, *pad_batch([short]))
    assert np.abs(together[0] - alone[0]).max() <= 1e-5


def test_int8_copy_runs_and_stays_close(exported: tuple[GPT2Classifier, Path], tmp_path: Path) -> None:
    int8 = quantize_int8(exported[1], tmp_path / "model.int8.onnx")
    assert int8.stat().st_size < exported[1].stat().st_size
    ids, lengths = pad_batch([[1, 2, 3], list(range(50))])
    fp32 = onnx_logits(ort.InferenceSession(str(exported[1])), ids, lengths)
    q = onnx_logits(ort.InferenceSession(str(int8)), ids, lengths)
    assert q.shape == (2, 2) and np.abs(q - fp32).max() < 0.1
