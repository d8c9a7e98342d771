"""BentoML service graph: a text model service and an image model service behind an entry service.

    bentoml serve service:RakutenClassifier        (port 3000; `bentoml serve .` reads bentofile.yaml)

Each model service runs in its own worker with adaptive batching; the entry service calls both concurrently
and fuses their probabilities. The entry follows the production pointer and names the text and image versions
each request needs, so a promoted trio is adopted without a restart and no answer mixes two trios
(serving/hot_swap.py). What the methods call lives in ``rakuten_classifier.serving``: schemas, hot swap,
fusion of answers, prediction log and metrics, the HTTP guard (admin and prediction tokens), the web page.
"""

import asyncio
import json
import sys
import time
from concurrent.futures import Executor
from pathlib import Path

import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse

try:
    import rakuten_classifier  # noqa: F401  (installed in the project's venv)
except ImportError:  # inside a built Bento the package travels as source beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from rakuten_classifier.config import get_settings
from rakuten_classifier.modeling.loading import (
    load_served_image,
    load_served_image_version,
    load_text,
    load_text_version,
)
from rakuten_classifier.modeling.threads import inference_thread, single_thread_torch_pool
from rakuten_classifier.registry import FUSION_FILE, read_fusion_config
from rakuten_classifier.serving import web
from rakuten_classifier.serving.classify import classify
from rakuten_classifier.serving.clients import KEEP_CLIENT_SESSION, model_service_timeout, probe_services, with_retry
from rakuten_classifier.serving.errors import ClientError, answers_client_errors, client_error_answer
from rakuten_classifier.serving.hot_swap import ModelVersions, ProductionFollower, prepare_trio, production_at_start
from rakuten_classifier.serving.http_guard import RequestGuard
from rakuten_classifier.serving.jobs import JobManager
from rakuten_classifier.serving.metrics import set_model_info
from rakuten_classifier.serving.model_workers import image_answers, load_versions, prepare_version, text_answers
from rakuten_classifier.serving.schemas import (
    BatchInput,
    BatchItem,
    ImageInput,
    MultimodalInput,
    Product,
    TextInput,
    TrainInput,
    batch_products,
    form_product,
    text_product,
    train_folder,
)

settings = get_settings()  # every limit, size and period: RAKUTEN_* (rakuten_classifier/config.py)
# The trio whose models are declared below (and packed by `bentoml build`), and newer ones refused as corrupt.
PRODUCTION, REFUSED_AT_START = production_at_start()
MODEL_TRAFFIC = {"timeout": model_service_timeout(settings.request_timeout_s)}


class ModelWorker:
    """The endpoints the text and image model services share (BentoML collects inherited APIs)."""

    inference: Executor  # the worker's inference thread: every load and call runs on it
    models: ModelVersions

    @bentoml.api
    async def prepare(self, tag: str) -> dict:
        """Load a version the entry is about to name; the loaded ones stay (see serving.hot_swap)."""
        return await prepare_version(self.inference, self.models, tag)

    @bentoml.api
    async def loaded_versions(self) -> dict:
        """The versions this worker holds (the entry's /health asks, with a short timeout)."""
        return {"loaded": self.models.loaded, "runtimes": self.models.runtimes}


