"""Text models: TF-IDF + linear SVM (default), with a sentence-encoder channel, or a fine-tuned transformer.

All take the output of `data.preprocessing.product_text` (title, a newline, description) and
return probabilities in `CATEGORY_CODES` order. `cross_fit_text_model` fits one on every learning
row: its temperature is fitted on K-fold out-of-fold scores, which it also returns for the fusion.
The TF-IDF model is cross-fitted by tfidf_cross_fit.py (its n-grams counted once for all folds).
The TF-IDF model's encoder channel (modeling/text_encoder.py) is fitted by text_encoder_fitting.py.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline, make_union
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from ..categories import CATEGORY_CODES, label_indices
from ..config import Settings
from ..data.preprocessing import TITLE_SEPARATOR
from .calibration import ABSENT_LOGIT, fit_temperature, softmax
from .cross_fitting import out_of_fold
from .errors import ModelLoadError
from .text_encoder import EncoderChannel

log = logging.getLogger(__name__)

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


def _write_config(directory: Path, kind: str, temperature: float, params: dict, **more: dict) -> None:
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

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[int], params: TfidfParams | None = None) -> TfidfTextModel:
        """Fit on product texts and their category codes (temperature 1: see cross_fit_text_model)."""
        params = params or TfidfParams()
        pipeline = text_pipeline(params)
        pipeline.fit(list(texts), label_indices(labels))
        return cls(pipeline, 1.0, params)

    def scores(self, texts: list[str]) -> np.ndarray:
        """Margins for all 27 classes (a class unseen in training gets ABSENT_LOGIT)."""
        return class_scores(self.pipeline.decision_function(texts), self.pipeline.named_steps["svm"].classes_)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated class probabilities, shape (n, 27)."""
        texts = list(texts)
        if self.channel is not None:
            return self.channel.proba(self.scores(texts), texts)
        return softmax(self.scores(texts), self.temperature)

    def save(self, directory: Path) -> None:
        """Write the pipeline (joblib), the encoder head if any and a JSON config into the folder."""
        joblib.dump(self.pipeline, directory / "pipeline.joblib")
        channel = {"encoder_channel": self.channel.save(directory)} if self.channel is not None else {}
        _write_config(directory, self.kind, self.temperature, asdict(self.params), **channel)

    @classmethod
    def load(cls, directory: Path, config: dict) -> TfidfTextModel:
        """Read a folder written by `save` (EncoderMismatch if its encoder is not the installed, pinned one)."""
        pipeline = joblib.load(directory / "pipeline.joblib")
        channel = EncoderChannel.load(directory, config["encoder_channel"]) if "encoder_channel" in config else None
        return cls(pipeline, float(config["temperature"]), TfidfParams(**config["params"]), channel)


