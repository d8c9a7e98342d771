"""ImageNet backbones from torchvision, cut into an ordered list of blocks (no pooling, no head)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from ..errors import ImageModelError


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
