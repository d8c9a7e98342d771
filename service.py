"""BentoML service: a text model service and an image model service behind an entry service.

    bentoml serve service:RakutenClassifier        (port 3000; `bentoml serve .` reads bentofile.yaml)

Each model service runs in its own worker with adaptive batching and swaps to newly promoted
models without a restart; the entry service calls both concurrently and fuses their
probabilities with the learned text weight (rakuten_classifier.fusion, a pure function).
"""

import asyncio
import base64
import hmac
import io
import json
import logging
import os
import sys
import threading
import time
import typing as t
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.validators import ContentType
from fastapi import FastAPI, Request
from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.responses import JSONResponse

try:
    import rakuten_classifier  # noqa: F401  (installed in the project's venv)
except ImportError:  # inside a built Bento the package travels as source beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.config import get_settings
from rakuten_classifier.fusion import fuse_probabilities
from rakuten_classifier.http_guard import RequestGuard
from rakuten_classifier.inference import build_answer, image_model_for, text_model_for
from rakuten_classifier.jobs import JobConflict, JobManager
from rakuten_classifier.preprocessing import ImageError, load_image, product_text
from rakuten_classifier.registry import ProductionModels, production_models, read_fusion_config

log = logging.getLogger("rakuten.service")
settings = get_settings()

MAX_TEXT_CHARS = int(os.environ.get("RAKUTEN_MAX_TEXT_CHARS", 20_000))
MAX_IMAGE_BYTES = int(os.environ.get("RAKUTEN_MAX_IMAGE_BYTES", 10 * 1024 * 1024))
MAX_IMAGE_PIXELS = int(os.environ.get("RAKUTEN_MAX_IMAGE_PIXELS", 40_000_000))
MAX_BATCH_ITEMS = int(os.environ.get("RAKUTEN_MAX_BATCH_ITEMS", 256))
# Whole request body: a batch of base64 images is the largest legitimate request.
MAX_BODY_BYTES = int(os.environ.get("RAKUTEN_MAX_BODY_BYTES", 64 * 1024 * 1024))
RELOAD_SECONDS = float(os.environ.get("RAKUTEN_RELOAD_SECONDS", 5))
# Adaptive batching answers 503 when a request would wait longer than this; on 2 busy cores a
# batch of 32 images takes seconds, so the bound is generous and only sheds a real overload.
MAX_LATENCY_MS = int(os.environ.get("RAKUTEN_MAX_LATENCY_MS", 30_000))
# Largest batches the adaptive batcher may form. Measured on 2 cores (docs/benchmarks.md):
# MobileNetV2 throughput peaks at batch 8 and falls beyond; TF-IDF is cheap at any size.
TEXT_MAX_BATCH = int(os.environ.get("RAKUTEN_TEXT_MAX_BATCH", 64))
IMAGE_MAX_BATCH = int(os.environ.get("RAKUTEN_IMAGE_MAX_BATCH", 8))
N_CLASSES = len(CATEGORY_CODES)


def _production_at_start() -> ProductionModels:
    """The models this process starts with (a Bento carries them; a checkout reads the store)."""
    models = production_models()
    if models is None:
        raise RuntimeError("no production models in the BentoML store: run `rakuten train all` (or `make demo`) first")
    return models


PRODUCTION = _production_at_start()


class HotSwap:
    """The serving model of one kind, replaced by a background poll when production changes.

    The (tag, model) pair is swapped in one assignment: a request in flight keeps the pair it
    read, so no request fails or mixes two versions during a swap.
    """

    def __init__(self, kind: str, tag: str, model: t.Any, loader: t.Callable[[str], t.Any]):
        self.kind, self.loader = kind, loader
        self.current = (tag, model)
        threading.Thread(target=self._poll, name=f"reload-{kind}", daemon=True).start()

    def _poll(self) -> None:
        while True:
            time.sleep(RELOAD_SECONDS)
            try:
                models = production_models()
                tag = getattr(models, self.kind) if models else None
                if tag and tag != self.current[0]:
                    self.current = (tag, self.loader(tag))
                    log.info("now serving %s", tag)
            except Exception:  # a corrupt new model: keep serving the last good one
                log.exception("could not load new production %s model; keeping %s", self.kind, self.current[0])


