"""BentoML service: a text model service and an image model service behind an entry service.

    bentoml serve service:RakutenClassifier        (port 3000; `bentoml serve .` reads bentofile.yaml)

Each model service runs in its own worker with adaptive batching and swaps to newly promoted
models without a restart; the entry service calls both concurrently and fuses their
probabilities with the learned text weight (rakuten_classifier.fusion, a pure function).
Every answered prediction is logged to SQL off the request path (rakuten_classifier.monitoring)
and counted in Prometheus metrics at /metrics; drift of recent inputs is exported as a gauge.
"""

import asyncio
import base64
import io
import json
import logging
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
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse

try:
    import rakuten_classifier  # noqa: F401  (installed in the project's venv)
except ImportError:  # inside a built Bento the package travels as source beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from rakuten_classifier.auth import check_bearer
from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.config import get_settings
from rakuten_classifier.fusion import fuse_probabilities
from rakuten_classifier.http_guard import RequestGuard
from rakuten_classifier.inference import (
    build_answer,
    image_model_for,
    inference_thread,
    single_thread_torch_pool,
    text_model_for,
)
from rakuten_classifier.jobs import JobConflict, JobManager
from rakuten_classifier.monitoring import (
    PredictionLog,
    UnknownPrediction,
    image_brightness,
    live_accuracy,
    new_prediction_id,
    prediction_record,
    record_feedback,
)
from rakuten_classifier.preprocessing import ImageError, load_image, product_text
from rakuten_classifier.registry import (
    ProductionModels,
    last_good_production,
    production_models,
    read_fusion_config,
    verify_production,
)

log = logging.getLogger("rakuten.service")
# Every limit, size and period below is a field of rakuten_classifier.config.Settings (RAKUTEN_* env).
settings = get_settings()
MAX_TEXT_CHARS = settings.max_text_chars
MAX_IMAGE_BYTES = settings.max_image_bytes
MAX_IMAGE_PIXELS = settings.max_image_pixels
MAX_BATCH_ITEMS = settings.max_batch_items
N_CLASSES = len(CATEGORY_CODES)
# The entry enforces RAKUTEN_REQUEST_TIMEOUT_S (504 with a message); the model services only need a
# backstop, so a tiny request timeout never makes them shed the batches they are computing.
MODEL_SERVICE_TIMEOUT_S = max(settings.request_timeout_s, 60) + 30
# BentoML's client to a dependency closes and replaces its HTTP session every 100 requests (and
# every 300 s) while other requests may still be in flight on it: measured under load, those got
# "Server disconnected" and, now and then, a request never completed (a 504 after the timeout).
# One long-lived session per dependency avoids the race; there is one local worker to talk to.
KEEP_CLIENT_SESSION = {"max_requests": 2_000_000_000, "max_age": 10.0**9}

# Prometheus metrics beyond BentoML's built-ins (bentoml.metrics handles the multi-process mode).
PREDICTIONS = bentoml.metrics.Counter(
    name="rakuten_predictions", documentation="Answered predictions by endpoint, predicted category and modality",
    labelnames=["endpoint", "prdtypecode", "modality"])
CONFIDENCE = bentoml.metrics.Histogram(
    name="rakuten_prediction_confidence", documentation="Probability of the predicted category",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0))
FALLBACKS = bentoml.metrics.Counter(
    name="rakuten_modality_fallbacks", documentation="Multimodal predictions answered from one modality",
    labelnames=["missing"])
DRIFT_SCORE = bentoml.metrics.Gauge(
    name="rakuten_drift_score", documentation="Largest PSI of the recent window against the reference profile",
    multiprocess_mode="mostrecent")
DRIFT_DETECTED = bentoml.metrics.Gauge(
    name="rakuten_drift_detected", documentation="1 when a feature drifted in the recent window",
    multiprocess_mode="mostrecent")
DRIFT_FEATURE_PSI = bentoml.metrics.Gauge(
    name="rakuten_drift_feature_psi", documentation="PSI of one feature in the recent window",
    labelnames=["feature"], multiprocess_mode="mostrecent")
