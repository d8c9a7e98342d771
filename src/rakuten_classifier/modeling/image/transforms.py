"""Image transforms and views: the serving crop, its mirror, and seeded training augmentations.

Every image is decoded with :func:`rakuten_classifier.data.preprocessing.load_image`, so training and
serving decode identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from ...data.preprocessing import load_image


@dataclass(frozen=True)
class Geometry:
    """What a backbone expects: resize the short side, centre-crop, normalise (pixels scaled to 0..1)."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def key(self) -> str:
        """Part of the feature-cache key."""
        return f"{self.crop}|{self.resize}|{self.mean}|{self.std}"


# torchvision's ImageNet models: resize 256, centre crop 224, ImageNet mean and standard deviation.
IMAGENET = Geometry(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def eval_transform(geometry: Geometry) -> T.Compose:
    """Serving/validation transform: resize, centre crop, normalisation."""
    return T.Compose(
        [
            T.ToImage(),
            T.Resize(geometry.resize, antialias=True),
            T.CenterCrop(geometry.crop),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(geometry.mean, geometry.std),
        ]
    )


def train_transform(geometry: Geometry, min_scale: float = 0.35, jitter: float = 0.3) -> T.Compose:
    """Training augmentation: RandomResizedCrop, horizontal flip, ColorJitter."""
    return T.Compose(
        [
            T.ToImage(),
            T.RandomResizedCrop(geometry.crop, scale=(min_scale, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(geometry.mean, geometry.std),
        ]
    )


@dataclass(frozen=True)
class View:
    """One way of looking at every image: the eval crop (optionally mirrored) or a seeded augmentation."""

    kind: str  # "center" or "augment"
    flip: bool = False
    seed: int = 0

    def tag(self) -> str:
        return f"center{'-flip' if self.flip else ''}" if self.kind == "center" else f"augment-{self.seed}"


def eval_views(tta: bool) -> list[View]:
    return [View("center"), View("center", flip=True)] if tta else [View("center")]


class ImageViewDataset(Dataset):
    """Decodes images (paths, bytes or PIL images) with ``load_image`` and applies one view.

    Augmented views are seeded per (view seed, index), so the result does not depend on the number
    of DataLoader workers nor on the order batches are drawn.
    """

    def __init__(self, sources: Sequence, view: View, geometry: Geometry, min_scale: float = 0.35, jitter: float = 0.3):
        self.sources = list(sources)
        self.view = view
        if view.kind == "center":
            self.transform = eval_transform(geometry)
        else:
            self.transform = train_transform(geometry, min_scale, jitter)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> torch.Tensor:
        source = self.sources[index]
        image = load_image(str(source) if isinstance(source, Path) else source)
        if self.view.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.view.kind == "center":
            return self.transform(image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.view.seed * 1_000_003 + index)
            return self.transform(image)
