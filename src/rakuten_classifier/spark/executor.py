"""What a Spark executor runs for batch scoring: the production trio, loaded once per Python worker from the
copies Spark shipped and verified by their SHA-256 first, and products scored an Arrow batch at a time.

Each answer is the service's own (`serving.answers.build_answer` over the same text and image models that
`rakuten predict` and `/predict_multimodal` load): a product whose photo is missing or cannot be decoded
is answered from its text alone, without an image model tag, and flagged, never a failed task.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark import SparkFiles

from ..categories import CATEGORY_CODES
from ..data.preprocessing import ImageError, load_image, product_text
from ..modeling.loading import load_served_image, load_text
from ..registry import MANIFEST_FILE, CorruptModel, verify_folder
from ..serving.answers import build_answer

log = logging.getLogger(__name__)

# What a row's photo gave: used by the image model, absent (no path, no bytes, no file), or not decodable.
USED, MISSING, UNREADABLE = "used", "missing", "unreadable"
OUTPUT_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("productid", pa.int64()),
        ("prdtypecode", pa.int64()),
        ("category", pa.string()),
        ("probability", pa.float64()),
        ("probabilities", pa.list_(pa.float64())),  # fused, in CATEGORY_CODES order, rounded as the service's
        ("image_status", pa.string()),
        ("image_error", pa.string()),
        ("text_model", pa.string()),
        ("image_model", pa.string()),
        ("fusion_model", pa.string()),
    ]
)


@dataclass(frozen=True)
class Shipped:
    """A stored version as Spark ships it: its tag, the name SparkFiles knows its unpacked archive by, its manifest's
    SHA-256."""

    tag: str
    name: str
    manifest_sha256: str


@dataclass(frozen=True)
class Shipment:
    """What every task needs: the text and image versions shipped, the fusion config, the input's columns."""

    text: Shipped
    image: Shipped
    fusion_tag: str
    fusion: dict
    index: str  # the input column that becomes the output's ``index``
    image_column: str  # "image_path" or "image" (bytes)


# One entry per (text, image) pair of tags in a Python worker: Spark reuses its Python workers across
# tasks (spark.python.worker.reuse), so each loads the trio once, not once per partition.
_LOADED: dict[tuple[str, str], tuple[Any, Any]] = {}


def verified_copy(shipped: Shipped) -> Path:
    """The shipped (unpacked) folder of a version, its files checked against its manifest, and that manifest
    against the one the driver verified in the store (CorruptModel otherwise: the task fails, Spark retries
    it, then the job)."""
    directory = Path(SparkFiles.get(shipped.name))
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file() or hashlib.sha256(manifest.read_bytes()).hexdigest() != shipped.manifest_sha256:
        raise CorruptModel(f"{shipped.tag}: the shipped {MANIFEST_FILE} differs from the store's")
    verify_folder(directory, shipped.tag)
    return directory


def loaded_models(shipment: Shipment) -> tuple[Any, Any]:
    """The text and image models of a shipment, loaded (on the serving runtime) once per Python worker."""
    key = (shipment.text.tag, shipment.image.tag)
    if key not in _LOADED:
        _LOADED[key] = (load_text(verified_copy(shipment.text)), load_served_image(verified_copy(shipment.image)))
        log.info("loaded %s and %s", *key)
    return _LOADED[key]


def _photo(value: str | bytes | None) -> tuple[Any, str, str | None]:
    """A decoded photo, its status and the reason it is not used (as the image service's error entry says)."""
    if value is None or value == "":
        return None, MISSING, None
    try:
        data = value if isinstance(value, bytes) else Path(value).read_bytes()
    except FileNotFoundError:
        return None, MISSING, None
    except OSError as exc:
        return None, UNREADABLE, f"image file not readable: {exc}"
    try:
        return load_image(data), USED, None
    except ImageError as exc:
        return None, UNREADABLE, str(exc)


def score_batch(batch: pa.RecordBatch, shipment: Shipment, models: tuple[Any, Any]) -> pa.RecordBatch:
    """The answers of one batch of products (OUTPUT_SCHEMA): both models once over the batch, then each row fused."""
    text_model, image_model = models
    texts = [
        product_text(d, s)
        for d, s in zip(batch.column("designation").to_pylist(), batch.column("description").to_pylist(), strict=True)
    ]
    text_proba = text_model.predict_proba(texts)
    photos = [_photo(value) for value in batch.column(shipment.image_column).to_pylist()]
    used = [i for i, (_, status, _) in enumerate(photos) if status == USED]
    image_proba: dict[int, np.ndarray] = {}
    if used:
        image_proba = dict(zip(used, image_model.predict_proba([photos[i][0] for i in used]), strict=True))
    rows: dict[str, list] = {name: [] for name in OUTPUT_SCHEMA.names}
    for i, (_, status, error) in enumerate(photos):
        tags = {"text": shipment.text.tag, "fusion": shipment.fusion_tag}
        if i in image_proba:  # as the service's answer: an image model tag only where the photo was used
            tags["image"] = shipment.image.tag
        answer = build_answer(text_proba[i], image_proba.get(i), shipment.fusion, None, len(CATEGORY_CODES), tags)
        fused = {entry["prdtypecode"]: entry["probability"] for entry in answer["top_k"]}
        rows["prdtypecode"].append(answer["prdtypecode"])
        rows["category"].append(answer["category"])
        rows["probability"].append(answer["probability"])
        rows["probabilities"].append([fused[code] for code in CATEGORY_CODES])
        rows["image_status"].append(status)
        rows["image_error"].append(error)
        rows["text_model"].append(tags["text"])
        rows["image_model"].append(tags.get("image"))
        rows["fusion_model"].append(tags["fusion"])
    rows["index"] = batch.column(shipment.index).to_pylist()
    rows["productid"] = batch.column("productid").to_pylist()
    return pa.RecordBatch.from_pydict(rows, schema=OUTPUT_SCHEMA)


def score_partition(shipment: Shipment, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A task of `mapInArrow`: the answers of its partition's products, one Arrow batch (one model call) at a time.

    Defined here, not in the driver's module, so that a Python worker imports what scoring needs and no more.
    """
    models = loaded_models(shipment)
    for batch in batches:
        yield score_batch(batch, shipment, models)
