"""Errors of the modeling layer: a model that cannot be built, trained, saved or loaded."""


class ModelLoadError(RuntimeError):
    """A saved model folder that is missing files or cannot be read; the message says why."""


class ImageModelError(ModelLoadError):
    """An image model that cannot be built, trained, saved or loaded; the message says why."""
