"""POST /corrections: an operator says an answer's right category; the product becomes a labelled row of the store.

Multipart form: ``designation``, ``description``, ``image`` (optional), ``prdtypecode``,
``prediction_id`` (optional: the answer's id; correcting it again changes nothing). The admin token
guards the route (serving/http_guard.py); the photo's size and type are checked as on /predict*
(an ``image/*`` part, ``check_image_bytes``), and what is stored is data only: the photo is written
under the data root with a name made from the row's id, never a name or path from the request.
"""

from __future__ import annotations

import typing as t

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, Response

from .errors import ClientError, plain_words
from .schemas import CorrectionForm, check_image_bytes

if t.TYPE_CHECKING:
    from ..data.corrections import Correction

router = APIRouter()  # included by the entry service's FastAPI app
IMAGE_FIELD = "image"


async def _correction(request: Request) -> Correction:
    """The correction a form asks for; ClientError says what is wrong with it."""
    from ..data.corrections import Correction  # SQLAlchemy, pandas: the entry alone, no model worker

    form = await request.form()
    photo = form.get(IMAGE_FIELD)
    try:
        fields = CorrectionForm.model_validate({k: v for k, v in form.items() if k != IMAGE_FIELD})
    except ValidationError as exc:
        raise ClientError(f"invalid correction form: {plain_words(exc, CorrectionForm)}") from None
    data = None
    if photo is not None:
        if not isinstance(photo, UploadFile) or not (photo.content_type or "").startswith("image/"):
            kind = photo.content_type if isinstance(photo, UploadFile) else "a text field"
            raise ClientError(f"image must be an image/* file part, not {kind or 'untyped'}")
        data, _ = check_image_bytes(await photo.read())
    who = f"admin token from {request.client.host if request.client else 'an unknown address'}"
    return Correction(fields.designation, fields.description, fields.prdtypecode, who, data, fields.prediction_id)


@router.post("/corrections")
async def correction_response(request: Request) -> Response:
    """Store the corrected product (201), or answer the correction already stored for this prediction (200)."""
    from ..data.corrections import CorrectionConflict, CorrectionError, record_correction

    # The data layer's refusals as HTTP statuses; the app's handler answers a ClientError (serving/errors.py).
    try:
        stored = await run_in_threadpool(record_correction, await _correction(request))
    except CorrectionConflict as exc:
        raise ClientError(str(exc), 409) from exc
    except CorrectionError as exc:
        raise ClientError(str(exc), 400) from exc
    return JSONResponse(stored, status_code=201 if stored["created"] else 200)
