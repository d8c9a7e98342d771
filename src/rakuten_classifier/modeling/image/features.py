"""Running a network over one view of many images, and the on-disk cache of pooled features.

Features are extracted once per (backbone, weights, view, image set) and cached as ``.npz`` (key:
hash of backbone, weights, view and the sorted image paths with their sizes and mtimes), so refitting
a head takes seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import ImageModelError
from ..threads import single_thread_torch_pool
from .backbones import default_device
from .transforms import Geometry, ImageViewDataset, View

log = logging.getLogger(__name__)

# Part of every cache key: bump it when the stored features' meaning changes.
FEATURE_CACHE_VERSION = 1


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and transform; the main process runs the network


def make_loader(
    dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool = False, seed: int = 0
) -> DataLoader:
    """DataLoader that decodes in ``num_workers`` processes while the main process computes."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers else None,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


# On CPU, deterministic views run faster on threads than through the DataLoader: each thread
# decodes and forwards its own chunks of CPU_CHUNK images with single-threaded torch. Measured on
# 2 cores with MobileNetV2: about 105 images/s against 45 for two decoding processes feeding
# batches of 64 to a 2-thread torch (whose OpenMP team stalls whenever a decoder takes a core),
# and batches of 4 are the backbone's fastest (benchmarks/bench_training.py). Augmented views keep
# the DataLoader: their seeded random transforms use torch's global generator, shared by threads.
CPU_CHUNK = 4


@torch.inference_mode()
def run_network(
    net: nn.Module,
    sources: Sequence,
    view: View,
    geometry: Geometry,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    threads: int = 0,
    device: torch.device | None = None,
    desc: str = "images",
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Run ``net`` (in eval mode) over one view of every image; returns a CPU tensor.

    With ``threads`` > 0 on CPU, a deterministic view runs on that many single-threaded torch
    threads in chunks of ``CPU_CHUNK``; otherwise a DataLoader with ``num_workers`` processes feeds
    batches of ``batch_size``.
    """
    device = device or default_device()
    net.eval().to(device)
    if threads and device.type == "cpu" and view.kind == "center":
        return _run_network_threads(net, ImageViewDataset(sources, view, geometry), threads, desc, out_dtype)
    loader = make_loader(ImageViewDataset(sources, view, geometry), batch_size, num_workers)
    outputs = []
    for batch in tqdm(loader, desc=f"{desc} [{view.tag()}]", leave=False, disable=None):
        batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        outputs.append(net(batch).to("cpu", out_dtype))
    if not outputs:
        raise ImageModelError("no images to process")
    return torch.cat(outputs)


def _run_network_threads(
    net: nn.Module, dataset: ImageViewDataset, threads: int, desc: str, out_dtype: torch.dtype
) -> torch.Tensor:
    if len(dataset) == 0:
        raise ImageModelError("no images to process")

    def chunk(start: int) -> torch.Tensor:
        with torch.inference_mode():  # thread-local: set in the worker thread itself
            batch = torch.stack([dataset[i] for i in range(start, min(start + CPU_CHUNK, len(dataset)))])
            return net(batch.contiguous(memory_format=torch.channels_last)).to(out_dtype)

    starts = range(0, len(dataset), CPU_CHUNK)
    with single_thread_torch_pool(threads) as pool:
        outputs = list(
            tqdm(
                pool.map(chunk, starts),
                total=len(starts),
                desc=f"{desc} [{dataset.view.tag()}]",
                leave=False,
                disable=None,
            )
        )
    return torch.cat(outputs)


def _file_signature(path: str | Path) -> tuple[str, int, int]:
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ImageModelError(f"{path}: image file not readable ({exc})") from exc
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def feature_cache_key(model_tag: str, view: View, geometry: Geometry, paths: Sequence[str | Path]) -> str:
    """Hash of the network (backbone + weights), the view, its geometry and the sorted paths with sizes/mtimes."""
    digest = hashlib.sha256()
    digest.update(f"v{FEATURE_CACHE_VERSION}|{model_tag}|{view.tag()}|{geometry.key()}\n".encode())
    for name, size, mtime in sorted(_file_signature(p) for p in paths):
        digest.update(f"{name}|{size}|{mtime}\n".encode())
    return digest.hexdigest()[:24]


def extract_features(
    net: nn.Module,
    paths: Sequence[str | Path],
    view: View,
    geometry: Geometry,
    *,
    model_tag: str,
    cache_dir: str | Path | None,
    batch_size: int = 64,
    num_workers: int = 0,
    threads: int = 0,
    device: torch.device | None = None,
) -> tuple[np.ndarray, bool]:
    """Pooled features of one view of every image file, (n, d) float32, and whether the cache hit.

    With a ``cache_dir``, features are stored as ``<model_tag>-<view>-<key>.npz`` together with the
    paths they belong to; a later call with the same image set (in any order) reads them back.
    """
    paths = [str(p) for p in paths]
    cache_file = None
    if cache_dir is not None:
        key = feature_cache_key(model_tag, view, geometry, paths)
        safe_tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_tag)
        cache_file = Path(cache_dir) / f"{safe_tag}-{view.tag()}-{key}.npz"
        if cache_file.is_file():
            try:
                with np.load(cache_file, allow_pickle=False) as stored:
                    row = {p: i for i, p in enumerate(stored["paths"].tolist())}
                    features = stored["features"][[row[str(Path(p).resolve())] for p in paths]]
                log.debug("feature cache hit: %s", cache_file)
                return features.astype(np.float32, copy=False), True
            except (OSError, KeyError, ValueError) as exc:
                log.warning("feature cache %s unreadable (%s); recomputing", cache_file, exc)
    features = run_network(
        net,
        paths,
        view,
        geometry,
        batch_size=batch_size,
        num_workers=num_workers,
        threads=threads,
        device=device,
        desc="features",
    ).numpy()
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, features=features, paths=np.array([str(Path(p).resolve()) for p in paths]))
        os.replace(tmp, cache_file)
        log.info("cached %s features of %d images in %s", view.tag(), len(paths), cache_file)
    return features, False
