"""The learning curve's subsets (benchmarks/learning_curve.py): nested, stratified and seeded."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from learning_curve import gain_per_doubling, nested_subsets  # benchmarks/ is no package: on the path above

LABELS = np.repeat(np.arange(5), [3, 10, 25, 40, 7])
FRACTIONS = [0.1, 0.2, 0.5, 1.0]


def test_each_fraction_holds_every_smaller_fractions_rows() -> None:
    subsets = nested_subsets(LABELS, FRACTIONS, seed=7)
    for smaller, larger in itertools.pairwise(FRACTIONS):
        assert set(subsets[smaller]) < set(subsets[larger])
    assert list(subsets[1.0]) == list(range(len(LABELS)))


def test_every_category_keeps_its_share_of_rows() -> None:
    subsets = nested_subsets(LABELS, FRACTIONS, seed=7)
    for fraction, rows in subsets.items():
        kept = np.bincount(LABELS[rows], minlength=5)
        expected = [math.ceil(fraction * n) for n in np.bincount(LABELS)]
        assert kept.tolist() == expected


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_rows() -> None:
    first, again = nested_subsets(LABELS, FRACTIONS, seed=7), nested_subsets(LABELS, FRACTIONS, seed=7)
    other = nested_subsets(LABELS, FRACTIONS, seed=8)
    assert all(np.array_equal(first[f], again[f]) for f in FRACTIONS)
    assert not np.array_equal(first[0.5], other[0.5])


def test_a_fraction_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="fractions"):
        nested_subsets(LABELS, [0.0, 0.5], seed=7)


def test_the_gain_per_doubling_is_the_log_slope_times_ln_2() -> None:
    rows = [100, 200, 400, 800]
    assert gain_per_doubling(rows, [0.5, 0.55, 0.6, 0.65]) == 0.05
    assert gain_per_doubling(rows, [0.7, 0.7, 0.7, 0.7]) == 0.0
