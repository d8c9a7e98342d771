"""Run by tests/test_lean_serving.py, with torch unimportable (tests/programs/no_torch first on PYTHONPATH) or not.

Imports the service graph (service.py) and answers with the production trio of the BentoML store as
the model workers do, noting the torch modules loaded by then; then tries what needs torch (refused
where torch is unimportable). Prints one JSON document.

    python tests/programs/serve_without_torch.py REQUESTS_JSON SCRATCH_DIR
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import service  # the entry, text and image services, with every module they import
from rakuten_classifier.categories import CATEGORY_CODES
from rakuten_classifier.config import get_settings
from rakuten_classifier.modeling.errors import ModelLoadError
from rakuten_classifier.modeling.loading import (
    load_served_image,
    load_served_image_version,
    load_text,
    load_text_version,
)
from rakuten_classifier.modeling.threads import inference_thread, single_thread_torch_pool
from rakuten_classifier.registry import model_path
from rakuten_classifier.serving.errors import ClientError
from rakuten_classifier.serving.hot_swap import ModelVersions
from rakuten_classifier.serving.jobs import JobManager, missing_training_packages
from rakuten_classifier.serving.model_workers import encode_image, image_answers, text_answers

# What an image worker must not hold: the text model's, the entry's and training's libraries.
NOT_FOR_IMAGE_WORKERS = ("sklearn", "scipy", "pandas", "sqlalchemy", "mlflow", "torch", "torchvision")


def loaded(packages: tuple[str, ...]) -> list[str]:
    """Those of ``packages`` imported in this process so far."""
    return sorted(name for name in packages if name in sys.modules)


def refusal(load, directory: Path) -> str:
    """The ModelLoadError message of ``load(directory)`` ('' when it loads)."""
    try:
        load(directory)
    except ModelLoadError as exc:
        return str(exc)
    return ""


def training_refused(jobs_dir: Path) -> dict:
    """POST /train's refusal where the training requirements are missing ({} where they are installed:
    nothing is started then)."""
    if not missing_training_packages():
        return {}
    try:
        job = JobManager(jobs_dir).start()
    except ClientError as exc:
        return {"status": exc.status, "error": str(exc)}
    return {"started": job}


def main() -> None:
    requests = json.loads(Path(sys.argv[1]).read_text())
    scratch = Path(sys.argv[2])
    trio = service.PRODUCTION
    # The image worker's layout (service.ImageModelService): loads and calls on one inference thread,
    # the test-time views on two more.
    inference, views = inference_thread(1), single_thread_torch_pool(2)
    image = inference.submit(load_served_image_version, trio.image).result()
    images = ModelVersions(trio.image, image, load_served_image_version)
    image_items = [{"model": trio.image, "image": encode_image(Path(r["image"]).read_bytes())} for r in requests]
    image_proba = [a["proba"] for a in inference.submit(image_answers, images, image_items, 40_000_000, views).result()]
    # All an image worker does: import the graph, load its model, answer. The text model comes next.
    image_worker_imports = loaded(NOT_FOR_IMAGE_WORKERS)
    from rakuten_classifier.serving.predict import predict_multimodal

    texts = ModelVersions(trio.text, load_text_version(trio.text), load_text_version)
    text_items = [{"model": trio.text, "text": r["text"]} for r in requests]
    text_proba = [a["proba"] for a in text_answers(texts, text_items)]
    fused = [predict_multimodal(r["designation"], r["description"], r["image"], top_k=5) for r in requests]
    torch_modules = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))

    # A version saved before the ONNX export (no graph): refused; a transformer text model needs torch.
    legacy = scratch / "legacy-image"
    shutil.copytree(model_path(trio.image), legacy, ignore=shutil.ignore_patterns("*.onnx"))
    transformer = scratch / "transformer-text"
    transformer.mkdir()
    (transformer / "text_model.json").write_text(json.dumps({"kind": "transformer", "classes": list(CATEGORY_CODES)}))
    legacy_refused = refusal(load_served_image, legacy)
    transformer_refused = refusal(load_text, transformer)
    train_refused = training_refused(scratch / "jobs")
    os.environ["RAKUTEN_IMAGE_RUNTIME"] = "torch"  # asked for by name
    get_settings.cache_clear()
    torch_runtime_refused = refusal(load_served_image, model_path(trio.image))
    print(
        json.dumps(
            {
                "folders": {
                    kind: str(model_path(tag))
                    for kind, tag in (("fusion", trio.fusion), ("text", trio.text), ("image", trio.image))
                },
                "torch_modules": torch_modules,
                "image_worker_imports": image_worker_imports,
                "image_runtime": type(image).__name__,
                "text_kind": texts.get(trio.text).kind,
                "image_proba": image_proba,
                "text_proba": text_proba,
                "fused": fused,
                "legacy_image_refused": legacy_refused,
                "transformer_text_refused": transformer_refused,
                "torch_runtime_refused": torch_runtime_refused,
                "train_refused": train_refused,
            }
        )
    )


if __name__ == "__main__":
    main()
