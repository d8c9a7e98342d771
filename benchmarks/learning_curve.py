"""Benchmark: the learning curve, out-of-fold weighted F1 of text, image and fused against the learning rows.

    PYTHONPATH=src .venv/bin/python benchmarks/learning_curve.py [--data-dir ../shared/rakuten-sample]
        [--fractions 0.1 0.2 ... 1.0] [--cache-dir /tmp/features] [--out docs/figures/learning-curve.png] [--json]

The sample's learning rows are loaded as training loads them (pipeline/training_data.py); the held-out
test split is never touched. Each fraction is a stratified, seeded and nested subset of the learning rows
(`nested_subsets`: every category keeps ceil(fraction x its rows), the smaller fraction's rows among
them), each row keeping its fold of the full learning set (protocol.py `learning_folds`). On it, the
project's own functions give the out-of-fold probabilities, as `rakuten train all` does with the
default settings: the text model (TF-IDF + the sentence encoder, modeling/text_encoder_fitting.py),
the image model (the frozen backbone's cached features + a cross-fitted linear head,
modeling/image/training.py; rows without a photo have none) and the fusion (modeling/fusion_selection.py's
nested out-of-fold selection; rows without a photo are answered by the text alone).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_FRACTIONS = [round(0.1 * step, 1) for step in range(1, 11)]
MODALITIES = ("text", "image", "fused")
FIT_FROM = 0.3  # the per-doubling gain is fitted on the fractions from here on


def nested_subsets(labels: np.ndarray, fractions: list[float], seed: int) -> dict[float, np.ndarray]:
    """Sorted row indices of each fraction: per category ceil(fraction x its rows), in one seeded order,
    so a larger fraction's rows include every smaller fraction's."""
    if any(not 0 < fraction <= 1 for fraction in fractions):
        raise ValueError(f"fractions must lie in (0, 1], not {fractions}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    orders = {label: rng.permutation(np.flatnonzero(labels == label)) for label in np.unique(labels)}
    return {
        fraction: np.sort(np.concatenate([order[: math.ceil(fraction * len(order))] for order in orders.values()]))
        for fraction in fractions
    }


def gain_per_doubling(rows: list[int], scores: list[float]) -> float:
    """Slope of score = a + b ln(rows), least squares, times ln 2: what doubling the rows added along the curve."""
    slope, _ = np.polyfit(np.log(np.asarray(rows, dtype=float)), np.asarray(scores, dtype=float), 1)
    return round(float(slope * math.log(2)), 3)


def weighted_f1(labels: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    scored = ~np.isnan(proba).any(axis=1)
    predicted = proba[scored].argmax(axis=1)
    return round(float(f1_score(labels[scored], predicted, average="weighted", zero_division=0)), 4)


def curve_point(learning, folds: np.ndarray, settings, cache_dir: Path) -> dict:
    """Out-of-fold weighted F1 of text, image and fused on these learning rows (the default models)."""
    from rakuten_classifier.modeling.fusion import fuse
    from rakuten_classifier.modeling.fusion_selection import select_fusion
    from rakuten_classifier.modeling.image.options import ImageTrainingOptions
    from rakuten_classifier.modeling.image.training import fit_image_model
    from rakuten_classifier.modeling.text import TfidfParams
    from rakuten_classifier.modeling.text_encoder import EncoderParams
    from rakuten_classifier.modeling.text_encoder_fitting import cross_fit_with_encoder

    texts, codes = learning["text"].tolist(), learning["prdtypecode"].astype(int).tolist()
    y = learning["label_index"].to_numpy()
    started = time.perf_counter()
    _, text_oof, _ = cross_fit_with_encoder(
        texts, codes, folds, TfidfParams(), EncoderParams.from_settings(settings), cache_dir, settings.seed
    )
    _, image_oof, _ = fit_image_model(
        learning["image_path"].tolist(), codes, folds, ImageTrainingOptions.from_settings(settings), cache_dir=cache_dir
    )
    name, fitted, selection = select_fusion(
        text_oof, image_oof, y, folds, settings.seed, fit_rows=settings.fusion_fit_rows
    )
    return {
        "rows": len(learning),
        "rows_with_image": int(learning["image_path"].notna().sum()),
        "text": weighted_f1(y, text_oof),
        "image": weighted_f1(y, image_oof),  # the rows with a photo
        "fused": selection[name]["weighted_f1"],  # nested out-of-fold, every row (text alone without a photo)
        "fused_refit_in_sample": weighted_f1(y, fuse(text_oof, image_oof, fitted[name])),
        "combiner": name,
        "seconds": round(time.perf_counter() - started, 1),
    }


def draw(points: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [point["rows"] for point in points]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for key, marker in zip(MODALITIES, ("s", "^", "o"), strict=True):
        label = "image (rows with a photo)" if key == "image" else key
        axes.plot(rows, [point[key] for point in points], marker=marker, label=label)
    axes.set_xlabel("learning rows (sample)")
    axes.set_ylabel("out-of-fold weighted F1")
    axes.set_title("Learning curve: default models, 5-fold out-of-fold")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/rakuten-sample"))
    parser.add_argument("--fractions", type=float, nargs="+", default=DEFAULT_FRACTIONS)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/learning-curve-features"))
    parser.add_argument("--out", type=Path, default=Path("docs/figures/learning-curve.png"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    from rakuten_classifier.config import Settings
    from rakuten_classifier.pipeline.protocol import learning_folds
    from rakuten_classifier.pipeline.training_data import load_training_data

    torch.set_num_threads(2)
    settings = Settings()
    data = load_training_data(args.data_dir, settings=settings)
    learning = data.learning()  # the held-out test split is never touched
    folds = learning_folds(data, settings)
    subsets = nested_subsets(learning["label_index"].to_numpy(), sorted(args.fractions), settings.seed)
    points = []
    for fraction, rows in subsets.items():
        point = {"fraction": fraction, **curve_point(learning.iloc[rows], folds[rows], settings, args.cache_dir)}
        points.append(point)
        sys.stderr.write(json.dumps(point) + "\n")
    draw(points, args.out)
    upper = [p for p in points if p["fraction"] >= FIT_FROM] or points  # past the steep start
    gains = {key: gain_per_doubling([p["rows"] for p in upper], [p[key] for p in upper]) for key in MODALITIES}
    if args.json:
        sys.stdout.write(json.dumps({"points": points, "gain_per_doubling": gains}, indent=1) + "\n")
    else:
        sys.stdout.write(
            "| fraction | learning rows | with a photo | text | image | fused |\n|---|---|---|---|---|---|\n"
        )
        for p in points:
            sys.stdout.write(
                f"| {p['fraction']:.0%} | {p['rows']} | {p['rows_with_image']} | {p['text']} | {p['image']} | "
                f"{p['fused']} |\n"
            )
        sys.stdout.write(f"weighted F1 gained per doubling of the rows (fit from {FIT_FROM:.0%}): {gains}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