@bentoml.service(workers=1, traffic=MODEL_TRAFFIC, runner_connection=KEEP_CLIENT_SESSION)
class TextModelService(ModelWorker):
    """Text model worker: TF-IDF/SVM or transformer probabilities, adaptively batched."""

    model_ref = bentoml.models.BentoModel(PRODUCTION.text)

    def __init__(self) -> None:
        # Loads and calls on one thread (a transformer text model is torch: see inference_thread).
        self.inference = inference_thread()
        self.models = load_versions(self.inference, self.model_ref, load_text, load_text_version)

    @bentoml.api(
        batchable=settings.adaptive_batching,
        max_batch_size=settings.text_max_batch,
        max_latency_ms=settings.max_latency_ms,
    )
    async def predict(self, items: list[dict]) -> list[dict]:
        """Probabilities (27, CATEGORY_CODES order) of already-cleaned texts, each by the version it names."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.inference, lambda: text_answers(self.models, items))


@bentoml.service(workers=settings.image_workers, traffic=MODEL_TRAFFIC, runner_connection=KEEP_CLIENT_SESSION)
class ImageModelService(ModelWorker):
    """Image model worker: decodes JPEG/PNG bytes with the shared preprocessing, adaptively batched."""

    model_ref = bentoml.models.BentoModel(PRODUCTION.image)

    def __init__(self) -> None:
        # Loads and calls on our own threads, never BentoML's pool (torch ran 2.4x slower so: see
        # inference_thread). Parallel views (the default): a thread per test-time view, each ONNX
        # Runtime call one intra-op thread (modeling.loading.load_served_image). No torch here.
        self.views: Executor | None = None
        if settings.image_parallel_views:
            self.inference, self.views = inference_thread(1), single_thread_torch_pool(2)
        else:
            self.inference = inference_thread(settings.torch_threads)
        self.models = load_versions(self.inference, self.model_ref, load_served_image, load_served_image_version)

    @bentoml.api(
        batchable=settings.adaptive_batching,
        max_batch_size=settings.image_max_batch,
        max_latency_ms=settings.max_latency_ms,
    )
    async def predict(self, items: list[dict]) -> list[dict]:
        """Probabilities (and brightness, for drift) of encoded images, each by the version it names."""
        return await asyncio.get_running_loop().run_in_executor(
            self.inference, lambda: image_answers(self.models, items, settings.max_image_pixels, self.views)
        )


web_app = FastAPI(title="rakuten-classifier extras")
web_app.include_router(web.router)  # /ui: the page, its examples and their images; POST /corrections (admin token)
web_app.add_exception_handler(ClientError, client_error_answer)  # each route's ClientError: its JSON answer


@bentoml.asgi_app(web_app, path="/")
@bentoml.service(workers=1, traffic={"timeout": settings.request_timeout_s + 30}, http={"port": 3000})
class RakutenClassifier:
    """Entry service: predictions, feedback, monitoring, training trigger, Alertmanager's webhook, health.

    The admin routes (/train, /corrections, /jobs, /feedback, /monitor, /alerts) are authorised by the
    RequestGuard below."""

    text_service = bentoml.depends(TextModelService, url=settings.text_service_url)
    image_service = bentoml.depends(ImageModelService, url=settings.image_service_url)
    fusion_ref = bentoml.models.BentoModel(PRODUCTION.fusion)

    def __init__(self) -> None:
        tag = str(self.fusion_ref.tag)
        config = json.loads((Path(self.fusion_ref.path) / FUSION_FILE).read_text())  # the declared (packed) version
        self.fusion = ProductionFollower(
            PRODUCTION, config, REFUSED_AT_START, settings.reload_seconds, on_swap=self._fusion_swapped
        )
        set_model_info(tag, config, 1)
        self.jobs = JobManager(settings.jobs_dir)
        from rakuten_classifier.serving.observer import Observer  # entry only: pandas, SQLAlchemy (docs/serving.md)

        self.observer = Observer(settings, self.fusion)
        from rakuten_classifier.serving.alerts import AlertReceiver  # entry only: SQLAlchemy

        self.alerts = AlertReceiver(settings.database_url, lambda: self.jobs.start(from_alert=True))

    def _fusion_swapped(self, previous: str, tag: str) -> None:
        set_model_info(previous, read_fusion_config(previous), 0)
        set_model_info(tag, self.fusion.current[1], 1)

    @bentoml.on_startup
    async def follow_production(self) -> None:
        """Adopt each newly promoted trio once both model services hold its versions (serving.hot_swap)."""
        services = (self.text_service, self.image_service)
        self.following = asyncio.create_task(
            self.fusion.follow(lambda trio: prepare_trio(trio, *services, MODEL_TRAFFIC["timeout"]))
        )

    @bentoml.on_shutdown
    def close_prediction_log(self) -> None:
        """Write every queued prediction-log row before the worker exits."""
        self.observer.close()

    async def _answer(
        self, endpoint: str, products: list[Product], text_weight: float | None, top_k: int, explain: bool
    ) -> list[dict]:
        """Classify, then log and count every answer."""
        started = time.perf_counter()
        results = await classify(
            products,
            self.fusion.current,
            text_weight,
            top_k,
            lambda texts: with_retry(self.text_service.to_async.predict, texts),
            lambda images: with_retry(self.image_service.to_async.predict, images),
            settings.request_timeout_s,
            explain,
        )
        for product, (answer, brightness) in zip(products, results, strict=True):
            self.observer.record(endpoint, product, answer, brightness, started)
        return [answer for answer, _ in results]

    # Each API method's ClientError is its JSON answer (serving/errors.py).
    @bentoml.api(route="/predict_multimodal", input_spec=MultimodalInput)
    @answers_client_errors
    async def predict_multimodal(
        self,
        designation: str = "",
        description: str = "",
        image: Path | None = None,
        text_weight: float | None = None,
        top_k: int = 5,
        explain: bool = False,
    ) -> dict:
        """Fused prediction from a title (and description) and/or a product photo."""
        product = form_product(designation, description, image)
        return (await self._answer("multimodal", [product], text_weight, top_k, explain))[0]

    @bentoml.api(route="/predict_text", input_spec=TextInput)
    @answers_client_errors
    async def predict_text(
        self, designation: str, description: str = "", top_k: int = 5, explain: bool = False
    ) -> dict:
        """Text-only prediction (JSON body)."""
        return (await self._answer("text", [text_product(designation, description)], 1.0, top_k, explain))[0]

    @bentoml.api(route="/predict_image", input_spec=ImageInput)
    @answers_client_errors
    async def predict_image(self, image: Path, top_k: int = 5, explain: bool = False) -> dict:
        """Image-only prediction (multipart image)."""
        return (await self._answer("image", [form_product("", "", image)], 0.0, top_k, explain))[0]

    @bentoml.api(route="/predict_batch", input_spec=BatchInput)
    @answers_client_errors
    async def predict_batch(
        self, items: list[BatchItem], text_weight: float | None = None, top_k: int = 5, explain: bool = False
    ) -> dict:
        """Bulk scoring: many products in one call, each with text and/or a base64 image."""
        return {"predictions": await self._answer("batch", batch_products(items), text_weight, top_k, explain)}

    @bentoml.api(route="/train", input_spec=TrainInput)
    @answers_client_errors
    async def train(self, data_dir: str | None = None, retrain: bool = False, ctx: bentoml.Context = None) -> dict:  # type: ignore[assignment]
        """Start the training pipeline in a separate process; answers the job id (409 if one runs)."""
        job_id = self.jobs.start(train_folder(data_dir, settings.data_root), retrain=retrain)
        ctx.response.status_code = 202
        return {"job_id": job_id, "state": "running", "status_url": f"/jobs/{job_id}"}

    @web_app.get("/jobs/{job_id}")
    def job_status(self, job_id: str):
        """State, stage, progress, metrics and log tail of a training job."""
        status = self.jobs.status(job_id)
        return status if status is not None else JSONResponse({"error": f"unknown job {job_id!r}"}, status_code=404)

    @web_app.post("/feedback")
    def feedback(self, body: dict):
        """Record the true category of a logged prediction; live accuracy follows."""
        return self.observer.feedback(body)

    @web_app.get("/monitor/accuracy")
    def monitor_accuracy(self):
        """Accuracy over the latest feedback window."""
        return self.observer.accuracy()

    @web_app.post("/monitor/drift")
    def monitor_drift(self):
        """Recompute drift of the recent window now and update the gauge."""
        result = self.observer.refresh_drift()
        return result if result is not None else JSONResponse({"error": "no logged predictions yet"}, status_code=409)

    @web_app.post("/alerts")
    def alerts_webhook(self, body: dict):
        """Alertmanager's webhook: each alert stored once; a new drift alert starts the retraining job (202)."""
        status, answer = self.alerts.receive(body)
        return JSONResponse(answer, status_code=status)

    @web_app.get("/health")
    async def health(self):
        """ "ok", or "degraded" with the reasons; the models answering, their test metrics, log and drift state."""
        services = await probe_services(
            {
                "text": lambda: self.text_service.to_async.loaded_versions(),
                "image": lambda: self.image_service.to_async.loaded_versions(),
            },
            settings.health_timeout_s,
        )
        return self.observer.health(self.jobs.active_job(), services)


RakutenClassifier.add_asgi_middleware(  # type: ignore[attr-defined]  # the decorators return a bentoml Service
    RequestGuard,
    max_body_bytes=settings.max_body_bytes,
    admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
    predict_token=settings.predict_token.get_secret_value() if settings.predict_token else None,
)
