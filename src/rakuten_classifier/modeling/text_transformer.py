"""The fine-tuned transformer text model: a Hugging Face sequence classifier over product texts.

Its options (``TransformerParams``), its scores and its folder (``save``, ``load``); torch and
transformers are imported only where a model runs, so a serving process without them refuses such a
model with a ModelLoadError. Fine-tuning it is in text_transformer_fitting.py (training only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..categories import CATEGORY_CODES
from ..config import Settings
from .calibration import softmax
from .errors import ModelLoadError
from .text import write_config


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
        write_config(directory, self.kind, self.temperature, asdict(self.params))

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
        return cls(model, tokenizer, float(config["temperature"]), TransformerParams(**config["params"]))
