"""The int8 copy of an exported fp32 graph. Every weight matmul (except the 2-column head) becomes an int8 one
whose activations are quantized per token (one scale per row, not per tensor): a message's score does not
depend on its batch mates, which a per-tensor scale (onnxruntime's `quantize_dynamic`) breaks, and an outlier
token cannot crush every other token's resolution. The token embedding is stored in int8 too.

Written here rather than with onnxruntime's quantizer for that batch independence: docs/design-decisions.md has
the measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from spamguard.classifier import ACTIVATION_QUANTIZATION_KEY
from spamguard.training.export import MS_DOMAIN, Graph, save_model


def _quantized_matmul(g: Graph, x: str, weight: np.ndarray, name: str, out: str, *, floor: float | None) -> None:
    """x @ weight with int8 weights (one scale per output column) and uint8 activations quantized per token.

    Each token row r gets scale s_r = max|x_r| / 127 and is stored as round(x_r / s_r) + 128; the integer
    product is exact, so the result is sum((q - 128) * w_q) * s_r * s_col, independent of every other row.
    With `floor` (a known lower bound, GELU's -0.17), the row is shifted to x_r - floor >= 0 and uses all 256
    levels with zero point 0; the shift's contribution, -floor * column sums, is the caller's to subtract."""
    w_scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127.0  # (N,)
    w_q = np.clip(np.rint(weight / w_scale), -127, 127).astype(np.int8)  # (K, N)
    if floor is None:
        peak = g.op("ReduceMax", g.op("Abs", x), "axis_last", keepdims=1)  # (..., 1)
        scale = g.op("Max", g.op("Mul", peak, "inv_127"), "tiny")  # (..., 1), never 0
        zero_point = "zero_point_128"
    else:
        x = g.op("Sub", x, g.const(f"{name}_floor", np.array(floor, dtype=np.float32)))  # >= 0
        scale = g.op("Max", g.op("Mul", g.op("ReduceMax", x, "axis_last", keepdims=1), "inv_255"), "tiny")
        zero_point = "zero_point_0"
    q = g.op("QuantizeLinear", g.op("Div", x, scale), "unit_scale", zero_point)  # uint8
    # int32 accumulation, converted and scaled per column inside the GEMM's output stage (..., N)
    columns = g.op(
        "MatMulIntegerToFloat",
        q,
        g.const(f"{name}_q", w_q),
        "unit_scale",
        g.const(f"{name}_scale", w_scale.astype(np.float32)),
        zero_point,
        domain=MS_DOMAIN,
    )
    g.op("Mul", columns, scale, name=out)


# GELU (tanh form) never goes below -0.17004 (at x = -0.75): its outputs are shifted by this to be >= 0.
GELU_FLOOR = -0.1701


def _quantized_embedding(g: Graph, table: np.ndarray, ids: str, name: str, out: str) -> None:
    """An int8 copy of the token embedding (one scale per row): 4x less memory for the largest tensor."""
    row_scale = np.maximum(np.abs(table).max(axis=1), 1e-12) / 127.0  # (V,)
    table_q = np.clip(np.rint(table / row_scale[:, None]), -127, 127).astype(np.int8)
    values = g.op("Cast", g.op("Gather", g.const(f"{name}_q", table_q), ids, axis=0), to=TensorProto.FLOAT)
    scales = g.op("Gather", g.const(f"{name}_scale", row_scale.astype(np.float32)[:, None]), ids, axis=0)
    g.op("Mul", values, scales, name=out)  # (B, T, C)


def quantize_int8(fp32_path: Path, out: Path) -> Path:
    """The int8 copy of an exported model: every weight matmul (except the 2-column head) and the token
    embedding in int8, activations quantized per token (see the module docstring); about 4x smaller and, on
    CPUs with fast int8 dot products, about 2x faster, at a verdict agreement the export measures."""
    model_proto = onnx.load(str(fp32_path))
    weights = {t.name: t for t in model_proto.graph.initializer}
    g = Graph(prefix="int8_")
    g.const("axis_last", np.array([-1], dtype=np.int64))
    g.const("inv_127", np.array(1 / 127, dtype=np.float32))
    g.const("tiny", np.array(1e-12, dtype=np.float32))
    g.const("unit_scale", np.array(1.0, dtype=np.float32))
    g.const("zero_point_128", np.array(128, dtype=np.uint8))
    g.const("inv_255", np.array(1 / 255, dtype=np.float32))
    g.const("zero_point_0", np.array(0, dtype=np.uint8))
    producers = {output: node.op_type for node in model_proto.graph.node for output in node.output}
    corrections: dict[str, np.ndarray] = {}  # matmul output -> what the GELU shift added to it
    used: set[str] = set()
    for node in model_proto.graph.node:
        weight = weights.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "MatMul" and weight is not None and weight.dims[1] > 2:
            matrix = numpy_helper.to_array(weight)
            floor = GELU_FLOOR if producers.get(node.input[0]) == "FastGelu" else None
            _quantized_matmul(g, node.input[0], matrix, weight.name, node.output[0], floor=floor)
            if floor is not None:
                corrections[node.output[0]] = -floor * matrix.sum(axis=0)
        elif node.op_type == "Gather" and node.input[0] == "wte.weight":
            table = numpy_helper.to_array(weights["wte.weight"])
            _quantized_embedding(g, table, node.input[1], "wte.weight", node.output[0])
        elif node.op_type == "SkipLayerNormalization" and node.input[0] in corrections:
            # the shifted matmul feeds this node: take the shift back out through its bias input
            bias = numpy_helper.to_array(weights[node.input[4]]) - corrections.pop(node.input[0])
            inputs = [*node.input[:4], g.const(f"{node.input[4]}_gelu_shift", bias.astype(np.float32))]
            g.nodes.append(helper.make_node(node.op_type, inputs, list(node.output), domain=node.domain))
            g.nodes[-1].attribute.extend(node.attribute)
            used.update(node.input[:4])
        else:
            g.nodes.append(node)
            used.update(node.input)
    if corrections:
        raise ValueError(f"int8: no SkipLayerNormalization takes back the GELU shift of {', '.join(corrections)}")
    graph = helper.make_graph(
        g.nodes,
        model_proto.graph.name,
        list(model_proto.graph.input),
        list(model_proto.graph.output),
        g.initializers + [t for name, t in weights.items() if name in used],
    )
    quantized = helper.make_model(graph, opset_imports=list(model_proto.opset_import), producer_name="spamguard")
    quantized.ir_version = model_proto.ir_version
    helper.set_model_props(quantized, {ACTIVATION_QUANTIZATION_KEY: "per-row"})
    save_model(quantized, Path(out), external=True)
    return Path(out)
