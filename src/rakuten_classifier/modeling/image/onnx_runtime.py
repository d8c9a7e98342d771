"""The served image model: the exported graph on ONNX Runtime, with numpy and Pillow around it (no torch).

The graph (:mod:`.onnx_export`) is the whole network, pixels -> logits, with the class activation maps
as a second output (``class_maps``, :mod:`.cam`) that only an explained request asks for. Decoding and the pixels of
each test-time view are :mod:`.views` (shared with training's feature extraction), the config is
read by :func:`.model_config.read_config` (the reader the torch model uses), so both runtimes see
the same pixels, refuse the same configs and answer in the same ``CATEGORY_CODES`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

import numpy as np

from ...data.preprocessing import Geometry
from ...registry import ONNX_FILE
from ..calibration import softmax
from ..errors import ImageModelError
from .backbones import backbone_spec
from .model_config import NUM_CLASSES, ImageModelConfig, read_config
from .views import View, center_batch, combine_views, eval_views

CLASS_MAPS = "class_maps"  # the graph's second output: a graph without it is refused


def session_options(threads: int):  # -> onnxruntime.SessionOptions (imported lazily)
    """Full graph optimisation, ``threads`` intra-op threads, no inter-op pool."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


class OnnxImageClassifier:
    """A stored image model run by ONNX Runtime; answers like :class:`.classifier.ImageClassifier`."""

    def __init__(self, config: ImageModelConfig, onnx_path: Path, threads: int = 1):
        import onnxruntime as ort

        self.config = config
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )

    @property
    def geometry(self) -> Geometry:
        return backbone_spec(self.config.backbone).geometry

    @classmethod
    def load(cls, directory: str | Path, threads: int = 1) -> OnnxImageClassifier:
        """The ONNX graph and config of a saved model; ImageModelError when it has no graph, a graph without
        the class maps or a bad config."""
        onnx_path = Path(directory) / ONNX_FILE
        if not onnx_path.is_file():
            raise ImageModelError(f"{directory}: no {ONNX_FILE} (saved before the ONNX export): retrain it")
        config = read_config(directory)
        try:
            model = cls(config, onnx_path, threads)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
            raise ImageModelError(f"{onnx_path}: not a loadable ONNX graph ({type(exc).__name__}: {exc})") from exc
        if CLASS_MAPS not in {output.name for output in model.session.get_outputs()}:
            raise ImageModelError(f"{onnx_path}: no {CLASS_MAPS} output (exported before the class maps): retrain it")
        return model

    def view_logits(self, sources: Sequence, view: View, batch_size: int = 64) -> np.ndarray:
        """Logits (n, 27) of one view of decoded images, paths or bytes."""
        out = []
        for start in range(0, len(sources), batch_size):
            pixels = center_batch(sources[start : start + batch_size], view, self.geometry)
            out.append(self.session.run(["logits"], {"pixels": pixels})[0])
        return np.concatenate(out).astype(np.float64)

    def class_maps(
        self, images: Sequence, batch_size: int = 64, view_executor: Executor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits (n, 27) and class activation maps (n, 27, h, w) averaged over the test-time views (a mirrored
        view's map flipped back), as :meth:`.classifier.ImageClassifier.class_maps`."""
        images = list(images)
        views = eval_views(self.config.tta)

        def one(view: View) -> list[np.ndarray]:
            found = []
            for start in range(0, len(images), batch_size):
                pixels = center_batch(images[start : start + batch_size], view, self.geometry)
                found.append(self.session.run(["logits", CLASS_MAPS], {"pixels": pixels}))
            return [np.concatenate([part[k] for part in found]).astype(np.float64) for k in (0, 1)]

        per_view = list(view_executor.map(one, views)) if view_executor else [one(v) for v in views]
        logits = np.mean([found[0] for found in per_view], axis=0)
        return logits, combine_views([found[1] for found in per_view], [view.flip for view in views])

    def predict_proba(
        self, images: Sequence, batch_size: int = 64, view_executor: Executor | None = None
    ) -> np.ndarray:
        """(n, 27) probabilities in CATEGORY_CODES order; with a ``view_executor`` the views run side by side."""
        if len(images) == 0:
            return np.zeros((0, NUM_CLASSES))
        images = list(images)
        views = eval_views(self.config.tta)

        def one(view: View) -> np.ndarray:
            return self.view_logits(images, view, batch_size)

        per_view = list(view_executor.map(one, views)) if view_executor else [one(v) for v in views]
        return softmax(np.mean(per_view, axis=0), self.config.temperature)
