"""Fitting the text model's encoder channel on out-of-fold figures: cached embeddings, the head, the combination.

Embeddings are cached per text (``.npz`` shards under the feature cache, each row keyed by the SHA-256
of the text the encoder saw, the shards named by the encoder's version and weights), so the
cross-fitting folds embed each text once and a retraining after new rows embeds the new rows alone.
The head is the image model's (modeling/linear_head.py), its regularisation chosen on out-of-fold
log-loss; the combination with the TF-IDF model (two temperatures and a weight) is fitted on
out-of-fold scores, and the out-of-fold probabilities handed to the fusion are nested: each fold's
rows combined by a combination fitted on the other folds, as the fusion itself is chosen. Training
only: serving never imports this.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..categories import CATEGORY_CODES, label_indices
from .calibration import fit_temperature, softmax
from .cross_fitting import out_of_fold
from .fusion_fitting import learn_text_weight
from .linear_head import cross_fit_head as cross_fit_linear_head
from .scores import weighted_f1
from .shard_cache import read_shards, write_shard
from .text import TfidfParams, TfidfTextModel
from .text_encoder import Combination, EncoderChannel, EncoderHead, EncoderParams, SentenceEncoder, encoder_spec
from .text_encoder_onnx import encoder_graph
from .tfidf_cross_fit import cross_fit_tfidf

log = logging.getLogger(__name__)

CACHE_FIELDS = ("keys", "embeddings")  # a shard's keys (SHA-256 of each text) and rows
# The head's regularisation strengths, chosen out-of-fold. On the sample the best was 0.01 for USE
# (0.003 for wider inputs), and 0.1 and above always lost (docs/accuracy.md).
HEAD_C_GRID = (0.003, 0.01, 0.03)


class CachedSentenceEncoder(SentenceEncoder):
    """A SentenceEncoder whose embeddings are cached per text under ``cache_dir`` (None: no cache), on ONNX
    Runtime when the encoder runs on a graph (built here, from the package's weights; saved with the model).

    ``embedded`` counts the texts the encoder itself ran on since it was made.
    """

    def __init__(self, name: str, max_chars: int | None, threads: int, cache_dir: Path | None):
        super().__init__(name, max_chars, threads, graph=encoder_graph(encoder_spec(name)))
        self.cache_dir = cache_dir
        self.embedded = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 embeddings, the encoder run on the texts no earlier call (or training) embedded."""
        if self.cache_dir is None:
            self.embedded += len(texts)
            return super().embed(texts)
        keys = [hashlib.sha256(text.encode("utf-8")).hexdigest() for text in self.cut(texts)]
        cached = read_shards(self.cache_dir, self.cache_tag, set(keys), CACHE_FIELDS)
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in cached}
        if missing:
            computed = super().embed(list(missing.values()))
            cached.update(zip(missing, computed, strict=True))
            shard = write_shard(self.cache_dir, self.cache_tag, list(missing), computed, CACHE_FIELDS)
            self.embedded += len(missing)
            log.info("embedded %d new texts (%d cached) into %s", len(missing), len(set(keys)) - len(missing), shard)
        if not keys:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        return np.stack([cached[key] for key in keys]).astype(np.float32, copy=False)


def cross_fit_head(
    embeddings: np.ndarray, y: np.ndarray, folds: np.ndarray, seed: int, c_grid: Sequence[float] = HEAD_C_GRID
) -> tuple[EncoderHead, np.ndarray, dict]:
    """The linear head (:mod:`.linear_head`) refit on every embedding at the C whose temperature-scaled
    out-of-fold log-loss is lowest.

    Returns (head, its out-of-fold scores, {C: out-of-fold weighted F1, accuracy and calibrated log-loss}).
    """
    head, oof, table = cross_fit_linear_head([embeddings], [embeddings], y, folds, c_grid, seed, "text encoder head")
    return EncoderHead(head.weight_, head.bias_, head.C), oof, table


def fit_combination(tfidf_scores: np.ndarray, encoder_scores: np.ndarray, y: np.ndarray, method: str) -> Combination:
    """Each channel's temperature by log-loss, then the TF-IDF weight by smoothed weighted F1 (as the fusion's)."""
    tfidf_t, encoder_t = fit_temperature(tfidf_scores, y), fit_temperature(encoder_scores, y)
    tfidf, encoder = softmax(tfidf_scores, tfidf_t), softmax(encoder_scores, encoder_t)
    return Combination(tfidf_t, encoder_t, learn_text_weight(tfidf, encoder, y, method)[0], method)


def nested_combination(
    tfidf_scores: np.ndarray, encoder_scores: np.ndarray, y: np.ndarray, folds: np.ndarray, method: str
) -> np.ndarray:
    """Out-of-fold probabilities of the combined channels: each fold's rows combined by a Combination
    fitted on the other folds' out-of-fold scores."""

    def fit_predict(train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        combination = fit_combination(tfidf_scores[train], encoder_scores[train], y[train], method)
        return combination.proba(tfidf_scores[held_out], encoder_scores[held_out])

    return out_of_fold(fit_predict, folds, len(CATEGORY_CODES))


def cross_fit_with_encoder(
    texts: Sequence[str],
    labels: Sequence[int],
    folds: np.ndarray,
    tfidf: TfidfParams,
    params: EncoderParams,
    cache_dir: Path | None,
    seed: int,
) -> tuple[TfidfTextModel, np.ndarray, dict]:
    """The TF-IDF model fitted on every row with an encoder channel, and the nested out-of-fold probabilities.

    Returns (model, out-of-fold probabilities, what was chosen and measured: C, combination, timings).
    """
    texts, codes = list(texts), [int(code) for code in labels]
    y = label_indices(codes)
    model, tfidf_oof = cross_fit_tfidf(texts, codes, folds, tfidf, cache_dir=cache_dir)
    started = time.perf_counter()
    encoder = CachedSentenceEncoder(params.encoder, params.max_chars, params.threads, cache_dir)
    embeddings = encoder.embed(texts)
    embed_seconds = time.perf_counter() - started
    head, head_oof, c_table = cross_fit_head(embeddings, y, folds, seed)
    oof = nested_combination(tfidf_oof, head_oof, y, folds, params.combination)
    combination = fit_combination(tfidf_oof, head_oof, y, params.combination)
    model.temperature = combination.tfidf_temperature
    model.channel = EncoderChannel(encoder, head, combination)
    info = {
        "encoder": params.encoder,
        "encoder_package": encoder.spec.package,
        "encoder_version": encoder.spec.version,
        "encoder_weights_sha256": " ".join(f"{path}={digest}" for path, digest in encoder.spec.weights.items()),
        "encoder_max_chars": encoder.max_chars,
        "texts_embedded": encoder.embedded,
        "embed_seconds": round(embed_seconds, 2),
        "head_C": head.C,
        "head_c_grid": c_table,
        "encoder_oof_weighted_f1": round(weighted_f1(y, head_oof.argmax(1)), 4),
        "tfidf_oof_weighted_f1": round(weighted_f1(y, tfidf_oof.argmax(1)), 4),
        "tfidf_weight": combination.tfidf_weight,
        "tfidf_temperature": combination.tfidf_temperature,
        "encoder_temperature": combination.encoder_temperature,
    }
    log.info(
        "text model with %s cross-fitted on %d rows: %d texts embedded (%.1f s), head C=%g, TF-IDF weight %.2f",
        params.encoder,
        len(texts),
        encoder.embedded,
        embed_seconds,
        head.C,
        combination.tfidf_weight,
    )
    return model, oof, info