@bentoml.service(workers=1, traffic={"timeout": 60})
class TextModelService:
    """Text model worker: TF-IDF/SVM or transformer probabilities, adaptively batched."""

    model_ref = bentoml.models.BentoModel(PRODUCTION.text)

    def __init__(self) -> None:
        from rakuten_classifier.text_model import load_text_model

        tag = str(self.model_ref.tag)
        self.models = HotSwap("text", tag, load_text_model(self.model_ref.path), text_model_for)

    @bentoml.api(batchable=True, max_batch_size=TEXT_MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, texts: list[str]) -> list[dict]:
        """Probabilities (27, CATEGORY_CODES order) for already-cleaned product texts."""
        tag, model = self.models.current
        return [{"model": tag, "proba": row} for row in model.predict_proba(texts)]


@bentoml.service(workers=1, traffic={"timeout": 60})
class ImageModelService:
    """Image model worker: decodes JPEG/PNG bytes with the shared preprocessing, adaptively batched."""

    model_ref = bentoml.models.BentoModel(PRODUCTION.image)

    def __init__(self) -> None:
        import torch

        from rakuten_classifier.image_model import ImageClassifier

        torch.set_num_threads(int(os.environ.get("RAKUTEN_TORCH_THREADS", 2)))
        tag = str(self.model_ref.tag)
        self.models = HotSwap("image", tag, ImageClassifier.load(self.model_ref.path), image_model_for)

    @bentoml.api(batchable=True, max_batch_size=IMAGE_MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, images: list[bytes]) -> list[dict]:
        """Probabilities for encoded images; an undecodable one gets an error entry, not a failure."""
        tag, model = self.models.current
        decoded, answers = [], []
        for data in images:
            try:
                decoded.append(load_image(data, max_pixels=MAX_IMAGE_PIXELS))
                answers.append({"model": tag})
            except ImageError as exc:
                answers.append({"model": tag, "error": str(exc)})
        if decoded:
            rows = iter(model.predict_proba(decoded))
            for answer in answers:
                if "error" not in answer:
                    answer["proba"] = next(rows)
        return answers


class ClientError(Exception):
    """A request the client must fix; becomes a 4xx JSON answer {"error": ...}."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _form_text(value: t.Any) -> t.Any:
    """Multipart text fields arrive JSON-decoded ('123' -> 123); give them back as text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


FormText = Annotated[str, BeforeValidator(_form_text), Field(max_length=MAX_TEXT_CHARS)]
ImageUpload = Annotated[Path, ContentType("image/*")]


class MultimodalInput(bentoml.IODescriptor):
    """Form of /predict_multimodal: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    designation: FormText = ""
    description: FormText = ""
    image: ImageUpload = None  # type: ignore[assignment]
    text_weight: t.Optional[float] = Field(None, ge=0.0, le=1.0)
    top_k: int = Field(5, ge=1, le=N_CLASSES)


class TextInput(bentoml.IODescriptor):
    """Body of /predict_text."""

    model_config = ConfigDict(extra="forbid")
    designation: FormText
    description: FormText = ""
    top_k: int = Field(5, ge=1, le=N_CLASSES)


class ImageInput(bentoml.IODescriptor):
    """Form of /predict_image."""

    model_config = ConfigDict(extra="forbid")
    image: ImageUpload
    top_k: int = Field(5, ge=1, le=N_CLASSES)


class BatchItem(BaseModel):
    """One product of /predict_batch; the image, if any, as base64."""

    model_config = ConfigDict(extra="forbid")
    designation: FormText = ""
    description: FormText = ""
    image_base64: t.Optional[str] = Field(None, max_length=MAX_IMAGE_BYTES * 4 // 3 + 4)


class BatchInput(bentoml.IODescriptor):
    """Body of /predict_batch."""

    model_config = ConfigDict(extra="forbid")
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
    text_weight: t.Optional[float] = Field(None, ge=0.0, le=1.0)
    top_k: int = Field(5, ge=1, le=N_CLASSES)


class TrainInput(bentoml.IODescriptor):
    """Body of /train: optionally a folder under the data root to read instead of the database."""

    model_config = ConfigDict(extra="forbid")
    data_dir: t.Optional[str] = None


def _check_image_bytes(data: bytes) -> bytes:
    """Size and pixel limits checked from the header, before any decoding."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ClientError(f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}", 413)
    if not data:
        raise ClientError("image file is empty")
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Exception as exc:
        raise ClientError(f"image is not a readable JPEG/PNG/WebP file ({type(exc).__name__})") from exc
    if width * height > MAX_IMAGE_PIXELS:
        raise ClientError(f"image has {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels", 413)
    return data


