"""Training's image features on CPU: torch eager against ONNX Runtime, photos/s in one run, taking turns.

    .venv/bin/python benchmarks/bench_feature_runtime.py [--backbone efficientnet_lite1] [--images 400]
        [--threads 2] [--rounds 2] [--json]

Builds the default image model's feature network (pretrained backbone, multi-stage pooling, as
`rakuten train image` does) and computes the centre-view features of --images real sample photos
(decode, resize, crop, forward) with --threads threads, no cache: through torch (single-threaded
torch on each thread, chunks of 4: `features.run_network`) and through ONNX Runtime (the network
exported once, one-thread calls side by side: `onnx_features.OnnxFeatures`, export included),
--rounds times each in turns. Prints photos/s per round and runtime, and the largest difference
between the two runtimes' features.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from rakuten_classifier.modeling.image.backbones import backbone_spec
from rakuten_classifier.modeling.image.classifier import ImageClassifier
from rakuten_classifier.modeling.image.features import run_network
from rakuten_classifier.modeling.image.model_config import ImageModelConfig
from rakuten_classifier.modeling.image.networks import build_blocks
from rakuten_classifier.modeling.image.onnx_features import OnnxFeatures
from rakuten_classifier.modeling.image.views import View

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "rakuten-sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite1")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    spec = backbone_spec(args.backbone)
    config = ImageModelConfig(backbone=spec.name, mode="frozen", tta=False, pooled_blocks=list(spec.stage_blocks))
    net = ImageClassifier(config, build_blocks(spec.name, pretrained=True)).feature_net().eval()
    photos = sorted(str(p) for p in (SAMPLE / "images" / "image_train").glob("*.jpg"))[: args.images]
    view = View("center")

    def on_torch() -> np.ndarray:
        return run_network(net, photos, view, spec.geometry, threads=args.threads, desc="torch").numpy()

    def on_onnx() -> np.ndarray:
        with OnnxFeatures(net, spec.geometry, args.threads) as features:
            return features(photos, view)

    rounds: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    outputs = {}
    for _ in range(args.rounds):
        for name, run in (("torch", on_torch), ("onnxruntime", on_onnx)):
            started = time.perf_counter()
            outputs[name] = run()
            rounds[name].append(round(len(photos) / (time.perf_counter() - started), 1))
    result = {
        "backbone": spec.name,
        "images": len(photos),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "photos_per_s": rounds,
        "max_abs_difference": float(np.abs(outputs["torch"] - outputs["onnxruntime"]).max()),
        "feature_dim": int(outputs["torch"].shape[1]),
    }
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        for key, value in result.items():
            sys.stdout.write(f"{key}: {value}\n")


if __name__ == "__main__":
    main()
