"""Image side of the multimodal classifier: an ImageNet CNN backbone plus a linear head.

Plain functions in the style of torchvision's ``references/classification`` (``train_one_epoch``,
``evaluate``) around one class, :class:`ImageClassifier`, that holds backbone + head and answers
``predict_proba(images) -> (n, 27)`` in :data:`~rakuten_classifier.categories.CATEGORY_CODES` order.

Two training modes, both built on the same idea: the expensive, frozen part of the network is run
once per image view, and only what is trained is run again.

``frozen``
    The whole backbone is frozen. Pooled features are extracted once per (backbone, weights,
    view set, image set) and cached on disk as ``.npz`` (key: hash of backbone, weights, views and
    the sorted image paths with their sizes and mtimes), so retraining the head takes seconds.
    Training views: centre crop, its mirror and ``aug_views`` random augmentations
    (RandomResizedCrop, flip, ColorJitter); the head is a multinomial logistic regression whose
    regularisation is chosen on the validation split, folded into a ``torch.nn.Linear``.
``finetune``
    The last ``unfreeze_blocks`` blocks are trained. The frozen trunk's outputs for ``aug_views``
    augmented views of each training image are computed once (in memory); each epoch draws one
    view per image and mirrors the feature map at random, so the trained blocks see fresh
    augmentations without re-running the trunk. The best epoch on validation is kept.

Every image is decoded with :func:`rakuten_classifier.preprocessing.load_image` (training and
serving decode identically). Test-time: resize 256, centre crop 224, ImageNet normalisation,
optionally averaged with the mirrored image (``tta``). Probabilities are temperature-scaled on the
validation split (the temperature is saved) because they are fused with the text model's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models import get_model, get_model_weights
from torchvision.transforms import v2 as T
from tqdm.auto import tqdm

from .categories import CATEGORY_CODES
from .calibration import fit_temperature as shared_fit_temperature
from .text_model import ModelLoadError
from .preprocessing import load_image

log = logging.getLogger(__name__)

NUM_CLASSES = len(CATEGORY_CODES)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_SIZE = 256
CROP_SIZE = 224
FORMAT_VERSION = 1
CONFIG_FILE = "image_model.json"
WEIGHTS_FILE = "image_model.pt"
# Logit given to categories never seen in training: their probability is ~0 but never exactly 0
# (a weighted geometric mean with the text model stays finite).
ABSENT_LOGIT = -20.0
DEFAULT_C_GRID = (0.001, 0.003)


class ImageModelError(ModelLoadError):
    """A model that cannot be built, trained, saved or loaded; the message says why."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one torchvision backbone and cut it into an ordered list of blocks."""

    name: str
    weights: str  # member of the torchvision weights enum used when pretrained=True
    feature_dim: int
    default_unfreeze: int  # blocks trained in 'finetune' mode unless told otherwise


BACKBONES: dict[str, BackboneSpec] = {
    # mobilenet_v2's DEFAULT is IMAGENET1K_V2; V1 is the checkpoint shipped in the offline cache.
    "mobilenet_v2": BackboneSpec("mobilenet_v2", "IMAGENET1K_V1", 1280, 2),
    "resnet18": BackboneSpec("resnet18", "IMAGENET1K_V1", 512, 1),
    "resnet50": BackboneSpec("resnet50", "DEFAULT", 2048, 1),
    "efficientnet_b0": BackboneSpec("efficientnet_b0", "IMAGENET1K_V1", 1280, 1),
}


def _spec(backbone: str) -> BackboneSpec:
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise ImageModelError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}") from None


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------------------------
# Backbone


