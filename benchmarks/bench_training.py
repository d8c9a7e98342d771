"""Benchmark: text-model training time at growing sizes, and image feature extraction speed.

    .venv/bin/python benchmarks/bench_training.py [--sizes 1000 10000 84916] [--images 512] [--json]

Text: one fit of the TF-IDF model's pipeline (text_pipeline, scikit-learn's own fit) on the first N rows
of a synthetic catalogue, each size in its own process so that peak memory is that size's own.
Image: MobileNetV2 features of real sample images (decode + resize + forward) through the project's
CPU path and through a DataLoader, against the raw forward pass on already-preprocessed tensors.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "rakuten-sample"
CATALOGUE = Path(tempfile.gettempdir()) / "rakuten-bench-load" / "catalogue-84916"


def _peak_rss_mib() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def text_child(rows: int) -> dict:
    """One text fit (run in a child process)."""
    from rakuten_classifier.categories import label_indices
    from rakuten_classifier.data.preprocessing import product_text
    from rakuten_classifier.data.reader import read_challenge_dir
    from rakuten_classifier.modeling.text import TfidfParams, text_pipeline

    products = read_challenge_dir(CATALOGUE).labelled.head(rows)
    texts = [product_text(d, s) for d, s in zip(products["designation"], products["description"], strict=True)]
    labels = products["prdtypecode"].astype(int).tolist()
    started = time.perf_counter()
    text_pipeline(TfidfParams()).fit(texts, label_indices(labels))
    return {"rows": rows, "fit_s": round(time.perf_counter() - started, 2), "peak_rss_mib": _peak_rss_mib()}


def image_bench(count: int) -> dict:
    """Feature extraction (decode + resize + forward) against the raw forward pass, images per second.

    Raw forward: preprocessed tensors at batch sizes 1 to 64, with one 2-thread torch and with two
    single-threaded torch threads side by side; its best figure is the reference. Extraction: the
    project's CPU path (two single-threaded threads, chunks of 4) and the DataLoader path (2
    decoding processes, batches of 64, 2-thread torch).
    """
    import torch
    from torch import nn

    from rakuten_classifier.data.reader import read_challenge_dir
    from rakuten_classifier.modeling.image.backbones import IMAGENET
    from rakuten_classifier.modeling.image.features import run_network
    from rakuten_classifier.modeling.image.networks import GlobalAvgPool, build_blocks
    from rakuten_classifier.modeling.image.views import View, center_batch
    from rakuten_classifier.modeling.threads import single_thread_torch_pool

    torch.set_num_threads(2)
    paths = read_challenge_dir(SAMPLE).products["image_path"].dropna().head(count).tolist()
    net = nn.Sequential(build_blocks("mobilenet_v2", pretrained=True), GlobalAvgPool()).eval()
    net = net.to(memory_format=torch.channels_last)
    tensors = torch.from_numpy(center_batch(paths, View("center"), IMAGENET)).contiguous(
        memory_format=torch.channels_last
    )
    pool = single_thread_torch_pool(2)

    def forward(start: int, size: int) -> None:
        with torch.inference_mode():
            net(tensors[start : start + size])

    def rate(run) -> float:
        started = time.perf_counter()
        run()
        return round(len(paths) / (time.perf_counter() - started), 1)

    raw: dict[str, dict[int, float]] = {"torch_2_threads": {}, "two_single_threads": {}}
    for size in (1, 2, 4, 8, 16, 64):
        starts = range(0, len(tensors), size)
        forward(0, size)
        raw["torch_2_threads"][size] = rate(
            lambda starts=starts, size=size: list(map(forward, starts, [size] * len(starts)))
        )
        list(pool.map(forward, starts[:4], [size] * 4))
        raw["two_single_threads"][size] = rate(
            lambda starts=starts, size=size: list(pool.map(forward, starts, [size] * len(starts)))
        )
    best_raw = max(rate for layout in raw.values() for rate in layout.values())
    run_network(net, paths[:64], View("center"), IMAGENET, threads=2)  # warm-up
    threads = rate(lambda: run_network(net, paths, View("center"), IMAGENET, threads=2))
    loader = rate(lambda: run_network(net, paths, View("center"), IMAGENET, batch_size=64, num_workers=2))
    return {
        "images": len(paths),
        "raw_forward_images_per_s": raw,
        "best_raw_forward_images_per_s": best_raw,
        "extraction_images_per_s": threads,
        "ratio_to_best_raw": round(threads / best_raw, 3),
        "dataloader_extraction_images_per_s": loader,
        "dataloader_ratio_to_raw_at_batch_64": round(loader / raw["torch_2_threads"][64], 3),
        "peak_rss_mib": _peak_rss_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 84916])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--child-text", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child_text:
        sys.stdout.write(json.dumps(text_child(args.child_text)) + "\n")
        return
    if args.sizes and not (CATALOGUE / "X_train_update.csv").is_file():
        sys.exit(f"{CATALOGUE} missing: run benchmarks/bench_load.py first (it writes the 84,916-row catalogue)")
    text = []
    for rows in args.sizes:
        child = subprocess.run(
            [sys.executable, __file__, "--child-text", str(rows)], capture_output=True, text=True, check=True
        )
        text.append(json.loads(child.stdout.strip().splitlines()[-1]))
    result = {"text": text, "image": image_bench(args.images) if args.images else None}
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        for row in text:
            sys.stdout.write(f"text fit: {row}\n")
        sys.stdout.write(f"image: {result['image']}\n")


if __name__ == "__main__":
    main()
