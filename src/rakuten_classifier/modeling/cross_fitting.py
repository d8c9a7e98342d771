"""K-fold cross-fitting: out-of-fold predictions for every learning row, from models that never saw it.

The temperatures, the fusion combiner and every hyper-parameter are chosen on these out-of-fold
predictions; the production models are then refit on all the learning rows. Pure functions.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from sklearn.model_selection import StratifiedKFold

T = TypeVar("T")


def assign_folds(label_indices: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each row: stratified by category, seeded.

    A category with fewer rows than folds is spread over as many folds as it has rows (scikit-learn
    warns about it; every row still gets exactly one fold).
    """
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, not {folds}")
    labels = np.asarray(label_indices)
    if len(labels) < folds:
        raise ValueError(f"{len(labels)} learning rows cannot be split into {folds} folds")
    assignment = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            assignment[held_out] = fold
    return assignment


def out_of_fold(
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], folds: np.ndarray, columns: int
) -> np.ndarray:
    """(n, columns) predictions where row i comes from ``fit_predict(train_rows, held_out_rows)`` of i's fold.

    ``fit_predict`` fits on the rows given first and returns predictions for the rows given second.
    """
    predictions = np.full((len(folds), columns), np.nan)
    for fold in np.unique(folds):
        held_out = np.flatnonzero(folds == fold)
        predictions[held_out] = fit_predict(np.flatnonzero(folds != fold), held_out)
    return predictions


def parallel_jobs(tasks: int) -> int:
    """Processes for independent fits (folds, the final model): one per core, at most one per fit.

    Each process holds its own fit's data, so memory grows with the cores used: at the challenge's
    size a text fold is about 2.2 GB (docs/benchmarks.md).
    """
    return max(1, min(os.cpu_count() or 1, tasks))


def run_side_by_side(calls: Sequence[Callable[[], T]], jobs: int | None, desc: str, unit: str = "fit") -> list[T]:
    """Each call's result, in order, the calls run in ``jobs`` processes (default :func:`parallel_jobs`)
    with a progress bar that ticks as each finishes."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    results: list[T] = []
    with (
        Parallel(n_jobs=jobs or parallel_jobs(len(calls)), return_as="generator") as parallel,
        tqdm(total=len(calls), desc=desc, unit=unit, disable=None) as progress,
    ):
        for result in parallel(delayed(call)() for call in calls):
            results.append(result)
            progress.update(1)
    return results
