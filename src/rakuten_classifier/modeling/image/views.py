"""Test-time views, without torch: the pixels of a centre view, the part of the photo it sees, and the views'
class maps averaged back onto the photo. What serving, feature extraction and both image runtimes share.

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


def combine_views(maps: list[np.ndarray], mirrored: list[bool]) -> np.ndarray:
    """Class maps (27, h, w) of the test-time views of one image, averaged on the image's own orientation
    (a mirrored view's map flipped back), as the logits are averaged over the views."""
    return np.mean([m[..., ::-1] if flip else m for m, flip in zip(maps, mirrored, strict=True)], axis=0)


def crop_box(width: int, height: int, resize: int, crop: int) -> list[float]:
    """The part of a width x height photo a centre view sees (short side resized to ``resize``, then
    centre-cropped to ``crop``), as [left, top, right, bottom] fractions of the photo."""
    scale = resize / min(width, height)
    seen_w, seen_h = min(1.0, crop / (width * scale)), min(1.0, crop / (height * scale))
    return [
        round((1 - seen_w) / 2, 4),
        round((1 - seen_h) / 2, 4),
        round((1 + seen_w) / 2, 4),
        round((1 + seen_h) / 2, 4),
    ]
