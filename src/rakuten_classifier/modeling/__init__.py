"""Models: text, image, their calibration and fusion, scores; no I/O beyond saving and loading a model folder."""
