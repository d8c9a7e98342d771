"""Where the training data came from is recorded when it is written and loaded, and read back for training."""

import pandas as pd
import pytest
import sqlalchemy as sa

from rakuten_classifier.data.origin import MARKER_FILE, combined_origin, origin_warning
from rakuten_classifier.data.schema import get_engine
from rakuten_classifier.data.store import load_into_db, read_products
from rakuten_classifier.data.synthetic import write_synthetic_catalogue
from rakuten_classifier.pipeline.training_data import load_training_data


def _load(folder, url: str) -> dict:
    return load_into_db(folder, url, seed=42, val_fraction=0.15, test_fraction=0.20)


def _real_rows(sample_dir, folder, rows: int):
    """The sample's first rows in the challenge layout (images shared by a link, nothing copied)."""
    folder.mkdir()
    pd.read_csv(sample_dir / "X_train_update.csv", index_col=0).iloc[:rows].to_csv(folder / "X_train_update.csv")
    pd.read_csv(sample_dir / "Y_train_CVw08PX.csv", index_col=0).iloc[:rows].to_csv(folder / "Y_train_CVw08PX.csv")
    (folder / "images").symlink_to(sample_dir / "images", target_is_directory=True)
    return folder


def test_a_synthetic_load_is_recorded_as_synthetic_and_training_on_it_knows(tmp_path):
    write_synthetic_catalogue(tmp_path / "synth", rows=90, seed=1, image_size=16)
    assert (tmp_path / "synth" / MARKER_FILE).is_file()
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert _load(tmp_path / "synth", url)["origin"] == "synthetic"
    assert set(read_products(url)["origin"]) == {"synthetic"}
    assert load_training_data(db_url=url).origin == "synthetic"
    assert load_training_data(tmp_path / "synth").origin == "synthetic"  # from the folder, no database


def test_real_data_is_recorded_as_real_and_a_store_mixing_both_is_mixed(sample_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert _load(_real_rows(sample_dir, tmp_path / "real", 300), url)["origin"] == "real"
    assert load_training_data(db_url=url).origin == "real"
    assert origin_warning("real") is None
    write_synthetic_catalogue(tmp_path / "synth", rows=90, seed=1, image_size=16)
    _load(tmp_path / "synth", url)
    assert load_training_data(db_url=url).origin == "mixed"
    assert "data/rakuten.db" in str(origin_warning("mixed"))  # the synthetic rows must go


def test_a_store_created_before_origins_were_recorded_gets_the_column_and_says_unknown(tmp_path):
    path = tmp_path / "old.db"
    old = sa.create_engine(f"sqlite:///{path}")
    with old.begin() as conn:  # the loads table as it was before the origin column
        conn.execute(
            sa.text(
                "CREATE TABLE loads (id INTEGER PRIMARY KEY, started_at DATETIME NOT NULL, finished_at DATETIME,"
                " source_dir TEXT NOT NULL, rows INTEGER NOT NULL, inserted INTEGER NOT NULL,"
                " images_found INTEGER NOT NULL, images_missing INTEGER NOT NULL)"
            )
        )
        conn.execute(sa.text("INSERT INTO loads VALUES (1, '2026-01-01 00:00:00', NULL, '/somewhere', 0, 0, 0, 0)"))
    old.dispose()
    engine = get_engine(f"sqlite:///{path}")
    assert "origin" in {column["name"] for column in sa.inspect(engine).get_columns("loads")}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT origin FROM loads")).scalar() is None
    engine.dispose()
    assert combined_origin([None]) == "unknown"
    assert origin_warning("unknown") is None


@pytest.mark.parametrize(
    ("origins", "expected"),
    [
        (["synthetic", "synthetic"], "synthetic"),
        (["real"], "real"),
        (["real", "synthetic"], "mixed"),
        (["synthetic", None], "mixed"),
        (["real", None], "unknown"),
        ([], "unknown"),
    ],
)
def test_the_origin_of_a_set_of_rows(origins, expected):
    assert combined_origin(origins) == expected
