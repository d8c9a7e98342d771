"""The backbones the image model knows: which ImageNet network, the input it expects, which blocks it pools.

A table, without torch: serving reads a saved model's geometry here (the networks themselves are
built by :mod:`.networks`, for training and the torch runtime).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...data.preprocessing import Geometry
from ..errors import ImageModelError

# torchvision's ImageNet models: resize 256, centre crop 224, ImageNet mean and standard deviation.
IMAGENET = Geometry(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _lite_geometry(crop: int) -> Geometry:
    """EfficientNet-Lite's input: (x - 127) / 128 on 0..255 pixels, i.e. mean 127/255 and std 128/255 on 0..1."""
    return Geometry(round(crop * 256 / 224), crop, (127 / 255, 127 / 255, 127 / 255), (128 / 255, 128 / 255, 128 / 255))


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one torchvision backbone and cut it into an ordered list of blocks."""

    name: str
    weights: str  # torchvision weights enum member, or the packaged checkpoint (part of the feature-cache key)
    feature_dim: int  # channels of the last block's output
    default_unfreeze: int  # blocks trained in 'finetune' mode unless told otherwise
    geometry: Geometry = IMAGENET
    # (block index, channels) of earlier blocks whose pooled outputs join the last block's in multi-stage
    # features: the first block of each of the last three stages (docs/accuracy.md: on the sample,
    # out-of-fold image weighted F1 +0.017 to +0.040 over the last block alone, fused +0.001 to +0.009).
    stages: tuple[tuple[int, int], ...] = ()

    @property
    def stage_blocks(self) -> list[int]:
        """Indices of the blocks ``stages`` declares, in order."""
        return [index for index, _ in self.stages]

    def pooled_dim(self, pooled_blocks: Sequence[int]) -> int:
        """Length of the pooled features: the channels of ``pooled_blocks`` (declared stages) and the last block's."""
        channels = dict(self.stages)
        undeclared = [index for index in pooled_blocks if index not in channels]
        if undeclared:
            raise ImageModelError(
                f"{self.name}: blocks {undeclared} are not among its declared stages {self.stage_blocks}; "
                "this model was saved by another version of the code: train it again"
            )
        return self.feature_dim + sum(channels[index] for index in pooled_blocks)


BACKBONES: dict[str, BackboneSpec] = {
    # mobilenet_v2's DEFAULT is IMAGENET1K_V2; V1 is the checkpoint shipped in the offline cache.
    "mobilenet_v2": BackboneSpec("mobilenet_v2", "IMAGENET1K_V1", 1280, 2, stages=((11, 96), (14, 160), (17, 320))),
    "resnet18": BackboneSpec("resnet18", "IMAGENET1K_V1", 512, 1),
    "resnet50": BackboneSpec("resnet50", "DEFAULT", 2048, 1),
    "efficientnet_b0": BackboneSpec("efficientnet_b0", "IMAGENET1K_V1", 1280, 1),
    # Inputs of 224/240/260 pixels (the sizes they were trained at), resized in the 256/224 ratio.
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0", "lite0-packaged", 1280, 2, _lite_geometry(224), ((9, 112), (12, 192), (16, 320))
    ),
    "efficientnet_lite1": BackboneSpec(
        "efficientnet_lite1", "lite1-packaged", 1280, 2, _lite_geometry(240), ((12, 112), (16, 192), (21, 320))
    ),
    "efficientnet_lite2": BackboneSpec(
        "efficientnet_lite2", "lite2-packaged", 1280, 2, _lite_geometry(260), ((12, 120), (16, 208), (21, 352))
    ),
}


def backbone_spec(backbone: str) -> BackboneSpec:
    """The spec of a known backbone; ImageModelError lists the known ones."""
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise ImageModelError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}") from None
