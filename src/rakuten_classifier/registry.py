"""The BentoML model store as our registry: stable names, labels, and the production pointer.

Names (stable, documented in README):
    rakuten-text    text model versions      labels: kind, stage=candidate
    rakuten-image   image model versions     labels: backbone, mode, stage=candidate
    rakuten-fusion  fusion versions          labels: method, stage=production|candidate

A fusion version names the text and image versions it combines (metadata): the three are a trio.
The production trio is the newest fusion version labelled ``stage=production`` and the two versions
it names; a fusion version gets that label only by passing the promotion gate (see
pipeline.gate.promotion_decision).
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
from .digest import sha256_of

log = logging.getLogger(__name__)

TEXT_MODEL = "rakuten-text"
IMAGE_MODEL = "rakuten-image"
FUSION_MODEL = "rakuten-fusion"
FUSION_FILE = "fusion.json"
# The image model's exported graph (modeling/image/onnx_export.py): what serving runs, so every image version holds it.
ONNX_FILE = "image_model.onnx"
# Written last into every model folder: SHA-256 of each file, so a truncated or edited model is refused.
MANIFEST_FILE = "manifest.json"
STAGE_PRODUCTION = "production"
STAGE_CANDIDATE = "candidate"


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def _file_digests(directory: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE and path.name != "model.yaml":
            digests[path.relative_to(directory).as_posix()] = sha256_of(path)
    return digests


def save_to_store(name: str, write: Callable[[Path], None], labels: dict, metadata: dict) -> str:
    """Create a model version: ``write`` fills its folder, then its manifest is written; returns the tag."""
    with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
        directory = Path(model.path)
        write(directory)
        (directory / MANIFEST_FILE).write_text(json.dumps(_file_digests(directory), indent=1))
    log.info("saved %s", model.tag)
    return str(model.tag)


class CorruptModel(RuntimeError):
    """A stored model whose files do not match its manifest (truncated, edited, or missing), or that lacks a file
    its kind needs (an image version without its ONNX graph)."""


def verify_model(tag: str) -> None:
    """Check a stored version's files against its manifest, and that an image version has its graph;
    CorruptModel says what is wrong."""
    try:
        directory = model_path(tag)
    except bentoml.exceptions.NotFound as exc:
        raise CorruptModel(f"{tag}: not in the model store") from exc
    verify_folder(directory, tag)


def verify_folder(directory: Path, tag: str) -> None:
    """Check the files of a version's folder (in the store, or a copy of it) against its manifest."""
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CorruptModel(f"{tag}: no {MANIFEST_FILE} (incomplete save, or saved outside `rakuten train`)")
    try:
        expected = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptModel(f"{tag}: unreadable {MANIFEST_FILE}") from exc
    actual = _file_digests(directory)
    missing = sorted(set(expected) - set(actual))
    changed = sorted(name for name in expected if name in actual and actual[name] != expected[name])
    if missing or changed:
        raise CorruptModel(
            f"{tag}: {'missing ' + ', '.join(missing) if missing else ''}"
            f"{'; ' if missing and changed else ''}"
            f"{'content changed: ' + ', '.join(changed) if changed else ''}"
        )
    if tag.partition(":")[0] == IMAGE_MODEL and ONNX_FILE not in expected:
        raise CorruptModel(f"{tag}: no {ONNX_FILE}, the graph serving runs (saved before the ONNX export): retrain it")


def verify_production(trio: Trio) -> None:
    """Verify the three versions of a trio (CorruptModel on the first bad one)."""
    for tag in (trio.fusion, trio.text, trio.image):
        verify_model(tag)


def model_path(tag: str) -> Path:
    """Folder of a stored model version (raises bentoml.exceptions.NotFound if absent)."""
    return Path(bentoml.models.get(tag).path)


def model_info(tag: str) -> dict:
    """Labels and metadata of a stored version."""
    model = bentoml.models.get(tag)
    return {
        "tag": str(model.tag),
        "labels": dict(model.info.labels),
        "metadata": dict(model.info.metadata),
        "created": model.info.creation_time.isoformat(),
    }


def versions(name: str) -> list[bentoml.Model]:
    """Every stored version of model ``name``, oldest first; none on a store that has no version of it yet."""
    try:
        found = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:  # no version of that name yet (a new store): nothing, not an error
        return []
    return sorted(found, key=lambda m: m.info.creation_time)


def latest_tag(name: str, **labels: str) -> str | None:
    """Newest version of ``name`` whose labels include ``labels``, or None."""
    matching = [m for m in versions(name) if all(m.info.labels.get(k) == v for k, v in labels.items())]
    return str(matching[-1].tag) if matching else None


@dataclass(frozen=True)
class Trio:
    """The three tags that serve together: a fusion version and the text and image versions it combines."""

    fusion: str
    text: str
    image: str


def read_fusion_config(fusion_tag: str) -> dict:
    """The fusion version's JSON: text_weight, method, text and image tags, metrics."""
    return json.loads((model_path(fusion_tag) / FUSION_FILE).read_text())


def production_trio() -> Trio | None:
    """The trio promoted to production, or None before the first promotion."""
    fusion_tag = latest_tag(FUSION_MODEL, stage=STAGE_PRODUCTION)
    if fusion_tag is None:
        return None
    return trio_of(fusion_tag)


class NoModelError(LookupError):
    """No production trio in the store yet."""


def require_production_trio() -> Trio:
    """The production trio, or NoModelError telling the user to train."""
    trio = production_trio()
    if trio is None:
        raise NoModelError("no production models in the BentoML store; run `rakuten train all` first")
    return trio


def trio_of(fusion_tag: str) -> Trio:
    """The text and image versions a fusion version combines."""
    config = read_fusion_config(fusion_tag)
    return Trio(fusion=fusion_tag, text=config["text_model"], image=config["image_model"])


def last_good_production() -> tuple[Trio | None, dict[str, str]]:
    """The newest production trio whose files verify, and why newer ones were refused."""
    production = [m for m in versions(FUSION_MODEL) if m.info.labels.get("stage") == STAGE_PRODUCTION]
    refused: dict[str, str] = {}
    for model in reversed(production):
        tag = str(model.tag)
        try:
            trio = trio_of(tag)
            verify_production(trio)
            return trio, refused
        except (CorruptModel, OSError, KeyError, json.JSONDecodeError) as exc:
            refused[tag] = str(exc)
            log.error("production %s refused: %s", tag, exc)
    return None, refused
