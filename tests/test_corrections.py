"""Operators' corrections become labelled rows of the store: one transaction each, idempotent per prediction,
split by the held-out rule, counted by `rakuten retrain`; and the /ui gallery shows held-out products."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from rakuten_classifier.config import get_settings
from rakuten_classifier.data import corrections as corrections_module
from rakuten_classifier.data.corrections import Correction, CorrectionConflict, CorrectionError, record_correction
from rakuten_classifier.data.origin import CORRECTION, combined_origin
from rakuten_classifier.data.schema import corrections, get_engine, loads, products
from rakuten_classifier.data.split import split_of_one_row
from rakuten_classifier.data.store import stored_splits
from rakuten_classifier.pipeline.retrain import new_labelled_rows


@pytest.fixture
def photo(sample_dir) -> bytes:
    return next((sample_dir / "images" / "image_train").glob("*.jpg")).read_bytes()


def _rows(table: sa.Table) -> list[dict]:
    engine = get_engine(get_settings().database_url)
    with engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(sa.select(table)).mappings()]
    engine.dispose()
    return rows


def _correction(**fields) -> Correction:
    values = {
        "designation": "Piscine tubulaire 3 m",
        "description": "bâche <b>bleue</b>",
        "prdtypecode": 2583,
        "corrected_by": "operator@test",
    }
    return Correction(**{**values, **fields})


def test_a_correction_stores_the_product_its_photo_and_who_made_it_in_the_store(photo):
    settings = get_settings()
    stored = record_correction(_correction(image=photo, prediction_id="p" * 32))
    assert stored["created"] is True
    (product,) = _rows(products)
    assert product["productid"] == stored["productid"] < 0  # never a catalogue's id
    assert (product["designation"], product["description"]) == ("Piscine tubulaire 3 m", "bâche <b>bleue</b>")
    assert product["prdtypecode"] == 2583
    assert (
        product["split"]
        == stored["split"]
        == split_of_one_row(product["productid"], settings.seed, settings.val_fraction, settings.test_fraction)
    )
    path = Path(product["image_path"])
    assert path.parent == settings.corrections_dir.resolve()
    assert path.read_bytes() == photo
    assert (product["image_bytes"], product["image_width"], product["image_height"]) == (len(photo), 500, 500)
    (load,) = _rows(loads)
    assert (load["id"], load["origin"], load["inserted"]) == (product["load_id"], CORRECTION, 1)
    (who,) = _rows(corrections)
    assert (who["productid"], who["prediction_id"], who["corrected_by"]) == (
        product["productid"],
        "p" * 32,
        "operator@test",
    )
    assert who["created_at"] is not None


def test_correcting_the_same_prediction_again_adds_nothing_and_another_category_is_a_conflict(photo):
    first = record_correction(_correction(image=photo, prediction_id="abc"))
    again = record_correction(_correction(image=photo, prediction_id="abc"))
    assert again["created"] is False
    assert again["productid"] == first["productid"]
    assert len(_rows(products)) == len(_rows(corrections)) == 1
    assert len(list(get_settings().corrections_dir.iterdir())) == 1
    with pytest.raises(CorrectionConflict, match="already corrected to 2583"):
        record_correction(_correction(prdtypecode=10, prediction_id="abc"))
    record_correction(_correction())  # no prediction id: a new row every time
    record_correction(_correction())
    assert len(_rows(products)) == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prdtypecode": 1234}, "unknown category 1234"),
        ({"image": b"GIF89a but not really"}, "not a readable image"),
        ({"designation": " ", "image": None}, "title"),
    ],
)
def test_an_unusable_correction_is_refused_and_leaves_nothing_behind(fields, message):
    with pytest.raises(CorrectionError, match=message) as refused:
        record_correction(_correction(**fields))
    assert not isinstance(refused.value, CorrectionConflict)
    assert _rows(products) == _rows(loads) == []


def test_the_serving_layer_answers_a_conflict_409_and_an_unusable_correction_400():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from rakuten_classifier.serving.corrections import router
    from rakuten_classifier.serving.errors import ClientError, client_error_answer

    app = FastAPI()  # the route and the handler, as service.py wires them; the admin token is the guard's
    app.include_router(router)
    app.add_exception_handler(ClientError, client_error_answer)
    client = TestClient(app)
    form = {"designation": "Piscine tubulaire 3 m", "prdtypecode": "2583", "prediction_id": "abc"}
    assert client.post("/corrections", data=form).status_code == 201
    assert client.post("/corrections", data=form).status_code == 200
    conflict = client.post("/corrections", data={**form, "prdtypecode": "10"})
    assert (conflict.status_code, conflict.json()) == (409, {"error": "prediction abc was already corrected to 2583"})
    unknown = client.post("/corrections", data={**form, "prdtypecode": "1234", "prediction_id": "def"})
    assert unknown.status_code == 400
    assert unknown.json()["error"].startswith("unknown category 1234")
    untitled = client.post("/corrections", data={"designation": " ", "prdtypecode": "2583"})
    assert (untitled.status_code, untitled.json()["error"]) == (
        400,
        "a correction needs the product's title (designation) or its photo",
    )


def test_a_correction_that_fails_half_way_leaves_neither_a_row_nor_a_photo(photo, monkeypatch):
    def broken(*_args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(corrections_module, "split_of_one_row", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        record_correction(_correction(image=photo))
    assert _rows(products) == _rows(loads) == _rows(corrections) == []
    assert list(get_settings().corrections_dir.iterdir()) == []


def test_a_link_where_the_photo_goes_is_replaced_never_written_through(photo, tmp_path):
    target = tmp_path / "outside.txt"
    target.write_text("untouched")
    folder = get_settings().corrections_dir
    folder.mkdir(parents=True)
    # The photo of the first correction (load 1) is correction_1.jpg: a link planted there beforehand.
    (folder / "correction_1.jpg").symlink_to(target)
    stored = record_correction(_correction(image=photo))
    assert stored["productid"] == -1
    assert target.read_text() == "untouched"
    written = folder / "correction_1.jpg"
    assert not written.is_symlink()
    assert written.read_bytes() == photo


def test_a_row_that_arrives_alone_is_held_out_as_often_as_the_split_rule_says():
    splits = [split_of_one_row(productid, 42, 0.15, 0.20) for productid in range(-1, -20_001, -1)]
    shares = {name: splits.count(name) / len(splits) for name in ("test", "val", "train")}
    assert shares["test"] == pytest.approx(0.20, abs=0.01)
    assert shares["val"] == pytest.approx(0.15, abs=0.01)
    assert split_of_one_row(-7, 42, 0.15, 0.20) == split_of_one_row(-7, 42, 0.15, 0.20)
    assert [split_of_one_row(-7, seed, 0.15, 0.20) for seed in range(40)] != [splits[6]] * 40  # seeded


def test_retrain_counts_corrections_among_the_new_labelled_rows(photo):
    url = get_settings().database_url
    first = record_correction(_correction())
    for code in (10, 2583, 1160):
        record_correction(_correction(prdtypecode=code, image=photo))
    counted = new_labelled_rows(url, np.array([first["productid"]]))  # the production models learned the first
    assert (counted["new_labelled_rows"], counted["new_corrected_rows"]) == (3, 3)
    assert (counted["labelled_in_database"], counted["trained_rows"]) == (4, 1)
    assert new_labelled_rows(url, np.array([], dtype=np.int64))["new_corrected_rows"] == 4


def test_corrected_rows_are_real_products_to_the_training_data():
    assert combined_origin(["real", CORRECTION]) == "real"
    assert combined_origin([CORRECTION]) == "real"
    assert combined_origin(["synthetic", CORRECTION]) == "mixed"


@pytest.mark.slow
def test_training_data_from_the_store_holds_the_corrections_with_their_split(sample_dir, photo):
    from rakuten_classifier.data.store import load_into_db
    from rakuten_classifier.pipeline.training_data import load_training_data

    settings = get_settings()
    load_into_db(sample_dir, settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction)
    stored = [record_correction(_correction(prdtypecode=code, image=photo)) for code in (10, 2583, 1160, 40)]
    data = load_training_data(db_url=settings.database_url)
    rows = data.products.set_index("productid").loc[[s["productid"] for s in stored]]
    assert rows["split"].tolist() == [s["split"] for s in stored]
    assert rows["prdtypecode"].tolist() == [10, 2583, 1160, 40]
    assert rows["text"].iloc[0] == "Piscine tubulaire 3 m\nbâche bleue"  # cleaned as every product text
    assert data.origin == "real"


# ---------------------------------------------------------------- the /ui gallery


def test_the_gallery_shows_held_out_products_and_a_stored_split_wins(sample_dir, monkeypatch):
    from rakuten_classifier.data.store import load_into_db
    from rakuten_classifier.pipeline.training_data import load_training_data
    from rakuten_classifier.serving import web

    monkeypatch.setenv("RAKUTEN_UI_EXAMPLES_DIR", str(sample_dir))
    get_settings.cache_clear()
    web._examples_from.cache_clear()
    held_out = set(load_training_data(sample_dir).split("test")["productid"])
    examples = web.examples()
    assert len(examples) == web.EXAMPLE_COUNT
    assert {e["productid"] for e in examples} <= held_out
    assert all(Path(e["image_path"]).is_file() for e in examples)

    # The store says otherwise for the first example: its stored split is the one that counts.
    settings = get_settings()
    load_into_db(sample_dir, settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction)
    engine = get_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(products.update().where(products.c.productid == examples[0]["productid"]).values(split="train"))
    engine.dispose()
    web._examples_from.cache_clear()
    again = web.examples()
    assert examples[0]["productid"] not in {e["productid"] for e in again}
    assert np.isin([e["productid"] for e in again], list(held_out)).all()
    web._examples_from.cache_clear()


def test_the_gallery_reads_a_loaded_folder_only_as_far_as_its_examples(sample_dir, tmp_path, monkeypatch):
    from rakuten_classifier.data.reader import X_TRAIN_FILE, Y_TRAIN_FILE
    from rakuten_classifier.data.store import load_into_db
    from rakuten_classifier.serving import web

    # A copy of the sample whose last line is broken: a whole read of it fails, so examples found in a
    # loaded copy can only come from reading the first products (a challenge-size folder then costs what
    # the sample does).
    folder = tmp_path / "catalogue"
    folder.mkdir()
    (folder / "images").symlink_to(sample_dir / "images")
    for name in (X_TRAIN_FILE, Y_TRAIN_FILE):
        (folder / name).write_bytes((sample_dir / name).read_bytes())
    settings = get_settings()
    load_into_db(folder, settings.database_url, settings.seed, settings.val_fraction, settings.test_fraction)
    with (folder / X_TRAIN_FILE).open("a", encoding="utf-8") as x_file:
        x_file.write('999999,"broken",,not-a-productid,1\n')
    with (folder / Y_TRAIN_FILE).open("a", encoding="utf-8") as y_file:
        y_file.write("999999,10\n")
    assert len(pd.read_csv(folder / X_TRAIN_FILE)) > web.GALLERY_CHUNK_ROWS  # the broken line is in a later chunk

    monkeypatch.setenv("RAKUTEN_UI_EXAMPLES_DIR", str(folder))
    get_settings.cache_clear()
    web._examples_from.cache_clear()
    examples = web.examples()
    stored = stored_splits(settings.database_url)
    assert len(examples) == web.EXAMPLE_COUNT
    assert {stored[e["productid"]] for e in examples} == {"test"}

    # Once the store lacks the folder's products, the split rule needs every row: the broken line is read.
    engine = get_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(products.delete())
    engine.dispose()
    web._examples_from.cache_clear()
    assert web.examples() == []
    web._examples_from.cache_clear()
