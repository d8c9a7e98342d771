"""Class activation maps of the image classifier: where in the photo each category's evidence lies.

The head is linear over pooled features, so a class's logit is ``W_c . f + b_c``, with ``f`` the
global average pools of the blocks the model reads, concatenated: the earlier blocks it taps
(multi-stage features, ``ImageModelConfig.pooled_blocks``) and the last block. For each of those
blocks, dotting its part of ``W_c`` with its feature map at every position (before the pooling)
gives a map whose mean is exactly that block's share of ``W_c . f``. An earlier block's map is finer
than the last block's (EfficientNet-Lite1 at 240 pixels: 15 x 15 against 8 x 8), so it is resampled
onto the last block's grid by area: each fine cell's value is spread over the coarse cells it
overlaps, in proportion to the overlap, which keeps its mean. The class activation map is the sum
of the resampled maps: its mean is the whole pooled evidence ``W_c . f``, and the logit is that mean
plus the head's bias ``b_c`` (:func:`~rakuten_classifier.modeling.explain.image_explanation`).
Exact for this pooled linear head; where a feature map's cell lies in the photo is the usual CAM
reading (the cell's centre region), not a property of the network.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class PooledLinearHead(Protocol):
    """What a class map needs of a classifier (:class:`.classifier.ImageClassifier`): its blocks, the earlier
    blocks it pools (``taps``) and its linear head over the pooled features, in that order."""

    blocks: nn.Sequential
    taps: tuple[int, ...]
    head: nn.Linear

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...


def area_resampling(fine: int, coarse: int) -> torch.Tensor:
    """(coarse, fine) matrix R with R @ v the area-weighted resampling of a length-``fine`` row of cells onto
    ``coarse`` cells: cell j takes ``coarse`` times its overlap with each fine cell i (both spanning [0, 1]),
    so every fine cell gives out exactly its own width and the mean is kept."""
    edges_fine = torch.arange(fine + 1, dtype=torch.float64) / fine
    edges_coarse = torch.arange(coarse + 1, dtype=torch.float64) / coarse
    low = torch.maximum(edges_coarse[:-1, None], edges_fine[None, :-1])
    high = torch.minimum(edges_coarse[1:, None], edges_fine[None, 1:])
    return ((high - low).clamp(min=0) * coarse).to(torch.float32)


class ClassMapNet(nn.Module):
    """Pixels (N, 3, S, S) -> logits (N, 27), exactly the classifier's, and class maps (N, 27, h, w) on the
    last block's grid, whose mean over (h, w) is the logit minus the head's bias."""

    def __init__(self, model: PooledLinearHead):
        super().__init__()
        self.model = model
        self.read = (*model.taps, len(model.blocks) - 1)  # the blocks the head reads, in its feature order

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen: dict[int, torch.Tensor] = {}
        hooks = [
            self.model.blocks[index].register_forward_hook(
                lambda _module, _inputs, output, index=index: seen.__setitem__(index, output)
            )
            for index in self.read
        ]
        try:  # the logits come from the classifier's own forward; the hooks only read the blocks' outputs
            logits = self.model(pixels)
        finally:
            for hook in hooks:
                hook.remove()
        height, width = seen[self.read[-1]].shape[2:]
        weight, start, total = self.model.head.weight, 0, None
        for index in self.read:
            feature_map = seen[index]
            channels, (h, w) = feature_map.shape[1], feature_map.shape[2:]
            part = torch.einsum("kc,nchw->nkhw", weight[:, start : start + channels], feature_map)
            start += channels
            if (h, w) != (height, width):  # shapes are fixed by the crop: constants in an exported graph
                rows = area_resampling(int(h), int(height)).to(part.device)
                cols = area_resampling(int(w), int(width)).to(part.device)
                part = torch.einsum("ih,nkhw,jw->nkij", rows, part, cols)
            total = part if total is None else total + part
        assert total is not None
        assert start == weight.shape[1]
        return logits, total
