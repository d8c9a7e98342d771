"""Export of a trained :class:`.classifier.ImageClassifier` to the ONNX graph serving runs (training side, torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .cam import ClassMapNet
from .onnx_graph import export_module
from .onnx_runtime import CLASS_MAPS

if TYPE_CHECKING:
    from .classifier import ImageClassifier


def export_onnx(model: ImageClassifier, path: str | Path) -> Path:
    """Write ``model`` as an ONNX graph: pixels (N, 3, S, S) -> logits (N, 27), before temperature, and its
    class activation maps (N, 27, h, w) as a second output, ``class_maps`` (:mod:`.cam`), computed only
    when a session asks for it (ONNX Runtime runs only what the requested outputs need).

    The graph is the whole network (backbone blocks, pooling, linear head) for any backbone;
    decoding, the views and the temperature stay outside it (:mod:`.onnx_runtime`).
    """
    return export_module(ClassMapNet(model), path, model.geometry.crop, ("logits", CLASS_MAPS))
