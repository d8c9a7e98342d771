"""The image classifier: backbone blocks, global average pooling and a linear head over the 27 categories.

Pooling is of the last block's output, after those of ``pooled_blocks`` (multi-stage features: the
first block of each of the backbone's last three stages, ``BackboneSpec.stages``), concatenated.

``predict_proba(images) -> (n, 27)`` in :data:`~rakuten_classifier.categories.CATEGORY_CODES` order.
Test-time: resize 256, centre crop 224, ImageNet normalisation, optionally averaged with the
mirrored image (``tta``); probabilities are temperature-scaled (the temperature is saved with the model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ...categories import CATEGORY_CODES
from ..errors import ImageModelError
from .backbones import FeatureNet, GlobalAvgPool, backbone_spec, build_blocks, default_device, pooled_features
from .features import extract_features, network_tag, run_network
from .transforms import Geometry, View, eval_views

NUM_CLASSES = len(CATEGORY_CODES)
FORMAT_VERSION = 1
CONFIG_FILE = "image_model.json"
WEIGHTS_FILE = "image_model.pt"


@dataclass
class ImageModelConfig:
    """Everything needed to rebuild an :class:`ImageClassifier` (saved as JSON)."""

    backbone: str = "mobilenet_v2"
    mode: str = "frozen"
    temperature: float = 1.0
    tta: bool = True
    # Earlier blocks whose pooled outputs precede the last block's (BackboneSpec.stages), saved with the model
    # so that its features never depend on the code's current spec; empty: the last block alone.
    pooled_blocks: list[int] = field(default_factory=list)
    categories: list[int] = field(default_factory=lambda: list(CATEGORY_CODES))
    trained_categories: list[int] = field(default_factory=list)
    format_version: int = FORMAT_VERSION


class ImageClassifier(nn.Module):
    """Backbone blocks + global average pooling + linear head over the 27 categories."""

    def __init__(self, config: ImageModelConfig, blocks: nn.Sequential | None = None):
        super().__init__()
        spec = backbone_spec(config.backbone)
        if list(config.categories) != list(CATEGORY_CODES):
            raise ImageModelError("model categories differ from CATEGORY_CODES; retrain the model")
        self.config = config
        self.blocks = blocks if blocks is not None else build_blocks(config.backbone, pretrained=False)
        if config.pooled_blocks and config.mode != "frozen":
            raise ImageModelError(f"pooled_blocks apply to mode 'frozen' only, not {config.mode!r}")
        self.taps = tuple(config.pooled_blocks)
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(spec.pooled_dim(self.taps), NUM_CLASSES)

    @property
    def geometry(self) -> Geometry:
        """The input its backbone expects (size, normalisation)."""
        return backbone_spec(self.config.backbone).geometry

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.blocks, x, self.taps)

    def feature_net(self) -> FeatureNet:
        """Pixels -> the pooled features the head reads, sharing this model's blocks (for the feature cache)."""
        return FeatureNet(self.blocks, self.taps)

    def feature_tag(self) -> str:
        """The feature-cache key of :meth:`feature_net`: backbone, pooled blocks and a hash of the weights."""
        name = self.config.backbone + (f"+b{'.'.join(map(str, self.taps))}" if self.taps else "")
        # Hashed as a Sequential of the blocks: the keys a last-block model's cache entries had before.
        return network_tag(name, nn.Sequential(self.blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits (before temperature)."""
        return self.head(self.features(x))

    def _proba_from_logits(self, logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.double() / self.config.temperature, dim=1).numpy()

    @torch.inference_mode()
    def predict_logits_sources(
        self,
        sources: Sequence,
        batch_size: int = 64,
        num_workers: int = 0,
        view_executor: Executor | None = None,
    ) -> torch.Tensor:
        """Mean (over TTA views) logits for paths / bytes / PIL images, before temperature.

        With a ``view_executor`` the views run concurrently, one per executor thread (the service
        gives each its own single-threaded torch: see ``modeling.threads.single_thread_torch_pool``).
        """
        self.eval()

        def view_logits(view: View) -> torch.Tensor:
            return run_network(
                self,
                sources,
                view,
                self.geometry,
                batch_size=batch_size,
                num_workers=num_workers,
                device=self.device,
                desc="predict",
            )

        views = eval_views(self.config.tta)
        per_view = list(view_executor.map(view_logits, views)) if view_executor else [view_logits(v) for v in views]
        return torch.stack(per_view).mean(0)

    def predict_proba(
        self,
        images: Sequence[Image.Image],
        batch_size: int = 64,
        view_executor: Executor | None = None,
    ) -> np.ndarray:
        """(n, 27) probabilities in CATEGORY_CODES order for decoded images."""
        if len(images) == 0:
            return np.zeros((0, NUM_CLASSES))
        return self._proba_from_logits(
            self.predict_logits_sources(list(images), batch_size=batch_size, view_executor=view_executor)
        )

    def predict_proba_paths(
        self, paths: Sequence[str | Path], batch_size: int = 64, num_workers: int = 0
    ) -> np.ndarray:
        """Same as :meth:`predict_proba` for image files, decoded in ``num_workers`` processes."""
        if len(paths) == 0:
            return np.zeros((0, NUM_CLASSES))
        return self._proba_from_logits(self.predict_logits_sources(paths, batch_size, num_workers))

    @torch.inference_mode()
    def predict_proba_cached(self, paths: Sequence[str | Path], cache_dir: str | Path) -> np.ndarray:
        """:meth:`predict_proba_paths` of a frozen model, its backbone's features read from (and added to)
        the feature cache: the head over each test-time view's pooled features, averaged as in ``forward``.
        """
        if self.config.mode != "frozen":
            raise ImageModelError(f"cached features need a frozen backbone; this model is {self.config.mode!r}")
        self.eval()
        net, tag = self.feature_net(), self.feature_tag()
        logits = []
        for view in eval_views(self.config.tta):
            features, _ = extract_features(
                net,
                paths,
                view,
                self.geometry,
                model_tag=tag,
                cache_dir=cache_dir,
                threads=torch.get_num_threads(),
                device=self.device,
            )
            logits.append(self.head(torch.from_numpy(features).to(self.device)).to("cpu"))
        return self._proba_from_logits(torch.stack(logits).mean(0))

    def save(self, directory: str | Path) -> None:
        """Write ``image_model.json`` (config) and ``image_model.pt`` (state_dict, tensors only)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        torch.save(state, directory / WEIGHTS_FILE)
        config = asdict(self.config)
        if not config["pooled_blocks"]:
            del config["pooled_blocks"]  # a last-block model stays readable by code from before the field
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")

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
            raise ImageModelError(
                f"{weights_path}: corrupt or incompatible weights ({type(exc).__name__}: {exc})"
            ) from exc
        return model.to(device or default_device()).eval()
