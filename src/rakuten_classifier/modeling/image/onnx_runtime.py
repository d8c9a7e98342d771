"""The image model on ONNX Runtime: export of a trained classifier, and its ``predict_proba`` without torch eager.

The exported graph is the whole network (backbone blocks, pooling, linear head: pixels -> logits)
for any backbone, with a dynamic batch axis. Decoding, the test-time views and the temperature stay
in Python and are shared with the torch path (``transforms.py``, ``ImageModelConfig``), so both
runtimes see the same pixels and answer in the same ``CATEGORY_CODES`` order.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import torch

from ..calibration import softmax
from ..errors import ImageModelError
from .backbones import backbone_spec
from .classifier import CONFIG_FILE, NUM_CLASSES, ImageClassifier, ImageModelConfig
from .transforms import Geometry, ImageViewDataset, View, eval_views

ONNX_FILE = "image_model.onnx"
OPSET = 18


def export_onnx(model: ImageClassifier, path: str | Path) -> Path:
    """Write ``model`` (pixels (N, 3, S, S) -> logits (N, 27), before temperature) as an ONNX graph."""
    path = Path(path)
    size = model.geometry.crop
    example = torch.zeros(2, 3, size, size)
    model = model.to("cpu").eval()
    # The TorchScript exporter (deprecated in favour of torch.export, which needs onnxscript too):
    # with the pinned torch it exports every backbone here in under a second, probabilities within
    # 1e-6 of eager (benchmarks/bench_image_runtime.py). Its deprecation notices are not actionable.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def _session_options(threads: int):  # -> onnxruntime.SessionOptions (imported lazily)
    """Full graph optimisation, ``threads`` intra-op threads, no inter-op pool."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


class OnnxImageClassifier:
    """A stored image model run by ONNX Runtime; answers like :class:`ImageClassifier`."""

    def __init__(self, config: ImageModelConfig, onnx_path: Path, threads: int = 1):
        import onnxruntime as ort

        self.config = config
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=_session_options(threads), providers=["CPUExecutionProvider"]
        )

    @property
    def geometry(self) -> Geometry:
        return backbone_spec(self.config.backbone).geometry

    @classmethod
    def load(cls, directory: str | Path, threads: int = 1) -> OnnxImageClassifier:
        """The ONNX graph and config of a saved model; ImageModelError when it has no graph."""
        directory = Path(directory)
        onnx_path, config_path = directory / ONNX_FILE, directory / CONFIG_FILE
        if not onnx_path.is_file():
            raise ImageModelError(f"{directory}: no {ONNX_FILE} (saved before the ONNX export; retrain it)")
        try:
            config = ImageModelConfig(**json.loads(config_path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise ImageModelError(f"{config_path}: corrupt model config ({exc})") from exc
        try:
            return cls(config, onnx_path, threads)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
            raise ImageModelError(f"{onnx_path}: not a loadable ONNX graph ({type(exc).__name__}: {exc})") from exc

    def view_logits(self, sources: Sequence, view: View, batch_size: int = 64) -> np.ndarray:
        """Logits (n, 27) of one view of decoded images, paths or bytes."""
        dataset = ImageViewDataset(sources, view, self.geometry)
        out = []
        for start in range(0, len(dataset), batch_size):
            batch = torch.stack([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            out.append(self.session.run(["logits"], {"pixels": batch.numpy()})[0])
        return np.concatenate(out).astype(np.float64)

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


def quantize_int8(
    fp32_path: str | Path, out_path: str | Path, calibration: Sequence[str], geometry: Geometry, batch: int = 8
) -> Path:
    """Static int8 quantisation of an exported graph, calibrated on the centre view of ``calibration`` images.

    Weights int8 per channel with ``reduce_range`` (7 bits: AVX2 without VNNI saturates the u8 x s8
    products otherwise), activations uint8, QDQ format.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dataset = ImageViewDataset(list(calibration), View("center"), geometry)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.starts = iter(range(0, len(dataset), batch))

        def get_next(self) -> dict | None:
            start = next(self.starts, None)
            if start is None:
                return None
            pixels = torch.stack([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
            return {"pixels": pixels.numpy()}

    out_path = Path(out_path)
    prepared = out_path.with_suffix(".prepared.onnx")
    quant_pre_process(str(fp32_path), str(prepared))
    quantize_static(
        str(prepared),
        str(out_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
    )
    prepared.unlink()
    return out_path
