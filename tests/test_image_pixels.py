"""The pixels of an image: one numpy/Pillow preprocessing, the same arrays in training and in serving."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rakuten_classifier.config import get_settings
from rakuten_classifier.data.preprocessing import Geometry, image_pixels, load_image
from rakuten_classifier.modeling.image.backbones import BACKBONES
from rakuten_classifier.modeling.image.features import run_network
from rakuten_classifier.modeling.image.model_config import NUM_CLASSES, ImageModelConfig
from rakuten_classifier.modeling.image.onnx_runtime import OnnxImageClassifier
from rakuten_classifier.modeling.image.views import eval_views
from rakuten_classifier.modeling.threads import single_thread_torch_pool
from rakuten_classifier.serving.model_workers import encode_image


def sample_photos(sample_dir: Path) -> list[str]:
    """Real photos of each size the sample holds (500x500, 256x256, 502x482), a few of each."""
    by_size: dict[tuple[int, int], list[str]] = {}
    for path in sorted((sample_dir / "images" / "image_train").glob("*.jpg")):
        with Image.open(path) as image:
            size = image.size
        if len(by_size.setdefault(size, [])) < 3:
            by_size[size].append(str(path))
    assert len(by_size) >= 3, by_size.keys()
    return [path for paths in by_size.values() for path in paths]


class RecordingSession:
    """Wraps the served model's ONNX Runtime session: keeps the pixels the model hands to its graph."""

    def __init__(self, session) -> None:
        self.session = session
        self.seen: list[np.ndarray] = []

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.seen.extend(feeds["pixels"])
        return self.session.run(outputs, feeds)


def test_training_and_serving_feed_identical_pixels_for_real_photos(sample_dir, tmp_path):
    """Training's feature extraction (files; threads or DataLoader) and the served ONNX model (bytes
    decoded by the image worker, views side by side) hand their networks the same float32 arrays."""
    from rakuten_classifier.modeling.image.classifier import ImageClassifier
    from rakuten_classifier.modeling.image.onnx_export import export_onnx
    from rakuten_classifier.modeling.image.onnx_runtime import ONNX_FILE
    from rakuten_classifier.modeling.loading import load_served_image
    from rakuten_classifier.serving.hot_swap import ModelVersions
    from rakuten_classifier.serving.model_workers import image_answers

    paths = sample_photos(sample_dir)
    backbone = get_settings().image_backbone
    geometry = BACKBONES[backbone].geometry
    model = ImageClassifier(ImageModelConfig(backbone=backbone, tta=True))
    model.save(tmp_path)
    export_onnx(model, tmp_path / ONNX_FILE)
    served = load_served_image(tmp_path)
    assert isinstance(served, OnnxImageClassifier)
    served.session = recorder = RecordingSession(served.session)

    versions = ModelVersions("m", served, load_served_image)  # the image worker's table of versions
    items = [{"model": "m", "image": encode_image(Path(path).read_bytes())} for path in paths]
    with single_thread_torch_pool(2) as views:
        answers = image_answers(versions, items, 40_000_000, views)
    assert all(len(answer["proba"]) == NUM_CLASSES for answer in answers)
    unmatched = list(recorder.seen)  # both views' pixels, in the order the two view threads ran
    shape = (len(paths), 3, geometry.crop, geometry.crop)
    for view in eval_views(True):
        # The "network" hands back its input: what feature extraction feeds the backbone, in order.
        by_threads = run_network(torch.nn.Identity(), paths, view, geometry, threads=2, device=torch.device("cpu"))
        by_loader = run_network(torch.nn.Identity(), paths, view, geometry, batch_size=4, device=torch.device("cpu"))
        assert by_threads.dtype == torch.float32
        assert by_threads.shape == shape
        np.testing.assert_array_equal(by_threads.numpy(), by_loader.numpy())
        for trained in by_threads.numpy():
            match = next(i for i, pixels in enumerate(unmatched) if np.array_equal(pixels, trained))
            unmatched.pop(match)
    assert unmatched == []


def test_the_mirror_view_is_the_centre_crop_flipped():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8))
    geometry = Geometry(24, 20, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    centre = image_pixels(image, geometry)
    np.testing.assert_array_equal(image_pixels(image, geometry, mirror=True), centre[..., ::-1])
    assert centre.shape == (3, 20, 20)
    assert centre.dtype == np.float32


def test_pixels_are_resized_short_side_first_then_centre_cropped_and_normalised():
    """A white square on black, right of the centre of a wide image: it lands where resize-then-crop puts it."""
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[10:30, 50:70] = 255
    geometry = Geometry(20, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    out = image_pixels(Image.fromarray(pixels), geometry)
    # 80x40 resized to 40x20 (short side 20), then rows 2..17 and columns 12..27 kept: the square,
    # rows 5..14 and columns 25..34 once resized, sits at rows 3..12 and columns 13..22 of the crop.
    assert out.shape == (3, 16, 16)
    np.testing.assert_allclose(out[:, 4:12, 14:22], 2.0, atol=1e-6)  # (1 - 0.5) / 0.25 inside the square
    np.testing.assert_allclose(out[:, :, :12], -2.0, atol=1e-6)  # (0 - 0.5) / 0.25 left of it
    np.testing.assert_allclose(out[:, 14:, :], -2.0, atol=1e-6)  # and below it


def test_a_decoded_image_and_its_bytes_give_the_same_pixels(sample_dir):
    path = sample_photos(sample_dir)[0]
    geometry = BACKBONES["efficientnet_lite1"].geometry
    from_path = image_pixels(load_image(path), geometry)
    from_bytes = image_pixels(load_image(base64.b64decode(encode_image(Path(path).read_bytes()))), geometry)
    np.testing.assert_array_equal(from_path, from_bytes)
