"""One-time SQL load: counts, idempotence, atomicity, on SQLite and PostgreSQL."""

import json
from typing import TypedDict

import pytest
import sqlalchemy as sa

from rakuten_classifier.cli import main
from rakuten_classifier.data import store as database
from rakuten_classifier.data.store import load_into_db, read_products


class SplitArgs(TypedDict):
    seed: int
    val_fraction: float
    test_fraction: float


SPLIT_ARGS: SplitArgs = {"seed": 42, "val_fraction": 0.15, "test_fraction": 0.20}


def _check_sample_load(url, sample_dir):
    first = load_into_db(sample_dir, url, **SPLIT_ARGS)
    assert first["rows"] == 1638
    assert first["inserted"] == 1638
    assert first["categories"] == 27
    assert (first["images_found"], first["images_missing"]) == (1159, 479)
    assert sum(first["splits"].values()) == 1638
    second = load_into_db(sample_dir, url, **SPLIT_ARGS)
    assert second["inserted"] == 0
    assert second["splits"] == first["splits"]
    stored = read_products(url)
    assert len(stored) == 1638
    with_image = stored[stored["image_path"].notna()]
    assert len(with_image) == 1159
    assert with_image["image_width"].between(256, 502).all()
    assert (with_image["image_bytes"] > 0).all()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        recorded = conn.execute(sa.select(database.loads).order_by(database.loads.c.id)).mappings().all()
    engine.dispose()
    assert [r["inserted"] for r in recorded] == [1638, 0]
    assert all(r["finished_at"] is not None and r["rows"] == 1638 for r in recorded)


def test_sample_load_sqlite(sample_dir, tmp_path):
    _check_sample_load(f"sqlite:///{tmp_path / 'r.db'}", sample_dir)


@pytest.mark.postgres
def test_sample_load_postgres(sample_dir, pg_url):
    _check_sample_load(pg_url, sample_dir)


def _failing_insert(conn, chunks):
    """Insert the first chunk for real, then fail as a crash midway would."""
    for number, chunk in enumerate(chunks):
        if number == 1:
            raise RuntimeError("simulated crash midway through the load")
        conn.execute(database.products.insert(), chunk)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_failed_load_leaves_database_unchanged(sample_dir, tmp_path, monkeypatch, backend, request):
    url = request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'r.db'}"
    monkeypatch.setattr(database, "INSERT_CHUNK", 500)
    monkeypatch.setattr(database, "_insert_rows", _failing_insert)
    with pytest.raises(RuntimeError, match="simulated crash"):
        load_into_db(sample_dir, url, **SPLIT_ARGS)
    engine = database.get_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(database.products)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(database.loads)).scalar() == 0
    engine.dispose()
    monkeypatch.undo()
    assert load_into_db(sample_dir, url, **SPLIT_ARGS)["inserted"] == 1638


def test_cli_load_json_and_default_sqlite(sample_dir, tmp_path, capsys):
    assert main(["data", "load", "--data-dir", str(sample_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 1638
    assert result["inserted"] == 1638
    assert result["categories"] == 27
    assert result["images_found"] == 1159
    assert result["images_missing"] == 479
    assert set(result["splits"]) >= {"train", "val", "test"}
    assert (tmp_path / "data" / "rakuten.db").is_file()  # default database under the data root
    assert main(["data", "load", "--data-dir", str(sample_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inserted"] == 0


def test_cli_bad_folder_exits_2_with_message(tmp_path, capsys):
    assert main(["data", "load", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err