def build_blocks(backbone: str, pretrained: bool) -> nn.Sequential:
    """The backbone's feature extractor as an ``nn.Sequential`` of blocks (no pooling, no head).

    ``pretrained=True`` loads the torchvision ImageNet weights (downloaded once to the torch hub
    cache); ``pretrained=False`` builds random weights and never touches the network.
    """
    spec = _spec(backbone)
    weights = None
    if pretrained:
        try:
            weights = get_model_weights(spec.name)[spec.weights]
        except KeyError as exc:
            raise ImageModelError(f"{spec.name}: torchvision has no weights named {spec.weights!r}") from exc
    try:
        model = get_model(spec.name, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise ImageModelError(
            f"could not load pretrained weights {spec.name}.{spec.weights} ({exc}); without network access, put "
            f"the checkpoint in {torch.hub.get_dir()}/checkpoints or use pretrained=False"
        ) from exc
    if spec.name.startswith("resnet"):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        blocks = nn.Sequential(stem, model.layer1, model.layer2, model.layer3, model.layer4)
    else:  # mobilenet_v2, efficientnet_b0: model.features is already a sequence of blocks
        blocks = nn.Sequential(*model.features)
    return blocks


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


# ----------------------------------------------------------------------------------------------
# Transforms and data loading


def eval_transform() -> T.Compose:
    """Serving/validation transform: resize 256, centre crop 224, ImageNet normalisation."""
    return T.Compose(
        [
            T.ToImage(),
            T.Resize(RESIZE_SIZE, antialias=True),
            T.CenterCrop(CROP_SIZE),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def train_transform(min_scale: float = 0.35, jitter: float = 0.3) -> T.Compose:
    """Training augmentation: RandomResizedCrop 224, horizontal flip, ColorJitter."""
    return T.Compose(
        [
            T.ToImage(),
            T.RandomResizedCrop(CROP_SIZE, scale=(min_scale, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
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

    def __init__(self, sources: Sequence, view: View, min_scale: float = 0.35, jitter: float = 0.3):
        self.sources = list(sources)
        self.view = view
        self.transform = eval_transform() if view.kind == "center" else train_transform(min_scale, jitter)

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


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and transform; the main process runs the network


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
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
        return _run_network_threads(net, ImageViewDataset(sources, view), threads, desc, out_dtype)
    loader = make_loader(ImageViewDataset(sources, view), batch_size, num_workers)
    outputs = []
    for batch in tqdm(loader, desc=f"{desc} [{view.tag()}]", leave=False, disable=None):
        batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        outputs.append(net(batch).to("cpu", out_dtype))
    if not outputs:
        raise ImageModelError("no images to process")
    return torch.cat(outputs)


def _run_network_threads(net: nn.Module, dataset: ImageViewDataset, threads: int, desc: str,
                         out_dtype: torch.dtype) -> torch.Tensor:
    from .inference import single_thread_torch_pool

    if len(dataset) == 0:
        raise ImageModelError("no images to process")

    def chunk(start: int) -> torch.Tensor:
        with torch.inference_mode():  # thread-local: set in the worker thread itself
            batch = torch.stack([dataset[i] for i in range(start, min(start + CPU_CHUNK, len(dataset)))])
            return net(batch.contiguous(memory_format=torch.channels_last)).to(out_dtype)

    starts = range(0, len(dataset), CPU_CHUNK)
    with single_thread_torch_pool(threads) as pool:
        outputs = list(tqdm(pool.map(chunk, starts), total=len(starts), desc=f"{desc} [{dataset.view.tag()}]",
                            leave=False, disable=None))
    return torch.cat(outputs)


# ----------------------------------------------------------------------------------------------
# Feature cache


def _file_signature(path: str | Path) -> tuple[str, int, int]:
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ImageModelError(f"{path}: image file not readable ({exc})") from exc
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def feature_cache_key(model_tag: str, view: View, paths: Sequence[str | Path]) -> str:
    """Hash of the network (backbone + weights), the view and the sorted paths with sizes/mtimes."""
    digest = hashlib.sha256()
    digest.update(f"v{FORMAT_VERSION}|{model_tag}|{view.tag()}|{CROP_SIZE}|{RESIZE_SIZE}\n".encode())
    for name, size, mtime in sorted(_file_signature(p) for p in paths):
        digest.update(f"{name}|{size}|{mtime}\n".encode())
    return digest.hexdigest()[:24]


def extract_features(
    net: nn.Module,
    paths: Sequence[str | Path],
    view: View,
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
        key = feature_cache_key(model_tag, view, paths)
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
        net, paths, view, batch_size=batch_size, num_workers=num_workers, threads=threads, device=device,
        desc="features"
    ).numpy()
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, features=features, paths=np.array([str(Path(p).resolve()) for p in paths]))
        os.replace(tmp, cache_file)
        log.info("cached %s features of %d images in %s", view.tag(), len(paths), cache_file)
    return features, False


# ----------------------------------------------------------------------------------------------
# The classifier


@dataclass
class ImageModelConfig:
    """Everything needed to rebuild an :class:`ImageClassifier` (saved as JSON)."""

    backbone: str = "mobilenet_v2"
    mode: str = "frozen"
    temperature: float = 1.0
    tta: bool = True
    categories: list[int] = field(default_factory=lambda: list(CATEGORY_CODES))
    trained_categories: list[int] = field(default_factory=list)
    format_version: int = FORMAT_VERSION


class ImageClassifier(nn.Module):
    """Backbone blocks + global average pooling + linear head over the 27 categories."""

    def __init__(self, config: ImageModelConfig, blocks: nn.Sequential | None = None):
        super().__init__()
        spec = _spec(config.backbone)
        if list(config.categories) != list(CATEGORY_CODES):
            raise ImageModelError("model categories differ from CATEGORY_CODES; retrain the model")
        self.config = config
        self.blocks = blocks if blocks is not None else build_blocks(config.backbone, pretrained=False)
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(spec.feature_dim, NUM_CLASSES)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits (before temperature)."""
        return self.head(self.features(x))

    def _proba_from_logits(self, logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.double() / self.config.temperature, dim=1).numpy()

    @torch.inference_mode()
    def predict_logits_sources(
        self, sources: Sequence, batch_size: int = 64, num_workers: int = 0, view_executor: Executor | None = None,
    ) -> torch.Tensor:
        """Mean (over TTA views) logits for paths / bytes / PIL images, before temperature.

        With a ``view_executor`` the views run concurrently, one per executor thread (the service
        gives each its own single-threaded torch: see ``inference.single_thread_torch_pool``).
        """
        self.eval()

        def view_logits(view: View) -> torch.Tensor:
            return run_network(self, sources, view, batch_size=batch_size, num_workers=num_workers,
                               device=self.device, desc="predict")

        views = eval_views(self.config.tta)
        per_view = list(view_executor.map(view_logits, views)) if view_executor else [view_logits(v) for v in views]
        return torch.stack(per_view).mean(0)

    def predict_proba(
        self, images: Sequence[Image.Image], batch_size: int = 64, view_executor: Executor | None = None,
    ) -> np.ndarray:
        """(n, 27) probabilities in CATEGORY_CODES order for decoded images."""
        if len(images) == 0:
            return np.zeros((0, NUM_CLASSES))
        return self._proba_from_logits(self.predict_logits_sources(list(images), batch_size=batch_size,
                                                                   view_executor=view_executor))

    def predict_proba_paths(self, paths: Sequence[str | Path], batch_size: int = 64, num_workers: int = 0) -> np.ndarray:
        """Same as :meth:`predict_proba` for image files, decoded in ``num_workers`` processes."""
        if len(paths) == 0:
            return np.zeros((0, NUM_CLASSES))
        return self._proba_from_logits(self.predict_logits_sources(paths, batch_size, num_workers))

    def save(self, directory: str | Path) -> None:
        """Write ``image_model.json`` (config) and ``image_model.pt`` (state_dict, tensors only)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        torch.save(state, directory / WEIGHTS_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str | None = None) -> ImageClassifier:
        """Rebuild a saved model (architecture with weights=None, then the saved state_dict); no network."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise ImageModelError(f"{directory}: not a saved image model ({path.name} is missing)")
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
            config = ImageModelConfig(**raw)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise ImageModelError(f"{config_path}: corrupt model config ({exc})") from exc
        if config.format_version != FORMAT_VERSION:
            raise ImageModelError(f"{config_path}: format version {config.format_version}, expected {FORMAT_VERSION}")
        model = cls(config)
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # torch raises RuntimeError, pickle.UnpicklingError, EOFError...
            raise ImageModelError(f"{weights_path}: corrupt or incompatible weights ({type(exc).__name__}: {exc})") from exc
        return model.to(device or default_device()).eval()


# ----------------------------------------------------------------------------------------------
# Training helpers


def _label_indices(labels: Sequence[int]) -> np.ndarray:
    index = {code: i for i, code in enumerate(CATEGORY_CODES)}
    try:
        return np.array([index[int(code)] for code in labels], dtype=np.int64)
    except KeyError as exc:
        raise ImageModelError(f"unknown category code {exc.args[0]}; expected one of CATEGORY_CODES") from None


def _keep_existing(paths: Sequence, labels: Sequence[int], split: str) -> tuple[list[str], list[int], int]:
    if len(paths) != len(labels):
        raise ImageModelError(f"{split}: {len(paths)} image paths for {len(labels)} labels")
    kept = [
        (str(p), int(y))
        for p, y in zip(paths, labels)
        if p is not None and not (isinstance(p, float) and math.isnan(p)) and str(p) and os.path.isfile(str(p))
    ]
    skipped = len(paths) - len(kept)
    if skipped:
        log.info("%s: %d of %d rows have no image file and are skipped", split, skipped, len(paths))
    return [p for p, _ in kept], [y for _, y in kept], skipped


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature minimising validation negative log-likelihood (bounded to [0.05, 20])."""
    return shared_fit_temperature(np.asarray(logits, dtype=np.float64), np.asarray(targets), bounds=(0.05, 20.0))


def _metrics(logits: np.ndarray | torch.Tensor, targets: np.ndarray, temperature: float = 1.0) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    targets_t = torch.as_tensor(targets)
    predicted = logits_t.argmax(1).numpy()
    return {
        "f1_weighted": float(f1_score(targets, predicted, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(targets, predicted)),
        "log_loss": float(nn.functional.cross_entropy(logits_t / temperature, targets_t)),
        "n": int(len(targets)),
    }


def evaluate(
    model: ImageClassifier, paths: Sequence[str | Path], labels: Sequence[int], *, batch_size: int = 64, num_workers: int = 0
) -> dict[str, float]:
    """Weighted F1, accuracy, log-loss (with the model's temperature) on labelled image files."""
    paths, labels, skipped = _keep_existing(paths, labels, "evaluate")
    logits = model.predict_logits_sources(paths, batch_size, num_workers)
    result = _metrics(logits, _label_indices(labels), model.config.temperature)
    result["skipped_no_image"] = skipped
    return result


class _CachedViews(Dataset):
    """Trunk outputs of several augmented views per image; each draw picks a view and mirrors at random."""

    def __init__(self, views: list[torch.Tensor], targets: torch.Tensor, seed: int):
        self.views, self.targets, self.seed = views, targets, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        x = self.views[int(rng.integers(len(self.views)))][index].float()
        if rng.random() < 0.5:
            x = x.flip(-1)
        return x, self.targets[index]


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader,
    device: torch.device,
    epoch: int,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """One pass over ``data_loader``; returns the mean training loss."""
    model.train()
    total, count = 0.0, 0
    for inputs, targets in tqdm(data_loader, desc=f"epoch {epoch}", leave=False, disable=None):
        inputs = inputs.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        loss = criterion(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        total += loss.detach().item() * len(targets)
        count += len(targets)
    return total / max(count, 1)


def _fit_logistic_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: list[np.ndarray],
    val_y: np.ndarray,
    c_grid: Sequence[float],
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Standardised, class-balanced multinomial logistic regression folded into (W, b) over 27 classes.

    C is chosen on the validation split; categories absent from training get weight 0 and ABSENT_LOGIT.
    """
    from sklearn.linear_model import LogisticRegression

    mean = train_x.mean(0)
    scale = train_x.std(0)
    scale[scale < 1e-6] = 1.0
    xs = (train_x - mean) / scale
    best = None
    for c in c_grid:
        started = time.perf_counter()
        clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed).fit(xs, train_y)
        weight = np.zeros((NUM_CLASSES, train_x.shape[1]))
        bias = np.full(NUM_CLASSES, ABSENT_LOGIT)
        weight[clf.classes_] = clf.coef_ / scale
        bias[clf.classes_] = clf.intercept_ - (clf.coef_ / scale) @ mean
        val_logits = np.mean([x @ weight.T + bias for x in val_x], axis=0)
        # Selected on the temperature-scaled validation log-loss: steadier than F1 on a small split.
        metrics = _metrics(val_logits, val_y, fit_temperature(val_logits, val_y))
        log.info("head C=%g: val weighted F1 %.3f, calibrated log-loss %.3f (%.1fs)", c, metrics["f1_weighted"], metrics["log_loss"], time.perf_counter() - started)
        key = -metrics["log_loss"]
        if best is None or key > best[0]:
            best = (key, c, weight, bias, val_logits)
    _, c, weight, bias, _ = best
    return torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32), {"C": c}


def _set_head_from_logistic(
    model: "ImageClassifier", train_views: list[np.ndarray], y_train: np.ndarray, val_views: list[np.ndarray],
    y_val: np.ndarray, c_grid: Sequence[float], seed: int, info: dict,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the logistic head on pooled features of every view, copy it into ``model.head``, record its info."""
    weight, bias, head_info = _fit_logistic_head(
        np.concatenate(train_views), np.tile(y_train, len(train_views)), val_views, y_val, c_grid, seed
    )
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(bias)
    info.update(head_info)
    return weight, bias


def _set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def fit_image_model(
    train_paths: Sequence,
    train_labels: Sequence[int],
    val_paths: Sequence,
    val_labels: Sequence[int],
    *,
    backbone: str = "mobilenet_v2",
    mode: str = "frozen",
    pretrained: bool = True,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 1e-3,
    cache_dir: str | Path | None = None,
    num_workers: int = 2,
    seed: int = 42,
    aug_views: int | None = None,
    unfreeze_blocks: int | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    tta: bool = True,
    label_smoothing: float = 0.1,
    weight_decay: float = 0.05,
    torch_threads: int | None = 2,
    device: torch.device | str | None = None,
) -> tuple[ImageClassifier, dict]:
    """Train the image classifier; rows whose image is missing (None / absent file) are skipped and counted.

    Returns the model and an info dict (skipped counts, validation metrics, temperature, chosen
    hyper-parameters, timings). Deterministic for a given ``seed`` (on CPU).
    """
    if mode not in ("frozen", "finetune"):
        raise ImageModelError(f"mode must be 'frozen' or 'finetune', not {mode!r}")
    if aug_views is None:  # frozen: augmented views did not help on validation; finetune needs them
        aug_views = 0 if mode == "frozen" else 2
    if aug_views < 0 or (mode == "finetune" and aug_views < 1):
        raise ImageModelError(f"aug_views must be >= 0 (>= 1 in finetune mode), not {aug_views}")
    spec = _spec(backbone)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    device = torch.device(device) if device is not None else default_device()
    started = time.perf_counter()
    _set_seed(seed)

    train_paths, train_labels, train_skipped = _keep_existing(train_paths, train_labels, "train")
    val_paths, val_labels, val_skipped = _keep_existing(val_paths, val_labels, "val")
    if len(train_paths) < 2:
        raise ImageModelError(f"only {len(train_paths)} training rows have an image; cannot train")
    if not val_paths:
        raise ImageModelError("no validation rows have an image; cannot select or calibrate")
    y_train, y_val = _label_indices(train_labels), _label_indices(val_labels)
    if len(np.unique(y_train)) < 2:
        raise ImageModelError("training images cover a single category; cannot train a classifier")
    trained = sorted(int(CATEGORY_CODES[i]) for i in np.unique(y_train))
    log.info(
        "image model %s/%s on %s: %d train images (%d rows skipped, no image), %d val images (%d skipped), %d categories",
        backbone, mode, device, len(train_paths), train_skipped, len(val_paths), val_skipped, len(trained),
    )

    blocks = build_blocks(backbone, pretrained).to(memory_format=torch.channels_last)
    config = ImageModelConfig(backbone=backbone, mode=mode, tta=tta, trained_categories=trained)
    model = ImageClassifier(config, blocks).to(device)
    model_tag = f"{backbone}-{spec.weights if pretrained else f'random{seed}'}"
    train_views = eval_views(True) + [View("augment", seed=seed * 100 + i) for i in range(aug_views)]
    val_views = eval_views(tta)
    loader_args = {"batch_size": batch_size, "num_workers": num_workers, "threads": torch_threads or 0, "device": device}
    info: dict = {
        "backbone": backbone, "mode": mode, "pretrained": pretrained, "device": str(device),
        "train_images": len(train_paths), "val_images": len(val_paths),
        "train_skipped_no_image": train_skipped, "val_skipped_no_image": val_skipped,
        "trained_categories": len(trained), "aug_views": aug_views, "tta": tta, "seed": seed,
    }

    if mode == "frozen":
        feature_net = nn.Sequential(model.blocks, model.pool)
        hits = 0
        tr_feats = []
        for view in train_views:
            feats, hit = extract_features(feature_net, train_paths, view, model_tag=model_tag, cache_dir=cache_dir, **loader_args)
            tr_feats.append(feats)
            hits += hit
        va_feats = []
        for view in val_views:
            feats, hit = extract_features(feature_net, val_paths, view, model_tag=model_tag, cache_dir=cache_dir, **loader_args)
            va_feats.append(feats)
            hits += hit
        info["feature_cache_hits"] = hits
        info["features_s"] = round(time.perf_counter() - started, 2)
        head_started = time.perf_counter()
        weight, bias = _set_head_from_logistic(model, tr_feats, y_train, va_feats, y_val, c_grid, seed, info)
        info["head_s"] = round(time.perf_counter() - head_started, 2)
        val_logits = torch.as_tensor(np.mean([f @ weight.numpy().T + bias.numpy() for f in va_feats], axis=0))
    else:
        val_logits = _finetune(model, train_paths, y_train, val_paths, y_val, train_views, val_views, info,
                               epochs=epochs, lr=lr, seed=seed, unfreeze=unfreeze_blocks or spec.default_unfreeze,
                               label_smoothing=label_smoothing, weight_decay=weight_decay, loader_args=loader_args)

    temperature = fit_temperature(val_logits.numpy(), y_val)
    model.config.temperature = temperature
    info["temperature"] = round(temperature, 4)
    info["val"] = _metrics(val_logits, y_val, temperature)
    info["fit_s"] = round(time.perf_counter() - started, 2)
    log.info("image model trained in %.1fs: val weighted F1 %.3f, accuracy %.3f, temperature %.2f",
             info["fit_s"], info["val"]["f1_weighted"], info["val"]["accuracy"], temperature)
    return model.eval(), info


def _finetune(
    model: ImageClassifier,
    train_paths: list[str],
    y_train: np.ndarray,
    val_paths: list[str],
    y_val: np.ndarray,
    train_views: list[View],
    val_views: list[View],
    info: dict,
    *,
    epochs: int,
    lr: float,
    seed: int,
    unfreeze: int,
    label_smoothing: float,
    weight_decay: float,
    loader_args: dict,
) -> torch.Tensor:
    """Train the last ``unfreeze`` blocks + head on cached trunk outputs; keep the best validation epoch."""
    if not 1 <= unfreeze < len(model.blocks):
        raise ImageModelError(f"unfreeze_blocks must be in [1, {len(model.blocks) - 1}], not {unfreeze}")
    if epochs < 1:
        raise ImageModelError("epochs must be at least 1")
    device = loader_args["device"]
    split = len(model.blocks) - unfreeze
    trunk, tail = model.blocks[:split], model.blocks[split:]
    for p in trunk.parameters():
        p.requires_grad_(False)
    started = time.perf_counter()
    tr = [run_network(trunk, train_paths, v, desc="trunk", out_dtype=torch.float16, **loader_args) for v in train_views]
    va = [run_network(trunk, val_paths, v, desc="trunk", out_dtype=torch.float16, **loader_args) for v in val_views]
    info["trunk_s"] = round(time.perf_counter() - started, 2)

    # Start the head from a logistic regression on the frozen tail's features: training then only refines.
    with torch.inference_mode():
        tail.eval()
        pooled_tr = [model.pool(tail(v.float().to(device))).cpu().numpy() for v in tr]
        pooled_va = [model.pool(tail(v.float().to(device))).cpu().numpy() for v in va]
    _set_head_from_logistic(model, pooled_tr, y_train, pooled_va, y_val, DEFAULT_C_GRID, seed, info)

    trainable = nn.Sequential(tail, model.pool, model.head)
    dataset = _CachedViews(tr, torch.as_tensor(y_train), seed)
    loader = DataLoader(dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(
        [{"params": tail.parameters(), "lr": lr * 0.3}, {"params": model.head.parameters(), "lr": lr}],
        weight_decay=weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[lr * 0.3, lr], total_steps=epochs * len(loader), pct_start=0.2
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def val_logits() -> torch.Tensor:
        trainable.eval()
        with torch.inference_mode():
            return torch.stack(
                [torch.cat([trainable(v[i:i + 256].float().to(device)).cpu() for i in range(0, len(v), 256)]) for v in va]
            ).mean(0)

    best_logits = val_logits()
    best = (_metrics(best_logits, y_val)["log_loss"], -1, copy.deepcopy(trainable.state_dict()))
    history = []
    for epoch in range(epochs):
        dataset.epoch = epoch
        loss = train_one_epoch(trainable, criterion, optimizer, loader, device, epoch, scheduler)
        logits = val_logits()
        metrics = _metrics(logits, y_val)
        history.append({"epoch": epoch, "train_loss": round(loss, 4), **{k: round(v, 4) for k, v in metrics.items() if k != "n"}})
        log.info("epoch %d: train loss %.3f, val weighted F1 %.3f, val log-loss %.3f", epoch, loss, metrics["f1_weighted"], metrics["log_loss"])
        if metrics["log_loss"] < best[0]:
            best = (metrics["log_loss"], epoch, copy.deepcopy(trainable.state_dict()))
            best_logits = logits
    trainable.load_state_dict(best[2])
    for p in model.parameters():
        p.requires_grad_(True)
    info.update({"best_epoch": best[1], "history": history, "unfreeze_blocks": unfreeze, "epochs": epochs, "lr": lr})
    return best_logits
