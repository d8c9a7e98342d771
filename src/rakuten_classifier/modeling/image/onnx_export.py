"""Export of a trained :class:`.classifier.ImageClassifier` to the ONNX graph serving runs (training side, torch)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .cam import ClassMapNet
from .classifier import ImageClassifier
from .onnx_runtime import CLASS_MAPS

OPSET = 18


def export_onnx(model: ImageClassifier, path: str | Path) -> Path:
    """Write ``model`` as an ONNX graph: pixels (N, 3, S, S) -> logits (N, 27), before temperature, and its
    class activation maps (N, 27, h, w) as a second output, ``class_maps`` (:mod:`.cam`), computed only
    when a session asks for it (ONNX Runtime runs only what the requested outputs need).

    The graph is the whole network (backbone blocks, pooling, linear head) for any backbone, with a
    dynamic batch axis; decoding, the views and the temperature stay outside it (:mod:`.onnx_runtime`).
    """
    path = Path(path)
    size = model.geometry.crop
    example = torch.zeros(2, 3, size, size)
    model = model.to("cpu").eval()
    # The TorchScript exporter (deprecated in favour of torch.export, which needs onnxscript too):
    # with the pinned torch it exports every backbone here in under a second, probabilities within
    # 1e-6 of eager (benchmarks/bench_image_runtime.py). Its deprecation notices are not actionable.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # The class maps read their feature maps' sizes as Python numbers: fixed by the crop, constants in the
        # graph by design (only the batch axis is dynamic), which the tracer warns about.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            ClassMapNet(model),
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["logits", CLASS_MAPS],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}, CLASS_MAPS: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path
