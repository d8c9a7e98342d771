"""Reader for the challenge layout and the deterministic stratified split.

Layout of a data folder::

    X_train_update.csv   ,designation,description,productid,imageid   (labelled products)
    Y_train_CVw08PX.csv  ,prdtypecode                                 (same first column)
    X_test_update.csv    (optional, unlabelled products)
    images/image_train/image_<imageid>_product_<productid>.jpg
    images/image_test/...

Raw files are only read, never edited. Missing images are counted, never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..categories import CATEGORY_CODES
from .origin import folder_origin

log = logging.getLogger(__name__)

X_TRAIN_FILE = "X_train_update.csv"
Y_TRAIN_FILE = "Y_train_CVw08PX.csv"
X_TEST_FILE = "X_test_update.csv"
PRODUCT_COLUMNS = ("designation", "description", "productid", "imageid")


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and, where known, the row."""


@dataclass
class ChallengeData:
    """Products read from one folder, one row per product, with image paths resolved."""

    products: pd.DataFrame
    images_found: int
    images_missing: int
    origin: str  # data.origin: 'synthetic' (the folder carries the synthetic writer's marker) or 'real'

    @property
    def labelled(self) -> pd.DataFrame:
        """Rows that carry a category code."""
        return self.products[self.products["prdtypecode"].notna()]


def image_path(data_dir: Path, source: str, imageid: int, productid: int) -> Path:
    """Where the challenge layout puts a product's image (source is 'train' or 'test')."""
    return data_dir / "images" / f"image_{source}" / f"image_{imageid}_product_{productid}.jpg"


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path}: unreadable CSV ({exc})") from exc
    return frame