async def _with_retry(call: t.Callable[[t.Any], t.Awaitable[t.Any]], payload: t.Any, attempts: int = 3) -> t.Any:
    """Call a model service, retrying a dropped connection.

    A pooled keep-alive connection that the model worker has just closed (idle timeout, or a
    restarted worker) fails with ServerDisconnectedError; predictions are pure, so retrying is safe.
    """
    import aiohttp

    for attempt in range(1, attempts + 1):
        try:
            return await call(payload)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionError) as exc:
            if attempt == attempts:
                raise
            log.warning("model service connection dropped (%s); retry %d", exc, attempt)
            await asyncio.sleep(0.05 * attempt)


def _error_response(exc: ClientError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


web_app = FastAPI(title="rakuten-classifier extras")


@bentoml.asgi_app(web_app, path="/")
@bentoml.service(workers=1, traffic={"timeout": 120}, http={"port": 3000})
class RakutenClassifier:
    """Entry service: multimodal, text, image and batch predictions, training trigger, health."""

    text_service = bentoml.depends(TextModelService)
    image_service = bentoml.depends(ImageModelService)
    fusion_ref = bentoml.models.BentoModel(PRODUCTION.fusion)

    def __init__(self) -> None:
        tag = str(self.fusion_ref.tag)
        config = json.loads((Path(self.fusion_ref.path) / "fusion.json").read_text())
        self.fusion = HotSwap("fusion", tag, config, read_fusion_config)
        self.jobs = JobManager(settings.jobs_dir)

    async def _text_proba(self, texts: list[str]) -> list[dict]:
        return await _with_retry(self.text_service.to_async.predict, texts)

    async def _image_proba(self, images: list[bytes]) -> list[dict]:
        answers = await _with_retry(self.image_service.to_async.predict, images)
        for answer in answers:
            if "error" in answer:
                raise ClientError(f"image could not be decoded: {answer['error']}")
        return answers

    async def _classify(
        self, items: list[tuple[str, bytes | None]], text_weight: t.Optional[float], k: int
    ) -> list[dict]:
        """Text and image services called concurrently; fused with the production weight."""
        fusion_tag, config = self.fusion.current
        weight = config["text_weight"] if text_weight is None else float(text_weight)
        text_rows = [i for i, (text, _) in enumerate(items) if text]
        image_rows = [i for i, (_, image) in enumerate(items) if image is not None]
        text_call = self._text_proba([items[i][0] for i in text_rows]) if text_rows else asyncio.sleep(0, [])
        image_call = self._image_proba([items[i][1] for i in image_rows]) if image_rows else asyncio.sleep(0, [])
        text_answers, image_answers = await asyncio.gather(text_call, image_call)
        texts = dict(zip(text_rows, text_answers))
        images = dict(zip(image_rows, image_answers))
        results = []
        for i in range(len(items)):
            text_answer, image_answer = texts.get(i), images.get(i)
            text_p = None if text_answer is None else np.asarray(text_answer["proba"])
            image_p = None if image_answer is None else np.asarray(image_answer["proba"])
            fused = fuse_probabilities(
                None if text_p is None else text_p[None], None if image_p is None else image_p[None],
                weight, config["method"],
            )[0]
            models = {"fusion": fusion_tag}
            if text_answer:
                models["text"] = text_answer["model"]
            if image_answer:
                models["image"] = image_answer["model"]
            results.append(build_answer(fused, text_p, image_p, weight, k, models))
        return results

    @bentoml.api(route="/predict_multimodal", input_spec=MultimodalInput)
    async def predict_multimodal(
        self,
        designation: str = "",
        description: str = "",
        image: t.Optional[Path] = None,
        text_weight: t.Optional[float] = None,
        top_k: int = 5,
    ) -> dict:
        """Fused prediction from a title (and description) and/or a product photo."""
        try:
            text = product_text(designation, description)
            data = _check_image_bytes(Path(image).read_bytes()) if image is not None else None
            if not text and data is None:
                raise ClientError("empty product: give a designation, an image, or both")
            return (await self._classify([(text, data)], text_weight, top_k))[0]
        except ClientError as exc:
            return _error_response(exc)

    @bentoml.api(route="/predict_text", input_spec=TextInput)
    async def predict_text(self, designation: str, description: str = "", top_k: int = 5) -> dict:
        """Text-only prediction (JSON body)."""
        text = product_text(designation, description)
        if not text:
            return _error_response(ClientError("empty product: designation and description are blank"))
        return (await self._classify([(text, None)], 1.0, top_k))[0]

    @bentoml.api(route="/predict_image", input_spec=ImageInput)
    async def predict_image(self, image: Path, top_k: int = 5) -> dict:
        """Image-only prediction (multipart image)."""
        try:
            return (await self._classify([("", _check_image_bytes(Path(image).read_bytes()))], 0.0, top_k))[0]
        except ClientError as exc:
            return _error_response(exc)

    @bentoml.api(route="/predict_batch", input_spec=BatchInput)
    async def predict_batch(
        self, items: list[BatchItem], text_weight: t.Optional[float] = None, top_k: int = 5
    ) -> dict:
        """Bulk scoring: many products in one call, each with text and/or a base64 image."""
        try:
            prepared = []
            for number, item in enumerate(items):
                text = product_text(item.designation, item.description)
                data = None
                if item.image_base64:
                    try:
                        data = _check_image_bytes(base64.b64decode(item.image_base64, validate=True))
                    except ClientError as exc:
                        raise ClientError(f"items[{number}]: {exc}", exc.status) from exc
                    except ValueError as exc:
                        raise ClientError(f"items[{number}]: image_base64 is not valid base64") from exc
                if not text and data is None:
                    raise ClientError(f"items[{number}]: empty product: give a designation, an image, or both")
                prepared.append((text, data))
            return {"predictions": await self._classify(prepared, text_weight, top_k)}
        except ClientError as exc:
            return _error_response(exc)

    def _authorise(self, headers: t.Mapping[str, str]) -> t.Optional[ClientError]:
        """Bearer-token check for administrative calls, in constant time; the refusal, if any."""
        expected = settings.train_token.get_secret_value() if settings.train_token else ""
        if not expected:
            return ClientError("training trigger disabled: set RAKUTEN_TRAIN_TOKEN on the server", 403)
        header = headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return ClientError("missing bearer token (Authorization: Bearer <token>)", 401)
        if not hmac.compare_digest(header[7:].strip().encode(), expected.encode()):
            return ClientError("invalid token", 403)
        return None

    @bentoml.api(route="/train", input_spec=TrainInput)
    async def train(self, data_dir: t.Optional[str] = None, ctx: bentoml.Context = None) -> dict:
        """Start the training pipeline in a separate process; answers the job id (409 if one runs)."""
        # With a Context parameter BentoML takes the status from ctx.response, not from a Response.
        refused = self._authorise(ctx.request.headers)
        if refused is None and data_dir:
            root = settings.data_root.resolve()
            folder = (root / data_dir).resolve()
            if not folder.is_relative_to(root) or not folder.is_dir():
                refused = ClientError(f"data_dir must be an existing folder under the data root: {data_dir!r}")
        if refused is None:
            try:
                job_id = self.jobs.start(folder if data_dir else None)
            except JobConflict as exc:
                refused = ClientError(str(exc), 409)
        if refused is not None:
            ctx.response.status_code = refused.status
            return {"error": str(refused)}
        ctx.response.status_code = 202
        return {"job_id": job_id, "state": "running", "status_url": f"/jobs/{job_id}"}

    @web_app.get("/jobs/{job_id}")
    def job_status(self, job_id: str, request: Request):
        """State, stage, progress, metrics and log tail of a training job."""
        refused = self._authorise(request.headers)
        if refused is not None:
            return _error_response(refused)
        status = self.jobs.status(job_id)
        if status is None:
            return JSONResponse({"error": f"unknown job {job_id!r}"}, status_code=404)
        return status

    @web_app.get("/health")
    def health(self):
        """Service status, the models answering and their test metrics."""
        fusion_tag, config = self.fusion.current
        tags = {"fusion": fusion_tag, "text": config["text_model"], "image": config["image_model"]}
        return {
            "status": "ok",
            "models": tags,
            "text_weight": config["text_weight"],
            "method": config["method"],
            "metrics": config.get("test", {}),
            "training_job": self.jobs.active_job(),
        }

    # The try-it web page (rakuten_classifier/web): the page, its example products and their images.
    @web_app.get("/ui")
    def ui_page(self):
        from rakuten_classifier import web

        return web.page_response()

    @web_app.get("/ui/examples")
    def ui_examples(self):
        from rakuten_classifier import web

        return web.examples_response()

    @web_app.get("/ui/examples/{n}/image")
    def ui_example_image(self, n: int):
        from rakuten_classifier import web

        return web.example_image_response(n)


RakutenClassifier.add_asgi_middleware(RequestGuard, max_body_bytes=MAX_BODY_BYTES)
