"""Multimodal (text + image) product classifier for the Rakuten France catalogue."""

__version__ = "0.1.0"
