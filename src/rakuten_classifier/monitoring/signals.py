"""Cheap per-prediction signals logged for monitoring: language, image brightness, a text fingerprint."""

from __future__ import annotations

import hashlib
import re

from PIL import Image, ImageStat

# Function words that tell the catalogue's languages apart; a text's language is the set it
# shares the most words with ("none" for no text, "other" for no function word at all).
_STOPWORDS = {
    "fr": {
        "le",
        "la",
        "les",
        "de",
        "des",
        "du",
        "et",
        "pour",
        "avec",
        "en",
        "un",
        "une",
        "au",
        "aux",
        "sur",
        "est",
        "dans",
        "par",
        "ce",
        "vous",
        "votre",
        "qui",
        "pas",
        "ne",
        "sont",
        "cette",
        "à",
        "l",
        "d",
    },
    "en": {
        "the",
        "and",
        "of",
        "for",
        "with",
        "to",
        "in",
        "is",
        "a",
        "an",
        "on",
        "this",
        "your",
        "you",
        "by",
        "are",
        "that",
        "it",
        "from",
        "be",
    },
    "de": {"der", "die", "das", "und", "mit", "für", "ist", "ein", "eine", "von", "zu", "den", "im", "auf", "nicht"},
    "es": {"el", "los", "las", "y", "con", "para", "del", "una", "por", "es", "que", "su", "se"},
    "it": {"il", "di", "della", "e", "con", "per", "che", "gli", "una", "sono", "nel", "alla"},
}
_WORD_RE = re.compile(r"[^\W\d_]+", re.UNICODE)


def detect_language(text: str) -> str:
    """The catalogue language a text most likely is in: fr, en, de, es, it, other or none."""
    if not text:
        return "none"
    words = _WORD_RE.findall(text.lower())
    counts = {language: sum(word in stop for word in words) for language, stop in _STOPWORDS.items()}
    best = max(counts, key=lambda language: counts[language])
    return best if counts[best] > 0 else "other"


def image_brightness(image: Image.Image) -> float:
    """Mean grey level (0-255) of a decoded image: cheap, and moves when the photo style changes."""
    return float(ImageStat.Stat(image.convert("L")).mean[0])


def text_fingerprint(text: str) -> str:
    """SHA-256 of the model text: joins repeated products without storing what users sent."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
