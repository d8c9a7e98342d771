"""The image model's training options: one typed dataclass, every field used or refused in each mode."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from ...config import Settings
from ..errors import ImageModelError
from .backbones import backbone_spec
from .model_config import TEST_TIME_MIRROR

MODES = ("frozen", "finetune")
DEFAULT_C_GRID = (0.001, 0.003)
# Fields that only the 'finetune' mode reads; in 'frozen' mode setting one is an error, not a no-op.
FINETUNE_ONLY = ("epochs", "lr", "unfreeze_blocks", "label_smoothing", "weight_decay")


@dataclass(frozen=True)
class ImageTrainingOptions:
    """How `fit_image_model` trains; ``None`` on a finetune-only field means "the mode's default".

    The backbone and the seed have no default here: `from_settings` takes the settings' (``image_backbone``,
    ``seed``).
    """

    backbone: str
    mode: str = "frozen"
    pretrained: bool = True
    # Test-time augmentation: average the centre crop with its mirror (also at serving; the mirror is
    # always a training view). Off by default: see model_config.TEST_TIME_MIRROR.
    tta: bool = TEST_TIME_MIRROR
    # The mirror as a second training view (always with ``tta``). Off by default: on the sample it
    # added nothing out-of-fold (fused weighted F1 0.7683 without it, 0.7679 with it; image 0.4437
    # against 0.4315; docs/accuracy.md) and it doubles the photos through the backbone, the largest
    # step of training at the challenge's size.
    train_mirror: bool = False
    # Pool the first block of each of the backbone's last three stages too (BackboneSpec.stages), not only
    # the last block (None: on in 'frozen' mode for a backbone that declares stages, as MobileNetV2 and
    # EfficientNet-Lite0/1/2 do; 'finetune' trains the last blocks on the last block's pooled output alone).
    multi_stage: bool | None = None
    # Seeded augmented training views besides the centre crop and its mirror (None: 0 frozen, 2 finetune;
    # in 'frozen' mode augmented views did not help on a validation split, before out-of-fold fitting).
    aug_views: int | None = None
    # Inverse regularisation strengths of the logistic head: 'frozen' keeps the one whose out-of-fold
    # log-loss is lowest, 'finetune' starts its head from the smallest.
    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    seed: int = field(kw_only=True)
    # CPU threads of the forward passes (0: torch's default; default: one per core); a CPU centre-crop
    # view runs on that many single-threaded ONNX Runtime calls side by side, anything else on a DataLoader.
    torch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    # DataLoader decoding processes and batch size (augmented views, or a GPU).
    num_workers: int = 2
    batch_size: int = 64
    device: str | None = None
    epochs: int | None = None
    lr: float | None = None
    unfreeze_blocks: int | None = None
    label_smoothing: float | None = None
    weight_decay: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **given: Any) -> ImageTrainingOptions:
        """The fields ``given``, the backbone and seed from ``settings`` unless given, the rest the defaults."""
        return cls(**{"backbone": settings.image_backbone, "seed": settings.seed, **given})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ImageModelError(f"mode must be one of {MODES}, not {self.mode!r}")
        backbone_spec(self.backbone)  # an unknown backbone fails here, with the known ones listed
        if self.mode == "frozen":
            given = [name for name in FINETUNE_ONLY if getattr(self, name) is not None]
            if given:
                raise ImageModelError(
                    f"{', '.join(given)} only apply to mode 'finetune'; the frozen mode trains "
                    "no network weights (drop them, or choose --image-mode finetune)"
                )
        if self.multi_stage and self.mode == "finetune":
            raise ImageModelError("multi_stage features apply to mode 'frozen' only")
        if self.multi_stage and not backbone_spec(self.backbone).stages:
            raise ImageModelError(f"{self.backbone} has no multi-stage features (multi_stage=False)")
        if self.resolved_aug_views < 0 or (self.mode == "finetune" and self.resolved_aug_views < 1):
            raise ImageModelError(f"aug_views must be >= 0 (>= 1 in finetune mode), not {self.aug_views}")
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ImageModelError(f"c_grid must hold positive values, not {self.c_grid}")
        if self.epochs is not None and self.epochs < 1:
            raise ImageModelError("epochs must be at least 1")

    @property
    def resolved_aug_views(self) -> int:
        """Augmented training views after the mode's default."""
        if self.aug_views is not None:
            return self.aug_views
        return 0 if self.mode == "frozen" else 2

    @property
    def resolved_multi_stage(self) -> bool:
        """Whether the pooled features include the last stages' (after the mode's and backbone's default)."""
        if self.multi_stage is not None:
            return self.multi_stage
        return self.mode == "frozen" and bool(backbone_spec(self.backbone).stages)

    def finetune_settings(self) -> dict:
        """The finetune-only fields with the mode's defaults filled in."""
        defaults = {
            "epochs": 8,
            "lr": 1e-3,
            "unfreeze_blocks": backbone_spec(self.backbone).default_unfreeze,
            "label_smoothing": 0.1,
            "weight_decay": 0.05,
        }
        return {name: defaults[name] if getattr(self, name) is None else getattr(self, name) for name in FINETUNE_ONLY}

    def as_params(self) -> dict:
        """Every field, for MLflow and the model metadata (None fields left out: BentoML refuses None)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
