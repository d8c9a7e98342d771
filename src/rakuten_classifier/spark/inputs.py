"""The products of a Spark scoring job, checked on the driver before the job starts: a folder in the challenge
layout, or a Parquet table (``productid``, ``designation``, ``description``, and ``image_path`` or ``image``).

A malformed input is refused with a DataError that names the column or the row, never a failed job. Whether
each photo can be read is not checked here: the job answers an unreadable one from the text (the flag it
carries says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ..data.reader import DataError
from ..serving.predict import SOURCES, products_to_score

# Columns a product table must have, with the Arrow type each must be of.
TEXT_COLUMNS = ("designation", "description")
IMAGE_PATH, IMAGE_BYTES = "image_path", "image"  # one of them: a photo's file or its encoded bytes
ROW_INDEX = "row_index"  # optional: the submission CSV's first column (default: the productid)
# Rows read at a time when checking a table (only its key and text columns, never the image bytes).
CHECK_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Products:
    """Checked products: a folder's as an Arrow table (the driver holds them), or a Parquet table's path."""

    rows: int
    source: str  # the X file or the table read
    index: str  # the column whose values index the submission CSV
    image: str  # IMAGE_PATH or IMAGE_BYTES
    table: pa.Table | None = None  # a folder's products, in the X file's order
    path: Path | None = None  # a Parquet table (file or folder) that the executors read themselves


def folder_products(data_dir: str | Path, source: str = "test") -> Products:
    """The products of X_test_update.csv (or X_train) of a challenge folder, as `rakuten predict` reads them."""
    products = products_to_score(data_dir, source)
    table = pa.table(
        {
            ROW_INDEX: pa.array(products["row_index"].to_numpy(), pa.int64()),
            "productid": pa.array(products["productid"].to_numpy(), pa.int64()),
            "designation": pa.array(products["designation"].tolist(), pa.string()),
            "description": pa.array(products["description"].tolist(), pa.string()),
            IMAGE_PATH: pa.array([p if isinstance(p, str) else None for p in products["image_path"]], pa.string()),
        }
    )
    return Products(len(table), SOURCES[source], ROW_INDEX, IMAGE_PATH, table=table)


def _expect(schema: pa.Schema, column: str, check: Callable[[pa.DataType], bool], kind: str, where: str) -> None:
    if column not in schema.names:
        raise DataError(f"{where}: missing column {column!r}; a product table needs {_needed()}")
    if not check(schema.field(column).type):
        raise DataError(f"{where}: column {column!r} is {schema.field(column).type}, not {kind}")


def _needed() -> str:
    return f"productid (integer), {', '.join(TEXT_COLUMNS)} (text), and {IMAGE_PATH} (text) or {IMAGE_BYTES} (binary)"


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_bytes(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def table_products(path: str | Path) -> Products:
    """A Parquet table of products (a file or a folder of files), its columns and rows checked.

    Refused, naming the column: a missing one, one of the wrong type, neither image column. Naming the row
    (its position in the table, from 0): a null productid, a product without a designation, a productid (or
    row_index) that appears twice. Only the key and text columns are read; image bytes stay on disk.
    """
    path = Path(path)
    where = str(path)
    try:
        dataset = ds.dataset(path, format="parquet")
        schema = dataset.schema
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{where}: not a readable Parquet table ({exc})") from exc
    _expect(schema, "productid", pa.types.is_integer, "an integer", where)
    for column in TEXT_COLUMNS:
        _expect(schema, column, _is_text, "text", where)
    if IMAGE_PATH in schema.names:
        image = IMAGE_PATH
        _expect(schema, IMAGE_PATH, _is_text, "text (a file path)", where)
    elif IMAGE_BYTES in schema.names:
        image = IMAGE_BYTES
        _expect(schema, IMAGE_BYTES, _is_bytes, "binary (an encoded image)", where)
    else:
        raise DataError(f"{where}: no {IMAGE_PATH!r} or {IMAGE_BYTES!r} column; a product table needs {_needed()}")
    index = ROW_INDEX if ROW_INDEX in schema.names else "productid"
    if index == ROW_INDEX:
        _expect(schema, ROW_INDEX, pa.types.is_integer, "an integer", where)
    keys = sorted({"productid", index})
    seen: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    rows = 0
    for batch in dataset.to_batches(columns=[*keys, "designation"], batch_size=CHECK_BATCH_ROWS):
        for key in keys:
            values = batch.column(key)
            if values.null_count:
                raise DataError(f"{where}: row {rows + _first(pc.is_null(values))}: {key} is null")
            seen[key].append(values.to_numpy())
        designation = pc.utf8_trim_whitespace(batch.column("designation").fill_null(""))
        empty = pc.equal(pc.utf8_length(designation), 0)
        if pc.any(empty).as_py():
            raise DataError(f"{where}: row {rows + _first(empty)}: empty designation")
        rows += batch.num_rows
    if rows == 0:
        raise DataError(f"{where}: the table holds no product")
    for key in keys:
        values = np.concatenate(seen[key])
        order = np.argsort(values, kind="stable")
        repeated = np.flatnonzero(values[order][1:] == values[order][:-1])
        if repeated.size:
            row = int(order[1:][repeated].min())
            raise DataError(f"{where}: row {row}: {key} {values[row]} appears twice")
    return Products(rows, where, index, image, path=path)


def _first(mask: pa.Array) -> int:
    """Position of the first true value of a boolean array."""
    return int(np.argmax(mask.to_numpy(zero_copy_only=False)))
