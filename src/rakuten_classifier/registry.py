"""The BentoML model store as our registry: stable names, labels, and the production pointer.

Names (stable, documented in README):
    rakuten-text    text model versions      labels: kind, stage=candidate
    rakuten-image   image model versions     labels: backbone, mode, stage=candidate
    rakuten-fusion  fusion versions          labels: method, stage=production|candidate

A fusion version names the text and image versions it combines (metadata). The production models
are the newest fusion version labelled ``stage=production`` and the two versions it names; a
fusion version gets that label only by passing the promotion gate (see training.promotion_decision).
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bentoml

from . import __version__

log = logging.getLogger(__name__)

TEXT_MODEL = "rakuten-text"
IMAGE_MODEL = "rakuten-image"
FUSION_MODEL = "rakuten-fusion"
FUSION_FILE = "fusion.json"
PRODUCTION = "production"
CANDIDATE = "candidate"


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def save_to_store(name: str, write: Callable[[Path], None], labels: dict, metadata: dict) -> str:
    """Create a model version: ``write`` fills its folder; returns the tag as a string."""
    with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
        write(Path(model.path))
    log.info("saved %s", model.tag)
    return str(model.tag)


def model_path(tag: str) -> Path:
    """Folder of a stored model version (raises bentoml.exceptions.NotFound if absent)."""
    return Path(bentoml.models.get(tag).path)


def model_info(tag: str) -> dict:
    """Labels and metadata of a stored version."""
    model = bentoml.models.get(tag)
    return {"tag": str(model.tag), "labels": dict(model.info.labels), "metadata": dict(model.info.metadata),
            "created": model.info.creation_time.isoformat()}


def latest_tag(name: str, **labels: str) -> str | None:
    """Newest version of ``name`` whose labels include ``labels``, or None."""
    try:
        versions = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:  # no version of that name yet
        return None
    matching = [m for m in versions if all(m.info.labels.get(k) == v for k, v in labels.items())]
    if not matching:
        return None
    return str(max(matching, key=lambda m: m.info.creation_time).tag)


@dataclass(frozen=True)
class ProductionModels:
    """The three tags that serve together."""

    fusion: str
    text: str
    image: str


def read_fusion_config(fusion_tag: str) -> dict:
    """The fusion version's JSON: text_weight, method, text and image tags, metrics."""
    return json.loads((model_path(fusion_tag) / FUSION_FILE).read_text())


def production_models() -> ProductionModels | None:
    """The models currently promoted to production, or None before the first promotion."""
    fusion_tag = latest_tag(FUSION_MODEL, stage=PRODUCTION)
    if fusion_tag is None:
        return None
    config = read_fusion_config(fusion_tag)
    return ProductionModels(fusion=fusion_tag, text=config["text_model"], image=config["image_model"])
