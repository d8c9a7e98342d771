"""Challenge-layout reader: real sample counts, clear errors, deterministic split."""

import re

import pandas as pd
import pytest

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.data.reader import DataError, read_challenge_dir, read_labelled_chunks
from rakuten_classifier.data.split import assign_splits


def test_real_sample_counts(sample_dir):
    data = read_challenge_dir(sample_dir)
    assert len(data.products) == 1638
    assert data.products["prdtypecode"].nunique() == 27
    assert (data.images_found, data.images_missing) == (1159, 479)
    assert data.products["image_path"].notna().sum() == 1159


@pytest.fixture
def small_dir(sample_dir, tmp_path):
    """First 60 rows of the sample copied (CSV only) to a writable folder."""
    x = pd.read_csv(sample_dir / "X_train_update.csv", index_col=0, dtype=str, keep_default_na=False).head(60)
    y = pd.read_csv(sample_dir / "Y_train_CVw08PX.csv", index_col=0).head(60)
    x.to_csv(tmp_path / "X_train_update.csv")
    y.to_csv(tmp_path / "Y_train_CVw08PX.csv")
    return tmp_path


def test_labelled_chunks_are_the_whole_reads_labelled_rows_in_order(sample_dir):
    whole = read_challenge_dir(sample_dir).labelled.reset_index(drop=True)
    chunks = list(read_labelled_chunks(sample_dir, 500))
    assert [len(c) for c in chunks] == [500, 500, 500, len(whole) - 1500]
    joined = pd.concat(chunks, ignore_index=True)
    columns = ["row_index", "productid", "imageid", "designation", "description", "prdtypecode", "image_path"]
    pd.testing.assert_frame_equal(joined[columns], whole[columns])


def test_a_bad_row_stops_the_chunks_at_its_own_chunk(small_dir):
    x_path = small_dir / "X_train_update.csv"
    x = pd.read_csv(x_path, index_col=0, dtype=str, keep_default_na=False)
    x.iloc[-1, x.columns.get_loc("productid")] = "not-a-productid"
    x.to_csv(x_path)
    chunks = read_labelled_chunks(small_dir, 50)
    assert len(next(chunks)) == 50  # the rows before the bad one's chunk are read
    with pytest.raises(DataError, match="productid"):
        next(chunks)


def test_missing_images_are_counted_not_fatal(small_dir):
    data = read_challenge_dir(small_dir)
    assert len(data.products) == 60
    assert data.images_found == 0
    assert data.images_missing == 60


def test_missing_column_names_file(small_dir):
    x = pd.read_csv(small_dir / "X_train_update.csv", index_col=0, dtype=str, keep_default_na=False)
    x.drop(columns=["imageid"]).to_csv(small_dir / "X_train_update.csv")
    with pytest.raises(DataError, match=r"X_train_update.csv: missing columns \['imageid'\]"):
        read_challenge_dir(small_dir)


def test_unaligned_labels_are_reported(small_dir):
    y = pd.read_csv(small_dir / "Y_train_CVw08PX.csv", index_col=0)
    y.iloc[:-1].to_csv(small_dir / "Y_train_CVw08PX.csv")
    with pytest.raises(DataError, match=re.escape("not aligned with X_train_update.csv: 59 labels for 60 products")):
        read_challenge_dir(small_dir)


def test_unknown_category_names_row(small_dir):
    y = pd.read_csv(small_dir / "Y_train_CVw08PX.csv", index_col=0)
    row = y.index[7]
    y.loc[row, "prdtypecode"] = 9999
    y.to_csv(small_dir / "Y_train_CVw08PX.csv")
    with pytest.raises(DataError, match=f"row {row}: unknown category code 9999"):
        read_challenge_dir(small_dir)


def test_non_integer_id_names_row(small_dir):
    x = pd.read_csv(small_dir / "X_train_update.csv", index_col=0, dtype=str, keep_default_na=False)
    row = x.index[3]
    x.loc[row, "productid"] = "abc"
    x.to_csv(small_dir / "X_train_update.csv")
    with pytest.raises(DataError, match=f"row {row}: column 'productid' is not an integer"):
        read_challenge_dir(small_dir)


def test_unreadable_csv(small_dir):
    (small_dir / "X_train_update.csv").write_bytes(b"\xff\xfe\x00garbage\x00\xff")
    with pytest.raises(DataError, match=r"X_train_update\.csv: (not UTF-8|unreadable CSV)"):
        read_challenge_dir(small_dir)


def test_missing_label_file(small_dir):
    (small_dir / "Y_train_CVw08PX.csv").unlink()
    with pytest.raises(DataError, match=re.escape("Y_train_CVw08PX.csv: file not found")):
        read_challenge_dir(small_dir)


def test_split_is_stratified_seeded_and_covers_every_category(sample_dir):
    products = read_challenge_dir(sample_dir).products
    splits = assign_splits(products, seed=42, val_fraction=0.15, test_fraction=0.20)
    assert splits.equals(assign_splits(products, seed=42, val_fraction=0.15, test_fraction=0.20))
    assert not splits.equals(assign_splits(products, seed=7, val_fraction=0.15, test_fraction=0.20))
    counts = splits.value_counts()
    assert counts["test"] / len(products) >= 0.20
    assert 0.13 < counts["val"] / len(products) < 0.17
    for split in ("train", "val", "test"):
        assert set(products.loc[splits == split, "prdtypecode"]) == set(CATEGORY_CODES)


def test_split_is_stable_when_rows_are_added(sample_dir):
    products = read_challenge_dir(sample_dir).products
    first = products.iloc[:1000]
    first_splits = assign_splits(first, 42, 0.15, 0.20)
    existing = dict(zip(first["productid"], first_splits, strict=True))
    all_splits = assign_splits(products, 42, 0.15, 0.20, existing=existing)
    assert all_splits.iloc[:1000].tolist() == first_splits.tolist()
    added = all_splits.iloc[1000:]
    assert set(added) == {"train", "val", "test"}
