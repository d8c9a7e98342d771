"""Choosing the fusion on out-of-fold predictions: every candidate scored by nested cross-validation.

Each candidate (weighted geometric or arithmetic mean, per-class weights, a stacked logistic
regression at a few regularisation strengths) is fitted on the out-of-fold probabilities of all
folds but one and scored on the remaining fold; the best nested score wins and is refit on every
out-of-fold row. Rows without an image are decided by the text for every candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from .cross_fitting import run_side_by_side
from .fusion import PER_CLASS, STACKED, fuse, has_both
from .fusion_fitting import fit_per_class_weights, fit_stacker, learn_text_weight
from .scores import weighted_f1

STACKER_C_GRID = (0.1, 1.0)
# Penalty of the per-class weights towards the single-weight geometric mean (mean log-loss + l2/2 |theta - prior|^2).
PER_CLASS_L2_GRID = (0.001, 0.01)

Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray], dict]


def candidates(seed: int) -> dict[str, Fitter]:
    """Name -> function fitting that combiner's fusion config on (text, image, labels) rows with both modalities."""

    def weighted(method: str) -> Fitter:
        return lambda text, image, labels: {
            "method": method,
            "text_weight": learn_text_weight(text, image, labels, method)[0],
        }

    # A learned combiner stores text_weight 0.5: the neutral point of a request's override (modeling/fusion.py).
    def per_class(l2: float) -> Fitter:
        def fit(text: np.ndarray, image: np.ndarray, labels: np.ndarray) -> dict:
            weight = learn_text_weight(text, image, labels, "geometric")[0]  # the starting point of the fit
            per_class = fit_per_class_weights(text, image, labels, weight, l2)
            return {"method": PER_CLASS, "text_weight": 0.5, "per_class": per_class}

        return fit

    def stacked(c: float) -> Fitter:
        return lambda text, image, labels: {
            "method": STACKED,
            "text_weight": 0.5,
            "stacker": fit_stacker(text, image, labels, c, seed),
        }

    found: dict[str, Fitter] = {"geometric": weighted("geometric"), "arithmetic": weighted("arithmetic")}
    found.update({f"per-class l2={l2:g}": per_class(l2) for l2 in PER_CLASS_L2_GRID})
    found.update({f"stacked C={c:g}": stacked(c) for c in STACKER_C_GRID})
    return found


def _weighted_f1(labels: np.ndarray, proba: np.ndarray) -> float:
    return round(weighted_f1(labels, proba.argmax(axis=1)), 4)


def fitting_rows(rows: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """The mask ``rows`` thinned to a seeded random ``limit`` of its rows when it holds more (None: all of them).

    A combiner has at most 2k^2 + k parameters (1,485 for 27 categories), so a few ten thousand rows fit it
    as well as all of them, while fitting on all of them grew faster than the rows (the selection took 4 s
    at 10,000 products, 35 s at 40,000 and 74 s at 84,916; 33 s there with 20,000): docs/benchmarks.md.
    """
    chosen = np.flatnonzero(rows)
    if limit is None or len(chosen) <= limit:
        return rows
    kept = np.zeros_like(rows)
    kept[np.random.default_rng(seed).choice(chosen, limit, replace=False)] = True
    return kept


def nested_scores(
    text: np.ndarray,
    image: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    fit: Fitter,
    fit_rows: int | None = None,
    seed: int = 0,
) -> dict:
    """Weighted F1 of a candidate whose every row is fused by a combiner fitted without that row's fold
    (on at most ``fit_rows`` of the other folds' rows, :func:`fitting_rows`); every row is scored."""
    both = has_both(text, image)
    fused = np.array(text, dtype=np.float64)
    for fold in np.unique(folds):
        train = fitting_rows(both & (folds != fold), fit_rows, seed + int(fold))
        held_out = both & (folds == fold)
        if held_out.any():
            config = fit(text[train], image[train], labels[train])
            fused[held_out] = fuse(text[held_out], image[held_out], config)
    return {
        "weighted_f1": _weighted_f1(labels, fused),
        "weighted_f1_with_image": _weighted_f1(labels[both], fused[both]),
        "n": len(labels),
        "n_with_image": int(both.sum()),
    }


def _scored_and_fitted(
    text: np.ndarray,
    image: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    fit: Fitter,
    fit_rows: int | None,
    seed: int,
) -> tuple[dict, dict]:
    rows = fitting_rows(has_both(text, image), fit_rows, seed)
    scores = nested_scores(text, image, labels, folds, fit, fit_rows, seed)
    return scores, fit(text[rows], image[rows], labels[rows])


def select_fusion(
    text: np.ndarray,
    image: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    seed: int,
    jobs: int | None = None,
    fit_rows: int | None = None,
) -> tuple[str, dict[str, dict], dict[str, dict]]:
    """(name of the chosen candidate, every candidate refit on the out-of-fold rows with both modalities,
    nested scores of every candidate).

    Ties go to the earlier, simpler candidate. Each fit sees at most ``fit_rows`` rows (a seeded sample,
    :func:`fitting_rows`; None: all). The candidates are scored and refit side by side in ``jobs``
    processes (default: one per core).
    """
    both = has_both(text, image)
    if both.sum() == 0:
        raise ValueError("no learning row has both modalities; cannot choose a fusion")
    fitters = candidates(seed)
    results = run_side_by_side(
        [partial(_scored_and_fitted, text, image, labels, folds, fit, fit_rows, seed) for fit in fitters.values()],
        jobs,
        "fusion candidates (nested CV + refit)",
    )
    table = {name: scores for name, (scores, _) in zip(fitters, results, strict=True)}
    fitted = {name: config for name, (_, config) in zip(fitters, results, strict=True)}
    best = max(table, key=lambda name: table[name]["weighted_f1_with_image"])
    return best, fitted, table
