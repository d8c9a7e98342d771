"""Request schemas of the entry service, and the checks that turn a request into products to classify.

Every limit is a field of rakuten_classifier.config.Settings (RAKUTEN_* env); breaking one is a 4xx
with a message in plain words (serving/errors.py), never a traceback.
"""

import base64
import io
import json
import typing as t
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.validators import ContentType
from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..categories import CATEGORY_CODES
from ..config import get_settings
from ..data.preprocessing import product_text
from .errors import ClientError, plain_words, sizes_text

settings = get_settings()
N_CLASSES = len(CATEGORY_CODES)


def _form_text(value: t.Any) -> t.Any:
    """Multipart text fields arrive JSON-decoded ('123' -> 123); give them back as text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


FormText = Annotated[str, BeforeValidator(_form_text), Field(max_length=settings.max_text_chars)]
ImageUpload = Annotated[Path, ContentType("image/*")]
# The answer then says why (its key ``explanation``: serving/answers.py); off, nothing is computed for it.
Explain = Annotated[bool, Field(description="add why: word weights, the photo's class map, each modality's share")]


class CheckedInput(bentoml.IODescriptor):
    """An API method's input whose refusal is the project's own: said in plain words, logged as one line.

    BentoML validates a request into the input model before the method runs, and answers a pydantic
    ValidationError itself: "1 validation error for ...", logged as an ERROR with a traceback. Here the
    ValidationError becomes a ClientError in plain words (serving.errors.plain_words) that takes the place
    of every argument; the method's `answers_client_errors` answers it (400) without calling the method.
    """

    @classmethod
    async def from_http_request(cls, request, serde):  # BentoML's signature: (Request, Serde) -> IODescriptor
        form_types = ("multipart/form-data", "application/x-www-form-urlencoded")
        if cls.multipart_fields and request.headers.get("content-type", "").startswith(form_types):
            # BentoML would download a file field sent as text as a URL (a 500 when it is not one): refused.
            form = await request.form()  # Starlette keeps the parsed form: BentoML's parse reads it again
            for name in cls.multipart_fields:
                if any(isinstance(value, str) for value in form.getlist(name)):
                    return cls._refused(f"{name} must be a file (a photo sent as a file part), not text")
        try:
            return await super().from_http_request(request, serde)
        except ValidationError as exc:
            return cls._refused(plain_words(exc, cls))

    @classmethod
    def _refused(cls, message: str) -> "CheckedInput":
        """The input whose every argument is the refusal (what ``answers_client_errors`` answers)."""
        return cls.model_construct(**dict.fromkeys(cls.model_fields, ClientError(message)))


class MultimodalInput(CheckedInput):
    """Form of /predict_multimodal: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    designation: FormText = ""
    description: FormText = ""
    image: ImageUpload = None  # type: ignore[assignment]
    text_weight: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int = Field(5, ge=1, le=N_CLASSES)
    explain: Explain = False


class TextInput(CheckedInput):
    """Body of /predict_text."""

    model_config = ConfigDict(extra="forbid")
    designation: FormText
    description: FormText = ""
    top_k: int = Field(5, ge=1, le=N_CLASSES)
    explain: Explain = False


class ImageInput(CheckedInput):
    """Form of /predict_image."""

    model_config = ConfigDict(extra="forbid")
    image: ImageUpload
    top_k: int = Field(5, ge=1, le=N_CLASSES)
    explain: Explain = False


class BatchItem(BaseModel):
    """One product of /predict_batch; the image, if any, as base64."""

    model_config = ConfigDict(extra="forbid")
    designation: FormText = ""
    description: FormText = ""
    # No length bound here: a schema bound answers 400, and an image over the limit is a 413 like an
    # uploaded one (batch_products); RAKUTEN_MAX_BODY_BYTES bounds what is read at all.
    image_base64: str | None = None


class BatchInput(CheckedInput):
    """Body of /predict_batch."""

    model_config = ConfigDict(extra="forbid")
    items: list[BatchItem] = Field(min_length=1, max_length=settings.max_batch_items)
    text_weight: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int = Field(5, ge=1, le=N_CLASSES)
    explain: Explain = False


class TrainInput(CheckedInput):
    """Body of /train: a folder under the data root to read instead of the database, or a retrain check."""

    model_config = ConfigDict(extra="forbid")
    data_dir: str | None = None
    retrain: bool = Field(False, description="run `rakuten retrain` (train only if new rows or drift call for it)")


