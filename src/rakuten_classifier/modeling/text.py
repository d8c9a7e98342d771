"""The TF-IDF + linear SVM text model (the default, what serving loads), and what every text model shares.

Text models take the output of `data.preprocessing.product_text` (title, a newline, description) and
return probabilities in `CATEGORY_CODES` order (``TextModel``); each saves a folder with a JSON config
(``write_config``), which text_loading.py reads back whatever the kind. The TF-IDF model is fitted by
tfidf_cross_fit.py (its n-grams counted once for all folds) and calibrated by text_cross_fit.py; its
encoder channel (text_encoder.py) is fitted by text_encoder_fitting.py. The other kind, a fine-tuned
transformer, is in text_transformer.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline, make_union
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from ..categories import CATEGORY_CODES
from ..data.preprocessing import TITLE_SEPARATOR
from .calibration import ABSENT_LOGIT, softmax
from .text_encoder import EncoderChannel

CONFIG_FILE = "text_model.json"


class TextModel(Protocol):
    """What serving needs from a text model."""

    kind: str
    temperature: float

    def scores(self, texts: list[str]) -> np.ndarray: ...

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...


@dataclass
class TfidfParams:
    """Hyper-parameters of the TF-IDF + LinearSVC text model."""

    word_ngram_max: int = 2
    char_ngram_min: int = 1
    char_ngram_max: int = 4
    C: float = 1.0
    min_df: int = 1
    max_features: int | None = 500_000
    # The title (designation) counted this many times before the description: titles are short and
    # say what the product is, descriptions are long and often generic (out-of-fold figures in
    # docs/accuracy.md).
    title_repeat: int = 2


def write_config(directory: Path, kind: str, temperature: float, params: dict, **more: dict) -> None:
    """The JSON beside a saved text model: its kind, temperature, parameters, class order (and ``more``)."""
    config = {"kind": kind, "temperature": temperature, "params": params, "classes": list(CATEGORY_CODES), **more}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def repeat_title(texts: Sequence[str], times: int) -> list[str]:
    """Each product text with its title (the part before TITLE_SEPARATOR) repeated ``times`` times."""
    weighted = []
    for text in texts:
        title, _, description = text.partition(TITLE_SEPARATOR)
        weighted.append(" ".join([title] * times + ([description] if description else [])))
    return weighted


def text_pipeline(params: TfidfParams) -> Pipeline:
    """The unfitted pipeline: title repeated, word and character n-gram TF-IDF side by side, LinearSVC."""
    features = make_union(
        TfidfVectorizer(
            lowercase=True,
            strip_accents="unicode",
            ngram_range=(1, params.word_ngram_max),
            sublinear_tf=True,
            min_df=params.min_df,
            max_features=params.max_features,
            dtype=np.float32,
        ),
        TfidfVectorizer(
            lowercase=True,
            strip_accents="unicode",
            analyzer="char_wb",
            ngram_range=(params.char_ngram_min, params.char_ngram_max),
            sublinear_tf=True,
            min_df=params.min_df,
            max_features=params.max_features,
            dtype=np.float32,
        ),
        n_jobs=2,
    )
    title = FunctionTransformer(repeat_title, kw_args={"times": params.title_repeat})
    return Pipeline([("title", title), ("tfidf", features), ("svm", LinearSVC(C=params.C))])


def class_scores(margins: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """A LinearSVC's decision values laid out over all 27 classes (a class unseen in training: ABSENT_LOGIT)."""
    if margins.ndim == 1:  # binary case: sklearn returns one column
        margins = np.stack([-margins, margins], axis=1)
    scores = np.full((len(margins), len(CATEGORY_CODES)), ABSENT_LOGIT, dtype=np.float64)
    scores[:, seen] = margins
    return scores


class TfidfTextModel:
    """Word and character n-gram TF-IDF, linear SVM, softmax of the margins with a fitted temperature;
    with an encoder ``channel``, that softmax averaged with a sentence encoder's head."""

    kind = "tfidf"

    def __init__(
        self, pipeline: Pipeline, temperature: float, params: TfidfParams, channel: EncoderChannel | None = None
    ):
        # Two jobs speed up fitting on large data, but at prediction time joblib's start-up costs
        # ~0.4 s per call: transform in the calling thread.
        pipeline.named_steps["tfidf"].n_jobs = None
        self.pipeline = pipeline
        self.temperature = temperature
        self.params = params
        self.channel = channel

    def scores(self, texts: list[str]) -> np.ndarray:
        """Margins for all 27 classes (a class unseen in training gets ABSENT_LOGIT)."""
        return class_scores(self.pipeline.decision_function(texts), self.pipeline.named_steps["svm"].classes_)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated class probabilities, shape (n, 27)."""
        texts = list(texts)
        if self.channel is not None:
            return self.channel.proba(lambda: self.scores(texts), texts)
        return softmax(self.scores(texts), self.temperature)

    def save(self, directory: Path) -> None:
        """Write the pipeline (joblib), the encoder head if any and a JSON config into the folder."""
        joblib.dump(self.pipeline, directory / "pipeline.joblib")
        channel = {"encoder_channel": self.channel.save(directory)} if self.channel is not None else {}
        write_config(directory, self.kind, self.temperature, asdict(self.params), **channel)

    @classmethod
    def load(cls, directory: Path, config: dict) -> TfidfTextModel:
        """Read a folder written by `save` (EncoderMismatch if its encoder is not the installed, pinned one)."""
        pipeline = joblib.load(directory / "pipeline.joblib")
        channel = EncoderChannel.load(directory, config["encoder_channel"]) if "encoder_channel" in config else None
        return cls(pipeline, float(config["temperature"]), TfidfParams(**config["params"]), channel)