MODEL_INFO = bentoml.metrics.Gauge(
    name="rakuten_model_info", documentation="1 for the model tags now serving (0 for replaced ones)",
    labelnames=["fusion", "text", "image"], multiprocess_mode="mostrecent")
LIVE_ACCURACY = bentoml.metrics.Gauge(
    name="rakuten_live_accuracy", documentation="Accuracy over the latest feedback window",
    multiprocess_mode="mostrecent")
FEEDBACK = bentoml.metrics.Counter(
    name="rakuten_feedback", documentation="Feedback received, by whether the prediction was right",
    labelnames=["correct"])
LOG_BACKLOG = bentoml.metrics.Gauge(
    name="rakuten_prediction_log_backlog", documentation="Prediction-log rows not yet written",
    multiprocess_mode="mostrecent")
LOG_DROPPED = bentoml.metrics.Counter(
    name="rakuten_prediction_log_dropped", documentation="Prediction-log rows dropped (buffer full)")


def _production_at_start() -> ProductionModels:
    """The models this process starts with: the newest production trio whose files verify."""
    models, refused = last_good_production()
    if models is None:
        why = "; ".join(f"{tag}: {reason}" for tag, reason in refused.items())
        raise RuntimeError("no usable production models in the BentoML store: run `rakuten train all` "
                           f"(or `make demo`) first{' (refused: ' + why + ')' if why else ''}")
    return models


PRODUCTION = _production_at_start()


class HotSwap:
    """The serving model of one kind, replaced by a background poll when production changes.

    A new production trio is taken only when all three versions verify against their manifests
    and this kind's model loads; otherwise the trio is refused (logged, shown by /health) and the
    last good model keeps serving. The (tag, model) pair is swapped in one assignment: a request
    in flight keeps the pair it read, so no request fails or mixes two versions during a swap.
    """

    def __init__(self, kind: str, fusion_tag: str, tag: str, model: t.Any, loader: t.Callable[[str], t.Any],
                 on_swap: t.Callable[[str, str], None] | None = None):
        self.kind, self.loader, self.on_swap = kind, loader, on_swap
        self.fusion_tag = fusion_tag  # the production trio this model belongs to
        self.current = (tag, model)
        self.rejected: dict[str, str] = {}  # fusion tag -> why its trio was refused (not retried)
        threading.Thread(target=self._poll, name=f"reload-{kind}", daemon=True).start()

    def check(self) -> None:
        """Follow the production pointer once (the poll thread calls this every reload period)."""
        try:
            trio = production_models()
        except Exception as exc:  # an unreadable production pointer: keep serving
            log.error("cannot read the production pointer (%s); keeping %s", exc, self.current[0])
            return
        if trio is None or trio.fusion == self.fusion_tag or trio.fusion in self.rejected:
            return
        tag = getattr(trio, self.kind)
        try:
            verify_production(trio)
            model = self.current[1] if tag == self.current[0] else self.loader(tag)
        except Exception as exc:  # a corrupt or incomplete model: refuse it, keep the last good one
            self.rejected[trio.fusion] = f"{type(exc).__name__}: {exc}"
            log.error("refused production %s (%s); still serving %s", trio.fusion, self.rejected[trio.fusion],
                      self.current[0])
            return
        previous = self.current[0]
        self.fusion_tag, self.current = trio.fusion, (tag, model)
        if tag != previous:
            log.info("now serving %s (was %s)", tag, previous)
            if self.on_swap:
                self.on_swap(previous, tag)

    def _poll(self) -> None:
        while True:
            time.sleep(settings.reload_seconds)
            self.check()


def _hot_swap_on(executor: t.Any, kind: str, model_ref: t.Any, load_path: t.Callable[[str], t.Any],
                 load_tag: t.Callable[[str], t.Any]) -> HotSwap:
    """A model service's HotSwap whose loads (the first and every swap) run on the worker's inference thread."""
    model = executor.submit(load_path, model_ref.path).result()
    return HotSwap(kind, PRODUCTION.fusion, str(model_ref.tag), model,
                   lambda tag: executor.submit(load_tag, tag).result())


