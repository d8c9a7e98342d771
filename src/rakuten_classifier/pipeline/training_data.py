"""The labelled products a training run learns from, with their split, model text and class index."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ..categories import label_indices
from ..config import Settings, get_settings
from ..data.origin import UNKNOWN, combined_origin
from ..data.preprocessing import product_text
from ..data.reader import DataError
from ..data.split import data_fingerprint
from ..data.store import load_products


@dataclass
class TrainingData:
    """Labelled products with their split, model text and class index."""

    products: pd.DataFrame
    fingerprint: str
    # False in the refit on every labelled row (RAKUTEN_REFIT_ALL_ROWS): the test split is learned from too.
    held_out: bool = True

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split ('train', 'val' or 'test')."""
        return self.products[self.products["split"] == name]

    def learning(self) -> pd.DataFrame:
        """The rows models learn from: every labelled row but the held-out test split (all of them in a refit)."""
        if not self.held_out:
            return self.products
        return self.products[self.products["split"] != "test"]

    def held_out_rows(self) -> pd.DataFrame:
        """The rows that score the models and feed the gate: the test split, none in a refit."""
        return self.split("test") if self.held_out else self.products.iloc[:0]

    def every_row_learned(self) -> TrainingData:
        """The same rows for the refit on every labelled row: the test split becomes a learning split."""
        return replace(self, held_out=False)

    @property
    def origin(self) -> str:
        """Where the rows came from (data/origin.py): 'synthetic', 'real', 'mixed' or 'unknown'."""
        if "origin" not in self.products:
            return UNKNOWN
        return combined_origin(None if pd.isna(o) else str(o) for o in self.products["origin"].unique())


def load_training_data(
    data_dir: str | Path | None = None, db_url: str | None = None, settings: Settings | None = None
) -> TrainingData:
    """Labelled products from a challenge folder or the SQL store (default: the configured db)."""
    settings = settings or get_settings()
    if data_dir is None and db_url is None:
        db_url = settings.database_url
    products = load_products(data_dir, db_url, settings.seed, settings.val_fraction, settings.test_fraction)
    labelled = products[products["prdtypecode"].notna()].copy()
    if labelled.empty:
        raise DataError(f"{data_dir or db_url}: no labelled products")
    labelled["text"] = [
        product_text(d, s) for d, s in zip(labelled["designation"], labelled["description"], strict=True)
    ]
    labelled["label_index"] = label_indices(labelled["prdtypecode"])
    labelled["image_path"] = labelled["image_path"].where(labelled["image_path"].notna(), None)
    for split in ("train", "val", "test"):
        if not (labelled["split"] == split).any():
            raise DataError(f"{data_dir or db_url}: the {split!r} split is empty; more labelled rows are needed")
    return TrainingData(products=labelled.reset_index(drop=True), fingerprint=data_fingerprint(labelled))
