"""The deterministic, stratified train/val/test split stored with each product, and the data fingerprint.

A product keeps its split forever: rows added by a later load are split among themselves the same way.
"""

from __future__ import annotations

import hashlib
import math

import pandas as pd

SPLITS = ("train", "val", "test")
UNLABELLED_SPLIT = "unlabelled"


def _split_rank(productid: int, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{productid}".encode()).hexdigest()


def assign_splits(
    products: pd.DataFrame,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    existing: dict[int, str] | None = None,
) -> pd.Series:
    """Seeded stratified train/val/test split that never moves a row once assigned.

    Rows already in ``existing`` (productid -> split) keep their split. New labelled rows are
    stratified per category: ordered by a seeded hash of the productid, the first share goes to
    'test' (held out), the next to 'val', the rest to 'train'; 'val' and 'train' are both learning
    rows, cross-fitted together (pipeline/protocol.py). Unlabelled rows get 'unlabelled'.
    """
    existing = existing or {}
    splits = pd.Series(UNLABELLED_SPLIT, index=products.index, dtype=object)
    known = products["productid"].map(existing)
    splits[known.notna()] = known[known.notna()]
    new = products[known.isna() & products["prdtypecode"].notna()]
    for _, group in new.groupby("prdtypecode"):
        order = sorted(group.index, key=lambda i: _split_rank(int(group.at[i, "productid"]), seed))
        n = len(order)
        n_test = math.ceil(n * test_fraction)  # ceil: the test share is never below the fraction asked
        n_val = round(n * val_fraction)
        if n >= 3:  # every category present in each split, so all of them are scored
            n_test, n_val = max(n_test, 1), max(n_val, 1)
        for position, index in enumerate(order):
            splits[index] = "test" if position < n_test else "val" if position < n_test + n_val else "train"
    return splits


def data_fingerprint(products: pd.DataFrame) -> str:
    """Short hash of the labelled rows and their splits: identifies the data a model saw."""
    columns = ["productid", "prdtypecode", "split"]
    frame = products.loc[products["prdtypecode"].notna(), columns].sort_values("productid")
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def split_of_one_row(productid: int, seed: int, val_fraction: float, test_fraction: float) -> str:
    """The split of a labelled row that arrives alone (an operator's correction): the same seeded hash of
    its productid as :func:`assign_splits` orders rows by, read as a number in [0, 1): 'test' below
    ``test_fraction``, 'val' below ``test_fraction + val_fraction``, else 'train'. One row cannot be
    stratified (alone in its category, :func:`assign_splits` would always hold it out): each is held
    out with probability ``test_fraction``.
    """
    position = int(_split_rank(productid, seed), 16) / 16**64
    return "test" if position < test_fraction else "val" if position < test_fraction + val_fraction else "train"