@dataclass
class TransformerParams:
    """Fine-tuning options of the transformer text model (each field's "help" is the CLI's, cli.py); the seed
    has no default here: `from_settings` takes the settings'."""

    backbone: str = field(
        default="jhu-clsp/mmBERT-base", metadata={"help": "Hugging Face hub id or local folder of the model"}
    )
    epochs: float = field(default=2.0, metadata={"help": "passes over the training texts (fractions allowed)"})
    batch_size: int = field(default=16, metadata={"help": "texts per optimisation step"})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW peak learning rate (linear warm-up/decay)"})
    max_length: int = field(default=128, metadata={"help": "tokens kept per text"})
    sample_fraction: float = field(default=1.0, metadata={"help": "share of the training texts used (seeded)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    seed: int = field(kw_only=True, metadata={"help": "seed of the fine-tuning (RAKUTEN_SEED)"})

    @classmethod
    def from_settings(cls, settings: Settings, **given: Any) -> TransformerParams:
        """The fields ``given``, the seed from ``settings`` unless given, the rest the defaults."""
        return cls(**{"seed": settings.seed, **given})


class TransformerTextModel:
    """A Hugging Face sequence classifier fine-tuned on product texts."""

    kind = "transformer"

    def __init__(self, model, tokenizer, temperature: float, params: TransformerParams):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.params = params
        self.device = next(model.parameters()).device

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[int], params: TransformerParams) -> TransformerTextModel:
        """Fine-tune `params.backbone` (all layers) with AdamW and linear warm-up/decay (temperature 1)."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

        torch.manual_seed(params.seed)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        texts, label_idx = list(texts), label_indices(labels)
        if params.sample_fraction < 1.0:
            rng = np.random.default_rng(params.seed)
            keep = rng.random(len(texts)) < params.sample_fraction
            texts, label_idx = [t for t, k in zip(texts, keep, strict=True) if k], label_idx[keep]
        if not texts:
            raise ValueError("no training texts left after sampling")
        tokenizer = AutoTokenizer.from_pretrained(params.backbone)
        model = AutoModelForSequenceClassification.from_pretrained(
            params.backbone,
            num_labels=len(CATEGORY_CODES),
            id2label={i: str(c) for i, c in enumerate(CATEGORY_CODES)},
            label2id={str(c): i for i, c in enumerate(CATEGORY_CODES)},
            ignore_mismatched_sizes=True,
        ).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
        steps_per_epoch = math.ceil(len(texts) / params.batch_size)
        total_steps = max(1, int(steps_per_epoch * params.epochs))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total_steps), total_steps)
        generator = np.random.default_rng(params.seed)
        model.train()
        progress = tqdm(total=total_steps, desc="fine-tuning text transformer", unit="step", disable=None)
        step = 0
        while step < total_steps:
            order = generator.permutation(len(texts))
            for start in range(0, len(order), params.batch_size):
                if step >= total_steps:
                    break
                batch = order[start : start + params.batch_size]
                encoded = tokenizer(
                    [texts[i] for i in batch],
                    truncation=True,
                    max_length=params.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                output = model(**encoded, labels=torch.as_tensor(label_idx[batch], device=device))
                output.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                progress.update(1)
                progress.set_postfix(loss=f"{output.loss.item():.3f}")
        progress.close()
        return cls(model, tokenizer, 1.0, params)

    def scores(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Logits for all 27 classes."""
        import torch

        outputs = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                encoded = self.tokenizer(
                    texts[start : start + batch_size],
                    truncation=True,
                    max_length=self.params.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                outputs.append(self.model(**encoded.to(self.device)).logits.float().cpu().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, len(CATEGORY_CODES)))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated class probabilities, shape (n, 27)."""
        return softmax(self.scores(list(texts)), self.temperature)

    def save(self, directory: Path) -> None:
        """save_pretrained of model and tokenizer plus a JSON config."""
        self.model.save_pretrained(directory / "hf_model")
        self.tokenizer.save_pretrained(directory / "hf_model")
        _write_config(directory, self.kind, self.temperature, asdict(self.params))

    @classmethod
    def load(cls, directory: Path, config: dict) -> TransformerTextModel:
        """Read a folder written by `save` (local files only, never the hub)."""
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:  # the serving requirements alone: TF-IDF models only
            raise ModelLoadError(
                f"{directory}: a transformer text model runs on torch and transformers, not installed here "
                f"({exc}): install the training requirements where it is served, or serve a TF-IDF text model"
            ) from exc

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        path = directory / "hf_model"
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).to(device)
        params = {k: v for k, v in config["params"].items() if k != "extra"}  # saved before `extra` was dropped
        return cls(model, tokenizer, float(config["temperature"]), TransformerParams(**params))


def out_of_fold_scores(
    texts: Sequence[str], labels: Sequence[int], folds: np.ndarray, fit: Callable[[list[str], list[int]], TextModel]
) -> np.ndarray:
    """Scores of every row by a model ``fit`` without the row's fold."""
    texts, labels = list(texts), [int(code) for code in labels]

    def fit_predict(train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        model = fit([texts[i] for i in train], [labels[i] for i in train])
        return model.scores([texts[i] for i in held_out])

    return out_of_fold(fit_predict, folds, len(CATEGORY_CODES))


def cross_fit_text_model(
    texts: Sequence[str], labels: Sequence[int], folds: np.ndarray, fit: Callable[[list[str], list[int]], TextModel]
) -> tuple[TextModel, np.ndarray]:
    """The model ``fit`` on every row, with its temperature fitted on out-of-fold scores; and those
    out-of-fold probabilities (row i predicted by a model fitted without i's fold)."""
    texts, labels = list(texts), [int(code) for code in labels]
    oof_scores = out_of_fold_scores(texts, labels, folds, fit)
    return calibrate(fit(texts, labels), oof_scores, labels)


def calibrate(model: TextModel, oof_scores: np.ndarray, labels: Sequence[int]) -> tuple[TextModel, np.ndarray]:
    """``model`` with its temperature fitted on the out-of-fold scores, and those scores' probabilities."""
    model.temperature = fit_temperature(oof_scores, label_indices(labels))
    log.info("text model cross-fitted on %d rows: temperature %.3f", len(oof_scores), model.temperature)
    return model, softmax(oof_scores, model.temperature)


def load_text_model(directory: str | Path) -> TextModel:
    """Load a text model folder of either kind; ModelLoadError says what is wrong."""
    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
        if list(config["classes"]) != list(CATEGORY_CODES):
            raise ModelLoadError(f"{directory}: class list differs from this code's categories")
        if config["kind"] == "tfidf":
            return TfidfTextModel.load(directory, config)
        if config["kind"] == "transformer":
            return TransformerTextModel.load(directory, config)
        raise ModelLoadError(f"{directory}: unknown text model kind {config['kind']!r}")
    except ModelLoadError:
        raise
    except Exception as exc:  # missing file, truncated pickle, bad JSON, unknown kind...
        raise ModelLoadError(f"{directory}: cannot load text model ({type(exc).__name__}: {exc})") from exc
