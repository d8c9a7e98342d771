"""Multimodal (text + image) product classifier for the Rakuten France catalogue.

Python API (imported lazily, so `import rakuten_classifier` stays cheap)::

    from rakuten_classifier import train_text, train_image, train_fusion, train_all, predict_multimodal
"""

__version__ = "0.1.0"

_API = {
    "train_text": "pipeline.steps",
    "train_image": "pipeline.steps",
    "train_fusion": "pipeline.steps",
    "train_all": "pipeline.steps",
    "load_training_data": "pipeline.training_data",
    "predict_multimodal": "serving.predict",
    "evaluate_production": "pipeline.evaluate",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
