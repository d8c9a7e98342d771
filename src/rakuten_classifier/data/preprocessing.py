"""Preprocessing shared by training and serving: the one place text and images are prepared.

Serving imports exactly these functions, so the text a model sees at prediction time is
byte-identical to what it saw in training (tests/test_preprocessing.py proves it).
"""

from __future__ import annotations

import html
import io
import re
import unicodedata

from PIL import Image

_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")
# Unicode format/control characters (zero-width spaces, BOM, soft hyphen...) carry no meaning.
_INVISIBLE_CATEGORIES = {"Cf", "Cc"}


def clean_text(raw: object) -> str:
    """HTML entities and tags removed, Unicode NFC-normalised, whitespace collapsed."""
    if raw is None:
        return ""
    text = str(raw)
    if text.lower() == "nan":  # pandas' missing value read back as text
        return ""
    # Entities first (some descriptions are double-escaped: &amp;eacute;), then tags, then entities
    # that were hidden inside tags' text.
    for _ in range(2):
        text = html.unescape(text)
    text = _TAG_RE.sub(" ", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(ch) in _INVISIBLE_CATEGORIES else ch for ch in text)
    return _SPACE_RE.sub(" ", text).strip()


# Between the cleaned title and description (cleaning turns every other newline into a space), so a
# text model can weigh the title on its own; TF-IDF tokenisers and transformers read it as a space.
TITLE_SEPARATOR = "\n"


def product_text(designation: object, description: object = None) -> str:
    """The text model's input: cleaned designation, then TITLE_SEPARATOR and the cleaned description if any.

    A product with only a description gets an empty title: the text starts with the separator.
    """
    title, details = clean_text(designation), clean_text(description)
    if not details:
        return title
    return f"{title}{TITLE_SEPARATOR}{details}"


class ImageError(ValueError):
    """An image that cannot be decoded or breaks a limit; the message says which."""


# Decoding at a reduced scale (JPEG DCT scaling) is several times faster than full decoding and
# loses nothing: models see 224x224 at most.
DRAFT_SIZE = (256, 256)


def load_image(source: str | bytes | io.BytesIO | Image.Image, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode an image (path, bytes or PIL image) to RGB, JPEGs decoded at reduced size."""
    if isinstance(source, Image.Image):
        image = source
    else:
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            image = Image.open(stream)
        except Exception as exc:  # PIL raises several types for garbage input
            raise ImageError(f"not a readable image: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"image has {width * height} pixels, more than the limit of {max_pixels}")
    try:
        if image.format == "JPEG":
            image.draft("RGB", DRAFT_SIZE)
        return image.convert("RGB")
    except Exception as exc:
        raise ImageError(f"image could not be decoded: {exc}") from exc
