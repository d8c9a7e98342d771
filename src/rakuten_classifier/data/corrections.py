"""An operator's correction of an answer, stored as a new labelled product that the next training learns from.

One correction is one transaction: a load of its own (origin 'correction', so `rakuten retrain`
counts it as a new labelled row), the product (its text, its photo saved under the data root, the
true category, a split drawn by the held-out split rule) and who corrected it, when, and for which
prediction. Correcting the same prediction again returns the stored correction and adds nothing.
The product's id is the negative of its load's id: never one of a catalogue's (positive) ids.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from PIL import Image

from ..categories import CATEGORY_CODES
from ..config import Settings, get_settings
from .origin import CORRECTION
from .schema import corrections, get_engine, loads, products
from .split import split_of_one_row

log = logging.getLogger(__name__)

SOURCE = "operator"  # the products.source of a correction ('train'/'test' name the challenge's files)
# Photo formats kept, by what Pillow reads in the bytes (never by the name or type the request gave).
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class CorrectionError(ValueError):
    """A correction that cannot be stored as asked (unknown category, unreadable photo, nothing to classify)."""


class CorrectionConflict(CorrectionError):
    """The prediction was already corrected, to another category."""


@dataclass(frozen=True)
class Correction:
    """A product and its true category, as an operator gave them."""

    designation: str
    description: str
    prdtypecode: int
    corrected_by: str
    image: bytes | None = None
    prediction_id: str | None = None


def _photo_kind(image: bytes) -> tuple[str, tuple[int, int]]:
    """The file extension and size (width, height) of a photo, from what Pillow reads in its bytes."""
    try:
        with Image.open(io.BytesIO(image)) as header:
            found, size = header.format or "", header.size
    except Exception as exc:  # Pillow raises several types for bytes that are no image
        raise CorrectionError(f"the photo is not a readable image ({exc})") from exc
    if found not in EXTENSIONS:
        raise CorrectionError(f"photos in {found or 'this'} format are not kept; send {', '.join(EXTENSIONS)}")
    return EXTENSIONS[found], size


def _utc(moment: datetime) -> datetime:
    """A stored time in UTC (SQLite gives back a naive one; every time is written in UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stored(conn: sa.Connection, prediction_id: str) -> dict | None:
    """The correction already stored for a prediction, as record_correction answers it."""
    query = (
        sa.select(products.c.productid, products.c.prdtypecode, products.c.split, products.c.image_path, corrections)
        .join(corrections, corrections.c.productid == products.c.productid)
        .where(corrections.c.prediction_id == prediction_id)
    )
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    return {
        "productid": int(row["productid"]),
        "prdtypecode": int(row["prdtypecode"]),
        "split": row["split"],
        "has_image": row["image_path"] is not None,
        "prediction_id": row["prediction_id"],
        "corrected_by": row["corrected_by"],
        "created_at": _utc(row["created_at"]).isoformat(),
        "created": False,
    }


def _check(correction: Correction) -> tuple[str, tuple[int, int]] | None:
    """The photo's extension and size (None without a photo); CorrectionError when the correction is unusable."""
    if correction.prdtypecode not in CATEGORY_CODES:
        raise CorrectionError(f"unknown category {correction.prdtypecode}; expected one of {list(CATEGORY_CODES)}")
    if not correction.designation.strip() and correction.image is None:
        raise CorrectionError("a correction needs the product's title (designation) or its photo")
    return None if correction.image is None else _photo_kind(correction.image)


def _write_new(path: Path, data: bytes) -> None:
    """Write a photo as a new regular file, never through a link: a file left by a correction whose
    transaction never committed (its id is free again) is removed first, a link itself and not its target."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _same_or_conflict(stored: dict, correction: Correction) -> dict:
    if stored["prdtypecode"] != correction.prdtypecode:
        raise CorrectionConflict(
            f"prediction {correction.prediction_id} was already corrected to {stored['prdtypecode']}"
        )
    return stored


def record_correction(correction: Correction, settings: Settings | None = None) -> dict:
    """Store a correction as a new labelled product in one transaction; return what was stored.

    The photo (validated by what Pillow reads, at most one file) is written under
    ``settings.corrections_dir`` with a name made from the id only. With a ``prediction_id`` already
    corrected, the stored correction comes back (``created`` False); CorrectionConflict when it
    named another category, CorrectionError when the correction is unusable.
    """
    settings = settings or get_settings()
    kind = _check(correction)
    engine = get_engine(settings.database_url)
    photo: Path | None = None
    try:
        with engine.begin() as conn:
            if correction.prediction_id is not None:
                stored = _stored(conn, correction.prediction_id)
                if stored is not None:
                    return _same_or_conflict(stored, correction)
            now = datetime.now(UTC)
            settings.corrections_dir.mkdir(parents=True, exist_ok=True)
            folder = settings.corrections_dir.resolve()
            inserted = conn.execute(
                loads.insert().values(
                    started_at=now,
                    finished_at=now,
                    source_dir=str(folder),
                    rows=1,
                    inserted=1,
                    images_found=int(kind is not None),
                    images_missing=0,
                    origin=CORRECTION,
                )
            )
            assert inserted.inserted_primary_key is not None  # an INSERT always returns its primary key
            load_id = int(inserted.inserted_primary_key[0])
            productid = -load_id
            if kind is not None and correction.image is not None:
                photo = folder / f"correction_{load_id}{kind[0]}"
                _write_new(photo, correction.image)
            split = split_of_one_row(productid, settings.seed, settings.val_fraction, settings.test_fraction)
            conn.execute(
                products.insert().values(
                    productid=productid,
                    source=SOURCE,
                    row_index=load_id,
                    designation=correction.designation,
                    description=correction.description,
                    imageid=productid,
                    prdtypecode=correction.prdtypecode,
                    split=split,
                    image_path=None if photo is None else str(photo),
                    image_bytes=None if correction.image is None else len(correction.image),
                    image_width=None if kind is None else kind[1][0],
                    image_height=None if kind is None else kind[1][1],
                    load_id=load_id,
                )
            )
            conn.execute(
                corrections.insert().values(
                    productid=productid,
                    prediction_id=correction.prediction_id,
                    corrected_by=correction.corrected_by,
                    created_at=now,
                )
            )
    except sa.exc.IntegrityError:
        # Another request stored a correction of the same prediction between our check and our insert.
        if photo is not None:
            photo.unlink(missing_ok=True)
        if correction.prediction_id is None:
            raise
        with engine.connect() as conn:
            stored = _stored(conn, correction.prediction_id)
        if stored is None:
            raise
        return _same_or_conflict(stored, correction)
    except BaseException:
        if photo is not None:
            photo.unlink(missing_ok=True)
        raise
    finally:
        engine.dispose()
    log.info("correction stored: product %d, category %d, split %s", productid, correction.prdtypecode, split)
    return {
        "productid": productid,
        "prdtypecode": correction.prdtypecode,
        "split": split,
        "has_image": photo is not None,
        "prediction_id": correction.prediction_id,
        "corrected_by": correction.corrected_by,
        "created_at": now.isoformat(),
        "created": True,
    }
