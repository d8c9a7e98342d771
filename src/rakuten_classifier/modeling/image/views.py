"""Test-time views and the pixels of a centre view, without torch: what serving and feature extraction share.

Every image is decoded with :func:`~rakuten_classifier.data.preprocessing.load_image` and turned into
pixels by :func:`~rakuten_classifier.data.preprocessing.image_pixels`, so training's features and the
served model see the same arrays (tests/test_image_pixels.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...data.preprocessing import Geometry, image_pixels, load_image


@dataclass(frozen=True)
class View:
    """One way of looking at every image: the centre crop (optionally mirrored) or a seeded augmentation."""

    kind: str  # "center" or "augment"
    flip: bool = False
    seed: int = 0

    def tag(self) -> str:
        return f"center{'-flip' if self.flip else ''}" if self.kind == "center" else f"augment-{self.seed}"


def eval_views(tta: bool) -> list[View]:
    """The test-time views: the centre crop, and its mirror with ``tta``."""
    return [View("center"), View("center", flip=True)] if tta else [View("center")]


def center_pixels(source: str | Path | bytes | Image.Image, view: View, geometry: Geometry) -> np.ndarray:
    """(3, crop, crop) float32 pixels of a centre view of an image (path, bytes or PIL image)."""
    if view.kind != "center":
        raise ValueError(f"{view.tag()} is not a centre view")
    image = load_image(str(source) if isinstance(source, Path) else source)
    return image_pixels(image, geometry, mirror=view.flip)


def center_batch(sources: Sequence, view: View, geometry: Geometry) -> np.ndarray:
    """(n, 3, crop, crop) float32 pixels of a centre view of every image."""
    return np.stack([center_pixels(source, view, geometry) for source in sources])
