"""Benchmark: every text, image and fusion variant of the accuracy work, under the project's own protocol.

    .venv/bin/python benchmarks/accuracy_variants.py [--data-dir ../shared/rakuten-sample]
        [--backbones mobilenet_v2 efficientnet_lite0 efficientnet_lite1 efficientnet_lite2]
        [--cache-dir data/features] [--json]

For each variant: the K-fold out-of-fold weighted F1 on the learning rows (what every choice is made
on), the weighted F1 on the held-out test split (reported only, never used to choose), the fit time
(all K + 1 fits) and the serving cost per product (median of single-product calls, 2 torch threads).
Fusion variants are the candidates `rakuten train fusion` compares (modeling/fusion_selection.py),
each scored by nested cross-validation on the out-of-fold probabilities, for every image backbone.
Image rows are the rows with an image file; rows without one are decided by the text alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from rakuten_classifier.config import Settings
from rakuten_classifier.data.preprocessing import load_image
from rakuten_classifier.modeling.fusion import fuse
from rakuten_classifier.modeling.fusion_selection import candidates, nested_scores
from rakuten_classifier.modeling.image.backbones import BACKBONES
from rakuten_classifier.modeling.image.options import ImageTrainingOptions
from rakuten_classifier.modeling.image.training import fit_image_model
from rakuten_classifier.modeling.text import TfidfParams
from rakuten_classifier.modeling.text_cross_fit import calibrate
from rakuten_classifier.modeling.tfidf_cross_fit import cross_fit_tfidf
from rakuten_classifier.pipeline.protocol import learning_folds
from rakuten_classifier.pipeline.scoring import image_proba_for_paths
from rakuten_classifier.pipeline.training_data import load_training_data

TEXT_VARIANTS = {
    "TF-IDF + LinearSVC C=1 (title once: the old model)": TfidfParams(title_repeat=1),
    "TF-IDF + LinearSVC C=1, title x2 (chosen)": TfidfParams(title_repeat=2),
    "TF-IDF + LinearSVC C=1, title x3": TfidfParams(title_repeat=3),
    "TF-IDF + LinearSVC C=3, title x2": TfidfParams(title_repeat=2, C=3.0),
    "TF-IDF + LinearSVC C=0.3, title x2": TfidfParams(title_repeat=2, C=0.3),
}


def weighted_f1(labels: np.ndarray, proba: np.ndarray) -> float:
    scored = ~np.isnan(proba).any(axis=1)
    predicted = proba[scored].argmax(axis=1)
    return round(float(f1_score(labels[scored], predicted, average="weighted", zero_division=0)), 4)


def median_ms(call, repeats: int = 15) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/rakuten-sample"))
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("data/features"), help="image feature cache")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    settings = Settings()
    data = load_training_data(args.data_dir, settings=settings)
    learning, test = data.learning(), data.split("test")
    folds = learning_folds(data, settings)
    y_learning, y_test = learning["label_index"].to_numpy(), test["label_index"].to_numpy()
    rows: list[dict] = []

    chosen_text = None
    for name, params in TEXT_VARIANTS.items():
        started = time.perf_counter()
        codes = learning["prdtypecode"].astype(int).tolist()
        text_model, oof = calibrate(*cross_fit_tfidf(learning["text"].tolist(), codes, folds, params), codes)
        fit_s = time.perf_counter() - started
        test_proba = text_model.predict_proba(test["text"].tolist())
        one = test["text"].iloc[0]
        rows.append(
            {
                "modality": "text",
                "variant": name,
                "oof_weighted_f1": weighted_f1(y_learning, oof),
                "test_weighted_f1": weighted_f1(y_test, test_proba),
                "fit_s": round(fit_s, 1),
                "ms_per_product": median_ms(lambda m=text_model, t=one: m.predict_proba([t])),
            }
        )
        if params.title_repeat == 2 and params.C == 1.0:
            chosen_text = (oof, test_proba)
    assert chosen_text is not None

    poolings = [(b, m) for b in args.backbones for m in ((False, True) if BACKBONES[b].stages else (False,))]
    for backbone, multi_stage in poolings:
        started = time.perf_counter()
        options = ImageTrainingOptions(backbone=backbone, multi_stage=multi_stage, seed=settings.seed)
        pooled = "last 3 stages + last block" if multi_stage else "last block"
        image_model, oof, info = fit_image_model(
            learning["image_path"].tolist(),
            learning["prdtypecode"].astype(int).tolist(),
            folds,
            options,
            cache_dir=args.cache_dir,
        )
        fit_s = time.perf_counter() - started
        test_proba = image_proba_for_paths(image_model, test["image_path"].tolist())
        picture = load_image(test["image_path"].dropna().iloc[0])
        rows.append(
            {
                "modality": "image",
                "variant": f"{backbone} frozen, {pooled} pooled, centre + mirror, C={info['C']}",
                "oof_weighted_f1": weighted_f1(y_learning, oof),
                "test_weighted_f1": weighted_f1(y_test, test_proba),
                "fit_s": round(fit_s, 1),
                "ms_per_product": median_ms(lambda m=image_model, i=picture: m.predict_proba([i])),
            }
        )
        text_oof, text_test = chosen_text
        both = ~np.isnan(oof).any(axis=1)
        test_both = ~np.isnan(test_proba).any(axis=1)
        for combiner, fit in candidates(settings.seed).items():
            started = time.perf_counter()
            nested = nested_scores(text_oof, oof, y_learning, folds, fit)
            config = fit(text_oof[both], oof[both], y_learning[both])
            fit_s = time.perf_counter() - started
            fused = fuse(text_test, test_proba, config)
            rows.append(
                {
                    "modality": "fused",
                    "variant": f"title x2 text + {backbone} ({pooled}): {combiner}",
                    "oof_weighted_f1": nested["weighted_f1"],
                    "test_weighted_f1": weighted_f1(y_test, fused),
                    "oof_with_image": nested["weighted_f1_with_image"],
                    "test_with_image": weighted_f1(y_test[test_both], fused[test_both]),
                    "text_test_with_image": weighted_f1(y_test[test_both], text_test[test_both]),
                    "fit_s": round(fit_s, 1),
                }
            )

    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    else:
        sys.stdout.write(
            "| modality | variant | out-of-fold weighted F1 | held-out weighted F1 | fit s | ms/product |\n"
        )
        sys.stdout.write("|---|---|---|---|---|---|\n")
        for row in rows:
            sys.stdout.write(
                f"| {row['modality']} | {row['variant']} | {row['oof_weighted_f1']} | "
                f"{row['test_weighted_f1']} | {row['fit_s']} | {row.get('ms_per_product', '')} |\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
