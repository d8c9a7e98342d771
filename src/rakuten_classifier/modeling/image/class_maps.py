"""The class maps of an explained image answer, without torch: for each photo its probabilities, the class
activation maps of all 27 classes and the logits (averaged over the test-time views by the runtime,
:meth:`.onnx_runtime.OnnxImageClassifier.class_maps` or :meth:`.classifier.ImageClassifier.class_maps`), and
the part of the photo a view sees. The image model's worker computes them; the entry service turns one
class's map into the explanation (:func:`~rakuten_classifier.modeling.explain.image_explanation`).
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

from ..calibration import softmax
from ..explain import DIGITS
from .views import crop_box


def image_maps(model, images: list, view_executor: Executor | None = None) -> list[dict]:
    """For each decoded image, its probabilities (``proba``) and what explains any class of it: the class
    maps of all 27 classes and the logits (both averaged over the test-time views), the temperature,
    and the part of the photo a view sees (``crop``: see :func:`.views.crop_box`)."""
    logits, maps = model.class_maps(images, view_executor=view_executor)
    temperature, geometry = float(model.config.temperature), model.geometry
    return [
        {
            "proba": proba,
            "maps": np.round(class_maps, DIGITS).tolist(),
            "logits": row.tolist(),
            "temperature": temperature,
            "crop": crop_box(image.width, image.height, geometry.resize, geometry.crop),
        }
        for proba, class_maps, row, image in zip(softmax(logits, temperature), maps, logits, images, strict=True)
    ]
