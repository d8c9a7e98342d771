"""Spark scoring's checks that need no Spark: a malformed product table is refused, naming its column or row,
before any session starts; a shipped model copy that differs from the store's is refused on the executor."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rakuten_classifier.data.reader import DataError
from rakuten_classifier.registry import MANIFEST_FILE, CorruptModel
from rakuten_classifier.spark import executor, scoring
from rakuten_classifier.spark.inputs import table_products

GOOD = {
    "productid": pa.array([11, 12, 13], pa.int64()),
    "designation": pa.array(["Lampe de chevet", "Jeu de cartes", "Piscine hors-sol"]),
    "description": pa.array(["", None, "ronde, 3 m"]),
    "image_path": pa.array(["/photos/11.jpg", None, "/photos/13.jpg"]),
}


def _table(tmp_path: Path, **changes: pa.Array | None) -> Path:
    """A Parquet table of three products, with ``changes`` to its columns (None drops one)."""
    columns = {**GOOD, **changes}
    path = tmp_path / "products.parquet"
    pq.write_table(pa.table({name: values for name, values in columns.items() if values is not None}), path)
    return path


def test_a_well_formed_table_is_accepted_with_its_index_and_image_column(tmp_path):
    products = table_products(_table(tmp_path))
    assert (products.rows, products.index, products.image) == (3, "productid", "image_path")
    with_bytes = table_products(
        _table(tmp_path, image_path=None, image=pa.array([b"x", None, b"y"]), row_index=pa.array([5, 6, 7]))
    )
    assert (with_bytes.index, with_bytes.image) == ("row_index", "image")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"designation": None}, "missing column 'designation'"),
        ({"description": None}, "missing column 'description'"),
        ({"productid": pa.array(["11", "12", "13"])}, "column 'productid' is string, not an integer"),
        ({"image_path": pa.array([1, 2, 3])}, "column 'image_path' is int64, not text"),
        ({"image_path": None}, "no 'image_path' or 'image' column"),
        ({"image_path": None, "image": pa.array(["a", "b", "c"])}, "column 'image' is string, not binary"),
        ({"productid": pa.array([11, None, 13], pa.int64())}, "row 1: productid is null"),
        ({"productid": pa.array([11, 12, 11], pa.int64())}, "row 2: productid 11 appears twice"),
        ({"designation": pa.array(["Lampe", "  ", "Piscine"])}, "row 1: empty designation"),
        ({"designation": pa.array(["Lampe", "Jeu", None])}, "row 2: empty designation"),
        ({"row_index": pa.array([0, 1, 1])}, "row 2: row_index 1 appears twice"),
    ],
)
def test_a_malformed_table_is_refused_naming_the_column_or_the_row(tmp_path, changes, message):
    with pytest.raises(DataError, match=message):
        table_products(_table(tmp_path, **changes))


def test_an_empty_or_unreadable_table_is_refused(tmp_path):
    with pytest.raises(DataError, match="holds no product"):
        table_products(_table(tmp_path, **{name: values.slice(0, 0) for name, values in GOOD.items()}))
    (tmp_path / "not.parquet").write_text("productid,designation\n1,x\n")
    with pytest.raises(DataError, match="not a readable Parquet table"):
        table_products(tmp_path / "not.parquet")


def test_rakuten_predict_on_spark_refuses_a_malformed_table_before_any_session(tmp_path, monkeypatch, capsys):
    from rakuten_classifier.cli import main

    def no_session(*args, **kwargs):
        raise AssertionError("a Spark session was started for a malformed table")

    monkeypatch.setattr(scoring, "build_session", no_session)
    table = _table(tmp_path, productid=pa.array([11, 12, 11], pa.int64()))
    out = tmp_path / "submission.csv"
    assert main(["predict", "--engine", "spark", "--table", str(table), "--out", str(out), "--json"]) == 2
    assert "row 2: productid 11 appears twice" in capsys.readouterr().err
    assert not out.exists()


def test_spark_options_without_the_spark_engine_are_refused(tmp_path, capsys):
    from rakuten_classifier.cli import main

    out = str(tmp_path / "submission.csv")
    assert main(["predict", "--table", str(_table(tmp_path)), "--out", out]) == 2
    assert "--engine spark" in capsys.readouterr().err
    assert main(["train", "text", "--engine", "spark", "--data-dir", str(tmp_path)]) == 2
    assert "train image" in capsys.readouterr().err


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch) -> tuple[executor.Shipped, Path]:
    """A model folder with its manifest, as SparkFiles would hand it to a task, and what the driver says of it."""
    import hashlib

    folder = tmp_path / "v1"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\x00" * 64)
    (folder / MANIFEST_FILE).write_text(json.dumps({"weights.bin": hashlib.sha256(b"\x00" * 64).hexdigest()}))
    monkeypatch.setattr(executor.SparkFiles, "get", lambda name: str(tmp_path / name))
    digest = hashlib.sha256((folder / MANIFEST_FILE).read_bytes()).hexdigest()
    return executor.Shipped("rakuten-text:v1", "v1", digest), folder


def test_an_executor_uses_a_shipped_copy_only_when_it_matches_the_verified_manifest(shipped_copy):
    shipped, folder = shipped_copy
    assert executor.verified_copy(shipped) == folder
    (folder / "weights.bin").write_bytes(b"\x01" * 64)  # a file changed on its way: refused by its SHA-256
    with pytest.raises(CorruptModel, match=r"content changed: weights\.bin"):
        executor.verified_copy(shipped)
    (folder / MANIFEST_FILE).write_text(json.dumps({"weights.bin": "0" * 64}))  # another manifest than the store's
    with pytest.raises(CorruptModel, match="differs from the store's"):
        executor.verified_copy(shipped)
