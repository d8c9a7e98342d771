"""A frozen backbone's pooled features on ONNX Runtime, for training's feature extraction on CPU.

Serving already runs the image network on ONNX Runtime; training ran the same backbone on torch
eager. Measured on 2 cores (2026-12-04, EfficientNet-Lite1 multi-stage, 240 sample photos, another
job on the box): 9.1 photos/s on torch (two single-threaded torch threads, chunks of 4) against
18-23 on ONNX Runtime (two single-threaded sessions' calls side by side), features within 2e-5.
At the challenge's size image features are the largest step of `train all` (issue 27).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from torch import nn

from ...data.preprocessing import Geometry
from ..errors import ImageModelError
from .onnx_graph import export_module
from .onnx_runtime import session_options
from .views import View, center_batch

OUTPUT = "features"
# Photos per runtime call: each thread decodes its chunk, then runs it (the GIL is released inside).
CHUNK = 8


class OnnxFeatures:
    """``net`` exported once to a temporary ONNX graph, run on ``threads`` threads of one-thread calls.

    A context manager: the graph and the threads go when it closes.
    """

    def __init__(self, net: nn.Module, geometry: Geometry, threads: int):
        import onnxruntime as ort

        self.geometry = geometry
        self._folder = Path(tempfile.mkdtemp(prefix="rakuten-features-"))
        try:
            graph = export_module(net, self._folder / "features.onnx", geometry.crop, OUTPUT)
            self._session = ort.InferenceSession(
                str(graph), sess_options=session_options(1), providers=["CPUExecutionProvider"]
            )
        except Exception:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="onnx-features")

    def __enter__(self) -> OnnxFeatures:
        return self

    def __exit__(self, *_: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._folder, ignore_errors=True)

    def __call__(self, sources: Sequence[str], view: View) -> np.ndarray:
        """(n, d) float32 pooled features of a centre view of every image, in order."""
        if not sources:
            raise ImageModelError("no images to process")

        def chunk(start: int) -> np.ndarray:
            pixels = center_batch(sources[start : start + CHUNK], view, self.geometry)
            return self._session.run([OUTPUT], {"pixels": pixels})[0]

        return np.concatenate(list(self._pool.map(chunk, range(0, len(sources), CHUNK)))).astype(np.float32)
