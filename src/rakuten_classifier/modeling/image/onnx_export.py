"""Export of a trained :class:`.classifier.ImageClassifier` to the ONNX graph serving runs (training side, torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .onnx_graph import export_module

if TYPE_CHECKING:
    from .classifier import ImageClassifier


def export_onnx(model: ImageClassifier, path: str | Path) -> Path:
    """Write ``model`` (pixels (N, 3, S, S) -> logits (N, 27), before temperature) as an ONNX graph.

    The graph is the whole network (backbone blocks, pooling, linear head) for any backbone;
    decoding, the views and the temperature stay outside it (:mod:`.onnx_runtime`).
    """
    return export_module(model, path, model.geometry.crop, "logits")
