"""The image classifier's head: the linear head (:mod:`~rakuten_classifier.modeling.linear_head`) fitted on
the pooled features of every view, copied into the torch model's linear layer.

Training chooses its C and its temperature on K-fold out-of-fold logits of the learning rows
(:func:`~rakuten_classifier.modeling.linear_head.cross_fit_head`); the head is then refit on all of them.
"""

from __future__ import annotations

import torch

from ..linear_head import LinearHead
from .classifier import ImageClassifier


def set_head(model: ImageClassifier, head: LinearHead) -> None:
    """Copy a fitted head's (W, b) into ``model.head``."""
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(head.weight_, dtype=torch.float32))
        model.head.bias.copy_(torch.as_tensor(head.bias_, dtype=torch.float32))
