"""SQL store (SQLite by default, PostgreSQL by URL): products, splits and the record of loads.

A load is one transaction: it inserts every new product or nothing at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from PIL import Image
from tqdm.auto import tqdm

from .reader import read_challenge_dir
from .schema import get_engine, loads, products
from .split import SPLITS, UNLABELLED_SPLIT, assign_splits

log = logging.getLogger(__name__)

INSERT_CHUNK = 5000


def _image_stats(path: str | None) -> tuple[int | None, int | None, int | None]:
    if not isinstance(path, str):  # None, or pandas' missing value
        return None, None, None
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
        return os.path.getsize(path), width, height
    except OSError as exc:
        log.warning("%s: unreadable image header (%s); stored without size", path, exc)
        return os.path.getsize(path), None, None


def _chunks(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _insert_rows(conn: sa.Connection, rows: Iterable[list[dict]]) -> None:
    for chunk in rows:
        conn.execute(products.insert(), chunk)


def _splits(conn: sa.Connection, productids: Iterable[int] | None = None) -> dict[int, str]:
    query = sa.select(products.c.productid, products.c.split)
    if productids is not None:
        query = query.where(products.c.productid.in_([int(p) for p in productids]))
    return {int(productid): split for productid, split in conn.execute(query)}


def stored_splits(url: str, productids: Iterable[int] | None = None) -> dict[int, str]:
    """productid -> split of every product in the store (or of those among ``productids`` that are there):
    a product keeps its split wherever it is read."""
    engine = get_engine(url)
    with engine.connect() as conn:
        splits = _splits(conn, productids)
    engine.dispose()
    return splits


def load_into_db(data_dir: str | Path, url: str, seed: int, val_fraction: float, test_fraction: float) -> dict:
    """Load a challenge folder into SQL once; rows already there are left untouched."""
    data = read_challenge_dir(data_dir)
    engine = get_engine(url)
    started = datetime.now(UTC)
    with engine.begin() as conn:
        existing = _splits(conn)
        frame = data.products.copy()
        frame["split"] = assign_splits(frame, seed, val_fraction, test_fraction, existing)
        new = frame[~frame["productid"].isin(existing.keys())]
        inserted = conn.execute(
            loads.insert().values(
                started_at=started,
                source_dir=str(Path(data_dir).resolve()),
                rows=len(frame),
                inserted=0,
                images_found=data.images_found,
                images_missing=data.images_missing,
                origin=data.origin,
            )
        )
        assert inserted.inserted_primary_key is not None  # an INSERT always returns its primary key
        load_id = inserted.inserted_primary_key[0]
        rows = []
        for record in tqdm(new.to_dict("records"), desc="reading image headers", unit="row", disable=None):
            size, width, height = _image_stats(record["image_path"])
            code = record["prdtypecode"]
            rows.append(
                {
                    "productid": int(record["productid"]),
                    "source": record["source"],
                    "row_index": int(record["row_index"]),
                    "designation": record["designation"],
                    "description": record["description"],
                    "imageid": int(record["imageid"]),
                    "prdtypecode": None if pd.isna(code) else int(code),
                    "split": record["split"],
                    "image_path": record["image_path"] if isinstance(record["image_path"], str) else None,
                    "image_bytes": size,
                    "image_width": width,
                    "image_height": height,
                    "load_id": load_id,
                }
            )
        _insert_rows(conn, _chunks(rows, INSERT_CHUNK))
        conn.execute(
            loads.update().where(loads.c.id == load_id).values(inserted=len(rows), finished_at=datetime.now(UTC))
        )
    engine.dispose()
    split_counts = frame["split"].value_counts()
    return {
        "load_id": load_id,
        "rows": len(frame),
        "inserted": len(rows),
        "categories": int(frame["prdtypecode"].dropna().nunique()),
        "images_found": data.images_found,
        "images_missing": data.images_missing,
        "splits": {name: int(split_counts.get(name, 0)) for name in (*SPLITS, UNLABELLED_SPLIT)},
        "origin": data.origin,
    }


def read_products(url: str) -> pd.DataFrame:
    """Every stored product with its split and the origin of its load, in the reader's column layout."""
    engine = get_engine(url)
    query = (
        sa.select(products, loads.c.origin)
        .join(loads, products.c.load_id == loads.c.id)
        .order_by(products.c.source, products.c.row_index)
    )
    with engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    engine.dispose()
    frame["prdtypecode"] = frame["prdtypecode"].astype("Int64")
    return frame


def load_products(
    data_dir: str | Path | None, url: str | None, seed: int, val_fraction: float, test_fraction: float
) -> pd.DataFrame:
    """Products with splits, from a challenge folder (split in memory) or from the SQL store."""
    if data_dir is not None:
        frame = read_challenge_dir(data_dir).products
        frame["split"] = assign_splits(frame, seed, val_fraction, test_fraction)
        return frame
    if url is None:
        raise ValueError("give a data folder or a database URL")
    frame = read_products(url)
    if frame.empty:
        raise ValueError(f"{url}: no products; run `rakuten data load --data-dir DIR` first")
    return frame
