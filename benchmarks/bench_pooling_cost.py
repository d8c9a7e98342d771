"""Benchmark: what multi-stage pooled features cost at serving, against the last block's pool alone.

    .venv/bin/python benchmarks/bench_pooling_cost.py [--backbones efficientnet_lite1 ...] [--rounds 3] [--json]

For each backbone, two image models with the same pretrained blocks (heads are random: only the
speed is measured here; accuracy is in benchmarks/accuracy_variants.py): pooled features of the last
block, and of the last block plus the first block of each of the last three stages. Each runs the
service's layout (two test-time views on two single-threaded threads) on torch eager and on ONNX
Runtime, over held-out sample photos: single-product p50 ms and products/s at batch 4. The variants
are timed in alternation, ``--rounds`` times, and the median of the rounds is reported, so a busy
machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from rakuten_classifier.config import Settings
from rakuten_classifier.data.preprocessing import load_image
from rakuten_classifier.modeling.image.backbones import BACKBONES
from rakuten_classifier.modeling.image.classifier import ImageClassifier
from rakuten_classifier.modeling.image.model_config import ImageModelConfig
from rakuten_classifier.modeling.image.networks import build_blocks
from rakuten_classifier.modeling.image.onnx_export import export_onnx
from rakuten_classifier.modeling.image.onnx_runtime import OnnxImageClassifier
from rakuten_classifier.modeling.threads import single_thread_torch_pool
from rakuten_classifier.pipeline.training_data import load_training_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_image_runtime import SAMPLE, timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=SAMPLE)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite1"])
    parser.add_argument("--images", type=int, default=32, help="held-out photos timed per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    test = load_training_data(args.data_dir, settings=Settings()).split("test")
    images = [load_image(path) for path in test["image_path"].dropna().iloc[: args.images]]
    views = single_thread_torch_pool(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones:
            spec = BACKBONES[backbone]
            if not spec.stages:
                parser.error(f"{backbone} declares no stages: nothing to compare")
            blocks = build_blocks(backbone, pretrained=True).eval()
            models: dict[tuple[str, bool], ImageClassifier | OnnxImageClassifier] = {}
            for multi_stage in (False, True):
                pooled_blocks = spec.stage_blocks if multi_stage else []
                torch_model = ImageClassifier(ImageModelConfig(backbone=backbone, pooled_blocks=pooled_blocks), blocks)
                folder = Path(tmp) / f"{backbone}-{multi_stage}"
                torch_model.save(folder)
                export_onnx(torch_model, folder / "image_model.onnx")
                models[("torch", multi_stage)] = torch_model.eval()
                models[("onnxruntime", multi_stage)] = OnnxImageClassifier.load(folder)
            figures: dict = {key: [] for key in models}
            for _ in range(args.rounds):
                for key, model in models.items():
                    figures[key].append(timed(model, images, views, len(images)))
            for (runtime, multi_stage), measured in figures.items():
                rows.append(
                    {
                        "backbone": backbone,
                        "pooled": "last 3 stages + last block" if multi_stage else "last block",
                        "feature_dim": spec.pooled_dim(spec.stage_blocks if multi_stage else []),
                        "runtime": runtime,
                        "p50_ms": round(statistics.median(m[0] for m in measured), 1),
                        "products_per_s_batch4": round(statistics.median(m[1] for m in measured), 1),
                    }
                )
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    else:
        sys.stdout.write("| backbone | pooled | features | runtime | p50 ms (batch 1) | products/s (batch 4) |\n")
        sys.stdout.write("|---|---|---|---|---|---|\n")
        for row in rows:
            sys.stdout.write(
                f"| {row['backbone']} | {row['pooled']} | {row['feature_dim']} | {row['runtime']} | "
                f"{row['p50_ms']} | {row['products_per_s_batch4']} |\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
