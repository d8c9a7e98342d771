"""The image model: backbones, transforms and views, feature extraction, the classifier, its training."""
