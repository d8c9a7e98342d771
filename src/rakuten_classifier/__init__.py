"""Multimodal (text + image) product classifier for the Rakuten France catalogue.

Python API (imported lazily, so `import rakuten_classifier` stays cheap)::

    from rakuten_classifier import train_text, train_image, train_fusion, train_all, predict_multimodal
"""

__version__ = "0.1.0"

_API = {
    "train_text": "training",
    "train_image": "training",
    "train_fusion": "training",
    "train_all": "training",
    "load_training_data": "training",
    "predict_multimodal": "predict",
    "evaluate_production": "evaluate",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
