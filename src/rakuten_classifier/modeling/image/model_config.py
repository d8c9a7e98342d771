"""A saved image model's config (``image_model.json``): written once, read by one reader with every check.

Both runtimes read it here (torch in :mod:`.classifier`, ONNX Runtime in :mod:`.onnx_runtime`), so a
config either runtime would refuse is refused by both, with the same message. No torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...categories import CATEGORY_CODES
from ..errors import ImageModelError
from .backbones import backbone_spec

NUM_CLASSES = len(CATEGORY_CODES)
FORMAT_VERSION = 1
CONFIG_FILE = "image_model.json"

# Test-time views: the centre crop alone, or averaged with its mirror (``tta``). The mirror doubles
# the image work of every request, so it is served only where it adds at least MIRROR_MIN_GAIN
# out-of-fold fused weighted F1. On the sample (2026-12-01, EfficientNet-Lite1 multi-stage, trained on
# both views either way) it added +0.0001 (0.7680 against 0.7679; image OOF 0.4396 against 0.4315):
# one view (docs/accuracy.md, "Test-time views").
MIRROR_MIN_GAIN = 0.005
TEST_TIME_MIRROR = False
VIEWS_RULE = (
    f"the mirror view is served only if it adds >= {MIRROR_MIN_GAIN} out-of-fold fused weighted F1 "
    "(sample, 2026-12-01: +0.0001, so one view; docs/accuracy.md)"
)


@dataclass
class ImageModelConfig:
    """Everything needed to rebuild an image model (saved as JSON); refused with ImageModelError when inconsistent."""

    backbone: str
    mode: str = "frozen"
    temperature: float = 1.0
    tta: bool = TEST_TIME_MIRROR
    # Earlier blocks whose pooled outputs precede the last block's (BackboneSpec.stages), saved with the model
    # so that its features never depend on the code's current spec; empty: the last block alone.
    pooled_blocks: list[int] = field(default_factory=list)
    categories: list[int] = field(default_factory=lambda: list(CATEGORY_CODES))
    trained_categories: list[int] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ImageModelError(f"format version {self.format_version}, expected {FORMAT_VERSION}")
        if list(self.categories) != list(CATEGORY_CODES):
            raise ImageModelError("model categories differ from CATEGORY_CODES; retrain the model")
        if self.pooled_blocks and self.mode != "frozen":
            raise ImageModelError(f"pooled_blocks apply to mode 'frozen' only, not {self.mode!r}")
        backbone_spec(self.backbone).pooled_dim(self.pooled_blocks)  # unknown backbone or undeclared blocks

    @property
    def views(self) -> int:
        """Test-time views averaged per image: the centre crop, and its mirror with ``tta``."""
        return 2 if self.tta else 1


def write_config(config: ImageModelConfig, directory: Path) -> None:
    """Write ``image_model.json``; a last-block model without the ``pooled_blocks`` key (readable by older code)."""
    saved = asdict(config)
    if not saved["pooled_blocks"]:
        del saved["pooled_blocks"]
    (directory / CONFIG_FILE).write_text(json.dumps(saved, indent=2), encoding="utf-8")


def read_config(directory: str | Path) -> ImageModelConfig:
    """The config saved in ``directory``; ImageModelError says why it cannot be used."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ImageModelError(f"{directory}: not a saved image model ({CONFIG_FILE} is missing)")
    try:
        return ImageModelConfig(**json.loads(path.read_text(encoding="utf-8")))
    except ImageModelError as exc:
        raise ImageModelError(f"{path}: {exc}") from exc
    except (OSError, json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ImageModelError(f"{path}: corrupt model config ({exc})") from exc
