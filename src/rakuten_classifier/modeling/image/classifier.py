"""The image classifier on torch: backbone blocks, global average pooling and a linear head over the 27 categories.

Pooling is of the last block's output, after those of ``pooled_blocks`` (multi-stage features: the
first block of each of the backbone's last three stages, ``BackboneSpec.stages``), concatenated.

``predict_proba(images) -> (n, 27)`` in :data:`~rakuten_classifier.categories.CATEGORY_CODES` order.
Test-time: the backbone's geometry (resize, centre crop, normalisation: ``views.center_pixels``),
optionally averaged with the mirrored image (``tta``); probabilities are temperature-scaled (the
temperature is saved with the model). Training and the pipeline use this class; serving runs the
exported graph (:mod:`.onnx_runtime`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ...data.preprocessing import Geometry
from ..errors import ImageModelError
from .backbones import backbone_spec
from .cam import ClassMapNet
from .features import extract_features, network_tag, run_network
from .model_config import NUM_CLASSES, ImageModelConfig, read_config, write_config
from .networks import FeatureNet, GlobalAvgPool, build_blocks, default_device, pooled_features
from .views import View, center_batch, combine_views, eval_views

WEIGHTS_FILE = "image_model.pt"


class ImageClassifier(nn.Module):
    """Backbone blocks + global average pooling + linear head over the 27 categories."""

    def __init__(self, config: ImageModelConfig, blocks: nn.Sequential | None = None):
        super().__init__()
        spec = backbone_spec(config.backbone)
        self.config = config
        self.blocks = blocks if blocks is not None else build_blocks(config.backbone, pretrained=False)
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

    @torch.inference_mode()
    def class_maps(
        self, images: Sequence[Image.Image], view_executor: Executor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits (n, 27) and class activation maps (n, 27, h, w) of decoded images (:mod:`.cam`), both averaged
        over the test-time views, a mirrored view's map flipped back onto the photo."""
        self.eval()
        net = ClassMapNet(self)
        views = eval_views(self.config.tta)

        def one(view: View) -> tuple[np.ndarray, np.ndarray]:
            pixels = torch.from_numpy(center_batch(list(images), view, self.geometry)).to(self.device)
            logits, maps = net(pixels)
            return logits.double().cpu().numpy(), maps.double().cpu().numpy()

        per_view = list(view_executor.map(one, views)) if view_executor else [one(v) for v in views]
        logits = np.mean([found[0] for found in per_view], axis=0)
        return logits, combine_views([found[1] for found in per_view], [view.flip for view in views])

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
        write_config(self.config, directory)

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str | None = None) -> ImageClassifier:
        """Rebuild a saved model (architecture with weights=None, then the saved state_dict); no network."""
        weights_path = Path(directory) / WEIGHTS_FILE
        config = read_config(directory)
        if not weights_path.is_file():
            raise ImageModelError(f"{directory}: not a saved image model ({WEIGHTS_FILE} is missing)")
        model = cls(config)
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # torch raises RuntimeError, pickle.UnpicklingError, EOFError...
            raise ImageModelError(
                f"{weights_path}: corrupt or incompatible weights ({type(exc).__name__}: {exc})"
            ) from exc
        return model.to(device or default_device()).eval()
