"""Running a network over one view of many images, and the on-disk cache of pooled features.

Features are extracted once per (backbone, weights, view, geometry, image file) and cached in
``.npz`` shards (each image file known by its resolved path, size and mtime), so refitting a head
takes seconds and a retraining after new rows runs the backbone over the new images only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ...data.preprocessing import Geometry
from ..errors import ImageModelError
from ..shard_cache import read_shards, write_shard
from ..threads import single_thread_torch_pool
from .networks import default_device
from .onnx_features import OnnxFeatures
from .transforms import ImageViewDataset
from .views import View

log = logging.getLogger(__name__)

# Part of every cache key: bump it when the stored features' meaning changes (3: centre views resized
# by Pillow, data.preprocessing.image_pixels, instead of torchvision).
FEATURE_CACHE_VERSION = 3
CACHE_FIELDS = ("signatures", "features")  # a shard's keys (image file signatures) and rows


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
# New features are written to the cache every SHARD_IMAGES images, not once at the end: a run killed
# during feature extraction (challenge size: ~85,000 photos, tens of minutes on 2 cores) loses at
# most one shard's work and the next run resumes from the shards written. On 2 cores a shard of
# 2,048 EfficientNet-Lite1 images is about a minute of work; the sample's 931 photos are one shard.
SHARD_IMAGES = 2048


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


def _file_signature(path: str | Path) -> str:
    """``<resolved path>|<size>|<mtime ns>``: a replaced or edited file is a new cache entry."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ImageModelError(f"{path}: image file not readable ({exc})") from exc
    return f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def network_tag(name: str, net: nn.Module) -> str:
    """``<name>-<hash of its weights>``: names a network in cache keys by what it computes, so a frozen
    model loaded from the store finds the features its training extracted with the same backbone."""
    digest = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return f"{name}-{digest.hexdigest()[:16]}"


def feature_cache_prefix(model_tag: str, view: View, geometry: Geometry) -> str:
    """File-name prefix of the cache shards of one network (backbone + weights), view and geometry."""
    digest = hashlib.sha256(f"v{FEATURE_CACHE_VERSION}|{model_tag}|{view.tag()}|{geometry.key()}".encode())
    safe_tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_tag)
    return f"{safe_tag}-{view.tag()}-{digest.hexdigest()[:12]}"


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
    """Pooled features of one view of every image file, (n, d) float32, and whether the cache held them all.

    With a ``cache_dir``, features are cached per image file: only the files no earlier call saw
    (by path, size and mtime) go through the network, and their features are written as new
    shards ``<model_tag>-<view>-<hash>-<hash>.npz`` of up to SHARD_IMAGES images each. Retraining
    after new rows were loaded therefore runs the backbone over the new images alone, and a run
    killed midway resumes from the shards it wrote. On CPU with ``threads``, centre views run on
    ONNX Runtime as in serving (:class:`.onnx_features.OnnxFeatures`), other views on torch.
    """
    files = [str(p) for p in paths]
    with contextlib.ExitStack() as stack:
        onnx: list[OnnxFeatures] = []  # exported on the first images to compute (none on a full cache hit)

        def compute(sources: list[str]) -> np.ndarray:
            if threads and view.kind == "center" and (device or default_device()).type == "cpu":
                if not onnx:
                    onnx.append(stack.enter_context(OnnxFeatures(net, geometry, threads)))
                return onnx[0](sources, view)
            return run_network(
                net,
                sources,
                view,
                geometry,
                batch_size=batch_size,
                num_workers=num_workers,
                threads=threads,
                device=device,
                desc="features",
            ).numpy()

        return _cached_features(files, view, geometry, model_tag, cache_dir, compute)


def _cached_features(
    files: list[str],
    view: View,
    geometry: Geometry,
    model_tag: str,
    cache_dir: str | Path | None,
    compute: Callable[[list[str]], np.ndarray],
) -> tuple[np.ndarray, bool]:
    """:func:`extract_features` with ``compute`` the network over a list of files."""
    if cache_dir is None or not files:
        return compute(files), False
    cache_dir = Path(cache_dir)
    prefix = feature_cache_prefix(model_tag, view, geometry)
    signatures = [_file_signature(p) for p in files]
    cached = read_shards(cache_dir, prefix, set(signatures), CACHE_FIELDS)
    missing = sorted({s for s in signatures if s not in cached})
    if missing:
        where = dict(zip(signatures, files, strict=True))
        already = len(set(signatures)) - len(missing)
        if already:
            log.info(
                "%s features: %d of %d images already cached, computing %d",
                view.tag(),
                already,
                len(set(signatures)),
                len(missing),
            )
        with tqdm(total=len(missing), desc=f"image features [{view.tag()}]", unit="img", disable=None) as progress:
            for start in range(0, len(missing), SHARD_IMAGES):
                part = missing[start : start + SHARD_IMAGES]
                computed = compute([where[s] for s in part])
                cached.update(zip(part, computed, strict=True))
                write_shard(cache_dir, prefix, part, computed, CACHE_FIELDS)
                progress.update(len(part))
        log.info("cached %s features of %d new images in %s", view.tag(), len(missing), cache_dir)
    else:
        log.debug("feature cache hit: %d images, %s", len(files), prefix)
    return np.stack([cached[s] for s in signatures]).astype(np.float32, copy=False), not missing