def _csv_chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """_read_csv, ``rows`` lines at a time: a bad line raises DataError when its chunk is reached."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with pd.read_csv(
            path, index_col=0, dtype=str, keep_default_na=False, encoding="utf-8", chunksize=rows
        ) as chunks:
            yield from chunks
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path}: unreadable CSV ({exc})") from exc


def _integer_column(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        row = frame.index[bad.argmax()]
        raise DataError(f"{path}: row {row}: column {column!r} is not an integer: {frame.loc[row, column]!r}")
    return values.astype("int64")


def _read_products(path: Path, source: str) -> pd.DataFrame:
    return _products_of(_read_csv(path), path, source)


def _products_of(frame: pd.DataFrame, path: Path, source: str) -> pd.DataFrame:
    """A products CSV's rows (all of it, or a chunk) checked and typed."""
    missing = [c for c in PRODUCT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {list(PRODUCT_COLUMNS)}")
    _integer_index(frame, path)
    products = pd.DataFrame(
        {
            "row_index": frame.index.astype("int64"),
            "source": source,
            "designation": frame["designation"],
            "description": frame["description"],
            "productid": _integer_column(frame, "productid", path).to_numpy(),
            "imageid": _integer_column(frame, "imageid", path).to_numpy(),
        }
    ).reset_index(drop=True)
    empty = products["designation"].str.strip() == ""
    if empty.any():
        raise DataError(f"{path}: row {products.loc[empty.argmax(), 'row_index']}: empty designation")
    duplicated = products["productid"].duplicated()
    if duplicated.any():
        row = products.loc[duplicated.argmax()]
        raise DataError(f"{path}: row {row.row_index}: productid {row.productid} appears twice")
    return products


def _integer_index(frame: pd.DataFrame, path: Path) -> None:
    index = pd.to_numeric(pd.Series(frame.index), errors="coerce")
    if index.isna().any():
        raise DataError(
            f"{path}: first column must be the integer row index; found {frame.index[index.isna().argmax()]!r}"
        )
    frame.index = index.astype("int64")


def _read_labels(path: Path, products: pd.DataFrame, x_path: Path) -> pd.Series:
    return _labels_of(_read_csv(path), path, products, x_path)


def _labels_of(labels: pd.DataFrame, path: Path, products: pd.DataFrame, x_path: Path) -> pd.Series:
    """The labels CSV's rows (all of it, or the chunk beside ``products``) checked against the products."""
    if "prdtypecode" not in labels.columns:
        raise DataError(f"{path}: missing column 'prdtypecode'")
    _integer_index(labels, path)
    if len(labels) != len(products) or not np.array_equal(labels.index.to_numpy(), products["row_index"].to_numpy()):
        mismatch = next(
            (i for i, (a, b) in enumerate(zip(labels.index, products["row_index"], strict=False)) if a != b),
            min(len(labels), len(products)),
        )
        raise DataError(
            f"{path}: not aligned with {x_path.name}: {len(labels)} labels for {len(products)} products; "
            f"first difference at line {mismatch + 2}"
        )
    codes = _integer_column(labels, "prdtypecode", path)
    unknown = ~codes.isin(CATEGORY_CODES)
    if unknown.any():
        row = labels.index[unknown.argmax()]
        raise DataError(f"{path}: row {row}: unknown category code {codes.loc[row]}")
    return codes


def read_challenge_dir(data_dir: str | Path) -> ChallengeData:
    """Read a folder in the challenge layout; raise DataError with file and row on bad input."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: not a folder")
    x_path, y_path = data_dir / X_TRAIN_FILE, data_dir / Y_TRAIN_FILE
    frames = []
    if x_path.exists():
        train = _read_products(x_path, "train")
        train["prdtypecode"] = _read_labels(y_path, train, x_path).to_numpy()
        frames.append(train)
    test_path = data_dir / X_TEST_FILE
    if test_path.exists():
        test = _read_products(test_path, "test")
        test["prdtypecode"] = pd.NA
        frames.append(test)
    if not frames:
        raise DataError(f"{data_dir}: neither {X_TRAIN_FILE} nor {X_TEST_FILE} is there")
    products = pd.concat(frames, ignore_index=True)
    products["prdtypecode"] = products["prdtypecode"].astype("Int64")
    exists = _resolve_images(products, data_dir)
    origin = folder_origin(data_dir)
    products["origin"] = origin
    found = int(exists.sum())
    missing = len(products) - found
    if missing:
        log.warning(
            "%s: %d of %d image files are missing; those products use text alone", data_dir, missing, len(products)
        )
    return ChallengeData(products=products, images_found=found, images_missing=missing, origin=origin)


def _resolve_images(products: pd.DataFrame, data_dir: Path) -> np.ndarray:
    """Set products["image_path"] (None where the file is absent); which rows have one."""
    paths = [
        image_path(data_dir, s, i, p)
        for s, i, p in zip(products["source"], products["imageid"], products["productid"], strict=True)
    ]
    exists = np.fromiter((p.is_file() for p in paths), dtype=bool, count=len(paths))
    products["image_path"] = [str(p) if e else None for p, e in zip(paths, exists, strict=True)]
    return exists


def read_labelled_chunks(data_dir: str | Path, rows: int) -> Iterator[pd.DataFrame]:
    """The labelled products of a challenge folder, ``rows`` at a time in file order, each chunk checked as
    read_challenge_dir checks the whole file (checks that need every row, such as a productid's uniqueness,
    hold within a chunk), with its image paths resolved. A reader that needs only the first few products
    reads only as far as they are."""
    data_dir = Path(data_dir)
    x_path, y_path = data_dir / X_TRAIN_FILE, data_dir / Y_TRAIN_FILE
    for frame, labels in zip(_csv_chunks(x_path, rows), _csv_chunks(y_path, rows), strict=False):
        products = _products_of(frame, x_path, "train")
        products["prdtypecode"] = _labels_of(labels, y_path, products, x_path).to_numpy()
        products["prdtypecode"] = products["prdtypecode"].astype("Int64")  # as read_challenge_dir types it
        _resolve_images(products, data_dir)
        yield products