@bentoml.service(workers=1, traffic={"timeout": MODEL_SERVICE_TIMEOUT_S}, runner_connection=KEEP_CLIENT_SESSION)
class TextModelService:
    """Text model worker: TF-IDF/SVM or transformer probabilities, adaptively batched."""

    model_ref = bentoml.models.BentoModel(PRODUCTION.text)

    def __init__(self) -> None:
        from rakuten_classifier.text_model import load_text_model

        # Loads and calls on one thread (a transformer text model is torch: see inference_thread).
        self.inference = inference_thread()
        self.models = _hot_swap_on(self.inference, "text", self.model_ref, load_text_model, text_model_for)

    @bentoml.api(batchable=settings.adaptive_batching, max_batch_size=settings.text_max_batch,
                 max_latency_ms=settings.max_latency_ms)
    async def predict(self, texts: list[str]) -> list[dict]:
        """Probabilities (27, CATEGORY_CODES order) for already-cleaned product texts."""
        return await asyncio.get_running_loop().run_in_executor(self.inference, self._predict, texts)

    def _predict(self, texts: list[str]) -> list[dict]:
        tag, model = self.models.current
        return [{"model": tag, "proba": row} for row in model.predict_proba(texts)]


@bentoml.service(workers=settings.image_workers, traffic={"timeout": MODEL_SERVICE_TIMEOUT_S},
                 runner_connection=KEEP_CLIENT_SESSION)
class ImageModelService:
    """Image model worker: decodes JPEG/PNG bytes with the shared preprocessing, adaptively batched."""

    model_ref = bentoml.models.BentoModel(PRODUCTION.image)

    def __init__(self) -> None:
        from rakuten_classifier.image_model import ImageClassifier

        # Loads and calls run on our own threads, never BentoML's thread pool: a model loaded on one
        # thread and called from another ran 2.4x slower (see inference_thread). With parallel
        # views (the default) each test-time view gets a single-threaded torch thread.
        if settings.image_parallel_views:
            self.inference, self.views = inference_thread(1), single_thread_torch_pool(2)
        else:
            self.inference, self.views = inference_thread(settings.torch_threads), None
        self.models = _hot_swap_on(self.inference, "image", self.model_ref, ImageClassifier.load, image_model_for)

    @bentoml.api(batchable=settings.adaptive_batching, max_batch_size=settings.image_max_batch,
                 max_latency_ms=settings.max_latency_ms)
    async def predict(self, images: list[bytes]) -> list[dict]:
        """Probabilities (and brightness, for drift) of encoded images; an undecodable one gets an error entry."""
        return await asyncio.get_running_loop().run_in_executor(self.inference, self._predict, images)

    def _predict(self, images: list[bytes]) -> list[dict]:
        tag, model = self.models.current
        decoded, answers = [], []
        for data in images:
            try:
                decoded.append(load_image(data, max_pixels=MAX_IMAGE_PIXELS))
                answers.append({"model": tag, "brightness": round(image_brightness(decoded[-1]), 3)})
            except ImageError as exc:
                answers.append({"model": tag, "error": str(exc)})
        if decoded:
            rows = iter(model.predict_proba(decoded, view_executor=self.views))
            for answer in answers:
                if "error" not in answer:
                    answer["proba"] = next(rows)
        return answers


class ClientError(Exception):
    """A request that cannot be answered; becomes a JSON answer {"error": ...} with its status (4xx, or 504)."""

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
    """Body of /train: a folder under the data root to read instead of the database, or a retrain check."""

    model_config = ConfigDict(extra="forbid")
    data_dir: t.Optional[str] = None
    retrain: bool = Field(False, description="run `rakuten retrain` (train only if new rows or drift call for it)")


class FeedbackInput(BaseModel):
    """Body of /feedback: the true category of a prediction the service answered."""

    model_config = ConfigDict(extra="forbid")
    prediction_id: str = Field(min_length=1, max_length=32)
    prdtypecode: int


