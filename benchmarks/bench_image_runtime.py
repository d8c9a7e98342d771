"""Benchmark: the production image model on torch eager and on ONNX Runtime (fp32 and int8), one or two views.

    BENTOML_HOME=... .venv/bin/python benchmarks/bench_image_runtime.py [--data-dir DIR] [--json]

For each runtime x views x precision it reports, on the held-out (`test`) rows of the folder:
the image weighted F1, the fused weighted F1 (with the production text model and fusion), the
largest absolute difference from torch's two-view probabilities, and the speed of the image model
alone: single-product p50 (batch 1) and products/s at batch 4 with the views on two threads (the
service's layout). Int8 is static quantisation calibrated on learning-row images (never test rows):
measured here only (it lost image weighted F1, docs/benchmarks.md), so it lives here, not in the package.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rakuten_classifier.data.preprocessing import Geometry, load_image
from rakuten_classifier.modeling.fusion import fuse
from rakuten_classifier.modeling.image.classifier import ImageClassifier
from rakuten_classifier.modeling.image.onnx_export import export_onnx
from rakuten_classifier.modeling.image.onnx_runtime import OnnxImageClassifier
from rakuten_classifier.modeling.image.views import View, center_batch
from rakuten_classifier.modeling.scores import classification_scores
from rakuten_classifier.modeling.threads import single_thread_torch_pool
from rakuten_classifier.pipeline.scoring import text_proba
from rakuten_classifier.pipeline.training_data import load_training_data
from rakuten_classifier.registry import model_path, production_trio, read_fusion_config

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "rakuten-sample"


def quantize_int8(
    fp32_path: str | Path, out_path: str | Path, calibration: Sequence[str], geometry: Geometry, batch: int = 8
) -> Path:
    """Static int8 quantisation of an exported graph, calibrated on the centre view of ``calibration`` images.

    Weights int8 per channel with ``reduce_range`` (7 bits: AVX2 without VNNI saturates the u8 x s8
    products otherwise), activations uint8, QDQ format.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    sources = list(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.starts = iter(range(0, len(sources), batch))

        def get_next(self) -> dict | None:
            start = next(self.starts, None)
            if start is None:
                return None
            return {"pixels": center_batch(sources[start : start + batch], View("center"), geometry)}

    out_path = Path(out_path)
    prepared = out_path.with_suffix(".prepared.onnx")
    quant_pre_process(str(fp32_path), str(prepared))
    quantize_static(
        str(prepared),
        str(out_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
    )
    prepared.unlink()
    return out_path


def timed(model, images: list, views, repeats: int) -> tuple[float, float]:
    """(single-product p50 ms, products/s at batch 4) of ``model.predict_proba``."""
    for image in images[:3]:
        model.predict_proba([image], view_executor=views)  # warm-up
    singles = []
    for image in images[:repeats]:
        started = time.perf_counter()
        model.predict_proba([image], view_executor=views)
        singles.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    for start in range(0, len(images), 4):
        model.predict_proba(images[start : start + 4], view_executor=views)
    return statistics.median(singles), len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--speed-images", type=int, default=64, help="test images timed per variant")
    parser.add_argument("--calibration-images", type=int, default=128, help="learning images for int8")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    production = production_trio()
    if production is None:
        sys.exit("no production models in BENTOML_HOME: run `rakuten train all` first")
    data = load_training_data(args.data_dir)
    test = data.split("test")
    with_image = test["image_path"].notna().to_numpy()
    paths = test.loc[with_image, "image_path"].tolist()
    labels = test["label_index"].to_numpy()
    images = [load_image(p) for p in paths]
    text = text_proba(production.text, test)
    config = read_fusion_config(production.fusion)
    torch_model = ImageClassifier.load(model_path(production.image), device="cpu")
    views = single_thread_torch_pool(2)

    work = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    fp32 = export_onnx(torch_model, work / "fp32.onnx")
    calibration = data.learning()["image_path"].dropna().tolist()[: args.calibration_images]
    int8 = quantize_int8(fp32, work / "int8.onnx", calibration, torch_model.geometry)

    variants = []
    reference = None
    for tta in (True, False):
        cfg = dataclasses.replace(torch_model.config, tta=tta)
        eager = ImageClassifier.load(model_path(production.image), device="cpu")
        eager.config.tta = tta
        candidates: dict[tuple[str, str], ImageClassifier | OnnxImageClassifier] = {
            ("torch", "fp32"): eager,
            ("onnxruntime", "fp32"): OnnxImageClassifier(cfg, fp32),
            ("onnxruntime", "int8"): OnnxImageClassifier(cfg, int8),
        }
        for (runtime, precision), model in candidates.items():
            proba = np.full((len(test), text.shape[1]), np.nan)
            proba[with_image] = model.predict_proba(images, view_executor=views)
            if reference is None:
                reference = proba
            fused = fuse(text, proba, config)
            p50, per_s = timed(model, images[: args.speed_images], views, min(32, args.speed_images))
            variants.append(
                {
                    "runtime": runtime,
                    "views": 2 if tta else 1,
                    "precision": precision,
                    "image_weighted_f1": classification_scores(labels[with_image], proba[with_image].argmax(axis=1))[
                        "weighted_f1"
                    ],
                    "fused_weighted_f1": classification_scores(labels, fused.argmax(axis=1))["weighted_f1"],
                    "max_abs_diff_vs_torch_2_views": float(np.nanmax(np.abs(proba - reference))),
                    "single_p50_ms": round(p50, 1),
                    "products_per_s_batch4": round(per_s, 1),
                }
            )
    result = {
        "image_model": production.image,
        "backbone": torch_model.config.backbone,
        "test_rows": len(test),
        "test_images": len(paths),
        "torch_threads": torch.get_num_threads(),
        "variants": variants,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['image_model']} ({result['backbone']}), {len(test)} held-out rows, {len(paths)} with an image")
    print("runtime      views precision image wF1 fused wF1 max|dp|   p50 ms  products/s (batch 4)")
    for v in variants:
        print(
            f"{v['runtime']:<12} {v['views']:>5} {v['precision']:<9} {v['image_weighted_f1']:.4f}    "
            f"{v['fused_weighted_f1']:.4f}    {v['max_abs_diff_vs_torch_2_views']:.1e} {v['single_p50_ms']:>7} "
            f"{v['products_per_s_batch4']:>8}"
        )


if __name__ == "__main__":
    main()
