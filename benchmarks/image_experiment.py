"""Image-model benchmark on the rakuten sample: test weighted F1 / accuracy and wall time.

Run from the repository root:
    PYTHONPATH=src .venv/bin/python benchmarks/image_experiment.py [--mode frozen|finetune] [--cache-dir DIR]
Trains on split=='train' rows with images, selects/calibrates on 'val', reports on 'test' (never trained on).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from rakuten_classifier.data.reader import read_challenge_dir
from rakuten_classifier.data.split import assign_splits
from rakuten_classifier.modeling.image.options import ImageTrainingOptions
from rakuten_classifier.modeling.image.training import evaluate, fit_image_model

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data", default="../shared/rakuten-sample")
parser.add_argument("--mode", default="frozen", choices=["frozen", "finetune"])
parser.add_argument("--backbone", default="mobilenet_v2")
parser.add_argument("--aug-views", type=int, default=None, help="default: 0 frozen, 2 finetune")
parser.add_argument("--epochs", type=int, default=None, help="finetune only (default 8)")
parser.add_argument("--lr", type=float, default=None, help="finetune only (default 1e-3)")
parser.add_argument("--unfreeze", type=int, default=None)
parser.add_argument("--no-tta", action="store_true")
parser.add_argument("--num-workers", type=int, default=2)
parser.add_argument("--seed", type=int, default=42)
parser.add_argument("--cache-dir", default=None, help="feature cache (default: a fresh temp dir, i.e. a cold run)")
parser.add_argument("--save", default=None, help="save the model there and check that loading reproduces it")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
torch.set_num_threads(2)

data = read_challenge_dir(args.data)
products = data.products
products["split"] = assign_splits(products, seed=42, val_fraction=0.15, test_fraction=0.20)
part = {s: products[products["split"] == s] for s in ("train", "val", "test")}
cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="imgcache-")
started = time.perf_counter()
model, info = fit_image_model(
    part["train"]["image_path"].tolist(),
    part["train"]["prdtypecode"].tolist(),
    part["val"]["image_path"].tolist(),
    part["val"]["prdtypecode"].tolist(),
    ImageTrainingOptions(
        backbone=args.backbone,
        mode=args.mode,
        aug_views=args.aug_views,
        epochs=args.epochs,
        lr=args.lr,
        unfreeze_blocks=args.unfreeze,
        tta=not args.no_tta,
        num_workers=args.num_workers,
        seed=args.seed,
    ),
    cache_dir=cache_dir,
)
train_s = time.perf_counter() - started
started = time.perf_counter()
test = evaluate(
    model, part["test"]["image_path"].tolist(), part["test"]["prdtypecode"].tolist(), num_workers=args.num_workers
)
eval_s = time.perf_counter() - started
result = {
    "config": vars(args),
    "train_wall_s": round(train_s, 1),
    "test_eval_wall_s": round(eval_s, 1),
    "test": test,
    "info": {k: v for k, v in info.items() if k != "history"},
}
if args.save:
    import numpy as np

    from rakuten_classifier.data.preprocessing import load_image
    from rakuten_classifier.modeling.image.classifier import ImageClassifier

    model.save(Path(args.save))
    images = [load_image(p) for p in part["test"]["image_path"].dropna().tolist()[:16]]
    same = np.allclose(
        model.predict_proba(images), ImageClassifier.load(Path(args.save)).predict_proba(images), atol=1e-6
    )
    result["save_load_identical"] = bool(same)
print(json.dumps(result, indent=2))
