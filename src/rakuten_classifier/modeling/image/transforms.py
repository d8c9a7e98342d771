"""Training's torch side of the views: seeded augmentations (torchvision) and a Dataset over any view.

Centre views are :func:`.views.center_pixels` (numpy and Pillow, shared with serving); only the
random augmentations of training run on torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from ...data.preprocessing import Geometry, load_image
from .views import View, center_pixels

if TYPE_CHECKING:
    from torchvision.transforms import v2 as T


def train_transform(geometry: Geometry, min_scale: float = 0.35, jitter: float = 0.3) -> T.Compose:
    """Training augmentation: RandomResizedCrop, horizontal flip, ColorJitter."""
    from torchvision.transforms import v2 as T  # only augmented views need it (networks.py says what it costs)

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


class ImageViewDataset(Dataset):
    """Decodes images (paths, bytes or PIL images) with ``load_image`` and applies one view.

    Augmented views are seeded per (view seed, index), so the result does not depend on the number
    of DataLoader workers nor on the order batches are drawn.
    """

    def __init__(self, sources: Sequence, view: View, geometry: Geometry, min_scale: float = 0.35, jitter: float = 0.3):
        self.sources = list(sources)
        self.view = view
        self.geometry = geometry
        self.augment = train_transform(geometry, min_scale, jitter) if view.kind != "center" else None

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> torch.Tensor:
        source = self.sources[index]
        if self.augment is None:
            return torch.from_numpy(center_pixels(source, self.view, self.geometry))
        image = load_image(str(source) if isinstance(source, Path) else source)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.view.seed * 1_000_003 + index)
            return self.augment(image)
