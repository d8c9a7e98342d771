"""Benchmark: the in-process ceiling of /predict_multimodal (same models, same steps, no HTTP).

    BENTOML_HOME=... .venv/bin/python benchmarks/bench_ceiling.py [--products 64] [--json]

For each batch size (1 to 32) it times what the service does per product: clean the text, text
probabilities, decode the JPEG (shared preprocessing), image probabilities (with its test-time
views), fuse, build the answer, in two layouts: one thread with --threads torch threads, and the
two test-time views on parallel single-threaded torch threads (the service's default). The best
products/s over layouts and batch sizes is the ceiling that served throughput is compared with;
the lowest single-product p50 (batch size 1) is the single-item latency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from rakuten_classifier.data.preprocessing import load_image, product_text
from rakuten_classifier.data.reader import read_challenge_dir
from rakuten_classifier.modeling.loading import image_model_for, text_model_for
from rakuten_classifier.modeling.threads import single_thread_torch_pool
from rakuten_classifier.registry import production_trio, read_fusion_config
from rakuten_classifier.serving.answers import build_answer

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "rakuten-sample"


class LayoutFigures(TypedDict):
    """What one threading layout measured."""

    single_item_p50_ms: float
    single_item_p95_ms: float
    products_per_s_by_batch: dict[int, float]


def classify(products, text_model, image_model, config, views=None) -> list[dict]:
    """The service's work for a batch of (designation, description, jpeg bytes)."""
    texts = [product_text(d, s) for d, s, _ in products]
    images = [load_image(data) for _, _, data in products]
    text_p = text_model.predict_proba(texts)
    image_p = image_model.predict_proba(images, view_executor=views)
    return [build_answer(text_p[i], image_p[i], config, None, 5, {}) for i in range(len(products))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--products", type=int, default=64, help="products per batch-size measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the one-thread layout")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    production = production_trio()
    if production is None:
        sys.exit("no production models in the store (BENTOML_HOME): train first")
    config = read_fusion_config(production.fusion)
    text_model, image_model = text_model_for(production.text), image_model_for(production.image)
    rows = read_challenge_dir(args.data_dir).products.dropna(subset=["image_path"]).head(args.products)
    products = [(r.designation, r.description, Path(r.image_path).read_bytes()) for r in rows.itertuples()]
    layouts: dict[str, LayoutFigures] = {}
    for layout, views in (("torch_threads", None), ("parallel_views", single_thread_torch_pool(2))):
        classify(products[:8], text_model, image_model, config, views)  # warm-up
        single_ms: list[float] = []
        for product in products[:32]:
            started = time.perf_counter()
            classify([product], text_model, image_model, config, views)
            single_ms.append((time.perf_counter() - started) * 1000)
        by_batch: dict[int, float] = {}
        for size in args.batch_sizes:
            started = time.perf_counter()
            for start in range(0, len(products), size):
                classify(products[start : start + size], text_model, image_model, config, views)
            by_batch[size] = round(len(products) / (time.perf_counter() - started), 2)
        layouts[layout] = {
            "single_item_p50_ms": round(statistics.median(single_ms), 1),
            "single_item_p95_ms": round(float(np.percentile(single_ms, 95)), 1),
            "products_per_s_by_batch": by_batch,
        }
    # The ceiling is the best in-process figure of either layout, the latency the lowest p50.
    best_layout, best_batch, ceiling = max(
        (
            (name, size, rate)
            for name, found in layouts.items()
            for size, rate in found["products_per_s_by_batch"].items()
        ),
        key=lambda entry: entry[2],
    )
    result = {
        "models": vars(production),
        "threads": args.threads,
        "layouts": layouts,
        "single_item_p50_ms": min(found["single_item_p50_ms"] for found in layouts.values()),
        "best_layout": best_layout,
        "best_batch": best_batch,
        "ceiling_products_per_s": ceiling,
    }
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        for key, value in result.items():
            sys.stdout.write(f"{key}: {value}\n")


if __name__ == "__main__":
    main()
