"""A torch module to an ONNX graph (pixels in, named outputs, dynamic batch axis): training side, torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 18


def export_module(module: nn.Module, path: str | Path, size: int, output: str | tuple[str, ...]) -> Path:
    """Write ``module`` (pixels (N, 3, size, size) -> ``output``, or one output per name of a tuple) as an ONNX
    graph with a dynamic batch axis."""
    outputs = (output,) if isinstance(output, str) else output
    path = Path(path)
    example = torch.zeros(2, 3, size, size)
    module = module.to("cpu").eval()
    # The TorchScript exporter (deprecated in favour of torch.export, which needs onnxscript too):
    # with the pinned torch it exports every backbone here in under a second, probabilities within
    # 1e-6 of eager (benchmarks/bench_image_runtime.py). Its deprecation notices are not actionable.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # Sizes a module reads as Python numbers (the class maps' grids) are fixed by the crop: constants in the
        # graph by design (only the batch axis is dynamic), which the tracer warns about.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # "Constant folding - Only steps=1 can be constant folded for opset >= 10 onnx::Slice": a Slice the
        # exporter leaves unfolded, computed at run time instead; 6 to 9 lines per training that a user cannot
        # act on (issue 38), and the graph's answers are checked against eager torch all the same.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=list(outputs),
            dynamic_axes={"pixels": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path