class FeedbackInput(BaseModel):
    """Body of /feedback: the true category of a prediction the service answered."""

    model_config = ConfigDict(extra="forbid")
    prediction_id: str = Field(min_length=1, max_length=32)
    prdtypecode: int


class CorrectionForm(BaseModel):
    """Text fields of POST /corrections (the photo is the form's optional ``image`` file part)."""

    model_config = ConfigDict(extra="forbid")
    designation: FormText = ""
    description: FormText = ""
    prdtypecode: int
    prediction_id: str | None = Field(None, min_length=1, max_length=32)


EMPTY_PRODUCT = "empty product: nothing to classify; give a designation (title), a description, an image, or several"


class Product(t.NamedTuple):
    """One product to classify: model text, encoded image and its header size (width, height)."""

    text: str
    image: bytes | None = None
    size: tuple[int, int] | None = None


def image_too_large(size: int) -> ClientError:
    """The 413 of an image of ``size`` bytes over RAKUTEN_MAX_IMAGE_BYTES, in MB."""
    shown, limit = sizes_text(size, settings.max_image_bytes)
    return ClientError(f"the image is {shown}; the limit is {limit}", 413)


def check_image_bytes(data: bytes) -> tuple[bytes, tuple[int, int]]:
    """Size and pixel limits checked from the header, before any decoding; returns (data, (w, h))."""
    if len(data) > settings.max_image_bytes:
        raise image_too_large(len(data))
    if not data:
        raise ClientError("image file is empty")
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Exception as exc:
        raise ClientError(f"image is not a readable JPEG/PNG/WebP file ({type(exc).__name__})") from exc
    if width * height > settings.max_image_pixels:
        megapixels = f"{width * height / 1e6:.1f}".removesuffix(".0")
        limit = f"{settings.max_image_pixels / 1e6:g} megapixels"
        raise ClientError(f"the image is {width}x{height} pixels ({megapixels} megapixels); the limit is {limit}", 413)
    return data, (width, height)


def form_product(designation: str, description: str, image: Path | None) -> Product:
    """The product of a /predict_multimodal or /predict_image form; ClientError when there is nothing to classify."""
    text = product_text(designation, description)
    data, size = check_image_bytes(Path(image).read_bytes()) if image is not None else (None, None)
    if not text and data is None:
        raise ClientError(EMPTY_PRODUCT)
    return Product(text, data, size)


def text_product(designation: str, description: str) -> Product:
    """The product of a /predict_text body; ClientError when both fields are blank."""
    text = product_text(designation, description)
    if not text:
        raise ClientError("empty product: designation and description are blank")
    return Product(text)


def _decoded_size(encoded: str) -> int:
    """Bytes that base64 text decodes to, without decoding it (exact for valid base64)."""
    return len(encoded) * 3 // 4 - (len(encoded) - len(encoded.rstrip("=")))


def batch_products(items: list[BatchItem]) -> list[Product]:
    """The products of a /predict_batch body; a ClientError names the first bad item."""
    prepared = []
    for number, item in enumerate(items):
        text = product_text(item.designation, item.description)
        data = size = None
        if item.image_base64:
            try:
                encoded_size = _decoded_size(item.image_base64)
                if encoded_size > settings.max_image_bytes:  # refused before decoding it
                    raise image_too_large(encoded_size)
                data, size = check_image_bytes(base64.b64decode(item.image_base64, validate=True))
            except ClientError as exc:
                raise ClientError(f"items[{number}]: {exc}", exc.status) from exc
            except ValueError as exc:
                raise ClientError(f"items[{number}]: image_base64 is not valid base64") from exc
        if not text and data is None:
            raise ClientError(f"items[{number}]: {EMPTY_PRODUCT}")
        prepared.append(Product(text, data, size))
    return prepared


def train_folder(data_dir: str | None, data_root: Path) -> Path | None:
    """The folder a /train request names, checked to be an existing folder under the data root."""
    if not data_dir:
        return None
    if any(ord(character) < 32 for character in data_dir):  # NUL and control characters: no such folder
        raise ClientError(f"data_dir must be a folder name, without control characters: {data_dir!r}")
    root = data_root.resolve()
    folder = (root / data_dir).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        raise ClientError(f"data_dir must be an existing folder under the data root: {data_dir!r}")
    return folder