class Product(t.NamedTuple):
    """One product to classify: model text, encoded image and its header size (width, height)."""

    text: str
    image: bytes | None = None
    size: tuple[int, int] | None = None


def _check_image_bytes(data: bytes) -> tuple[bytes, tuple[int, int]]:
    """Size and pixel limits checked from the header, before any decoding; returns (data, (w, h))."""
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
    return data, (width, height)


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


def _set_model_info(config_tag: str, config: dict, value: float) -> None:
    MODEL_INFO.labels(fusion=config_tag, text=config["text_model"], image=config["image_model"]).set(value)


@bentoml.asgi_app(web_app, path="/")
@bentoml.service(workers=1, traffic={"timeout": settings.request_timeout_s + 30}, http={"port": 3000})
class RakutenClassifier:
    """Entry service: predictions, feedback, monitoring, training trigger, health."""

    text_service = bentoml.depends(TextModelService)
    image_service = bentoml.depends(ImageModelService)
    fusion_ref = bentoml.models.BentoModel(PRODUCTION.fusion)

    def __init__(self) -> None:
        tag = str(self.fusion_ref.tag)
        config = json.loads((Path(self.fusion_ref.path) / "fusion.json").read_text())
        self.fusion = HotSwap("fusion", tag, tag, config, read_fusion_config, on_swap=self._fusion_swapped)
        _set_model_info(tag, config, 1)
        for missing in ("image", "text"):  # exported at 0 from the start, so dashboards find the series
            FALLBACKS.labels(missing=missing)
        self.jobs = JobManager(settings.jobs_dir)
        self.prediction_log = PredictionLog(settings.database_url, settings.log_flush_seconds,
                                            settings.log_buffer_max, on_dropped=LOG_DROPPED.inc)
        self.last_drift: dict | None = None
        threading.Thread(target=self._refresh_drift_periodically, name="drift", daemon=True).start()

    def _fusion_swapped(self, previous: str, tag: str) -> None:
        _set_model_info(previous, read_fusion_config(previous), 0)
        _set_model_info(tag, self.fusion.current[1], 1)

    @bentoml.on_shutdown
    def close_prediction_log(self) -> None:
        """Write every queued prediction-log row before the worker exits."""
        self.prediction_log.close()

    def refresh_drift(self) -> dict | None:
        """Compare the recent prediction log with the production reference profile; update the gauges."""
        from rakuten_classifier.drift import drift_of_recent

        self.prediction_log.flush()
        found = drift_of_recent(settings, self.fusion.current[0], last=settings.drift_window)
        if found is None:
            return None
        result = found[0]
        DRIFT_SCORE.set(result["drift_score"])
        DRIFT_DETECTED.set(1 if result["drifted"] else 0)
        for entry in result["features"]:
            if entry.get("psi") is not None:
                DRIFT_FEATURE_PSI.labels(feature=entry["feature"]).set(entry["psi"])
        self.last_drift = result
        return result

    def _refresh_drift_periodically(self) -> None:
        while True:
            time.sleep(settings.drift_interval_seconds)
            try:
                self.refresh_drift()
            except Exception:  # monitoring must never take the service down
                log.exception("drift refresh failed")
            LOG_BACKLOG.set(self.prediction_log.backlog)

    def _log_prediction(self, endpoint: str, product: Product, answer: dict, brightness: t.Optional[float],
                        started: float) -> None:
        """Give the answer its id, queue its log row and count it in the metrics (no I/O here)."""
        answer["prediction_id"] = new_prediction_id()
        image = None
        if product.image is not None:
            image = {"width": product.size[0], "height": product.size[1], "brightness": brightness}
        record = prediction_record(prediction_id=answer["prediction_id"], endpoint=endpoint, text=product.text,
                                   image=image, answer=answer, latency_ms=(time.perf_counter() - started) * 1000)
        self.prediction_log.record(record)
        PREDICTIONS.labels(endpoint=endpoint, prdtypecode=str(answer["prdtypecode"]), modality=record["modality"]).inc()
        CONFIDENCE.observe(answer["probability"])
        if endpoint in ("multimodal", "batch") and record["modality"] != "both":
            FALLBACKS.labels(missing="image" if record["modality"] == "text" else "text").inc()

    async def _text_proba(self, texts: list[str]) -> list[dict]:
        return await _with_retry(self.text_service.to_async.predict, texts)

    async def _image_proba(self, images: list[bytes]) -> list[dict]:
        answers = await _with_retry(self.image_service.to_async.predict, images)
        for answer in answers:
            if "error" in answer:
                raise ClientError(f"image could not be decoded: {answer['error']}")
        return answers

    async def _classify(
        self, items: list[Product], text_weight: t.Optional[float], k: int, endpoint: str, started: float,
    ) -> list[dict]:
        """Text and image services called concurrently; fused with the production weight; logged."""
        fusion_tag, config = self.fusion.current
        weight = config["text_weight"] if text_weight is None else float(text_weight)
        text_rows = [i for i, item in enumerate(items) if item.text]
        image_rows = [i for i, item in enumerate(items) if item.image is not None]
        text_call = self._text_proba([items[i].text for i in text_rows]) if text_rows else asyncio.sleep(0, [])
        image_call = self._image_proba([items[i].image for i in image_rows]) if image_rows else asyncio.sleep(0, [])
        try:
            text_answers, image_answers = await asyncio.wait_for(
                asyncio.gather(text_call, image_call), timeout=settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ClientError(f"prediction took longer than {settings.request_timeout_s:g} s "
                              "(RAKUTEN_REQUEST_TIMEOUT_S); try again or send fewer items", 504) from None
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
            answer = build_answer(fused, text_p, image_p, weight, k, models)
            self._log_prediction(endpoint, items[i], answer, image_answer.get("brightness") if image_answer else None,
                                 started)
            results.append(answer)
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
        started = time.perf_counter()
        try:
            text = product_text(designation, description)
            data, size = _check_image_bytes(Path(image).read_bytes()) if image is not None else (None, None)
            if not text and data is None:
                raise ClientError("empty product: give a designation, an image, or both")
            return (await self._classify([Product(text, data, size)], text_weight, top_k, "multimodal", started))[0]
        except ClientError as exc:
            return _error_response(exc)

    @bentoml.api(route="/predict_text", input_spec=TextInput)
    async def predict_text(self, designation: str, description: str = "", top_k: int = 5) -> dict:
        """Text-only prediction (JSON body)."""
        started = time.perf_counter()
        try:
            text = product_text(designation, description)
            if not text:
                raise ClientError("empty product: designation and description are blank")
            return (await self._classify([Product(text)], 1.0, top_k, "text", started))[0]
        except ClientError as exc:
            return _error_response(exc)

    @bentoml.api(route="/predict_image", input_spec=ImageInput)
    async def predict_image(self, image: Path, top_k: int = 5) -> dict:
        """Image-only prediction (multipart image)."""
        started = time.perf_counter()
        try:
            data, size = _check_image_bytes(Path(image).read_bytes())
            return (await self._classify([Product("", data, size)], 0.0, top_k, "image", started))[0]
        except ClientError as exc:
            return _error_response(exc)

    @bentoml.api(route="/predict_batch", input_spec=BatchInput)
    async def predict_batch(
        self, items: list[BatchItem], text_weight: t.Optional[float] = None, top_k: int = 5
    ) -> dict:
        """Bulk scoring: many products in one call, each with text and/or a base64 image."""
        started = time.perf_counter()
        try:
            prepared = []
            for number, item in enumerate(items):
                text = product_text(item.designation, item.description)
                data = size = None
                if item.image_base64:
                    try:
                        data, size = _check_image_bytes(base64.b64decode(item.image_base64, validate=True))
                    except ClientError as exc:
                        raise ClientError(f"items[{number}]: {exc}", exc.status) from exc
                    except ValueError as exc:
                        raise ClientError(f"items[{number}]: image_base64 is not valid base64") from exc
                if not text and data is None:
                    raise ClientError(f"items[{number}]: empty product: give a designation, an image, or both")
                prepared.append(Product(text, data, size))
            return {"predictions": await self._classify(prepared, text_weight, top_k, "batch", started)}
        except ClientError as exc:
            return _error_response(exc)

    def _authorise(self, headers: t.Mapping[str, str]) -> t.Optional[ClientError]:
        """Admin bearer-token check (constant time); the refusal, if any."""
        expected = settings.train_token.get_secret_value() if settings.train_token else None
        refusal = check_bearer(headers.get("authorization"), expected, "administrative endpoint", required=True)
        return None if refusal is None else ClientError(refusal.message, refusal.status)

    @bentoml.api(route="/train", input_spec=TrainInput)
    async def train(self, data_dir: t.Optional[str] = None, retrain: bool = False, ctx: bentoml.Context = None) -> dict:
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
                job_id = self.jobs.start(folder if data_dir else None, retrain=retrain)
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

    @web_app.post("/feedback")
    def feedback(self, body: dict, request: Request):
        """Record the true category of a logged prediction (admin token); live accuracy follows."""
        refused = self._authorise(request.headers)
        if refused is not None:
            return _error_response(refused)
        try:
            item = FeedbackInput.model_validate(body)
        except ValidationError as exc:
            return JSONResponse({"error": "invalid feedback", "detail": json.loads(exc.json())}, status_code=400)
        if item.prdtypecode not in CATEGORY_CODES:
            return _error_response(ClientError(f"unknown prdtypecode {item.prdtypecode}"))
        self.prediction_log.flush()  # the prediction may still be queued
        try:
            result = record_feedback(self.prediction_log.engine, item.prediction_id, item.prdtypecode)
        except UnknownPrediction as exc:
            return _error_response(ClientError(str(exc), 404))
        FEEDBACK.labels(correct=str(result["correct"]).lower()).inc()
        accuracy = live_accuracy(self.prediction_log.engine, settings.accuracy_window)
        if accuracy["accuracy"] is not None:
            LIVE_ACCURACY.set(accuracy["accuracy"])
        return {**result, "live_accuracy": accuracy}

    @web_app.get("/monitor/accuracy")
    def monitor_accuracy(self, request: Request):
        """Accuracy over the latest feedback window (admin token)."""
        refused = self._authorise(request.headers)
        if refused is not None:
            return _error_response(refused)
        return live_accuracy(self.prediction_log.engine, settings.accuracy_window)

    @web_app.post("/monitor/drift")
    def monitor_drift(self, request: Request):
        """Recompute drift of the recent window now and update the gauge (admin token)."""
        refused = self._authorise(request.headers)
        if refused is not None:
            return _error_response(refused)
        result = self.refresh_drift()
        if result is None:
            return JSONResponse({"error": "no logged predictions yet"}, status_code=409)
        return result

    @web_app.get("/health")
    def health(self):
        """Service status, the models answering and their test metrics."""
        fusion_tag, config = self.fusion.current
        tags = {"fusion": fusion_tag, "text": config["text_model"], "image": config["image_model"]}
        LOG_BACKLOG.set(self.prediction_log.backlog)
        return {
            "status": "ok",
            "models": tags,
            "text_weight": config["text_weight"],
            "method": config["method"],
            "metrics": config.get("test", {}),
            "training_job": self.jobs.active_job(),
            "refused_models": self.fusion.rejected,
            "prediction_log": {"written": self.prediction_log.written, "backlog": self.prediction_log.backlog,
                               "dropped": self.prediction_log.dropped},
            "drift": None if self.last_drift is None else {
                k: self.last_drift[k] for k in ("drift_score", "drifted", "drifted_features", "window")},
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


RakutenClassifier.add_asgi_middleware(
    RequestGuard, max_body_bytes=settings.max_body_bytes,
    predict_token=settings.predict_token.get_secret_value() if settings.predict_token else None,
)
